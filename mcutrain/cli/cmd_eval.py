"""`mcutrain eval`: test-split accuracy of a checkpoint."""

from __future__ import annotations

from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.data import Preprocessing, load_dataset
from mcutrain.errors import DataError
from mcutrain.train.checkpoint import load_checkpoint
from mcutrain.train.evaluate import evaluate


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help=HELP["eval"],
                              description="Evaluate CKPT on the test split of --data (split from --seed).")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--data", required=True)
    p.add_argument("--seed", type=int, default=0, help="split seed (must match training for named splits)")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    model, info = load_checkpoint(args.checkpoint)
    dataset = load_dataset(args.data, seed=args.seed)
    if dataset.num_classes != info.num_classes:
        raise DataError(f"{args.data} has {dataset.num_classes} classes but {args.checkpoint} "
                        f"was trained for {info.num_classes}")
    result = evaluate(model, getattr(dataset, args.split), info.resolution,
                      Preprocessing.from_dict(info.preprocessing))
    payload = {"accuracy": result["accuracy"], "n": result["n"], "loss": result["loss"],
               "model": info.model, "data": args.data, "split": args.split}
    emit(args, payload, lambda r: f"{r['model']} on {r['data']} ({r['split']}): accuracy "
                                  f"{r['accuracy']:.4f} over {r['n']} samples")
    return 0
