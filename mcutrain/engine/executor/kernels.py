"""NumPy kernels: the reference semantics of every op kind of the catalogue (``mcutrain.engine.ops``).

One table, ``KERNELS[kind](op, args, step) -> outputs``: ``args`` are the op's inputs as arrays (bit
masks already unpacked to bool), the result is a tuple of arrays, one per output, which the executor
stores into the arena (update kernels write their parameter array in place and return ()). Kernels
never write their inputs, so an in-place op (output over a dying input) is safe by construction.
The kernels that work inside the arena (row pipelines, the channel-by-channel block backward) are
in ``arena_kernels``.

Forward arithmetic is integer-exact: fixed-point primitives from ``mcutrain.quant.fixedpoint``, conv
accumulators in float64 (exact: |acc| < 2**53) turned into int64. The backward mirrors the
simulation: elementwise products in float32 in the simulation's order (bit-identical), contractions
(conv transposes, correlations, sums) in float64 rounded once to float32, except the input gradient
of a 1x1 conv: float32 products summed in float32 over the output channels in ascending order
(``pointwise_input_grad``; what the channel-by-channel backward accumulates); sums over the output
positions (bias and depthwise / 1x1 weight gradients) go in ascending order (``position_sum``). The
simulation's float32 sums differ in the last bits; the equivalence tests bound the effect. Every sum
the channel-by-channel backward (``mbconv_grad``) makes per channel is made by the same primitive
here, so fusing changes no bit. The update ops use the shared stochastic rounding of
``mcutrain.quant.rng`` (``random_words``: any run of a stream's words, for row-by-row updates).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mcutrain.engine.executor.graph_kernels import GRAPH_KERNELS
from mcutrain.engine.executor.int8_kernels import INT8_KERNELS
from mcutrain.engine.ir import Op
from mcutrain.engine.ops import conv_geometry, is_pointwise_conv
from mcutrain.engine.passes.fuse_expand import split
from mcutrain.quant.fixedpoint import requantize_with_mask
from mcutrain.quant.graph_forward import fc_values
from mcutrain.quant.int8_ops import AddParams, avgpool_int8_with_mask, quantized_add_with_mask
from mcutrain.quant.rng import INDEX_STRIDE, hash32, stochastic_round_from_bits, stream_key

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
Kernel = Callable[[Op, list, int], tuple]


# ----------------------------------------------------------------------------------------------
# Convolution geometry: a kh x kw kernel, strides (sh, sw), padding (top, bottom, left, right) with
# zeros (the zero-point-shifted input); the zoo's "same" convs: one stride, k // 2 on every side.


def _geometry(kernel, stride, pads) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    """(kernel (kh, kw), strides (sh, sw), pads): ints mean square; pads None means k // 2 per side."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    sh, sw = (stride, stride) if isinstance(stride, int) else tuple(stride)
    pads = (kh // 2, kh // 2, kw // 2, kw // 2) if pads is None else tuple(pads)
    return (kh, kw), (sh, sw), pads


def _windows(xpad: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
             out_hw: tuple[int, int]) -> np.ndarray:
    """[C, Ho, Wo, kh, kw] view of the kh x kw windows of a padded [C, Hp, Wp] array."""
    ho, wo = out_hw
    return sliding_window_view(xpad, kernel, axis=(1, 2))[:, ::strides[0], ::strides[1]][:, :ho, :wo]


def out_hw(h: int, w: int, kernel, stride, pads=None) -> tuple[int, int]:
    """Output height and width of a conv (ceil(H / stride) for the zoo's "same" convs)."""
    (kh, kw), (sh, sw), (top, bottom, left, right) = _geometry(kernel, stride, pads)
    return (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1


def _pad(x: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right)))


def correlate(x: np.ndarray, w: np.ndarray, stride, groups: int, pads=None) -> np.ndarray:
    """Zero-padded correlation of x [C, H, W] (float64) with w [O, C/groups, kh, kw] -> [O, Ho, Wo]."""
    (kh, kw), (sh, sw), pads = _geometry(w.shape[2:], stride, pads)
    ho, wo = out_hw(x.shape[1], x.shape[2], (kh, kw), (sh, sw), pads)
    xpad = _pad(x, pads)
    if groups == 1:
        cols = _windows(xpad, (kh, kw), (sh, sw), (ho, wo)).transpose(1, 2, 0, 3, 4).reshape(ho * wo, -1)
        return (w.reshape(w.shape[0], -1) @ cols.T).reshape(w.shape[0], ho, wo)
    out = np.zeros((x.shape[0], ho, wo))
    for i in range(kh):
        for j in range(kw):
            out += xpad[:, i:i + sh * ho:sh, j:j + sw * wo:sw][:, :ho, :wo] * w[:, 0, i, j, None, None]
    return out


def correlate_transpose(g: np.ndarray, w: np.ndarray, stride, groups: int, hw: tuple[int, int],
                        pads=None) -> np.ndarray:
    """The adjoint of ``correlate`` w.r.t. x: g [O, Ho, Wo] -> [C, H, W] (float64)."""
    (kh, kw), (sh, sw), (top, bottom, left, right) = _geometry(w.shape[2:], stride, pads)
    ho, wo = g.shape[1:]
    if groups == 1:
        cols = (w.reshape(w.shape[0], -1).T @ g.reshape(g.shape[0], -1)).reshape(w.shape[1], kh, kw, ho, wo)
    else:
        cols = w[:, 0, :, :, None, None] * g[:, None, None]
    # Padded coordinates: tap i of output row r lands on row i + sh * r (rows past the input are cropped).
    out = np.zeros((cols.shape[0], hw[0] + top + bottom + kh + sh, hw[1] + left + right + kw + sw))
    for i in range(kh):
        for j in range(kw):
            out[:, i:i + sh * ho:sh, j:j + sw * wo:sw] += cols[:, i, j]
    return out[:, top:top + hw[0], left:left + hw[1]]


def correlate_weight(x: np.ndarray, g: np.ndarray, k, stride, groups: int, pads=None) -> np.ndarray:
    """The adjoint of ``correlate`` w.r.t. w, for the channels of x [Ck, H, W]: -> weight gradient
    (``k``: the kernel, an int for square ones or (kh, kw)).

    Depthwise and 1x1 convs: every gradient element is a float64 sum over the output positions in
    ascending (C) order, one term after the other (``position_sum``), the same whichever channels
    are computed together: the channel-by-channel backward (``mbconv_grad``) gets the same numbers."""
    (kh, kw), strides, pads = _geometry(k, stride, pads)
    ho, wo = g.shape[1:]
    if groups == 1 and (kh, kw) == (1, 1) and strides == (1, 1) and pads == (0, 0, 0, 0):
        return pointwise_weight_grad(x, g)[:, :, None, None]
    win = _windows(_pad(x, pads), (kh, kw), strides, (ho, wo))  # [Ck, Ho, Wo, kh, kw]
    if groups == 1:
        return np.tensordot(g, win, axes=([1, 2], [1, 2]))  # [O, Ck, kh, kw]
    n = x.shape[0]
    cols = win.transpose(1, 2, 0, 3, 4).reshape(ho * wo, n, kh, kw)  # [P, Ck, kh, kw]
    return position_sum(cols * g[:n].reshape(n, ho * wo).T[:, :, None, None])[:, None]  # [Ck, 1, kh, kw]


def position_sum(terms: np.ndarray) -> np.ndarray:
    """Sum over axis 0 (the output positions) in float64, ascending, one term after the other
    (``np.add.reduce`` along the outer axis of a contiguous array is sequential): an order a C loop
    reproduces exactly, whichever channels (the other axes) are computed together."""
    return np.add.reduce(np.ascontiguousarray(terms, dtype=np.float64), axis=0)


def pointwise_weight_grad(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """1x1 conv weight gradient [O, Ck]: ``sum_p g[o, p] * x[i, p]`` in float64 (``position_sum``):
    row o needs output channel o only."""
    o, n = g.shape[0], x.shape[0]
    return position_sum(g.reshape(o, -1).T[:, :, None] * x.reshape(n, -1).T[:, None, :])


def pointwise_input_grad(g: np.ndarray, w: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
    """1x1 conv input gradient: g [O, P] (float32), w [O, C] -> [C, P] float32,
    ``g_x[c, p] = [init[c, p] +] fl32(w[0, c] g[0, p]) + fl32(w[1, c] g[1, p]) + ...``: float32
    products added in float32 in ascending o, one term after the other (``np.add.reduce`` along the
    outer axis is sequential). Why float32 and this order: the channel-by-channel backward accumulates
    the tail's input gradient one channel at a time into its float32 output (which starts as ``init``,
    the other contribution of a residual fan-out), and a Cortex-M7 sums in float32."""
    terms = w.astype(np.float32)[:, :, None] * g.astype(np.float32)[:, None, :]
    if init is not None:
        terms = np.concatenate([init.astype(np.float32)[None], terms])
    return np.add.reduce(terms, axis=0)


def channel_sums(a: np.ndarray) -> np.ndarray:
    """[C, ...] -> float32 [C]: each channel summed in float64 over its positions (``position_sum``),
    rounded once."""
    return position_sum(a.reshape(a.shape[0], -1).T).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Forward


def conv2d(op: Op, args: list, step: int) -> tuple:
    x, w, b, mult, shift = args
    xz = x[0].astype(np.float64) - op.attr("x_zero")
    strides, pads = conv_geometry(op, w.shape[2:])
    acc = np.rint(correlate(xz, w.astype(np.float64), strides, op.attr("groups"), pads)).astype(np.int64)
    acc = acc[None] + b.astype(np.int64)[None, :, None, None]
    if op.attr("rescale") is not None:  # a hidden fully connected layer: LiteRT's double rescale
        v = fc_values(acc, np.asarray(op.attr("rescale"), np.float64), op.attr("y_zero"), channel_axis=1)
        y, mask = np.clip(v, op.attr("qmin"), op.attr("qmax")).astype(np.int8), (v > op.attr("qmin")) & (
            v < op.attr("qmax"))
        return (y, mask)[: len(op.outputs)]
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
    spread = (g.reshape(n, c) * mask.reshape(n, c).astype(np.float32)) * factor[0]  # g: [N, C] or [N, C, 1, 1]
    return (np.broadcast_to(spread[:, :, None, None], (n, c, h, w)).copy(),)


def conv2d_grad_x(op: Op, args: list, step: int) -> tuple:
    g, w = args[:2]
    shape = op.attr("input_shape")
    if is_pointwise_conv(op, w.shape):
        init = args[2][0].reshape(shape[1], -1) if len(args) == 3 else None
        gx = pointwise_input_grad(g[0].reshape(g.shape[1], -1), w[:, :, 0, 0], init)
        return (gx.reshape(shape),)
    strides, pads = conv_geometry(op, w.shape[2:])
    gx = correlate_transpose(g[0].astype(np.float64), w.astype(np.float64), strides, op.attr("groups"),
                             tuple(shape[2:]), pads)
    return (gx[None].astype(np.float32),)


def conv2d_grad_w(op: Op, args: list, step: int) -> tuple:
    x, g = args
    xz = x[0].astype(np.float64) - op.attr("x_zero")
    kernel = tuple(op.attr("weight_shape")[2:])
    strides, pads = conv_geometry(op, kernel)
    gw = correlate_weight(xz, g[0].astype(np.float64), kernel, strides, op.attr("groups"), pads)
    return (gw.astype(np.float32),)


def conv2d_grad_b(op: Op, args: list, step: int) -> tuple:
    return (channel_sums(args[0][0]),)


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


def random_words(seed: int, step: int, tensor_id: int, start: int, n: int) -> np.ndarray:
    """Words ``start .. start + n - 1`` of the stream (seed, step, tensor_id): ``rng.uniform_u32``'s
    words at those indices (a channel's rows of a weight, updated on their own)."""
    key = np.uint32(stream_key(seed, step, tensor_id))
    index = np.arange(start, start + n, dtype=np.uint32)
    return hash32(key + index * np.uint32(INDEX_STRIDE))


def update_weight_rows(op: Op, w: np.ndarray, g: np.ndarray, qas: np.ndarray, step: int, rows: slice) -> None:
    """``update_weight`` on rows ``rows`` of the kept slice (``g``, ``qas``: those rows): each element
    draws the word of its index in the whole kept slice, so updating row by row changes nothing."""
    shape = op.attr("kept_shape")
    kept = (rows,) + tuple(slice(0, n) for n in shape[1:])
    x = w[kept].astype(np.float32) - np.float32(op.attr("lr")) * _direction(g, qas)
    per_row = int(np.prod(shape[1:], dtype=np.int64))
    r = random_words(op.attr("seed"), step, op.attr("tensor_id"), rows.start * per_row, x.size).reshape(x.shape)
    w[kept] = np.clip(stochastic_round_from_bits(np.ascontiguousarray(x), r), -127, 127).astype(w.dtype)


def update_bias_rows(op: Op, b: np.ndarray, g: np.ndarray, qas: np.ndarray, rows: slice) -> None:
    delta = np.floor(np.float32(0.5) - np.float32(op.attr("lr")) * _direction(g, qas))
    b[rows] = np.clip(b[rows].astype(np.float64) + delta.astype(np.float64), INT32_MIN, INT32_MAX).astype(b.dtype)


def update_weight(op: Op, args: list, step: int) -> tuple:
    w, g, qas = args
    update_weight_rows(op, w, g, qas, step, slice(0, op.attr("kept_shape")[0]))
    return ()


def update_bias(op: Op, args: list, step: int) -> tuple:
    b, g, qas = args
    update_bias_rows(op, b, g, qas, slice(0, b.shape[0]))
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
KERNELS.update(GRAPH_KERNELS)  # the TFLite ops of imported graphs (their own module)
KERNELS.update(INT8_KERNELS)  # the integer backward (``--backward int8``: their own module)
