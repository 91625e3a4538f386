"""A fast contribution estimate from gradients: ``mcutrain analyze --method fast``.

Why: the fine-tune analysis (``search.contrib``) measures every candidate with a short fine-tune; on a
fresh machine the demo could only afford 1-epoch runs on 300 samples whose deltas were noise (issue
14: every run ended at 0.21-0.22 and the search optimised noise). Here the same candidates are
scored from the gradients of ONE fitted model in well under a minute, and written as a contrib.json
that ``mcutrain search`` takes unchanged (``settings.method = "fast"``).

What is measured (``fast_grad``): the new task's zero head is trained alone as a fine-tune analysis
with ``head_epochs = 0`` trains its classifier-only run (same optimizer, QAS, rule, seeds, batches:
its validation accuracy IS the baseline; the fine-tune analysis now warms its head longer by
default, ``contrib_seeds``), then mini-batch gradients of the int8 simulation (QAS-scaled, straight-through, the
ones the int8 training sees) on a few hundred training samples give per channel

  s_e = q_e * E[g_e^2]    (``fisher``, default: the diagonal empirical Fisher at batch level)  or
  s_e = q_e * gbar_e^2    (``signal``: unbiased over the mini-batches; it fails where the warmed head
                           fits its samples so well that the mean gradient sinks below its noise:
                           every score is then noise around 0 - docs/results/fast_analysis.md),

with q_e the optimizer's QAS factor. A candidate's score is the sum over what it trains:
  bias[k]      sum of the bias scores of the last k convs;
  weight[i,r]  sum of conv i's weight scores over the first floor(C r) channels IN THE ORDER THE RUN
               WOULD TRAIN: for zoo models the order ``sparse.permute`` gives a single partial update
               (real-valued L2 norm of the channel's weights, descending; conv 0 reads the image and
               keeps its order), for imported graphs the first channels (graphs are not permuted).
``lr * sum_e q_e g_e^2`` is the first-order (Taylor) loss decrease of one int8 SGD step (with QAS)
on that group, on the batch whose gradient g is (fisher: averaged over the mini-batches; signal: of
the full batch, the mini-batch noise removed): the loss-change criterion of pruning and selection
(Molchanov et al., "Pruning Convolutional Neural Networks for Resource Efficient Inference", ICLR 2017;
"Importance Estimation for Neural Network Pruning", CVPR 2019) and of trainable-tensor selection on
devices (Huang et al., "ElasticTrainer", MobiSys 2023); the Fisher variant is the squared-gradient
importance of Fisher pruning (Theis et al. 2018) and of FISH masks, which choose the parameters to
fine-tune by their empirical Fisher on the new task (Sung et al., "Training Neural Networks with
Fixed Sparse Masks", NeurIPS 2021). Warming the head first follows linear-probe-then-fine-tune
(Kumar et al., ICLR 2022): through a zero head every backbone gradient is zero. The per-channel
ranking (``settings.channels``) is the gradient's own ranking, reported next to the order the
permutation uses.

Calibration (``settings.calibration``): the scores are loss decreases in arbitrary units, the search
sums them (``evolve.Space.gain`` / ``contrib.predicted_gain``, additive like the paper's objective)
and compares the sums; any positive scale gives the same search result at ``--noise-z 0``. To put
them in accuracy units:
  ``run`` (default)  one real short fine-tune (``finetune``, the analysis's settings) of the top
                     scored candidate among those training at most the last quarter of the convs
                     (a weight at the largest ratio with the biases it needs, or biases): the scale
                     maps its predicted score onto its measured gain over the baseline (at least one
                     validation image), so predicted gains read as accuracy points;
  ``none``           no run: scores divided by the sum of every candidate's largest |score|
                     (unitless; every entry in [-1, 1]); also what ``run`` falls back to when no
                     candidate scores above 0 (nothing to calibrate on).
Learning rate: the estimate should use the rate the candidates will be fine-tuned with (``both`` takes
the fine-tune analysis's). ``--lr auto`` here is the rate derived from the head's curvature
(``lr_auto.derived_lr``, no probe runs, which would cost more than the estimate): right for the head,
but it can be far too large for a backbone's layers (the bundled backbone: 0.21, where its deep layers
want about 0.01); then a first-order score over-rates the layers with the largest gradients, and the
calibration run, which trains the top candidate, says so (``settings.calibration.warning``).

The document records no ``data.val_used`` / ``settings.eval_subset``: its deltas are estimates, not
binomial measurements, so ``search --noise-z > 0`` (which shrinks by binomial standard errors)
refuses it rather than inventing a noise level.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import torch

from mcutrain.data import SplitDataset, load_dataset
from mcutrain.errors import McutrainError
from mcutrain.io.atomic import atomic_write_text
from mcutrain.search import fast_grad as fg
from mcutrain.search.fast_run import calibration_run, resolve_grid
from mcutrain.search.contrib import data_sha256, model_section  # one identity for both analyses
from mcutrain.search.contrib_file import FORMAT, VERSION
from mcutrain.train import model_kind as mk
from mcutrain.train.learning_rate import check_learning_rate
from mcutrain.train.lr_auto import AUTO, HeadCurvature, derived_lr, is_auto

CALIBRATIONS = ("run", "none")
SETTINGS = ("epochs", "batch_size", "lr", "momentum", "optimizer", "qas", "update_rule", "seed", "resolution",
            "train_subset")


@dataclass(frozen=True)
class FastConfig:
    """Settings of a fast estimate. The training settings are those of the fine-tune analysis (the
    head warm-up is its baseline run); the sample counts are small, the point of the method."""

    model: str
    data: str
    out: str
    epochs: int = 8  # of the head warm-up (= the baseline run) and of the calibration run: 64 steps, as
    train_subset: int = 256  # the analysis's 2 epochs of 1000; training samples of both (0: all)
    grad_samples: int = 256  # training samples whose gradients are measured (a subset of those)
    eval_subset: int = 256  # validation samples of the baseline and the calibration run (0: all)
    batch_size: int = 32
    lr: float | str = AUTO  # "auto": the rate derived from the head's curvature (lr_auto), no probes
    momentum: float = 0.9
    optimizer: str = "sgd"
    qas: bool = True
    update_rule: str = "sr"
    seed: int = 0
    resolution: int = 0
    layers: object = None  # as the fine-tune analysis (search.grid); None: the last half of the convs
    ratios: object = None
    bias_grid: object = None
    statistic: str = "fisher"
    calibration: str = "run"

    @property
    def settings(self) -> dict:
        return {k: getattr(self, k) for k in SETTINGS}


def estimate(cfg: FastConfig, *, progress: bool = False, write: bool = True) -> dict:
    """Estimate every candidate's contribution; write ``cfg.out`` atomically (when ``write``) and
    return the contrib document. Computes with ONE torch thread, as the analysis's runs do
    (``runs._one_thread``): the result does not depend on the machine's cores, and on the 2-core
    machine the int8 simulation took 9 times the CPU time with two threads (17.7 s vs 159 s wall)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _estimate(cfg, progress, write)
    finally:
        torch.set_num_threads(before)


def _estimate(cfg: FastConfig, progress: bool, write: bool) -> dict:
    t0 = time.perf_counter()
    _check(cfg)
    original = mk.load_trainable(cfg.model)
    dataset = load_dataset(cfg.data, seed=cfg.seed)
    model = mk.fit_task(original, tuple(dataset.classes))
    grid = resolve_grid(model, cfg.layers, cfg.ratios, cfg.bias_grid)
    size, prep = mk.input_size(model, cfg.resolution), mk.preprocessing(model)
    train = dataset.train.subset(cfg.train_subset, cfg.seed)  # the fine-tune's subsets (finetune._subsampled)
    val = dataset.val.subset(cfg.eval_subset, cfg.seed + 1)
    net = mk.simulation(model)
    net.set_trainable(mk.update_plan(model, "last-layer"))
    _say(progress, f"fast estimate: features of {len(train)} training and {len(val)} validation samples")
    train_f, val_f = fg.features(net, train, size, prep), fg.features(net, val, size, prep)
    lr = _rate(cfg, net, train_f)
    losses = fg.train_head(net, train_f, train.labels, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=lr,
                           momentum=cfg.momentum, optimizer=cfg.optimizer, qas=cfg.qas, rule=cfg.update_rule,
                           seed=cfg.seed)
    base = fg.head_metrics(net, val_f, val.labels)
    t_head = time.perf_counter() - t0
    _say(progress, f"fast estimate: head warmed up (val accuracy {base['accuracy']:.3f}); gradients of "
                   f"{min(cfg.grad_samples or len(train), len(train))} samples")
    plan = fg.candidate_plan(mk.update_plan(model, "full"), grid.n_convs - max(grid.bias_k), grid.layers)
    scores = fg.gradient_scores(net, plan, train.subset(cfg.grad_samples, cfg.seed + 3), size, prep,
                                batch_size=cfg.batch_size, seed=cfg.seed, qas=cfg.qas, statistic=cfg.statistic)
    t_grad = time.perf_counter() - t0 - t_head
    orders = channel_orders(model, grid.layers)
    raw = candidate_scores(scores, grid, orders)
    cal = _calibrate(cfg, raw, grid, model, dataset, base["accuracy"], lr, progress)
    doc = fast_doc(cfg, original, dataset, grid, raw, cal, base, losses, scores, orders, lr,
                   {"head": round(t_head, 2), "gradients": round(t_grad, 2),
                    "calibration": round(cal.get("seconds", 0.0), 2), "total": round(time.perf_counter() - t0, 2)},
                   new_head=mk.classes_of(original) != tuple(dataset.classes))
    if write:
        atomic_write_text(cfg.out, json.dumps(doc, indent=1) + "\n")
    return doc


def estimate_contrib(model: str, data: str, out: str, *, lr: float | str = AUTO, seed: int = 0,
                     progress: bool = True, **settings):
    """(Contrib, seconds): the fast estimate (its defaults, or ``settings`` of ``FastConfig``) for a
    pipeline that has no matching analysis (the demo): written to ``out``, read back validated."""
    from mcutrain.search.contrib_file import contrib_from_doc

    doc = estimate(FastConfig(model=model, data=data, out=out, lr=lr, seed=seed, **settings), progress=progress)
    return contrib_from_doc(doc), doc["wall_seconds"]


def _say(progress: bool, text: str) -> None:
    if progress:
        import sys

        print(text, file=sys.stderr, flush=True)


def _rate(cfg: FastConfig, net, train_f: torch.Tensor) -> float:
    """``--lr auto``: the derived rate (``lr_auto.derived_lr``) from the head input's curvature on the
    training subset; no probe runs (they would cost more than the whole estimate)."""
    if not is_auto(cfg.lr):
        return float(cfg.lr)
    x = (train_f.double() - net.classifier.x_zero) * net.classifier.x_scale
    moment = (x.T @ x).numpy() / max(len(x), 1)
    return derived_lr(HeadCurvature(float(np.linalg.eigvalsh(moment)[-1]), len(x)), optimizer=cfg.optimizer,
                      momentum=cfg.momentum)


# ---------------------------------------------------------------------------------------------- scores


def channel_orders(model: mk.TrainableModel, layers: tuple[int, ...]) -> dict[int, np.ndarray]:
    """The channel order a single partial weight update of each layer trains in (first = trained first)."""
    from mcutrain.sparse.permute import channel_importance

    convs = mk.convs(model)
    orders = {}
    for i in layers:
        channels = convs[i].in_ch
        if mk.is_graph(model) or i == 0:  # graphs are not permuted; conv 0 reads the fixed image channels
            orders[i] = np.arange(channels)
        else:
            orders[i] = np.argsort(-channel_importance(convs[i]), kind="stable")
    return orders


def candidate_scores(scores: dict[int, fg.ConvScores], grid, orders: dict[int, np.ndarray]) -> dict:
    """{"bias": {k: score}, "weight": {i: {r: score}}}: sums of the per-channel scores (module docstring)."""
    from mcutrain.sparse.scheme import kept_channels

    n = grid.n_convs
    per_conv_bias = {i: float(s.bias.sum()) for i, s in scores.items()}
    bias = {k: sum(per_conv_bias.get(i, 0.0) for i in range(n - k, n)) for k in grid.bias_k}
    weight = {}
    for i in grid.layers:
        ordered = scores[i].weight[orders[i]]
        weight[i] = {r: float(ordered[:kept_channels(len(ordered), r)].sum()) for r in grid.ratios}
    return {"bias": bias, "weight": weight}


def top_candidate(raw: dict, grid) -> tuple[int, int | None]:
    """(bias depth, layer) of the calibration run: the largest predicted gain among the runs that train
    at most the last quarter of the convs (a weight at the largest ratio with the biases it needs, or
    a bias depth alone), so that the run stays short (the bundled backbone's top candidate overall,
    all 51 biases, took 277 s); with no candidate that shallow, the shallowest one."""
    n = grid.n_convs
    limit = max(-(-n // 4), min(grid.bias_k), min(n - i for i in grid.layers) if grid.layers else 1)
    options = [((k, None), raw["bias"][k]) for k in grid.bias_k if k <= limit]
    options += [((n - i, i), raw["bias"][n - i] + raw["weight"][i][max(grid.ratios)])
                for i in grid.layers if n - i <= limit]
    return max(options, key=lambda o: o[1])[0]


def _unit_scale(raw: dict) -> float:
    """1 / the sum of every candidate's largest |score|: unitless scores, every entry in [-1, 1]."""
    total = (max((abs(v) for v in raw["bias"].values()), default=0.0)
             + sum(max(abs(v) for v in row.values()) for row in raw["weight"].values()))
    return 1.0 / total if total > 0 else 0.0


def _calibrate(cfg: FastConfig, raw: dict, grid, model, dataset: SplitDataset, baseline: float, lr: float,
               progress: bool) -> dict:
    if cfg.calibration == "none":
        return {"method": "none", "scale": _unit_scale(raw)}
    k, layer = top_candidate(raw, grid)
    ratio = max(grid.ratios)
    predicted = raw["bias"][k] + (raw["weight"][layer][ratio] if layer is not None else 0.0)
    if predicted <= 0:  # nothing is predicted to help (the signal statistic can be all below its noise)
        return {"method": "none", "scale": _unit_scale(raw), "note": "no candidate has a positive score: no run"}
    _say(progress, f"fast estimate: calibration run (biases of the last {k} convs"
                   f"{'' if layer is None else f', conv {layer} at {ratio:g}'})")
    run = calibration_run(cfg, model, dataset, k, layer, ratio, lr)
    n_val = len(dataset.val.subset(cfg.eval_subset, cfg.seed + 1))
    gain = run["val_accuracy"] - baseline
    scale = max(gain, 1.0 / n_val) / predicted
    out = {"method": "run", "scale": scale, "run": {"bias": k, "layer": layer, "ratio": ratio if layer is not None
                                                     else 0.0},
           "val_accuracy": run["val_accuracy"], "measured_gain": gain, "predicted_score": predicted,
           "val_n": n_val, "failed": run["failed"], "seconds": run["seconds"]}
    if gain <= 0:
        # A first-order estimate assumes a step small enough for the loss to be locally linear; the
        # top candidate losing accuracy when trained says the rate is too large for the backbone
        # (the bundled backbone at its head-derived rate 0.21: conv 50 scored first, measured -14 points).
        out["warning"] = (f"the top-scored candidate lost {-gain * 100:.1f} points when fine-tuned at lr {lr:.3g}: "
                          f"the rate is probably too large for the backbone's layers, so the first-order scores "
                          f"over-rate large-gradient layers; estimate again with a smaller --lr")
    return out


# ---------------------------------------------------------------------------------------------- document


def fast_doc(cfg: FastConfig, original, dataset: SplitDataset, grid, raw: dict, cal: dict, base: dict,
             losses: list[float], scores: dict, orders: dict, lr: float, seconds: dict, new_head: bool) -> dict:
    """The contrib.json document (format of ``search.contrib``) of a fast estimate."""
    scale = cal["scale"]
    clip = lambda v: min(1.0, max(-1.0, v * scale))  # noqa: E731  (calibrated deltas stay deltas)
    bias = {str(k): clip(v) for k, v in raw["bias"].items()}
    weight = {str(i): {str(r): clip(v) for r, v in row.items()} for i, row in raw["weight"].items()}
    accuracy = lambda v: min(1.0, max(0.0, v))  # noqa: E731
    n = grid.n_convs
    failed = {}
    if cal.get("failed"):
        failed[_run_label(cal["run"])] = "the calibration run failed to learn (train.health); its gain was floored"
    settings = {**cfg.settings, "lr": lr, "method": "fast", "statistic": cfg.statistic, "grad_samples":
                min(cfg.grad_samples or cfg.train_subset, cfg.train_subset or cfg.grad_samples) or None,
                "calibration": {k: v for k, v in cal.items() if k != "seconds"},
                "raw_scores": {"bias": {str(k): v for k, v in raw["bias"].items()},
                               "weight": {str(i): {str(r): v for r, v in row.items()}
                                          for i, row in raw["weight"].items()}},
                "head": {"train_loss_per_epoch": losses, "val_loss": base["loss"]},
                "channels": {str(i): {"order": [int(c) for c in orders[i]],
                                      "gradient_rank": [int(c) for c in np.argsort(-scores[i].weight, kind="stable")]}
                             for i in grid.layers},
                "seconds": seconds}
    if is_auto(cfg.lr):
        settings["lr_auto"] = "derived from the head's curvature on the training subset (no probe runs)"
    return {
        "format": FORMAT, "version": VERSION,
        "model": model_section(original, cfg.model, cfg.resolution),
        "data": {"name": cfg.data, "sha256": data_sha256(dataset), "split_seed": cfg.seed,
                 "num_classes": dataset.num_classes, "new_head": new_head,
                 "train_used": len(dataset.train.subset(cfg.train_subset, cfg.seed))},
        "settings": settings,
        "metric": "val_accuracy",
        "note": (f"FAST ESTIMATE (settings.method = fast), not fine-tune measurements: each delta is the "
                 f"first-order loss decrease of training that candidate ({cfg.statistic} statistic of the "
                 f"QAS-scaled int8 gradients of {settings['grad_samples']} training samples, head warmed up as the "
                 f"classifier-only run trains it), " +
                 ("scaled so that one real fine-tune of the top candidate matches its measured validation gain"
                  if cal["method"] == "run" else "in relative units (no calibration run)") +
                 f"; baseline = validation accuracy of the classifier-only run on {_n(cfg, dataset)} "
                 f"validation samples"),
        "grid": {"bias_k": list(grid.bias_k), "layers": list(grid.layers), "ratios": list(grid.ratios)},
        "baseline": base["accuracy"],
        "bias": bias,
        "weight": weight,
        "accuracy": {"bias": {k: accuracy(base["accuracy"] + v) for k, v in bias.items()},
                     "weight": {i: {r: accuracy(base["accuracy"] + bias[str(n - int(i))] + v) for r, v in row.items()}
                                for i, row in weight.items()}},
        "unstable": list(failed), "failed": failed,
        "runs": 1 + (cal["method"] == "run"), "runs_new": 1 + (cal["method"] == "run"),
        "wall_seconds": seconds["total"], "run_seconds": round(seconds["head"] + seconds["calibration"], 2),
        "workers": 1,
    }


def _n(cfg: FastConfig, dataset: SplitDataset) -> int:
    return len(dataset.val.subset(cfg.eval_subset, cfg.seed + 1))


def _run_label(run: dict) -> str:
    return f"w{run['layer']}@{run['ratio']:g}+b{run['bias']}" if run["layer"] is not None else f"b{run['bias']}"




def _check(cfg: FastConfig) -> None:
    from mcutrain.train.int8_optim import OPTIMIZERS, UPDATE_RULES

    if cfg.optimizer not in OPTIMIZERS:
        raise McutrainError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if cfg.update_rule not in UPDATE_RULES:
        raise McutrainError(f"unknown update rule {cfg.update_rule!r}; choose {', '.join(UPDATE_RULES)}")
    if cfg.statistic not in fg.STATISTICS:
        raise McutrainError(f"unknown statistic {cfg.statistic!r}; choose {', '.join(fg.STATISTICS)}")
    if cfg.calibration not in CALIBRATIONS:
        raise McutrainError(f"unknown calibration {cfg.calibration!r}; choose {', '.join(CALIBRATIONS)}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise McutrainError("--epochs and --batch-size must be >= 1")
    if min(cfg.train_subset, cfg.grad_samples, cfg.eval_subset, cfg.seed, cfg.resolution) < 0:
        raise McutrainError("--subset, --grad-samples, --eval-subset, --seed and --resolution must be >= 0")
    if 0 < cfg.grad_samples < 2 * cfg.batch_size:
        raise McutrainError(f"--grad-samples must be at least two batches ({2 * cfg.batch_size}) or 0 (all), "
                            f"got {cfg.grad_samples}")
    if not is_auto(cfg.lr):
        check_learning_rate(cfg.lr)
    if not cfg.out:
        raise McutrainError("--out is required: the estimate is written there as contrib.json")


__all__ = ["CALIBRATIONS", "FastConfig", "candidate_scores", "channel_orders", "estimate", "estimate_contrib",
           "fast_doc", "top_candidate"]
