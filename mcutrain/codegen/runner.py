"""Running a built target on int8 samples: the host library in-process, the firmware under QEMU.

``run_host`` and ``run_cortex_m7`` take a folder made by ``build_target`` (its ``target.json`` as
``target``), training samples and held-out samples (``samples.int8_samples``), and return the same
dict shape: losses, accuracy before/after, seconds; the firmware run adds what it costs (SRAM, Flash,
instructions per step and per inference). ``mcutrain run`` and ``mcutrain demo`` both call them.
``run_host`` can also measure held-out accuracy every ``eval_every`` steps (the demo's curve).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

__all__ = ["run_cortex_m7", "run_host"]


def _accuracy(classes: np.ndarray, labels: np.ndarray) -> float | None:
    return float(np.mean(classes == labels)) if len(labels) else None


def run_host(folder: Path, target: dict, train, held_out, *, eval_every: int = 0, leave: bool = False) -> dict:
    from mcutrain.codegen import HostEngine, build_host

    engine = HostEngine(build_host(folder))

    def classes() -> np.ndarray:
        return np.array([int(engine.predict(x).argmax()) for x in held_out[0]], np.int64)

    t0 = time.perf_counter()
    before = classes()
    losses, curve = [], [(0, _accuracy(before, held_out[1]))]
    for step, (x, y) in enumerate(tqdm(list(zip(*train)), desc="train steps (host C engine)", file=sys.stderr,
                                       leave=leave), start=1):
        losses.append(engine.train_step(x, int(y)))
        if eval_every and step % eval_every == 0 and step < len(train[1]):
            curve.append((step, _accuracy(classes(), held_out[1])))
    after = classes()
    curve.append((len(losses), _accuracy(after, held_out[1])))
    result = {"losses": losses, "accuracy": {"before": _accuracy(before, held_out[1]),
                                             "after": _accuracy(after, held_out[1]), "n": len(held_out[1])},
              "seconds": round(time.perf_counter() - t0, 3)}
    if eval_every:
        result["accuracy_curve"] = curve
    return result


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
