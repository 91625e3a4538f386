"""`mcutrain compile`: compile one on-device training step and report where every byte lives.

With ``--target host|cortex-m7|cortex-m4|cortex-m33|cortex-m55|cortex-m3 --out DIR`` it also generates the C
program into DIR and builds it: a
host library (``mcutrain run`` drives it through ctypes) or a Cortex-M7 firmware (STM32F746 map, also
linked against a strict 256 KB SRAM map; ``mcutrain run`` drives it under QEMU). DIR gets
``target.json``: what ``run`` needs to feed the program (resolution, input quantization, classes).
The generated C accumulates the backward in float32 (the Cortex-M7's FPU); ``--accumulate float64`` is
the audit mode, bit-equal to the NumPy reference executor (the folder's sources carry the mode,
``target.json`` and ``manifest.json`` say it; see ``mcutrain.codegen.generate``).
``--kernels portable|dsp`` picks the int8 forward kernels the same way (default: dsp on the cores
that have the DSP extension, all but cortex-m3).
MODEL may be an imported int8 graph file (``mcutrain import``): ``train.model_kind`` answers what differs
(its schemes, its input size and quantization, what ``target.json`` says about its input).
"""

from __future__ import annotations

from mcutrain.api.compiling import TARGETS, compile, load_model
from mcutrain.api.defaults import defaults
from mcutrain.cli import argtypes
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.codegen.generate import ACCUMULATE, KERNELS
from mcutrain.quant.int8_grad import BACKWARDS

__all__ = ["TARGETS", "load_model", "register", "run"]


def register(subparsers) -> None:
    d = defaults(compile)
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
    p.add_argument("--resolution", type=argtypes.resolution, default=d["resolution"],
                   help="input side (default: the model's)")
    p.add_argument("--lr", type=argtypes.learning_rate_or_auto, default=d["lr"],
                   help="learning rate compiled into the update ops, or auto (default): derived from the head's "
                        "curvature (docs/learning-rate.md) on --data, else the one `finetune --lr auto` "
                        "recorded in MODEL, else 0.01 (the on-device guard halves a rate that is too large)")
    p.add_argument("--data", default=d["data"],
                   help="training data whose features set --lr auto (a dataset name, folder:PATH or npz:PATH)")
    p.add_argument("--seed", type=int, default=d["seed"], help="stochastic-rounding seed")
    p.add_argument("--whole-image", action="store_true", default=d["whole_image"],
                   help="keep the input image whole in SRAM (default: stream it row by row from its source, "
                        "when only frozen layers read it)")
    p.add_argument("--report", metavar="DIR", default=d["report"], help="write timeline and plot files here")
    p.add_argument("--target", choices=TARGETS, default=d["target"],
                   help="also generate the C program into --out and build it for this target (compiled with "
                        "the passes the C target supports; --whole-image does not apply)")
    p.add_argument("--out", metavar="DIR", default=d["out"],
                   help="folder for the generated C and the build (with --target)")
    p.add_argument("--accumulate", choices=tuple(ACCUMULATE), default=d["accumulate"],
                   help="the C backward's accumulators (with --target): float32 (default) sums its "
                        "contractions in float on the FPU: a third fewer instructions per training step on the "
                        "Cortex-M7 than float64 (its FPU is single-precision, double is soft-float), forward "
                        "bit-exact, backward within a stated tolerance of the NumPy reference "
                        "(docs/firmware.md); float64 (audit mode) sums them in double, "
                        "bit-equal to the NumPy reference executor. Written into the generated C (no build flag "
                        "needed), manifest.json and target.json")
    p.add_argument("--kernels", choices=tuple(KERNELS), default=d["kernels"],
                   help="the C forward's int8 kernels (with --target): dsp (default on every core but cortex-m3) "
                        "uses the "
                        "Cortex-M DSP extension (SMLAD on int16 pairs), portable (the host's only set) is plain "
                        "C; the same integers either way. Written into the generated C, manifest.json and "
                        "target.json")
    p.add_argument("--profile", action="store_true", default=d["profile"],
                   help="with a Cortex-M --target: also build firmware-profile.elf, which times every op (for "
                        "`mcutrain run DIR --profile`); firmware.elf is built as without it")
    p.add_argument("--sram-kb", type=int, default=d["sram_kb"],
                   help="SRAM of the core's memory map in KiB (default: its typical part's, e.g. the STM32F746's 320 "
                        "for cortex-m7; docs/firmware.md lists them)")
    p.add_argument("--flash-kb", type=int, default=d["flash_kb"],
                   help="Flash of the core's memory map in KiB (default: its typical part's, e.g. 1024 for cortex-m7)")
    p.add_argument("--backward", choices=BACKWARDS, default=d["backward"],
                   help="the backward's arithmetic: float32 (default) or int8 (integer gradients with a per-tensor "
                        "power-of-two exponent, int32 parameter gradients, fixed-point updates: no FPU needed; "
                        "the NumPy reference and the generated C run it bit for bit)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    result = compile(args.model, args.scheme, resolution=args.resolution, lr=args.lr, data=args.data, seed=args.seed,
                     whole_image=args.whole_image, report=args.report, target=args.target, out=args.out,
                     accumulate=args.accumulate, kernels=args.kernels, profile=args.profile, sram_kb=args.sram_kb,
                     flash_kb=args.flash_kb, backward=args.backward)
    emit(args, result.to_dict(), lambda _: result.text())
    return 0
