"""The int8 simulation as nn.Modules built from a QModel, and back.

Parameters hold the integers (conv/classifier weights as float32 holding int8 values, biases as
float64 holding int32 values); which of them train is decided by an UpdatePlan-like mapping from
conv index to (train bias, kept weight channels). The forward is bit-exact with the NumPy reference
executor and the generated C; ``to_qmodel`` writes the (trained) integers back.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from mcutrain.quant.int8_ops import add_params
from mcutrain.quant.qmodel import QAdd, QBlock, QConv, QLinear, QModel, QPool
from mcutrain.sparse import UpdatePlan
from mcutrain.quant.sim_int8_backward import check_mode, conv_factor, fork, scalar_factor
from mcutrain.quant.sim_ops import Int8AddFn, Int8AvgPoolFn, Int8ConvFn, Int8LinearFn


def set_trainable(net: nn.Module, plan: UpdatePlan) -> None:
    """Which conv biases and how many weight channels of ``net.convs()`` train (an int8 simulation,
    zoo or graph); the classifier always trains."""
    for conv, update in zip(net.convs(), plan.convs, strict=True):
        conv.bias.requires_grad_(update.bias)
        conv.kept = update.kept_channels
        conv.weight.requires_grad_(conv.kept > 0)
    net.classifier.weight.requires_grad_(True)
    net.classifier.bias.requires_grad_(True)


def set_backward(net: nn.Module, mode: str) -> None:
    """The backward of every layer of ``net``: "float32" (the default) or "int8" (``int8_grad``'s
    integer backward). An attribute of each layer, set here for all at once: no global state."""
    check_mode(mode)
    for module in net.modules():
        if hasattr(module, "backward_mode"):
            module.backward_mode = mode


class Int8Conv(nn.Module):
    backward_mode = "float32"  # see set_backward

    def __init__(self, q: QConv, index: int):
        super().__init__()
        self.q, self.index, self.name = q, index, q.name
        self.weight = nn.Parameter(torch.from_numpy(q.weight.astype(np.float32)), requires_grad=False)
        self.bias = nn.Parameter(torch.from_numpy(q.bias.astype(np.float64)), requires_grad=False)
        mult, shift = q.requant
        self.register_buffer("multiplier", torch.from_numpy(mult.astype(np.int64)), persistent=False)
        self.register_buffer("shift", torch.from_numpy(shift.astype(np.int64)), persistent=False)
        self.register_buffer("real_multiplier", torch.from_numpy(
            (mult.astype(np.float64) * np.exp2(shift.astype(np.float64) - 31)).astype(np.float32)), persistent=False)
        self.grad_factor = conv_factor(mult, shift)  # the int8 backward's (m, sh) of M[c]
        self.register_buffer("w_scale", torch.from_numpy(q.w_scale.copy()), persistent=False)
        self.x_zero, self.y_zero, self.x_scale = q.x.zero, q.y.zero, q.x.scale
        self.qmin, self.qmax, self.groups = q.qmin, q.qmax, q.groups
        # Zoo geometry keeps the plain (int stride, symmetric k // 2) path; general convs pass both.
        self.stride = q.strides if q.general_geometry else q.stride
        self.padding = q.padding if q.general_geometry else None
        self.kept = 0  # weight channels trained (0: frozen weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Int8ConvFn.apply(x, self.weight, self.bias, self)

    def to_qconv(self) -> QConv:
        return replace(self.q, weight=self.weight.detach().numpy().astype(np.int8),
                       bias=self.bias.detach().numpy().astype(np.int32))


class Int8Add(nn.Module):
    backward_mode = "float32"

    def __init__(self, q: QAdd):
        super().__init__()
        self.q = q
        self.params = add_params(q.a.scale, q.a.zero, q.b.scale, q.b.zero, q.y.scale, q.y.zero, q.qmin, q.qmax)
        self.a_ratio, self.b_ratio = q.a.scale / q.y.scale, q.b.scale / q.y.scale
        self.grad_factor_a, self.grad_factor_b = scalar_factor(self.a_ratio), scalar_factor(self.b_ratio)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return Int8AddFn.apply(a, b, self)


class Int8Pool(nn.Module):
    backward_mode = "float32"

    def __init__(self, q: QPool):
        super().__init__()
        self.q, self.x, self.y = q, q.x, q.y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Int8AvgPoolFn.apply(x, self)


class Int8Linear(nn.Module):
    backward_mode = "float32"

    def __init__(self, q: QLinear):
        super().__init__()
        self.q = q
        self.weight = nn.Parameter(torch.from_numpy(q.weight.astype(np.float32)))
        self.bias = nn.Parameter(torch.from_numpy(q.bias.astype(np.float64)))
        self.register_buffer("w_scale", torch.from_numpy(q.w_scale.copy()), persistent=False)
        self.register_buffer("logit_scale", torch.from_numpy((q.x.scale * q.w_scale.astype(np.float64))
                                                             .astype(np.float32)), persistent=False)
        self.x_zero, self.x_scale = q.x.zero, q.x.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Int8LinearFn.apply(x, self.weight, self.bias, self)

    def to_qlinear(self) -> QLinear:
        return replace(self.q, weight=self.weight.detach().numpy().astype(np.int8),
                       bias=self.bias.detach().numpy().astype(np.int32))


class Int8Block(nn.Module):
    backward_mode = "float32"

    def __init__(self, q: QBlock, first_index: int):
        super().__init__()
        i = first_index
        self.pointwise1 = None
        if q.pointwise1 is not None:
            self.pointwise1, i = Int8Conv(q.pointwise1, i), i + 1
        self.depthwise = Int8Conv(q.depthwise, i)
        self.pointwise2 = Int8Conv(q.pointwise2, i + 1)
        self.add = Int8Add(q.add) if q.add is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x
        if self.add is not None and self.backward_mode == "int8" and torch.is_grad_enabled():
            x, skip = fork(x, 2)  # x is read twice: its gradients meet in the spec's fan-out sum
        y = self.pointwise1(x) if self.pointwise1 is not None else x
        y = self.pointwise2(self.depthwise(y))
        return self.add(skip, y) if self.add is not None else y


class BlockwiseNet(nn.Module):
    """What the int8 simulation and its fp32 twin share: first_conv + blocks, walked the same way."""

    def convs(self) -> list[nn.Module]:
        """Conv layers in forward order (the paper's conv index)."""
        return [self.first_conv] + [c for b in self.blocks
                                    for c in (b.pointwise1, b.depthwise, b.pointwise2) if c is not None]

    def run_blocks(self, t: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
        for block in self.blocks[start:stop]:
            t = block(t)
        return t


class Int8Net(BlockwiseNet):
    """The whole int8 network; takes the float input of the loader, returns fp32 logits."""

    cache_dtype = torch.int8  # what a frozen-prefix cache stores: the int8 activations themselves
    backward_mode = "float32"  # set_backward

    def __init__(self, q: QModel):
        super().__init__()
        self.q = q
        self.first_conv = Int8Conv(q.first_conv, 0)
        blocks, index = [], 1
        for qb in q.blocks:
            blocks.append(Int8Block(qb, index))
            index += len(qb.convs())
        self.blocks = nn.ModuleList(blocks)
        self.pool = Int8Pool(q.pool)
        self.classifier = Int8Linear(q.classifier)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Loader floats (p - 128) * scale -> the int8 input p - 128 (exact integers)."""
        return torch.round(x / self.q.input.scale).clamp_(-128, 127) + self.q.input.zero

    def features(self, x_q: torch.Tensor) -> torch.Tensor:
        return self.pool(self.run_blocks(self.first_conv(x_q), 0))

    def prefix(self, x: torch.Tensor, stop_block: int) -> torch.Tensor:
        """Loader floats -> the int8 input of block ``stop_block`` (for caching a frozen prefix)."""
        return self.run_blocks(self.first_conv(self.quantize_input(x)), 0, stop_block)

    def suffix(self, t: torch.Tensor, start_block: int) -> torch.Tensor:
        """The int8 input of block ``start_block`` -> logits."""
        return self.classifier(self.pool(self.run_blocks(t, start_block)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.quantize_input(x)))

    def set_trainable(self, plan: UpdatePlan) -> None:
        set_trainable(self, plan)

    def set_backward(self, mode: str) -> None:
        set_backward(self, mode)

    def to_qmodel(self) -> QModel:
        return self.q.with_convs([c.to_qconv() for c in self.convs()], self.classifier.to_qlinear())
