"""`mcutrain eval`: test-split accuracy of a checkpoint, or of an imported int8 graph (its int8 simulation)."""

from __future__ import annotations

from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.data import Preprocessing, load_dataset
from mcutrain.errors import DataError
from mcutrain.io.container import peek_container
from mcutrain.quant.graph_file import KIND as GRAPH_KIND
from mcutrain.train.checkpoint import load_checkpoint
from mcutrain.train.evaluate import evaluate


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help=HELP["eval"],
                              description="Evaluate CKPT (a float checkpoint, or an int8 graph from mcutrain import / "
                                          "finetune, run bit-exactly in int8) on the test split of --data "
                                          "(split from --seed).")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--data", required=True)
    p.add_argument("--seed", type=int, default=0, help="split seed (must match training for named splits)")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    model, name, classes, resolution, prep = _load(args.checkpoint)
    dataset = load_dataset(args.data, seed=args.seed)
    if dataset.num_classes != classes:
        raise DataError(f"{args.data} has {dataset.num_classes} classes but {args.checkpoint} "
                        f"was trained for {classes}")
    result = evaluate(model, getattr(dataset, args.split), resolution, prep)
    payload = {"accuracy": result["accuracy"], "n": result["n"], "loss": result["loss"],
               "model": name, "data": args.data, "split": args.split}
    emit(args, payload, lambda r: f"{r['model']} on {r['data']} ({r['split']}): accuracy "
                                  f"{r['accuracy']:.4f} over {r['n']} samples")
    return 0


def _load(path: str):
    """(net, model name, number of classes, loader resolution, preprocessing) of a checkpoint or int8 graph."""
    if peek_container(path)[0] == GRAPH_KIND:
        from mcutrain.train import model_kind as mk

        graph_model = mk.load_trainable(path)
        name = graph_model.provenance.get("source", "int8 graph")
        return (mk.simulation(graph_model), name, len(graph_model.classes), mk.input_size(graph_model),
                mk.preprocessing(graph_model))
    model, info = load_checkpoint(path)
    return model, info.model, info.num_classes, info.resolution, Preprocessing.from_dict(info.preprocessing)
