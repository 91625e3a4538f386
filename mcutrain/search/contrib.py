"""Contribution analysis (DESIGN.md section 5): what each bias depth and each weight update is worth.

The paper describes it and never released code. From one starting model, short int8 fine-tunes with
the simulation (``finetune``: SGD-M + QAS, stochastic rounding, a new head for a new task) measure

  baseline          the classifier only (``last-layer``);
  dAcc_bias[k]      updating the biases of the last k convs (+ classifier), minus the baseline;
  dAcc_W[i, r]      updating conv i's weight at ratio r + the biases of convs i..n-1 (a weight update
                    needs them) + classifier, minus the bias-only run with the same k = n - i.

Accuracy is VALIDATION accuracy (the search must never see the test split), on seeded random subsets
(``train_subset`` / ``eval_subset``) to keep runs short; contrib.json says so. ``predicted_gain``
adds the contributions up as the paper's search does. Runs go through a resumable cache
(``cache.RunCache``) and optionally through worker processes (``runs.run_groups``).

Noise (``shrunk``): where the document has ``se`` (``--seeds N`` >= 2, ``contrib_seeds``), each delta is
soft-thresholded by z of ITS measured standard error over the paired seeds: sign(d) max(0, |d| - z se).
Without it (one seed, version 1 documents) the binomial approximation below stands in:
every delta is ONE short fine-tune scored on n validation images, so it carries a
binomial error of about sqrt(p(1-p)/n) per accuracy (~2 points at n = 500, more on the 269 images of
`digits`' validation split). Summed over many layers, small noisy positive deltas look like real gains
and the search piles up layers (and memory) whose gain is noise (docs/results/search_validation.md).
``shrunk(contrib, z)`` soft-thresholds each delta d towards 0 by z standard errors of the difference
of its two accuracies: sign(d) * max(0, |d| - z * se), se = sqrt(pa(1-pa)/n + pb(1-pb)/n), the two
accuracies treated as independent (they share the images, so this over-states se somewhat; we have
no per-image record to pair them). z = 0 returns the analysis unchanged (the paper's objective). n is
``data.val_used`` (recorded by every ``analyze``); a document without it falls back to
``settings.eval_subset`` (an upper bound on n: the shrinkage is then too small, never too large),
and with neither, z > 0 is an error.

Failed runs: every run is judged by ``train.health`` (its per-epoch losses, the number of classes,
its validation accuracy on ``val_used`` images), the judgement ``finetune`` and the other trainers
use. A run that did not learn is recorded in ``failed`` (run -> reason) and ``unstable`` (its label,
the key older readers know; it used to mean "loss above 2 ln K"), and the analysis goes on: its
accuracy is still a measurement (a weight update that wrecks training is worth that little at these
settings), but a document whose runs mostly failed measured the learning rate, not the layers.

Seeds and the warmed head (``--seeds``, ``--head-epochs``): ``contrib_seeds``'s docstring (why, how,
what the deltas then mean).

contrib.json, format ``mcutrain-contrib`` version 2 (version 1: the same without ``seeds``, ``se`` and
``head``, still read)::

    {"format": "mcutrain-contrib", "version": 2,
     "model": {"path", "sha256",                     # the file analysed and its bytes' hash (information)
               "identity",                            # its content identity (io.identity): search checks it
               "recipe",                              # how it was quantized, from which checkpoint (or null)
               "arch", "n_convs", "resolution", "conv_names"},
     "data": {"name", "sha256", "split_seed", "num_classes", "new_head", "train_used", "val_used"},
     "settings": {epochs, batch_size, lr, momentum, optimizer, qas, update_rule, seed, resolution,
                  train_subset, eval_subset, seeds, head_epochs},
     "metric": "val_accuracy", "note": "...",
     "grid": {"bias_k": [...], "layers": [...], "ratios": [...]},
     "baseline": 0.81,                                  # validation accuracy, classifier only
     "bias": {"3": 0.012, ...},                         # k -> dAcc_bias (every bias run made)
     "weight": {"39": {"0.125": 0.004, ..., "1.0": 0.02}, ...},   # i -> r -> dAcc_W
     "accuracy": {"bias": {k: acc}, "weight": {i: {r: acc}}},    # the accuracies (means over the seeds)
     "seeds": {"n": 3, "finetune_seeds": [0, 1000, 2000], "baseline": [acc, ...],   # per-seed accuracies
               "bias": {k: [acc, ...]}, "weight": {i: {r: [acc, ...]}}},
     "se": {"seeds": 3, "baseline": 0.004, "bias": {k: se}, "weight": {i: {r: se}}},  # only with >= 2 seeds
     "head": {"epochs", "train_loss_per_epoch", "val_accuracy", "converged", ...},   # only with head_epochs
     "unstable": ["w39@1+b3", ...],                     # the runs judged failed (the keys of "failed")
     "failed": {"w39@1+b3": "the training loss ended at ...", ...},   # run -> why it did not learn
     "runs": 58, "runs_new": 20, "wall_seconds": 312.4, "run_seconds": 590.1, "workers": 2}
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mcutrain.data import SplitDataset, load_dataset
from mcutrain.errors import McutrainError
from mcutrain.io.atomic import atomic_write_text
from mcutrain.search.cache import RunCache
from mcutrain.search.contrib_seeds import head_path, seed_tables, seeded, warm_head
from mcutrain.search.grid import Selection, select_bias_grid, select_layers, select_ratios
from mcutrain.search.runs import Group, RunSpec, choose_run_lr, prefix_name, run_groups, run_state
from mcutrain.models.specs import NetSpec
from mcutrain.sparse.scheme import Scheme
from mcutrain.sparse.table import ConvTable, as_table
from mcutrain.train import model_kind as mk
from mcutrain.train.finetune import FinetuneConfig
from mcutrain.train.health import judge
from mcutrain.train.int8_optim import OPTIMIZERS, UPDATE_RULES
from mcutrain.train.learning_rate import check_learning_rate
from mcutrain.train.lr_auto import AUTO, is_auto
from mcutrain.io.atomic import file_sha256
from mcutrain.io.identity import quantization_recipe
from mcutrain.search.contrib_file import (FORMAT, VERSION, Contrib, SeedErrors, check_analysis_model,
                                          contrib_from_doc, load_contrib)

MAX_SEEDS = 100
DEFAULT_HEAD_EPOCHS = 20  # contrib_seeds: the warmed head; docs/results/search_seeds.md measured it
MAX_HEAD_EPOCHS = 1000
TRAINING_SETTINGS = ("epochs", "batch_size", "lr", "momentum", "optimizer", "qas", "update_rule", "seed",
                     "resolution", "train_subset", "eval_subset")


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of one analysis. The training settings default to ``finetune``'s, except epochs and
    subsets (short runs): analyse with the settings the chosen scheme will be fine-tuned with."""

    model: str
    data: str
    out: str
    epochs: int = 2
    train_subset: int = 1000  # 0: all training samples
    eval_subset: int = 1000  # 0: the whole validation split
    batch_size: int = 32
    lr: float | str = AUTO  # "auto": chosen once, on the largest run of the plan (train/lr_auto.py)
    momentum: float = 0.9
    optimizer: str = "sgd"
    qas: bool = True
    update_rule: str = "sr"
    seed: int = 0
    resolution: int = 0  # 0: the model's own
    layers: Selection = None  # see grid.py; None: the last half of the convs
    ratios: Selection = None  # None: 1/8, 1/4, 1/2, 1
    bias_grid: Selection = None  # None: geometric 1, 2, 3, 4, 6, 8, 12, ... and n
    workers: int = 1
    seeds: int = 1  # repeats of every run (contrib_seeds); 1: today's cost, no seed standard errors
    head_epochs: int = DEFAULT_HEAD_EPOCHS  # every run starts from a head trained alone this long; 0: a zero head
    ray: str | None = None  # "auto" or a cluster's HOST:PORT: runs as Ray tasks (runs.run_groups); not identity

    @property
    def settings(self) -> dict:
        return {k: getattr(self, k) for k in TRAINING_SETTINGS}

    def finetune_config(self) -> FinetuneConfig:
        return FinetuneConfig(model=self.model, data=self.data, scheme="", **self.settings)


def runs_path(out: str | os.PathLike) -> Path:
    """The run cache next to the output: ``<out>.runs.jsonl``."""
    return Path(f"{os.fspath(out)}.runs.jsonl")


@dataclass(frozen=True)
class Plan:
    """The runs of an analysis: baseline, bias runs (grid + those the weight runs need), weight runs."""

    n_convs: int
    bias_k: tuple[int, ...]
    layers: tuple[int, ...]
    ratios: tuple[float, ...]

    @property
    def runs(self) -> list[RunSpec]:
        weights = [RunSpec(self.n_convs - i, i, r) for i in self.layers for r in self.ratios]
        return [RunSpec(0)] + [RunSpec(k) for k in self.bias_k] + weights

    @property
    def largest_run(self) -> RunSpec:
        """The run that trains most: the deepest analysed layer at the largest ratio (with the biases
        it needs), else the most biases. ``--lr auto`` picks the analysis's rate on it."""
        if self.layers:
            i = min(self.layers)
            return RunSpec(self.n_convs - i, i, max(self.ratios))
        return RunSpec(max(self.bias_k, default=0))


def plan_runs(cfg: AnalysisConfig, convs: ConvTable | NetSpec) -> Plan:
    """Resolve the selections of ``cfg`` against ``convs`` (a model's ``ConvTable``, or a zoo ``NetSpec``)."""
    table = as_table(convs)
    n = len(table.names)
    layers = select_layers(cfg.layers, table)
    grid = set(select_bias_grid(cfg.bias_grid, n)) | {n - i for i in layers}
    return Plan(n, tuple(sorted(grid)), layers, select_ratios(cfg.ratios))


# ---------------------------------------------------------------------------------------------- analyze


def analyze(cfg: AnalysisConfig, *, progress: bool = True) -> dict:
    """Run (or resume) the analysis and write ``cfg.out`` atomically; returns the contrib document."""
    t0 = time.perf_counter()
    _check(cfg)
    model = mk.load_trainable(cfg.model)
    _check_resolution(cfg, model)
    dataset = load_dataset(cfg.data, seed=cfg.seed)
    plan = plan_runs(cfg, mk.conv_table(model))
    choice = None
    if is_auto(cfg.lr):
        choice = choose_run_lr(plan.largest_run, run_state(cfg.finetune_config(), model, dataset))
        cfg = replace(cfg, lr=choice.lr)
        if progress:
            _warn(f"mcutrain analyze: {choice.summary()}")
    identity = {"model_identity": mk.content_identity(model), "data": cfg.data,
                "data_sha256": data_sha256(dataset), **cfg.settings}
    if cfg.head_epochs:  # only when used, so a zero-head analysis keeps its cache identity
        identity["head_epochs"] = cfg.head_epochs
    cache = RunCache(runs_path(cfg.out), identity)
    if cache.rejected:
        _warn(f"mcutrain analyze: {len(cache.rejected)} cached run(s) in {cache.path} are not valid runs and are "
              f"recomputed ({'; '.join(cache.rejected[:3])}{'; ...' if len(cache.rejected) > 3 else ''})")
    runs = seeded(plan.runs, cfg.seeds)
    todo = [run for run in runs if cache.get(run) is None]
    run_cfg, head, trained = cfg.finetune_config(), None, model
    if cfg.head_epochs:  # rebuilt on a resume too (deterministic), so the document always records it
        state = run_state(run_cfg, model, dataset)
        trained, head = warm_head(run_cfg, state, cfg.head_epochs, head_path(cfg.out, cfg.model))
        if trained is None:  # the runs start from the model's own head; the document says why (api warns)
            trained = model
        else:
            run_cfg = replace(run_cfg, model=head["path"])  # workers load their model from the file
        if progress and trained is not model and not head["converged"]:
            _warn(f"mcutrain analyze: the head's training loss still fell {head['last_epoch_gain']:.1%} in its last "
                  f"epoch of {cfg.head_epochs}: raise --head-epochs")
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="analyze", unit="run",
               disable=not progress, dynamic_ncols=True)

    def finished(run: RunSpec, record: dict) -> None:
        cache.add(run, record)
        bar.set_postfix_str(f"{run.label} val {record['val_accuracy']:.3f}")
        bar.update(1)

    try:
        state = run_state(run_cfg, trained, dataset)
        run_groups(_groups(todo, trained), state, cfg.workers, finished, ray=cfg.ray)
    finally:
        bar.close()
    results = {run: cache.get(run) for run in runs}
    doc = contrib_doc(cfg, plan, model, dataset, identity, results, len(todo), time.perf_counter() - t0)
    if choice is not None:
        doc["settings"]["lr_auto"] = choice.as_dict()
    if head is not None:
        doc["head"] = head
    if cfg.ray is not None:  # information only: where the runs ran does not change their results
        doc["settings"]["ray"] = cfg.ray
    atomic_write_text(cfg.out, json.dumps(doc, indent=1) + "\n")
    return doc


def _warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _groups(runs: list[RunSpec], model: mk.TrainableModel) -> list[Group]:
    """Runs sharing a frozen prefix, grouped (one process runs a group back to back); the groups
    with the deepest trained layer first, as they take longest and so balance the workers."""
    groups: dict[str, Group] = {}
    for run in runs:
        name = prefix_name(model, run)
        groups.setdefault(name, []).append((run, name))
    return sorted(groups.values(), key=lambda g: (-max(r.bias for r, _ in g), g[0][1]))


def _check(cfg: AnalysisConfig) -> None:
    if cfg.optimizer not in OPTIMIZERS:
        raise McutrainError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if cfg.update_rule not in UPDATE_RULES:
        raise McutrainError(f"unknown update rule {cfg.update_rule!r}; choose {', '.join(UPDATE_RULES)}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise McutrainError("--epochs and --batch-size must be >= 1")
    if not is_auto(cfg.lr):
        check_learning_rate(cfg.lr)
    if cfg.train_subset < 0 or cfg.eval_subset < 0 or cfg.seed < 0 or cfg.resolution < 0:
        raise McutrainError("--subset, --eval-subset, --seed and --resolution must be >= 0")
    if cfg.workers < 1:
        raise McutrainError(f"--workers must be >= 1, got {cfg.workers}")
    if not 1 <= cfg.seeds <= MAX_SEEDS:
        raise McutrainError(f"--seeds must be in [1, {MAX_SEEDS}], got {cfg.seeds}")
    if not 0 <= cfg.head_epochs <= MAX_HEAD_EPOCHS:
        raise McutrainError(f"--head-epochs must be in [0, {MAX_HEAD_EPOCHS}], got {cfg.head_epochs}")
    if not cfg.out:
        raise McutrainError("--out is required: the analysis writes contrib.json and its run cache there")



def _check_resolution(cfg: AnalysisConfig, model: mk.TrainableModel) -> None:
    """An imported graph takes its own input size only (``--resolution`` is refused, naming it)."""
    if mk.is_graph(model):
        mk.input_size(model, cfg.resolution)


def data_sha256(dataset: SplitDataset) -> str:
    """Identity of the data the analysis sees: classes, train and validation splits (not test)."""
    h = hashlib.sha256(json.dumps(list(dataset.classes)).encode())
    for part in (dataset.train, dataset.val):
        h.update(np.ascontiguousarray(part.images).tobytes())
        h.update(np.ascontiguousarray(part.labels).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- document


def contrib_doc(cfg: AnalysisConfig, plan: Plan, model: mk.TrainableModel, dataset: SplitDataset, identity: dict,
                results: dict[RunSpec, dict], runs_new: int, wall: float) -> dict:
    """The contrib.json document from the finished runs (see the module docstring)."""
    acc = {run: rec["val_accuracy"] for run, rec in results.items()}
    tables = seed_tables(plan, acc, cfg.seeds, cfg.seed)
    per_seed = tables["seeds"]
    mean = lambda values: float(np.mean(values))  # noqa: E731 - the accuracy over the seeds
    bias_acc = {k: mean(per_seed["bias"][str(k)]) for k in plan.bias_k}
    weight_acc = {i: {r: mean(per_seed["weight"][str(i)][str(r)]) for r in plan.ratios} for i in plan.layers}
    updates = cfg.epochs * math.ceil(_used(len(dataset.train), cfg.train_subset) / cfg.batch_size)
    failed = run_failures(results, dataset.num_classes, _used(len(dataset.val), cfg.eval_subset), updates)
    return {
        "format": FORMAT, "version": VERSION,
        "model": model_section(model, cfg.model, cfg.resolution),
        "data": {"name": cfg.data, "sha256": identity["data_sha256"], "split_seed": cfg.seed,
                 "num_classes": dataset.num_classes, "new_head": tuple(dataset.classes) != tuple(model.classes),
                 "train_used": _used(len(dataset.train), cfg.train_subset),
                 "val_used": _used(len(dataset.val), cfg.eval_subset)},
        "settings": {**cfg.settings, "seeds": cfg.seeds, "head_epochs": cfg.head_epochs},
        "metric": "val_accuracy",
        "note": (f"accuracies are on the validation split (the test split is never used), after "
                 f"{cfg.epochs} epoch(s) on {_used(len(dataset.train), cfg.train_subset)} training samples "
                 f"(a seeded subset when train_subset > 0) and evaluated on "
                 f"{_used(len(dataset.val), cfg.eval_subset)} validation samples"
                 f"{_seeds_note(cfg)}"),
        "grid": {"bias_k": list(plan.bias_k), "layers": list(plan.layers), "ratios": list(plan.ratios)},
        "baseline": tables["baseline"],
        "bias": tables["bias"],
        "weight": tables["weight"],
        "accuracy": {"bias": {str(k): a for k, a in bias_acc.items()},
                     "weight": {str(i): {str(r): a for r, a in row.items()} for i, row in weight_acc.items()}},
        "seeds": per_seed,
        **({"se": tables["se"]} if "se" in tables else {}),
        "unstable": list(failed), "failed": failed,
        "runs": len(results), "runs_new": runs_new, "wall_seconds": round(wall, 2),
        "run_seconds": round(sum(rec["seconds"] for rec in results.values()), 2), "workers": cfg.workers,
    }


def _seeds_note(cfg: AnalysisConfig) -> str:
    seeds = (f"; every run repeated with {cfg.seeds} seeds, the tables hold the means of the deltas paired by "
             f"seed and 'se' their standard errors" if cfg.seeds > 1 else "")
    head = (f"; every run starts from a head trained alone for {cfg.head_epochs} epochs ('head')"
            if cfg.head_epochs else "")
    return seeds + head


def model_section(model: mk.TrainableModel, path: str | os.PathLike, resolution: int = 0) -> dict:
    """contrib.json's ``model``: the file, its content identity (what ``search`` checks), how it was made,
    and its convs. One writer for every analysis (fine-tune and fast) so ``search`` reads one shape."""
    convs = mk.convs(model)
    return {"path": os.fspath(path), "sha256": file_sha256(path), "identity": mk.content_identity(model),
            "recipe": quantization_recipe(model.provenance), "arch": mk.arch(model), "n_convs": len(convs),
            "resolution": resolution or mk.resolution_of(model), "conv_names": [c.name for c in convs]}


def run_failures(results: dict[RunSpec, dict], classes: int, val_n: int, updates: int | None = None) -> dict[str, str]:
    """Label -> reason of each run that did not learn (``train.health``), in run order. A run marked
    diverged failed even where its recorded losses are finite (its parameters were not). ``updates``:
    the optimizer steps of one run (epochs x batches), as finetune counts them."""
    failed = {}
    for run, rec in results.items():
        losses = rec["train_loss_per_epoch"]
        finite_losses = all(math.isfinite(v) for v in losses)
        health = judge(losses, classes, val_accuracy=rec["val_accuracy"], val_n=val_n,
                       parameters_finite=not (rec["diverged"] and finite_losses), updates=updates)
        if not health.ok:
            failed[run.label] = health.reason
    return failed


def _used(available: int, subset: int) -> int:
    return min(available, subset) if subset else available


# ---------------------------------------------------------------------------------------------- using


def bias_gain(contrib: Contrib, k: int) -> float:
    """dAcc_bias at k: exact on the grid, linear between grid points (k = 0 is the baseline, gain 0),
    and the deepest grid point's value beyond it (the default grid ends at n, so that is rare)."""
    if k <= 0:
        return 0.0
    ks = [0] + sorted(contrib.bias)
    gains = [0.0] + [contrib.bias[x] for x in ks[1:]]
    j = bisect.bisect_left(ks, k)
    if j == len(ks):
        return gains[-1]
    if ks[j] == k:
        return gains[j]
    t = (k - ks[j - 1]) / (ks[j] - ks[j - 1])
    return gains[j - 1] + t * (gains[j] - gains[j - 1])


def predicted_gain(contrib: Contrib, scheme: Scheme) -> float:
    """dAcc_bias[k*] + sum dAcc_W[i, r] over the scheme's weight updates: contributions assumed
    additive, as the paper's search does. k* is the scheme's NUMBER of bias-updated convs (the
    analysis measured suffixes "last k"; a non-suffix bias list is scored as the suffix of its size);
    k* off the grid is interpolated (``bias_gain``). A weight (i, r) the analysis did not measure is
    an error: restrict the search to ``contrib.weight_options()``."""
    if scheme.model != contrib.arch:
        raise McutrainError(f"scheme {scheme.name!r} is for {scheme.model!r}, the analysis for {contrib.arch!r}")
    missing = [(i, r) for i, r in scheme.weight_ratios if r not in contrib.weight.get(i, {})]
    if missing:
        raise McutrainError(f"scheme {scheme.name!r} updates weights the analysis did not measure: "
                            f"{', '.join(f'conv {i} at {r:g}' for i, r in missing)}; analysed layers: "
                            f"{sorted(contrib.weight)}")
    return bias_gain(contrib, len(scheme.bias_layers)) + sum(contrib.weight[i][r] for i, r in scheme.weight_ratios)


# ---------------------------------------------------------------------------------------------- noise


def validation_size(contrib: Contrib) -> int | None:
    """n behind each accuracy: ``data.val_used``, else ``settings.eval_subset`` (> 0), else None."""
    for section, key in (("data", "val_used"), ("settings", "eval_subset")):
        v = (contrib.doc.get(section) or {}).get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def delta_se(acc_a: float, acc_b: float, n: int) -> float:
    """Binomial standard error of acc_a - acc_b, two accuracies on n images each, taken as independent."""
    return math.sqrt((acc_a * (1 - acc_a) + acc_b * (1 - acc_b)) / n)


def shrink(delta: float, se: float, z: float) -> float:
    """Soft-threshold ``delta`` towards 0 by ``z * se``: sign(d) * max(0, |d| - z se); z = 0 returns d."""
    return math.copysign(max(0.0, abs(delta) - z * se), delta) if z else delta


def shrunk(contrib: Contrib, z: float) -> Contrib:
    """``contrib`` with every delta shrunk by its noise (module docstring); z = 0: ``contrib`` itself.
    The accuracies come from the baseline and the deltas (exactly how the deltas were made)."""
    if not z >= 0 or math.isinf(z):
        raise McutrainError(f"--noise-z must be a finite number >= 0, got {z!r}")
    if z == 0:
        return contrib
    if contrib.se is not None:  # measured: the spread of the deltas over their paired seeds
        se = contrib.se
        bias = {k: shrink(d, se.bias[k], z) for k, d in contrib.bias.items()}
        weight = {i: {r: shrink(d, se.weight[i][r], z) for r, d in row.items()} for i, row in contrib.weight.items()}
        return replace(contrib, bias=bias, weight=weight)
    n = validation_size(contrib)
    if n is None:
        raise McutrainError("the contribution analysis records no validation-set size (data.val_used or "
                            "settings.eval_subset), so its noise is unknown: re-run `mcutrain analyze` or use "
                            "--noise-z 0")
    base = contrib.baseline
    bias_acc = {k: _clip(base + d) for k, d in contrib.bias.items()}
    bias = {k: shrink(d, delta_se(bias_acc[k], base, n), z) for k, d in contrib.bias.items()}
    weight = {}
    for i, row in contrib.weight.items():
        ref = bias_acc[contrib.n_convs - i]
        weight[i] = {r: shrink(d, delta_se(_clip(ref + d), ref, n), z) for r, d in row.items()}
    return Contrib(contrib.arch, contrib.n_convs, base, bias, weight, contrib.doc)


def noise_source(contrib: Contrib, z: float) -> str:
    """Which standard errors ``shrunk(contrib, z)`` uses, in words (the search's summary states it)."""
    if not z:
        return "none (noise z 0: the plain sum)"
    if contrib.se is not None:
        return f"seeds: the spread of each delta over its {contrib.se.seeds} paired seeds"
    n = validation_size(contrib)
    return f"binomial: sqrt(p(1-p)/n) of each accuracy, n = {n} validation images (one seed: no measured spread)"


def _clip(acc: float) -> float:
    return min(1.0, max(0.0, acc))


def summary(doc: dict, top: int = 10) -> dict:
    """What the CLI prints: baseline, the best bias depth, the top weight contributions, cost."""
    names = doc["model"]["conv_names"]
    best_k = max(doc["bias"], key=lambda k: (doc["bias"][k], -int(k)), default=None)
    rows = sorted(((int(i), float(r), d) for i, row in doc["weight"].items() for r, d in row.items()),
                  key=lambda t: (-t[2], t[0], t[1]))
    se = (doc.get("se") or {}).get("weight", {})
    arch = doc["model"]["arch"]
    if arch == mk.GRAPH_ARCH and isinstance(doc["model"].get("path"), str):  # an imported graph: its file's name
        arch = f"{os.path.basename(doc['model']['path'])} (imported graph)"
    return {"model": arch, "data": doc["data"]["name"],
            "baseline": doc["baseline"],
            "best_bias": None if best_k is None else {"k": int(best_k), "dacc": doc["bias"][best_k]},
            "top_weights": [{"layer": i, "name": names[i], "ratio": r, "dacc": d,
                             "se": se.get(str(i), {}).get(str(r))} for i, r, d in rows[:top]],
            "seeds": (doc.get("settings") or {}).get("seeds", 1),
            "unstable": doc["unstable"], "failed": doc.get("failed", {}), "failed_runs": len(doc["unstable"]),
            "runs": doc["runs"], "runs_new": doc["runs_new"],
            "seconds": doc["wall_seconds"]}


__all__ = ["AnalysisConfig", "Contrib", "Plan", "SeedErrors", "analyze", "bias_gain", "check_analysis_model",
           "contrib_doc", "contrib_from_doc", "delta_se", "load_contrib", "noise_source", "plan_runs", "predicted_gain",
           "runs_path", "shrink", "shrunk", "summary", "validation_size"]
