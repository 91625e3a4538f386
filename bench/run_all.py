"""`make bench`: regenerate every published figure in docs/results, each stamped with its command.

Steps run in order, each a module's `main(argv)`; BENCH_ONLY=name1,name2 runs a subset (names: the
first column of STEPS). On this 2-core machine: the demo, the throughput, memory, C and QEMU benchmarks
a few minutes each; the int8 training experiments about an hour and the search validation about
half an hour (their fine-tunes dominate). ONNX Runtime training comes from `make ort-venv`.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = [  # (name, module, argv)
    ("demo", "bench.demo_run", []),
    ("float_throughput", "bench.float_throughput", []),
    ("sim_throughput", "bench.sim_throughput", []),
    ("memory_ladder", "bench.memory_ladder", []),
    ("codegen_arena", "bench.codegen_arena", []),
    ("codegen_instructions", "bench.codegen_instructions", []),
    ("host_training", "bench.host_training", []),
    ("m7_footprint", "bench.m7_footprint", []),
    ("m7_profile", "bench.m7_profile", []),
    ("m7_kernels", "bench.m7_kernels", []),
    ("cores", "bench.cores", []),
    ("accumulate_outcome", "bench.accumulate_outcome", []),
    ("search_speed", "bench.search_speed", []),
    ("compile_scaling", "bench.compile_scaling", []),
    ("int8_experiments", "experiments.int8_training", ["all"]),
    ("search_validation", "experiments.search_validation", []),
]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    only = {s for s in os.environ.get("BENCH_ONLY", "").split(",") if s}
    for name, module, argv in STEPS:
        if only and name not in only:
            continue
        print(f"== {name}: python -m {module} {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        importlib.import_module(module).main(argv)
        print(f"== {name}: done in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
