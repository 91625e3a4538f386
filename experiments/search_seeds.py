"""How reproducible is the fine-tune analysis? Seeds and the warmed head (issue 14, item 2).

One analysis per setting with 6 seeds (``--seeds 6``); the per-seed accuracies it records give two
INDEPENDENT analyses of the same model, data split and runs: seeds {0, 1, 2} against seeds {3, 4, 5}.
The Spearman rank correlation of their deltas (every bias depth and weight candidate together, and the
weights alone) is the reproducibility of the ranking the search uses:

  N = 1   delta of seed a against seed b, averaged over the pairs (0, 3), (1, 4), (2, 5);
  N = 3   the mean paired delta of seeds 0-2 against that of seeds 3-5.

Settings (small on purpose, one shared core): the test suite's `tiny` digits model (16x16) with a new
ZERO head, task mnist-5k (3500 / 750 / 750), 1 epoch on 300 training samples per run (the demo's noisy
regime), the whole 750-image validation split, last 6 of 15 convs at ratios 1/4 and 1, the default bias
grid; zero head against a head trained alone for 20 epochs (``--head-epochs 20``); lr 0.1 and lr auto.

  PYTHONPATH=. python -m experiments.search_seeds      (writes docs/results/search_seeds.md)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from mcutrain.search import AnalysisConfig, analyze
from mcutrain.search.contrib import delta_se
from mcutrain.search.fast_compare import spearman

WORK = Path("bench/results/search_seeds_work")  # ignored by git: the model and the run caches
SEEDS = 6
HEADS = (0, 20)
LRS = (0.1, "auto")
BASE = dict(data="mnist-5k", epochs=1, train_subset=300, eval_subset=0, layers="last:6", ratios="1/4,1")


def model_file() -> Path:
    from tests.helpers.digits_model import make_fresh_head_digits_model

    folder = WORK / "model"
    path = folder / "fresh-head.safetensors"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path = make_fresh_head_digits_model(folder)
    return path


def deltas(doc: dict, seeds: list[int]) -> tuple[list[float], list[float]]:
    """(every delta, the weight deltas) averaged over ``seeds``, paired by seed, in a fixed order."""
    s = doc["seeds"]
    n = doc["model"]["n_convs"]
    pick = lambda values: float(np.mean([values[i] for i in seeds]))  # noqa: E731
    base = np.array(s["baseline"])
    bias = {k: np.array(v) for k, v in s["bias"].items()}
    b = [pick(bias[k] - base) for k in sorted(bias, key=int)]
    w = [pick(np.array(acc) - bias[str(n - int(i))]) for i in sorted(s["weight"], key=int)
         for _, acc in sorted(s["weight"][i].items(), key=lambda kv: float(kv[0]))]
    return b + w, w


def single_run_noise(doc: dict) -> tuple[float, float]:
    """Medians over the candidates of (the sd of ONE paired delta over the seeds, the binomial se that
    ``shrunk`` assumes for one delta without seeds)."""
    s, n = doc["seeds"], doc["model"]["n_convs"]
    val_n = doc["data"]["val_used"]
    base = np.array(s["baseline"])
    pairs = [(np.array(v), base) for v in s["bias"].values()]
    pairs += [(np.array(acc), np.array(s["bias"][str(n - int(i))])) for i, row in s["weight"].items()
              for acc in row.values()]
    sd = [float(np.std(a - b, ddof=1)) for a, b in pairs]
    binomial = [delta_se(float(a.mean()), float(b.mean()), val_n) for a, b in pairs]
    return float(np.median(sd)), float(np.median(binomial))


def correlations(doc: dict) -> dict:
    one = [[spearman(x, y) for x, y in zip(deltas(doc, [a]), deltas(doc, [a + 3]))] for a in range(3)]
    three = [spearman(x, y) for x, y in zip(deltas(doc, [0, 1, 2]), deltas(doc, [3, 4, 5]))]
    se = doc["se"]
    ses = list(se["bias"].values()) + [v for row in se["weight"].values() for v in row.values()]
    ds = list(doc["bias"].values()) + [v for row in doc["weight"].values() for v in row.values()]
    sd1, binomial = single_run_noise(doc)
    return {"sd1_median": sd1, "binomial_median": binomial, "n1_all": float(np.mean([o[0] for o in one])),
            "n1_weight": float(np.mean([o[1] for o in one])),
            "n1_pairs_all": [o[0] for o in one], "n3_all": three[0], "n3_weight": three[1],
            "median_se6": float(np.median(ses)), "clear_2se": int(sum(abs(d) > 2 * e for d, e in zip(ds, ses))),
            "deltas": len(ds), "baseline": doc["baseline"], "lr": doc["settings"]["lr"],
            "head_val": (doc.get("head") or {}).get("val_accuracy"), "seconds": doc["wall_seconds"],
            "run_seconds": doc["run_seconds"],
            "head_seconds": (doc.get("head") or {}).get("seconds"),
            "runs": doc["runs"]}


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    model = model_file()
    rows = []
    for lr in LRS:
        for head in HEADS:
            out = WORK / f"contrib-h{head}-lr{lr}.json"
            t0 = time.perf_counter()
            doc = analyze(AnalysisConfig(model=str(model), out=str(out), lr=lr, seeds=SEEDS, head_epochs=head,
                                         **BASE), progress=False)
            row = {"head_epochs": head, "lr_setting": lr, **correlations(doc),
                   "wall": round(time.perf_counter() - t0, 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    (WORK / "rows.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))
    return 0


def table(rows: list[dict]) -> str:
    """The markdown table of docs/results/search_seeds.md."""
    head = ("| head | lr | baseline | Spearman N=1 (all / weights) | Spearman N=3 (all / weights) | "
            "sd of one delta | binomial se | se, 6 seeds | deltas > 2 se | 132 runs; head |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        head_text = f"warmed {r['head_epochs']} ep. (val {r['head_val']:.3f})" if r["head_epochs"] else "zero"
        lines.append(f"| {head_text} | {r['lr_setting']} ({r['lr']:.3g}) | {r['baseline']:.3f} | "
                     f"{r['n1_all']:+.2f} / {r['n1_weight']:+.2f} | {r['n3_all']:+.2f} / {r['n3_weight']:+.2f} | "
                     f"{r['sd1_median'] * 100:.2f} pt | {r['binomial_median'] * 100:.2f} pt | "
                     f"{r['median_se6'] * 100:.2f} pt | {r['clear_2se']}/{r['deltas']} | {r['run_seconds']:.0f} s; "
                     f"{r['head_seconds'] or 0:.1f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
