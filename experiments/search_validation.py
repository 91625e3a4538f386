"""Does the searched scheme beat the baselines at the same memory? (issue 7, part 5)

For each imported ImageNet-pretrained paper network (mcunet-5fps, mbv2-w0.35) and offline dataset
(fashion-mnist, digits): a quick contribution analysis (``mcutrain analyze`` settings below, cached),
then ``search`` at three TOTAL-SRAM budgets (classifier-only minimum + 25 KB, + 75 KB, and 256 KB, in
compile's exact figure), then int8 fine-tunes of the searched schemes and of the baselines: last-layer
(classifier only), bias-only, last-k:N (the largest N that fits each budget) and the paper's five
schemes. Every scheme's memory is the exact ``mcutrain compile`` total SRAM at the experiment's
resolution. Protocol: new zero int8 head, int8 SGD-M + QAS, batch 32, lr chosen on validation from
``LRS``, test accuracy reported; seeded subsets. Small settings so that it runs on one shared core:

  python -m experiments.search_validation            (writes docs/results/search_validation.md)

Noise-aware search (``--noise-z Z [Z ...]``): adds, to the results already in
bench/results/search_validation.json, the schemes searched with each delta shrunk by Z standard errors
(``SearchConfig.noise_z``), from the same cached analyses and budgets; only the new searched schemes are
fine-tuned (a scheme identical to one already measured reuses its accuracies), the baselines and the
z = 0 searched schemes are reused. The page then gives both objectives' verdicts side by side:

  python -m experiments.search_validation --noise-z 1 2

``--ray auto|HOST:PORT`` (docs/cluster.md) runs the analyses' fine-tunes and each scheme's fine-tunes (its
``LRS``) as Ray tasks: the model, data and scheme files are shipped from here; one torch thread per task,
as here, so the results are those of a local run. The noise-aware additions stay local (a few schemes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.common import DOCS, RESULTS, stamp, write_results
from experiments.scheme_finetunes import finetuned
from mcutrain.data import load_dataset
from mcutrain.quant.head import new_head
from mcutrain.quant.import_tiny_training import import_tiny_training
from mcutrain.quant.model_file import save_qmodel
from mcutrain.search.budget import KB
from mcutrain.search.contrib import AnalysisConfig, analyze, load_contrib, predicted_gain
from mcutrain.search.cost import SramCost
from mcutrain.search.evolve import SearchConfig, search
from mcutrain.sparse import analytic_extra_bytes, builtin_names, get_builtin, resolve, save_scheme
from mcutrain.sparse.builtin import PAPER_ROWS
from mcutrain.sparse.scheme import backbone_convs
from mcutrain.train.finetune import FinetuneConfig, finetune

UPSTREAM = Path(os.environ.get("MCUTRAIN_UPSTREAM_MODELS",
                               Path(__file__).resolve().parents[2] / "shared" / "upstream" / "mcu_models"))
NETS = ("mcunet-5fps", "mbv2-w0.35")
DATASETS = ("fashion-mnist", "digits")
RESOLUTION = 96
TRAIN_N, EVAL_N, EPOCHS = 300, 500, 4
LRS = (0.01, 0.003)
# The analysis uses the fine-tunes' own settings (AnalysisConfig's advice): same epochs, images and
# validation images; lr 0.003, the rate most fine-tunes chose on validation in the first run (which
# analysed with 2 epochs at lr 0.01: see EARLIER).
ANALYSIS = dict(epochs=EPOCHS, train_subset=TRAIN_N, eval_subset=EVAL_N, lr=0.003, ratios="0.25,1")
TAG = f"e{ANALYSIS['epochs']}-lr{ANALYSIS['lr']:g}"  # names this analysis' files in WORK
BUDGET_OFFSETS = (25 * KB, 75 * KB)  # over the classifier-only minimum; the third budget is 256 KB
SEARCH = dict(population=24, generations=15, seed=0)
WORK = RESULTS / "search_validation_work"
EARLIER = ("An earlier run analysed with 2 epochs at lr 0.01 (its baseline, the classifier after 2 epochs, was "
           "under-trained, so every deeper update looked like a large gain; files `*-b?.json` and "
           "`contrib-*-fashion-mnist.json` / `contrib-*-digits.json` without a tag in the work folder, page in git "
           "history): its searched schemes were at least as accurate as every baseline with as much or more SRAM "
           "in 2 of 12 cases.")
NOISE_READING = (
    "Reading (noise-aware runs of 2026-11-21, z = 0.5, 1, 2): shrinking the deltas by their noise did NOT make the "
    "search better by the issue's criterion. It does what it was meant to do: the searched schemes get smaller "
    "(mean SRAM falls with z). The analyses carry little signal: on fashion-mnist no measured delta exceeds 0.65 "
    "of its standard error (mcunet 0.65, mbv2 0.44), so z >= 1 (mbv2: z >= 0.5) finds no evidence of any gain and "
    "returns the classifier-only scheme; on digits one delta per network exceeds 2 standard errors (mcunet conv 21 "
    "at ratio 1: 2.5, mbv2 conv 30 at ratio 1: 2.4). But a "
    "small scheme is then 'beaten' by any baseline that is more accurate with more SRAM, even by a fraction of a "
    "point, so the first count falls (6 -> 2 or 0 of 12); against the best baseline within the same budget the "
    "count does not improve (8 -> 5-7 of 12), while the mean difference to that baseline moves from -1.2 to "
    "+0.2 / +0.4 points at z = 1 / 2, mostly from one analysis (mbv2-w0.35/digits: -11.9 -> 0.0 / -1.9 at the "
    "two larger budgets) and well within the noise. The fine-tunes that judge the schemes are themselves noisy "
    "(mbv2-w0.35/digits z = 0.5: 90.3% at 72.6 KB, 84.0% for the same scheme plus conv 48 at ratio 1/4 at 77.2 KB), so 12 single-seed "
    "cases from 4 analyses cannot separate objectives that differ by about a point. `mcutrain search` therefore "
    "keeps z = 0 (the plain sum) as its default; --noise-z is there to ask for a conservative, smaller scheme.")
NAME = "search_validation"
TITLE = "Searched schemes vs baselines: test accuracy against exact total SRAM"


def candidate_layers(net: str) -> list[int]:
    """The analysis' weight candidates: every conv the paper's five schemes update (where its search
    found gains), and the last three convs; keeps the analysis to ~30 short runs."""
    n = len(backbone_convs(import_spec(net)))
    paper = {i for row in PAPER_ROWS[net] for i, r in zip(row[2], row[3]) if r}
    return sorted(paper | {n - 3, n - 2, n - 1})


def import_spec(net: str):
    from mcutrain.models.zoo import get_spec

    return get_spec(net)


def prepare_net(net: str, resolution: int = RESOLUTION, work: Path = WORK) -> tuple[Path, object]:
    """The imported model at ``resolution``, saved in ``work`` where ``analyze`` can read it."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{net}-{resolution}.mct"
    model = replace(import_tiny_training(UPSTREAM / f"{net}.pkl"), resolution=resolution)
    if not path.exists():
        save_qmodel(path, model)
    return path, model


def largest_last_k(cost: SramCost, net: str, budget: int) -> tuple[str, int] | None:
    """The largest N whose last-k:N fits ``budget`` (exact), scanning up until 3 in a row do not."""
    n = len(backbone_convs(import_spec(net)))
    best, misses = None, 0
    for k in range(1, n + 1):
        c = cost.exact(get_builtin(f"last-k:{k}", net)).total_sram_bytes
        if c <= budget:
            best, misses = (f"last-k:{k}", c), 0
        else:
            misses += 1
            if misses == 3:
                break
    return best


def best_over_lrs(model, dataset, scheme: str, memo: dict) -> dict:
    runs = []
    for lr in LRS:
        cfg = FinetuneConfig(model="", data=dataset.name, scheme=scheme, epochs=EPOCHS, batch_size=32, lr=lr,
                             train_subset=TRAIN_N, eval_subset=EVAL_N, seed=0, optimizer="sgd", momentum=0.9,
                             qas=True)
        r = finetune(cfg, progress=False, model=model, dataset=dataset, prefix_memo=memo)
        runs.append({"lr": lr, "val": r["val_accuracy"], "test": r["accuracy"], "seconds": r["seconds"]})
    best = max(runs, key=lambda r: r["val"])
    return {"test": best["test"], "val": best["val"], "lr": best["lr"], "runs": runs}


def run_pair(net: str, data: str, model_path: Path, model, cost: SramCost, budgets: list[int],
             ray: str | None = None) -> dict:
    dataset = load_dataset(data, seed=0)
    contrib_path = WORK / f"contrib-{net}-{data}-{TAG}.json"
    t0 = time.perf_counter()
    analyze(AnalysisConfig(model=str(model_path), data=data, out=str(contrib_path), resolution=RESOLUTION,
                           layers=candidate_layers(net), bias_grid="1,2,4,8", ray=ray, **ANALYSIS), progress=False)
    contrib = load_contrib(contrib_path)
    analysis_s = time.perf_counter() - t0
    schemes: dict[str, dict] = {}
    for name in builtin_names(net):
        if name != "full":
            schemes[name] = {"kind": "paper" if name.startswith("paper") else "baseline", "scheme": name}
    searched = []
    for b, budget in enumerate(budgets):
        ts = time.perf_counter()
        out = search(cost, contrib, SearchConfig(sram_budget=budget, **SEARCH), progress=False,
                     name=f"searched-b{b}")
        path = WORK / f"scheme-{net}-{data}-b{b}-{TAG}.json"
        save_scheme(path, out.scheme)
        schemes[out.scheme.name] = {"kind": "searched", "scheme": str(path), "budget": budget,
                                    "predicted_gain": out.gain, "random_predicted_gain": out.random.best.gain,
                                    "search_seconds": round(time.perf_counter() - ts, 1),
                                    "evaluations": out.evolution.evaluations}
        searched.append(out.scheme.name)
        lk = largest_last_k(cost, net, budget)
        if lk:
            schemes.setdefault(lk[0], {"kind": "baseline", "scheme": lk[0]})
    from mcutrain.sparse import load_scheme

    for name, row in schemes.items():
        scheme = load_scheme(row["scheme"], net)
        c = cost.exact(scheme)
        row.update(sram_bytes=c.total_sram_bytes, flash_bytes=c.flash_bytes,
                   analytic_bytes=analytic_extra_bytes(resolve(scheme, model.spec), model.spec,
                                                       RESOLUTION)["total_bytes"])
        if row["kind"] != "searched":
            try:
                row["predicted_gain"] = predicted_gain(contrib, scheme)
            except Exception:  # a weight the analysis did not measure: no prediction
                row["predicted_gain"] = None
    for name, result in finetuned(best_over_lrs, model, dataset, {n: r["scheme"] for n, r in schemes.items()}, ray):
        row = schemes[name]
        row.update(result)
        print(f"  {net} {data} {name:14s} sram {row['sram_bytes'] / KB:6.1f} KB  test {row['test']:.3f} "
              f"(lr {row['lr']})", flush=True)
    return {"schemes": schemes, "searched": searched, "analysis_seconds": round(analysis_s, 1),
            "analysis_runs": contrib.doc["runs"]}


def add_noise_aware(payload: dict, zs: list[float], t0: float) -> None:
    """Search every pair's budgets again with noise z in ``zs`` and fine-tune the new schemes (module doc)."""
    from mcutrain.sparse import load_scheme

    runs = payload.setdefault("noise_runs", [])
    runs.append({"noise_z": list(zs), **stamp("python -m experiments.search_validation --noise-z "
                                              + " ".join(f"{z:g}" for z in zs))})
    for pair in payload["results"].values():
        for name in pair["searched"]:
            pair["schemes"][name].setdefault("noise_z", 0.0)
    models = {net: prepare_net(net) for net in NETS}
    costs = {net: SramCost(new_head(m, [str(c) for c in range(10)])) for net, (_, m) in models.items()}
    for z in zs:
        for key, pair in payload["results"].items():
            net, data = key.split("/")
            model, cost = models[net][1], costs[net]
            contrib_path = WORK / f"contrib-{net}-{data}-{TAG}.json"
            if not contrib_path.exists():
                sys.exit(f"{contrib_path} is missing: run the experiment without --noise-z first")
            contrib = load_contrib(contrib_path)
            dataset, memo = load_dataset(data, seed=0), {}
            for b, budget in enumerate(pair["budgets"]):
                name = f"searched-z{z:g}-b{b}"
                ts = time.perf_counter()
                out = search(cost, contrib, SearchConfig(sram_budget=budget, noise_z=z, **SEARCH), progress=False,
                             name=name)
                path = WORK / f"scheme-{net}-{data}-b{b}-{TAG}-z{z:g}.json"
                save_scheme(path, out.scheme)
                c = cost.exact(out.scheme)
                row = {"kind": "searched", "noise_z": z, "scheme": str(path), "budget": budget,
                       "predicted_gain": out.unshrunk_gain, "objective": out.gain,
                       "random_predicted_gain": out.random.best.gain,
                       "search_seconds": round(time.perf_counter() - ts, 1),
                       "evaluations": out.evolution.evaluations, "sram_bytes": c.total_sram_bytes,
                       "flash_bytes": c.flash_bytes,
                       "analytic_bytes": analytic_extra_bytes(resolve(out.scheme, model.spec), model.spec,
                                                              RESOLUTION)["total_bytes"]}
                same = _same_scheme(pair, out.scheme, net, load_scheme)
                if same:
                    row.update({k: pair["schemes"][same][k] for k in ("test", "val", "lr", "runs")}, reused_from=same)
                else:
                    row.update(best_over_lrs(model, dataset, str(path), memo))
                pair["schemes"][name] = row
                if name not in pair["searched"]:
                    pair["searched"].append(name)
                print(f"  z {z:g} {key} {name:16s} sram {c.total_sram_bytes / KB:6.1f} KB  test {row['test']:.3f} "
                      f"(lr {row['lr']}){' = ' + same if same else ''}", flush=True)
            runs[-1]["wall_seconds"] = round(time.perf_counter() - t0, 1)
            (RESULTS / f"{NAME}.json").write_text(json.dumps(payload, indent=2) + "\n")


def _same_scheme(pair: dict, scheme, net: str, load_scheme) -> str | None:
    """A measured scheme of ``pair`` updating exactly what ``scheme`` updates (its accuracy is reused)."""
    want = (scheme.bias_layers, scheme.weight_ratios)
    for name, row in pair["schemes"].items():
        if "test" in row:
            other = load_scheme(_local(row["scheme"]), net)
            if (other.bias_layers, other.weight_ratios) == want:
                return name
    return None


def _local(scheme: str) -> str:
    """Scheme files recorded with another worktree's absolute path: the same file name in WORK."""
    p = Path(scheme)
    return str(WORK / p.name) if p.is_absolute() and not p.exists() else scheme


def dominated(pair: dict, z: float = 0.0) -> dict:
    """For each searched scheme (at noise z): the baselines using at least as much SRAM that are more accurate."""
    out = {}
    for s in searched_at(pair, z):
        me = pair["schemes"][s]
        out[s] = [name for name, row in pair["schemes"].items() if row["kind"] != "searched"
                  and row["sram_bytes"] >= me["sram_bytes"] and row["test"] > me["test"]]
    return out


def searched_at(pair: dict, z: float) -> list[str]:
    return [s for s in pair["searched"] if pair["schemes"][s].get("noise_z", 0.0) == z]


def noise_zs(results: dict) -> list[float]:
    return sorted({r.get("noise_z", 0.0) for p in results.values() for r in p["schemes"].values()
                   if r["kind"] == "searched"})


def best_within(pair: dict, budget: int) -> tuple[str, dict]:
    """The most accurate baseline (or paper scheme) whose SRAM fits ``budget``."""
    fits = [(n, r) for n, r in pair["schemes"].items() if r["kind"] != "searched" and r["sram_bytes"] <= budget]
    return max(fits, key=lambda nr: (nr[1]["test"], -nr[1]["sram_bytes"]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replot", action="store_true", help="re-draw the plot and page from the JSON")
    ap.add_argument("--ray", default=None, metavar="auto|HOST:PORT",
                    help="run the fine-tunes as Ray tasks (a local instance, or a cluster's head: docs/cluster.md)")
    ap.add_argument("--noise-z", type=float, nargs="+", default=None, metavar="Z",
                    help="add noise-aware searches at these z to the existing results (module doc)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.replot:
        publish(json.loads((RESULTS / f"{NAME}.json").read_text()))
        return
    if args.noise_z:
        payload = json.loads((RESULTS / f"{NAME}.json").read_text())
        add_noise_aware(payload, args.noise_z, time.perf_counter())
        publish(payload)
        return
    if not (UPSTREAM / "mcunet-5fps.pkl").exists():
        sys.exit(f"the paper's models are needed in {UPSTREAM} (set MCUTRAIN_UPSTREAM_MODELS)")
    meta = stamp("python -m experiments.search_validation")
    t0 = time.perf_counter()
    results: dict = {}
    for net in NETS:
        model_path, model = prepare_net(net)
        cost = SramCost(new_head(model, [str(c) for c in range(10)]))  # every dataset here has 10 classes
        minimum = cost.exact(get_builtin("last-layer", net)).total_sram_bytes
        budgets = [minimum + off for off in BUDGET_OFFSETS] + [256 * KB]
        for data in DATASETS:
            print(f"== {net} on {data}: budgets {[round(b / KB, 1) for b in budgets]} KB", flush=True)
            pair = run_pair(net, data, model_path, model, cost, budgets, args.ray)
            pair.update(minimum_bytes=minimum, budgets=budgets)
            results[f"{net}/{data}"] = pair
            payload = {"experiment": NAME, "settings": settings(), "results": results, **meta,
                       "wall_seconds": round(time.perf_counter() - t0, 1)}
            (RESULTS / f"{NAME}.json").write_text(json.dumps(payload, indent=2) + "\n")
    publish(payload)


def settings() -> dict:
    return {"resolution": RESOLUTION, "train_n": TRAIN_N, "eval_n": EVAL_N, "epochs": EPOCHS, "lrs": list(LRS),
            "analysis": ANALYSIS, "analysis_bias_grid": "1,2,4,8 + the k the weight runs need",
            "candidate_layers": {net: candidate_layers(net) for net in NETS},
            "budget_offsets_bytes": list(BUDGET_OFFSETS), "search": SEARCH}


def publish(payload: dict) -> None:
    results, st = payload["results"], payload["settings"]
    plot(results, DOCS / f"{NAME}.png")
    header = [f"# {TITLE}", "",
          f"Measured {payload['date']} on {payload['machine']} (load {payload['load_average_1min']}), "
          f"{payload['wall_seconds'] / 60:.0f} min in all. Command: `{payload['command']}`.", "",
          f"Networks: the paper's ImageNet-pretrained int8 models (imported), new zero int8 head (10 classes), "
          f"input {st['resolution']}x{st['resolution']} (below the paper's 128, to fit one shared CPU core). "
          f"Fine-tunes: int8 SGD-M (0.9) + QAS, batch 32, {st['epochs']} epochs on {st['train_n']} training "
          f"images, lr from {st['lrs']} chosen on validation images, test accuracy on test images (seeded "
          f"subsets of at most {st['eval_n']} each; digits' splits are smaller and used whole: 269 validation "
          f"images).",
          f"Contribution analysis (cached in bench/results/search_validation_work/): {st['analysis']['epochs']} "
          f"epochs on {st['analysis']['train_subset']} images, validation accuracy on "
          f"{st['analysis']['eval_subset']}, lr {st['analysis']['lr']}, ratios {st['analysis']['ratios']}, "
          f"bias grid {st['analysis_bias_grid']}; weight candidates: the convs the paper's schemes update and the "
          f"last three ({st['candidate_layers']}).",
          f"Search: evolution, population {st['search']['population']} x {st['search']['generations']} "
          f"generations, seed {st['search']['seed']}; budgets: classifier-only minimum + 25 KB, + 75 KB, and "
          f"256 KB of total SRAM (KB = 1024 B), in `mcutrain compile`'s exact figure (arena + trainable "
          f"copies, image streamed). SRAM below is that figure for every scheme; `analytic` is the paper's "
          f"extra-memory model for comparison.", "", EARLIER, "", *noise_paragraph(payload)]
    zs = noise_zs(results)
    tally = {z: {"dominance": [], "in_budget": [], "test": [], "sram": []} for z in zs}
    body = []
    for key, pair in results.items():
        md = body
        md += [f"## {key}", "", f"classifier-only minimum {pair['minimum_bytes'] / KB:.1f} KB; budgets "
               f"{', '.join(f'{b / KB:.1f}' for b in pair['budgets'])} KB; analysis {pair['analysis_runs']} runs in "
               f"{pair['analysis_seconds']:.0f} s", "",
               "| scheme | kind | SRAM (KB) | analytic (KB) | predicted gain (plain sum) | test acc (%) | lr |",
               "|---|---|---|---|---|---|---|"]
        for name, row in sorted(pair["schemes"].items(), key=lambda kv: (kv[1]["sram_bytes"], kv[0])):
            pg = "" if row.get("predicted_gain") is None else f"{row['predicted_gain'] * 100:+.1f}"
            if row.get("objective") is not None:
                pg += f" (shrunk {row['objective'] * 100:+.1f})"
            bold = "**" if row["kind"] == "searched" else ""
            md.append(f"| {bold}{name}{bold} | {_kind(row)} | {row['sram_bytes'] / KB:.1f} | "
                      f"{row['analytic_bytes'] / KB:.1f} | {pg} | {bold}{row['test'] * 100:.1f}{bold} | {row['lr']:g} |")
        md.append("")
        for z in zs:
            for s, beaten in dominated(pair, z).items():
                row = pair["schemes"][s]
                rival = best_within(pair, row["budget"])
                t = tally[z]
                t["dominance"].append(not beaten)
                t["in_budget"].append(row["test"] >= rival[1]["test"])
                t["test"].append(row["test"] - rival[1]["test"])
                t["sram"].append(row["sram_bytes"])
                gain = (f"predicted {row['predicted_gain'] * 100:+.1f}" if row.get("objective") is None else
                        f"shrunk objective {row['objective'] * 100:+.1f}, plain sum {row['predicted_gain'] * 100:+.1f}")
                md.append(f"- {s} (z {z:g}, budget {row['budget'] / KB:.1f} KB, uses {row['sram_bytes'] / KB:.1f} KB, "
                          f"{gain} vs random search {row['random_predicted_gain'] * 100:+.1f}): "
                          + ("at least as accurate as every baseline using the same or more SRAM" if not beaten else
                             "BEATEN by " + ", ".join(f"{b} ({pair['schemes'][b]['test'] * 100:.1f}% at "
                                                       f"{pair['schemes'][b]['sram_bytes'] / KB:.1f} KB)" for b in beaten))
                          + f"; best baseline within the same budget: {rival[0]} {rival[1]['test'] * 100:.1f}% "
                            f"({row['test'] * 100 - rival[1]['test'] * 100:+.1f} points for the searched scheme)")
        md.append("")
    md = header + verdict_lines(tally, st) + body + [f"![{TITLE}]({NAME}.png)"]
    write_results(NAME, payload, "\n".join(md))


def noise_paragraph(payload: dict) -> list[str]:
    """What the noise-aware searches are, and when / how they were run."""
    runs = payload.get("noise_runs")
    if not runs:
        return []
    sizes = _validation_sizes(payload["results"])
    lines = ["Noise-aware objective (`mcutrain search --noise-z Z`, `SearchConfig.noise_z`): each measured delta d "
             "(dAcc_bias[k] or dAcc_W[i, r], one fine-tune each) is soft-thresholded to sign(d) max(0, |d| - Z se) "
             "before summing, se = sqrt(pa(1-pa)/n + pb(1-pb)/n) from the delta's two validation accuracies and the "
             f"analysis' validation-set size n ({', '.join(f'{k}: {v}' for k, v in sizes.items())}); Z = 0 is the "
             "plain sum above. Same cached analyses, budgets and search settings; only the newly searched schemes "
             "were fine-tuned (a scheme identical to one already measured reuses its accuracies, marked `= name`)."]
    for r in runs:
        lines.append(f"Noise-aware run: `{r['command']}`, {r['date']}, {r['machine']} (load {r['load_average_1min']}), "
                     f"{r.get('wall_seconds', 0) / 60:.0f} min.")
    return [" ".join(lines), ""]


def _validation_sizes(results: dict) -> dict:
    out = {}
    for key in results:
        path = WORK / f"contrib-{key.replace('/', '-')}-{TAG}.json"
        if path.exists():
            out[key] = json.loads(path.read_text())["data"]["val_used"]
    return out


def _kind(row: dict) -> str:
    if row["kind"] != "searched":
        return row["kind"]
    return f"searched z={row.get('noise_z', 0.0):g}" + (f" (= {row['reused_from']})" if row.get("reused_from") else "")


def verdict_lines(tally: dict, st: dict) -> list[str]:
    """The issue's criterion per objective, side by side (z = 0: the paper's plain sum)."""
    lines = ["**Verdict (the issue's criterion), per search objective:**", "",
             "| objective | at least as accurate as every baseline with the same or more SRAM | at least as accurate "
             "as the best baseline within the same budget | mean test points vs that baseline | mean SRAM of the "
             "searched schemes (KB) |", "|---|---|---|---|---|"]
    for z, t in tally.items():
        name = "plain sum (z = 0, the paper's)" if z == 0 else f"noise-shrunk, z = {z:g}"
        n = len(t["dominance"])
        lines.append(f"| {name} | {sum(t['dominance'])} of {n} | {sum(t['in_budget'])} of {n} | "
                     f"{sum(t['test']) / n * 100:+.1f} | {sum(t['sram']) / n / KB:.1f} |")
    lines += ["", f"Differences of 1-2 points are within the noise of {st['eval_n']}-image test sets (binomial standard "
              f"error ~2 points per accuracy); the 12 cases share 4 analyses, so the counts are not 12 independent "
              f"trials.", ""] + ([NOISE_READING, ""] if len(tally) > 1 else [])
    return lines


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results)
    cols = 2
    rows_n = -(-len(keys) // cols)
    fig, grid = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 4.0 * rows_n), squeeze=False)
    axes = [list(grid.flat)]
    marks = {"paper": ("o", "tab:blue", 40), "baseline": ("s", "tab:gray", 40)}
    searched_marks = [("*", "tab:red", 140), ("P", "tab:green", 80), ("D", "tab:purple", 50), ("X", "tab:orange", 60)]
    for j, z in enumerate(noise_zs(results)):
        marks[("searched", z)] = searched_marks[j % len(searched_marks)]
    for ax, key in zip(axes[0], keys):
        pair = results[key]
        for kind, (m, color, size) in marks.items():
            rows = [(n, r) for n, r in pair["schemes"].items() if _plot_kind(r) == kind]
            label = kind if isinstance(kind, str) else f"searched, z={kind[1]:g}"
            ax.scatter([r["sram_bytes"] / KB for _, r in rows], [r["test"] * 100 for _, r in rows], marker=m,
                       c=color, s=size, label=label, zorder=3, alpha=0.8)
            for n, r in rows:
                ax.annotate(n.replace("searched-", "s").replace("paper-", "p"), (r["sram_bytes"] / KB, r["test"] * 100),
                            fontsize=6, xytext=(3, 3), textcoords="offset points")
        for b in pair["budgets"]:
            ax.axvline(b / KB, color="tab:red", alpha=0.25, lw=1)
        ax.set_xlim(0, 265)
        ax.set_xlabel("total SRAM (KB, exact compile figure; red lines: budgets)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_kind(row: dict):
    return ("searched", row.get("noise_z", 0.0)) if row["kind"] == "searched" else row["kind"]


if __name__ == "__main__":
    main()
