"""The three paper networks on every Cortex-M core of ``codegen.cores``: instructions per training step
and per inference, SRAM and Flash, beside the paper's Cortex-M7 cycles.

For each core and paper network at 128x128 with ``paper-99kb`` (random int8 weights: memory and
instruction counts do not depend on their values), the program is generated with the core's default
kernels (the DSP extension's where the core has it, portable C on the Cortex-M3) and the default
float32 backward, cross-built for the core's typical part (``mcutrain compile --target <core>``) and
run under the core's QEMU board (``-icount shift=0``) on digits samples resized to 128x128 (``mcutrain
run``). A network that does not fit a part's memory is reported as such (the build's own error), never
skipped silently.

Instructions are QEMU's instruction counts (the board's timer ticks x its instructions per tick,
calibrated each run), NOT cycles: the cores differ in issue width and memory waits, so the counts
compare code, not chips. Each program is built three times: the default float32 backward, the float64
audit mode (``--accumulate float64``) and the integer backward (``--backward int8``: int8 gradients, int32
sums, fixed-point updates; no FPU needed). On the Cortex-M3, which has no FPU, the float32 backward is
libgcc's soft-float: that column is what a core without an FPU pays for a float backward, the int8
column what it pays without one.

    python -m bench.cores [--resolution 128] [--steps 2] [--cores cortex-m4,cortex-m3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench.common import DOCS, stamp, write_results
from bench.paper import codegen_program, digits_samples, paper_cycles_per_step
from mcutrain.codegen.cores import CORES
from mcutrain.codegen.firmware import MemoryOverflowError, run_qemu
from mcutrain.codegen.targets import build_target
from mcutrain.models import conv_shapes
from mcutrain.models.specs import PAPER_SPECS

KB = 1024


MODES = {"float32": ("float32", "float32"), "float64": ("float32", "float64"), "int8": ("int8", "float32")}
# the backward mode -> (the program's --backward, the C's --accumulate)


def measure(core: str, name: str, mode: str, resolution: int, steps: int, folder: Path) -> dict:
    backward, accumulate = MODES[mode]
    program, qmodel, plan = codegen_program(name, resolution, backward)
    row = {"core": core, "part": CORES[core].part.name, "model": name, "resolution": resolution,
           "scheme": plan.scheme, "mode": mode, "accumulate": accumulate,
           "macs": sum(c.macs for c in conv_shapes(qmodel.spec, resolution))}
    try:
        target = build_target(program, qmodel, plan, core, folder, accumulate=accumulate,
                              log=lambda m: print("  " + m, flush=True))
    except MemoryOverflowError as err:
        return {**row, "fits": False, "why": str(err)}
    run = run_qemu(folder / target["elf"], *digits_samples(qmodel, steps, 1), classes=10, core=core, after=False)
    f = target["footprint"]
    per_step, per_inference = float(np.mean(run.train_instructions)), float(np.mean(run.predict_instructions))
    return {**row, "fits": True, "kernels": target["kernels"],
            "sram_bytes": f["static_sram_bytes"] + run.stack_high_water, "flash_bytes": f["flash_bytes"],
            "stack_high_water": run.stack_high_water, "instructions_per_step": per_step,
            "instructions_per_inference": per_inference, "instructions_per_mac": per_inference / row["macs"],
            "paper_m7_cycles_per_step": paper_cycles_per_step(name), "steps": steps,
            "qemu_seconds": round(run.seconds, 2), "losses": [float(v) for v in run.losses]}


def plot(rows: list[dict], path: Path) -> None:
    """Instructions per training step, one group of bars per network, one bar per core; the paper's M7
    cycles as a line over each group."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    models = list(dict.fromkeys(r["model"] for r in rows))
    cores = list(dict.fromkeys(r["core"] for r in rows))
    width = 0.8 / len(cores)
    colors = ("#1b3f66", "#3b6ea5", "#8fb3d9", "#7a9a3a", "#c0504d", "#e0a040")
    for i, core in enumerate(cores):
        for m, model in enumerate(models):
            r = next((r for r in rows if r["core"] == core and r["model"] == model and r["fits"]
                      and r["mode"] == "float32"), None)
            if r is not None:
                ax.bar(m + (i - (len(cores) - 1) / 2) * width, r["instructions_per_step"] / 1e6, width,
                       color=colors[i % len(colors)], label=core if m == 0 else None)
    for m, model in enumerate(models):
        paper = next(r["paper_m7_cycles_per_step"] for r in rows if r["model"] == model) / 1e6
        ax.plot([m - 0.45, m + 0.45], [paper, paper], color="black", lw=2,
                label="paper: M7 cycles / step (STM32F746, 216 MHz)" if m == 0 else None)
    ax.set_xticks(range(len(models)), models)
    ax.set_yscale("log")
    top = max(r["instructions_per_step"] for r in rows if r["fits"] and r["mode"] == "float32") / 1e6
    ax.set_ylim(top=top * 4)  # room for the legend above the bars
    ax.set_ylabel("instructions per training step (M, log scale)")
    ax.set_title("The paper networks on each Cortex-M core (QEMU -icount), 128x128, paper-99kb, float32 backward",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(rows: list[dict], meta: dict) -> str:
    md = ["# The paper networks on every Cortex-M core (128x128, paper-99kb, batch 1; float32, float64 and int8 "
          "backward)", "",
          "![instructions per training step per core](cores.png)", "",
          f"Measured {meta['date']}. Command: `{meta['command']}`. Each network (random int8 weights) is "
          "generated with the core's default forward kernels, cross-built with arm-none-eabi-gcc -O2 for the "
          "core's typical part and run under the core's QEMU board (`-icount shift=0`). **Instructions are "
          "QEMU instruction counts, not cycles**; the paper's column is its measured STM32F746 (Cortex-M7, "
          "216 MHz) latency per step as cycles, for scale. SRAM = .data + .bss + the stack's measured "
          "high-water mark; Flash = code + constants + .data's initial values.", "",
          "| core (QEMU board) | part: Flash / SRAM | kernels | model | SRAM | Flash | instructions / step | "
          "same, float64 backward (audit) | same, int8 backward (SRAM) | instructions / inference (per MAC) | "
          "paper M7 cycles / step |",
          "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    other = {(r["core"], r["model"], r["mode"]): r for r in rows if r["mode"] != "float32"}
    for r in (r for r in rows if r["mode"] == "float32"):
        c = CORES[r["core"]]
        part = f"{c.part.name}: {c.part.flash_bytes // KB} KB / {c.part.ram_bytes // KB} KB"
        head = f"| {r['core']} ({c.machine}) | {part} |"
        if not r["fits"]:
            md.append(f"{head} | {r['model']} | does not fit: {r['why']} | | | | | | |")
            continue
        a, i8 = (other.get((r["core"], r["model"], mode)) for mode in ("float64", "int8"))
        md.append(f"{head} {r['kernels']} | {r['model']} | {r['sram_bytes'] / KB:.1f} KB | "
                  f"{r['flash_bytes'] / KB:.1f} KB | {r['instructions_per_step'] / 1e6:.1f} M | "
                  f"{_step(a)} | {_step(i8, sram=True)} | "
                  f"{r['instructions_per_inference'] / 1e6:.1f} M ({r['instructions_per_mac']:.2f}) | "
                  f"{r['paper_m7_cycles_per_step'] / 1e6:.0f} M |")
    md += ["", "The parts (mcutrain/codegen/cores.py says why each): STM32F746 (the paper's board), nRF52840 "
           "(Cortex-M4F), nRF5340 application core (Cortex-M33), Corstone-300 held to 256 KB of DTCM "
           "(Cortex-M55; its dsp kernels use Helium for the 1x1 convs and the depthwise interiors, c/mct_mve.h), "
           "STM32F207 (Cortex-M3: no "
           "FPU, no DSP extension, so portable kernels and a soft-float float32 backward).",
           "", "'float64 backward (audit)': the same program generated with `--accumulate float64` (the backward's "
           "contractions summed in double, bit-equal to the NumPy reference executor): soft-float on the cores "
           "whose FPU is single-precision (M4, M7, M33) or absent (M3), hardware double on the M55.",
           "", "Every core's firmware equals the host build bit for bit (losses, logits, saved parameters, the "
           "arena after training): tests/codegen/test_codegen_cores.py.",
           "", "'int8 backward': the same network and scheme compiled with `--backward int8` (quant/int8_grad.py: "
           "int8 gradients with a power-of-two exponent, int32 sums, QAS in fixed point; plain-C integer loops, "
           "the block backward not fused yet, so its SRAM differs): it needs no FPU and equals the NumPy "
           "reference bit for bit (tests/codegen/test_codegen_int8_backward.py)."]
    return "\n".join(md)


def _step(r: dict | None, sram: bool = False) -> str:
    """A mode's instructions per step (and SRAM), or why there is none."""
    if r is None:
        return "-"
    if not r["fits"]:
        return "does not fit"
    return f"{r['instructions_per_step'] / 1e6:.1f} M" + (f" ({r['sram_bytes'] / KB:.1f} KB)" if sram else "")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--steps", type=int, default=2, help="training steps per network under QEMU")
    ap.add_argument("--cores", default=",".join(CORES), help="comma-separated cores (default: all)")
    args = ap.parse_args(argv)
    cores = [c for c in args.cores.split(",") if c]
    command = f"python -m bench.cores --resolution {args.resolution} --steps {args.steps} --cores {','.join(cores)}"
    meta = stamp(command)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cores-") as tmp:
        for core in cores:
            for spec in PAPER_SPECS:
                for mode in MODES:
                    print(f"{core} / {spec.name} / {mode}:", flush=True)
                    rows.append(measure(core, spec.name, mode, args.resolution, args.steps,
                                        Path(tmp) / f"{core}-{spec.name}-{mode}"))
    write_results("cores", {"meta": meta, "rows": rows}, markdown(rows, meta))
    plot(rows, DOCS / "cores.png")


if __name__ == "__main__":
    main()
