"""Planned memory of the paper networks (128x128, paper-99kb) with the float32 and the int8 backward.

Why: the int8 backward (issue 16) stores gradients in 1 byte per element instead of 4, but v1 does not
fuse the block backward (``mbconv_grad``, float only), which keeps the expanded gradients whole; the
planned arena says which effect wins. Same programs as the C benchmarks (``bench.paper``), compiled
with ``compile_training`` (the codegen pipeline), one per mode. Prints a markdown table and writes
``bench/results/int8_backward_memory.json``.

    python -m bench.int8_backward_memory [--resolution 128]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.paper import PAPER_MS_PER_STEP, SCHEME, paper_model

KEYS = ("arena_bytes", "total_sram_bytes", "trainable_bytes", "mask_bytes", "peak_op", "block_backwards")


MODES = ("float32", "float32-unfused", "int8")  # float32-unfused: without the block backward fusion (int8's v1)


def measure(name: str, resolution: int, mode: str) -> dict:
    from mcutrain.engine.compile import compile_training
    from mcutrain.engine.passes import PIPELINE, fuse_backward

    qmodel, plan = paper_model(name, resolution)
    passes = tuple(p for p in PIPELINE if p is not fuse_backward) if mode.endswith("unfused") else PIPELINE
    backward = mode.split("-")[0]
    report = compile_training(qmodel, plan, lr=0.01, seed=0, backward=backward, passes=passes).report
    return {"model": name, "resolution": resolution, "scheme": SCHEME, "backward": mode,
            **{k: report[k] for k in KEYS}, "gradient_bytes_at_peak": report["peak_bytes_by_kind"].get("gradient", 0)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=128)
    args = parser.parse_args(argv)
    rows = [measure(n, args.resolution, b) for n in PAPER_MS_PER_STEP for b in MODES]
    print("| model | backward | arena KB | total SRAM KB | gradients at peak KB | peak op | block backwards |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['backward']} | {r['arena_bytes'] / 1024:.1f} | {r['total_sram_bytes'] / 1024:.1f} "
              f"| {r['gradient_bytes_at_peak'] / 1024:.1f} | {r['peak_op']} | {r['block_backwards']} |")
    out = Path(__file__).parent / "results" / "int8_backward_memory.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
