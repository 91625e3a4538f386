"""Optimizers for int8 parameters: QAS, SGD (+momentum) / Adam, and the update rules (DESIGN.md s. 4).

For every trained tensor the step is, element by element, in float32 (the arithmetic the C engine
repeats):
  g~ = g * qas              qas = 1/s_w[c]^2 for weights, 1/(s_w[c]*s_x)^2 for biases (1 without QAS),
                            0 for frozen (degenerate) channels, which never move (``qas_factors``:
                            one function, shared with the engine's update pass)
  d  = g~ (SGD) | m = mu*m + g~; d = m (momentum) | Adam's m/(sqrt(v)+eps) with bias correction
  weights, rule "sr":      w <- clamp(stochastic_round(w - lr*d), -127, 127)   (RNG stream: seed, step,
                            tensor id = conv index, classifier = number of convs; element index = C
                            order within the trained slice)
  biases (both rules):     b <- sat32(b + floor(0.5 - lr*d))    (round to nearest, in float32)
  rule "latent":           fp32 latent copies L <- L - lr*d, the forward uses clamp(round(L)):
                            the reference implementation's simulation, for comparison only.
Only the first ``kept`` channels of a weight are touched (input channels of a 1x1/normal conv,
channels of a depthwise conv), exactly the slice the simulation computes gradients for.

With ``backward="int8"`` (the net's integer backward, ``quant.sim_int8_backward``) the step is the
fixed-point update of ``quant.int8_grad`` instead: plain SGD (no momentum, rule "sr"), from the exact
gradient ``param.int8_grad`` = (G, E, batch B): ``c = fl32(lr / B * qas[k])`` as ``m_c * 2**x_c``,
weights ``update_weight`` with the random words of the same stream as "sr", biases ``update_bias``.
The batch mean is the sum of the per-sample integer gradients with the rate ``lr / B``: a batch of one
is the device's step bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mcutrain.errors import McutrainError
from mcutrain.quant.int8_grad import BACKWARDS
from mcutrain.quant.int8_grad import update_bias, update_factor, update_weight
from mcutrain.quant.rng import stochastic_round_torch, uniform_u32
from mcutrain.quant.sim_model import Int8Conv, Int8Net
from mcutrain.train.learning_rate import check_learning_rate

OPTIMIZERS = ("sgd", "adam")
UPDATE_RULES = ("sr", "latent")
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass
class Slot:
    """One trained tensor: where it lives, which slice trains, its QAS factor and optimizer state."""

    param: torch.nn.Parameter
    is_weight: bool
    tensor_id: int
    kept_slice: tuple
    qas: torch.Tensor  # broadcastable to the slice; 0 on frozen channels
    state: dict


class Int8Optimizer:
    def __init__(self, net: Int8Net, *, kind: str = "sgd", lr: float = 0.01, momentum: float = 0.0,
                 qas: bool = True, rule: str = "sr", seed: int = 0, betas=(0.9, 0.999), eps: float = 1e-8,
                 backward: str = "float32"):
        check_int8_backward(backward, kind, momentum, rule)
        self.backward = backward
        if kind not in OPTIMIZERS:
            raise McutrainError(f"unknown optimizer {kind!r}; choose one of {', '.join(OPTIMIZERS)}")
        if rule not in UPDATE_RULES:
            raise McutrainError(f"unknown update rule {rule!r}; choose one of {', '.join(UPDATE_RULES)}")
        lr = check_learning_rate(lr, "lr")
        self.kind, self.lr, self.momentum, self.rule, self.seed = kind, lr, momentum, rule, seed
        self.betas, self.eps, self.use_qas = betas, eps, qas
        self.step_count = 0
        self.slots = _slots(net, qas)

    def zero_grad(self) -> None:
        for s in self.slots:
            s.param.grad = None
            s.param.int8_grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        if self.backward == "int8":
            for s in self.slots:
                self._int8_update(s)
            return
        for s in self.slots:
            if s.param.grad is None:
                continue
            g = s.param.grad[s.kept_slice].to(torch.float32) * s.qas
            d = self._direction(s, g)
            if s.is_weight:
                self._update_weight(s, d)
            else:
                self._update_bias(s, d)

    def _int8_update(self, s: Slot) -> None:
        """The fixed-point step of ``int8_grad`` on the kept slice (see the module's docstring)."""
        grad = getattr(s.param, "int8_grad", None)
        if grad is None:
            return
        m_c, x_c = update_factor(self.lr / grad.batch, s.qas.numpy())
        G = grad.G[s.kept_slice]
        if s.is_weight:
            w = s.param.data[s.kept_slice].numpy().astype(np.int64)
            r = uniform_u32(self.seed, self.step_count, s.tensor_id, w.size).reshape(w.shape)
            new = update_weight(w, G, grad.E, m_c, x_c, r)
        else:
            new = update_bias(s.param.data.numpy().astype(np.int64), G, grad.E, m_c, x_c)
        s.param.data[s.kept_slice] = torch.from_numpy(new.astype(np.float64)).to(s.param.dtype)

    def _direction(self, s: Slot, g: torch.Tensor) -> torch.Tensor:
        if self.kind == "sgd":
            if self.momentum == 0:
                return g
            m = s.state.get("m")
            s.state["m"] = g.clone() if m is None else m.mul_(self.momentum).add_(g)
            return s.state["m"]
        b1, b2 = self.betas
        m = s.state.setdefault("m", torch.zeros_like(g)).mul_(b1).add_(g, alpha=1 - b1)
        v = s.state.setdefault("v", torch.zeros_like(g)).mul_(b2).addcmul_(g, g, value=1 - b2)
        m_hat = m / (1 - b1 ** self.step_count)
        v_hat = v / (1 - b2 ** self.step_count)
        return m_hat / (v_hat.sqrt() + self.eps)

    def _update_weight(self, s: Slot, d: torch.Tensor) -> None:
        w = s.param.data[s.kept_slice]
        if self.rule == "latent":
            latent = s.state.setdefault("latent", w.clone())
            latent.sub_(self.lr * d)
            s.param.data[s.kept_slice] = torch.round(latent).clamp_(-127, 127)
            return
        x = w - torch.tensor(self.lr, dtype=torch.float32) * d
        s.param.data[s.kept_slice] = stochastic_round_torch(x.contiguous(), self.seed, self.step_count,
                                                            s.tensor_id).clamp_(-127, 127).to(w.dtype)

    def _update_bias(self, s: Slot, d: torch.Tensor) -> None:
        b = s.param.data
        if self.rule == "latent":
            latent = s.state.setdefault("latent", b.clone())
            latent.sub_((self.lr * d).to(latent.dtype))
            s.param.data = torch.round(latent).clamp_(INT32_MIN, INT32_MAX)
            return
        delta = torch.floor(0.5 - torch.tensor(self.lr, dtype=torch.float32) * d)
        s.param.data = (b + delta.to(b.dtype)).clamp_(INT32_MIN, INT32_MAX)

    def state_bytes(self) -> int:
        """Optimizer state that would live in SRAM (momentum / Adam moments / latent copies)."""
        return sum(t.numel() * 4 for s in self.slots for t in s.state.values())


def check_int8_backward(backward: str, kind: str, momentum: float, rule: str) -> None:
    """The integer backward's update is the device's: plain SGD on int8 weights (McutrainError else)."""
    if backward not in BACKWARDS:
        raise McutrainError(f"unknown backward {backward!r}; choose one of {', '.join(BACKWARDS)}")
    if backward != "int8":
        return
    if kind != "sgd":
        raise McutrainError(f"--backward int8 updates with plain SGD (the device's); --optimizer {kind} "
                            "is not supported")
    if momentum != 0:
        raise McutrainError(f"--backward int8 updates with plain SGD (the device's): set --momentum 0 "
                            f"(got {momentum:g})")
    if rule != "sr":
        raise McutrainError(f"--backward int8 updates int8 weights with stochastic rounding: --update-rule {rule} "
                            "is not supported")


def qas_factors(w_scale, x_scale: float, frozen_channels=(), qas: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(weight factor, bias factor) per output channel, float32: the QAS rescaling of DESIGN.md s. 4.

    ``1 / s_w[c]**2`` for weights and ``1 / (s_w[c] * s_x)**2`` for biases, computed in float64 and
    rounded once to float32; 0 on ``frozen_channels`` and wherever the factor is not finite (a
    degenerate channel never moves). Without QAS both factors are 1 (0 on frozen channels).
    One function for every executor: the simulation's optimizer and the engine's update pass.
    """
    w = np.asarray(w_scale).astype(np.float64)
    frozen = np.zeros(len(w), dtype=bool)
    frozen[list(frozen_channels)] = True
    if not qas:
        ones = np.ones(len(w))
        return _masked_np(ones, frozen), _masked_np(ones, frozen)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        weight = 1.0 / w**2
        bias = 1.0 / (w * x_scale) ** 2
    return _masked_np(weight, frozen), _masked_np(bias, frozen)


def _masked_np(factor: np.ndarray, frozen: np.ndarray) -> np.ndarray:
    """QAS factor in float32 with 0 on frozen channels (and wherever it is not finite)."""
    return np.where(frozen | ~np.isfinite(factor), 0.0, factor).astype(np.float32)


def _slots(net: Int8Net, qas: bool) -> list[Slot]:
    slots = []
    for conv in net.convs():
        weight_f, bias_f = (torch.from_numpy(f) for f in
                            qas_factors(conv.w_scale.numpy(), conv.x_scale, conv.q.frozen_channels, qas))
        if conv.bias.requires_grad:
            slots.append(Slot(conv.bias, False, conv.index, (slice(None),), bias_f, {}))
        if conv.weight.requires_grad:
            sl = _kept_slice(conv)
            q = weight_f.view(-1, 1, 1, 1)
            slots.append(Slot(conv.weight, True, conv.index, sl, q[: conv.kept] if conv.groups > 1 else q, {}))
    cls = net.classifier
    n = len(net.convs())
    weight_f, bias_f = (torch.from_numpy(f) for f in qas_factors(cls.w_scale.numpy(), cls.x_scale, (), qas))
    slots.append(Slot(cls.bias, False, n, (slice(None),), bias_f, {}))
    slots.append(Slot(cls.weight, True, n, (slice(None), slice(None)), weight_f.view(-1, 1), {}))
    return slots


def _kept_slice(conv: Int8Conv) -> tuple:
    if conv.groups > 1:
        return (slice(0, conv.kept),)
    return (slice(None), slice(0, conv.kept))
