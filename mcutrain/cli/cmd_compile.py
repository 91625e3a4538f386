"""`mcutrain compile`: compile one on-device training step and report where every byte lives."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.engine.compile import compile_training, format_report
from mcutrain.engine.reports import write_reports
from mcutrain.models import get_spec, model_names
from mcutrain.quant.model_file import load_qmodel
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import load_scheme, resolve
from mcutrain.sparse.permute import prepare_model


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compile", help=HELP["compile"],
        description="Compile one batch-1 training step of MODEL (an int8 model file, or a zoo name for a "
                    "random-weight model: memory does not depend on the weights) under --scheme, and report "
                    "SRAM (arena + SRAM copies of trained parameters), Flash and the inference-only peak. "
                    "--report DIR writes the printed graph, memory timelines (text) and a memory plot (PNG).")
    p.add_argument("model", metavar="MODEL", help="int8 model file or zoo name")
    p.add_argument("--scheme", required=True, help="built-in scheme name or JSON path")
    p.add_argument("--resolution", type=int, default=0, help="input side (default: the model's)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate compiled into the update ops")
    p.add_argument("--seed", type=int, default=0, help="stochastic-rounding seed")
    p.add_argument("--whole-image", action="store_true",
                   help="keep the input image whole in SRAM (default: stream it row by row from its source, "
                        "when only frozen layers read it)")
    p.add_argument("--report", metavar="DIR", default=None, help="write timeline and plot files here")
    add_json_flag(p)
    p.set_defaults(func=run)


def load_model(spec: str, resolution: int):
    """A model file, or a zoo name (random weights) at ``resolution`` (0: the zoo default)."""
    if spec in model_names() and not Path(spec).exists():
        return random_qmodel(spec, resolution or get_spec(spec).default_resolution, num_classes=10)[0]
    model = load_qmodel(spec)
    return replace(model, resolution=resolution) if resolution else model


def run(args) -> int:
    qmodel = load_model(args.model, args.resolution)
    plan = resolve(load_scheme(args.scheme, qmodel.spec.name), qmodel.spec)
    print(f"compiling {qmodel.spec.name} @ {qmodel.resolution}x{qmodel.resolution} with {plan.scheme} ...",
          file=sys.stderr)
    program = compile_training(prepare_model(qmodel, plan), plan, lr=args.lr, seed=args.seed,
                               stream_input=not args.whole_image)
    r = program.report
    summary = {
        "model": qmodel.spec.name, "resolution": qmodel.resolution, "scheme": plan.scheme,
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
    emit(args, summary, _human)
    return 0


def _human(s: dict) -> str:
    lines = [f"{s['model']} @ {s['resolution']}x{s['resolution']}, scheme {s['scheme']}: {s['ops']} ops", s["text"]]
    if s.get("report_files"):
        lines.append("  report          " + ", ".join(s["report_files"]))
    return "\n".join(lines)
