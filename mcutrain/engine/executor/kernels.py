"""NumPy kernels: the reference semantics of every op kind of the catalogue (``mcutrain.engine.ops``).

One table, ``KERNELS[kind](op, args, step) -> outputs``: ``args`` are the op's inputs as arrays (bit
masks already unpacked to bool), the result is a tuple of arrays, one per output, which the executor
stores into the arena (update kernels write their parameter array in place and return ()). Kernels
never write their inputs, so an in-place op (output over a dying input) is safe by construction.

Forward arithmetic is integer-exact: fixed-point primitives from ``mcutrain.quant.fixedpoint``, conv
accumulators in float64 (exact: |acc| < 2**53) turned into int64. The backward mirrors the
simulation: elementwise products in float32 in the simulation's order (bit-identical), contractions
(conv transposes, correlations, sums) in float64 rounded once to float32 (the simulation's float32
sums differ in the last bits; the equivalence tests bound the effect). The update ops use the shared
stochastic rounding of ``mcutrain.quant.rng``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mcutrain.engine.ir import Op
from mcutrain.engine.passes.fuse_expand import split
from mcutrain.quant.fixedpoint import AddParams, avgpool_int8_with_mask, quantized_add_with_mask, requantize_with_mask
from mcutrain.quant.rng import stochastic_round

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
Kernel = Callable[[Op, list, int], tuple]


# ----------------------------------------------------------------------------------------------
# Convolution geometry ("same" padding k // 2, output side ceil(H / stride))


def _windows(xpad: np.ndarray, k: int, stride: int, out_hw: tuple[int, int]) -> np.ndarray:
    """[C, Ho, Wo, k, k] view of the k x k windows of a padded [C, Hp, Wp] array."""
    ho, wo = out_hw
    return sliding_window_view(xpad, (k, k), axis=(1, 2))[:, ::stride, ::stride][:, :ho, :wo]


def _out_hw(h: int, w: int, stride: int) -> tuple[int, int]:
    return -(-h // stride), -(-w // stride)


def correlate(x: np.ndarray, w: np.ndarray, stride: int, groups: int) -> np.ndarray:
    """Zero-padded correlation of x [C, H, W] (float64) with w [O, C/groups, k, k] -> [O, Ho, Wo]."""
    k, pad = w.shape[-1], w.shape[-1] // 2
    ho, wo = _out_hw(x.shape[1], x.shape[2], stride)
    xpad = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    if groups == 1:
        cols = _windows(xpad, k, stride, (ho, wo)).transpose(1, 2, 0, 3, 4).reshape(ho * wo, -1)
        return (w.reshape(w.shape[0], -1) @ cols.T).reshape(w.shape[0], ho, wo)
    out = np.zeros((x.shape[0], ho, wo))
    for i in range(k):
        for j in range(k):
            out += xpad[:, i:i + stride * ho:stride, j:j + stride * wo:stride][:, :ho, :wo] * w[:, 0, i, j, None, None]
    return out


def correlate_transpose(g: np.ndarray, w: np.ndarray, stride: int, groups: int, hw: tuple[int, int]) -> np.ndarray:
    """The adjoint of ``correlate`` w.r.t. x: g [O, Ho, Wo] -> [C, H, W] (float64)."""
    k, pad = w.shape[-1], w.shape[-1] // 2
    ho, wo = g.shape[1:]
    if groups == 1:
        cols = (w.reshape(w.shape[0], -1).T @ g.reshape(g.shape[0], -1)).reshape(w.shape[1], k, k, ho, wo)
    else:
        cols = w[:, 0, :, :, None, None] * g[:, None, None]
    out = np.zeros((cols.shape[0], hw[0] + 2 * pad + stride, hw[1] + 2 * pad + stride))
    for i in range(k):
        for j in range(k):
            out[:, i:i + stride * ho:stride, j:j + stride * wo:stride] += cols[:, i, j]
    return out[:, pad:pad + hw[0], pad:pad + hw[1]]


def correlate_weight(x: np.ndarray, g: np.ndarray, k: int, stride: int, groups: int) -> np.ndarray:
    """The adjoint of ``correlate`` w.r.t. w, for the channels of x [Ck, H, W]: -> weight gradient."""
    pad = k // 2
    ho, wo = g.shape[1:]
    xpad = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    win = _windows(xpad, k, stride, (ho, wo))  # [Ck, Ho, Wo, k, k]
    if groups == 1:
        return np.tensordot(g, win, axes=([1, 2], [1, 2]))  # [O, Ck, k, k]
    return np.einsum("chw,chwij->cij", g[: x.shape[0]], win)[:, None]  # [Ck, 1, k, k]


# ----------------------------------------------------------------------------------------------
# Forward


def conv2d(op: Op, args: list, step: int) -> tuple:
    x, w, b, mult, shift = args
    xz = x[0].astype(np.float64) - op.attr("x_zero")
    acc = np.rint(correlate(xz, w.astype(np.float64), op.attr("stride"), op.attr("groups"))).astype(np.int64)
    acc = acc[None] + b.astype(np.int64)[None, :, None, None]
    y, mask = requantize_with_mask(acc, mult, shift, op.attr("y_zero"), op.attr("qmin"), op.attr("qmax"))
    return (y, mask)[: len(op.outputs)]


def pointwise_depthwise(op: Op, args: list, step: int) -> tuple:
    """The two convs in a row (here the expanded tensor is a temporary; on the device it is made and
    consumed one channel at a time)."""
    expand, depthwise = split(op)
    (expanded,) = conv2d(expand, args[:5], step)
    return conv2d(depthwise, [expanded] + list(args[5:]), step)


def add(op: Op, args: list, step: int) -> tuple:
    y, mask = quantized_add_with_mask(args[0], args[1], AddParams(**dict(op.attr("params"))))
    return (y, mask)[: len(op.outputs)]


def avgpool(op: Op, args: list, step: int) -> tuple:
    y, mask = avgpool_int8_with_mask(args[0], op.attr("x_zero"), op.attr("x_scale"), op.attr("y_scale"),
                                     op.attr("y_zero"))
    return (y, mask)[: len(op.outputs)]


def linear(op: Op, args: list, step: int) -> tuple:
    x, w, b, scale = args
    acc = (x.astype(np.int64) - op.attr("x_zero")) @ w.astype(np.int64).T + b.astype(np.int64)
    return ((acc.astype(np.float64) * scale.astype(np.float64)).astype(np.float32),)


def slice_channels(op: Op, args: list, step: int) -> tuple:
    return (args[0][:, : op.attr("channels")].copy(),)


def softmax_ce(op: Op, args: list, step: int) -> tuple:
    """Loss and logits gradient of one sample: log-sum-exp - z[label], softmax - onehot."""
    z = args[0].astype(np.float64)
    label = int(args[1][0])
    shifted = z - z.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1))
    loss = log_sum - shifted[:, label]
    grad = np.exp(shifted - log_sum[:, None])
    grad[:, label] -= 1.0
    return loss.astype(np.float32), grad.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Backward


def _channel(values: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel float32 vector broadcast along axis 1 (a single value broadcasts everywhere)."""
    values = values.astype(np.float32)
    if values.size == 1:
        return values.reshape(())
    return values.reshape((1, -1) + (1,) * (ndim - 2))


def requant_grad(op: Op, args: list, step: int) -> tuple:
    g, mask, m = args
    return ((g * mask.astype(np.float32)) * _channel(m, g.ndim),)


def add_grad(op: Op, args: list, step: int) -> tuple:
    g, mask, ratios = args
    gm = g * mask.astype(np.float32)
    return gm * ratios[0], gm * ratios[1]


def avgpool_grad(op: Op, args: list, step: int) -> tuple:
    g, mask, factor = args
    n, c, h, w = op.attr("input_shape")
    spread = (g * mask.astype(np.float32)) * factor[0]
    return (np.broadcast_to(spread[:, :, None, None], (n, c, h, w)).copy(),)


def conv2d_grad_x(op: Op, args: list, step: int) -> tuple:
    g, w = args
    shape = op.attr("input_shape")
    gx = correlate_transpose(g[0].astype(np.float64), w.astype(np.float64), op.attr("stride"), op.attr("groups"),
                             tuple(shape[2:]))
    return (gx[None].astype(np.float32),)


def conv2d_grad_w(op: Op, args: list, step: int) -> tuple:
    x, g = args
    xz = x[0].astype(np.float64) - op.attr("x_zero")
    k = op.attr("weight_shape")[-1]
    gw = correlate_weight(xz, g[0].astype(np.float64), k, op.attr("stride"), op.attr("groups"))
    return (gw.astype(np.float32),)


def conv2d_grad_b(op: Op, args: list, step: int) -> tuple:
    return (args[0].astype(np.float64).sum(axis=(0, 2, 3)).astype(np.float32),)


def grad_sum(op: Op, args: list, step: int) -> tuple:
    """float32 additions in reading order: for two terms exactly the simulation's accumulation."""
    total = args[0].astype(np.float32)
    for a in args[1:]:
        total = total + a.astype(np.float32)
    return (total,)


def _logit_grad(g: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return g * scale.astype(np.float32)


def linear_grad_x(op: Op, args: list, step: int) -> tuple:
    g, w, scale = args
    return ((_logit_grad(g, scale).astype(np.float64) @ w.astype(np.float64)).astype(np.float32),)


def linear_grad_w(op: Op, args: list, step: int) -> tuple:
    g, x, scale = args
    xz = x.astype(np.float64) - op.attr("x_zero")
    return ((_logit_grad(g, scale).astype(np.float64).T @ xz).astype(np.float32),)


def linear_grad_b(op: Op, args: list, step: int) -> tuple:
    g, scale = args
    return (_logit_grad(g, scale).astype(np.float64).sum(axis=0).astype(np.float32),)


# ----------------------------------------------------------------------------------------------
# Updates (write the parameter array in place; the gradient is its leading slice)


def _direction(g: np.ndarray, qas: np.ndarray) -> np.ndarray:
    """QAS-rescaled gradient, float32: the optimizer's ``grad * qas`` (SGD, no momentum)."""
    return g.astype(np.float32) * qas.astype(np.float32).reshape((-1,) + (1,) * (g.ndim - 1))


def update_weight(op: Op, args: list, step: int) -> tuple:
    w, g, qas = args
    kept = tuple(slice(0, n) for n in op.attr("kept_shape"))
    x = w[kept].astype(np.float32) - np.float32(op.attr("lr")) * _direction(g, qas)
    rounded = stochastic_round(np.ascontiguousarray(x), op.attr("seed"), step, op.attr("tensor_id"))
    w[kept] = np.clip(rounded, -127, 127).astype(w.dtype)
    return ()


def update_bias(op: Op, args: list, step: int) -> tuple:
    b, g, qas = args
    delta = np.floor(np.float32(0.5) - np.float32(op.attr("lr")) * _direction(g, qas))
    b[...] = np.clip(b.astype(np.float64) + delta.astype(np.float64), INT32_MIN, INT32_MAX).astype(b.dtype)
    return ()


def conv2d_grad_w_update(op: Op, args: list, step: int) -> tuple:
    """The pair conv2d_grad_w + update_weight (here the gradient is a temporary; on the device each
    element is applied as soon as it is computed)."""
    w, x, g, qas = args
    (grad,) = conv2d_grad_w(op, [x, g], step)
    return update_weight(op, [w, grad, qas], step)


def linear_grad_w_update(op: Op, args: list, step: int) -> tuple:
    """The pair linear_grad_w + update_weight."""
    w, g, x, scale, qas = args
    (grad,) = linear_grad_w(op, [g, x, scale], step)
    return update_weight(op, [w, grad, qas], step)


KERNELS: dict[str, Kernel] = {
    "conv2d": conv2d,
    "pointwise_depthwise": pointwise_depthwise,
    "add": add,
    "avgpool": avgpool,
    "linear": linear,
    "slice_channels": slice_channels,
    "softmax_ce": softmax_ce,
    "requant_grad": requant_grad,
    "add_grad": add_grad,
    "avgpool_grad": avgpool_grad,
    "conv2d_grad_x": conv2d_grad_x,
    "conv2d_grad_w": conv2d_grad_w,
    "conv2d_grad_b": conv2d_grad_b,
    "grad_sum": grad_sum,
    "linear_grad_x": linear_grad_x,
    "linear_grad_w": linear_grad_w,
    "linear_grad_b": linear_grad_b,
    "update_weight": update_weight,
    "update_bias": update_bias,
    "conv2d_grad_w_update": conv2d_grad_w_update,
    "linear_grad_w_update": linear_grad_w_update,
}
