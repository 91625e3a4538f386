"""`mcutrain quantize`: float checkpoint -> int8 model file, with float and int8 accuracy."""

from __future__ import annotations

import sys

from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.data import Preprocessing, load_dataset
from mcutrain.errors import DataError
from mcutrain.quant.model_file import save_qmodel
from mcutrain.quant.quantize import quantize_model
from mcutrain.quant.sim_model import Int8Net
from mcutrain.train.checkpoint import load_checkpoint
from mcutrain.train.evaluate import evaluate


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quantize", help=HELP["quantize"],
        description="Fold BatchNorm, calibrate activation ranges on training batches of --data, quantize "
                    "weights per channel and biases to int32 (DESIGN.md section 3); report float and int8 "
                    "test accuracy.")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--data", required=True, help="calibration and test data (the checkpoint's task)")
    p.add_argument("--out", required=True, metavar="MODEL", help="int8 model file to write")
    p.add_argument("--calibration-batches", type=int, default=16,
                   help="training batches of 64 images whose activation ranges set the scales (default 16)")
    p.add_argument("--seed", type=int, default=None, help="split seed (default: the checkpoint's)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    model, info = load_checkpoint(args.checkpoint)
    seed = args.seed if args.seed is not None else info.training.get("config", {}).get("seed", 0)
    dataset = load_dataset(args.data, seed=seed)
    if dataset.num_classes != info.num_classes:
        raise DataError(f"{args.data} has {dataset.num_classes} classes, {args.checkpoint} has {info.num_classes}")
    print(f"calibrating on {args.calibration_batches} batches of {args.data} ...", file=sys.stderr)
    qmodel = quantize_model(model, info, dataset.train, batches=args.calibration_batches, seed=seed,
                            calibration_data=args.data)
    save_qmodel(args.out, qmodel)
    prep = Preprocessing.from_dict(info.preprocessing)
    print(f"evaluating float and int8 on {len(dataset.test):,} test images ...", file=sys.stderr)
    fl = evaluate(model, dataset.test, info.resolution, prep)
    q8 = evaluate(Int8Net(qmodel), dataset.test, info.resolution, prep)
    frozen = sum(len(c.frozen_channels) for c in qmodel.convs())
    payload = {"out": args.out, "model": info.model, "resolution": info.resolution,
               "float_accuracy": fl["accuracy"], "int8_accuracy": q8["accuracy"], "n": q8["n"],
               "accuracy_drop": fl["accuracy"] - q8["accuracy"], "degenerate_channels": frozen}
    emit(args, payload, lambda r: f"{r['model']}: float {r['float_accuracy'] * 100:.2f}% -> int8 "
                                  f"{r['int8_accuracy'] * 100:.2f}% on {r['n']:,} test images; wrote {r['out']}")
    return 0
