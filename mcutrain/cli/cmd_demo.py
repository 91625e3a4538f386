"""`mcutrain demo`: the main job on the bundled default backbone.

For now (foundation stage) it evaluates the bundled backbone on its dataset's test split and prints a
summary; later stages extend it to quantize, search a sparse-update scheme, compile and train on the
generated C engine.
"""

from __future__ import annotations

import sys
import time

from mcutrain.assets import DEFAULT_BACKBONE, DEFAULT_BACKBONE_DATA
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.data import Preprocessing, load_dataset
from mcutrain.models import model_summary
from mcutrain.train.checkpoint import load_checkpoint
from mcutrain.train.evaluate import evaluate


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="run the main job on the bundled default backbone",
        description="Evaluate a pretrained backbone and summarise it. By default the bundled "
                    "mbv2-w0.35 pretrained on Fashion-MNIST at 64x64; point --checkpoint/--data at your own.")
    p.add_argument("--checkpoint", default=str(DEFAULT_BACKBONE), help="float checkpoint (default: bundled)")
    p.add_argument("--data", default=None, help="dataset (default: the one the checkpoint was trained on)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    t0 = time.perf_counter()
    model, info = load_checkpoint(args.checkpoint)
    data_name = args.data or info.dataset or DEFAULT_BACKBONE_DATA
    print(f"[1/2] loading {data_name} ...", file=sys.stderr)
    dataset = load_dataset(data_name, seed=info.training.get("config", {}).get("seed", 0))
    print(f"[2/2] evaluating {info.model} on {len(dataset.test):,} test images ...", file=sys.stderr)
    result = evaluate(model, dataset.test, info.resolution, Preprocessing.from_dict(info.preprocessing))
    summary = model_summary(info.model, info.resolution)
    payload = {
        "checkpoint": str(args.checkpoint), "model": info.model, "data": data_name,
        "resolution": info.resolution, "classes": info.num_classes,
        "test_accuracy": result["accuracy"], "test_n": result["n"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "backbone_weights": summary["backbone_weights"], "macs": summary["macs"],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    emit(args, payload, _human)
    return 0


def _human(p: dict) -> str:
    return "\n".join([
        "mcutrain demo: bundled backbone",
        f"  model        {p['model']} @ {p['resolution']}x{p['resolution']}, {p['classes']} classes",
        f"  parameters   {p['parameters']:,} float (backbone conv weights {p['backbone_weights']:,})",
        f"  MACs         {p['macs']:,} per image (backbone)",
        f"  accuracy     {p['test_accuracy'] * 100:.2f}% on {p['data']} test ({p['test_n']:,} images)",
        f"  time         {p['seconds']:.1f} s",
    ])
