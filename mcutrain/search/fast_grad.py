"""The measurements behind the fast contribution estimate (``search.fast``): a warmed-up head and the
QAS-scaled gradient statistics of every candidate parameter, per channel.

Why a separate module: ``fast`` turns per-channel scores into a contrib.json; this module is the part
that touches the int8 simulation (``train.model_kind.simulation``: ``Int8Net`` for zoo models,
``GraphNet`` for imported graphs), and it computes exactly the gradients the int8 training sees:
the straight-through fp32 backward of the simulation, the loss of a NEW zero head for a new task
after that head was trained as the baseline run trains it, and the optimizer's QAS factors
(``int8_optim.qas_factors``: 1/s_w^2 per weight, 1/(s_w s_x)^2 per bias, 0 on frozen channels).

Per element e of a candidate tensor, over m mini-batch gradients g_1..g_m (batch size B, the
fine-tune's), two statistics are accumulated, each times the element's QAS factor q_e:

  signal  q_e * (S1_e^2 - S2_e) / (m (m - 1))   S1 = sum_b g_b, S2 = sum_b g_b^2: the unbiased
          estimate of q_e * gbar_e^2 (the cross terms g_a g_b, a != b). lr * sum_e q_e gbar_e^2 is the
          first-order loss decrease of one full-batch int8 SGD step on the group (Taylor); mini-batch
          noise cancels in expectation.
  fisher  q_e * S2_e / m: the diagonal empirical Fisher information at batch level (the squared
          gradient sums of Fisher pruning / FISH masks), which also counts the gradient noise.
  snr     signal_e / fisher_e (no q: it cancels): the share of an element's squared gradient that
          is consistent across batches; summed, the number of elements a step moves usefully. It is
          the loss decrease of a diagonal Newton step with the Fisher as the curvature, so it does not
          grow with a layer's gradient scale (a large gradient is also a large curvature).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from mcutrain.data import BatchLoader, ImageSet, Preprocessing
from mcutrain.sparse import UpdatePlan
from mcutrain.train.int8_optim import Int8Optimizer, qas_factors
from mcutrain.train.prefix_cache import CachedBatches

STATISTICS = ("signal", "fisher", "snr")


@dataclass(frozen=True)
class ConvScores:
    """Per-channel scores of one conv: ``bias[c]`` per output channel, ``weight[j]`` per ratio channel
    (input channel of a normal/pointwise conv, channel of a depthwise conv; None: not a candidate)."""

    bias: np.ndarray
    weight: np.ndarray | None


@torch.no_grad()
def features(net, data: ImageSet, size, prep: Preprocessing, batch_size: int = 128) -> torch.Tensor:
    """The classifier's int8 input for every image of ``data``, in order (exact integers as float32)."""
    loader = BatchLoader(data, batch_size, size, shuffle=False, preprocessing=prep)
    return torch.cat([net.features(net.quantize_input(x)) for x, _ in loader])


def train_head(net, train_features: torch.Tensor, labels: np.ndarray, *, epochs: int, batch_size: int, lr: float,
               momentum: float, optimizer: str, qas: bool, rule: str, seed: int) -> list[float]:
    """Train the classifier alone on cached features, as ``finetune`` trains the classifier-only run
    (same optimizer, QAS, update rule and seeded random streams, same batches in the same order):
    the baseline run itself. ``net`` must have only its classifier trainable. Returns epoch losses."""
    opt = Int8Optimizer(net, kind=optimizer, lr=lr, momentum=momentum, qas=qas, rule=rule, seed=seed)
    batches = CachedBatches(train_features, torch.from_numpy(labels), batch_size, seed)
    history = []
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        losses = []
        for x, y in batches:
            loss = F.cross_entropy(net.classifier(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        history.append(sum(losses) / max(len(losses), 1))
    return history


@torch.no_grad()
def head_metrics(net, val_features: torch.Tensor, labels: np.ndarray) -> dict:
    logits = net.classifier(val_features)
    y = torch.from_numpy(labels)
    return {"accuracy": (logits.argmax(1) == y).float().mean().item(),
            "loss": F.cross_entropy(logits, y).item()}


def candidate_plan(full: UpdatePlan, bias_from: int, layers: tuple[int, ...]) -> UpdatePlan:
    """``full`` (every bias and weight) cut to the candidates: biases of convs >= ``bias_from``, the
    weights of ``layers`` on every channel (so that every channel's gradient is computed)."""
    convs = tuple(replace(c, bias=c.index >= bias_from,
                          weight_ratio=1.0 if c.index in layers else 0.0,
                          kept_channels=c.channels if c.index in layers else 0) for c in full.convs)
    return replace(full, scheme="fast-estimate", convs=convs)


def gradient_scores(net, plan: UpdatePlan, data: ImageSet, size, prep: Preprocessing, *, batch_size: int,
                    seed: int, qas: bool, statistic: str) -> dict[int, ConvScores]:
    """Per-channel ``statistic`` (module docstring) of every trained conv of ``plan``, from the
    mini-batch gradients of the cross-entropy over ``data`` (seeded shuffle, the fine-tune's batch size)."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    return scores_from_sums(net, gradient_sums(net, plan, data, size, prep, batch_size=batch_size, seed=seed),
                            statistic, qas)


@dataclass(frozen=True)
class GradientSums:
    """Per trained tensor (conv index, "bias" | "weight"): the sum of the m mini-batch gradients and
    of their squares (float64)."""

    sums: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]
    batches: int


def gradient_sums(net, plan: UpdatePlan, data: ImageSet, size, prep: Preprocessing, *, batch_size: int,
                  seed: int) -> GradientSums:
    net.set_trainable(plan)
    net.classifier.weight.requires_grad_(False)  # the head's own gradient is not a candidate
    net.classifier.bias.requires_grad_(False)
    convs = net.convs()
    params = [(i, name, getattr(convs[i], name)) for i in range(len(convs)) for name in ("bias", "weight")
              if getattr(convs[i], name).requires_grad]
    s1 = [torch.zeros_like(p, dtype=torch.float64) for _, _, p in params]
    s2 = [torch.zeros_like(p, dtype=torch.float64) for _, _, p in params]
    loader = BatchLoader(data, batch_size, size, shuffle=True, seed=seed, preprocessing=prep)
    m = 0
    for x, y in loader:
        loss = F.cross_entropy(net(x), y)
        grads = torch.autograd.grad(loss, [p for _, _, p in params])
        for a, b, g in zip(s1, s2, grads):
            g = g.to(torch.float64)
            a += g
            b += g * g
        m += 1
    if m < 2:
        raise ValueError("the gradient statistics need at least two mini-batches")
    return GradientSums({(i, name): (a, b) for (i, name, _), a, b in zip(params, s1, s2)}, m)


def scores_from_sums(net, sums: GradientSums, statistic: str, qas: bool) -> dict[int, ConvScores]:
    convs = net.convs()
    out: dict[int, dict[str, np.ndarray]] = {}
    for (i, name), (a, b) in sums.sums.items():
        out.setdefault(i, {})[name] = _statistic(convs[i], name, a, b, sums.batches, statistic, qas)
    return {i: ConvScores(d.get("bias", np.zeros(convs[i].bias.shape[0])), d.get("weight")) for i, d in out.items()}


def _statistic(conv, name: str, s1: torch.Tensor, s2: torch.Tensor, m: int, statistic: str, qas: bool) -> np.ndarray:
    """Per-channel ``statistic`` from the sums of the mini-batch gradients and of their squares."""
    signal = (s1 * s1 - s2) / (m * (m - 1))
    if statistic == "snr":
        fisher = s2 / m
        ratio = torch.where(fisher > 0, signal / fisher.clamp_min(1e-300), torch.zeros_like(fisher))
        return _per_channel(conv, name, ratio.numpy(), qas, scaled=False)
    return _per_channel(conv, name, (signal if statistic == "signal" else s2 / m).numpy(), qas)


def _per_channel(conv, name: str, stat: np.ndarray, qas: bool, scaled: bool = True) -> np.ndarray:
    """QAS-scaled element statistics summed per channel: output channel for a bias, ratio channel
    (input channel; a depthwise conv's own channel) for a weight."""
    weight_f, bias_f = qas_factors(conv.w_scale.numpy(), conv.x_scale, conv.q.frozen_channels, qas)
    if not scaled:  # still 0 on frozen channels, which never move
        weight_f, bias_f = (np.where(f > 0, 1.0, 0.0) for f in (weight_f, bias_f))
    if name == "bias":
        return stat * bias_f.astype(np.float64)
    scaled = stat * weight_f.astype(np.float64)[:, None, None, None]
    return scaled.sum(axis=(1, 2, 3)) if conv.groups > 1 else scaled.sum(axis=(0, 2, 3))
