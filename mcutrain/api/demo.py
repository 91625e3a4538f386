"""``run_demo``: the main job on the bundled backbone, end to end (``mcutrain demo``; ``mcutrain.demo``)."""

from __future__ import annotations

from dataclasses import dataclass

from mcutrain.api.arguments import PathLike, optional_path, path_of
from mcutrain.api.results import Result
from mcutrain.assets import DEFAULT_BACKBONE

__all__ = ["DemoResult", "run_demo"]


@dataclass(frozen=True, eq=False)
class DemoResult(Result):
    """Every stage's numbers (``mcutrain demo --json``); the report folder is ``config["out"]``."""

    def text(self) -> str:
        from mcutrain.reports.demo import human_summary

        r = dict(self.payload)
        rows = human_summary(r)
        width = max(len(label) for label, _ in rows) + 2
        return "\n".join(["mcutrain demo"] + [f"  {label:<{width}}{text}" for label, text in rows]
                         + [f"  {'report':<{width}}{r['config']['out']}/summary.md"])


def run_demo(*, checkpoint: PathLike = str(DEFAULT_BACKBONE), model: PathLike | None = None, data: str | None = None,
             task: str = "mnist-5k", sram: str = "256KB", flash: str = "1MB", contrib: str = "auto",
             steps: int = 3000, lr: float | str = "auto", eval_samples: int = 500, device_steps: int = 20,
             seed: int = 0, out: PathLike = "runs/demo", command: str = "mcutrain demo",
             core: str = "cortex-m7") -> DemoResult:
    """From the float ``checkpoint`` (or a full-int8 ``.tflite`` ``model``, imported) to training on the
    compiled C engine: quantize, a new head for ``task``, a contribution analysis (``contrib``: a
    contrib.json, "auto", "fast" or "quick"), search a scheme under ``sram``/``flash``, compile to C, train
    ``steps`` on the host build, then ``device_steps`` on ``core`` (a Cortex-M of
    ``mcutrain.codegen.cores``, the M7 by default) under QEMU (a .tflite model is
    exported back, trained, and checked with LiteRT); writes a report folder ``out`` whose summary
    records ``command`` as the command that made it."""
    from mcutrain.demo import DemoConfig
    from mcutrain.demo import run_demo as run_stages
    from mcutrain.errors import McutrainError
    from mcutrain.reports.demo import write_demo_report

    tflite = optional_path(model)
    if tflite is not None and not tflite.lower().endswith(".tflite"):
        raise McutrainError(f"--model {tflite!r}: give a full-int8 .tflite file (mcutrain demo --model PATH.tflite)")
    cfg = DemoConfig(checkpoint=path_of(checkpoint), model=tflite, data=data, task=task, sram_budget=sram,
                     flash_budget=flash, contrib=contrib, steps=steps, lr=lr, eval_samples=eval_samples,
                     device_steps=device_steps, seed=seed, out=path_of(out), core=core)
    result = run_stages(cfg)
    result["command"] = command
    result["report_files"] = [str(f) for f in write_demo_report(result, cfg.out)]
    return DemoResult(result)
