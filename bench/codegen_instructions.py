"""Instructions per training step and per prediction of the generated C, counted on the host.

Why on the host: ``valgrind --tool=callgrind`` counts executed instructions exactly and repeatably (no
timing noise on a shared machine), inside one function only (``--toggle-collect``). These are x86-64
instructions of a ``gcc -O2`` build (the host build's flags), NOT Cortex-M7 instructions or cycles:
use them to compare kernel versions; the Cortex-M7 figures come from the firmware under QEMU
(``mcutrain.codegen.firmware``). For each paper network at 128x128 with the paper-99kb scheme
(random int8 weights; one step on a fixed pseudo-random image): instructions of ``mct_train_step``
and of ``mct_predict``, and the instructions of the paper's training latency at 216 MHz (one
instruction per cycle at best) as the yardstick.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import stamp, write_results
from bench.paper import codegen_program, paper_cycles_per_step
from mcutrain.codegen import generate
from mcutrain.codegen.host import CFLAGS, compiler, read_manifest
from mcutrain.models.specs import PAPER_SPECS


DRIVER = r"""
#include <stdio.h>
#include "model.h"
static int8_t image[MCT_IMAGE_BYTES];
int main(void) {
    uint32_t s = 12345u;
    for (int i = 0; i < MCT_IMAGE_BYTES; ++i) { s = s * 1664525u + 1013904223u; image[i] = (int8_t)(s >> 24); }
    mct_init();
    float logits[MCT_NUM_CLASSES];
    const float loss = mct_train_step(image, 3);
    const int k = mct_predict(image, logits);
    printf("%f %d\n", (double)loss, k);
    return 0;
}
"""


def counted(binary: Path, function: str, workdir: Path) -> int:
    out = workdir / f"callgrind.{function}"
    subprocess.run(["valgrind", "--tool=callgrind", f"--toggle-collect={function}", f"--callgrind-out-file={out}",
                    str(binary)], check=True, capture_output=True, text=True)
    text = out.read_text()
    summary = re.search(r"^summary: (\d+)", text, re.M) or re.search(r"^totals: (\d+)", text, re.M)
    return int(summary.group(1))


def row(name: str, resolution: int) -> dict:
    program = codegen_program(name, resolution)[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        generate(program, folder)
        (folder / "driver.c").write_text(DRIVER)
        sources = [str(folder / s) for s in read_manifest(folder)["sources"]] + [str(folder / "driver.c")]
        binary = folder / "driver"
        subprocess.run([compiler(), *CFLAGS, f"-I{folder}", *sources, "-o", str(binary), "-lm"], check=True)
        train, predict = counted(binary, "mct_train_step", folder), counted(binary, "mct_predict", folder)
    budget = int(paper_cycles_per_step(name))
    return {"model": name, "resolution": resolution, "train_step_instructions": train,
            "predict_instructions": predict, "paper_cycles_at_216mhz": budget, "goal_half": budget // 2}


def markdown(rows: list[dict], command: str) -> str:
    lines = ["# Instructions of the generated C (host x86-64, callgrind)", "",
             f"`{command}`: paper-99kb, random int8 weights, one step; x86-64 instructions of a gcc -O2 host "
             "build (not Cortex-M7 instructions).", "",
             "| model | res | train step | predict | paper: ms x 216 MHz | half of it |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['resolution']} | {r['train_step_instructions'] / 1e6:.1f} M | "
                     f"{r['predict_instructions'] / 1e6:.1f} M | {r['paper_cycles_at_216mhz'] / 1e6:.1f} M | "
                     f"{r['goal_half'] / 1e6:.1f} M |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=128)
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    command = "python -m bench.codegen_instructions" + (
        f" --resolution {args.resolution}" if args.resolution != 128 else "")
    rows = [row(spec.name, args.resolution) for spec in PAPER_SPECS]
    for r in rows:
        print(r, flush=True)
    write_results("codegen_instructions", {**stamp(command), "rows": rows}, markdown(rows, command))


if __name__ == "__main__":
    main()
