"""The fp32 twin of an int8 model: the same folded graph with dequantized weights, trained in fp32.

This is the fp32 baseline of the QAS ablation ("fp32 SGD-M"): same starting point, same sparse-update
semantics (biases, the first ``kept`` channels of weights, the classifier), no quantization anywhere.
``to_qmodel`` re-quantizes the trained weights per channel with the original activation scales.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mcutrain.quant.qmodel import QBlock, QConv, QModel
from mcutrain.quant.quantize import quantize_bias, quantize_weights
from mcutrain.quant.sim_model import BlockwiseNet
from mcutrain.sparse import UpdatePlan


class FloatConv(nn.Module):
    def __init__(self, q: QConv):
        super().__init__()
        self.q = q
        w = q.weight.astype(np.float32) * q.w_scale[:, None, None, None]
        b = q.bias.astype(np.float64) * q.x.scale * q.w_scale.astype(np.float64)
        self.weight = nn.Parameter(torch.from_numpy(w), requires_grad=False)
        self.bias = nn.Parameter(torch.from_numpy(b.astype(np.float32)), requires_grad=False)
        # ReLU6 is folded into the int8 clamp; in float it is the clamp range in real units.
        self.lo = q.y.scale * (q.qmin - q.y.zero)
        self.hi = q.y.scale * (q.qmax - q.y.zero)
        self.relu = q.qmin == q.y.zero
        self.kept = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q
        if q.general_geometry:  # real 0 is the int8 zero point: the same padding as the int8 conv
            top, bottom, left, right = q.padding
            y = F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, q.strides, 0, 1, q.groups)
        else:
            y = F.conv2d(x, self.weight, self.bias, q.stride, q.kernel // 2, 1, q.groups)
        return y.clamp(0.0, self.hi) if self.relu else y

    def to_qconv(self) -> QConv:
        w = self.weight.detach().numpy()
        w_q, w_scale = quantize_weights(w)
        frozen = np.zeros(len(w_scale), bool)
        frozen[list(self.q.frozen_channels)] = True
        w_scale = np.where(frozen, self.q.w_scale, w_scale).astype(np.float32)
        w_q = np.where(frozen[:, None, None, None], self.q.weight, w_q).astype(np.int8)
        return replace(self.q, weight=w_q, w_scale=w_scale,
                       bias=quantize_bias(self.bias.detach().numpy().astype(np.float64), self.q.x.scale, w_scale))


class FloatBlock(nn.Module):
    def __init__(self, qb: QBlock):
        super().__init__()
        self.pointwise1 = FloatConv(qb.pointwise1) if qb.pointwise1 is not None else None
        self.depthwise = FloatConv(qb.depthwise)
        self.pointwise2 = FloatConv(qb.pointwise2)
        self.residual = qb.add is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise1(x) if self.pointwise1 is not None else x
        y = self.pointwise2(self.depthwise(y))
        return x + y if self.residual else y


class FloatTwin(BlockwiseNet):
    """Same interface as Int8Net (convs, blocks, prefix/suffix, set_trainable, to_qmodel)."""

    cache_dtype = torch.float32

    def __init__(self, q: QModel):
        super().__init__()
        self.q = q
        self.first_conv = FloatConv(q.first_conv)
        self.blocks = nn.ModuleList(FloatBlock(qb) for qb in q.blocks)
        head = q.classifier
        self.head_w = nn.Parameter(torch.from_numpy(head.weight.astype(np.float32) * head.w_scale[:, None]))
        self.head_b = nn.Parameter(torch.from_numpy(
            (head.bias.astype(np.float64) * head.x.scale * head.w_scale).astype(np.float32)))

    def prefix(self, x: torch.Tensor, stop_block: int) -> torch.Tensor:
        return self.run_blocks(self.first_conv(x), 0, stop_block)

    def suffix(self, t: torch.Tensor, start_block: int) -> torch.Tensor:
        return F.linear(self.run_blocks(t, start_block).mean(dim=(2, 3)), self.head_w, self.head_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(x, 0), 0)

    def set_trainable(self, plan: UpdatePlan) -> None:
        for conv, update in zip(self.convs(), plan.convs, strict=True):
            conv.bias.requires_grad_(update.bias)
            conv.kept = update.kept_channels
            conv.weight.requires_grad_(conv.kept > 0)
            if conv.kept > 0:
                conv.weight.register_hook(_keep_first_channels(conv.kept, conv.q.groups > 1, conv.q.frozen_channels))
            if update.bias and conv.q.frozen_channels:
                conv.bias.register_hook(_zero_channels(conv.q.frozen_channels))

    def to_qmodel(self) -> QModel:
        head = self.q.classifier
        w_q, w_scale = quantize_weights(self.head_w.detach().numpy())
        w_scale = np.maximum(w_scale, 1e-8).astype(np.float32)
        new_head = replace(head, weight=w_q, w_scale=w_scale, bias=quantize_bias(
            self.head_b.detach().numpy().astype(np.float64), head.x.scale, w_scale))
        return self.q.with_convs([c.to_qconv() for c in self.convs()], new_head,
                                 provenance={**self.q.provenance, "float_finetuned": True})


def _keep_first_channels(kept: int, depthwise: bool, frozen: tuple[int, ...]):
    def hook(g: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(g)
        if depthwise:
            mask[:kept] = 1
        else:
            mask[:, :kept] = 1
        mask[list(frozen)] = 0
        return g * mask
    return hook


def _zero_channels(channels: tuple[int, ...]):
    def hook(g: torch.Tensor) -> torch.Tensor:
        g = g.clone()
        g[list(channels)] = 0
        return g
    return hook
