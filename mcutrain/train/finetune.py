"""Fine-tuning an int8 model with a sparse-update scheme: the simulation of on-device training.

Top to bottom: load the int8 model (a zoo model or an imported graph: ``train.model_kind`` answers what
differs) and the data (a new task gets a new zero-initialised int8 head),
resolve the scheme to an UpdatePlan, permute channels so the ones worth updating are the first k
(a bit-identical model), build the int8 simulation (or its fp32 twin with ``float=True``),
train with the int8 optimizer (QAS, update rule) or plain fp32 SGD/Adam for the twin, evaluate the
test split before and after, judge the run (``train.health``), write the trained int8 model
atomically if it learned (or ``keep_failed``).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mcutrain.data import BatchLoader, ImageSet, Preprocessing, SplitDataset, load_dataset, mirror_safe
from mcutrain.errors import McutrainError, TrainingFailed
from mcutrain.sparse import UpdatePlan
from mcutrain.train import model_kind as mk
from mcutrain.train.evaluate import evaluate
from mcutrain.train.health import judge
from mcutrain.quant.sim_int8_backward import int8_cross_entropy
from mcutrain.train.int8_optim import OPTIMIZERS, UPDATE_RULES, Int8Optimizer, check_int8_backward
from mcutrain.train.learning_rate import check_learning_rate
from mcutrain.train.lr_auto import (AUTO, DEVICE_PROBE_EVAL, DEVICE_PROBE_TRAIN, LrChoice, choose_lr, derived_lr,
                                    head_curvature, is_auto, engine_lr, probe_steps, snap)
from mcutrain.train.prefix_cache import (
    CACHE_LIMIT_BYTES,
    CachedBatches,
    cache_splits,
    cached_bytes,
    first_trained_block,
)


@dataclass(frozen=True)
class FinetuneConfig:
    model: str
    data: str
    scheme: str
    out: str = ""
    optimizer: str = "sgd"
    momentum: float = 0.9
    qas: bool = True
    update_rule: str = "sr"
    epochs: int = 10
    batch_size: int = 32
    lr: float | str = AUTO  # a rate, or "auto": chosen on the validation split (train/lr_auto.py)
    resolution: int = 0  # 0: the model's own
    seed: int = 0
    augment: bool = False
    float: bool = False
    train_subset: int = 0  # 0: all training samples; else a seeded random subset of that size
    eval_subset: int = 0  # 0: all val/test samples; else a seeded random subset of each
    max_steps: int = 0  # 0: every step of every epoch; else stop after this many (``--lr auto``'s probes)
    backward: str = "float32"  # "int8": the integer backward of quant/int8_grad.py (plain SGD, no momentum)


def finetune(cfg: FinetuneConfig, *, progress: bool = True, model: mk.TrainableModel | None = None,
             dataset: SplitDataset | None = None, prefix_memo: dict | None = None,
             keep_failed: bool = False, probe: bool = False, per_image: bool = False) -> dict:
    """Fine-tune and evaluate. ``prefix_memo`` (a dict the caller keeps) lets sweeps over optimizers
    and learning rates reuse cached frozen-prefix activations of the same model, data and split.

    A run that did not learn (``train.health``: result ``failed``, ``health``) writes no model and,
    when ``cfg.out`` asked for one, raises ``TrainingFailed`` carrying the result; ``keep_failed``
    writes the model first (never a non-finite one) and still raises. Without ``cfg.out`` (the
    analysis' runs) the failed result is returned. ``probe``: a short run for ``--lr auto`` that
    measures validation accuracy and loss only (no test split, no judgement). ``per_image``: the result
    also has "test_correct", one "1"/"0" per test image in the split's order (paired tests between schemes)."""
    _check(cfg)
    original = model if model is not None else mk.load_trainable(cfg.model)
    dataset = dataset if dataset is not None else load_dataset(cfg.data, seed=cfg.seed)
    memo = {} if prefix_memo is None else prefix_memo
    choice = None
    if is_auto(cfg.lr):
        choice = auto_lr(cfg, original, dataset, memo)
        cfg = replace(cfg, lr=choice.lr)
        if progress:
            print(f"mcutrain finetune: {choice.summary()}", file=sys.stderr, flush=True)
    qmodel = mk.fit_task(original, tuple(dataset.classes))
    plan = mk.update_plan(qmodel, cfg.scheme)
    # The channels worth updating become the first k, which every executor then updates. The
    # permutation is a function of (model, plan): the pair identifies the cached prefix too.
    identity = mk.identity(qmodel, plan)
    qmodel = mk.prepared(qmodel, plan)
    resolution = mk.input_size(qmodel, cfg.resolution)

    torch.manual_seed(cfg.seed)
    net = mk.simulation(qmodel, float_twin=cfg.float)
    net.set_trainable(plan)
    if cfg.backward != "float32":  # the fp32 twin has no int8 backward (refused by _check)
        net.set_backward(cfg.backward)
    dataset = _subsampled(dataset, cfg)
    task = _Task(net, plan, dataset, dataset.train, resolution, mk.preprocessing(qmodel), cfg,
                 memo, identity, progress=progress)
    before = None if probe else task.accuracy("test")
    step = _make_step(net, task.model_fn, cfg)
    updates = 0  # optimizer steps: a run of a few cannot be judged (train.health)
    history, val_per_epoch, seen, t0, diverged = [], [], 0, time.perf_counter(), False
    # One bar over every epoch's steps, advanced by update() (the iterator form shows a stale count
    # when refreshed by set_postfix), kept at the end: it moves even when an epoch takes 0.1 s.
    bar = tqdm(total=cfg.epochs * len(task.batches), desc="finetune", unit="step", disable=not progress)
    for epoch in range(cfg.epochs):
        task.batches.set_epoch(epoch)
        losses = []
        bar.set_description(f"finetune epoch {epoch + 1}/{cfg.epochs}", refresh=False)
        for x, y in task.batches:
            losses.append(step(x, y))
            updates += 1
            seen += len(y)
            bar.set_postfix(loss=f"{sum(losses) / len(losses):.3f}", refresh=False)
            bar.update()
            if updates == cfg.max_steps:
                break
        history.append(sum(losses) / max(len(losses), 1))
        if not math.isfinite(history[-1]) or _non_finite_parameters(net):
            diverged = True  # no point in more epochs; the caller learns why from "diverged"
            break
        if progress:  # a person watching tunes on validation, never on test (evaluation changes nothing)
            val_per_epoch.append(task.accuracy("val"))
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: train loss {history[-1]:.4f} | "
                       f"val acc {val_per_epoch[-1] * 100:.2f}% (n={len(dataset.val)})", file=sys.stderr)
        if updates == cfg.max_steps:
            break
    bar.close()
    seconds = time.perf_counter() - t0
    if probe:
        val = {"accuracy": 0.0, "loss": math.inf} if diverged else task.metrics("val")
        return {"val_accuracy": val["accuracy"], "val_loss": val["loss"], "diverged": diverged}
    bad = _non_finite_parameters(net)
    val_accuracy = task.accuracy("val")
    health = judge(history, len(mk.classes_of(qmodel)), val_accuracy=val_accuracy, val_n=len(dataset.val),
                   parameters_finite=not bad, updates=updates)
    written = bool(cfg.out) and (health.ok or (keep_failed and not diverged))
    if written:
        record = recorded_config(cfg, choice)
        mk.save_trained(cfg.out, qmodel, net, mk.finetune_record(record), record)
    test = task.metrics("test", per_image)
    result = {"accuracy": test["accuracy"], "accuracy_before": before, "val_accuracy": val_accuracy,
              "n": len(dataset.test), "train_loss": history[-1] if history else None,
              "train_loss_per_epoch": history, "images_per_s": seen / max(seconds, 1e-9),
              "seconds": round(seconds, 2), "diverged": diverged, "failed": not health.ok,
              "health": health.to_dict(), "prefix_cached_blocks": task.split or 0,
              "trainable": trainable_summary(plan), "config": recorded_config(cfg, choice),
              "out": cfg.out if written else None,
              "val_accuracy_per_epoch": val_per_epoch}  # measured only with progress on (a person watching)
    if per_image:
        result["test_correct"] = "".join("1" if c else "0" for c in test["correct"])
    if cfg.out and not health.ok:
        raise TrainingFailed(_failure_message(cfg, health, history, bad, diverged, written, choice), result=result)
    return result


def _failure_message(cfg: FinetuneConfig, health, history: list, bad: list, diverged: bool, written,
                     choice: LrChoice | None) -> str:
    """One line: why the run failed, what happened to the model, what to do."""
    if diverged:  # non-finite: never written, not even with --keep-failed
        what = f"{len(bad)} parameters are not finite, first {bad[0]}" if bad else f"the loss became {history[-1]}"
        return (f"training diverged in epoch {len(history)} ({what}); "
                f"nothing was written to {cfg.out}: lower --lr (now {cfg.lr:g})")
    fate = (f"the model was written to {cfg.out} anyway (--keep-failed)" if written else
            f"nothing was written to {cfg.out} (--keep-failed writes it)")
    how = f" (--lr auto chose {cfg.lr:.3g})" if choice else " or use --lr auto"
    return f"training failed to learn: {health.reason}; {fate}: {health.lr_advice(cfg.lr)}{how}"


def recorded_config(cfg: FinetuneConfig, choice: LrChoice | None = None) -> dict:
    """The settings a run records. A ``--float`` run trains the fp32 twin, where QAS does not apply:
    it records no QAS flag rather than the (ignored) default ``qas: true``. A rate chosen by
    ``--lr auto`` is recorded with what was tried (``lr_auto``)."""
    config = asdict(cfg)
    if cfg.float:
        config.pop("qas")
    if choice is not None:
        config["lr_auto"] = choice.as_dict()
    return config


def auto_lr(cfg: FinetuneConfig, qmodel: mk.TrainableModel, dataset: SplitDataset, memo: dict) -> LrChoice:
    """``--lr auto``: the rate derived from the head's curvature (train/lr_auto.py), refined by short
    seeded runs on the validation split that share the run's frozen-prefix cache."""
    prep = mk.preprocessing(qmodel)
    subsampled = _subsampled(dataset, cfg)
    train = subsampled.train
    curvature = head_curvature(qmodel, train, mk.input_size(qmodel, cfg.resolution), prep, cfg.seed)
    per_epoch = -(-len(train) // cfg.batch_size)

    def probe(lr: float, steps: int) -> float:
        short = replace(cfg, lr=lr, out="", max_steps=steps, epochs=-(-steps // per_epoch))
        return finetune(short, progress=False, model=qmodel, dataset=dataset, prefix_memo=memo,
                        probe=True)["val_accuracy"]

    derived = derived_lr(curvature, optimizer=cfg.optimizer, momentum=cfg.momentum)
    if not (cfg.qas or cfg.float):  # the same fp32-sized step needs a rate 1/s_W^2 larger without QAS
        derived = snap(derived / weight_step_factor(qmodel))
    steps = probe_steps(cfg.epochs * per_epoch, cfg.batch_size)
    return choose_lr(derived, steps, probe, curvature=curvature, clock=time.perf_counter,
                     classes=len(dataset.classes), val_n=len(subsampled.val))


def no_qas_warning(qmodel: mk.TrainableModel, cfg: FinetuneConfig) -> str | None:
    """What a user of ``--no-qas`` must know (DESIGN.md section 4): without QAS the int8 step on a
    weight is s_W^2 times the fp32 step, so the QAS learning rate learns next to nothing. Names the
    factor for this model (median s_W^2 over its conv channels) and the rate that gives QAS-sized steps."""
    if cfg.float or cfg.qas:
        return None
    factor = weight_step_factor(qmodel)
    if is_auto(cfg.lr):
        return (f"--no-qas: without QAS an int8 weight step is s_W^2 times the fp32 step (median s_W^2 of this "
                f"model: {factor:.1e}); --lr auto divides its rates by that factor (DESIGN.md section 4)")
    return (f"--no-qas: without QAS an int8 weight step is s_W^2 times the fp32 step (median s_W^2 of this "
            f"model: {factor:.1e}), so --lr {cfg.lr:g} moves weights like an fp32 rate of {cfg.lr * factor:.1e}; "
            f"rates near {cfg.lr / factor:.0e} give steps of the QAS size (DESIGN.md section 4)")


def weight_step_factor(qmodel: mk.TrainableModel) -> float:
    """Median s_W^2 over the conv channels: an int8 step without QAS is this times the fp32 step."""
    scales = np.concatenate([c.w_scale[c.w_scale > 0] for c in mk.convs(qmodel)]).astype(np.float64)
    return float(np.median(scales ** 2))


class _Task:
    """Training batches and evaluation, through the frozen-prefix cache when that is exact and fits."""

    def __init__(self, net, plan: UpdatePlan, dataset: SplitDataset, train: ImageSet, resolution,
                 prep: Preprocessing, cfg: FinetuneConfig, memo: dict, identity: tuple, progress: bool = False):
        self.net, self.resolution, self.prep = net, resolution, prep
        self.splits = {"train": train, "val": dataset.val, "test": dataset.test}
        self.split = None if cfg.augment else first_trained_block(net, plan)
        total = sum(len(d) for d in self.splits.values())
        if self.split is not None and cached_bytes(net, total, resolution, self.split) > CACHE_LIMIT_BYTES:
            self.split = None
        if self.split is None:
            self.model_fn = net
            self.batches = BatchLoader(train, cfg.batch_size, resolution, shuffle=True, seed=cfg.seed,
                                       augment=cfg.augment, preprocessing=prep,
                                       hflip=mirror_safe(cfg.data))
            return
        split = self.split
        key = (id(identity[0]), identity[1], type(net).__name__, split, resolution, dataset.name, cfg.seed,
               cfg.train_subset, cfg.eval_subset)
        if key not in memo:  # the entry keeps the model's first conv alive, so its id stays unique
            memo[key] = (identity[0], cache_splits(net, self.splits, resolution, prep, split, progress=progress))
        self.features = memo[key][1]
        self.model_fn = lambda t: net.suffix(t, split)
        self.batches = CachedBatches(self.features["train"], torch.from_numpy(train.labels), cfg.batch_size, cfg.seed)

    def accuracy(self, split: str) -> float:
        return self.metrics(split)["accuracy"]

    @torch.no_grad()
    def metrics(self, split: str, per_image: bool = False) -> dict:
        """{"accuracy", "loss"} on ``split`` (evaluation changes nothing); ``per_image`` adds "correct"."""
        data = self.splits[split]
        if self.split is None:
            return evaluate(self.net, data, self.resolution, self.prep, per_image=per_image)
        was = self.net.training
        self.net.eval()
        feats, labels = self.features[split], torch.from_numpy(data.labels)
        correct, loss_sum, hits = 0, 0.0, []
        for i in range(0, len(labels), 256):
            logits = self.model_fn(feats[i:i + 256].float())
            hit = logits.argmax(1) == labels[i:i + 256]
            correct += hit.sum().item()
            hits.append(hit.numpy())
            loss_sum += F.cross_entropy(logits, labels[i:i + 256], reduction="sum").item()
        self.net.train(was)
        out = {"accuracy": correct / len(labels), "loss": loss_sum / len(labels)}
        if per_image:
            out["correct"] = np.concatenate(hits) if hits else np.zeros(0, bool)
        return out


def device_auto_lr(qmodel: mk.TrainableModel, data: str, scheme: str, seed: int = 0,
                   dataset: SplitDataset | None = None) -> tuple[float, LrChoice]:
    """``--lr auto`` for the C engine (batch 1, plain SGD): the simulation's ``--lr auto`` for ``scheme``
    at ``finetune``'s defaults (batch 32, momentum 0.9; fast, through the frozen-prefix cache), scaled
    to batch 1 (train/lr_auto.py ``engine_lr``: the linear scaling rule, times ENGINE_HEADROOM unless the
    probe at twice the choice failed). Returns (rate, choice)."""
    dataset = dataset if dataset is not None else load_dataset(data, seed=seed)
    cfg = FinetuneConfig(model="", data=data, scheme=scheme, lr=AUTO, seed=seed,
                         train_subset=DEVICE_PROBE_TRAIN, eval_subset=DEVICE_PROBE_EVAL)
    choice = auto_lr(cfg, qmodel, dataset, {})
    return engine_lr(choice, batch_size=cfg.batch_size, momentum=cfg.momentum), choice


def _make_step(net, model_fn, cfg: FinetuneConfig):
    """One training step (forward, loss, backward, update) returning the loss."""
    if cfg.float:
        params = [p for p in net.parameters() if p.requires_grad]
        opt = (torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum) if cfg.optimizer == "sgd"
               else torch.optim.Adam(params, lr=cfg.lr))
    else:
        opt = Int8Optimizer(net, kind=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, qas=cfg.qas,
                            rule=cfg.update_rule, seed=cfg.seed, backward=cfg.backward)
    # The int8 backward starts from the engine's own loss gradient, per sample (sim_int8_backward).
    loss_fn = int8_cross_entropy if cfg.backward == "int8" else F.cross_entropy

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        loss = loss_fn(model_fn(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step


def _non_finite_parameters(net: torch.nn.Module) -> list[str]:
    """Names of parameters holding a NaN or an infinity (the fp32 twin's last update can make one
    after the last loss was seen finite; int8 weights cannot, float latents and biases can)."""
    return [name for name, p in net.named_parameters() if p.is_floating_point() and not torch.isfinite(p).all()]


def _subsampled(dataset: SplitDataset, cfg: FinetuneConfig) -> SplitDataset:
    """Seeded random subsets, when asked, so sweeps fit the machine (results say so)."""
    return replace(dataset, train=dataset.train.subset(cfg.train_subset, cfg.seed),
                   val=dataset.val.subset(cfg.eval_subset, cfg.seed + 1),
                   test=dataset.test.subset(cfg.eval_subset, cfg.seed + 2))


def trainable_summary(plan: UpdatePlan) -> dict:
    return {"scheme": plan.scheme, "bias_layers": sum(c.bias for c in plan.convs),
            "weight_layers": [{"layer": c.index, "name": c.name, "ratio": c.weight_ratio,
                               "kept_channels": c.kept_channels} for c in plan.convs if c.updates_weight]}


def _check(cfg: FinetuneConfig) -> None:
    if cfg.optimizer not in OPTIMIZERS:
        raise McutrainError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if cfg.update_rule not in UPDATE_RULES:
        raise McutrainError(f"unknown update rule {cfg.update_rule!r}; choose {', '.join(UPDATE_RULES)}")
    check_int8_backward(cfg.backward, cfg.optimizer, cfg.momentum, cfg.update_rule)
    if cfg.backward == "int8" and cfg.float:
        raise McutrainError("--backward int8 is the int8 model's integer backward; --float trains the fp32 twin")
    if cfg.epochs < 0 or cfg.batch_size < 1:
        raise McutrainError("--epochs must be >= 0 and --batch-size >= 1")
    if not is_auto(cfg.lr):
        check_learning_rate(cfg.lr)
