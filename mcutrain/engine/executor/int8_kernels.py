"""NumPy kernels of the integer backward (``--backward int8``, issue 16): direct calls of the spec.

Why a module of its own, and why so thin: the arithmetic is defined once, in ``mcutrain.quant.int8_grad``
(normalize, scale_grad, add_grads, update_weight, update_bias); the PyTorch simulation and the C follow
the same functions. A kernel here only gathers its operands (the integer sums of a contraction, exact
in float64 or int64, are the one thing it computes itself) and calls the spec, so the reference cannot
drift from the definition. A gradient operand is a ``GradTensor`` (payload + exponent: the arena's
``grad8`` / ``grad32`` tensors, ``ir.GRAD_HEADER_BYTES``); a real factor is an int32 ``[2, n]`` constant,
row 0 the mantissas ``m``, row 1 the shifts ``sh`` (``int8_grad.grad_multiplier``, made by the pass
``passes/int8_backward``, never here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcutrain.engine.executor.graph_kernels import maxpool_argmax, reshape_grad
from mcutrain.engine.ir import Op
from mcutrain.engine.ops import conv_geometry
from mcutrain.quant import int8_grad as ig

__all__ = ["GradTensor", "INT8_KERNELS"]


@dataclass
class GradTensor:
    """An integer gradient: ``g`` (int8 for grad8, int32 for grad32) at exponent ``e``: value g * 2**e."""

    g: np.ndarray
    e: int

    @property
    def shape(self) -> tuple[int, ...]:
        return self.g.shape

    def copy(self) -> "GradTensor":
        return GradTensor(np.array(self.g, copy=True), int(self.e))

    def value(self) -> np.ndarray:
        """The exact float64 values (for tests and comparisons)."""
        return ig.value(self.g, self.e)


def _grad8(pair) -> GradTensor:
    g, e = pair
    return GradTensor(np.asarray(g, np.int8), int(e))


def _factor(f: np.ndarray, j: int | None = None):
    """(m, sh) of a [2, n] factor constant: scalars when n is 1 (or column ``j``), else per channel."""
    m, sh = np.asarray(f[0], np.int64), np.asarray(f[1], np.int64)
    if j is not None:
        return m[j], sh[j]
    return (m[0], sh[0]) if m.size == 1 else (m, sh)


def _scaled(g: GradTensor, mask: np.ndarray, factor: np.ndarray, j: int | None = None) -> GradTensor:
    m, sh = _factor(factor, j)
    return _grad8(ig.scale_grad(g.g, g.e, m, sh, mask, channel_axis=1))


def _exact(acc: np.ndarray) -> np.ndarray:
    """An integer sum computed in float64 (exact: far below 2**53) as int64."""
    return np.rint(acc).astype(np.int64)


def _int32(acc: np.ndarray) -> np.ndarray:
    """A parameter gradient's int32 payload; a sum beyond int32 (more than ~2**16 positions of extreme
    values) would be a different number in C, so it is an error, not a wrap."""
    acc = np.asarray(acc, np.int64)
    if acc.size and np.abs(acc).max() >= 2**31:
        raise OverflowError(f"int8 backward: a parameter gradient sum {int(np.abs(acc).max())} exceeds int32")
    return acc.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Gradients


def loss_grad8(op: Op, args: list, step: int) -> tuple:
    """The loss gradient: fl32(softmax - onehot) times the float32 logit scale, exact in float64, normalized."""
    g, scale = args
    return (_grad8(ig.normalize(g.astype(np.float64) * scale.astype(np.float32).astype(np.float64))),)


def requant_grad8(op: Op, args: list, step: int) -> tuple:
    g, mask, factor = args
    return (_scaled(g, mask, factor),)


def add_grad8(op: Op, args: list, step: int) -> tuple:
    g, mask, factor = args
    return _scaled(g, mask, factor, 0), _scaled(g, mask, factor, 1)


def avgpool_grad8(op: Op, args: list, step: int) -> tuple:
    """scale_grad of the pooled gradient [N, C], spread unchanged over H x W (same exponent)."""
    g, mask, factor = args
    n, c, h, w = op.attr("input_shape")
    m, sh = _factor(factor)
    pooled, e = ig.scale_grad(g.g.reshape(n, c), g.e, m, sh, mask.reshape(n, c))
    return (GradTensor(np.broadcast_to(pooled[:, :, None, None], (n, c, h, w)).astype(np.int8), int(e)),)


def conv2d_grad_x8(op: Op, args: list, step: int) -> tuple:
    """normalize(conv_transpose(w, g)) at g's exponent; with ``init``: add_grads(init, that)."""
    from mcutrain.engine.executor.kernels import correlate_transpose  # kernels imports this module

    g, w = args[:2]
    shape = op.attr("input_shape")
    strides, pads = conv_geometry(op, w.shape[2:])
    acc = correlate_transpose(g.g[0].astype(np.float64), w.astype(np.float64), strides, op.attr("groups"),
                              tuple(shape[2:]), pads)
    gx = _grad8(ig.normalize_int(_exact(acc)[None], g.e))
    if len(args) == 3:
        gx = _grad8(ig.add_grads(args[2].g, args[2].e, gx.g, gx.e))
    return (gx,)


def conv2d_grad_w8(op: Op, args: list, step: int) -> tuple:
    """int32 ``sum (x_q - z_x) * g`` at g's exponent (unrounded), the kept channels."""
    from mcutrain.engine.executor.kernels import correlate_weight

    x, g = args
    kernel = tuple(op.attr("weight_shape")[2:])
    strides, pads = conv_geometry(op, kernel)
    xz = x[0].astype(np.float64) - op.attr("x_zero")
    acc = correlate_weight(xz, g.g[0].astype(np.float64), kernel, strides, op.attr("groups"), pads)
    return (GradTensor(_int32(_exact(acc)), g.e),)


def conv2d_grad_b8(op: Op, args: list, step: int) -> tuple:
    g = args[0]
    return (GradTensor(_int32(g.g[0].astype(np.int64).reshape(g.shape[1], -1).sum(1)), g.e),)


def grad_sum8(op: Op, args: list, step: int) -> tuple:
    """add_grads folded left in reading order: ((g_1 + g_2) + g_3) + ..., each sum normalized."""
    total = args[0]
    for a in args[1:]:
        total = _grad8(ig.add_grads(total.g, total.e, a.g, a.e))
    return (_grad8((total.g, total.e)),)


def linear_grad_x8(op: Op, args: list, step: int) -> tuple:
    g, w = args
    return (_grad8(ig.normalize_int(g.g.astype(np.int64) @ w.astype(np.int64), g.e)),)


def linear_grad_w8(op: Op, args: list, step: int) -> tuple:
    g, x = args
    xz = x.astype(np.int64) - op.attr("x_zero")
    return (GradTensor(_int32(g.g.astype(np.int64).T @ xz), g.e),)


def linear_grad_b8(op: Op, args: list, step: int) -> tuple:
    g = args[0]
    return (GradTensor(_int32(g.g.astype(np.int64).sum(axis=0)), g.e),)


def reshape_grad8(op: Op, args: list, step: int) -> tuple:
    g = args[0]
    (payload,) = reshape_grad(op, [g.g], step)
    return (GradTensor(payload, g.e),)


def tfl_maxpool_grad8(op: Op, args: list, step: int) -> tuple:
    """g * mask summed (exactly, int64) at each window's first maximum, normalized."""
    g, mask, x = args
    n, c, h, w = op.attr("input_shape")
    where = maxpool_argmax(op, x).reshape(n * c, -1)
    terms = np.where(mask, g.g.astype(np.int64), 0).reshape(n * c, -1)
    out = np.zeros((n * c, h * w), np.int64)
    for plane in range(n * c):
        np.add.at(out[plane], where[plane], terms[plane])
    return (_grad8(ig.normalize_int(out.reshape(n, c, h, w), g.e)),)


def tfl_avgpool_grad8(op: Op, args: list, step: int) -> tuple:
    """Each output's g * mask * f[p] (f[p] = m[p] 2**sh[p], per output position: ratio / its window's n)
    added exactly (int64, at the smallest exponent) to its window's valid positions, normalized."""
    g, mask, factor = args
    n, c, h, w = op.attr("input_shape")
    (kh, kw), (top, bottom, left, right) = op.attr("kernel"), op.attr("pads")
    oh, ow = g.shape[2:]
    m, sh = factor[0].astype(np.int64).reshape(oh, ow), factor[1].astype(np.int64).reshape(oh, ow)
    base = int(sh.min())
    spread = np.where(mask, g.g.astype(np.int64), 0) * (m << (sh - base))
    sh_, sw_ = op.attr("strides")
    rows, cols = np.arange(oh) * sh_, np.arange(ow) * sw_
    out = np.zeros((n, c, h + top + bottom + kh, w + left + right + kw), np.int64)
    for i in range(kh):
        for j in range(kw):
            out[:, :, (rows + i)[:, None], (cols + j)[None, :]] += spread
    return (_grad8(ig.normalize_int(out[:, :, top:top + h, left:left + w], g.e + base)),)


# ----------------------------------------------------------------------------------------------
# Updates (fixed point: update_factor(lr, qas) per kept row, from the float32 QAS constant)


def _words(op: Op, step: int, shape) -> np.ndarray:
    """The stream's words 0 .. numel - 1 for the kept slice, in C order: the float "sr" rule's draws."""
    from mcutrain.engine.executor.kernels import random_words

    return random_words(op.attr("seed"), step, op.attr("tensor_id"), 0, int(np.prod(shape))).reshape(shape)


def _rows(op: Op, qas: np.ndarray, ndim: int):
    """(m_c, x_c) of each kept row, shaped to broadcast over the slice."""
    m_c, x_c = ig.update_factor(op.attr("lr"), qas)
    shape = (-1,) + (1,) * (ndim - 1)
    return m_c.reshape(shape), x_c.reshape(shape)


def update_weight8(op: Op, args: list, step: int) -> tuple:
    w, grad, qas = args
    kept = tuple(slice(0, k) for k in op.attr("kept_shape"))
    m_c, x_c = _rows(op, qas, w.ndim)
    w[kept] = ig.update_weight(w[kept], grad.g, grad.e, m_c, x_c, _words(op, step, grad.shape))
    return ()


def update_bias8(op: Op, args: list, step: int) -> tuple:
    b, grad, qas = args
    k = op.attr("kept_shape")[0]
    m_c, x_c = _rows(op, qas, 1)
    b[:k] = ig.update_bias(b[:k], grad.g, grad.e, m_c, x_c)
    return ()


def conv2d_grad_w_update8(op: Op, args: list, step: int) -> tuple:
    """conv2d_grad_w8 + update_weight8 (each element's gradient is final on its own: no buffer on the device)."""
    w, x, g, qas = args
    (grad,) = conv2d_grad_w8(op, [x, g], step)
    return update_weight8(op, [w, grad, qas], step)


def linear_grad_w_update8(op: Op, args: list, step: int) -> tuple:
    w, g, x, qas = args
    (grad,) = linear_grad_w8(op, [g, x], step)
    return update_weight8(op, [w, grad, qas], step)


INT8_KERNELS = {
    "loss_grad8": loss_grad8, "requant_grad8": requant_grad8, "add_grad8": add_grad8,
    "avgpool_grad8": avgpool_grad8, "conv2d_grad_x8": conv2d_grad_x8, "conv2d_grad_w8": conv2d_grad_w8,
    "conv2d_grad_b8": conv2d_grad_b8, "grad_sum8": grad_sum8, "linear_grad_x8": linear_grad_x8,
    "linear_grad_w8": linear_grad_w8, "linear_grad_b8": linear_grad_b8, "reshape_grad8": reshape_grad8,
    "tfl_maxpool_grad8": tfl_maxpool_grad8, "tfl_avgpool_grad8": tfl_avgpool_grad8,
    "update_weight8": update_weight8, "update_bias8": update_bias8,
    "conv2d_grad_w_update8": conv2d_grad_w_update8, "linear_grad_w_update8": linear_grad_w_update8,
}
