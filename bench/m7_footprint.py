"""The three paper networks as Cortex-M7 firmware: SRAM, Flash, fits-256KB, instructions per step.

For each paper network at 128x128 with the paper's ~100 KB scheme (`paper-99kb`), a random-weight int8
model (memory and instruction counts do not depend on the weights' values) is compiled for C
(``compile_for_codegen``), generated, cross-built for the STM32F746 map and linked against a strict
256 KB SRAM map (``mcutrain compile --target cortex-m7``), then run under QEMU mps2-an500 (Cortex-M7,
-icount shift=0) on digits samples resized to 128x128: predictions before, training steps, predictions
after (``mcutrain run``).

SRAM = .data + .bss of the ELF (arena, SRAM copies of the trained parameters, the harness's small
line buffer) + the stack's measured high-water mark (painted at reset, scanned at the end). Flash =
.isr_vector + .text + .rodata + .ARM.exidx + .data. The harness's sample/save buffers sit in a
separate HOSTIO region (QEMU's PSRAM), standing for the camera / host link; they are listed, not counted.

Instructions are QEMU's instruction counts (timer ticks x 40, calibrated each run against a loop of
known length), NOT Cortex-M7 cycles: the M7 is dual-issue (often < 1 cycle per instruction) but stalls
on Flash and memory. The paper's STM32F746 latency per training step (216 MHz) is put beside as cycles.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench.common import stamp, write_results
from bench.paper import PAPER_MS_PER_STEP, codegen_program, digits_samples, paper_cycles_per_step
from mcutrain.codegen.firmware import run_qemu
from mcutrain.codegen.targets import build_target
from mcutrain.models.specs import PAPER_SPECS

KB = 1024


def measure(name: str, resolution: int, steps: int, evals: int, folder: Path) -> dict:
    program, qmodel, plan = codegen_program(name, resolution)
    target = build_target(program, qmodel, plan, "cortex-m7", folder, log=lambda m: print("  " + m, flush=True))
    samples = digits_samples(qmodel, steps, evals)
    run = run_qemu(folder / target["elf"], *samples, classes=10)
    # The same program in the float64 audit mode (`mcutrain compile --accumulate float64`, bit-equal to
    # the NumPy reference): what the soft-float double would cost per step.
    audit = build_target(program, qmodel, plan, "cortex-m7", folder.with_name(folder.name + "-float64"),
                         accumulate="float64", log=lambda m: print("  " + m, flush=True))
    audit_run = run_qemu(Path(audit["out"]) / audit["elf"], *samples, classes=10, before=False, after=False)
    f, report = target["footprint"], program.report
    paper_cycles = paper_cycles_per_step(name)
    per_step = float(np.mean(run.train_instructions))
    return {
        "model": name, "resolution": resolution, "scheme": plan.scheme,
        "sram_bytes": f["static_sram_bytes"] + run.stack_high_water,
        "sram": {"data": f["data"], "bss": f["bss"], "stack_high_water": run.stack_high_water,
                 "stack_reserve": f["stack_reserve"], "arena": max(program.train.plan.arena_bytes,
                                                                   program.inference.plan.arena_bytes),
                 "trained_copies": report["trainable_bytes"],
                 "compiler_total_sram": report["total_sram_bytes"]},
        "flash_bytes": f["flash_bytes"], "flash": {"text": f["text"], "rodata": f["rodata"], "data": f["data"]},
        "harness_io_bytes_not_counted": f["harness_io"],
        "fits_256kb": target["strict"]["fits"],
        "instructions_per_step": per_step, "instructions_per_step_range": [int(run.train_instructions.min()),
                                                                            int(run.train_instructions.max())],
        "instructions_per_inference": float(np.mean(run.predict_instructions)),
        "accumulate": target["accumulate"],
        "instructions_per_step_float64_accumulators": float(np.mean(audit_run.train_instructions)),
        "paper_ms_per_step": PAPER_MS_PER_STEP[name], "paper_cycles_per_step": paper_cycles,
        "ours_instructions_over_paper_cycles": per_step / paper_cycles,
        "steps": steps, "predictions": int(len(run.predict_instructions)), "qemu_seconds": round(run.seconds, 2),
        "losses": [float(v) for v in run.losses],
    }


def markdown(rows: list[dict], meta: dict) -> str:
    md = ["# Paper networks as Cortex-M7 firmware (128x128, paper-99kb, batch 1)", "",
          f"Measured {meta['date']}. Command: `{meta['command']}`. Each network (random int8 weights) is "
          "compiled for C, cross-built with arm-none-eabi-gcc -O2 for the STM32F746 map (1 MB Flash, 320 KB "
          "SRAM) and linked again against a strict 256 KB SRAM map, then run under QEMU mps2-an500 "
          f"(Cortex-M7, `-icount shift=0`) for {rows[0]['steps']} training steps and "
          f"{rows[0]['predictions']} predictions on digits samples resized to 128x128.", "",
          "SRAM = ELF .data + .bss (arena, SRAM copies of trained parameters, harness line buffer) + the "
          "stack's measured high-water mark. Flash = .isr_vector + .text + .rodata + .ARM.exidx + .data. "
          "**Instructions are QEMU instruction counts, not cycles**; the paper's column converts its measured "
          "STM32F746 latency per training step (216 MHz, TinyEngine kernels) to cycles for scale only. The "
          "default build accumulates the backward in float32 on the FPU.", "",
          "| model | SRAM (arena + trained copies + stack) | Flash | fits 256 KB | instructions / training step | "
          "same, float64 accumulators (audit) | instructions / inference | paper: ms / step (cycles @216 MHz) | "
          "ours instr. / paper cycles |",
          "|---|---:|---:|:---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        s = r["sram"]
        md.append(f"| {r['model']} | {r['sram_bytes'] / KB:.1f} KB ({s['arena'] / KB:.1f} + "
                  f"{s['trained_copies'] / KB:.1f} + {s['stack_high_water']} B) | {r['flash_bytes'] / KB:.1f} KB | "
                  f"{'yes' if r['fits_256kb'] else 'no'} | {r['instructions_per_step'] / 1e6:.1f} M | "
                  f"{r['instructions_per_step_float64_accumulators'] / 1e6:.1f} M | "
                  f"{r['instructions_per_inference'] / 1e6:.1f} M | {r['paper_ms_per_step']} ms "
                  f"({r['paper_cycles_per_step'] / 1e6:.1f} M) | {r['ours_instructions_over_paper_cycles']:.1f}x |")
    md += ["", "Arena = the planned arena (max of the training and inference plans); the rest of .bss is the "
           "harness's line buffer and alignment. The harness's sample and save buffers (HOSTIO region, "
           "standing for the camera / host link) are not counted: "
           + ", ".join(f"{r['model']} {r['harness_io_bytes_not_counted'] / KB:.1f} KB" for r in rows) + ".",
           "", "'float64 accumulators (audit)': the same program generated with `mcutrain compile --accumulate "
           "float64` (the backward's contractions summed in soft-float double, bit-equal to the NumPy reference "
           "executor). The default float32 mode keeps the forward bit-exact and the backward within the "
           "tolerance and training outcome tests/codegen/test_codegen_accumulate*.py state."]
    return "\n".join(md)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3, help="training steps per network under QEMU")
    ap.add_argument("--eval", type=int, default=1, help="held-out predictions before and after training")
    args = ap.parse_args(argv)
    command = (f"make bench  (python -m bench.m7_footprint --resolution {args.resolution} --steps {args.steps} "
               f"--eval {args.eval})")
    meta = stamp(command)
    rows = []
    with tempfile.TemporaryDirectory(prefix="m7-footprint-") as tmp:
        for spec in PAPER_SPECS:
            print(f"{spec.name}:", flush=True)
            rows.append(measure(spec.name, args.resolution, args.steps, args.eval, Path(tmp) / spec.name))
            r = rows[-1]
            print(f"  SRAM {r['sram_bytes'] / KB:.1f} KB, Flash {r['flash_bytes'] / KB:.1f} KB, fits 256 KB "
                  f"{r['fits_256kb']}, {r['instructions_per_step'] / 1e6:.1f} M instructions / step, "
                  f"{r['instructions_per_inference'] / 1e6:.1f} M / inference", flush=True)
    write_results("m7_footprint", {"benchmark": "m7_footprint", "rows": rows, **meta}, markdown(rows, meta))


if __name__ == "__main__":
    main()
