"""`mcutrain search`: the sparse-update scheme with the best predicted gain under an SRAM / Flash budget."""

from __future__ import annotations

import time
from pathlib import Path

from dataclasses import replace

from mcutrain.cli.cmd_compile import load_model
from mcutrain.models import model_names
from mcutrain.quant.graph_file import GraphModel
from mcutrain.quant.graph_head import new_graph_head
from mcutrain.train import model_kind as mk
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.errors import McutrainError
from mcutrain.quant.head import new_head
from mcutrain.search.budget import kb, parse_bytes
from mcutrain.search.contrib import Contrib, check_analysis_model, load_contrib
from mcutrain.search.cost import SramCost
from mcutrain.search.evolve import SearchConfig, SearchOutcome, plot_progress, search
from mcutrain.sparse import Scheme
from mcutrain.sparse.table import save_table_scheme
from mcutrain.cli import argtypes

DEFAULTS = SearchConfig(sram_budget=1)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help=HELP["search"],
        description="Evolutionary search (and random search with as many evaluations, as a baseline) for the "
                    "sparse-update scheme that maximises the contribution analysis' predicted gain "
                    "(dAcc_bias[k] + sum dAcc_W[i, r], `mcutrain analyze`) while the compiled training step "
                    "fits --budget: total SRAM exactly as `mcutrain compile` reports it (arena + trainable "
                    "copies + engine state, image streamed). Budgets: bytes, or with a unit: KB = KiB = 1024 B, MB = MiB = "
                    "1024 KB (e.g. 200KB, 256KiB, 1MB). Writes the scheme (--out, for --scheme of finetune / "
                    "compile) and a plot of best-so-far vs evaluations for both methods.")
    p.add_argument("model", metavar="MODEL", help="int8 model file, imported graph model file, or zoo name (memory "
                                                  "does not depend on weights)")
    p.add_argument("--contrib", required=True, metavar="CONTRIB_JSON",
                   help="output of `mcutrain analyze` for MODEL: an analysis of another model is refused (a "
                        "zoo name or architecture file is checked by architecture only)")
    p.add_argument("--budget", required=True, help="total SRAM budget, e.g. 200KB (KB = 1024 bytes)")
    p.add_argument("--flash-budget", default=None, help="Flash budget, e.g. 1MB (default: none)")
    p.add_argument("--resolution", type=argtypes.resolution, default=0, help="input side (default: the analysis')")
    p.add_argument("--population", type=int, default=DEFAULTS.population)
    p.add_argument("--generations", type=int, default=DEFAULTS.generations,
                   help="each method evaluates population x generations distinct candidates")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--noise-z", type=float, default=DEFAULTS.noise_z, metavar="Z",
                   help="shrink each measured delta towards 0 by Z binomial standard errors of its validation "
                        f"accuracies before summing, so that noise does not add up to a gain; 0: the plain sum "
                        f"(default {DEFAULTS.noise_z:g}, from docs/results/search_validation.md)")
    p.add_argument("--out", required=True, metavar="SCHEME_JSON")
    p.add_argument("--plot", default=None, help="PNG path (default: OUT with .png)")
    p.add_argument("--name", default=None, help="scheme name (default: searched-<budget>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.population < 2 or args.generations < 1:
        raise McutrainError(f"--population must be >= 2 and --generations >= 1, got {args.population}, "
                            f"{args.generations}")
    t0 = time.perf_counter()
    contrib = load_contrib(args.contrib)
    qmodel = search_model(args.model, args.resolution, contrib, args.contrib)
    cfg = SearchConfig(sram_budget=parse_bytes(args.budget, "--budget"),
                       flash_budget=None if args.flash_budget is None else parse_bytes(args.flash_budget, "--flash-budget"),
                       population=args.population, generations=args.generations, seed=args.seed,
                       noise_z=args.noise_z)
    name = args.name or f"searched-{args.budget}"
    cost = SramCost(qmodel)
    out = search(cost, contrib, cfg, progress=not args.quiet, name=name)
    scheme = _described(out, cfg)
    save_table_scheme(args.out, scheme, cost.table)
    plot = args.plot or str(Path(args.out).with_suffix(".png"))
    label, resolution = mk.label(qmodel, args.model), mk.resolution_of(qmodel)
    plot_progress([out.evolution, out.random], plot,
                  f"{label} @{_side(resolution)}, budget {kb(cfg.sram_budget)} SRAM")
    result = {
        "predicted_gain": out.gain, "noise_z": cfg.noise_z, "unshrunk_predicted_gain": out.unshrunk_gain,
        "peak_sram_bytes": out.exact.total_sram_bytes, "budget_bytes": cfg.sram_budget,
        "flash_bytes": out.exact.flash_bytes, "flash_budget_bytes": cfg.flash_budget,
        "arena_bytes": out.exact.arena_bytes, "trainable_sram_bytes": out.exact.trainable_bytes,
        "minimum_sram_bytes": out.minimum.total_sram_bytes,
        "scheme": cost.table.to_json(scheme), "out": args.out, "plot": plot,
        "model": label, "resolution": resolution,
        "analytic_extra_bytes": mk.analytic_bytes(qmodel, cost.table.resolve(scheme))["total_bytes"],
        "evaluations": out.evolution.evaluations, "random_evaluations": out.random.evaluations,
        "random_predicted_gain": out.random.best.gain, "compiles": cost.compiles,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    emit(args, result, _human)
    return 0


def search_model(model: str, resolution: int, contrib: Contrib, contrib_path: str = "the contribution analysis"):
    """The model the scheme will train: MODEL (a zoo int8 model at ``resolution``, 0: the analysis'; an
    imported graph at its own input), with the analysis' new head if it had one (the head's size is part
    of the memory). An analysis of another model is refused (``check_analysis_model``: by the model's
    content identity, as loaded, before any change)."""
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


def _side(resolution) -> str:
    return "x".join(map(str, resolution)) if isinstance(resolution, list) else str(resolution)


def _is_model_file(model: str) -> bool:
    """What ``cmd_compile.load_model`` reads as an int8 model file (not a zoo name or architecture JSON)."""
    return not ((model in model_names() and not Path(model).exists()) or model.lower().endswith(".json"))


def _described(out: SearchOutcome, cfg: SearchConfig) -> Scheme:
    text = (f"searched (evolution, seed {cfg.seed}, {out.evolution.evaluations} candidates, noise z {cfg.noise_z:g}): "
            f"predicted gain {out.gain * 100:+.2f} points ({out.unshrunk_gain * 100:+.2f} unshrunk); total SRAM {out.exact.total_sram_bytes} bytes "
            f"({kb(out.exact.total_sram_bytes)}) of a {cfg.sram_budget}-byte budget")
    return replace(out.scheme, description=text)


def _human(r: dict) -> str:
    s = r["scheme"]
    weights = ", ".join(f"{w['layer']}@{w['ratio']:g}" for w in s["weights"]) or "none"
    return "\n".join([
        f"{r['model']} @ {_side(r['resolution'])}: budget {r['budget_bytes']} bytes ({kb(r['budget_bytes'])}), "
        f"classifier-only minimum {kb(r['minimum_sram_bytes'])}",
        f"scheme {s['name']}: bias {s['bias']}, weights {weights}",
        f"predicted gain {r['predicted_gain'] * 100:+.2f} points at noise z {r['noise_z']:g} "
        f"({r['unshrunk_predicted_gain'] * 100:+.2f} unshrunk; random search, same "
        f"{r['random_evaluations']} evaluations: {r['random_predicted_gain'] * 100:+.2f})",
        f"total SRAM {r['peak_sram_bytes']} bytes ({kb(r['peak_sram_bytes'])}) = arena {kb(r['arena_bytes'])} + "
        f"trainable {kb(r['trainable_sram_bytes'])}; Flash {kb(r['flash_bytes'])} "
        f"(the paper's analytic extra memory: {kb(r['analytic_extra_bytes'])})",
        f"wrote {r['out']} and {r['plot']} in {r['seconds']:.1f} s ({r['compiles']} training graphs built)",
    ])
