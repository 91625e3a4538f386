"""`mcutrain run`: train a compiled program on real samples, on the host or on the Cortex-M7 under QEMU.

The folder comes from ``mcutrain compile --target host|cortex-m7|... --out DIR``. The samples are drawn
from the dataset's train split (training) and test split (held-out accuracy before and after), and
turned into the model's int8 input the way training in simulation does (``mcutrain.codegen.samples``).
For the Cortex-M7 the result adds what the firmware costs: SRAM (.data + .bss + the stack's measured
high-water mark), Flash (.isr_vector + .text + .rodata + .ARM.exidx + .data), and instructions per
step and per inference counted by QEMU (-icount): instructions, not cycles. The result names the
backward's accumulator mode the folder was generated with (``accumulate``, from ``target.json``).
``--profile`` (folders compiled with ``--profile``) adds the instructions of every op of the first
training step and the first held-out inference (``codegen.runner.profile_firmware``).

Every run is judged by ``train.health`` from its per-step losses and its held-out accuracy after
training (``health`` in the result, ``failed`` with it): a run that did not learn (the loss ended
non-finite, rose far above its start or stayed at chance level log K, or the held-out accuracy is at
chance) prints why and exits with status 3. Nothing is written either way. When the generated C
guards itself (``guard`` in the runner's result: rollbacks to good parameters with a halved rate),
the rollbacks are printed; a run that rolled back and ended healthy has not failed.
"""

from __future__ import annotations

from mcutrain.api._run_text import run_text as _human  # noqa: F401 (the run text, by its old name)
from mcutrain.api.defaults import defaults
from mcutrain.api.running import RunResult, guard_rollbacks, run_health
from mcutrain.api.running import run as run_program
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.errors import TrainingFailed

__all__ = ["guard_rollbacks", "register", "run", "run_health"]


def register(subparsers) -> None:
    d = defaults(run_program)
    p = subparsers.add_parser(
        "run", help=HELP["run"],
        description="Run --steps SGD steps (batch 1) of the program compiled into DIR on samples of --data, "
                    "and measure accuracy on --eval held-out samples before and after. Host folders run the "
                    "host library; Cortex-M folders (cortex-m7, -m4, -m33, -m55, -m3) run the firmware under "
                    "qemu-system-arm on the core's board (mps2-an500, -an386, -an505, mps3-an547, mps2-an385; "
                    "semihosting), which also reports SRAM, Flash and instructions per step and per inference.")
    p.add_argument("folder", metavar="DIR", help="folder made by `mcutrain compile --target ... --out DIR`")
    p.add_argument("--data", required=True, help="dataset name (see `mcutrain data`), folder:PATH or npz:PATH")
    p.add_argument("--steps", type=int, required=True, help="training steps (one sample each)")
    p.add_argument("--eval", type=int, default=d["eval"],
                   help="held-out samples for the accuracy before/after (0: none)")
    p.add_argument("--seed", type=int, default=d["seed"], help="dataset split and sample order")
    p.add_argument("--profile", action="store_true", default=d["profile"],
                   help="Cortex-M folders compiled with --profile: also time every op of the first training step "
                        "and the first held-out inference (firmware-profile.elf) and report instructions per op, "
                        "by kind and by phase")
    p.add_argument("--timeout", type=float, default=d["timeout"],
                   help="seconds a QEMU run may take before it is killed")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        result = run_program(args.folder, args.data, args.steps, eval=args.eval, seed=args.seed,
                             profile=args.profile, timeout=args.timeout)
    except TrainingFailed as failed:  # the result (with "health") goes out first; main exits 3
        if failed.result is not None:
            emit(args, failed.result, lambda _: RunResult(failed.result).text())
        raise
    emit(args, result.to_dict(), lambda _: result.text())
    return 0
