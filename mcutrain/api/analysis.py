"""The contribution analysis and the scheme search (``mcutrain analyze``, ``mcutrain search``).

``analyze`` measures, by short fine-tunes, what each bias depth and each candidate weight update adds
to validation accuracy; ``search_scheme`` finds the scheme with the best predicted gain whose compiled
training step fits an SRAM (and Flash) budget. An `Analysis` prints the contribution per candidate.

These wrap ``mcutrain.search`` (``contrib.analyze``, ``evolve.search``); their CLI commands still
declare their own flags (``tests/api/test_cli_defaults.py`` checks those defaults equal these).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mcutrain.api.arguments import PathLike, path_of
from mcutrain.api.results import Result

__all__ = ["Analysis", "SearchResult", "analyze", "load_analysis", "search_scheme"]


@dataclass(frozen=True, eq=False)
class Analysis(Result):
    """A contribution analysis: ``payload`` is ``mcutrain analyze --json``'s summary, ``document`` the
    whole contrib.json (what `search_scheme` reads). ``str`` is the contribution of every candidate."""

    document: Any = field(default=None, repr=False)

    @property
    def baseline(self) -> float:
        """Validation accuracy of training the classifier only."""
        return float(self.payload["baseline"])

    def bias_gains(self) -> dict[int, float]:
        """{k: accuracy gained by also training the biases of the last k convs}."""
        return {int(k): float(v) for k, v in self.document["bias"].items()}

    def weight_gains(self) -> dict[tuple[int, float], float]:
        """{(conv index, ratio): accuracy gained by updating that share of the conv's weights}."""
        return {(int(i), float(r)): float(d) for i, row in self.document["weight"].items() for r, d in row.items()}

    def text(self) -> str:
        from mcutrain.cli.output import table

        names = self.document["model"]["conv_names"]
        bias = table([[k, round(d * 100, 2)] for k, d in sorted(self.bias_gains().items())],
                     ["last k convs", "dAcc bias (points)"])
        ratios = sorted({r for _, r in self.weight_gains()})
        rows = [[int(i), names[int(i)]] + [_points(row.get(_key(r))) for r in ratios]
                for i, row in sorted(self.document["weight"].items(), key=lambda kv: int(kv[0]))]
        weights = table(rows, ["layer", "name"] + [f"dAcc W @{r:g}" for r in ratios])
        head = (f"{self.payload['model']} on {self.payload['data']}: baseline (classifier only) val accuracy "
                f"{self.baseline * 100:.2f}%; contribution of each candidate, in accuracy points")
        return "\n".join([head, bias, "", weights])


def _key(ratio: float) -> str:
    return repr(float(ratio))


def _points(value: Any) -> Any:
    return "-" if value is None else round(float(value) * 100, 2)


def load_analysis(path: PathLike) -> Analysis:
    """Read a contrib.json (``mcutrain analyze``'s output, checked field by field) as an `Analysis`."""
    from mcutrain.search.contrib import load_contrib, summary

    where = path_of(path)
    doc = load_contrib(where).doc
    return Analysis({"out": where, **summary(doc)}, doc)


def analyze(model: PathLike, data: str, out: PathLike, *, epochs: int = 2, train_subset: int = 1000,
            eval_subset: int = 1000, layers: str | None = None, ratios: str | None = None,
            bias_grid: str | None = None, workers: int = 1, seed: int = 0, lr: float | str = "auto",
            momentum: float = 0.9, batch_size: int = 32, optimizer: str = "sgd", qas: bool = True,
            update_rule: str = "sr", resolution: int = 0, quiet: bool = False) -> Analysis:
    """Short int8 fine-tunes of ``model`` on ``data`` (classifier only, the biases of the last k convs,
    each candidate conv's weights at ratios 1/8..1), accuracy on the validation split; writes the
    contrib.json ``out`` (finished runs are cached beside it: a rerun resumes). ``layers``, ``ratios``,
    ``bias_grid``: the CLI's selections (e.g. ``"last:6"``, ``"1/8,1/4"``, ``"1..6,9"``)."""
    from mcutrain.search.contrib import AnalysisConfig, runs_path, summary
    from mcutrain.search.contrib import analyze as run_analysis

    target = path_of(out)
    cfg = AnalysisConfig(model=path_of(model), data=data, out=target, epochs=epochs, train_subset=train_subset,
                         eval_subset=eval_subset, batch_size=batch_size, lr=lr, momentum=momentum,
                         optimizer=optimizer, qas=qas, update_rule=update_rule, seed=seed, resolution=resolution,
                         layers=layers, ratios=ratios, bias_grid=bias_grid, workers=workers)
    doc = run_analysis(cfg, progress=not quiet)
    return Analysis({"out": target, "runs_cache": str(runs_path(target)), **summary(doc)}, doc)


@dataclass(frozen=True, eq=False)
class SearchResult(Result):
    """The scheme found, its predicted gain, its exact compiled SRAM and Flash, the files written."""

    def text(self) -> str:
        from mcutrain.search.budget import kb

        r = dict(self.payload)
        s = r["scheme"]
        weights = ", ".join(f"{w['layer']}@{w['ratio']:g}" for w in s["weights"]) or "none"
        return "\n".join([
            f"{r['model']} @ {r['resolution']}: budget {r['budget_bytes']} bytes ({kb(r['budget_bytes'])}), "
            f"classifier-only minimum {kb(r['minimum_sram_bytes'])}",
            f"scheme {s['name']}: bias {s['bias']}, weights {weights}",
            f"predicted gain {r['predicted_gain'] * 100:+.2f} points at noise z {r['noise_z']:g} "
            f"({r['unshrunk_predicted_gain'] * 100:+.2f} unshrunk; random search, same "
            f"{r['random_evaluations']} evaluations: {r['random_predicted_gain'] * 100:+.2f})",
            f"total SRAM {r['peak_sram_bytes']} bytes ({kb(r['peak_sram_bytes'])}) = arena {kb(r['arena_bytes'])} + "
            f"trainable {kb(r['trainable_sram_bytes'])}; Flash {kb(r['flash_bytes'])}",
            f"wrote {r['out']} and {r['plot']} in {r['seconds']:.1f} s ({r['compiles']} training graphs built)",
        ])

    @property
    def out(self) -> str:
        """The scheme .json file written (a ``scheme`` for `mcutrain.finetune` and `mcutrain.compile`)."""
        return str(self.payload["out"])

    @property
    def predicted_gain(self) -> float:
        """The analysis' predicted accuracy gain of the scheme over classifier-only training."""
        return float(self.payload["predicted_gain"])

    @property
    def peak_sram_bytes(self) -> int:
        """The scheme's total SRAM as `mcutrain.compile` reports it."""
        return int(self.payload["peak_sram_bytes"])


def search_scheme(model: PathLike, contrib: PathLike, budget: str, out: PathLike, *,
                  flash_budget: str | None = None,
                  resolution: int = 0, population: int = 40, generations: int = 25, seed: int = 0,
                  noise_z: float = 0.0, plot: PathLike | None = None, name: str | None = None,
                  quiet: bool = False) -> SearchResult:
    """Evolutionary search (and random search with as many evaluations, as a baseline) for the scheme
    of ``model`` that maximises ``contrib``'s predicted gain while its compiled training step fits
    ``budget`` (e.g. ``"200KB"``, 1 KB = 1024 bytes) and ``flash_budget``; writes the scheme ``out`` and a
    plot of best-so-far against evaluations (``plot``, default: ``out`` with ``.png``)."""
    from mcutrain.cli.cmd_search import search_model
    from mcutrain.errors import McutrainError
    from mcutrain.search.budget import kb, parse_bytes
    from mcutrain.search.contrib import load_contrib
    from mcutrain.search.cost import SramCost
    from mcutrain.search.evolve import SearchConfig, plot_progress
    from mcutrain.search.evolve import search as run_search
    from mcutrain.sparse import save_scheme, scheme_to_json

    if population < 2 or generations < 1:
        raise McutrainError(f"--population must be >= 2 and --generations >= 1, got {population}, {generations}")
    t0 = time.perf_counter()
    contrib_path, target = path_of(contrib), path_of(out)
    analysis = load_contrib(contrib_path)
    qmodel = search_model(path_of(model), resolution or int(analysis.doc["model"]["resolution"]), analysis,
                          contrib_path)
    cfg = SearchConfig(sram_budget=parse_bytes(budget, "--budget"),
                       flash_budget=None if flash_budget is None else parse_bytes(flash_budget, "--flash-budget"),
                       population=population, generations=generations, seed=seed, noise_z=noise_z)
    cost = SramCost(qmodel)
    found = run_search(cost, analysis, cfg, progress=not quiet, name=name or f"searched-{budget}")
    scheme = replace(found.scheme, description=_description(found, cfg))
    save_scheme(target, scheme)
    picture = path_of(plot) if plot is not None else str(Path(target).with_suffix(".png"))
    plot_progress([found.evolution, found.random], picture,
                  f"{qmodel.spec.name} @{qmodel.resolution}, budget {kb(cfg.sram_budget)} SRAM")
    return SearchResult({
        "predicted_gain": found.gain, "noise_z": cfg.noise_z, "unshrunk_predicted_gain": found.unshrunk_gain,
        "peak_sram_bytes": found.exact.total_sram_bytes, "budget_bytes": cfg.sram_budget,
        "flash_bytes": found.exact.flash_bytes, "flash_budget_bytes": cfg.flash_budget,
        "arena_bytes": found.exact.arena_bytes, "trainable_sram_bytes": found.exact.trainable_bytes,
        "minimum_sram_bytes": found.minimum.total_sram_bytes,
        "scheme": scheme_to_json(scheme), "out": target, "plot": picture,
        "model": qmodel.spec.name, "resolution": qmodel.resolution,
        "evaluations": found.evolution.evaluations, "random_evaluations": found.random.evaluations,
        "random_predicted_gain": found.random.best.gain, "compiles": cost.compiles,
        "seconds": round(time.perf_counter() - t0, 2),
    })


def _description(out: Any, cfg: Any) -> str:
    from mcutrain.search.budget import kb

    return (f"searched (evolution, seed {cfg.seed}, {out.evolution.evaluations} candidates, noise z "
            f"{cfg.noise_z:g}): predicted gain {out.gain * 100:+.2f} points ({out.unshrunk_gain * 100:+.2f} "
            f"unshrunk); total SRAM {out.exact.total_sram_bytes} bytes ({kb(out.exact.total_sram_bytes)}) of a "
            f"{cfg.sram_budget}-byte budget")
