"""Does the float32 backward (the default) train like the float64 audit build? Outcomes over seeds.

Why a benchmark and not only a test: over 1000 batch-1 steps the two builds stay identical only until
one rounding decision flips (tests/codegen/test_codegen_accumulate_outcome.py explains the mechanism:
a bias update of thousands of LSB lands 1 LSB apart, later one int8 activation flips, and the runs
become two stochastic-rounding trajectories). Which seeds diverge is chaotic, so "the same training
outcome" can only be judged over many seeds: per seed, float32 and float64 run the SAME program (same
stochastic-rounding seed, same sample stream) side by side; we report how many stay identical, and the
paired accuracy difference float32 - float64 with its standard error and 95% interval. The float64
build equals the NumPy reference executor (tests/codegen/test_codegen_accumulate.py and the outcome
test's direct check), so this is the float32 default against the reference.

Setups: ``tiny`` @16 pretrained on digits, a new zero head, scheme ``full``, lr 0.01, digits' 538
held-out images; the bundled backbone (mbv2-w0.35 @64, fashion-mnist) with a new head on mnist-5k,
``paper-49kb``, lr 0.05, 500 held-out images. 1000 steps each. ``python -m bench.accumulate_outcome``
(``--seeds N``) writes docs/results/accumulate_outcome.md.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.stats

from bench.common import stamp, write_results
from mcutrain.codegen import HostEngine, build_host, compile_for_codegen, generate
from mcutrain.codegen.samples import int8_samples
from mcutrain.data import ImageSet, load_dataset
from mcutrain.quant.head import new_head
from mcutrain.sparse import get_builtin, resolve

STEPS = 1000


@dataclass(frozen=True)
class Setup:
    name: str
    qmodel: object
    scheme: str
    lr: float
    train: tuple
    held_out: tuple


def _draw(q, data, n: int, seed: int):
    return int8_samples(data, n, resolution=q.resolution, preprocessing=q.preprocessing,
                        input_scale=q.input.scale, input_zero=q.input.zero, seed=seed)


def tiny_digits(folder: Path) -> Setup:
    from mcutrain.quant.model_file import load_qmodel
    from tests.helpers.digits_model import make_digits_models

    q = load_qmodel(make_digits_models(folder)[1])
    q = new_head(q, q.classes)
    data = load_dataset("digits", seed=0)
    held = ImageSet(np.concatenate([data.val.images, data.test.images]),
                    np.concatenate([data.val.labels, data.test.labels]))
    return Setup("tiny@16 digits, full, lr 0.01", q, "full", 0.01, _draw(q, data.train, STEPS, 0),
                 _draw(q, held, len(held), 1))


def backbone_mnist() -> Setup:
    from mcutrain.assets import DEFAULT_BACKBONE
    from mcutrain.quant.quantize import quantize_model
    from mcutrain.train.checkpoint import load_checkpoint

    model, info = load_checkpoint(DEFAULT_BACKBONE)
    own = load_dataset(info.dataset, seed=0)
    q = quantize_model(model, info, own.train, seed=0, calibration_data=info.dataset)
    task = load_dataset("mnist-5k", seed=0)
    q = new_head(q, task.classes)
    return Setup("mbv2-w0.35@64 (bundled) -> mnist-5k, paper-49kb, lr 0.05", q, "paper-49kb", 0.05,
                 _draw(q, task.train, STEPS, 0), _draw(q, task.test, 500, 1))


def _accuracy(engine: HostEngine, held_out) -> float:
    images, labels = held_out
    return float(np.mean(engine.predict_classes(images) == labels))


def run_seed(setup: Setup, seed: int, folder: Path) -> dict:
    """One program (stochastic-rounding ``seed``), both accumulator builds, the same stream, side by side."""
    plan = resolve(get_builtin(setup.scheme, setup.qmodel.spec.name), setup.qmodel.spec)
    program = compile_for_codegen(setup.qmodel, plan, lr=setup.lr, seed=seed)
    engines = {}
    for mode in ("float32", "float64"):
        generate(program, folder / mode, accumulate=mode)
        engines[mode] = HostEngine(build_host(folder / mode))
    images, labels = setup.train
    apart = None
    for step, (x, y) in enumerate(zip(images, labels)):
        l32, l64 = (engines[m].train_step(x, int(y)) for m in ("float32", "float64"))
        if apart is None and l32 != l64:
            apart = step
    acc = {m: _accuracy(e, setup.held_out) for m, e in engines.items()}
    p32, p64 = engines["float32"].parameters(), engines["float64"].parameters()
    w = [k for k in p64 if k.endswith(".weight")]
    differ = sum(int(np.count_nonzero(p32[k] != p64[k])) for k in w)
    return {"seed": seed, "float32": acc["float32"], "float64": acc["float64"], "first_step_apart": apart,
            "weights_apart_fraction": differ / sum(p64[k].size for k in w)}


def summary(rows: list[dict]) -> dict:
    d = np.array([r["float32"] - r["float64"] for r in rows])
    n = len(d)
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    t = float(scipy.stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")  # two-sided 95%, df = n - 1
    return {"n": n, "identical": sum(r["first_step_apart"] is None for r in rows),
            "mean_float32": float(np.mean([r["float32"] for r in rows])),
            "mean_float64": float(np.mean([r["float64"] for r in rows])),
            "mean_diff": float(d.mean()), "se_diff": se, "ci95": [float(d.mean() - t * se), float(d.mean() + t * se)]}


def markdown(results: list[dict], meta: dict) -> str:
    lines = ["# float32 backward (default) against the float64 audit build: training outcomes over seeds", "",
             f"Measured {meta['date']}. Command: `{meta['command']}`. " + __doc__.split("\n\n")[1].replace("\n", " "),
             "", "| setup | seeds | identical all 1000 steps | mean accuracy float32 | float64 | paired diff "
             "(float32 - float64) | 95% interval |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        s = r["summary"]
        lines.append(f"| {r['setup']} | {s['n']} | {s['identical']} | {100 * s['mean_float32']:.2f}% | "
                     f"{100 * s['mean_float64']:.2f}% | {100 * s['mean_diff']:+.2f} ± {100 * s['se_diff']:.2f} | "
                     f"[{100 * s['ci95'][0]:+.2f}, {100 * s['ci95'][1]:+.2f}] |")
    for r in results:
        lines += ["", f"**{r['setup']}** per seed (accuracy float32 / float64, first step with differing losses, "
                      "int8 weights apart at the end):", ""]
        lines += [f"- seed {x['seed']}: {100 * x['float32']:.1f}% / {100 * x['float64']:.1f}%, "
                  f"{'never' if x['first_step_apart'] is None else x['first_step_apart']}, "
                  f"{100 * x['weights_apart_fraction']:.2f}%" for x in r["rows"]]
    lines += ["", "Reading: a seed that stays identical meets the issue's per-run criterion trivially; one that "
              "diverges becomes another draw of the same training (its accuracy differs by about the seed-to-seed "
              "spread). The outcome is the same when the paired interval contains 0 and is narrow against that "
              "spread."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args(argv)
    meta = stamp(f"python -m bench.accumulate_outcome --seeds {args.seeds}")
    results = []
    with tempfile.TemporaryDirectory(prefix="acc-outcome-") as tmp:
        for setup in (tiny_digits(Path(tmp)), backbone_mnist()):
            rows = []
            for seed in range(args.seeds):
                rows.append(run_seed(setup, seed, Path(tmp) / f"{len(results)}-{seed}"))
                print(f"{setup.name} seed {seed}: {rows[-1]}", flush=True)
            results.append({"setup": setup.name, "rows": rows, "summary": summary(rows)})
            print(results[-1]["summary"], flush=True)
    write_results("accumulate_outcome", {"benchmark": "accumulate_outcome", "steps": STEPS, "results": results,
                                         **meta}, markdown(results, meta))


if __name__ == "__main__":
    main()
