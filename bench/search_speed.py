"""How many candidate schemes per minute the search can judge in `mcutrain compile`'s exact memory figure.

Side by side, on the same distinct candidates (drawn by the search's own sampler from a contribution
table over the last half of the convs and all four ratios), one process, torch 1 thread:
  compile        ``prepare_model`` + ``compile_training`` per candidate (what `mcutrain compile` runs);
  exact cold     ``SramCost.exact`` (training stage only, full placement) with every memo empty;
  exact warm     the same candidates again (per-plan memo hits);
  check cold     ``SramCost.check`` against a budget (the search's decision: exact yes/no, early-stopped
                 placement), fresh ``SramCost`` and empty engine memos, then the same call on a second
                 set of distinct candidates with the engine memos warm (the steady state of a search);
  search         a whole ``evolve`` run: distinct candidates judged per minute.
Equality with compile is asserted on every candidate of the exact runs. Also the paper's analytic
extra-memory model against the exact total SRAM: the 15 paper schemes and random candidates at 128x128.

  python -m bench.search_speed [--model mcunet-5fps] [--resolution 128] [--n 20]
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import numpy as np
import torch

from bench.common import stamp, write_results
from mcutrain.engine.compile import compile_training
from mcutrain.engine.passes.fuse_rows import clear_memos as clear_engine_memos
from mcutrain.quant.random_model import random_qmodel
from mcutrain.search.budget import KB, parse_bytes
from mcutrain.search.contrib import contrib_from_doc
from mcutrain.search.cost import COMPILE_LR, COMPILE_SEED, SramCost
from mcutrain.search.evolve import SearchConfig, Space, evolve
from mcutrain.sparse import analytic_extra_bytes, get_builtin, resolve
from mcutrain.sparse.builtin import PAPER_ROWS
from mcutrain.sparse.permute import prepare_model
from mcutrain.sparse.scheme import backbone_convs

NAME = "search_speed"


def space_for(model: str) -> Space:
    """All analysed (conv, ratio) pairs over the last half of the convs, gains random (the search's
    sampler only needs the table's shape)."""
    from mcutrain.models.zoo import get_spec

    n = len(backbone_convs(get_spec(model)))
    rng = random.Random(0)
    doc = {"format": "mcutrain-contrib", "version": 1, "model": {"arch": model, "n_convs": n},
           "baseline": 0.5, "bias": {str(k): rng.uniform(0, 0.05) for k in range(1, n + 1)},
           "weight": {str(i): {str(r): rng.uniform(-0.01, 0.02) for r in (0.125, 0.25, 0.5, 1.0)}
                      for i in range(n // 2, n)}}
    return Space(contrib_from_doc(doc))


def distinct_candidates(space: Space, model: str, count: int, seed: int) -> list:
    rng, seen = random.Random(seed), {}
    while len(seen) < count:
        g = space.sample(rng)
        seen.setdefault(g, g.scheme(model, space.n))
    return list(seen.values())


def per_minute(count: int, seconds: float) -> float:
    return round(60 * count / seconds, 1)


def timed(fn, items) -> tuple[list, float]:
    t0 = time.perf_counter()
    out = [fn(x) for x in items]
    return out, time.perf_counter() - t0


def speed(model: str, resolution: int, n: int, budget: int) -> dict:
    qmodel = random_qmodel(model, resolution, num_classes=10)[0]
    space = space_for(model)
    cands = distinct_candidates(space, model, 2 * n, seed=1)
    first, second = cands[:n], cands[n:]

    def compile_one(scheme):
        plan = resolve(scheme, qmodel.spec)
        return compile_training(prepare_model(qmodel, plan), plan, lr=COMPILE_LR, seed=COMPILE_SEED).report

    clear_engine_memos()
    reports, t_compile = timed(compile_one, first)
    clear_engine_memos()
    cost = SramCost(qmodel)
    exact, t_exact_cold = timed(cost.exact, first)
    assert [c.total_sram_bytes for c in exact] == [r["total_sram_bytes"] for r in reports]
    _, t_exact_warm = timed(cost.exact, first)
    clear_engine_memos()
    fresh = SramCost(qmodel)
    checks, t_check_cold = timed(lambda s: fresh.check(s, budget), first)
    assert [c.fits for c in checks] == [r["total_sram_bytes"] <= budget for r in reports]
    _, t_check_steady = timed(lambda s: fresh.check(s, budget), second)
    search_cost = SramCost(qmodel)
    cfg = SearchConfig(sram_budget=budget, population=20, generations=10, seed=0)
    t0 = time.perf_counter()
    result = evolve(space, search_cost, cfg, model, progress=False)
    t_search = time.perf_counter() - t0
    return {
        "model": model, "resolution": resolution, "candidates": n, "budget_bytes": budget,
        "feasible_fraction": round(float(np.mean([c.fits for c in checks])), 2),
        "per_minute": {
            "compile_training": per_minute(n, t_compile),
            "exact_cold": per_minute(n, t_exact_cold),
            "exact_warm_memo": per_minute(n, t_exact_warm),
            "check_cold": per_minute(n, t_check_cold),
            "check_steady_state": per_minute(n, t_check_steady),
            "search_evolve": per_minute(result.evaluations, t_search),
        },
        "seconds": {"compile_training": round(t_compile, 2), "exact_cold": round(t_exact_cold, 2),
                    "exact_warm_memo": round(t_exact_warm, 4), "check_cold": round(t_check_cold, 2),
                    "check_steady_state": round(t_check_steady, 2), "search_evolve": round(t_search, 2)},
        "search_evaluations": result.evaluations,
    }


def analytic_error(resolution: int, random_n: int) -> dict:
    """The paper's analytic extra memory vs the exact total SRAM (and vs the exact total minus the
    classifier-only total, the closest exact analogue of "extra" memory)."""
    rows = []
    for model in PAPER_ROWS:
        qmodel = random_qmodel(model, resolution, num_classes=10)[0]
        cost = SramCost(qmodel)
        floor = cost.exact(get_builtin("last-layer", model)).total_sram_bytes
        schemes = [(get_builtin(r[0], model), "paper") for r in PAPER_ROWS[model]]
        if model == "mcunet-5fps":
            schemes += [(s, "random") for s in distinct_candidates(space_for(model), model, random_n, seed=2)]
        for scheme, kind in schemes:
            exact = cost.exact(scheme).total_sram_bytes
            analytic = analytic_extra_bytes(resolve(scheme, qmodel.spec), qmodel.spec, resolution)["total_bytes"]
            rows.append({"model": model, "scheme": scheme.name if kind == "paper" else "random", "kind": kind,
                         "analytic_bytes": analytic, "exact_total_bytes": exact, "exact_extra_bytes": exact - floor})
    return {"rows": rows, **{kind: _errors([r for r in rows if r["kind"] == kind]) for kind in ("paper", "random")}}


def _errors(rows: list[dict]) -> dict:
    a = np.array([r["analytic_bytes"] for r in rows], float)
    t = np.array([r["exact_total_bytes"] for r in rows], float)
    e = np.array([r["exact_extra_bytes"] for r in rows], float)
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    return {"n": len(rows),
            "mean_abs_rel_error_vs_total": round(float(np.mean(np.abs(a - t) / t)), 3),
            "max_abs_rel_error_vs_total": round(float(np.max(np.abs(a - t) / t)), 3),
            "mean_abs_error_vs_extra_kb": round(float(np.mean(np.abs(a - e))) / KB, 1),
            "spearman_vs_total": round(float(np.corrcoef(rank(a), rank(t))[0, 1]), 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mcunet-5fps,mbv2-w0.35")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--n", type=int, default=20, help="distinct candidates per timed set")
    ap.add_argument("--budgets", default="200KB,100KB",
                    help="SRAM budgets of the check and search runs (default 200KB,100KB: loose and tight)")
    ap.add_argument("--random-n", type=int, default=40, help="random candidates for the analytic comparison")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    given = sys.argv[1:] if argv is None else argv
    command = "python -m bench.search_speed" + (f" {' '.join(given)}" if given else "")
    meta = stamp(command)
    budgets = [parse_bytes(b, "--budgets") for b in args.budgets.split(",")]
    speeds = [speed(m, args.resolution, args.n, b) for m in args.models.split(",") for b in budgets]
    err = analytic_error(args.resolution, args.random_n)
    write_results(NAME, {"benchmark": NAME, "speed": speeds, "analytic": err, **meta}, page(speeds, err, meta))


def page(speeds: list[dict], err: dict, meta: dict) -> str:
    md = ["# Search: candidates per minute in the exact compile figure", "",
          f"Measured {meta['date']} on {meta['machine']} (load {meta['load_average_1min']}, shared), one process, "
          f"torch 1 thread. Command: `{meta['command']}`.", "",
          "Candidates: distinct schemes from the search's sampler (bias depth, weights of the last half of the convs "
          "at 1/8..1). `compile_training`: the full compile per candidate; `exact`: `SramCost.exact` (same "
          "number, asserted on every candidate); `check`: the search's exact yes/no against the budget; cold: "
          "empty memos; steady state: new distinct candidates after the first set (engine memos warm). "
          "`compile_training` runs the same engine code, so it also uses the remembered row-pipeline segment steps "
          "(`passes/fuse_rows`), which is why it is faster here than before that memo (about 0.2-0.5 s per "
          "compile at 128x128); `exact` is then only somewhat faster than it: both run the full placement search "
          "(up to 2000 orders) of the training arena. The search's speed comes from `check`, which decides "
          "\"fits the budget\" exactly without finishing that search.", "",
          "| model | res | budget (KB) | feasible | compile_training | exact cold | exact warm | check cold | check steady | "
          "whole evolution |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in speeds:
        p = s["per_minute"]
        md.append(f"| {s['model']} | {s['resolution']} | {s['budget_bytes'] / KB:.0f} | {s['feasible_fraction']:.0%} | "
                  f"{p['compile_training']:.0f} | "
                  f"{p['exact_cold']:.0f} | {p['exact_warm_memo']:.3g} | {p['check_cold']:.0f} | "
                  f"{p['check_steady_state']:.0f} | {p['search_evolve']:.0f} |")
    md += ["", "(candidates per minute; feasible: the share of the timed candidates that fit the budget. A candidate "
           "refused only after the full placement search is the slow case, so a tight budget is slower.)", "", "## The paper's analytic extra-memory model vs the exact total SRAM", "",
           "| set | n | mean abs rel. error vs total | max | mean abs error vs exact total - classifier-only (KB) | "
           "Spearman vs total |", "|---|---|---|---|---|---|"]
    for kind in ("paper", "random"):
        e = err[kind]
        md.append(f"| {kind} | {e['n']} | {e['mean_abs_rel_error_vs_total']:.1%} | {e['max_abs_rel_error_vs_total']:.1%} | "
                  f"{e['mean_abs_error_vs_extra_kb']:.1f} | {e['spearman_vs_total']:.3f} |")
    md += ["", "| model | scheme | analytic (KB) | exact total (KB) | exact total - classifier-only (KB) |",
           "|---|---|---|---|---|"]
    for r in err["rows"]:
        if r["kind"] == "paper":
            md.append(f"| {r['model']} | {r['scheme']} | {r['analytic_bytes'] / KB:.1f} | {r['exact_total_bytes'] / KB:.1f} "
                      f"| {r['exact_extra_bytes'] / KB:.1f} |")
    return "\n".join(md)


if __name__ == "__main__":
    main()
