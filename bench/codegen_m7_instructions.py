"""Cortex-M7 instructions per training step and per prediction of the generated C (QEMU, -icount).

The firmware of ``mcutrain.codegen.cortex_m7`` (arm-none-eabi-gcc -O2 -mcpu=cortex-m7, the host build's
float flags) runs under ``qemu-system-arm -M mps2-an500 -icount shift=0``: timer ticks count executed
instructions exactly (40 per tick), run to run. INSTRUCTIONS, not cycles (a Cortex-M7 issues up to 2
per cycle and waits on Flash and soft-float). For each paper network at 128x128 with the paper-99kb
scheme (random int8 weights, one random image): instructions of one ``mct_train_step`` and one
``mct_predict``; with ``--float-acc`` the backward's float64 accumulators are built as float
(``MCT_ACC_T=float``: faster, no longer bit-equal to the NumPy executor) to show what they cost.
Beside them: the paper's training latency (TTE, sparse) x 216 MHz, and half of it (the goal).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from bench.common import stamp, write_results
from mcutrain.codegen import compile_for_codegen, generate
from mcutrain.models.specs import PAPER_SPECS
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve
from mcutrain.sparse.permute import prepare_model

PAPER_MS = {"mcunet-5fps": 546, "mbv2-w0.35": 373, "proxyless-w0.3": 443}  # TTE sparse, STM32F746
MHZ = 216


def measure(name: str, resolution: int, float_acc: bool) -> dict:
    from mcutrain.codegen.cortex_m7 import build_cortex_m7, run_qemu  # the Cortex-M7 target

    q = random_qmodel(name, resolution, num_classes=10)[0]
    plan = resolve(get_builtin("paper-99kb", name), q.spec)
    program = compile_for_codegen(prepare_model(q, plan), plan, lr=0.01, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(-128, 128, (1, 3, resolution, resolution)).astype(np.int8)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        generate(program, folder)
        build_cortex_m7(folder, defines=("MCT_ACC_T=float",) if float_acc else ())
        manifest = json.loads((folder / "manifest.json").read_text())
        run = run_qemu(folder / "firmware.elf", images, rng.integers(0, 10, 1), images, np.array([0]),
                       classes=manifest["num_classes"], before=True, after=False)
    budget = PAPER_MS[name] * MHZ * 1000
    return {"model": name, "resolution": resolution, "float_accumulators": float_acc,
            "train_step_instructions": int(run.train_instructions[0]),
            "predict_instructions": int(run.predict_instructions[0]), "stack_high_water": run.stack_high_water,
            "paper_cycles_at_216mhz": budget, "goal_half": budget // 2}


def markdown(rows: list[dict], command: str) -> str:
    lines = ["# Cortex-M7 instructions of the generated C (QEMU -icount)", "",
             f"`{command}`: paper-99kb, random int8 weights, one step, one prediction; instructions, not cycles.", "",
             "| model | res | accumulators | train step | predict | paper: ms x 216 MHz | goal (half) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = "float (not bit-equal)" if r["float_accumulators"] else "double (bit-equal)"
        lines.append(f"| {r['model']} | {r['resolution']} | {acc} | {r['train_step_instructions'] / 1e6:.1f} M | "
                     f"{r['predict_instructions'] / 1e6:.1f} M | {r['paper_cycles_at_216mhz'] / 1e6:.1f} M | "
                     f"{r['goal_half'] / 1e6:.1f} M |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--float-acc", action="store_true", help="also build with float accumulators (MCT_ACC_T=float)")
    args = ap.parse_args(argv)
    command = ("python -m bench.codegen_m7_instructions"
               + (f" --resolution {args.resolution}" if args.resolution != 128 else "")
               + (" --float-acc" if args.float_acc else ""))
    rows = []
    for spec in PAPER_SPECS:
        for float_acc in (False, True) if args.float_acc else (False,):
            rows.append(measure(spec.name, args.resolution, float_acc))
            print(rows[-1], flush=True)
    write_results("codegen_m7_instructions", {**stamp(command), "rows": rows}, markdown(rows, command))


if __name__ == "__main__":
    main()
