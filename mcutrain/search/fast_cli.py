"""``mcutrain analyze --method fast|both``: the fast estimate from the command line, and its rank
agreement with a fine-tune analysis.

Why here and not in ``cli/cmd_analyze.py``: that command's options belong to the fine-tune analysis;
this module maps them onto ``FastConfig`` (the training settings and selections mean the same; the
epochs and sample counts keep the fast defaults unless set to other values than the fine-tune defaults) and
keeps the CLI edit to one option and one dispatch.

``both``: the fine-tune analysis writes OUT as usual (its output unchanged), then the fast estimate
writes ``OUT`` with ``.fast.json`` and records in its ``settings.compared_with`` the Spearman rank
correlations of the two (bias depths, weight candidates, and all deltas together), also printed on stderr.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from mcutrain.cli.output import emit, table
from mcutrain.io.atomic import atomic_write_text
from mcutrain.search.contrib import AnalysisConfig, summary
from mcutrain.search.fast import FastConfig, estimate


def fast_config(args, out: str) -> FastConfig:
    d, f = AnalysisConfig("", "", ""), FastConfig("", "", "")
    return FastConfig(model=args.model, data=args.data, out=out,
                      epochs=f.epochs if args.epochs == d.epochs else args.epochs,
                      train_subset=f.train_subset if args.train_subset == d.train_subset else args.train_subset,
                      eval_subset=f.eval_subset if args.eval_subset == d.eval_subset else args.eval_subset,
                      batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, optimizer=args.optimizer,
                      qas=args.qas, update_rule=args.update_rule, seed=args.seed, resolution=args.resolution,
                      layers=args.layers, ratios=args.ratios, bias_grid=args.bias_grid)


def fast_path(out: str) -> str:
    """Where ``both`` writes the fast estimate: OUT with ``.fast.json`` instead of ``.json``."""
    p = Path(out)
    return str(p.with_name(p.name[:-5] if p.name.endswith(".json") else p.name)) + ".fast.json"


def run_fast(args, run_finetune) -> int:
    if args.method == "fast":
        doc = estimate(fast_config(args, args.out), progress=not args.quiet)
        if "warning" in doc["settings"]["calibration"]:
            print(f"mcutrain analyze: warning: {doc['settings']['calibration']['warning']}", file=sys.stderr)
        emit(args, {"out": args.out, "method": "fast", **summary(doc), "estimate_seconds": doc["settings"]["seconds"]},
             _human)
        return 0
    status = run_finetune(args)
    path = fast_path(args.out)
    with open(args.out) as f:
        finetune_doc = json.load(f)
    # the rate the fine-tunes used (--lr auto's choice where it chose), so both estimate the same training
    cfg = replace(fast_config(args, path), lr=finetune_doc["settings"]["lr"])
    doc = estimate(cfg, progress=not args.quiet, write=False)
    doc["settings"]["compared_with"] = {"path": args.out, **rank_agreement(doc, finetune_doc)}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    c = doc["settings"]["compared_with"]
    print(f"mcutrain analyze: fast estimate in {path} ({doc['wall_seconds']:.1f} s); Spearman rank correlation with "
          f"the fine-tunes: weights {_fmt(c['weight'])}, bias depths {_fmt(c['bias'])}, all {_fmt(c['all'])}",
          file=sys.stderr)
    return status


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:+.2f}"


def _human(r: dict) -> str:
    best = r["best_bias"]
    s = r["estimate_seconds"]
    return "\n".join([
        f"{r['model']} on {r['data']}: FAST estimate; baseline (classifier only) val accuracy "
        f"{r['baseline'] * 100:.2f}%",
        f"best bias depth: last {best['k']} convs, {best['dacc'] * 100:+.2f} points (estimated)" if best else
        "no bias candidates",
        "top weight contributions (estimated, over bias-only with the same depth):",
        table([[w["layer"], w["name"], w["ratio"], round(w["dacc"] * 100, 2)] for w in r["top_weights"]],
              ["layer", "name", "ratio", "dAcc (points)"]),
        f"{s['total']:.1f} s (head {s['head']:.1f}, gradients {s['gradients']:.1f}, calibration run "
        f"{s['calibration']:.1f}); wrote {r['out']}"])


# ---------------------------------------------------------------------------------------------- ranks


def ranks(values: list[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        tied = v == value
        r[tied] = r[tied].mean()
    return r


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation (Pearson of the average ranks); None with < 3 pairs or a constant side."""
    if len(a) != len(b) or len(a) < 3:
        return None
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    value = float(np.corrcoef(ra, rb)[0, 1])
    return value if math.isfinite(value) else None


def rank_agreement(a: dict, b: dict) -> dict:
    """Spearman correlations of two contrib documents on the candidates both have."""
    ks = sorted(set(a["bias"]) & set(b["bias"]), key=int)
    ws = [(i, r) for i in sorted(set(a["weight"]) & set(b["weight"]), key=int)
          for r in sorted(set(a["weight"][i]) & set(b["weight"][i]), key=float)]
    bias = spearman([a["bias"][k] for k in ks], [b["bias"][k] for k in ks])
    weight = spearman([a["weight"][i][r] for i, r in ws], [b["weight"][i][r] for i, r in ws])
    everything = spearman([a["bias"][k] for k in ks] + [a["weight"][i][r] for i, r in ws],
                          [b["bias"][k] for k in ks] + [b["weight"][i][r] for i, r in ws])
    return {"bias": bias, "weight": weight, "all": everything, "bias_n": len(ks), "weight_n": len(ws)}
