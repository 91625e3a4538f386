"""Where the Cortex-M7 forward's instructions go, per C function and per source line (QEMU's exec log).

Why: the per-op profile (bench/m7_profile.py) says which op costs what, not which loop inside it; the
kernels of one op (``mbconv_rows``) are many static functions inlined into a few. This runs one
network's firmware for ONE inference (``--train``: one training step instead) under QEMU with
``-d in_asm,exec,nochain``: every translation block is logged once with its instructions and every
execution of it once, so the guest's executed instructions per address are exact (TCG blocks end at
branches; with ``nochain`` none is skipped). Addresses are mapped to functions (``arm-none-eabi-nm``)
and lines (``addr2line``, innermost inlined frame). The log goes through a FIFO, never to disk (it is
gigabytes).

    python -m bench.m7_hotspots mcunet-5fps [--resolution 128] [--kernels dsp] [--lines 40] [--train] [--core C]
                                [--backward int8]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench.paper import codegen_program, digits_samples
from mcutrain.codegen import generate
from mcutrain.codegen.firmware import INPUT_NAME, build_firmware, qemu_command, write_input
from mcutrain.models import conv_shapes

BLOCK_HEAD = re.compile(r"^0x([0-9a-f]{8}):\s")
EXEC = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")


def _read_log(fifo: Path, sizes: dict[int, list[int]], runs: Counter) -> None:
    """Parse QEMU's log: "IN:" blocks (their instruction addresses) and "Trace" lines (one execution)."""
    current = None
    with open(fifo, errors="replace") as f:
        for line in f:
            if line.startswith("Trace"):
                m = EXEC.match(line)
                if m:
                    runs[int(m.group(1), 16)] += 1
                current = None
            elif line.startswith("IN:"):
                current = []
            elif current is not None:
                m = BLOCK_HEAD.match(line)
                if m:
                    current.append(int(m.group(1), 16))
                    sizes.setdefault(current[0], current)
                elif not line.strip():
                    current = None


def executed(elf: Path, input_dir: Path, core: str) -> Counter:
    """{instruction address: times executed} over the run."""
    fifo = input_dir / "qemu.log"
    os.mkfifo(fifo)
    sizes: dict[int, list[int]] = {}
    runs: Counter = Counter()
    reader = threading.Thread(target=_read_log, args=(fifo, sizes, runs))
    reader.start()
    cmd = qemu_command(elf, core) + ["-d", "in_asm,exec,nochain", "-D", str(fifo)]
    subprocess.run(cmd, cwd=input_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3000)
    reader.join()
    per_address: Counter = Counter()
    for start, n in runs.items():
        for address in sizes.get(start, [start]):
            per_address[address] += n
    return per_address


def symbols(elf: Path) -> list[tuple[int, str]]:
    out = subprocess.run(["arm-none-eabi-nm", "-n", str(elf)], capture_output=True, text=True, check=True).stdout
    table = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            table.append((int(parts[0], 16) & ~1, parts[2]))
    return table


def function_of(table, address: int) -> str:
    best = "?"
    for start, name in table:
        if start > address:
            break
        best = name
    return best


def lines_of(elf: Path, addresses: list[int]) -> dict[int, str]:
    """address -> "file:line (function)" of the innermost inlined frame."""
    text = subprocess.run(["arm-none-eabi-addr2line", "-f", "-e", str(elf)] + [hex(a) for a in addresses],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    return {a: f"{Path(text[2 * i + 1]).name} ({text[2 * i]})" for i, a in enumerate(addresses)}


def annotated(elf: Path, function: str, counts: Counter) -> str:
    """``function``'s disassembly (objdump), each instruction prefixed by how often it ran: where a loop's
    instructions go, which the per-line figures of inlined helpers blur."""
    text = subprocess.run(["arm-none-eabi-objdump", "-d", "--no-show-raw-insn", f"--disassemble={function}", str(elf)],
                          capture_output=True, text=True, check=True).stdout
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s*([0-9a-f]+):\s+(.*)$", line)
        if m:
            out.append(f"{counts.get(int(m.group(1), 16), 0):>10,}  {m.group(1)}  {m.group(2)}")
        elif line.strip().endswith(">:"):
            out.append(line.strip())
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--kernels", default="dsp")
    ap.add_argument("--lines", type=int, default=40)
    ap.add_argument("--folder", help="keep the generated folder here")
    ap.add_argument("--train", action="store_true", help="profile one training step, not an inference")
    ap.add_argument("--core", default="cortex-m7", help="the core to build for and run (mcutrain.codegen.cores)")
    ap.add_argument("--backward", default="float32", choices=("float32", "int8"), help="the backward's arithmetic")
    ap.add_argument("--disasm", default="", help="comma-separated functions: their instructions with execution counts")
    args = ap.parse_args(argv)
    program, qmodel, plan = codegen_program(args.model, args.resolution, args.backward)
    _, _, images, labels = digits_samples(qmodel, 1, 1)
    with tempfile.TemporaryDirectory(prefix="m7-hot-") as tmp:
        folder = Path(args.folder or tmp) / "fw"
        generate(program, folder, accumulate="float32", kernels=args.kernels)
        # -g: line tables only, the same code
        elf = folder / build_firmware(folder, strict=None, core=args.core, extra_cflags=("-g",))["elf"]
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        if args.train:  # the sample as one training record, nothing evaluated
            write_input(run_dir / INPUT_NAME, images, labels, images[:0], labels[:0], qmodel.num_classes, 0)
        else:
            write_input(run_dir / INPUT_NAME, images[:0], labels[:0], images, labels, qmodel.num_classes, 1)
        counts = executed(elf, run_dir, args.core)
        total = sum(counts.values())
        macs = sum(c.macs for c in conv_shapes(qmodel.spec, args.resolution))
        what = "one training step" if args.train else f"one inference, {total / macs:.2f} per MAC"
        print(f"{args.model} @{args.resolution} ({args.core}, {args.kernels}): {total / 1e6:.1f} M instructions "
              f"({what}; start-up included)")
        table = symbols(elf)
        per_function: Counter = Counter()
        for address, n in counts.items():
            per_function[function_of(table, address)] += n
        for name, n in per_function.most_common(15):
            print(f"  {n / 1e6:8.2f} M {100 * n / total:5.1f}%  {name}")
        hot = [a for a, _ in counts.most_common(4000)]
        where = lines_of(elf, hot)
        per_line: Counter = Counter()
        for a in hot:
            per_line[where[a]] += counts[a]
        print("source lines (innermost inlined frame):")
        for line, n in per_line.most_common(args.lines):
            print(f"  {n / 1e6:8.2f} M {100 * n / total:5.1f}%  {line}")
        for name in filter(None, args.disasm.split(",")):
            print(annotated(elf, name, counts))


if __name__ == "__main__":
    main()
