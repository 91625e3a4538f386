"""The verdicts, page, Pareto plot and cost estimate of experiments/search_validation_scale.py.

Apart from the experiment so that ``--replot`` and the page need no models; the criterion itself is
experiments/validation_stats.py.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.common import DOCS, write_results
from experiments.validation_stats import GOAL, correctness, paired_bootstrap, success, success_rate
from mcutrain.search.budget import KB

TITLE = "Search validation at scale: searched schemes against every baseline with as much SRAM"


def judge(pair: dict) -> tuple[list[dict], list[dict]]:
    """(cases of the criterion, each searched scheme against the best baseline within its budget)."""
    schemes = pair["schemes"]
    cases, within = [], []
    for name, row in schemes.items():
        if row["kind"] != "searched":
            continue
        mine = correctness(row["correct"])
        rivals = {b: r for b, r in schemes.items() if r["kind"] != "searched"}
        for b, other in rivals.items():
            if other["sram_bytes"] >= row["sram_bytes"]:
                cases.append(_case(name, row, b, other, mine))
        fits = [(b, r) for b, r in rivals.items() if r["sram_bytes"] <= row["budget"]]
        if fits:
            b, other = max(fits, key=lambda br: (br[1]["test"], -br[1]["sram_bytes"]))
            within.append(_case(name, row, b, other, mine))
    return cases, within


def _case(name: str, row: dict, b: str, other: dict, mine) -> dict:
    c = paired_bootstrap(mine, correctness(other["correct"]))
    return {"searched": name, "method": row["method"], "budget_index": row["budget_index"], "baseline": b,
            "baseline_kind": other["kind"], "searched_sram": row["sram_bytes"], "baseline_sram": other["sram_bytes"],
            "comparison": c.to_json(), "success": success(c)}


def verdicts(payload: dict) -> None:
    """Adds ``cases`` / ``within`` to every pair and drops the per-image strings (kept in the cache)."""
    for pair in payload["results"].values():
        if "cases" not in pair:
            pair["cases"], pair["within"] = judge(pair)
        for row in pair["schemes"].values():
            row.pop("correct", None)


def tally(payload: dict, key: str = "cases") -> dict:
    """{method: (successes, cases, share, better)} over every pair."""
    out: dict = {}
    for pair in payload["results"].values():
        for case in pair[key]:
            out.setdefault(case["method"], []).append(case)
    result = {}
    for method, cases in out.items():
        wins, n, share = success_rate([_Verdict(c) for c in cases])
        result[method] = (wins, n, share, sum(c["comparison"]["verdict"] == "better" for c in cases))
    return result


class _Verdict:
    """A recorded comparison read back as what ``success`` needs."""

    def __init__(self, case: dict):
        self.verdict = case["comparison"]["verdict"]


def publish(name: str, payload: dict) -> None:
    verdicts(payload)
    plot(payload, DOCS / f"{name}.png")
    payload["cost_estimate"] = cost_estimate(payload)
    write_results(name, payload, markdown(name, payload))


def markdown(name: str, payload: dict) -> str:
    st = payload["settings"]
    smoke = payload["scale"] == "smoke"
    md = [f"# {TITLE}" + (" (SMOKE scale: checks the machinery; the numbers mean nothing)" if smoke else ""), "",
          f"Measured {payload['date']} on {payload['machine']} (load {payload['load_average_1min']}), "
          f"{payload['wall_seconds'] / 60:.1f} min. Command: `{payload['command']}`. Protocol, criterion and "
          f"the full command: the docstrings of experiments/search_validation_scale.py and "
          f"experiments/validation_stats.py.", "",
          f"Scale **{payload['scale']}**: networks {st['nets']}, tasks {st['tasks']}, input {st['resolution']}x"
          f"{st['resolution']}, fine-tunes of {st['epochs']} epochs on {st['train_n']} training images (fixed "
          f"subset), rate from {st['lrs']} chosen per scheme on {st['val_n'] or 'all'} validation images "
          f"(mean over seeds), {st['seeds']} seeds, test on "
          f"{'the whole test split' if not st['test_n'] else st['test_n']}"
          f"; search population {st['search']['population']} x {st['search']['generations']} generations.", "",
          "**Criterion:** a case is (network, task, budget, searched scheme, baseline using the same or more exact "
          "SRAM); success = the searched scheme is NOT significantly worse: the 95% paired bootstrap interval "
          "over test images of the seed-averaged accuracy difference does not lie entirely below 0. "
          f"Goal: >= {GOAL:.0%} of cases.", "",
          "| search from | successes | cases | share | goal met | significantly better |", "|---|---|---|---|---|---|"]
    for method, (wins, n, share, better) in tally(payload).items():
        md.append(f"| {method} | {wins} | {n} | {share:.0%} | {'yes' if share >= GOAL else 'NO'} | {better} |")
    md += ["", "Against the most accurate baseline that fits the same budget (any SRAM up to it):", "",
           "| search from | not significantly worse | of | significantly better |", "|---|---|---|---|"]
    for method, (wins, n, _, better) in tally(payload, "within").items():
        md.append(f"| {method} | {wins} | {n} | {better} |")
    md += ["", *listed(payload, "better", "Cases where the searched scheme is significantly better"),
           *listed(payload, "worse", "Cases where it is significantly worse (the failures)"),
           *cost_lines(payload["cost_estimate"]), ""]
    for key, pair in payload["results"].items():
        md += _pair_section(key, pair)
    md.append(f"![{TITLE}]({name}.png)")
    return "\n".join(md)


def listed(payload: dict, verdict: str, title: str) -> list[str]:
    """One line per case with ``verdict``, every pair together."""
    lines = [f"**{title}:**", ""]
    for key, pair in payload["results"].items():
        for c in pair["cases"]:
            v = c["comparison"]
            if v["verdict"] == verdict:
                lines.append(f"- {key}, budget {pair['budgets'][c['budget_index']] / KB:.1f} KB: {c['searched']} vs "
                              f"{c['baseline']} {v['difference'] * 100:+.1f} points [{v['low'] * 100:+.1f}, "
                              f"{v['high'] * 100:+.1f}]")
    return lines + (["- none"] if len(lines) == 2 else []) + [""]


def _pair_section(key: str, pair: dict) -> list[str]:
    md = [f"## {key}", "", f"classifier-only minimum {pair['minimum_bytes'] / KB:.1f} KB; budgets "
          f"{', '.join(f'{b / KB:.1f}' for b in pair['budgets'])} KB; images train / val / test "
          f"{pair['sizes']['train']} / {pair['sizes']['val']} / {pair['sizes']['test']}", "",
          "| scheme | kind | SRAM (KB) | lr | val (%) | test, mean of seeds (%) | test per seed (%) |",
          "|---|---|---|---|---|---|---|"]
    for n, r in sorted(pair["schemes"].items(), key=lambda kv: (kv[1]["sram_bytes"], kv[0])):
        b = "**" if r["kind"] == "searched" else ""
        md.append(f"| {b}{n}{b} | {r['kind']} | {r['sram_bytes'] / KB:.1f} | {r['lr']} | {r['val'] * 100:.1f} | "
                  f"{b}{r['test'] * 100:.1f}{b} | {' / '.join(f'{t * 100:.1f}' for t in r['test_by_seed'])} |")
    md += ["", "| searched | baseline (SRAM KB) | difference, points [95% interval] | per seed | verdict |",
           "|---|---|---|---|---|"]
    for c in pair["cases"]:
        v = c["comparison"]
        md.append(f"| {c['searched']} ({c['searched_sram'] / KB:.1f}) | "
                  f"{c['baseline']} ({c['baseline_sram'] / KB:.1f}) "
                  f"| {v['difference'] * 100:+.1f} [{v['low'] * 100:+.1f}, {v['high'] * 100:+.1f}] | "
                  f"{' / '.join(f'{d * 100:+.1f}' for d in v['per_seed'])} | {v['verdict']} |")
    return md + [""]


# ---------------------------------------------------------------------------------------------- cost


def _work_units(st: dict, test_images: float, val_images: float) -> float:
    """Relative cost of one fine-tune: a training image-epoch as 3 forward passes (forward, backward,
    update), each validation / test image as one, times the pixels."""
    return st["resolution"] ** 2 * (3 * st["train_n"] * st["epochs"] + val_images + test_images)


def cost_estimate(payload: dict) -> dict:
    """The full scale's fine-tunes and CPU hours from this run's CPU seconds per fine-tune (a rough
    scaling by pixels and images: the order of magnitude, not a forecast)."""
    from experiments.search_validation_scale import SCALES

    st, full = payload["settings"], SCALES["full"]
    cpu = [w for p in payload["results"].values() for w in p.get("finetune_cpu_seconds", [])]
    if not cpu:
        return {}
    per = sum(cpu) / len(cpu)
    pair = next(iter(payload["results"].values()))
    here = _work_units(st, pair["sizes"]["test"], pair["sizes"]["val"])
    # full: the test splits of fashion-mnist / mnist-5k / digits (10,000 / 750 / 269), validation <= 1,000
    there = _work_units(full, (10000 + 750 + 269) / 3, (1000 + 750 + 269) / 3)
    schemes = 7 + 3 + 2 * len(full["budgets"]) * 2  # built-ins, last-k per budget, searched + random per method
    n = len(full["nets"]) * len(full["tasks"]) * schemes * len(full["lrs"]) * full["seeds"]
    fa = full["finetune_analysis"]
    analysis_runs = len(full["nets"]) * len(full["tasks"]) * 30 * fa["seeds"]  # ~30 runs per analysis
    analysis_units = _work_units({**full, "epochs": fa["epochs"], "train_n": fa["train_subset"]}, 0, fa["eval_subset"])
    seconds = per * (n * there + analysis_runs * analysis_units) / here
    return {"seconds_per_finetune_here": round(per, 2), "finetunes_full": n, "analysis_runs_full": analysis_runs,
            "scaling": round(there / here, 1), "cpu_hours_full": round(seconds / 3600, 1)}


def cost_lines(est: dict) -> list[str]:
    if not est:
        return []
    return ["## Cost of the full scale", "",
            f"Measured here: {est['seconds_per_finetune_here']} CPU seconds per fine-tune (one thread, mean). "
            f"The full scale runs "
            f"about {est['finetunes_full']} fine-tunes (schemes x rates x seeds) and {est['analysis_runs_full']} "
            f"fine-tune-analysis runs, each about {est['scaling']}x this run's work (pixels x images, a training "
            f"image-epoch counted as 3 passes): **about {est['cpu_hours_full']:.0f} CPU hours** (one core each; the "
            f"order of magnitude). On a Ray cluster (`--ray HOST:PORT`) it divides by the cores; resumable."]


# ---------------------------------------------------------------------------------------------- plot


MARKS = {"paper": ("o", "tab:blue", 40), "baseline": ("s", "tab:gray", 40), "random": ("v", "tab:orange", 45)}
SEARCHED = {"fast": ("*", "tab:red", 170), "ft": ("P", "tab:green", 90)}


def plot(payload: dict, path: Path) -> None:
    """Test accuracy (mean of seeds, bars: the seeds' range) against exact SRAM, one panel per pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mcutrain.io.figure import save_figure

    keys = list(payload["results"])
    cols = min(3, len(keys))
    rows_n = math.ceil(len(keys) / cols)
    fig, grid = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 4.0 * rows_n), squeeze=False)
    for ax, key in zip(grid.flat, keys):
        pair = payload["results"][key]
        for label, (m, color, size), pick in _series(pair):
            xs = [r["sram_bytes"] / KB for _, r in pick]
            ys = [r["test"] * 100 for _, r in pick]
            err = [[(r["test"] - min(r["test_by_seed"])) * 100 for _, r in pick],
                   [(max(r["test_by_seed"]) - r["test"]) * 100 for _, r in pick]]
            ax.errorbar(xs, ys, yerr=err, fmt="none", ecolor=color, alpha=0.5, zorder=2)
            ax.scatter(xs, ys, marker=m, c=color, s=size, label=label, zorder=3, alpha=0.85)
            for n, r in pick:
                ax.annotate(n.replace("searched-", "s-").replace("paper-", "p"),
                            (r["sram_bytes"] / KB, r["test"] * 100),
                            fontsize=6, xytext=(3, 3), textcoords="offset points")
        front = _front(pair)
        ax.step([x for x, _ in front], [y for _, y in front], where="post", color="k", lw=0.8, ls="--", alpha=0.6,
                label="baselines' Pareto front", zorder=1)
        for b in pair["budgets"]:
            ax.axvline(b / KB, color="tab:red", alpha=0.25, lw=1)
        ax.set_xlabel("total SRAM (KB, exact compile figure; red lines: budgets)")
        ax.set_ylabel("test accuracy (%, mean of seeds; bars: range)")
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
    grid.flat[0].legend(fontsize=7)
    for ax in list(grid.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, str(path), dpi=110)
    plt.close(fig)


def _front(pair: dict) -> list[tuple[float, float]]:
    """(SRAM KB, accuracy %) of the baselines no other baseline beats with as little SRAM."""
    best, out = -1.0, []
    for r in sorted((r for r in pair["schemes"].values() if r["kind"] != "searched"), key=lambda r: r["sram_bytes"]):
        if r["test"] > best:
            best = r["test"]
            out.append((r["sram_bytes"] / KB, best * 100))
    if out:
        out.append((max(r["sram_bytes"] for r in pair["schemes"].values()) / KB, best * 100))
    return out


def _series(pair: dict) -> list:
    out = []
    items = list(pair["schemes"].items())
    for kind, mark in MARKS.items():
        out.append((kind, mark, [(n, r) for n, r in items if r["kind"] == kind]))
    for method, mark in SEARCHED.items():
        pick = [(n, r) for n, r in items if r["kind"] == "searched" and r["method"] == method]
        if pick:
            out.append((f"searched ({method})", mark, pick))
    return out
