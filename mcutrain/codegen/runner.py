"""Running a built target on int8 samples: the host library in-process, the firmware under QEMU.

``run_host`` and ``run_firmware`` take a folder made by ``build_target`` (its ``target.json`` as
``target``), training samples and held-out samples (``samples.int8_samples``), and return the same
dict shape: losses, accuracy before/after, seconds; the firmware run adds what it costs (SRAM, Flash,
instructions per step and per inference). ``mcutrain run`` and ``mcutrain demo`` both call them.
``run_host`` can also measure held-out accuracy every ``eval_every`` steps (the demo's curve).
Both report what the engine's guard did (``guard``: rollbacks, the final learning rate, and one event
per rollback: step, the loss that triggered it, the learning rate after it, where the parameters came
from); model.h's API comment says when it rolls back.
``profile_firmware`` adds the per-op instruction profile of one step and one inference (``--profile``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mcutrain.codegen.cores import core_of
from mcutrain.codegen.errors import CodegenError
from mcutrain.codegen.storage import STEP_FLAGS

__all__ = ["profile_firmware", "run_firmware", "run_host"]


def _accuracy(classes: np.ndarray, labels: np.ndarray) -> float | None:
    return float(np.mean(classes == labels)) if len(labels) else None


def run_host(folder: Path, target: dict, train, held_out, *, eval_every: int = 0, leave: bool = False,
             save_to: Path | None = None) -> dict:
    """``save_to``: also write the trained parameters there (``mct_save``'s snapshot, as a device saves them)."""
    from mcutrain.codegen import HostEngine, build_host

    engine = HostEngine(build_host(folder))

    def classes() -> np.ndarray:
        return engine.predict_classes(held_out[0])

    t0 = time.perf_counter()
    before = classes()
    losses, curve, events = [], [(0, _accuracy(before, held_out[1]))], []
    for step, (x, y) in enumerate(tqdm(list(zip(*train)), desc="train steps (host C engine)", file=sys.stderr,
                                       leave=leave), start=1):
        losses.append(engine.train_step(x, int(y)))
        if engine.has_guard and engine.status & STEP_FLAGS["rolled_back"]:
            events.append(guard_event(engine.step, losses[-1], engine.learning_rate, engine.status))
        if eval_every and step % eval_every == 0 and step < len(train[1]):
            curve.append((step, _accuracy(classes(), held_out[1])))
    after = classes()
    curve.append((len(losses), _accuracy(after, held_out[1])))
    if save_to is not None:
        from mcutrain.io.atomic import atomic_write_bytes

        atomic_write_bytes(save_to, engine.save())
    result = {"losses": losses, "accuracy": {"before": _accuracy(before, held_out[1]),
                                             "after": _accuracy(after, held_out[1]), "n": len(held_out[1])},
              "seconds": round(time.perf_counter() - t0, 3)}
    if engine.has_guard:
        result["guard"] = guard_summary(engine.rollbacks, engine.learning_rate, events)
    if eval_every:
        result["accuracy_curve"] = curve
    return result


def run_firmware(folder: Path, target: dict, train, held_out) -> dict:
    from mcutrain.codegen.firmware import run_qemu

    total = 2 * len(held_out[1]) + len(train[1])
    with tqdm(total=total, desc="firmware under QEMU (evaluate, train, evaluate)", file=sys.stderr,
              leave=False) as bar:
        run = run_qemu(folder / target["elf"], *train, *held_out, classes=target["num_classes"],
                       progress=lambda e: bar.update(e["event"] in ("train", "predict")), core=target["target"])
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
        "first_step_instructions": _first(run.train_instructions),
        "first_inference_instructions": _first(run.predict_instructions),
        "sram": {"static": footprint["static_sram_bytes"], "stack_high_water": run.stack_high_water,
                 "stack_reserve": footprint["stack_reserve"],
                 "stack_within_reserve": run.stack_high_water <= footprint["stack_reserve"]},
        "fits_256kb": target["strict"]["fits"] if "strict" in target else True,
        "memory_map": target["memory_map"]["name"],
        "instructions_note": f"QEMU -icount instruction counts on {target['target']} "
                             f"({core_of(target['target']).machine}'s timer, "
                             f"{run.instructions_per_tick:g} instructions per tick, calibrated each run), not cycles",
        "save_fnv1a": f"{run.save_fnv1a:08x}",
        "guard": _qemu_guard(run),
    }


def _qemu_guard(run) -> dict:
    """The guard's summary from the firmware's lines (the same shape as ``run_host``'s)."""
    rolled = np.flatnonzero(run.statuses & STEP_FLAGS["rolled_back"])
    events = [guard_event(i + 1, float(run.losses[i]), float(run.learning_rates[i]), int(run.statuses[i]))
              for i in rolled]
    return guard_summary(run.rollbacks, run.lr_final, events)


def guard_event(step: int, loss: float, lr_after: float, status: int) -> dict:
    """One rollback: the step, its loss (what blew up), the learning rate after, where the parameters
    came from ("snapshot": the caller's buffer, "flash": the initial ones)."""
    return {"step": int(step), "loss": float(loss), "lr_after": float(lr_after),
            "restored": "snapshot" if status & STEP_FLAGS["from_snapshot"] else "flash"}


def guard_summary(rollbacks: int, lr_final: float, events: list[dict]) -> dict:
    """``result["guard"]``: {"rollbacks", "lr_final", "events"} (``mcutrain run`` shows it)."""
    if rollbacks != len(events):
        raise CodegenError(f"the engine counted {rollbacks} rollbacks but the run saw {len(events)}")
    return {"rollbacks": int(rollbacks), "lr_final": float(lr_final), "events": events}


def _first(values: np.ndarray) -> int | None:
    return int(values[0]) if len(values) else None


def _mean(values: np.ndarray) -> int | None:
    return int(round(float(np.mean(values)))) if len(values) else None


def profile_firmware(folder: Path, target: dict, train, held_out, default: dict) -> dict:
    """Per-op instructions of one training step and one inference: ``firmware-profile.elf`` (built by
    ``mcutrain compile --target cortex-m7 --profile``, or another core) on the first training sample and the first
    held-out one, from a fresh ``mct_init`` as in the ``default`` run (``run_firmware``'s result), whose
    first loss it must reproduce bit for bit (the hook only reads the timer). Each stage: its ops
    ({op, kind, phase, instructions}), totals by kind and by phase, the hook's measured cost per op
    (subtracted), and what the default build's step has beyond the ops' sum (``unattributed``: the
    step's exit minus what the hook sites cost beyond the probed hook: 8-24 instructions per op)."""
    from mcutrain.codegen.firmware import op_profile, run_qemu

    info = target.get("profile")
    if not info:
        raise CodegenError(f"{folder} has no profile firmware; build it with `mcutrain compile ... "
                           f"--target {target['target']} "
                           f"--profile --out {folder}`")
    if not len(train[1]) or not len(held_out[1]):
        raise CodegenError(f"a profile needs one training and one held-out sample (got {len(train[1])} and "
                           f"{len(held_out[1])}): use --steps >= 1 and --eval >= 1")
    run = run_qemu(folder / info["elf"], train[0][:1], train[1][:1], held_out[0][:1], held_out[1][:1],
                   classes=target["num_classes"], after=False, core=target["target"])
    if float(run.losses[0]) != default["losses"][0]:
        raise CodegenError(f"the profile firmware's first loss {float(run.losses[0])!r} differs from the default "
                           f"firmware's {default['losses'][0]!r}: the trace hook changed the arithmetic")
    defaults = {"train": default["first_step_instructions"], "inference": default["first_inference_instructions"]}
    return {stage: _stage_summary(op_profile(run, info["ops"][stage], stage=stage), defaults[stage])
            for stage in ("train", "inference")}


def _stage_summary(profile: dict, default_total: int | None) -> dict:
    ops = profile["ops"]
    attributed = sum(r["instructions"] for r in ops)
    return {"ops": ops, "instructions": attributed, "by_kind": _totals(ops, "kind"), "by_phase": _totals(ops, "phase"),
            "default_build_instructions": default_total,
            "unattributed": None if default_total is None else default_total - attributed,
            "profile_build_instructions": profile["total_instructions"],
            "hook_instructions_per_op": profile["hook_instructions_per_op"],
            "note": f"per op: timer ticks x {profile['instructions_per_tick']} between consecutive ops (resolution "
                    f"{profile['instructions_per_tick']} instructions) minus the hook's measured "
                    f"{profile['hook_instructions_per_op']} instructions; the first op includes the step's entry"}


def _totals(ops: list[dict], key: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for r in ops:
        totals[r[key]] = totals.get(r[key], 0) + r["instructions"]
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))
