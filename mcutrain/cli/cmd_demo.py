"""`mcutrain demo`: the main job on the bundled default backbone.

Today's pipeline, end to end on the bundled backbone: evaluate the float model on its own task,
quantize it to int8 (post-training, calibrated), move it to a new task it has never seen with a new
int8 head, and train it there with a sparse update in the bit-exact int8 simulation (QAS, stochastic
rounding), reporting accuracy before and after. Later stages add the compiled C engine and QEMU.
"""

from __future__ import annotations

import sys
import time

from mcutrain.cli.commands import HELP
from mcutrain.assets import DEFAULT_BACKBONE, DEFAULT_BACKBONE_DATA
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.data import Preprocessing, load_dataset
from mcutrain.models import model_summary
from mcutrain.quant.quantize import quantize_model
from mcutrain.quant.sim_model import Int8Net
from mcutrain.train.checkpoint import load_checkpoint
from mcutrain.train.evaluate import evaluate
from mcutrain.train.finetune import FinetuneConfig, finetune


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help=HELP["demo"],
        description="Evaluate a pretrained float backbone, quantize it to int8, move it to a new task and "
                    "train it there with a sparse int8 update (simulation of on-device training). Defaults: "
                    "the bundled mbv2-w0.35 pretrained on Fashion-MNIST at 64x64, new task mnist-5k, scheme "
                    "paper-99kb. Bring your own: --checkpoint (a float checkpoint from `mcutrain pretrain`), "
                    "--data (its task), --task (folder:PATH or npz:PATH of your samples), --scheme.")
    p.add_argument("--checkpoint", default=str(DEFAULT_BACKBONE), help="float checkpoint (default: bundled)")
    p.add_argument("--data", default=None, help="the checkpoint's own task (default: recorded in it)")
    p.add_argument("--task", default="mnist-5k", help="the new task to train on (default: mnist-5k)")
    p.add_argument("--scheme", default="paper-99kb", help="sparse-update scheme (see `mcutrain scheme list`)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-subset", type=int, default=0, help="use N training samples of the new task (0: all)")
    p.add_argument("--lr", type=float, default=0.03)
    add_json_flag(p)
    p.set_defaults(func=run)


def _step(n: int, text: str) -> None:
    print(f"[{n}/4] {text}", file=sys.stderr, flush=True)


def run(args) -> int:
    t0 = time.perf_counter()
    model, info = load_checkpoint(args.checkpoint)
    data_name = args.data or info.dataset or DEFAULT_BACKBONE_DATA
    seed = info.training.get("config", {}).get("seed", 0)
    prep = Preprocessing.from_dict(info.preprocessing)
    dataset = load_dataset(data_name, seed=seed)
    _step(1, f"evaluating the float {info.model} on {data_name} ({len(dataset.test):,} test images)")
    float_acc = evaluate(model, dataset.test, info.resolution, prep)["accuracy"]
    _step(2, "quantizing to int8 (BatchNorm folded, calibrated activations, fixed-point requantization)")
    qmodel = quantize_model(model, info, dataset.train, seed=seed)
    int8_acc = evaluate(Int8Net(qmodel), dataset.test, info.resolution, prep)["accuracy"]
    _step(3, f"new task {args.task}: new int8 head, training with scheme {args.scheme} (int8 simulation)")
    task = load_dataset(args.task, seed=seed)
    cfg = FinetuneConfig(model="", data=args.task, scheme=args.scheme, epochs=args.epochs, lr=args.lr,
                         train_subset=args.train_subset, seed=seed)
    tuned = finetune(cfg, progress=True, model=qmodel, dataset=task)
    _step(4, "done")
    summary = model_summary(info.model, info.resolution)
    payload = {
        "model": info.model, "resolution": info.resolution, "backbone_data": data_name,
        "float_accuracy": float_acc, "int8_accuracy": int8_acc, "test_n": len(dataset.test),
        "parameters": sum(p.numel() for p in model.parameters()), "backbone_weights": summary["backbone_weights"],
        "macs": summary["macs"], "task": args.task, "scheme": args.scheme,
        "task_accuracy_before": tuned["accuracy_before"], "task_accuracy_after": tuned["accuracy"],
        "task_test_n": tuned["n"], "trainable": tuned["trainable"],
        "train_images": args.train_subset or len(task.train),
        "epochs": args.epochs, "seconds": round(time.perf_counter() - t0, 1),
    }
    emit(args, payload, _human)
    return 0


def _human(p: dict) -> str:
    w = p["trainable"]["weight_layers"]
    return "\n".join([
        "mcutrain demo",
        f"  backbone     {p['model']} @ {p['resolution']}x{p['resolution']}: {p['parameters']:,} float parameters, "
        f"{p['macs']:,} MACs per image",
        f"  own task     {p['backbone_data']}: float {p['float_accuracy'] * 100:.2f}% -> int8 "
        f"{p['int8_accuracy'] * 100:.2f}% ({p['test_n']:,} test images)",
        f"  new task     {p['task']}: {p['task_accuracy_before'] * 100:.1f}% before -> "
        f"{p['task_accuracy_after'] * 100:.1f}% after int8 training ({p['task_test_n']:,} test images)",
        f"  scheme       {p['scheme']}: biases of {p['trainable']['bias_layers']} convs, weights of {len(w)} convs "
        f"(partial channels), classifier; {p['train_images']} images x {p['epochs']} epochs",
        f"  time         {p['seconds']:.0f} s",
    ])
