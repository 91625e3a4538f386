"""Autograd functions of the int8 simulation: exact int8 forward, fp32 backward (DESIGN.md section 3).

Integer tensors travel as float tensors holding exact integers (autograd needs floating point).
Forward accumulators are exact: a conv runs in float32 only when the bound
``max_c sum|w_c| * 255`` proves every partial sum stays below 2**24, otherwise in float64; the int32
bias is added and requantized in int64 with the fixed-point primitives of ``fixedpoint`` (the same
as the NumPy executor and the C kernels).

Backward (``layer.backward_mode`` "float32", the default) is fp32 with respect to the integer-domain
values, straight-through through rounding:
``g_acc = g_y * M * mask`` (``M`` the real value the fixed-point multiplier encodes, ``mask`` the
inside-the-clamp bit), ``g_x = conv_input_grad(w_q, g_acc)``, ``g_w = conv_weight_grad(x_q - z_x,
g_acc)`` restricted to the first ``kept`` channels (input channels of a 1x1/normal conv, channels of
a depthwise conv) so a sparse update never computes what it does not apply, ``g_b = sum(g_acc)``.
Mode "int8" is the integer backward of ``int8_grad`` (``sim_int8_backward``).
"""

from __future__ import annotations

import torch
from torch.nn.grad import conv2d_input, conv2d_weight

from mcutrain.quant.fixedpoint import requantize_with_mask_torch
from mcutrain.quant.int8_ops import avgpool_int8_with_mask_torch, quantized_add_with_mask_torch
from mcutrain.quant import sim_int8_backward as int8_bw

EXACT_FLOAT32 = 2.0**24


def exact_conv(xz: torch.Tensor, w: torch.Tensor, stride, groups: int, padding=None) -> torch.Tensor:
    """Integer convolution of zero-point-shifted input, exact, returned as int64.

    ``stride``: one int or (height, width); ``padding``: (top, bottom, left, right) or None for
    ``kernel // 2`` on every side. Padding the shifted input with zeros is padding the input with its
    zero point."""
    bound = w.abs().flatten(1).sum(1).max().item() * 255.0
    dtype = torch.float32 if bound < EXACT_FLOAT32 else torch.float64
    xz, pad = _padded(xz.to(dtype), w, padding)
    acc = torch.nn.functional.conv2d(xz, w.to(dtype), None, stride, pad, 1, groups)
    return acc.to(torch.int64)


def _padded(xz: torch.Tensor, w: torch.Tensor, padding) -> tuple[torch.Tensor, tuple[int, int]]:
    """(input, conv2d's symmetric padding): asymmetric padding is applied here with F.pad (zeros)."""
    kh, kw = w.shape[-2:]
    if padding is None:
        return xz, (kh // 2, kw // 2)
    top, bottom, left, right = padding
    if top == bottom and left == right:
        return xz, (top, left)
    return torch.nn.functional.pad(xz, (left, right, top, bottom)), (0, 0)


def input_grad(x_shape, weight: torch.Tensor, g_acc: torch.Tensor, stride, groups: int, padding=None) -> torch.Tensor:
    """Gradient w.r.t. the conv input (the transposed conv), cropped where the padding was asymmetric."""
    kh, kw = weight.shape[-2:]
    top, bottom, left, right = padding if padding is not None else (kh // 2, kh // 2, kw // 2, kw // 2)
    if top == bottom and left == right:
        return conv2d_input(x_shape, weight, g_acc, stride, (top, left), 1, groups)
    n, c, h, w = x_shape
    padded = (n, c, h + top + bottom, w + left + right)
    g = conv2d_input(padded, weight, g_acc, stride, 0, 1, groups)
    return g[:, :, top:top + h, left:left + w].contiguous()


class Int8ConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, layer):
        xz = x - layer.x_zero
        acc = exact_conv(xz, weight, layer.stride, layer.groups, layer.padding)
        acc += bias.to(torch.int64)[None, :, None, None]
        y, mask = requantize_with_mask_torch(acc, layer.multiplier, layer.shift, layer.y_zero,
                                             layer.qmin, layer.qmax, out_dtype=x.dtype)
        ctx.layer, ctx.x_shape = layer, x.shape
        # The input is kept only when this layer's weight trains: frozen layers store just the mask.
        ctx.save_for_backward(xz if weight.requires_grad else None, weight, mask)
        return y

    @staticmethod
    def backward(ctx, g_y):
        layer = ctx.layer
        if layer.backward_mode == "int8":
            return int8_bw.conv_backward(ctx, g_y, input_grad, partial_weight_grad)
        xz, weight, mask = ctx.saved_tensors
        g_acc = g_y * mask * layer.real_multiplier[None, :, None, None]
        g_x = g_w = g_b = None
        if ctx.needs_input_grad[0]:
            g_x = input_grad(ctx.x_shape, weight, g_acc, layer.stride, layer.groups, layer.padding)
        if ctx.needs_input_grad[1]:
            g_w = partial_weight_grad(xz, weight, g_acc, layer.stride, layer.groups, layer.kept, layer.padding)
        if ctx.needs_input_grad[2]:
            g_b = g_acc.sum(dim=(0, 2, 3)).to(torch.float64)
        return g_x, g_w, g_b, None


def partial_weight_grad(xz: torch.Tensor, weight: torch.Tensor, g_acc: torch.Tensor, stride,
                        groups: int, kept: int, padding=None) -> torch.Tensor:
    """Weight gradient of the first ``kept`` channels only; the rest is zero and never computed."""
    xz, pad = _padded(xz, weight, padding)
    g_w = torch.zeros_like(weight)
    if groups == 1:
        k = min(kept, weight.shape[1])
        g_w[:, :k] = conv2d_weight(xz[:, :k], (weight.shape[0], k) + tuple(weight.shape[2:]), g_acc, stride, pad)
    else:
        k = min(kept, weight.shape[0])
        g_w[:k] = conv2d_weight(xz[:, :k], (k, 1) + tuple(weight.shape[2:]), g_acc[:, :k], stride, pad, groups=k)
    return g_w


class Int8AddFn(torch.autograd.Function):
    """Residual add; gradients flow to both inputs scaled by s_in / s_y (and summed at fan-out by autograd)."""

    @staticmethod
    def forward(ctx, a, b, layer):
        y, mask = quantized_add_with_mask_torch(a, b, layer.params)
        ctx.layer = layer
        ctx.save_for_backward(mask)
        return y.to(a.dtype)

    @staticmethod
    def backward(ctx, g_y):
        if ctx.layer.backward_mode == "int8":
            return int8_bw.add_backward(ctx, g_y)
        (mask,) = ctx.saved_tensors
        g = g_y * mask
        return g * ctx.layer.a_ratio, g * ctx.layer.b_ratio, None


class Int8AvgPoolFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, layer):
        y, mask = avgpool_int8_with_mask_torch(x, layer.x.zero, layer.x.scale, layer.y.scale, layer.y.zero)
        ctx.layer, ctx.hw = layer, x.shape[2:]
        ctx.save_for_backward(mask)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, g_y):
        (mask,) = ctx.saved_tensors
        h, w = ctx.hw
        if ctx.layer.backward_mode == "int8":
            real = ctx.layer.x.scale / (ctx.layer.y.scale * h * w)
            return int8_bw.as_input_dtype(int8_bw.mean_backward(g_y, mask, real, (h, w)), g_y.dtype), None
        g = g_y * mask * (ctx.layer.x.scale / (ctx.layer.y.scale * h * w))
        return g[:, :, None, None].expand(-1, -1, h, w).contiguous(), None


class Int8LinearFn(torch.autograd.Function):
    """Classifier: acc = (x - z) @ w^T + b exactly; logits = s_x * s_w[k] * acc in fp32."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer):
        xz = (x - layer.x_zero).to(torch.float64)
        acc = xz @ weight.to(torch.float64).t() + bias.to(torch.float64)
        ctx.layer = layer
        ctx.save_for_backward(xz.to(torch.float32), weight)
        return (acc * layer.logit_scale.to(torch.float64)).to(torch.float32)

    @staticmethod
    def backward(ctx, g_logits):
        if ctx.layer.backward_mode == "int8":
            return int8_bw.linear_backward(ctx, g_logits)
        xz, weight = ctx.saved_tensors
        g_acc = g_logits * ctx.layer.logit_scale
        g_x = g_acc @ weight if ctx.needs_input_grad[0] else None
        g_w = g_acc.t() @ xz if ctx.needs_input_grad[1] else None
        g_b = g_acc.sum(0).to(torch.float64) if ctx.needs_input_grad[2] else None
        return g_x, g_w, g_b, None
