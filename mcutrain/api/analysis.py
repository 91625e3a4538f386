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
    warnings: tuple[str, ...] = ()
    """What the analysis warned about (also printed on stderr when it ran)."""

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


METHODS = ("finetune", "fast", "both")
"""``analyze``'s methods: short fine-tunes, the gradient estimate (``search.fast``), or both compared."""


def analyze(model: PathLike, data: str, out: PathLike, *, method: str = "finetune", epochs: int | None = None,
            train_subset: int | None = None, eval_subset: int | None = None, layers: str | None = None,
            ratios: str | None = None, bias_grid: str | None = None, workers: int = 1, seed: int = 0,
            lr: float | str = "auto", momentum: float = 0.9, batch_size: int = 32, optimizer: str = "sgd",
            qas: bool = True, update_rule: str = "sr", resolution: int = 0, seeds: int = 1, head_epochs: int = 20,
            ray: str | None = None,
            quiet: bool = False) -> Analysis:
    """The contribution of each candidate update of ``model`` on ``data``, written to the contrib.json
    ``out`` (what `search_scheme` reads).

    ``method`` "finetune": short int8 fine-tunes (classifier only, the biases of the last k convs, each
    candidate conv's weights at ratios 1/8..1), accuracy on the validation split; finished runs are
    cached beside ``out`` (a rerun resumes). "fast": a gradient estimate in about a minute, in the same
    format. "both": the fine-tunes to ``out``, the estimate to ``out`` with ``.fast.json``, and their rank
    correlation. ``epochs``, ``train_subset``, ``eval_subset``: None takes the method's own default
    (fine-tune 2 / 1000 / 1000; fast 8 / 256 / 256). ``layers``, ``ratios``, ``bias_grid``: the CLI's
    selections (e.g. ``"last:6"``, ``"1/8,1/4"``, ``"1..6,9"``). ``ray``: run the fine-tunes as Ray tasks,
    ``"auto"`` on a local Ray instance (``workers`` CPUs when > 1, else all) or ``"HOST:PORT"`` on a running
    cluster (docs/cluster.md); the results are the same as without it. Warnings (runs that failed to learn, a
    calibration that lost accuracy) are printed on stderr and kept in `Analysis.warnings`; when every
    fine-tune failed, ``TrainingFailed`` (its ``result`` is the summary) after the document is written.
    ``seeds`` (fine-tune only): every run repeated with that many seeds, the document records the
    per-seed accuracies and, from 2, each delta's standard error (the search's ``noise_z`` then uses it).
    ``head_epochs`` (fine-tune only): every run starts from a head trained alone that long (0: from a
    zero head, the analyses before issue 14; ``search.contrib_seeds``)."""
    from mcutrain.errors import McutrainError

    if method not in METHODS:
        raise McutrainError(f"method {method!r}: use one of {', '.join(METHODS)}")
    common = dict(model=path_of(model), data=data, batch_size=batch_size, lr=lr, momentum=momentum,
                  optimizer=optimizer, qas=qas, update_rule=update_rule, seed=seed, resolution=resolution,
                  layers=layers, ratios=ratios, bias_grid=bias_grid)
    sizes = {k: v for k, v in dict(epochs=epochs, train_subset=train_subset, eval_subset=eval_subset).items()
             if v is not None}
    if method == "fast":
        if ray is not None:
            raise McutrainError("--ray runs fine-tunes; --method fast runs none (use finetune or both)")
        return _fast_analysis(common, sizes, path_of(out), quiet)
    repeats = dict(workers=workers, seeds=seeds, head_epochs=head_epochs)
    result = _finetune_analysis(common, sizes, path_of(out), repeats, ray, quiet)
    if method == "both":
        note = _compare_with_fast(common, sizes, result, quiet)
        result = replace(result, warnings=result.warnings + (note,))
    return result


def _finetune_analysis(common: dict[str, Any], sizes: dict[str, int], out: str, repeats: dict[str, int],
                       ray: str | None, quiet: bool) -> Analysis:
    from mcutrain.errors import TrainingFailed
    from mcutrain.search.contrib import AnalysisConfig, runs_path, summary
    from mcutrain.search.contrib import analyze as run_analysis

    if ray is not None:  # a bad or unreachable address fails now, not after loading and --lr auto
        from mcutrain.search.ray_backend import check_reachable

        check_reachable(ray)
    cfg = AnalysisConfig(out=out, ray=ray, **repeats, **common, **sizes)
    doc = run_analysis(cfg, progress=not quiet)
    payload = {"out": out, "runs_cache": str(runs_path(out)), **summary(doc)}
    failed = payload["failed_runs"]
    settings = doc.get("settings", {})  # the rate the runs used: --lr auto's choice where it chose
    rate = (f"--lr auto chose {settings['lr']:.3g}: try a number" if "lr_auto" in settings
            else f"now {settings.get('lr', cfg.lr):g}")
    warnings: tuple[str, ...] = ()
    if failed:
        first = next(iter(payload["failed"].items()), None)
        example = f"; {first[0]}: {first[1]}" if first else ""
        warnings = (f"{failed} of {payload['runs']} run(s) failed to learn ({', '.join(payload['unstable'][:5])}"
                    f"{', ...' if failed > 5 else ''}{example}): their contributions measure a broken run; check "
                    f"--lr ({rate})",)
        _warn(warnings[0])
    head = doc.get("head") or {}
    if head.get("failed"):
        warnings += (f"the classifier trained alone ({head['epochs']} epochs) failed to learn, so every run started "
                     f"from the model's own head: {head['failed']}",)
        _warn(warnings[-1])
    if failed and failed == payload["runs"]:
        raise TrainingFailed(f"every one of the {failed} runs failed to learn, so the contributions in {out} are "
                             f"noise: try another --lr ({rate}), with another --out", result=payload)
    return Analysis(payload, doc, warnings)


def _fast_analysis(common: dict[str, Any], sizes: dict[str, int], out: str, quiet: bool) -> Analysis:
    from mcutrain.search.contrib import summary
    from mcutrain.search.fast import FastConfig, estimate

    doc = estimate(FastConfig(out=out, **common, **sizes), progress=not quiet)
    warning = doc["settings"]["calibration"].get("warning")
    if warning:
        _warn(warning)
    payload = {"out": out, "method": "fast", **summary(doc), "estimate_seconds": doc["settings"]["seconds"]}
    return Analysis(payload, doc, (warning,) if warning else ())


def _compare_with_fast(common: dict[str, Any], sizes: dict[str, int], finetuned: Analysis, quiet: bool) -> str:
    """The fast estimate beside the fine-tunes (at the rate they used), with its rank correlation."""
    import json

    from mcutrain.io.atomic import atomic_write_text
    from mcutrain.search.fast import FastConfig, estimate
    from mcutrain.search.fast_compare import fast_path, rank_agreement

    path = fast_path(str(finetuned.payload["out"]))
    cfg = FastConfig(out=path, **{**common, "lr": finetuned.document["settings"]["lr"]}, **sizes)
    doc = estimate(cfg, progress=not quiet, write=False)
    doc["settings"]["compared_with"] = {"path": finetuned.payload["out"], **rank_agreement(doc, finetuned.document)}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    c = doc["settings"]["compared_with"]
    note = (f"fast estimate in {path} ({doc['wall_seconds']:.1f} s); Spearman rank correlation with the "
            f"fine-tunes: weights {_signed(c['weight'])}, bias depths {_signed(c['bias'])}, all {_signed(c['all'])}")
    _warn(note, "note")
    return note


def _signed(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f}"


def _warn(text: str, kind: str = "warning") -> None:
    import sys

    print(f"mcutrain analyze: {kind}: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True, eq=False)
class SearchResult(Result):
    """The scheme found, its predicted gain, its exact compiled SRAM and Flash, the files written."""

    def text(self) -> str:
        from mcutrain.search.budget import kb

        r = dict(self.payload)
        s = r["scheme"]
        weights = ", ".join(f"{w['layer']}@{w['ratio']:g}" for w in s["weights"]) or "none"
        return "\n".join([
            f"{r['model']} @ {_side(r['resolution'])}: budget {r['budget_bytes']} bytes "
            f"({kb(r['budget_bytes'])}), classifier-only minimum {kb(r['minimum_sram_bytes'])}",
            f"scheme {s['name']}: bias {s['bias']}, weights {weights}",
            f"predicted gain {r['predicted_gain'] * 100:+.2f} points at noise z {r['noise_z']:g} "
            f"({r['unshrunk_predicted_gain'] * 100:+.2f} unshrunk; random search, same "
            f"{r['random_evaluations']} evaluations: {r['random_predicted_gain'] * 100:+.2f})",
            f"standard errors: {r['noise_se']}",
            f"total SRAM {r['peak_sram_bytes']} bytes ({kb(r['peak_sram_bytes'])}) = arena {kb(r['arena_bytes'])} + "
            f"trainable {kb(r['trainable_sram_bytes'])}; Flash {kb(r['flash_bytes'])} "
            f"(the paper's analytic extra memory: {kb(r['analytic_extra_bytes'])})",
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
    of ``model`` (a zoo int8 model file, an imported graph model file, or a zoo name: memory does not
    depend on weights) that maximises ``contrib``'s predicted gain while its compiled training step fits
    ``budget`` (e.g. ``"200KB"``, 1 KB = 1024 bytes) and ``flash_budget``; writes the scheme ``out`` and a
    plot of best-so-far against evaluations (``plot``, default: ``out`` with ``.png``)."""
    from mcutrain.errors import McutrainError
    from mcutrain.search.budget import kb, parse_bytes
    from mcutrain.search.contrib import load_contrib
    from mcutrain.search.cost import SramCost
    from mcutrain.search.evolve import SearchConfig, plot_progress
    from mcutrain.search.evolve import search as run_search
    from mcutrain.sparse.table import save_table_scheme
    from mcutrain.train import model_kind as mk

    if population < 2 or generations < 1:
        raise McutrainError(f"--population must be >= 2 and --generations >= 1, got {population}, {generations}")
    t0 = time.perf_counter()
    contrib_path, target, model_path = path_of(contrib), path_of(out), path_of(model)
    analysis = load_contrib(contrib_path)
    qmodel = search_model(model_path, resolution, analysis, contrib_path)
    cfg = SearchConfig(sram_budget=parse_bytes(budget, "--budget"),
                       flash_budget=None if flash_budget is None else parse_bytes(flash_budget, "--flash-budget"),
                       population=population, generations=generations, seed=seed, noise_z=noise_z)
    cost = SramCost(qmodel)
    found = run_search(cost, analysis, cfg, progress=not quiet, name=name or f"searched-{budget}")
    scheme = replace(found.scheme, description=_description(found, cfg))
    save_table_scheme(target, scheme, cost.table)
    picture = path_of(plot) if plot is not None else str(Path(target).with_suffix(".png"))
    label, side = mk.label(qmodel, model_path), mk.resolution_of(qmodel)
    plot_progress([found.evolution, found.random], picture,
                  f"{label} @{_side(side)}, budget {kb(cfg.sram_budget)} SRAM")
    return SearchResult({
        "predicted_gain": found.gain, "noise_z": cfg.noise_z, "unshrunk_predicted_gain": found.unshrunk_gain,
        "noise_se": found.noise,
        "peak_sram_bytes": found.exact.total_sram_bytes, "budget_bytes": cfg.sram_budget,
        "flash_bytes": found.exact.flash_bytes, "flash_budget_bytes": cfg.flash_budget,
        "arena_bytes": found.exact.arena_bytes, "trainable_sram_bytes": found.exact.trainable_bytes,
        "minimum_sram_bytes": found.minimum.total_sram_bytes,
        "scheme": cost.table.to_json(scheme), "out": target, "plot": picture, "model": label, "resolution": side,
        "analytic_extra_bytes": mk.analytic_bytes(qmodel, cost.table.resolve(scheme))["total_bytes"],
        "evaluations": found.evolution.evaluations, "random_evaluations": found.random.evaluations,
        "random_predicted_gain": found.random.best.gain, "compiles": cost.compiles,
        "seconds": round(time.perf_counter() - t0, 2),
    })


def search_model(model: str, resolution: int, contrib: Any, contrib_path: str = "the contribution analysis") -> Any:
    """The model the scheme will train: ``model`` (a zoo int8 model at ``resolution``, 0: the analysis';
    an imported graph at its own input), with the analysis' new head if it had one (the head's size is
    part of the memory). An analysis of another model is refused (``check_analysis_model``: by the
    model's content identity, as loaded, before any change)."""
    from mcutrain.api.compiling import load_model
    from mcutrain.quant.graph_file import GraphModel
    from mcutrain.quant.graph_head import new_graph_head
    from mcutrain.quant.head import new_head
    from mcutrain.search.contrib import check_analysis_model
    from mcutrain.train import model_kind as mk

    analysed = contrib.doc["model"].get("resolution")
    if _is_model_file(model):
        qmodel = mk.load_trainable(model)
        check_analysis_model(contrib, qmodel, model, source=contrib_path)
        if mk.is_graph(qmodel):
            mk.input_size(qmodel, resolution)  # a graph's input is its own: another --resolution is refused
        else:
            side = resolution or (analysed if isinstance(analysed, int) else 0)
            qmodel = replace(qmodel, resolution=side) if side else qmodel
    else:  # random weights: the architecture is all that the memory depends on
        qmodel = load_model(model, resolution or (analysed if isinstance(analysed, int) else 0))
        check_analysis_model(contrib, qmodel, model, weights=False, source=contrib_path)
    data = contrib.doc.get("data", {})
    classes = len(mk.classes_of(qmodel))
    if data.get("new_head") or int(data.get("num_classes", classes)) != classes:
        fresh = tuple(str(c) for c in range(int(data["num_classes"])))
        qmodel = (GraphModel(new_graph_head(qmodel.graph, fresh), fresh) if mk.is_graph(qmodel)
                  else new_head(qmodel, list(fresh)))
    return qmodel


def _is_model_file(model: str) -> bool:
    """What ``load_model`` reads as an int8 model file (not a zoo name or architecture JSON)."""
    from mcutrain.models import model_names

    return not ((model in model_names() and not Path(model).exists()) or model.lower().endswith(".json"))


def _side(resolution: Any) -> str:
    return "x".join(map(str, resolution)) if isinstance(resolution, (list, tuple)) else str(resolution)


def _description(out: Any, cfg: Any) -> str:
    from mcutrain.search.budget import kb

    return (f"searched (evolution, seed {cfg.seed}, {out.evolution.evaluations} candidates, noise z "
            f"{cfg.noise_z:g}): predicted gain {out.gain * 100:+.2f} points ({out.unshrunk_gain * 100:+.2f} "
            f"unshrunk); total SRAM {out.exact.total_sram_bytes} bytes ({kb(out.exact.total_sram_bytes)}) of a "
            f"{cfg.sram_budget}-byte budget")
