"""`mcutrain quantize`: float checkpoint -> int8 model file, with float and int8 accuracy.

A zoo float checkpoint becomes an int8 model (``quant.quantize``); an imported PyTorch float graph
(``mcutrain import FILE.py:FUNCTION``) becomes an int8 graph file (``quant.quantize_graph``)."""

from __future__ import annotations

from mcutrain.api.defaults import defaults
from mcutrain.api.training import quantize
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit


def register(subparsers) -> None:
    d = defaults(quantize)
    p = subparsers.add_parser(
        "quantize", help=HELP["quantize"],
        description="Fold BatchNorm, calibrate activation ranges on training batches of --data, quantize "
                    "weights per channel and biases to int32 (DESIGN.md section 3); report float and int8 "
                    "test accuracy.")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--data", required=True, help="calibration and test data (the checkpoint's task)")
    p.add_argument("--out", required=True, metavar="MODEL", help="int8 model file to write")
    p.add_argument("--calibration-batches", type=int, default=d["calibration_batches"],
                   help="training batches of 64 images whose activation ranges set the scales (default 16)")
    p.add_argument("--seed", type=int, default=d["seed"], help="split seed (default: the checkpoint's)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    result = quantize(args.checkpoint, args.data, args.out, calibration_batches=args.calibration_batches,
                      seed=args.seed)
    emit(args, result.to_dict(), lambda _: result.text())
    return 0
