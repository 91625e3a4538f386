"""The generated C program's arena beside the arena ``mcutrain compile`` reports (issue 5, part 1).

For each paper network at 128x128 with the paper's ~100 KB scheme (random int8 weights: memory does
not depend on them), three numbers, all in bytes:
  report    ``compile_training(...).report["arena_bytes"]``: the full pipeline, the image streamed;
  C now     ``MCT_ARENA_BYTES`` of the generated ``model.h`` (max of the training and inference arenas)
            for ``compile_for_codegen``: the same program, the fused C kernels;
  C before  the same for the program the C target used to need (the first six passes, the whole image
            in the arena, no row pipelines): what ``compile_for_codegen`` compiled before.
With ``--check N`` the generated C (host build, gcc -O2) is also run side by side with the NumPy
executor for N training steps on random images: logits bit for bit before and after, the int8
weights / loss differences, the median wall time of a training step of each (a shared 2-core machine:
times are indicative only).
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import numpy as np

from bench.common import stamp, write_results
from bench.paper import paper_model
from mcutrain.codegen import build_host, compile_for_codegen, generate, render
from mcutrain.codegen.check import side_by_side
from mcutrain.engine.compile import compile_training
from mcutrain.engine.passes import fuse_expand, fuse_updates, inplace, insert_updates, prune, reorder
from mcutrain.models.specs import PAPER_SPECS

BEFORE_PASSES = (insert_updates, prune, reorder, fuse_updates, fuse_expand, inplace)


def c_arena(program) -> int:
    header = render(program)["model.h"]
    return int(re.search(r"#define MCT_ARENA_BYTES (\d+)", header).group(1))


def row(name: str, resolution: int, check: int) -> dict:
    model, plan = paper_model(name, resolution)
    reported = compile_training(model, plan, lr=0.01, seed=0)
    now = compile_for_codegen(model, plan, lr=0.01, seed=0)
    before = compile_training(model, plan, lr=0.01, seed=0, passes=BEFORE_PASSES, stream_input=False,
                              row_fusion="off")
    out = {"model": name, "resolution": resolution, "report_arena_bytes": reported.report["arena_bytes"],
           "c_arena_bytes": c_arena(now), "c_arena_before_bytes": c_arena(before),
           "c_train_arena_bytes": now.train.plan.arena_bytes,
           "c_inference_arena_bytes": now.inference.plan.arena_bytes,
           "trainable_bytes": now.report["trainable_bytes"], "input_streamed": now.report["input_streamed"]}
    if check:
        out["check"] = side_by_side_check(now, resolution, check)
    return out


def side_by_side_check(program, resolution: int, steps: int) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(-128, 128, (steps, 3, resolution, resolution)).astype(np.int8)
    labels = rng.integers(0, 10, steps)
    with tempfile.TemporaryDirectory() as tmp:
        generate(program, Path(tmp))
        r = side_by_side(program, build_host(Path(tmp)), images, labels, images[:1])
    return {"steps": steps, "logits_equal_before": r.logits_equal_before, "logits_equal_after": r.logits_equal_after,
            **r.differences, "c_train_ms": round(r.c_train_ms, 1), "numpy_train_ms": round(r.numpy_train_ms, 1)}


def markdown(rows: list[dict], command: str) -> str:
    lines = ["# Generated C arena vs the reported arena", "",
             f"`{command}`: paper-99kb scheme, random int8 weights, bytes (C: `MCT_ARENA_BYTES` of model.h).", "",
             "| model | res | report arena | C arena now | C arena before | check |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        c = r.get("check")
        check = (f"{c['steps']} steps: logits equal {c['logits_equal_before'] and c['logits_equal_after']}, "
                 f"max LSB {c['max_lsb']}, loss rel. err. {c['loss_rel_error']:.2g}, C {c['c_train_ms']} ms / "
                 f"NumPy {c['numpy_train_ms']} ms per step") if c else "-"
        lines.append(f"| {r['model']} | {r['resolution']} | {r['report_arena_bytes']} | {r['c_arena_bytes']} | "
                     f"{r['c_arena_before_bytes']} | {check} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--check", type=int, default=0, help="training steps run side by side with NumPy (0: none)")
    args = ap.parse_args(argv)
    command = "python -m bench.codegen_arena" + (f" --resolution {args.resolution}" if args.resolution != 128 else "") \
        + (f" --check {args.check}" if args.check else "")
    rows = [row(spec.name, args.resolution, args.check) for spec in PAPER_SPECS]
    for r in rows:
        print(r, flush=True)
    write_results("codegen_arena", {**stamp(command), "rows": rows}, markdown(rows, command))


if __name__ == "__main__":
    main()
