"""Will a scheme train on the device? A short run of the C engine's own step in the simulation.

Why (issue 13, ResNet-8 with a new ``digits`` head): the searched schemes that update the weights of
the first convolution never trained on the C engine, while the engine computed exactly what the
simulation computes. The cause is the model, not the arithmetic: QAS makes an int8 step equal the
fp32 step (DESIGN.md s. 4) in the model's own real units, and the MLPerf Tiny ResNet-8 takes raw
pixels (input scale 1.0, values -128..127), so conv 0's weights (scales 1.4e-5..1.7e-4) move about
3 LSB per sample at lr 0.01 where every other trained weight moves 0.001..0.23 LSB: they random-walk
into the +-127 clamp (3.7% -> 18.8% saturated in 600 steps) and the features are destroyed. A rate
small enough for conv 0 is too small for the new zero head. The quick analysis cannot see it: its
runs are batch 32 with momentum, one short epoch, and noisy.

``batch1_check`` runs ``steps`` samples of plain SGD + QAS + stochastic rounding at batch 1 (the
engine's step, ``Int8Optimizer``; the engine is held equal to it bit for bit) and measures, per
trained weight tensor, the mean update per sample in LSB and the share of weights at the clamp before
and after, and the held-out accuracy at the end. ``unstable`` names the convs whose weights move more
than ``MAX_LSB_PER_STEP`` per sample: a caller (the demo) can drop those weights from the scheme
(``without_weights``) or fall back to a baseline before compiling.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from mcutrain.data import BatchLoader, SplitDataset
from mcutrain.sparse import UpdatePlan
from mcutrain.sparse.scheme import Scheme
from mcutrain.train import model_kind as mk
from mcutrain.train.evaluate import evaluate
from mcutrain.train.int8_optim import Int8Optimizer
from mcutrain.train.lr_auto import chance_band

# A weight that moves 1 LSB or more per sample on average random-walks across its 255 levels within a
# few thousand steps. Measured on ResNet-8 / digits at lr 0.01 (docs/bring-your-model.md): conv 0
# moved 3.1 LSB per step and its run never learned; the trained weights of schemes that learn moved
# 0.23 LSB per step at most.
MAX_LSB_PER_STEP = 1.0
WEIGHT_LIMIT = 127


@dataclass(frozen=True)
class WeightSteps:
    """One trained weight tensor during the check (``conv``: its scheme index; the classifier: n_convs)."""

    conv: int
    lsb_per_step: float  # mean |update| per sample, in LSB, over the trained slice
    saturated_before: float  # share of the trained slice at +-127
    saturated_after: float


@dataclass(frozen=True)
class Batch1Check:
    lr: float
    steps: int
    accuracy: float  # held-out accuracy after the steps
    chance: float  # accuracy at or below which the run is indistinguishable from guessing
    weights: tuple[WeightSteps, ...]

    def unstable(self, max_lsb_per_step: float = MAX_LSB_PER_STEP) -> tuple[int, ...]:
        """Convs whose weights move more than ``max_lsb_per_step`` LSB per sample at this rate."""
        return tuple(w.conv for w in self.weights if w.lsb_per_step > max_lsb_per_step)

    @property
    def learns(self) -> bool:
        return self.accuracy > self.chance

    def summary(self) -> str:
        moved = ", ".join(f"conv {w.conv} {w.lsb_per_step:.3g}" for w in self.weights)
        bad = self.unstable()
        verdict = f"unstable weights: conv {', '.join(map(str, bad))}" if bad else "no unstable weights"
        return (f"batch-1 check at lr {self.lr:.3g}, {self.steps} steps: held-out accuracy "
                f"{self.accuracy * 100:.1f}% (chance band {self.chance * 100:.1f}%); weight LSB per step: "
                f"{moved or 'none trained'}; {verdict}")


def batch1_check(model: mk.TrainableModel, plan: UpdatePlan, data: SplitDataset, *, lr: float, steps: int,
                 seed: int = 0, eval_n: int = 0) -> Batch1Check:
    """``steps`` batch-1 SGD steps of ``plan`` on ``model`` (the engine's step), measured (module docstring);
    ``eval_n`` held-out test samples judge the accuracy (0: the whole test split)."""
    model = mk.fit_task(model, tuple(data.classes))
    net = mk.simulation(mk.prepared(model, plan))
    net.set_trainable(plan)
    opt = Int8Optimizer(net, kind="sgd", lr=lr, momentum=0.0, qas=True, rule="sr", seed=seed)
    slots = [s for s in opt.slots if s.is_weight]
    start = [s.param.detach()[s.kept_slice].clone() for s in slots]
    moved = [0.0] * len(slots)
    size, prep = mk.input_size(model), mk.preprocessing(model)
    loader = BatchLoader(data.train, 1, size, shuffle=True, seed=seed, preprocessing=prep)
    done = 0
    while done < steps:
        for x, y in loader:
            before = [s.param.detach()[s.kept_slice].clone() for s in slots]
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
            for i, (s, b) in enumerate(zip(slots, before)):
                moved[i] += float((s.param.detach()[s.kept_slice] - b).abs().mean())
            done += 1
            if done == steps:
                break
    test = data.test.subset(eval_n, seed + 2) if eval_n else data.test
    accuracy = evaluate(net, test, size, prep)["accuracy"]
    weights = tuple(WeightSteps(s.tensor_id, moved[i] / max(steps, 1), _saturated(start[i]),
                                _saturated(s.param.detach()[s.kept_slice])) for i, s in enumerate(slots))
    return Batch1Check(lr, steps, accuracy, chance_band(len(data.classes), len(test)), weights)


def _saturated(w: torch.Tensor) -> float:
    return float((w.abs() >= WEIGHT_LIMIT).to(torch.float32).mean())


def without_weights(plan: UpdatePlan, convs: Iterable[int]) -> UpdatePlan:
    """``plan`` with the weights of ``convs`` frozen (their biases, and everything else, as they were)."""
    drop = set(convs)
    updates = tuple(replace(c, weight_ratio=0.0, kept_channels=0) if c.index in drop else c for c in plan.convs)
    return replace(plan, scheme=f"{plan.scheme} without weights of conv {', '.join(map(str, sorted(drop)))}"
                   if drop else plan.scheme, convs=updates)


def scheme_without_weights(scheme: Scheme, convs: Iterable[int]) -> Scheme:
    """The scheme document's form of ``without_weights`` (what the demo saves and compiles)."""
    drop = set(convs)
    if not drop:
        return scheme
    kept = tuple((i, r) for i, r in scheme.weight_ratios if i not in drop)
    note = f"weights of conv {', '.join(map(str, sorted(drop)))} dropped: they move > {MAX_LSB_PER_STEP} LSB per step"
    return replace(scheme, weight_ratios=kept, description=f"{scheme.description}; {note}".lstrip("; "))


__all__ = ["Batch1Check", "MAX_LSB_PER_STEP", "WeightSteps", "batch1_check", "scheme_without_weights",
           "without_weights"]
