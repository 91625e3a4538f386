"""`mcutrain demo`: the main job on the bundled default (stages and decisions: ``mcutrain.demo``)."""

from __future__ import annotations

import argparse
import sys

from mcutrain.api.compiling import TARGETS
from mcutrain.api.defaults import defaults
from mcutrain.api.demo import run_demo
from mcutrain.cli.argtypes import learning_rate_or_auto
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit

DESCRIPTION = """\
From a pretrained float backbone to training ON the compiled C engine: quantize to int8, give it a new
head for a new task, pick a sparse-update scheme by evolutionary search under an SRAM/Flash budget
(exact compiled memory, contribution analysis bundled or a fast gradient estimate), compile the training
step to C, train it at batch 1 on the host build streaming the task's samples, then run the same
firmware on an emulated Cortex-M (QEMU; --core, the M7 by default) and measure its SRAM, Flash and
instructions. Writes a report folder (--out).

Defaults: the bundled mbv2-w0.35 pretrained on Fashion-MNIST at 64x64, new task mnist-5k, 256KB SRAM,
1MB Flash. Your own: --checkpoint CKPT (a float checkpoint from `mcutrain pretrain`; supported layers: see
docs/own-model.md), --data its task, --task folder:PATH or npz:PATH (your samples), --sram/--flash your
chip, --contrib a contrib.json from `mcutrain analyze` (else the fast estimate runs).

--model PATH.tflite: the same job on a full-int8 TFLite model you deploy (docs/bring-your-model.md):
import with a new head for --task (the task's images resized to the model's input), analysis, search,
compile, train on the C engine, the Cortex-M7 firmware, then the trained model exported to .tflite and
checked with LiteRT (OUT/trained.tflite)."""


def register(subparsers) -> None:
    d = defaults(run_demo)
    p = subparsers.add_parser("demo", help=HELP["demo"], description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=d["checkpoint"], help="float checkpoint (default: the bundled backbone)")
    p.add_argument("--model", default=d["model"], metavar="PATH.tflite",
                   help="a full-int8 .tflite model instead of the float backbone (--checkpoint, --data unused)")
    p.add_argument("--data", default=d["data"], help="the checkpoint's own task (default: recorded in it)")
    p.add_argument("--task", default=d["task"], help=f"the new task (default {d['task']}; folder:PATH, npz:PATH)")
    p.add_argument("--sram", default=d["sram"], help=f"SRAM of the chip (default {d['sram']}; KB = 1024 B)")
    p.add_argument("--flash", default=d["flash"], help=f"Flash of the chip (default {d['flash']})")
    p.add_argument("--contrib", default=d["contrib"],
                   help="contrib.json of `mcutrain analyze`, 'auto' (bundled if it is for this model and task, "
                        "else fast), 'fast' (a gradient estimate, seconds) or 'quick' (short fine-tunes; default auto)")
    p.add_argument("--steps", type=int, default=d["steps"], help=f"on-device training steps (default {d['steps']})")
    p.add_argument("--lr", type=learning_rate_or_auto, default=d["lr"],
                   help="learning rate compiled into the C, or auto (default): the batch-1 rate derived from the "
                        "new task's features (docs/learning-rate.md)")
    p.add_argument("--eval", type=int, default=d["eval_samples"], dest="eval_samples",
                   help=f"held-out samples (default {d['eval_samples']})")
    p.add_argument("--device-steps", type=int, default=d["device_steps"],
                   help=f"steps of the firmware under QEMU (default {d['device_steps']}; 0: skip)")
    p.add_argument("--core", choices=TARGETS[1:], default=d["core"],
                   help=f"the Cortex-M core the firmware is built for and run on (default {d['core']}; "
                        "docs/firmware.md lists each core's part and QEMU board)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--out", default=d["out"], help=f"report folder (default {d['out']})")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    command = "mcutrain " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["demo"] else "mcutrain demo"
    result = run_demo(checkpoint=args.checkpoint, model=args.model, data=args.data, task=args.task, sram=args.sram,
                      flash=args.flash, contrib=args.contrib, steps=args.steps, lr=args.lr,
                      eval_samples=args.eval_samples, device_steps=args.device_steps, seed=args.seed, out=args.out,
                      command=command, core=args.core)
    emit(args, result.to_dict(), lambda _: result.text())
    return 0
