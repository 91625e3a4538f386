"""`mcutrain run`: train a compiled program on real samples, on the host or on the Cortex-M7 under QEMU.

The folder comes from ``mcutrain compile --target host|cortex-m7 --out DIR``. The samples are drawn
from the dataset's train split (training) and test split (held-out accuracy before and after), and
turned into the model's int8 input the way training in simulation does (``mcutrain.codegen.samples``).
For the Cortex-M7 the result adds what the firmware costs: SRAM (.data + .bss + the stack's measured
high-water mark), Flash (.isr_vector + .text + .rodata + .ARM.exidx + .data), and instructions per
step and per inference counted by QEMU (-icount): instructions, not cycles.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.errors import DataError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help=HELP["run"],
        description="Run --steps SGD steps (batch 1) of the program compiled into DIR on samples of --data, "
                    "and measure accuracy on --eval held-out samples before and after. Host folders run the "
                    "host library; cortex-m7 folders run the firmware under qemu-system-arm (mps2-an500, "
                    "semihosting), which also reports SRAM, Flash and instructions per step and per inference.")
    p.add_argument("folder", metavar="DIR", help="folder made by `mcutrain compile --target ... --out DIR`")
    p.add_argument("--data", required=True, help="dataset name (see `mcutrain data`), folder:PATH or npz:PATH")
    p.add_argument("--steps", type=int, required=True, help="training steps (one sample each)")
    p.add_argument("--eval", type=int, default=20, help="held-out samples for the accuracy before/after (0: none)")
    p.add_argument("--seed", type=int, default=0, help="dataset split and sample order")
    p.add_argument("--timeout", type=float, default=3600, help="seconds a QEMU run may take before it is killed")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mcutrain.codegen.samples import int8_samples
    from mcutrain.codegen.targets import read_target
    from mcutrain.data import load_dataset

    if args.steps < 0 or args.eval < 0:
        raise DataError(f"--steps and --eval must be >= 0, got {args.steps} and {args.eval}")
    target = read_target(args.folder)
    dataset = load_dataset(args.data, seed=args.seed)
    if dataset.num_classes != target["num_classes"]:
        raise DataError(f"{args.folder} holds a {target['num_classes']}-class model, {args.data} has "
                        f"{dataset.num_classes} classes")
    draw = dict(resolution=target["resolution"], preprocessing=target["preprocessing"],
                input_scale=target["input"]["scale"], input_zero=target["input"]["zero"])
    train = int8_samples(dataset.train, args.steps, seed=args.seed, **draw)
    held_out = int8_samples(dataset.test, min(args.eval, len(dataset.test)), seed=args.seed + 1, **draw)
    runner = run_host if target["target"] == "host" else run_cortex_m7
    result = {"folder": str(args.folder), "target": target["target"], "model": target["model"],
              "resolution": target["resolution"], "scheme": target["scheme"], "data": args.data,
              **runner(Path(args.folder), target, train, held_out)}
    emit(args, result, _human)
    return 0


def _accuracy(classes: np.ndarray, labels: np.ndarray) -> float | None:
    return float(np.mean(classes == labels)) if len(labels) else None


def run_host(folder: Path, target: dict, train, held_out) -> dict:
    from mcutrain.codegen import HostEngine, build_host

    engine = HostEngine(build_host(folder))
    t0 = time.perf_counter()
    before = np.array([int(engine.predict(x).argmax()) for x in held_out[0]], np.int64)
    losses = []
    for x, y in tqdm(list(zip(*train)), desc="train steps (host)", file=sys.stderr, leave=False):
        losses.append(engine.train_step(x, int(y)))
    after = np.array([int(engine.predict(x).argmax()) for x in held_out[0]], np.int64)
    return {"losses": losses, "accuracy": {"before": _accuracy(before, held_out[1]),
                                           "after": _accuracy(after, held_out[1]), "n": len(held_out[1])},
            "seconds": round(time.perf_counter() - t0, 3)}


def run_cortex_m7(folder: Path, target: dict, train, held_out) -> dict:
    from mcutrain.codegen.cortex_m7 import run_qemu

    total = 2 * len(held_out[1]) + len(train[1])
    with tqdm(total=total, desc="firmware under QEMU (evaluate, train, evaluate)", file=sys.stderr,
              leave=False) as bar:
        run = run_qemu(folder / target["elf"], *train, *held_out, classes=target["num_classes"],
                       progress=lambda e: bar.update(e["event"] in ("train", "predict")))
    footprint = target["footprint"]
    accuracy = {p: _accuracy(run.classes[p], held_out[1]) if p in run.classes else None for p in ("before", "after")}
    return {
        "losses": [float(v) for v in run.losses],
        "accuracy": {**accuracy, "n": len(held_out[1])},
        "seconds": round(run.seconds, 3),
        "sram_bytes": footprint["static_sram_bytes"] + run.stack_high_water,
        "flash_bytes": footprint["flash_bytes"],
        "instructions_per_step": _mean(run.train_instructions),
        "instructions_per_inference": _mean(run.predict_instructions),
        "sram": {"static": footprint["static_sram_bytes"], "stack_high_water": run.stack_high_water,
                 "stack_reserve": footprint["stack_reserve"],
                 "stack_within_reserve": run.stack_high_water <= footprint["stack_reserve"]},
        "fits_256kb": target["strict"]["fits"],
        "memory_map": target["memory_map"]["name"],
        "instructions_note": "QEMU -icount instruction counts (CMSDK timer, 40 instructions per tick, calibrated "
                             "each run), not Cortex-M7 cycles",
        "save_fnv1a": f"{run.save_fnv1a:08x}",
    }


def _mean(values: np.ndarray) -> int | None:
    return int(round(float(np.mean(values)))) if len(values) else None


def _human(r: dict) -> str:
    losses = r["losses"]
    lines = [f"{r['model']} @ {r['resolution']}, {r['scheme']} on {r['target']}: {len(losses)} steps on {r['data']} "
             f"in {r['seconds']:.2f} s"]
    if losses:
        k = max(1, len(losses) // 5)
        lines.append(f"  loss            first {k}: {np.mean(losses[:k]):.4f}, last {k}: {np.mean(losses[-k:]):.4f}")
    a = r["accuracy"]
    if a["n"]:
        lines.append(f"  accuracy        {a['before']:.3f} -> {a['after']:.3f} on {a['n']} held-out samples")
    if r["target"] == "cortex-m7":
        s = r["sram"]
        lines += [f"  SRAM            {r['sram_bytes']:,} bytes (static {s['static']:,} + stack high-water "
                  f"{s['stack_high_water']:,}); fits 256 KB: {'yes' if r['fits_256kb'] else 'no'}",
                  f"  Flash           {r['flash_bytes']:,} bytes",
                  f"  instructions    {r['instructions_per_step'] or 0:,} per step, "
                  f"{r['instructions_per_inference'] or 0:,} per inference (QEMU instruction counts, not cycles)"]
    return "\n".join(lines)

