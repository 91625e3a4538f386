"""`mcutrain compile`: compile one on-device training step and report where every byte lives.

With ``--target host|cortex-m7 --out DIR`` it also generates the C program into DIR and builds it: a
host library (``mcutrain run`` drives it through ctypes) or a Cortex-M7 firmware (STM32F746 map, also
linked against a strict 256 KB SRAM map; ``mcutrain run`` drives it under QEMU). DIR gets
``target.json``: what ``run`` needs to feed the program (resolution, input quantization, classes).
``--accumulate float32`` generates the C with float32 backward accumulators (the folder's sources
carry the mode, ``target.json`` and ``manifest.json`` say it; see ``mcutrain.codegen.generate``).
MODEL may be an imported int8 graph file (``mcutrain import``): ``train.model_kind`` answers what differs
(its schemes, its input size and quantization, what ``target.json`` says about its input).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from mcutrain.cli.commands import HELP
from mcutrain.codegen.cortex_m7 import STM32F746
from mcutrain.codegen.generate import ACCUMULATE
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.engine.compile import compile_training, format_report
from mcutrain.errors import McutrainError
from mcutrain.engine.reports import write_reports
from mcutrain.models import model_names, resolve_spec
from mcutrain.models.spec_file import check_resolution, check_size
from mcutrain.quant.random_model import random_qmodel
from mcutrain.cli import argtypes
from mcutrain.train import model_kind as mk

TARGETS = ("host", "cortex-m7")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compile", help=HELP["compile"],
        description="Compile one batch-1 training step of MODEL (an int8 model file, or a zoo name or an "
                    "architecture .json file for a random-weight model: memory does not depend on the "
                    "weights) under --scheme, and report SRAM (arena + SRAM copies of trained parameters + "
                    "the engine's state: step counter, guard), Flash and the inference-only peak. "
                    "--report DIR writes the printed graph, memory timelines (text) and a memory plot (PNG).")
    p.add_argument("model", metavar="MODEL",
                   help="int8 model file, imported int8 graph file, zoo name, or architecture .json file")
    p.add_argument("--scheme", required=True, help="built-in scheme name or JSON path")
    p.add_argument("--resolution", type=argtypes.resolution, default=0, help="input side (default: the model's)")
    p.add_argument("--lr", type=argtypes.learning_rate_or_auto, default="auto",
                   help="learning rate compiled into the update ops, or auto (default): derived from the head's "
                        "curvature (docs/learning-rate.md) on --data, else the one `finetune --lr auto` "
                        "recorded in MODEL, else 0.01 (the on-device guard halves a rate that is too large)")
    p.add_argument("--data", default=None,
                   help="training data whose features set --lr auto (a dataset name, folder:PATH or npz:PATH)")
    p.add_argument("--seed", type=int, default=0, help="stochastic-rounding seed")
    p.add_argument("--whole-image", action="store_true",
                   help="keep the input image whole in SRAM (default: stream it row by row from its source, "
                        "when only frozen layers read it)")
    p.add_argument("--report", metavar="DIR", default=None, help="write timeline and plot files here")
    p.add_argument("--target", choices=TARGETS, default=None,
                   help="also generate the C program into --out and build it for this target (compiled with "
                        "the passes the C target supports; --whole-image does not apply)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the generated C and the build (with --target)")
    p.add_argument("--accumulate", choices=tuple(ACCUMULATE), default=None,
                   help="the C backward's accumulators (with --target): float64 (default) sums its "
                        "contractions in double, bit-equal to the NumPy reference executor; float32 sums them "
                        "in float: about half the instructions per training step on the Cortex-M7 (its FPU is "
                        "single-precision, double is soft-float), forward still bit-exact, backward within "
                        "float32 rounding of the reference. Written into the generated C (no build flag "
                        "needed), manifest.json and target.json")
    p.add_argument("--profile", action="store_true",
                   help="with --target cortex-m7: also build firmware-profile.elf, which times every op (for "
                        "`mcutrain run DIR --profile`); firmware.elf is built as without it")
    p.add_argument("--sram-kb", type=int, default=STM32F746.ram_bytes // 1024,
                   help="SRAM of the cortex-m7 memory map in KiB (default: the STM32F746's 320)")
    p.add_argument("--flash-kb", type=int, default=STM32F746.flash_bytes // 1024,
                   help="Flash of the cortex-m7 memory map in KiB (default: the STM32F746's 1024)")
    add_json_flag(p)
    p.set_defaults(func=run)


def load_model(model: str, resolution: int):
    """An int8 model file, or a zoo name / architecture .json file (random weights) at ``resolution``
    (0: the architecture's default). The network's size at the resolution it will be compiled at is
    checked (``spec_file.check_size``) before anything is allocated for it."""
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


def run(args) -> int:
    if (args.target is None) != (args.out is None):
        raise McutrainError("--target and --out go together: --target host|cortex-m7 --out DIR")
    if args.accumulate is not None and args.target is None:
        raise McutrainError(f"--accumulate {args.accumulate} applies to the generated C: add --target "
                            f"host|cortex-m7 --out DIR")
    if args.profile and args.target != "cortex-m7":
        raise McutrainError(f"--profile times the ops of the firmware: it needs --target cortex-m7 --out DIR "
                            f"(got --target {args.target})")
    qmodel = load_model(args.model, args.resolution)
    plan = mk.update_plan(qmodel, args.scheme)
    args.lr, lr_choice = _compiled_lr(args, qmodel)
    name, resolution = mk.label(qmodel, args.model), mk.resolution_of(qmodel)
    print(f"compiling {name} @ {_side(resolution)} with {plan.scheme} ...", file=sys.stderr)
    engine_model = mk.engine_model(mk.prepared(qmodel, plan))
    if args.target:
        from mcutrain.codegen import compile_for_codegen

        program = compile_for_codegen(engine_model, plan, lr=args.lr, seed=args.seed)
    else:
        program = compile_training(engine_model, plan, lr=args.lr, seed=args.seed, stream_input=not args.whole_image)
    r = program.report
    summary = {
        "model": name, "resolution": resolution, "scheme": plan.scheme, "lr": args.lr,
        "lr_auto": lr_choice,
        "peak_sram_bytes": r["total_sram_bytes"], "arena_bytes": r["arena_bytes"],
        "trainable_sram_bytes": r["trainable_bytes"], "mask_bytes": r["mask_bytes"],
        "flash_bytes": r["flash_bytes"], "inference_peak_bytes": r["inference_arena_bytes"],
        "arena_bump_bytes": r["arena_bump_bytes"], "peak_op": r["peak_op"], "ops": r["n_ops"],
        "input_streamed": r["input_streamed"], "input_bytes": r["input_bytes"],
        "train_over_inference": r["train_over_inference"], "text": format_report(r),
    }
    if args.report:
        title = f"{summary['model']} @{summary['resolution']}, {summary['scheme']}: live memory per op"
        summary["report_files"] = [str(p) for p in write_reports(program, args.report, summary, title)]
    if args.target:
        from mcutrain.codegen.targets import build_target

        memory = replace(STM32F746, flash_bytes=args.flash_kb * 1024, ram_bytes=args.sram_kb * 1024)
        if (memory.flash_bytes, memory.ram_bytes) != (STM32F746.flash_bytes, STM32F746.ram_bytes):
            memory = replace(memory, name=f"{args.flash_kb}kb-flash-{args.sram_kb}kb-sram")
        facts = mk.target_facts(qmodel, args.model)
        summary["target"] = build_target(program, facts, plan, args.target, args.out, memory=memory,
                                         accumulate=args.accumulate or "float64", profile=args.profile,
                                         log=lambda m: print(m, file=sys.stderr))
    emit(args, summary, _human)
    return 0


def _compiled_lr(args, qmodel) -> tuple[float, dict | None]:
    """``--lr``, resolving ``auto`` (printed with its source; docs/learning-rate.md): with ``--data``
    ``finetune --lr auto`` in the simulation, scaled to batch 1 (``finetune.device_auto_lr``); else the
    rate derived from the head curvature that ``finetune --lr auto`` recorded in the model."""
    from mcutrain.train import lr_auto

    if not lr_auto.is_auto(args.lr):
        return args.lr, None
    if args.data:
        from mcutrain.train.finetune import device_auto_lr

        lr, choice = device_auto_lr(qmodel, args.data, args.scheme, seed=args.seed)
        print(f"mcutrain compile: {choice.summary()}; scaled to batch 1: {lr:.3g}", file=sys.stderr)
        return lr, {"lr": lr, "batch32": choice.as_dict()}
    curvature = mk.recorded_curvature(qmodel)
    if curvature is None:
        if args.target:
            print(f"mcutrain compile: warning: --lr auto has no data to choose the rate with (pass --data); "
                  f"compiling lr {lr_auto.FALLBACK_DEVICE_LR:g}, which the on-device guard halves if it is "
                  f"too large", file=sys.stderr)
        return lr_auto.FALLBACK_DEVICE_LR, None
    lr = lr_auto.device_lr(curvature)
    print(f"mcutrain compile: --lr auto: {lr:.3g} (batch-1 rate derived from the head's curvature "
          f"{curvature.lambda_max:.3g} recorded by finetune --lr auto)", file=sys.stderr)
    return lr, None


def _side(resolution) -> str:
    """``RxR`` for a zoo model's side, ``HxW`` for a graph's [H, W]."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    return f"{h}x{w}"


def _human(s: dict) -> str:
    lines = [f"{s['model']} @ {_side(s['resolution'])}, scheme {s['scheme']}: {s['ops']} ops", s["text"]]
    if s.get("target"):
        lines.append(_target_line(s["target"]))
    if s.get("report_files"):
        lines.append("  report          " + ", ".join(s["report_files"]))
    return "\n".join(lines)


def _target_line(t: dict) -> str:
    accumulators = f"{t['accumulate']} backward accumulators"
    if t["target"] == "host":
        return f"  host build      {t['out']}/{t['library']} ({accumulators})"
    f, strict = t["footprint"], t["strict"]
    fits = "fits" if strict["fits"] else "does NOT fit (" + strict["why"] + ")"
    return (f"  cortex-m7       {t['out']}/{t['elf']}: Flash {f['flash_bytes']:,} bytes, static SRAM "
            f"{f['static_sram_bytes']:,} bytes (+ stack, measured by mcutrain run), {accumulators}; "
            f"{strict['memory_map']['name']}: {fits}")
