"""`make bench`: run every benchmark in turn (each writes its own results files)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ["bench.float_throughput", "bench.sim_throughput"]

if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        runpy.run_module(name, run_name="__main__")
