"""``run``: train a compiled C program on a dataset's samples, on the host or on a Cortex-M7 under
QEMU (``mcutrain run``): losses per step, held-out accuracy before and after, and for the firmware its
SRAM, Flash and instructions per step. A run that did not learn raises
`mcutrain.errors.TrainingFailed` whose ``result`` is the document (as the command exits 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcutrain.api.arguments import PathLike, path_of
from mcutrain.api.results import Result
from mcutrain.errors import DataError, TrainingFailed

__all__ = ["RunResult", "run"]


@dataclass(frozen=True, eq=False)
class RunResult(Result):
    """A run of a compiled program: ``losses`` per step, ``accuracy`` before/after, ``health``, and
    for a Cortex-M core (``cortex-m7`` ...) the measured SRAM, Flash and instruction counts."""

    def text(self) -> str:
        from mcutrain.api._run_text import run_text

        return run_text(dict(self.payload))

    @property
    def losses(self) -> list[float]:
        """The training loss of every step, in order."""
        return [float(v) for v in self.payload["losses"]]

    @property
    def accuracy_before(self) -> float | None:
        """Held-out accuracy before training (None with ``eval=0``)."""
        a = self.payload["accuracy"]
        return float(a["before"]) if a.get("n") else None

    @property
    def accuracy_after(self) -> float | None:
        """Held-out accuracy after training (None with ``eval=0``)."""
        a = self.payload["accuracy"]
        return float(a["after"]) if a.get("n") else None


def run(folder: PathLike, data: str, steps: int, *, eval: int = 20, seed: int = 0, profile: bool = False,
        timeout: float = 3600) -> RunResult:
    """Run ``steps`` SGD steps (batch 1) of the program compiled into ``folder`` (`mcutrain.generate_c`)
    on samples of ``data``, with accuracy on ``eval`` held-out samples before and after. ``profile``:
    Cortex-M7 folders compiled with ``profile``: instructions per op too. ``timeout``: the CLI's
    ``--timeout``, accepted but not applied yet (the QEMU runner keeps its own limit)."""
    from mcutrain.codegen.runner import profile_firmware, run_firmware, run_host
    from mcutrain.codegen.samples import int8_samples
    from mcutrain.codegen.targets import read_target
    from mcutrain.data import load_dataset

    where = path_of(folder)
    if steps < 0 or eval < 0:
        raise DataError(f"--steps and --eval must be >= 0, got {steps} and {eval}")
    target = read_target(where)
    if profile and target["target"] == "host":
        raise DataError(f"--profile times the firmware's ops; {where} is a host folder "
                        f"(compile with --target cortex-m7 --profile, or another core)")
    dataset = load_dataset(data, seed=seed)
    if dataset.num_classes != target["num_classes"]:
        raise DataError(f"{where} holds a {target['num_classes']}-class model, {data} has "
                        f"{dataset.num_classes} classes")
    draw = dict(resolution=target["resolution"], preprocessing=target["preprocessing"],
                input_scale=target["input"]["scale"], input_zero=target["input"]["zero"])
    train = int8_samples(dataset.train, steps, seed=seed, **draw)
    held_out = int8_samples(dataset.test, min(eval, len(dataset.test)), seed=seed + 1, **draw)
    runner = run_host if target["target"] == "host" else run_firmware
    result = {"folder": where, "target": target["target"], "model": target["model"],
              "resolution": target["resolution"], "scheme": target["scheme"], "accumulate": target["accumulate"],
              "backward": target.get("backward", "float32"), "kernels": target["kernels"], "data": data,
              **runner(Path(where), target, train, held_out)}
    if profile:
        result["profile"] = profile_firmware(Path(where), target, train, held_out, result)
    health = run_health(result, target["num_classes"])
    result.update(failed=not health.ok, health=health.to_dict())
    if not health.ok:
        lr = target.get("lr")
        advice = (f"{health.lr_advice(lr)} in `mcutrain compile` and recompile" if isinstance(lr, (int, float))
                  else "recompile with another --lr")
        raise TrainingFailed(f"training on the C engine failed to learn: {health.reason}{_rollbacks_note(result)}; "
                             f"{advice}", result=result)
    return RunResult(result)


def run_health(result: dict[str, Any], classes: int) -> Any:
    """The health of a run of the engine (``train.health``): its per-step losses and held-out accuracy
    after training (none when ``eval`` is 0). Rollbacks of the engine's guard are no failure in
    themselves: the judgement looks at where the run ends."""
    from mcutrain.train.health import judge

    accuracy = result["accuracy"]
    after = accuracy.get("after") if accuracy.get("n") else None
    return judge(result["losses"], classes, val_accuracy=after, val_n=accuracy.get("n") or None, unit="step")


def guard_rollbacks(result: dict[str, Any]) -> int:
    """How often the engine's guard rolled back (0 when the program has no guard)."""
    guard = result.get("guard") or {}
    return int(guard.get("rollbacks") or 0)


def _rollbacks_note(result: dict[str, Any]) -> str:
    n = guard_rollbacks(result)
    return f" (its guard rolled back {n} time(s) and could not recover)" if n else ""
