"""Cortex-M7 instructions of the int8 forward per kernel set: portable C against the DSP kernels.

Why: the forward's kernels are a generate-time choice (``mcutrain compile --kernels portable|dsp``); this
says what the choice is worth on the three paper networks. Each network (128x128 by default,
``paper-99kb``, random int8 weights, float32 backward accumulators) is generated twice from one compiled
program, built for the Cortex-M7 and run under QEMU mps2-an500 (``-icount shift=0``: instructions, not
cycles) on one digits sample: one prediction, one training step. The two builds must give the same
logits and loss bit for bit (the kernels compute the same integers); per MAC: the inference's
instructions over the network's multiply-accumulates (``mcutrain zoo``'s count, the classifier excluded).

    python -m bench.m7_kernels [--resolution 128]   # writes docs/results/m7_kernels.md
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import stamp, write_results
from bench.paper import codegen_program, digits_samples
from mcutrain.codegen import generate
from mcutrain.codegen.firmware import build_firmware, run_qemu
from mcutrain.models import conv_shapes
from mcutrain.models.specs import PAPER_SPECS

KERNELS = ("portable", "dsp")


def measure(name: str, resolution: int, folder: Path) -> dict:
    """{kernels: {"inference": instructions, "step": instructions}} and the network's MACs."""
    program, qmodel, plan = codegen_program(name, resolution)
    samples = digits_samples(qmodel, 1, 1)
    runs = {}
    for kernels in KERNELS:
        out = folder / kernels
        generate(program, out, accumulate="float32", kernels=kernels)
        report = build_firmware(out, strict=None)
        runs[kernels] = run_qemu(out / report["elf"], *samples, classes=qmodel.num_classes, after=False)
    portable, dsp = runs["portable"], runs["dsp"]
    if portable.logits["before"].tobytes() != dsp.logits["before"].tobytes() or \
            portable.losses.tobytes() != dsp.losses.tobytes():
        raise RuntimeError(f"{name}: the dsp build's logits or loss differ from the portable build's")
    macs = sum(c.macs for c in conv_shapes(qmodel.spec, resolution))
    return {"model": name, "macs": macs,
            **{k: {"inference": int(r.predict_instructions[0]), "step": int(r.train_instructions[0])}
               for k, r in runs.items()}}


def table(rows: list[dict]) -> str:
    lines = ["| model | MACs | inference, portable | inference, dsp | per MAC, portable | per MAC, dsp | "
             "step, portable | step, dsp |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        p, d = r["portable"], r["dsp"]
        lines.append(f"| {r['model']} | {r['macs'] / 1e6:.2f} M | {p['inference'] / 1e6:.1f} M | "
                     f"{d['inference'] / 1e6:.1f} M | {p['inference'] / r['macs']:.2f} | "
                     f"{d['inference'] / r['macs']:.2f} | {p['step'] / 1e6:.1f} M | {d['step'] / 1e6:.1f} M |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=128)
    args = ap.parse_args(argv)
    meta = stamp(f"python -m bench.m7_kernels --resolution {args.resolution}")
    with tempfile.TemporaryDirectory(prefix="m7-kernels-") as tmp:
        rows = [measure(spec.name, args.resolution, Path(tmp) / spec.name) for spec in PAPER_SPECS]
    print(table(rows))
    page = (f"# Cortex-M7 forward kernels: portable C against the DSP extension's\n\nMeasured {meta['date']}. "
            f"Command: `{meta['command']}`. " + " ".join(__doc__.split("\n\n")[1].split()) + "\n\n" + table(rows)
            + "\n\nThe logits and the loss of the two builds are bit-identical on every network (checked by the "
              "benchmark itself).\n")
    write_results("m7_kernels", {"benchmark": "m7_kernels", "resolution": args.resolution, "rows": rows, **meta},
                  page)


if __name__ == "__main__":
    main()
