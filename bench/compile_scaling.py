"""How `mcutrain compile` time grows with the number of blocks of a legal architecture.

Architectures of N identical small blocks (``arch_doc``: 8-channel residual blocks, expand 16,
kernel 3, two stride-2 blocks, 32x32 input), written as JSON files in the format of
docs/own-model.md and compiled as `mcutrain compile ARCH.json --scheme S` does (``load_model`` +
``compile_training`` in this process, torch 1 thread), for three schemes:
  last-k:12   the sparse update the project is for: a fixed number of trained convs;
  last-layer  the classifier only;
  full        every conv trained: all saved activations of the whole network are live together
              at the turn of the backward, so the memory planner's work grows with the number of
              pairs of buffers live at once, ~N^2 (the placement is first fit over those pairs).
Each size runs once per scheme; seconds are process CPU time (the machines are shared: CPU time
is far steadier than wall time there) with wall time beside it. The exponent is the least-squares
slope of log(seconds) over log(blocks). Also the count of Python function calls (``call`` and
``c_call`` profile events: machine-independent) at the two smallest sizes, the measure the test
(tests/engine/test_engine_scaling.py) bounds.

  python -m bench.compile_scaling [--blocks 50 100 200 400 800] [--schemes last-k:12 last-layer full]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import stamp, write_results

NAME = "compile_scaling"


def arch_doc(n_blocks: int, channels: int = 8, resolution: int = 32) -> dict:
    """A legal architecture of ``n_blocks`` blocks: a no-expand block 0, then residual blocks (two of
    them stride 2, so the feature maps stay 8x8 whatever the depth)."""
    blocks = [{"in_ch": channels, "mid_ch": None, "out_ch": channels, "kernel": 3, "stride": 1}]
    for i in range(1, n_blocks):
        blocks.append({"in_ch": channels, "mid_ch": 2 * channels, "out_ch": channels, "kernel": 3,
                       "stride": 2 if i in (1, 2) else 1})
    return {"format": "mcutrain-arch", "version": 1, "name": f"chain-{n_blocks}", "in_ch": 3,
            "stem_ch": channels, "stem_kernel": 3, "stem_stride": 2, "default_resolution": resolution,
            "blocks": blocks}


def write_arch(folder: Path, n_blocks: int) -> Path:
    path = folder / f"chain-{n_blocks}.json"
    path.write_text(json.dumps(arch_doc(n_blocks), indent=1))
    return path


def compile_once(arch: Path, scheme: str):
    """What `mcutrain compile ARCH --scheme SCHEME` computes (random weights, default pipeline)."""
    from mcutrain.cli.cmd_compile import load_model
    from mcutrain.engine.compile import compile_training
    from mcutrain.sparse import load_scheme, resolve
    from mcutrain.sparse.permute import prepare_model

    qmodel = load_model(str(arch), 0)
    plan = resolve(load_scheme(scheme, qmodel.spec), qmodel.spec)
    return compile_training(prepare_model(qmodel, plan), plan, lr=0.01, seed=0)


def timed(arch: Path, scheme: str) -> dict:
    from mcutrain.engine.passes.fuse_rows import clear_memos

    clear_memos()
    cpu, wall = time.process_time(), time.perf_counter()
    program = compile_once(arch, scheme)
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
            "ops": program.report["n_ops"], "buffers": program.report["n_buffers"]}


def count_calls(fn) -> int:
    """Python and builtin function calls made by ``fn()`` (deterministic for a given input)."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(size)."""
    xs, ys = [math.log(s) for s in sizes], [math.log(max(t, 1e-9)) for t in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def render(json_path: Path) -> None:
    """Rewrite the page from a saved result (after editing the text, without measuring again)."""
    payload = json.loads(json_path.read_text())
    write_results(NAME, payload, markdown(payload))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, nargs="+", default=[50, 100, 200, 400, 800])
    ap.add_argument("--schemes", nargs="+", default=["last-k:12", "last-layer", "full"])
    ap.add_argument("--calls-blocks", type=int, nargs=2, default=[25, 50])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    payload = stamp("python -m bench.compile_scaling " + " ".join(argv or sys.argv[1:]))
    rows, fits, calls = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        compile_once(write_arch(folder, 4), "last-layer")  # imports and first-use costs out of the timing
        for scheme in args.schemes:
            for n in args.blocks:
                row = {"scheme": scheme, "blocks": n, **timed(write_arch(folder, n), scheme)}
                print(json.dumps(row), flush=True)
                rows.append(row)
            mine = [r for r in rows if r["scheme"] == scheme]
            fits[scheme] = {"cpu": exponent([r["blocks"] for r in mine], [r["cpu_s"] for r in mine]),
                            "wall": exponent([r["blocks"] for r in mine], [r["wall_s"] for r in mine])}
            small, large = args.calls_blocks
            counts = [count_calls(lambda n=n: compile_once(write_arch(folder, n), scheme)) for n in (small, large)]
            calls[scheme] = {"blocks": [small, large], "calls": counts,
                             "exponent": math.log(counts[1] / counts[0]) / math.log(large / small)}
            print(scheme, fits[scheme], calls[scheme], flush=True)
    payload.update(rows=rows, exponents=fits, calls=calls)
    write_results(NAME, payload, markdown(payload))
    return 0


def markdown(p: dict) -> str:
    schemes = list(p["exponents"])
    sizes = sorted({r["blocks"] for r in p["rows"]})
    by = {(r["scheme"], r["blocks"]): r for r in p["rows"]}
    head = "| blocks | ops (last-k:12) | " + " | ".join(f"{s} CPU s (wall)" for s in schemes) + " |"
    lines = ["# `mcutrain compile` time against the number of blocks", "",
             "Legal architectures of N small residual blocks (bench/compile_scaling.py `arch_doc`: 8 channels, "
             "expand 16, kernel 3, 32x32 input), compiled as `mcutrain compile ARCH.json --scheme S` does "
             "(random weights, default pipeline), torch 1 thread. CPU seconds of the process, wall seconds in "
             "brackets.", "", head, "|" + "---|" * (2 + len(schemes))]
    for n in sizes:
        ops = by.get(("last-k:12", n), by.get((schemes[0], n)))["ops"]
        cells = [f"{by[(s, n)]['cpu_s']:.2f} ({by[(s, n)]['wall_s']:.2f})" if (s, n) in by else "-" for s in schemes]
        lines.append(f"| {n} | {ops} | " + " | ".join(cells) + " |")
    lines += ["", "Fitted exponent (time ~ blocks^k, least squares over all sizes):", "",
              "| scheme | k (CPU) | k (wall) | Python calls at " + " / ".join(map(str, p["calls"][schemes[0]]["blocks"]))
              + " blocks | k (calls) |", "|---|---|---|---|---|"]
    for s in schemes:
        c = p["calls"][s]
        lines.append(f"| {s} | {p['exponents'][s]['cpu']:.2f} | {p['exponents'][s]['wall']:.2f} | "
                     f"{c['calls'][0]:,} / {c['calls'][1]:,} | {c['exponent']:.2f} |")
    lines += ["", "Before this work (same machine, `mcutrain compile` wall time including start-up, one run): "
              "full 4.7 / 8.2 / 24.6 / 91.6 s and last-layer 3.9 / 5.1 / 15.7 / 29.2 s at 50 / 100 / 200 / 400 "
              "blocks, about n^2 to n^2.4; the tester's 1,000 blocks ran past 90 s.", "",
              "What was quadratic, and is not any more (results unchanged: the same graphs, plans and "
              "reports on 38 model / scheme / streaming cases, and tests/engine):", "",
              "* `reorder`: each update scanned the whole op list for its last reader and producer "
              "(ops x updates); now one pass builds both maps.",
              "* `insert_updates`: one scan of the graph per parameter for its forward reader; now one map.",
              "* the memory planners (`plan_greedy`, `placement`'s conflict lists) and the plan checker "
              "compared every pair of buffers; now a sweep in order of first use finds the pairs live "
              "together (O(n log n + pairs)).",
              "* `fuse_rows`: every candidate segment walked every buffer of the program to sum the bytes "
              "live in it; now two prefix sums and the few buffers made inside the segment.",
              "* `fuse_backward`: each fusion rescanned the graph for readers of every tensor it made and "
              "restarted its search at the top; now reader/producer maps, and the search resumes after "
              "the block it fused.",
              "* `fuse_backward` also rebuilt its maps and a whole `Graph` once per fused block; now the maps "
              "are updated by the fusion (ops before the search point keyed by index, the rest by distance "
              "from the end) and the `Graph` is built once.",
              "",
              "What remains above linear: with a sparse scheme (a fixed number of trained convs, what "
              "mcutrain is for) compile time is linear up to garbage-collection and cache effects (k about "
              "1.05-1.1 in time, below 1 in calls). With `full`, every block's saved activations are live "
              "together at the turn of the backward, so the pairs of buffers live at once grow ~N^2, and "
              "first-fit placement (and the plan checker) must look at each pair: k about 1.5 up to 800 blocks. "
              "Such a network cannot train on a microcontroller anyway (its saved activations alone exceed "
              "any SRAM long before 800 blocks); making that part sub-quadratic needs another placement "
              "algorithm, which would change the plans."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
