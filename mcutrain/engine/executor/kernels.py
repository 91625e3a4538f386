"""NumPy kernels: the reference semantics of every op kind of the catalogue (``mcutrain.engine.ops``).

One table, ``KERNELS[kind](op, args, step) -> outputs``: ``args`` are the op's inputs as arrays (bit
masks already unpacked to bool), the result is a tuple of arrays, one per output, which the executor
stores into the arena (update kernels write their parameter array in place and return ()). Kernels
never write their inputs, so an in-place op (output over a dying input) is safe by construction.
A second table, ``ARENA_KERNELS[kind](op, args, step, io)``, holds the kernels that work inside the
arena as the device does: they write their outputs' arena views as they go, keep their intermediate
data in their op's planned scratch bytes (``io.scratch``) and read a streamed input one row at a
time (``args[0].row(r)``): the row pipeline ``mbconv_rows`` (its rings of a few rows and folded
windows are what the kernel really uses) and the channel-by-channel block backward ``mbconv_grad``
(its few channels of each gradient live in the scratch; NumPy temporaries stand for a C loop's
registers: a row's or a channel group's products).

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

from mcutrain.engine.ir import Op
from mcutrain.engine.passes.fuse_backward import internal_of as internal_of_grad
from mcutrain.engine.passes.fuse_backward import parts_of as parts_of_grad
from mcutrain.engine.passes.fuse_expand import split
from mcutrain.engine.passes.fuse_rows import STREAM, folds_of, internal_of, rings_of, stages_of, window
from mcutrain.quant.fixedpoint import AddParams, avgpool_int8_with_mask, quantized_add_with_mask, requantize_with_mask
from mcutrain.quant.rng import INDEX_STRIDE, hash32, stochastic_round_from_bits, stream_key

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
    """The adjoint of ``correlate`` w.r.t. w, for the channels of x [Ck, H, W]: -> weight gradient.

    Depthwise and 1x1 convs: every gradient element is a float64 sum over the output positions in
    ascending (C) order, one term after the other (``position_sum``), the same whichever channels
    are computed together: the channel-by-channel backward (``mbconv_grad``) gets the same numbers."""
    pad = k // 2
    ho, wo = g.shape[1:]
    if groups == 1 and k == 1 and stride == 1:
        return pointwise_weight_grad(x, g)[:, :, None, None]
    xpad = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    win = _windows(xpad, k, stride, (ho, wo))  # [Ck, Ho, Wo, k, k]
    if groups == 1:
        return np.tensordot(g, win, axes=([1, 2], [1, 2]))  # [O, Ck, k, k]
    n = x.shape[0]
    cols = win.transpose(1, 2, 0, 3, 4).reshape(ho * wo, n, k, k)  # [P, Ck, k, k]
    return position_sum(cols * g[:n].reshape(n, ho * wo).T[:, :, None, None])[:, None]  # [Ck, 1, k, k]


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
    g, w = args[:2]
    shape = op.attr("input_shape")
    if op.attr("groups") == 1 and w.shape[2:] == (1, 1) and op.attr("stride") == 1:
        init = args[2][0].reshape(shape[1], -1) if len(args) == 3 else None
        gx = pointwise_input_grad(g[0].reshape(g.shape[1], -1), w[:, :, 0, 0], init)
        return (gx.reshape(shape),)
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


# ----------------------------------------------------------------------------------------------
# Row pipelines (kernels that work in the arena)


def conv2d_row(op: Op, window: np.ndarray, first: int, height: int, row: int, w: np.ndarray, b: np.ndarray,
               mult: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Output row ``row`` of ``conv2d`` (int8 [O, Wo] and its mask) from input rows ``first..`` of an
    input of ``height`` rows (``window``: int8 [C, n, W]). The integers are exactly ``conv2d``'s: the
    accumulator of every output element is the same sum of the same integer products."""
    k, stride, pad = w.shape[-1], op.attr("stride"), op.attr("pad")
    c, _, width = window.shape
    wo = -(-width // stride)
    xz = np.zeros((c, k, width + 2 * pad))
    for i in range(k):
        rho = stride * row - pad + i
        if 0 <= rho < height:
            xz[:, i, pad:pad + width] = window[:, rho - first].astype(np.float64) - op.attr("x_zero")
    cols = sliding_window_view(xz, k, axis=2)[:, :, ::stride][:, :, :wo]  # [C, k, Wo, k]
    wf = w.astype(np.float64)
    if op.attr("groups") == 1:
        acc = np.tensordot(wf, cols, axes=([1, 2, 3], [0, 1, 3]))  # [O, Wo]
    else:
        acc = np.einsum("cij,ciwj->cw", wf[:, 0], cols)
    acc = np.rint(acc).astype(np.int64) + b.astype(np.int64)[:, None]
    y, mask = requantize_with_mask(acc[None, :, None, :], mult, shift, op.attr("y_zero"), op.attr("qmin"),
                                   op.attr("qmax"))
    return y[0, :, 0], mask[0, :, 0]


def write_bits(packed: np.ndarray, start: int, bits: np.ndarray) -> None:
    """Store ``bits`` (bool) at bit ``start`` of a packed (little bit order) uint8 array, in place."""
    end = start + bits.size
    lo, hi = start // 8, (end + 7) // 8
    chunk = np.unpackbits(packed[lo:hi], bitorder="little")
    chunk[start - 8 * lo:end - 8 * lo] = bits.ravel()
    packed[lo:hi] = np.packbits(chunk, bitorder="little")


def mbconv_rows(op: Op, args: list, step: int, io) -> tuple:
    """Run the row schedule: each event makes one row of one stage from rows in rings (or in the whole
    input), into its ring or into the output's arena view (with its mask bits); a STREAM event copies
    the next input row into the input's ring. ``io.outputs``: the outputs' arena views (masks packed);
    ``io.scratch``: the op's scratch bytes, where the rings live."""
    values = dict(zip(op.inputs, args))
    x = op.inputs[0]
    internal = internal_of(op)
    rings = {t: (io.scratch[off:off + c * n * w].view(np.int8).reshape(c, n, w), n)
             for t, (c, n, w, off) in rings_of(op).items()}
    height = {t: info.shape[2] for t, info in internal.items()}
    height[x] = values[x].shape[2]
    out, mask = io.outputs[0], io.outputs[1] if len(op.outputs) == 2 else None
    out_h, out_w = out.shape[2], out.shape[3]

    def rows(t: str, lo: int, hi: int) -> np.ndarray:
        if t in rings:
            ring, n = rings[t]
            return ring[:, [r % n for r in range(lo, hi + 1)]]
        return values[t][0, :, lo:hi + 1]

    stages = stages_of(op)
    folds = {t: (io.scratch[off:off + c * n * w].view(np.int8).reshape(c, n, w))
             for t, (c, n, w, off) in folds_of(op).items()}
    producer = {st.outputs[0]: st for st in stages}
    shapes = _Shapes(internal, values)
    for s, r in op.attr("schedule"):
        if s == STREAM:
            ring, n = rings[x]
            ring[:, r % n] = values[x].row(r)
            continue
        st = stages[s]
        if st.kind == "conv2d":
            src, lo, hi = window(st, r, shapes)
            params = [values[n] for n in st.inputs[1:5]]
            if src in folds:  # the expanded rows of the window, made a few channels at a time
                y, m = _folded_row(st, producer[src], rows, lo, hi, r, height, folds[src], params, values)
            else:
                y, m = conv2d_row(st, rows(src, lo, hi), lo, height[src], r, *params)
        else:
            y, m = quantized_add_with_mask(rows(st.inputs[0], r, r)[:, 0], rows(st.inputs[1], r, r)[:, 0],
                                           AddParams(**dict(st.attr("params"))))
        target = st.outputs[0]
        if target in rings:
            ring, n = rings[target]
            ring[:, r % n] = y
            continue
        out[0, :, r] = y
        if mask is not None:
            for c in range(m.shape[0]):
                write_bits(mask, (c * out_h + r) * out_w, m[c])
    return ()


# ----------------------------------------------------------------------------------------------
# Channel-by-channel backward of a block (a kernel that works in the arena)


def mbconv_grad(op: Op, args: list, step: int, io) -> tuple:
    """Run the chain's parts for ``group`` expanded channels at a time (``io.scratch`` holds one group
    of each gradient it materialises). Per channel every part computes exactly what its unfused kernel
    computes for that channel; the tail's input gradient is accumulated in its float32 output in
    ascending channel order (``pointwise_input_grad``'s order); updates apply to their rows at once.
    Chain tensors also read outside the chain (outputs) get their rows stored as they are made."""
    values = dict(zip(op.inputs, args))
    outs = dict(zip(op.outputs, io.outputs))
    parts, channels, group = parts_of_grad(op), op.attr("channels"), op.attr("group")
    chained = {o for part in parts for o in part.outputs}
    slots = _gradient_slots(op, io.scratch, outs)
    recompute = op.attr("recompute", ())
    source = _LazySource({fwd.outputs[0]: fwd for fwd in op.attr("lazy", ())}, values, op.attr("source_group", 1))
    _source_phase(op.attr("pre", ()), source, values, outs, chained, step)
    for c0 in range(0, channels, group):
        rows = slice(c0, min(c0 + group, channels))
        local: dict[str, np.ndarray | None] = {}
        for fwd in recompute:  # the forward's masks of these channels, from the block input (old weights)
            x = local[fwd.inputs[0]][None] if fwd.inputs[0] in local else values[fwd.inputs[0]]
            y, mask = conv2d(fwd, [x] + [values[n][rows] for n in fwd.inputs[1:]], step)
            local[fwd.outputs[0]], local[fwd.outputs[1]] = y[0], mask[0]
        for part in parts:
            _grad_part(part, rows, values, local, outs, chained, step, source, slots)
    _source_phase(op.attr("post", ()), source, values, outs, chained, step)
    return ()


def _gradient_slots(op: Op, scratch: np.ndarray, outs: dict) -> dict[str, np.ndarray]:
    """The gradients a chain materialises per group (the head's and each depthwise input gradient, and
    the requant_grad written over each), as float32 views of the op's scratch bytes (from offset 0)."""
    internal = internal_of_grad(op)
    slots, offset, group = {}, 0, op.attr("group")
    for part in parts_of_grad(op):
        name = part.outputs[0] if part.outputs else None
        if part.kind == "conv2d_grad_x" and name not in outs:
            shape = (group,) + internal[name].shape[2:]
            size = 4 * int(np.prod(shape))
            slots[name] = scratch[offset:offset + size].view(np.float32).reshape(shape)
            offset += size
        elif part.kind == "requant_grad" and part.inputs[0] in slots:
            slots[name] = slots[part.inputs[0]]  # in place, element by element
    return slots


class _LazySource:
    """Rows of the tensors an ``mbconv_grad`` op computes on demand (the spread and requantized pool
    gradient): the same float32 products the unfused avgpool_grad and requant_grad make."""

    def __init__(self, lazy: dict, values: dict, step: int):
        self.lazy, self.values, self.step = lazy, values, step  # step: rows computed at a time

    def __contains__(self, name: str) -> bool:
        return name in self.lazy

    def channels(self, name: str) -> int:
        return self.lazy[name].attr("input_shape", (0, 0))[1] if self.lazy[name].kind == "avgpool_grad" \
            else self.channels(self.lazy[name].inputs[0])

    def rows(self, name: str, rows: slice) -> np.ndarray:
        op = self.lazy[name]
        g_name, mask, scale = op.inputs
        mask = self.values[mask][0, rows].astype(np.float32)
        if op.kind == "avgpool_grad":
            spread = (self.values[g_name][0, rows] * mask) * self.values[scale][0]
            return np.broadcast_to(spread[:, None, None], (spread.shape[0],) + tuple(op.attr("input_shape")[2:]))
        m = self.values[scale]
        factor = m.astype(np.float32).reshape(()) if m.size == 1 else m[rows].astype(np.float32).reshape(-1, 1, 1)
        return (self.rows(g_name, rows) * mask) * factor


def _source_phase(phase: tuple, source: _LazySource, values: dict, outs: dict, chained: set, step: int) -> None:
    """Ops over the channels of the lazily computed tensor (its bias gradient, its weight gradient)."""
    if not phase:
        return
    name = next(n for n in phase[0].inputs if n in source)
    for c0 in range(0, source.channels(name), source.step):
        rows = slice(c0, min(c0 + source.step, source.channels(name)))
        local = {name: source.rows(name, rows)}
        for part in phase:
            _grad_part(part, rows, values, local, outs, chained | {name}, step, source)


# where a chain tensor's channel axis is: gradients of activations [1, E, ...] on axis 1, of parameters on 0
_CHANNEL_AXIS = {"conv2d_grad_x": 1, "requant_grad": 1, "conv2d_grad_b": 0, "conv2d_grad_w": 0}


def _put(part: Op, value: np.ndarray | None, rows: slice, local: dict, outs: dict,
         slots: dict | None = None) -> None:
    name = part.outputs[0]
    if slots and name in slots and value is not None:  # kept in the op's scratch until the next group
        slot = slots[name][:value.shape[0]]
        slot[...] = value
        value = slot
    local[name] = value
    if name in outs and value is not None:
        view = outs[name]
        sel = slice(rows.start, rows.start + value.shape[0])
        if _CHANNEL_AXIS[part.kind] == 1:
            view[0, sel] = value
        else:
            view[sel] = value


def _grad_part(part: Op, rows: slice, values: dict, local: dict, outs: dict, chained: set, step: int,
               source: _LazySource | None = None, slots: dict | None = None) -> None:
    n = rows.stop - rows.start
    kind = part.kind
    if kind == "conv2d_grad_x":
        g_name, w = part.inputs[0], values[part.inputs[1]]
        if source is not None and g_name in source and g_name not in local:  # the head, from a lazy input
            acc = None  # sum over the input's channels in ascending order, a few at a time
            count = source.channels(g_name)
            for o0 in range(0, count, source.step):
                orows = slice(o0, min(o0 + source.step, count))
                g = source.rows(g_name, orows)
                terms = w[orows, rows, 0, 0].astype(np.float32)[:, :, None] * g.reshape(g.shape[0], 1, -1)
                if acc is not None:
                    terms = np.concatenate([acc[None], terms])
                acc = np.add.reduce(terms, axis=0)
            _put(part, acc.reshape((n,) + g.shape[1:]), rows, local, outs, slots)
        elif g_name not in chained:  # the head: channels ``rows`` of the expanded gradient
            g = values[g_name][0]
            y = pointwise_input_grad(g.reshape(g.shape[0], -1), w[:, rows, 0, 0]).reshape((n,) + g.shape[1:])
            _put(part, y, rows, local, outs, slots)
        elif part.attr("groups") > 1:  # depthwise, channel by channel
            shape = part.attr("input_shape")
            y = correlate_transpose(local[g_name].astype(np.float64), w[rows].astype(np.float64), part.attr("stride"),
                                    part.attr("groups"), tuple(shape[2:]))
            _put(part, y.astype(np.float32), rows, local, outs, slots)
        else:  # the tail: summed over the expanded channels, in ascending order, into its output
            g = local[g_name]
            acc = outs[part.outputs[0]][0]  # (over ``init`` when in place: then it starts as init)
            terms = w[rows, :, 0, 0].astype(np.float32)[:, :, None] * g.reshape(n, 1, -1).astype(np.float32)
            if rows.start or len(part.inputs) == 3:
                start = acc if rows.start else values[part.inputs[2]][0]
                terms = np.concatenate([start.reshape(1, acc.shape[0], -1), terms])
            acc[...] = np.add.reduce(terms, axis=0).reshape(acc.shape)
    elif kind == "requant_grad":
        g, m = local[part.inputs[0]], values[part.inputs[2]]
        mask = local[part.inputs[1]] if part.inputs[1] in local else values[part.inputs[1]][0, rows]
        scale = m.astype(np.float32).reshape(()) if m.size == 1 else m[rows].astype(np.float32).reshape(n, 1, 1)
        _put(part, (g * mask.astype(np.float32)) * scale, rows, local, outs, slots)
    elif kind == "conv2d_grad_b":
        _put(part, channel_sums(local[part.inputs[0]]), rows, local, outs)
    elif kind == "update_bias":
        b, g, qas = values[part.inputs[0]], local[part.inputs[1]], values[part.inputs[2]]
        update_bias_rows(part, b, g, qas[rows], rows)
    elif kind in ("conv2d_grad_w", "conv2d_grad_w_update"):
        update = kind == "conv2d_grad_w_update"
        x_name, g_name = part.inputs[1:3] if update else part.inputs[:2]
        x, g = values[x_name], local[g_name]
        xz = x[0].astype(np.float64) - part.attr("x_zero")
        if part.attr("groups") > 1:  # depthwise: channels below ``kept`` train
            kept = min(rows.stop, xz.shape[0])
            gw = None
            if kept > rows.start:
                gw = correlate_weight(xz[rows.start:kept], g[:kept - rows.start].astype(np.float64),
                                      part.attr("weight_shape")[-1], part.attr("stride"),
                                      part.attr("groups")).astype(np.float32)
        else:  # 1x1: row c
            gw = pointwise_weight_grad(xz, g.astype(np.float64).reshape(n, -1))[:, :, None, None].astype(np.float32)
        if not update:
            _put(part, gw, rows, local, outs)
        elif gw is not None:
            w, qas = values[part.inputs[0]], values[part.inputs[3]]
            sel = slice(rows.start, rows.start + gw.shape[0])
            update_weight_rows(part, w, gw, qas[sel], step, sel)
    elif kind == "update_weight":
        w, g, qas = values[part.inputs[0]], local[part.inputs[1]], values[part.inputs[2]]
        if g is not None:
            sel = slice(rows.start, rows.start + g.shape[0])
            update_weight_rows(part, w, g, qas[sel], step, sel)
    else:
        raise ValueError(f"mbconv_grad cannot run a {kind} part")


class _Shapes:
    """``types.tensor(name).shape`` for ``window``: intermediate tensors and the op's operands."""

    def __init__(self, internal: dict, values: dict):
        self.internal, self.values = internal, values

    def tensor(self, name: str):
        return self.internal[name] if name in self.internal else self.values[name]


def _folded_row(st: Op, expand: Op, rows, lo: int, hi: int, r: int, height: dict, buf: np.ndarray,
                params: list, values: dict) -> tuple[np.ndarray, np.ndarray]:
    """Row ``r`` of a depthwise conv whose input (a 1x1 expand conv's output) has no ring: for each
    group of channels, the expand conv's rows lo..hi of those channels go into ``buf`` (the op's
    scratch) and the depthwise conv reads them there: the same integers as the unfolded stages."""
    base = expand.inputs[0]
    win = rows(base, lo, hi)
    w1, b1, m1, s1 = (values[n] for n in expand.inputs[1:5])
    w, b, mult, shift = params
    channels, group = w.shape[0], buf.shape[0]
    ys, ms = [], []
    for c0 in range(0, channels, group):
        cs = slice(c0, min(c0 + group, channels))
        n = cs.stop - cs.start
        for j in range(hi - lo + 1):
            buf[:n, j] = conv2d_row(expand, win[:, j:j + 1], lo + j, height[base], lo + j, w1[cs], b1[cs], m1[cs],
                                    s1[cs])[0]
        y, m = conv2d_row(st, buf[:n, :hi - lo + 1], lo, height[st.inputs[0]], r, w[cs], b[cs], mult[cs], shift[cs])
        ys.append(y)
        ms.append(m)
    return np.concatenate(ys), np.concatenate(ms)


ARENA_KERNELS: dict[str, Callable] = {"mbconv_rows": mbconv_rows, "mbconv_grad": mbconv_grad}


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
