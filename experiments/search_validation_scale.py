"""Search validation at the issue's scale: is the searched scheme ever significantly worse? (issue 14, item 3)

experiments/search_validation.py judged 12 cases by single draws on 500-image test subsets; this is the
experiment the issue asks for, resumable and able to fan out on Ray.

Protocol (``--scale full``)
    Networks: the paper's ImageNet-pretrained mcunet-5fps and mbv2-w0.35 (../shared/upstream, imported
    at 96x96 as search_validation does; absent: the experiment says so and stops). Tasks: fashion-mnist,
    mnist-5k, digits (every 10-class offline dataset; the split is seed 0's, the test split WHOLE:
    10,000 / 750 / 269 images). Budgets: classifier-only minimum + 25 KB, + 75 KB, and 256 KB of total
    SRAM, in ``mcutrain compile``'s exact figure (``SramCost``). Schemes per (network, task, budget):
    searched-fast (the fast estimate, ``search.fast``, then ``search``), searched-ft (the fine-tune
    analysis with a warmed head and 2 seeds, ``search.contrib``, then ``search``), random-fast /
    random-ft (each search's random search with as many distinct evaluations, ``evolve.random_search``),
    last-layer, bias-only, last-k:N (largest N within the budget), the paper's five schemes. Every scheme
    is fine-tuned (new zero int8 head, int8 SGD-M 0.9 + QAS, batch 32) at every rate of ``lrs`` and every
    seed (the fine-tune seed: batch order and stochastic rounding; the training / validation subsets
    are fixed by ``DATA_SEED``); the rate is chosen per scheme by validation accuracy averaged over the
    seeds; each seed's test correctness per image at that rate is what is judged.
Criterion (experiments/validation_stats.py, which says why a paired image bootstrap and not McNemar's
    test): a case is (network, task, budget, searched scheme, baseline using the same or more SRAM); a
    SUCCESS unless the searched scheme is significantly worse (95% interval of the seed-averaged test
    accuracy difference entirely below 0). Goal: >= 90% successes. Reported too: the cases where the
    searched scheme is significantly better, and each searched scheme against the most accurate baseline
    within its budget.
Resumable: every fine-tune is one line of bench/results/<out-name>_work/finetunes.jsonl keyed by its
    settings (validation_stats.FinetuneCache); the analyses keep their own caches in the same folder.
    A killed run, rerun with the same command, redoes only what is missing. ``--ray auto|HOST:PORT``
    runs the fine-tunes (one task per scheme and seed, every rate) and the fine-tune analyses on Ray.

Scales: ``smoke`` = mcunet-5fps, digits, one budget (+75 KB), 48x48, 96 training / 96 validation
images, 2 epochs, 2 rates, 2 seeds, the fast search only (a few minutes on one core; checks the
machinery, its numbers mean nothing). ``full`` = the protocol above (SCALES).

Cost of the full scale (``validation_scale_page.cost_estimate``: the smoke run's CPU seconds per
fine-tune, scaled by pixels and images; docs/results/search_validation_scale_smoke.md): the smoke run
of 2026-12-06 measured 2.3 CPU s per fine-tune (one thread); the full scale is about 1,190 fine-tunes
(about 22 schemes x 3 rates x 3 seeds x 6 pairs), each about 120 times that work, plus about 360
fine-tune-analysis runs: about 100 CPU hours, the order of magnitude (2 seeds instead of 3: about
two thirds). Checked once: one fine-tune at the full settings (paper-99kb, mcunet-5fps, fashion-mnist,
1,000 images x 8 epochs, 1,000 validation and 10,000 test images) took 254 CPU s (test 81.2%), where the
scaling says 336 s for that test split; schemes that backpropagate further (bias-only, deep last-k) and
mbv2-w0.35 cost more per fine-tune. Not for this shared 2-core machine: a cluster (``--ray HOST:PORT``) or one many-core
machine (``--ray auto`` uses every core; without ``--ray`` the fine-tunes run one after another).
Results on Ray are those of a local run (checked on the smoke scale: the 6 fine-tunes redone on
``--ray auto`` gave identical validation / test accuracies and per-image correctness). Command:

  PYTHONPATH=. OMP_NUM_THREADS=1 python -m experiments.search_validation_scale --scale full --ray auto

writes bench/results/search_validation_scale.json, docs/results/search_validation_scale.md and .png.
The smoke run: ``--scale smoke`` (writes ..._smoke by default).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.common import RESULTS, stamp
from experiments.search_validation import NETS, SEARCH, UPSTREAM, candidate_layers, largest_last_k, prepare_net
from experiments.validation_stats import FinetuneCache, scheme_text
from mcutrain.data import load_dataset
from mcutrain.io.atomic import file_sha256
from mcutrain.quant.head import new_head
from mcutrain.search.budget import KB
from mcutrain.search.cost import SramCost
from mcutrain.search.evolve import SearchConfig, search
from mcutrain.sparse import builtin_names, get_builtin, save_scheme
from mcutrain.train.finetune import FinetuneConfig, finetune

DATA_SEED = 0  # the split and the training / validation subsets: the same for every scheme and seed
SCALES = {
    "smoke": dict(nets=("mcunet-5fps",), tasks=("digits",), budgets=(("+", 75),), resolution=48, train_n=96,
                  val_n=96, test_n=0, epochs=2, lrs=("0.01", "0.003"), seeds=2, analysis_lr="0.01",
                  fast=dict(epochs=4, train_subset=96, grad_samples=64, eval_subset=96, ratios="0.25,1"),
                  finetune_analysis=None, search=dict(population=12, generations=6, seed=0)),
    "full": dict(nets=NETS, tasks=("fashion-mnist", "mnist-5k", "digits"),
                 budgets=(("+", 25), ("+", 75), ("=", 256)), resolution=96, train_n=1000, val_n=1000, test_n=0,
                 epochs=8, lrs=("0.01", "0.003", "0.001"), seeds=3, analysis_lr="0.003",
                 fast=dict(ratios="0.25,1"),
                 finetune_analysis=dict(epochs=4, train_subset=1000, eval_subset=1000, ratios="0.25,1",
                                        bias_grid="1,2,4,8", seeds=2),
                 search=SEARCH),
}


def budgets_of(scale: dict, minimum: int) -> list[int]:
    return [minimum + v * KB if how == "+" else v * KB for how, v in scale["budgets"]]


def subsets(dataset, scale: dict):
    """The fixed training / validation subsets and the test split (whole when ``test_n`` is 0)."""
    return replace(dataset, train=dataset.train.subset(scale["train_n"], DATA_SEED),
                   val=dataset.val.subset(scale["val_n"], DATA_SEED + 1),
                   test=dataset.test.subset(scale["test_n"], DATA_SEED + 2))


# ---------------------------------------------------------------------------------------------- analyses


def contribs(net: str, task: str, model_path: Path, scale: dict, work: Path, ray: str | None) -> dict:
    """{method: Contrib} of the analyses the scale asks for, each cached in ``work``."""
    from mcutrain.search.contrib import AnalysisConfig, analyze, load_contrib
    from mcutrain.search.fast import FastConfig, estimate

    tag = f"{net}-{task}-r{scale['resolution']}-lr{scale['analysis_lr']}"
    out = {}
    fast_path = work / f"fast-{tag}.json"
    if not fast_path.exists():
        t0 = time.perf_counter()
        estimate(FastConfig(model=str(model_path), data=task, out=str(fast_path), lr=float(scale["analysis_lr"]),
                            **scale["fast"]))
        print(f"  fast estimate {net}/{task}: {time.perf_counter() - t0:.0f} s", flush=True)
    out["fast"] = load_contrib(fast_path)
    ft = scale["finetune_analysis"]
    if ft:
        path = work / f"contrib-{tag}.json"
        analyze(AnalysisConfig(model=str(model_path), data=task, out=str(path), resolution=scale["resolution"],
                               layers=candidate_layers(net), lr=float(scale["analysis_lr"]), ray=ray, **ft),
                progress=False)
        out["ft"] = load_contrib(path)
    return out


def schemes_of(net: str, task: str, cost: SramCost, budgets: list[int], analyses: dict, scale: dict,
               work: Path) -> dict:
    """{name: row} of every scheme of one (network, task): kind, Scheme, file or built-in name, exact SRAM."""
    rows = {}

    def add(name: str, kind: str, scheme, source: str, **extra) -> None:
        c = cost.exact(scheme)
        rows[name] = {"kind": kind, "scheme": scheme, "source": source, "sram_bytes": c.total_sram_bytes,
                      "flash_bytes": c.flash_bytes, **extra}

    for name in builtin_names(net):
        if name != "full":
            add(name, "paper" if name.startswith("paper") else "baseline", get_builtin(name, net), name)
    for b, budget in enumerate(budgets):
        lk = largest_last_k(cost, net, budget)
        if lk and lk[0] not in rows:
            add(lk[0], "baseline", get_builtin(lk[0], net), lk[0])
        for method, contrib in analyses.items():
            out = search(cost, contrib, SearchConfig(sram_budget=budget, **scale["search"]), progress=False,
                         name=f"searched-{method}-b{b}")
            rnd = out.random.best.genome.scheme(cost.table.model, contrib.n_convs, f"random-{method}-b{b}")
            for scheme, kind, gain in ((out.scheme, "searched", out.gain), (rnd, "random", out.random.best.gain)):
                path = work / f"scheme-{net}-{task}-r{scale['resolution']}-{scheme.name}.json"
                save_scheme(path, scheme)
                add(scheme.name, kind, scheme, str(path), budget=budget, budget_index=b, method=method,
                    predicted_gain=gain, evaluations=out.evolution.evaluations if kind == "searched" else
                    out.random.evaluations)
    return rows


# ---------------------------------------------------------------------------------------------- fine-tunes


def finetune_key(ident: dict, scale: dict, scheme, lr: str, seed: int) -> dict:
    """What determines one fine-tune's result (validation_stats: strings and ints only)."""
    return {**ident, "resolution": scale["resolution"], "train_n": scale["train_n"], "val_n": scale["val_n"],
            "test_n": scale["test_n"], "data_seed": DATA_SEED, "epochs": scale["epochs"], "batch": 32,
            "optimizer": "sgd", "momentum": "0.9", "qas": 1, "rule": "sr", "lr": lr, "seed": seed,
            "scheme": scheme_text(scheme.bias_layers, scheme.weight_ratios)}


def finetune_job(shared: dict, job: tuple) -> Iterator[tuple[str, str, dict]]:
    """One scheme at one seed, every missing rate (one frozen-prefix cache); here or as a Ray task. A scheme
    file travels as its text and is written again in a temporary folder."""
    name, source, text, seed, todo = job
    with tempfile.TemporaryDirectory(prefix="mcutrain-valscale-") as tmp:
        if text is not None:
            source = str(Path(tmp) / Path(source).name)
            Path(source).write_text(text)
        memo: dict = {}
        for key_json, lr in todo:
            t0, c0 = time.perf_counter(), time.process_time()
            cfg = FinetuneConfig(model="", data=shared["task"], scheme=source, epochs=shared["epochs"], batch_size=32,
                                 lr=float(lr), seed=seed, optimizer="sgd", momentum=0.9, qas=True)
            r = finetune(cfg, progress=False, model=shared["model"], dataset=shared["dataset"], prefix_memo=memo,
                         per_image=True)
            yield name, key_json, {"val": r["val_accuracy"], "test": r["accuracy"], "test_correct": r["test_correct"],
                             "failed": r["failed"], "diverged": r["diverged"], "train_seconds": r["seconds"],
                             "wall_seconds": round(time.perf_counter() - t0, 2),
                             "cpu_seconds": round(time.process_time() - c0, 2)}


def run_finetunes(rows: dict, shared: dict, ident: dict, scale: dict, cache: FinetuneCache,
                  ray: str | None) -> None:
    """Every (scheme, rate, seed) not in ``cache``: fine-tuned here or on Ray, each cached as it arrives."""
    import json

    jobs, seen = [], set()
    for name, row in rows.items():
        text = None if row["source"] == name else Path(row["source"]).read_text()
        for seed in range(scale["seeds"]):
            todo = []
            for lr in scale["lrs"]:
                key = finetune_key(ident, scale, row["scheme"], lr, seed)
                kj = json.dumps(key, sort_keys=True)
                if cache.get(key) is None and kj not in seen:
                    seen.add(kj)
                    todo.append((kj, lr))
            if todo:
                jobs.append((name, row["source"], text, seed, todo))
    total = sum(len(j[4]) for j in jobs)
    print(f"  {total} fine-tunes to run ({len(cache)} cached)", flush=True)
    done = [0]

    def store(item: tuple[str, str, dict]) -> None:
        name, key_json, result = item
        key = json.loads(key_json)
        cache.put(key, result)
        done[0] += 1
        print(f"  [{done[0]}/{total}] {key['net']}/{key['task']} {name} seed {key['seed']} lr {key['lr']}: "
              f"val {result['val']:.3f} test {result['test']:.3f} "
              f"({result['wall_seconds']:.1f} s wall, {result['cpu_seconds']:.1f} s CPU)", flush=True)

    if ray is None:
        for job in jobs:
            for item in finetune_job(shared, job):
                store(item)
        return
    from mcutrain.search.ray_backend import session, stream

    with session(ray):
        stream(finetune_job, jobs, shared, store)


def measured(rows: dict, ident: dict, scale: dict, cache: FinetuneCache) -> list[float]:
    """Per scheme: the rate with the best seed-averaged validation accuracy, and each seed's result at it.
    Returns every fine-tune's CPU seconds (the cost estimate's input; wall seconds where not recorded)."""
    cpu = []
    for row in rows.values():
        by_lr = {lr: [cache.get(finetune_key(ident, scale, row["scheme"], lr, s)) for s in range(scale["seeds"])]
                 for lr in scale["lrs"]}
        val = {lr: float(np.mean([r["val"] for r in runs])) for lr, runs in by_lr.items()}
        lr = max(scale["lrs"], key=lambda x: (val[x], -float(x)))  # ties: the smaller rate
        cpu += [r.get("cpu_seconds", r["wall_seconds"]) for runs in by_lr.values() for r in runs]
        runs = by_lr[lr]
        row.update(lr=lr, val_by_lr=val, val=val[lr], test=float(np.mean([r["test"] for r in runs])),
                   test_by_seed=[r["test"] for r in runs], correct=[r["test_correct"] for r in runs],
                   failed_seeds=sum(bool(r["failed"]) for r in runs))
    return cpu


# ---------------------------------------------------------------------------------------------- main


def run_pair(net: str, task: str, scale: dict, work: Path, cache: FinetuneCache, ray: str | None) -> dict:
    from mcutrain.search.contrib import data_sha256

    model_path, model = prepare_net(net, scale["resolution"], work)
    cost = SramCost(new_head(model, [str(c) for c in range(10)]))  # every task here has 10 classes
    minimum = cost.exact(get_builtin("last-layer", net)).total_sram_bytes
    budgets = budgets_of(scale, minimum)
    print(f"== {net} on {task}: budgets {[round(b / KB, 1) for b in budgets]} KB", flush=True)
    dataset = load_dataset(task, seed=DATA_SEED)
    ident = {"net": net, "model_sha256": file_sha256(UPSTREAM / f"{net}.pkl")[:16], "task": task,
             "data_sha256": data_sha256(dataset)[:16]}
    t0 = time.perf_counter()
    analyses = contribs(net, task, model_path, scale, work, ray)
    rows = schemes_of(net, task, cost, budgets, analyses, scale, work)
    t_search = time.perf_counter() - t0
    data = subsets(dataset, scale)
    shared = {"model": model, "dataset": data, "task": task, "epochs": scale["epochs"]}
    run_finetunes(rows, shared, ident, scale, cache, ray)
    cpu = measured(rows, ident, scale, cache)
    for row in rows.values():  # the Scheme as the text that keys its fine-tunes
        scheme = row.pop("scheme")
        row["updates"] = scheme_text(scheme.bias_layers, scheme.weight_ratios)
    return {"budgets": budgets, "minimum_bytes": minimum, "schemes": rows,
            "analysis_search_seconds": round(t_search, 1),
            "finetune_cpu_seconds": cpu,
            "sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)}}


def main(argv=None) -> int:
    from experiments.validation_scale_page import publish

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    ap.add_argument("--out-name", default=None, help="results name (default: search_validation_scale, with "
                                                     "_smoke appended at smoke scale)")
    ap.add_argument("--ray", default=None, metavar="auto|HOST:PORT", help="run the fine-tunes as Ray tasks")
    ap.add_argument("--replot", action="store_true", help="re-draw the page and plot from the JSON")
    args = ap.parse_args(argv)
    name = args.out_name or ("search_validation_scale" + ("_smoke" if args.scale == "smoke" else ""))
    scale = SCALES[args.scale]
    torch.set_num_threads(1)
    if args.replot:
        import json

        from mcutrain.errors import McutrainError

        path = RESULTS / f"{name}.json"
        if not path.exists():
            raise McutrainError(f"{path} is missing: run the experiment at --scale {args.scale} first")
        publish(name, json.loads(path.read_text()))
        return 0
    if args.ray:  # a typo in the address fails now, not after the analyses
        from mcutrain.search.ray_backend import check_reachable

        check_reachable(args.ray)
    missing = [n for n in scale["nets"] if not (UPSTREAM / f"{n}.pkl").exists()]
    if missing:
        print(f"skipped: the paper's models {missing} are not in {UPSTREAM} (set MCUTRAIN_UPSTREAM_MODELS)")
        return 0
    work = RESULTS / f"{name}_work"
    cache = FinetuneCache(work / "finetunes.jsonl")
    command = "python -m experiments.search_validation_scale " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {"experiment": name, "scale": args.scale, "settings": _settings(scale), **stamp(command.strip())}
    t0 = time.perf_counter()
    results = {}
    for net in scale["nets"]:
        for task in scale["tasks"]:
            results[f"{net}/{task}"] = run_pair(net, task, scale, work, cache, args.ray)
    payload.update(results=results, wall_seconds=round(time.perf_counter() - t0, 1))
    publish(name, payload)
    return 0


def _settings(scale: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in scale.items()} | {"data_seed": DATA_SEED}


def cli(argv=None) -> int:
    """``main`` with a user error as one line and exit status 2 (the house rule), never a traceback."""
    from mcutrain.errors import McutrainError

    try:
        return main(argv)
    except McutrainError as e:
        print(f"search_validation_scale: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
