"""``compile``: one on-device training step compiled, with where every byte lives; ``generate_c``: the
same program generated as C and built for the host or a Cortex-M7 (``mcutrain compile [--target]``).

The result, a `CompiledProgram`, prints the memory summary the command prints, and plots the memory
timeline of the training step (`CompiledProgram.plot_timeline`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mcutrain.api._run_text import backward_text
from mcutrain.api.arguments import PathLike, optional_path, path_of
from mcutrain.api.results import Result
from mcutrain.errors import McutrainError

__all__ = ["TARGETS", "CompiledProgram", "compile", "generate_c", "load_model"]

# Written out, not read from codegen.cores (importing it loads torch): tests/codegen/test_codegen_cores.py
# checks that the cores here are codegen.cores.CORES, in its order.
TARGETS = ("host", "cortex-m7", "cortex-m4", "cortex-m33", "cortex-m55", "cortex-m3")
"""What `generate_c` builds for: a host library (``mcutrain run`` drives it) or firmware for a Cortex-M core
(run under its QEMU board; docs/firmware.md lists each core's typical part)."""
CORE_TARGETS = "|".join(TARGETS[1:])
MAX_MEMORY_KB = 1 << 22  # 4 GiB: a Cortex-M's whole address space


@dataclass(frozen=True, eq=False)
class CompiledProgram(Result):
    """A compiled training step: ``payload`` is ``mcutrain compile --json``'s document, ``program`` the
    engine's ``Program`` (its graph, schedule and memory plan). ``str`` is the memory summary."""

    program: Any = field(default=None, repr=False)

    def text(self) -> str:
        return compile_text(dict(self.payload))

    @property
    def peak_sram_bytes(self) -> int:
        """Total SRAM of a training step: arena + SRAM copies of trained parameters + engine state."""
        return int(self.payload["peak_sram_bytes"])

    @property
    def arena_bytes(self) -> int:
        """The activation/gradient arena alone."""
        return int(self.payload["arena_bytes"])

    @property
    def flash_bytes(self) -> int:
        """Constants in Flash: frozen weights, quantization parameters."""
        return int(self.payload["flash_bytes"])

    @property
    def folder(self) -> str | None:
        """The folder the C program was generated and built in (`generate_c`), else None."""
        target = self.payload.get("target")
        return str(target["out"]) if target else None

    def timeline(self) -> str:
        """The memory timeline as text: which buffer lives in the arena at each op."""
        from mcutrain.engine.memory import timeline_text
        from mcutrain.engine.reports import phase_starts

        train = self.program.train
        return str(timeline_text(train.plan, [op.name for op in train.graph.ops], phase_starts(train)))

    def plot_timeline(self, path: PathLike, title: str | None = None) -> Path:
        """Write a PNG of live memory per op (stacked by buffer kind, phases shaded) to ``path``."""
        from mcutrain.engine.memory import plot_live_memory
        from mcutrain.engine.reports import phase_starts

        train = self.program.train
        title = title or f"{self.payload['model']} @{self.payload['resolution']}, {self.payload['scheme']}: " \
                         f"live memory per op"
        return Path(plot_live_memory(train.plan, path_of(path), len(train.graph.ops), phase_starts(train), title))


def load_model(model: str, resolution: int) -> Any:
    """An int8 model file, or a zoo name / architecture .json file (random weights) at ``resolution``
    (0: the architecture's default). The network's size at the resolution it will be compiled at is
    checked (``spec_file.check_size``) before anything is allocated for it."""
    from mcutrain.models import model_names, resolve_spec
    from mcutrain.models.spec_file import check_resolution, check_size
    from mcutrain.quant.random_model import random_qmodel
    from mcutrain.train import model_kind as mk

    if resolution:
        check_resolution(resolution, "--resolution")
    if (model in model_names() and not Path(model).exists()) or model.lower().endswith(".json"):
        spec = resolve_spec(model)
        check_size(spec, resolution or spec.default_resolution)
        return random_qmodel(spec, resolution or spec.default_resolution, num_classes=10)[0]
    qmodel = mk.load_trainable(model)
    if mk.is_graph(qmodel):
        mk.input_size(qmodel, resolution)  # a graph takes its own input size: another --resolution is refused
        return qmodel
    qmodel = replace(qmodel, resolution=resolution) if resolution else qmodel
    check_size(qmodel.spec, qmodel.resolution)
    return qmodel


def compile(model: PathLike, scheme: PathLike, *, resolution: int = 0, lr: float | str = "auto",
            data: str | None = None, seed: int = 0, whole_image: bool = False, report: PathLike | None = None,
            target: str | None = None, out: PathLike | None = None, accumulate: str | None = None,
            kernels: str | None = None, profile: bool = False, sram_kb: int | None = None,
            flash_kb: int | None = None, backward: str = "float32") -> CompiledProgram:
    """Compile one batch-1 training step of ``model`` (an int8 model file, or a zoo name / architecture
    .json file with random weights: memory does not depend on them) under ``scheme``, and report SRAM,
    Flash and the inference-only peak (``mcutrain compile``). ``lr``: the rate compiled into the update
    ops, or ``"auto"`` (from ``data``'s features, else recorded in the model, else 0.01). ``report``: a
    folder for the graph, the timelines and the memory plot. ``target`` with ``out``: also generate the
    C program and build it (see `generate_c`; ``sram_kb``/``flash_kb``: a core's memory map,
    None: its typical part's, the STM32F746's 320 / 1024 KiB for cortex-m7;
    ``accumulate``: the C backward's accumulators, None for the default "float32" on the FPU, or
    "float64", the audit mode bit-equal to the NumPy reference executor;
    ``kernels``: the forward's, "dsp" or "portable", None: the target's default, dsp on the cores with the DSP
    extension); ``backward``: "float32" (default) or "int8", the integer backward (issue 16: int8 gradients
    with a power-of-two exponent, fixed-point updates; the NumPy reference and the generated C run it))."""
    from mcutrain.train import model_kind as mk

    name_arg, out_arg = path_of(model), optional_path(out)
    _check_target_flags(target, out_arg, accumulate, profile)
    _check_backward(backward, target)
    for flag, kb in (("--sram-kb", sram_kb), ("--flash-kb", flash_kb)):
        if kb is not None and not 1 <= kb <= MAX_MEMORY_KB:
            raise McutrainError(f"{flag} {kb}: give 1 to {MAX_MEMORY_KB} KiB")
    if kernels is not None and target is None:
        raise McutrainError(f"--kernels {kernels} applies to the generated C: add --target host|{CORE_TARGETS} "
                            f"--out DIR")
    if kernels is not None and target in TARGETS:
        from mcutrain.codegen.targets import check_target_kernels

        check_target_kernels(target, kernels)  # before the compile: a host folder cannot run dsp kernels
    qmodel = load_model(name_arg, resolution)
    plan = mk.update_plan(qmodel, path_of(scheme))
    lr, lr_choice = _compiled_lr(lr, qmodel, data, path_of(scheme), seed, target)
    name, side = mk.label(qmodel, name_arg), mk.resolution_of(qmodel)
    print(f"compiling {name} @ {side_text(side)} with {plan.scheme} ...", file=sys.stderr)
    program = _build(mk.engine_model(mk.prepared(qmodel, plan)), plan, lr, seed, target, whole_image, backward)
    summary = _summary(program, name, side, plan.scheme, lr, lr_choice)
    if report is not None:
        from mcutrain.engine.reports import write_reports

        title = f"{summary['model']} @{summary['resolution']}, {summary['scheme']}: live memory per op"
        summary["report_files"] = [str(p) for p in write_reports(program, path_of(report), summary, title)]
    if target:
        summary["target"] = _build_target(program, qmodel, name_arg, plan, target, str(out_arg), accumulate,
                                          profile, sram_kb, flash_kb, kernels)
    return CompiledProgram(summary, program)


def generate_c(model: PathLike, scheme: PathLike, target: str, out: PathLike, **options: Any) -> CompiledProgram:
    """`compile` and generate the C program into ``out``, built for ``target`` (one of `TARGETS`); the
    folder is what `mcutrain.run` trains. ``options``: `compile`'s keyword arguments."""
    return compile(model, scheme, target=target, out=out, **options)


def _check_target_flags(target: str | None, out: str | None, accumulate: str | None, profile: bool) -> None:
    if target is not None and target not in TARGETS:
        raise McutrainError(f"--target {target}: choose from {', '.join(TARGETS)}")
    if (target is None) != (out is None):
        raise McutrainError(f"--target and --out go together: --target host|{CORE_TARGETS} --out DIR")
    if accumulate is not None and target is None:
        raise McutrainError(f"--accumulate {accumulate} applies to the generated C: add --target "
                            f"host|{CORE_TARGETS} --out DIR")
    if profile and target in (None, "host"):
        raise McutrainError(f"--profile times the ops of the firmware: it needs --target {CORE_TARGETS} --out DIR "
                            f"(got --target {target})")


def _check_backward(backward: str, target: str | None) -> None:
    """Before any work: a known mode, and one the C target generates when a target is asked for."""
    from mcutrain.engine.passes.options import BACKWARDS

    if backward not in BACKWARDS:
        raise McutrainError(f"--backward {backward}: choose from {', '.join(BACKWARDS)}")


def _build(engine_model: Any, plan: Any, lr: float, seed: int, target: str | None, whole_image: bool,
           backward: str = "float32") -> Any:
    if target:
        from mcutrain.codegen import compile_for_codegen

        return compile_for_codegen(engine_model, plan, lr=lr, seed=seed, backward=backward)
    from mcutrain.engine.compile import compile_training

    return compile_training(engine_model, plan, lr=lr, seed=seed, stream_input=not whole_image, backward=backward)


def _summary(program: Any, name: str, side: Any, scheme: str, lr: float,
             lr_choice: dict[str, Any] | None) -> dict[str, Any]:
    from mcutrain.engine.compile import format_report

    r = program.report
    return {
        "model": name, "resolution": side, "scheme": scheme, "lr": lr,
        "lr_auto": lr_choice, "backward": program.options.backward,
        "peak_sram_bytes": r["total_sram_bytes"], "arena_bytes": r["arena_bytes"],
        "trainable_sram_bytes": r["trainable_bytes"], "mask_bytes": r["mask_bytes"],
        "flash_bytes": r["flash_bytes"], "inference_peak_bytes": r["inference_arena_bytes"],
        "arena_bump_bytes": r["arena_bump_bytes"], "peak_op": r["peak_op"], "ops": r["n_ops"],
        "input_streamed": r["input_streamed"], "input_bytes": r["input_bytes"],
        "train_over_inference": r["train_over_inference"], "text": format_report(r),
    }


def _build_target(program: Any, qmodel: Any, model: str, plan: Any, target: str, out: str, accumulate: str | None,
                  profile: bool, sram_kb: int | None, flash_kb: int | None,
                  kernels: str | None = None) -> dict[str, Any]:
    from mcutrain.codegen.generate import DEFAULT_ACCUMULATE
    from mcutrain.codegen.targets import build_target
    from mcutrain.train import model_kind as mk

    facts = mk.target_facts(qmodel, model)
    return dict(build_target(program, facts, plan, target, out, memory=_memory_map(target, sram_kb, flash_kb),
                             accumulate=accumulate or DEFAULT_ACCUMULATE, kernels=kernels, profile=profile,
                             log=lambda m: print(m, file=sys.stderr)))


def _memory_map(target: str, sram_kb: int | None, flash_kb: int | None) -> Any:
    """The core's part with ``sram_kb`` / ``flash_kb`` where given (renamed when they differ); None for the host."""
    from mcutrain.codegen.cores import core_of

    if target == "host":
        return None
    part = core_of(target).part
    memory = replace(part, flash_bytes=(part.flash_bytes // 1024 if flash_kb is None else flash_kb) * 1024,
                     ram_bytes=(part.ram_bytes // 1024 if sram_kb is None else sram_kb) * 1024)
    if (memory.flash_bytes, memory.ram_bytes) != (part.flash_bytes, part.ram_bytes):
        memory = replace(memory, name=f"{memory.flash_bytes // 1024}kb-flash-{memory.ram_bytes // 1024}kb-sram")
    return memory


def _compiled_lr(lr: float | str, qmodel: Any, data: str | None, scheme: str, seed: int,
                 target: str | None) -> tuple[float, dict[str, Any] | None]:
    """``lr``, resolving ``auto`` (printed with its source; docs/learning-rate.md): with ``data``
    ``finetune --lr auto`` in the simulation, scaled to batch 1 (``finetune.device_auto_lr``); else the
    rate derived from the head curvature that ``finetune --lr auto`` recorded in the model."""
    from mcutrain.train import lr_auto
    from mcutrain.train import model_kind as mk

    if not lr_auto.is_auto(lr):
        from mcutrain.train.learning_rate import check_learning_rate

        return check_learning_rate(lr), None
    if data:
        from mcutrain.train.finetune import device_auto_lr

        rate, choice = device_auto_lr(qmodel, data, scheme, seed=seed)
        print(f"mcutrain compile: {choice.summary()}; scaled to batch 1: {rate:.3g}", file=sys.stderr)
        return rate, {"lr": rate, "batch32": choice.as_dict()}
    curvature = mk.recorded_curvature(qmodel)
    if curvature is None:
        if target:
            print(f"mcutrain compile: warning: --lr auto has no data to choose the rate with (pass --data); "
                  f"compiling lr {lr_auto.FALLBACK_DEVICE_LR:g}, which the on-device guard halves if it is "
                  f"too large", file=sys.stderr)
        return lr_auto.FALLBACK_DEVICE_LR, None
    rate = lr_auto.device_lr(curvature)
    print(f"mcutrain compile: --lr auto: {rate:.3g} (batch-1 rate derived from the head's curvature "
          f"{curvature.lambda_max:.3g} recorded by finetune --lr auto)", file=sys.stderr)
    return rate, None


def side_text(resolution: Any) -> str:
    """``RxR`` for a zoo model's side, ``HxW`` for a graph's [H, W]."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    return f"{h}x{w}"


def compile_text(s: dict[str, Any]) -> str:
    """The text ``mcutrain compile`` prints: the memory summary, the build, the report files."""
    lines = [f"{s['model']} @ {side_text(s['resolution'])}, scheme {s['scheme']}: {s['ops']} ops", s["text"]]
    if s.get("backward", "float32") != "float32":
        lines.append(f"  backward        {s['backward']} (integer gradients, fixed-point updates)")
    if s.get("target"):
        lines.append(_target_line(s["target"]))
    if s.get("report_files"):
        lines.append("  report          " + ", ".join(s["report_files"]))
    return "\n".join(lines)


def _target_line(t: dict[str, Any]) -> str:
    accumulators = f"{backward_text(t)}, {t.get('kernels', 'portable')} forward kernels"
    if t["target"] == "host":
        return f"  host build      {t['out']}/{t['library']} ({accumulators})"
    f, strict = t["footprint"], t.get("strict")
    fits = "" if strict is None else f"; {strict['memory_map']['name']}: " + (
        "fits" if strict["fits"] else "does NOT fit (" + strict["why"] + ")")
    return (f"  {t['target']:<15} {t['out']}/{t['elf']}: Flash {f['flash_bytes']:,} bytes, static SRAM "
            f"{f['static_sram_bytes']:,} bytes (+ stack, measured by mcutrain run) of {t['memory_map']['name']}'s "
            f"{t['memory_map']['ram_bytes'] // 1024} KB, {accumulators}{fits}")
