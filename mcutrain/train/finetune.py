"""Fine-tuning an int8 model with a sparse-update scheme: the simulation of on-device training.

Top to bottom: load the int8 model and the data (a new task gets a new zero-initialised int8 head),
resolve the scheme to an UpdatePlan, build the int8 simulation (or its fp32 twin with ``float=True``),
train with the int8 optimizer (QAS, update rule) or plain fp32 SGD/Adam for the twin, evaluate the
test split before and after, write the trained int8 model atomically.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mcutrain.data import BatchLoader, ImageSet, Preprocessing, SplitDataset, load_dataset
from mcutrain.errors import McutrainError
from mcutrain.quant.head import new_head
from mcutrain.quant.model_file import load_qmodel, save_qmodel
from mcutrain.quant.qmodel import QModel
from mcutrain.quant.sim_model import Int8Net
from mcutrain.sparse import UpdatePlan, load_scheme, resolve
from mcutrain.train.evaluate import evaluate
from mcutrain.train.float_twin import FloatTwin
from mcutrain.train.int8_optim import OPTIMIZERS, UPDATE_RULES, Int8Optimizer
from mcutrain.train.prefix_cache import (
    CACHE_LIMIT_BYTES,
    CachedBatches,
    cache_prefix,
    cached_bytes,
    first_trained_block,
)
from mcutrain.train.pretrain import MIRROR_UNSAFE


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
    lr: float = 0.05
    resolution: int = 0  # 0: the model's own
    seed: int = 0
    augment: bool = False
    float: bool = False
    train_subset: int = 0  # 0: all training samples; else a class-balanced-by-chance random subset


def finetune(cfg: FinetuneConfig, *, progress: bool = True, model: QModel | None = None,
             dataset: SplitDataset | None = None) -> dict:
    _check(cfg)
    qmodel = model if model is not None else load_qmodel(cfg.model)
    dataset = dataset if dataset is not None else load_dataset(cfg.data, seed=cfg.seed)
    qmodel = _fit_task(qmodel, dataset, cfg)
    plan = resolve(load_scheme(cfg.scheme, qmodel.spec.name), qmodel.spec)
    resolution = cfg.resolution or qmodel.resolution

    torch.manual_seed(cfg.seed)
    net = FloatTwin(qmodel) if cfg.float else Int8Net(qmodel)
    net.set_trainable(plan)
    task = _Task(net, plan, dataset, _subset(dataset.train, cfg.train_subset, cfg.seed), resolution,
                 Preprocessing.from_dict(qmodel.preprocessing), cfg)
    before = task.accuracy("test")
    step = _make_step(net, task.model_fn, cfg)
    history, seen, t0 = [], 0, time.perf_counter()
    for epoch in range(cfg.epochs):
        task.batches.set_epoch(epoch)
        losses = []
        bar = tqdm(task.batches, desc=f"finetune {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for x, y in bar:
            losses.append(step(x, y))
            seen += len(y)
            bar.set_postfix(loss=f"{sum(losses) / len(losses):.3f}")
        history.append(sum(losses) / max(len(losses), 1))
    seconds = time.perf_counter() - t0
    trained = net.to_qmodel()
    if cfg.out:
        save_qmodel(cfg.out, replace(trained, provenance={**trained.provenance, "finetune": asdict(cfg)}))
    return {"accuracy": task.accuracy("test"), "accuracy_before": before, "val_accuracy": task.accuracy("val"),
            "n": len(dataset.test), "train_loss": history[-1] if history else None,
            "train_loss_per_epoch": history, "images_per_s": seen / max(seconds, 1e-9),
            "seconds": round(seconds, 2), "prefix_cached_blocks": task.split or 0,
            "trainable": trainable_summary(plan), "config": asdict(cfg), "out": cfg.out or None}


class _Task:
    """Training batches and evaluation, through the frozen-prefix cache when that is exact and fits."""

    def __init__(self, net, plan: UpdatePlan, dataset: SplitDataset, train: ImageSet, resolution: int,
                 prep: Preprocessing, cfg: FinetuneConfig):
        self.net, self.resolution, self.prep = net, resolution, prep
        self.splits = {"train": train, "val": dataset.val, "test": dataset.test}
        self.split = None if cfg.float or cfg.augment else first_trained_block(net, plan)
        total = sum(len(d) for d in self.splits.values())
        if self.split is not None and cached_bytes(net, total, resolution, self.split) > CACHE_LIMIT_BYTES:
            self.split = None
        if self.split is None:
            self.model_fn = net
            self.batches = BatchLoader(train, cfg.batch_size, resolution, shuffle=True, seed=cfg.seed,
                                       augment=cfg.augment, preprocessing=prep,
                                       hflip=cfg.data not in MIRROR_UNSAFE)
            return
        split = self.split
        self.features = {k: cache_prefix(net, d, resolution, prep, split) for k, d in self.splits.items()}
        self.model_fn = lambda t: net.suffix(t, split)
        self.batches = CachedBatches(self.features["train"], torch.from_numpy(train.labels), cfg.batch_size, cfg.seed)

    @torch.no_grad()
    def accuracy(self, split: str) -> float:
        data = self.splits[split]
        if self.split is None:
            return evaluate(self.net, data, self.resolution, self.prep)["accuracy"]
        was = self.net.training
        self.net.eval()
        feats, labels = self.features[split], torch.from_numpy(data.labels)
        correct = sum((self.model_fn(feats[i:i + 256].float()).argmax(1) == labels[i:i + 256]).sum().item()
                      for i in range(0, len(labels), 256))
        self.net.train(was)
        return correct / len(labels)


def _make_step(net, model_fn, cfg: FinetuneConfig):
    """One training step (forward, loss, backward, update) returning the loss."""
    if cfg.float:
        params = [p for p in net.parameters() if p.requires_grad]
        opt = (torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum) if cfg.optimizer == "sgd"
               else torch.optim.Adam(params, lr=cfg.lr))
    else:
        opt = Int8Optimizer(net, kind=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, qas=cfg.qas,
                            rule=cfg.update_rule, seed=cfg.seed)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        loss = F.cross_entropy(model_fn(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step


def _fit_task(qmodel: QModel, dataset: SplitDataset, cfg: FinetuneConfig) -> QModel:
    """A dataset with other classes than the model's gets a new head (transfer to a new task)."""
    if tuple(dataset.classes) == tuple(qmodel.classes):
        return qmodel
    return new_head(qmodel, dataset.classes)


def _subset(data: ImageSet, n: int, seed: int) -> ImageSet:
    if not n or n >= len(data):
        return data
    idx = np.sort(np.random.default_rng(seed).permutation(len(data))[:n])
    return ImageSet(data.images[idx], data.labels[idx])


def trainable_summary(plan: UpdatePlan) -> dict:
    return {"scheme": plan.scheme, "bias_layers": sum(c.bias for c in plan.convs),
            "weight_layers": [{"layer": c.index, "name": c.name, "ratio": c.weight_ratio,
                               "kept_channels": c.kept_channels} for c in plan.convs if c.updates_weight]}


def _check(cfg: FinetuneConfig) -> None:
    if cfg.optimizer not in OPTIMIZERS:
        raise McutrainError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if cfg.update_rule not in UPDATE_RULES:
        raise McutrainError(f"unknown update rule {cfg.update_rule!r}; choose {', '.join(UPDATE_RULES)}")
    if cfg.epochs < 0 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise McutrainError("--epochs must be >= 0, --batch-size >= 1 and --lr > 0")
