"""`mcutrain eval`: test-split accuracy of a checkpoint, or of an imported int8 graph (its int8 simulation)."""

from __future__ import annotations

from mcutrain.api.defaults import defaults
from mcutrain.api.training import evaluate
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit


def register(subparsers) -> None:
    d = defaults(evaluate)
    p = subparsers.add_parser("eval", help=HELP["eval"],
                              description="Evaluate CKPT (a float checkpoint, or an int8 graph from mcutrain import / "
                                          "finetune, run bit-exactly in int8) on the test split of --data "
                                          "(split from --seed).")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--data", required=True)
    p.add_argument("--seed", type=int, default=d["seed"], help="split seed (must match training for named splits)")
    p.add_argument("--split", choices=["test", "val", "train"], default=d["split"])
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    result = evaluate(args.checkpoint, args.data, seed=args.seed, split=args.split)
    emit(args, result.to_dict(), lambda _: result.text())
    return 0
