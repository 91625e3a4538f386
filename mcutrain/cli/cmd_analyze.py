"""`mcutrain analyze`: contribution analysis of a model's biases and weights (input to the search).

The work is ``mcutrain.api.analyze``; this declares its flags (defaults from its signature) and prints."""

from __future__ import annotations

from mcutrain.api.analysis import METHODS, analyze
from mcutrain.api.defaults import defaults
from mcutrain.cli import argtypes
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit, table
from mcutrain.errors import TrainingFailed
from mcutrain.search.contrib import AnalysisConfig
from mcutrain.search.fast import FastConfig
from mcutrain.train.int8_optim import OPTIMIZERS, UPDATE_RULES


def register(subparsers) -> None:
    d, tune, fast = defaults(analyze), AnalysisConfig("", "", ""), FastConfig("", "", "")
    p = subparsers.add_parser(
        "analyze", help=HELP["analyze"],
        description="Short int8 fine-tunes of MODEL on --data from the same start: the classifier only "
                    "(baseline), the biases of the last k convs (dAcc_bias[k]) and each candidate conv's "
                    "weight at ratios 1/8..1 (dAcc_W[i, r], over bias-only with the same depth). Accuracy "
                    "is on the validation split, never test. Finished runs are kept in OUT.runs.jsonl: "
                    "rerun the same command to resume (a cached run whose record is not a valid result, "
                    "e.g. an accuracy outside [0, 1], is trained again). Use the training settings (--lr ...) you will "
                    "fine-tune the chosen scheme with. A run that fails to learn is recorded as failed and the "
                    "analysis goes on; when every run failed, it exits with status 3.")
    p.add_argument("model", metavar="MODEL", help="int8 model file or imported int8 graph file (mcutrain import)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, metavar="CONTRIB_JSON")
    p.add_argument("--epochs", type=int, default=d["epochs"],
                   help=f"epochs per run (default {tune.epochs}; fast: {fast.epochs} of the head warm-up)")
    p.add_argument("--subset", type=int, default=d["train_subset"], dest="train_subset",
                   help=f"training samples per run, a seeded subset (default {tune.train_subset}, fast "
                        f"{fast.train_subset}; 0: all)")
    p.add_argument("--eval-subset", type=int, default=d["eval_subset"],
                   help=f"validation samples (default {tune.eval_subset}, fast {fast.eval_subset}; 0: the whole split)")
    p.add_argument("--layers", default=d["layers"],
                   help="candidate convs for weight runs: indices, ranges A..B, names, last:N "
                        "(default: the last half of the convs)")
    p.add_argument("--ratios", default=d["ratios"], help="weight ratios (default: 1/8,1/4,1/2,1)")
    p.add_argument("--bias-grid", default=d["bias_grid"],
                   help="k values of the bias runs, e.g. 1..6,9,12 (default: 1,2,3,4,6,8,12,... and all "
                        "convs); the k the weight runs need are always added")
    p.add_argument("--workers", type=int, default=d["workers"], help="worker processes (default 1)")
    p.add_argument("--ray", default=d["ray"], metavar="auto|HOST:PORT",
                   help="run the fine-tunes as Ray tasks: auto starts a local Ray instance (--workers CPUs when "
                        "> 1, else all), HOST:PORT joins a running cluster (docs/cluster.md); same results as "
                        "without it (default: local processes, --workers)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--seeds", type=int, default=d["seeds"],
                   help="repeat every fine-tune with this many seeds (default 1): the document records per-seed "
                        "accuracies and, from 2, each delta's standard error, which search --noise-z then uses")
    p.add_argument("--head-epochs", type=int, default=d["head_epochs"],
                   help=f"train the classifier alone this many epochs first and start every run from it (default "
                        f"{d['head_epochs']}; 0: every run starts from the model's head, a zero one for a new task)")
    p.add_argument("--lr", type=argtypes.learning_rate_or_auto, default=d["lr"],
                   help="learning rate, or auto (default): chosen once by short runs of the analysis's "
                        "largest run on the validation split, recorded in the document's settings")
    p.add_argument("--momentum", type=float, default=d["momentum"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d["optimizer"])
    qas = p.add_mutually_exclusive_group()
    qas.add_argument("--qas", dest="qas", action="store_true", default=d["qas"], help="(default)")
    qas.add_argument("--no-qas", dest="qas", action="store_false")
    p.add_argument("--update-rule", choices=UPDATE_RULES, default=d["update_rule"])
    p.add_argument("--resolution", type=argtypes.resolution, default=d["resolution"],
                   help="input side (default: the model's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--method", choices=METHODS, default=d["method"],
                   help="finetune (default): the short fine-tunes above; fast: a gradient estimate in about a "
                        "minute (search/fast.py), written to OUT in the same format; both: the fine-tunes to OUT "
                        "and the fast estimate to OUT with .fast.json, and their rank correlation")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    human = _human_fast if args.method == "fast" else _human
    try:
        result = analyze(args.model, args.data, args.out, method=args.method, epochs=args.epochs,
                         train_subset=args.train_subset, eval_subset=args.eval_subset, layers=args.layers,
                         ratios=args.ratios, bias_grid=args.bias_grid, workers=args.workers, seed=args.seed,
                         lr=args.lr, momentum=args.momentum, batch_size=args.batch_size, optimizer=args.optimizer,
                         qas=args.qas, update_rule=args.update_rule, resolution=args.resolution, seeds=args.seeds,
                         head_epochs=args.head_epochs, ray=args.ray, quiet=args.quiet)
    except TrainingFailed as e:  # the document is written: show what it measured, then the error
        if e.result is not None:
            emit(args, e.result, human)
        raise
    emit(args, result.to_dict(), human)
    return 0


def _human(r: dict) -> str:
    best = r["best_bias"]
    lines = [f"{r['model']} on {r['data']}: baseline (classifier only) val accuracy {r['baseline'] * 100:.2f}%",
             f"best bias depth: last {best['k']} convs, {best['dacc'] * 100:+.2f} points" if best else
             "no bias runs",
             "top weight contributions (over bias-only with the same depth):",
             _weights_table(r),
             f"{r['runs']} runs ({r['runs_new']} new, {r['failed_runs']} failed to learn"
             f"{_seeds(r)}) in {r['seconds']:.1f} s; "
             f"wrote {r['out']} "
             f"(run cache {r['runs_cache']})"]
    return "\n".join(lines)


NAME_CHARS = 48  # imported TFLite convs are named by their fused tensor names, hundreds of characters long


def _seeds(r: dict) -> str:
    n = r.get("seeds", 1)
    return f"; {n} seeds per run, dAcc the mean paired delta, se its standard error" if n > 1 else ""


def _weights_table(r: dict) -> str:
    if any(w.get("se") is not None for w in r["top_weights"]):
        return table([[w["layer"], _short(w["name"]), w["ratio"], round(w["dacc"] * 100, 2),
                       round(w["se"] * 100, 2)] for w in r["top_weights"]],
                     ["layer", "name", "ratio", "dAcc (points)", "se (points)"])
    return table([[w["layer"], _short(w["name"]), w["ratio"], round(w["dacc"] * 100, 2)] for w in r["top_weights"]],
                 ["layer", "name", "ratio", "dAcc (points)"])


def _short(name: str) -> str:
    """A conv name cut for the table (the full names are in contrib.json's model.conv_names)."""
    return name if len(name) <= NAME_CHARS else name[:NAME_CHARS - 3] + "..."


def _human_fast(r: dict) -> str:
    best = r["best_bias"]
    s = r["estimate_seconds"]
    return "\n".join([
        f"{r['model']} on {r['data']}: FAST estimate; baseline (classifier only) val accuracy "
        f"{r['baseline'] * 100:.2f}%",
        f"best bias depth: last {best['k']} convs, {best['dacc'] * 100:+.2f} points (estimated)" if best else
        "no bias candidates",
        "top weight contributions (estimated, over bias-only with the same depth):",
        _weights_table(r),
        f"{s['total']:.1f} s (head {s['head']:.1f}, gradients {s['gradients']:.1f}, calibration run "
        f"{s['calibration']:.1f}); wrote {r['out']}"])
