"""`mcutrain search`: the sparse-update scheme with the best predicted gain under an SRAM / Flash budget.

The work is ``mcutrain.api.search_scheme``; this declares its flags (defaults from its signature)."""

from __future__ import annotations

from mcutrain.api.analysis import search_scheme
from mcutrain.api.defaults import defaults
from mcutrain.cli import argtypes
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit


def register(subparsers) -> None:
    d = defaults(search_scheme)
    p = subparsers.add_parser(
        "search", help=HELP["search"],
        description="Evolutionary search (and random search with as many evaluations, as a baseline) for the "
                    "sparse-update scheme that maximises the contribution analysis' predicted gain "
                    "(dAcc_bias[k] + sum dAcc_W[i, r], `mcutrain analyze`) while the compiled training step "
                    "fits --budget: total SRAM exactly as `mcutrain compile` reports it (arena + trainable "
                    "copies + engine state, image streamed). Budgets: bytes, or with a unit: KB = KiB = 1024 B, "
                    "MB = MiB = 1024 KB (e.g. 200KB, 256KiB, 1MB). Writes the scheme (--out, for --scheme of "
                    "finetune / compile) and a plot of best-so-far vs evaluations for both methods.")
    p.add_argument("model", metavar="MODEL", help="int8 model file, imported graph model file, or zoo name (memory "
                                                  "does not depend on weights)")
    p.add_argument("--contrib", required=True, metavar="CONTRIB_JSON",
                   help="output of `mcutrain analyze` for MODEL: an analysis of another model is refused (a "
                        "zoo name or architecture file is checked by architecture only)")
    p.add_argument("--budget", required=True, help="total SRAM budget, e.g. 200KB (KB = 1024 bytes)")
    p.add_argument("--flash-budget", default=d["flash_budget"], help="Flash budget, e.g. 1MB (default: none)")
    p.add_argument("--resolution", type=argtypes.resolution, default=d["resolution"],
                   help="input side (default: the analysis')")
    p.add_argument("--population", type=int, default=d["population"])
    p.add_argument("--generations", type=int, default=d["generations"],
                   help="each method evaluates population x generations distinct candidates")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--noise-z", type=float, default=d["noise_z"], metavar="Z",
                   help="shrink each measured delta towards 0 by Z standard errors before summing (its spread over "
                        "the analysis' seeds where it ran --seeds >= 2, else binomial errors of its validation "
                        f"accuracies), so that noise does not add up to a gain; 0: the plain sum "
                        f"(default {d['noise_z']:g}, from docs/results/search_validation.md)")
    p.add_argument("--out", required=True, metavar="SCHEME_JSON")
    p.add_argument("--plot", default=d["plot"], help="PNG path (default: OUT with .png)")
    p.add_argument("--name", default=d["name"], help="scheme name (default: searched-<budget>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    result = search_scheme(args.model, args.contrib, args.budget, args.out, flash_budget=args.flash_budget,
                           resolution=args.resolution, population=args.population, generations=args.generations,
                           seed=args.seed, noise_z=args.noise_z, plot=args.plot, name=args.name, quiet=args.quiet)
    emit(args, result.to_dict(), lambda _: result.text())
    return 0
