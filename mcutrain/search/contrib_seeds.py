"""Repeats and a trained head for the fine-tune analysis: what makes its deltas worth trusting (issue 14).

Why this exists: each delta of ``search.contrib`` was ONE short fine-tune minus another, and every run
began from a ZERO head (a new task's classifier). After 1-2 epochs such a head is still learning, so a
run that also trains biases or a weight mostly measured how much faster the head learns with them
(the demo: 38 runs all at 0.21-0.22 validation accuracy); and one draw cannot tell a 2-point gain from
the run-to-run spread.

Seeds (``--seeds N``)
    Every run of the plan is trained N times, repeat s with fine-tune seed ``seed + 1000 s``
    (``runs.RunSpec.finetune_seed``): another training-subset draw, batch order, stochastic rounding
    and validation-subset draw; the same model, split and run. A delta is paired by seed,
    d_s = acc(run, s) - acc(reference, s), so the shared draws cancel; the document records the mean
    (``bias`` / ``weight``, the keys every reader knows), the per-seed accuracies (``seeds``) and, for
    N >= 2, se = sd(d_s) / sqrt(N) (``se``; sd with N - 1). ``contrib.shrunk`` uses that se where the
    document has it. With ``eval_subset`` 0 every seed sees the same validation images, so the seed se
    measures the training noise the search must not chase, not the sampling error of the validation
    set (which every candidate shares).

The converged head (``--head-epochs H``)
    Decision: warm-start every run, the reference included, from ONE classifier-only fine-tune of H
    epochs (the analysis's seed and settings; deterministic, so a resumed analysis rebuilds the same
    head). Training the reference alone for longer would not do: a bias run of 2 epochs against a
    reference of 30 measures the epoch count. With the warm start a delta reads "what training this
    layer adds on top of a converged linear probe", which is the question a long fine-tune of the
    chosen scheme answers too (its head converges anyway), instead of "how much faster the zero head
    learns with this layer" (linear probing then fine-tuning: Kumar et al., ICLR 2022; the fast
    estimator warms its head the same way). The head's losses per epoch are recorded (``head``) with
    ``converged``: the last epoch improved the training loss by less than 2 % (else a warning: raise H).
    The warmed model is written beside the output (``<out>.head.<ext>``) because worker processes load
    their model from a file. H = 20 (default; 0: the zero-head analysis of before); docs/results/search_seeds.md
    measures both. A head that fails to learn (a diverging rate) leaves the zero head, recorded as
    ``head.failed``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mcutrain.errors import TrainingFailed
from mcutrain.search.runs import RunSpec, RunState, _one_thread, scheme_file
from mcutrain.train import model_kind as mk
from mcutrain.train.finetune import FinetuneConfig, finetune

CONVERGED_GAIN = 0.02  # the head counts as converged when its last epoch lowered the loss by less than this share


# ---------------------------------------------------------------------------------------------- seeds


def seeded(runs: list[RunSpec], seeds: int) -> list[RunSpec]:
    """Every run of the plan once per seed, seed 0 first (a killed analysis has whole repeats)."""
    return [replace(run, seed=s) for s in range(seeds) for run in runs]


def paired(runs: list[RunSpec], refs: list[RunSpec], acc: dict[RunSpec, float]) -> tuple:
    """(mean delta, se or None) of ``runs[s] - refs[s]``, the two lists in seed order (se needs >= 2 seeds)."""
    d = np.array([acc[a] - acc[b] for a, b in zip(runs, refs)])
    return float(d.mean()), (float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) >= 2 else None)


def seed_tables(plan, acc: dict[RunSpec, float], seeds: int, base_seed: int) -> dict:
    """The document's seed sections: per-seed accuracies (``seeds``), the mean deltas and their se."""
    n = plan.n_convs
    reps = range(seeds)

    def of(run: RunSpec) -> list[RunSpec]:
        return [replace(run, seed=s) for s in reps]

    base = of(RunSpec(0))
    bias = {k: paired(of(RunSpec(k)), base, acc) for k in plan.bias_k}
    weight = {i: {r: paired(of(RunSpec(n - i, i, r)), of(RunSpec(n - i)), acc) for r in plan.ratios}
              for i in plan.layers}
    per_seed = {"n": seeds, "finetune_seeds": [RunSpec(0, seed=s).finetune_seed(base_seed) for s in reps],
                "baseline": [acc[r] for r in base],
                "bias": {str(k): [acc[r] for r in of(RunSpec(k))] for k in plan.bias_k},
                "weight": {str(i): {str(r): [acc[x] for x in of(RunSpec(n - i, i, r))] for r in plan.ratios}
                           for i in plan.layers}}
    base_acc = np.array(per_seed["baseline"])
    out = {"baseline": float(base_acc.mean()),
           "bias": {str(k): m for k, (m, _) in bias.items()},
           "weight": {str(i): {str(r): m for r, (m, _) in row.items()} for i, row in weight.items()},
           "seeds": per_seed}
    if seeds >= 2:
        out["se"] = {"seeds": seeds, "baseline": float(base_acc.std(ddof=1) / math.sqrt(seeds)),
                     "bias": {str(k): e for k, (_, e) in bias.items()},
                     "weight": {str(i): {str(r): e for r, (_, e) in row.items()} for i, row in weight.items()}}
    return out


# ---------------------------------------------------------------------------------------------- head


def head_path(out: str | os.PathLike, model_path: str | os.PathLike) -> Path:
    """Where the warmed model goes: beside the output, with the model file's own extension."""
    return Path(f"{os.fspath(out)}.head{Path(os.fspath(model_path)).suffix}")


def warm_head(cfg: FinetuneConfig, state: RunState, epochs: int, path: Path) -> tuple[mk.TrainableModel | None, dict]:
    """Train the classifier alone for ``epochs`` from ``state``'s model (one torch thread, the analysis's
    seed: deterministic), write the model to ``path`` and return it with the ``head`` record. A head that
    failed to learn (``train.health``; e.g. a learning rate that diverges) returns None and the reason:
    the analysis then runs from the zero head and records why, as it records failed runs."""
    run, t0 = RunSpec(0), time.perf_counter()
    try:
        with scheme_file(run, "contrib-head", state.table) as scheme, _one_thread():
            result = finetune(replace(cfg, scheme=scheme, epochs=epochs, out=os.fspath(path)), progress=False,
                              model=state.model, dataset=state.dataset, prefix_memo=state.memo)
    except TrainingFailed as failure:
        return None, {"epochs": epochs, "failed": str(failure), "converged": False}
    losses = result["train_loss_per_epoch"]
    gain = (losses[-2] - losses[-1]) / abs(losses[-2]) if len(losses) >= 2 and losses[-2] else 0.0
    record = {"epochs": epochs, "train_loss_per_epoch": losses, "val_accuracy": result["val_accuracy"],
              "converged": bool(len(losses) >= 2 and gain < CONVERGED_GAIN), "last_epoch_gain": round(gain, 4),
              "path": os.fspath(path), "seconds": round(time.perf_counter() - t0, 2)}
    return mk.load_trainable(path), record
