"""Kernels that work inside the arena, as the device does (the second kernel table, ``ARENA_KERNELS``).

``ARENA_KERNELS[kind](op, args, step, io)`` writes its outputs' arena views as it goes, keeps its
intermediate data in its op's planned scratch bytes (``io.scratch``) and reads a streamed input one
row at a time (``args[0].row(r)``): the row pipeline ``mbconv_rows`` (its rings of a few rows and
folded windows are what the kernel really uses, so the plan's claim is true) and the channel-by-
channel block backward ``mbconv_grad`` (a few channels of each gradient live in the scratch; NumPy
temporaries stand for a C loop's registers). Every per-channel sum uses the same primitives as the
whole-tensor kernels in ``kernels``, so fusing changes no bit. Both run the program their pass
lowered (``engine.fused_program``): its schedule and buffers, its typed steps and scratch layout.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from numpy.lib.stride_tricks import sliding_window_view
from mcutrain.engine.ir import Op
from mcutrain.engine.ops import stride_and_top_pad
from mcutrain.engine.fused_program import (BIAS_GRAD, DEPTHWISE_X, FLOAT_PLANE, HEAD, LAZY_HEAD, OUTPUT, REQUANT,
                                           SCRATCH, TAIL, UPDATE_BIAS, UPDATE_WEIGHT, WEIGHT_GRAD,
                                           WEIGHT_GRAD_UPDATE, Step, program_of)
from mcutrain.engine.passes.fuse_rows import STREAM, internal_of, rings_of, stages_of, window
from mcutrain.quant.fixedpoint import requantize_with_mask
from mcutrain.quant.int8_ops import AddParams, quantized_add_with_mask
from mcutrain.engine.executor.kernels import (
    channel_sums,
    conv2d,
    correlate_transpose,
    correlate_weight,
    pointwise_input_grad,
    pointwise_weight_grad,
    update_bias_rows,
    update_weight_rows,
)


# ----------------------------------------------------------------------------------------------
# Row pipelines (kernels that work in the arena)


def conv2d_row(op: Op, window: np.ndarray, first: int, height: int, row: int, w: np.ndarray, b: np.ndarray,
               mult: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Output row ``row`` of ``conv2d`` (int8 [O, Wo] and its mask) from input rows ``first..`` of an
    input of ``height`` rows (``window``: int8 [C, n, W]). The integers are exactly ``conv2d``'s: the
    accumulator of every output element is the same sum of the same integer products."""
    k, (stride, pad) = w.shape[-1], stride_and_top_pad(op)  # pad: the top rows and left columns
    c, _, width = window.shape
    wo = -(-width // stride)
    xz = np.zeros((c, k, width + pad + k))  # zero-point columns to the right: at least what any window needs
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
    height[op.outputs[0]] = out_h

    def rows(t: str, lo: int, hi: int) -> np.ndarray:
        if t in rings:
            ring, n = rings[t]
            return ring[:, [r % n for r in range(lo, hi + 1)]]
        return values[t][0, :, lo:hi + 1]

    stages = stages_of(op)
    buffers = {b.tensor: b for b in program_of(op).folds}
    folds = {t: io.scratch[b.offset:b.offset + b.channels * b.rows * b.width].view(np.int8).reshape(
        b.channels, b.rows, b.width) for t, b in buffers.items()}
    producer = {st.outputs[0]: st for st in stages}
    shapes = _Shapes(internal, values)

    def put(target: str, r: int, y: np.ndarray, m: np.ndarray) -> None:
        if target in rings:
            ring, n = rings[target]
            ring[:, r % n] = y
            return
        out[0, :, r] = y
        if mask is not None:
            for c in range(m.shape[0]):
                write_bits(mask, (c * out_h + r) * out_w, m[c])

    for s, r in program_of(op).schedule:
        if s == STREAM:
            ring, n = rings[x]
            ring[:, r % n] = values[x].row(r)
            continue
        st = stages[s]
        if st.kind != "conv2d":
            y, m = quantized_add_with_mask(rows(st.inputs[0], r, r)[:, 0], rows(st.inputs[1], r, r)[:, 0],
                                           AddParams(**dict(st.attr("params"))))
            put(st.outputs[0], r, y, m)
            continue
        src = st.inputs[0]
        params = [values[n] for n in st.inputs[1:5]]
        # a folded stage makes its batch of rows, each from the expanded rows of its window, a few channels
        # at a time (the window's other rows are the C kernel's business: same integers either way)
        for rr in range(r, min(r + (buffers[src].batch if src in buffers else 1), height[st.outputs[0]])):
            _, lo, hi = window(st, rr, shapes)
            if src in folds:
                put(st.outputs[0], rr, *_folded_row(st, producer[src], rows, lo, hi, rr, height, folds[src], params,
                                                    values))
            else:
                put(st.outputs[0], rr, *conv2d_row(st, rows(src, lo, hi), lo, height[src], rr, *params))
    return ()


# ----------------------------------------------------------------------------------------------
# Channel-by-channel backward of a block (a kernel that works in the arena)


def mbconv_grad(op: Op, args: list, step: int, io) -> tuple:
    """Run the op's program (``fused_program.GradProgram``) for ``group`` expanded channels at a time
    (``io.scratch`` holds one group of each gradient it materialises, at the layout's offsets). Per
    channel every step computes exactly what its unfused kernel computes for that channel; the tail's
    input gradient is accumulated in its float32 output in ascending channel order
    (``pointwise_input_grad``'s order); updates apply to their rows at once. Chain tensors also read
    outside the chain (outputs) get their rows stored as they are made."""
    program = program_of(op)
    values = dict(zip(op.inputs, args))
    outs = dict(zip(op.outputs, io.outputs))
    channels, group = program.channels, program.scratch.group
    slots = _gradient_slots(program, io.scratch)
    recompute = program.recompute.convs if program.recompute is not None else ()
    source = _LazySource({fwd.outputs[0]: fwd for fwd in program.lazy}, values, program.scratch.source_group or 1)
    _source_phase(program.pre, program.source, source, values, outs, step)
    for c0 in range(0, channels, group):
        rows = slice(c0, min(c0 + group, channels))
        local: dict[str, np.ndarray | None] = {}
        for fwd in recompute:  # the forward's masks of these channels, from the block input (old weights)
            x = local[fwd.inputs[0]][None] if fwd.inputs[0] in local else values[fwd.inputs[0]]
            y, mask = conv2d(fwd, [x] + [values[n][rows] for n in fwd.inputs[1:]], step)
            local[fwd.outputs[0]], local[fwd.outputs[1]] = y[0], mask[0]
        for s in program.steps:
            _grad_step(s, rows, values, local, outs, step, source, slots)
    _source_phase(program.post, program.source, source, values, outs, step)
    return ()


def _gradient_slots(program, scratch: np.ndarray) -> dict[str, np.ndarray]:
    """The float planes of the layout (the head's and each depthwise input gradient; each requant_grad
    writes over its input's), as float32 views of ``group`` channels of the op's scratch bytes."""
    layout, slots = program.scratch, {}
    for slot in layout.slots:
        if slot.kind == FLOAT_PLANE:
            size = layout.group * slot.per_channel
            view = scratch[slot.offset:slot.offset + size].view(np.float32)
            slots[slot.tensor] = view.reshape((layout.group,) + slot.shape)
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
        if op.kind == "avgpool_grad":  # g: [1, C] or [1, C, 1, 1] (a global TFLite pool or MEAN)
            spread = (self.values[g_name][0, rows].reshape(-1) * mask.reshape(-1)) * self.values[scale][0]
            return np.broadcast_to(spread[:, None, None], (spread.shape[0],) + tuple(op.attr("input_shape")[2:]))
        m = self.values[scale]
        factor = m.astype(np.float32).reshape(()) if m.size == 1 else m[rows].astype(np.float32).reshape(-1, 1, 1)
        return (self.rows(g_name, rows) * mask) * factor


def _source_phase(phase: tuple, name: str | None, source: _LazySource, values: dict, outs: dict,
                  step: int) -> None:
    """Steps over the channels of the lazily computed tensor ``name`` (its bias and weight gradients)."""
    if not phase:
        return
    for c0 in range(0, source.channels(name), source.step):
        rows = slice(c0, min(c0 + source.step, source.channels(name)))
        local = {name: source.rows(name, rows)}
        for s in phase:
            _grad_step(s, rows, values, local, outs, step, source)


# where a chain tensor's channel axis is: gradients of activations [1, E, ...] on axis 1, of parameters on 0
_CHANNEL_AXIS = {"conv2d_grad_x": 1, "requant_grad": 1, "conv2d_grad_b": 0, "conv2d_grad_w": 0}


def _put(step: Step, value: np.ndarray | None, rows: slice, local: dict, outs: dict,
         slots: dict | None = None) -> None:
    out = step.out
    if out.place == SCRATCH and value is not None:  # kept in the op's scratch until the next group
        slot = slots[out.slot][:value.shape[0]]
        slot[...] = value
        value = slot
    local[out.name] = value
    if out.place == OUTPUT and value is not None:
        view = outs[out.name]
        sel = slice(rows.start, rows.start + value.shape[0])
        if _CHANNEL_AXIS[step.op.kind] == 1:
            view[0, sel] = value
        else:
            view[sel] = value


def _lazy_head(part: Op, w: np.ndarray, rows: slice, source: _LazySource) -> np.ndarray:
    """Channels ``rows`` of a 1x1 conv's input gradient from the lazily computed source: summed over
    the source's channels in ascending order, a few at a time."""
    g_name, acc, count = part.inputs[0], None, source.channels(part.inputs[0])
    for o0 in range(0, count, source.step):
        orows = slice(o0, min(o0 + source.step, count))
        g = source.rows(g_name, orows)
        terms = w[orows, rows, 0, 0].astype(np.float32)[:, :, None] * g.reshape(g.shape[0], 1, -1)
        if acc is not None:
            terms = np.concatenate([acc[None], terms])
        acc = np.add.reduce(terms, axis=0)
    return acc.reshape((rows.stop - rows.start,) + g.shape[1:])


def _tail(part: Op, w: np.ndarray, g: np.ndarray, rows: slice, values: dict, outs: dict) -> None:
    """The tail: summed over the expanded channels, in ascending order, into its output (over
    ``init`` when in place: then it starts as init)."""
    n = rows.stop - rows.start
    acc = outs[part.outputs[0]][0]
    terms = w[rows, :, 0, 0].astype(np.float32)[:, :, None] * g.reshape(n, 1, -1).astype(np.float32)
    if rows.start or len(part.inputs) == 3:
        start = acc if rows.start else values[part.inputs[2]][0]
        terms = np.concatenate([start.reshape(1, acc.shape[0], -1), terms])
    acc[...] = np.add.reduce(terms, axis=0).reshape(acc.shape)


def _grad_step(s: Step, rows: slice, values: dict, local: dict, outs: dict, step: int,
               source: _LazySource | None = None, slots: dict | None = None) -> None:
    """One typed step of the program for channels ``rows`` (its role and operands' places were
    resolved by ``lower_grad``: nothing is told apart here by testing names)."""
    n, part, role = rows.stop - rows.start, s.op, s.role
    if role == LAZY_HEAD:
        _put(s, _lazy_head(part, values[part.inputs[1]], rows, source), rows, local, outs, slots)
    elif role == HEAD:  # channels ``rows`` of the expanded gradient, a whole tensor of the arena
        g, w = values[s.grad.name][0], values[part.inputs[1]]
        y = pointwise_input_grad(g.reshape(g.shape[0], -1), w[:, rows, 0, 0]).reshape((n,) + g.shape[1:])
        _put(s, y, rows, local, outs, slots)
    elif role == DEPTHWISE_X:  # channel by channel
        shape, w = part.attr("input_shape"), values[part.inputs[1]]
        y = correlate_transpose(local[s.grad.name].astype(np.float64), w[rows].astype(np.float64), part.attr("stride"),
                                part.attr("groups"), tuple(shape[2:]))
        _put(s, y.astype(np.float32), rows, local, outs, slots)
    elif role == TAIL:
        _tail(part, values[part.inputs[1]], local[s.grad.name], rows, values, outs)
    elif role == REQUANT:
        g, m = local[s.grad.name], values[part.inputs[2]]
        mask = local[s.mask.name] if s.mask.place == SCRATCH else values[s.mask.name][0, rows]
        scale = m.astype(np.float32).reshape(()) if m.size == 1 else m[rows].astype(np.float32).reshape(n, 1, 1)
        _put(s, (g * mask.astype(np.float32)) * scale, rows, local, outs, slots)
    elif role == BIAS_GRAD:
        _put(s, channel_sums(local[s.grad.name]), rows, local, outs)
    elif role == UPDATE_BIAS:
        b, g, qas = values[part.inputs[0]], local[s.grad.name], values[part.inputs[2]]
        update_bias_rows(part, b, g, qas[rows], rows)
    elif role in (WEIGHT_GRAD, WEIGHT_GRAD_UPDATE):
        _weight_rows(s, rows, values, local, outs, step)
    elif role == UPDATE_WEIGHT:
        w, g, qas = values[part.inputs[0]], local[s.grad.name], values[part.inputs[2]]
        if g is not None:
            sel = slice(rows.start, rows.start + g.shape[0])
            update_weight_rows(part, w, g, qas[sel], step, sel)
    else:
        raise ValueError(f"mbconv_grad cannot run a {role} step")


def _weight_rows(s: Step, rows: slice, values: dict, local: dict, outs: dict, step: int) -> None:
    """Rows ``rows`` of a weight gradient (depthwise: channels below ``kept``; 1x1: rows), stored, or
    applied at once by a fused update."""
    part, n = s.op, rows.stop - rows.start
    update = s.role == WEIGHT_GRAD_UPDATE
    x_name = part.inputs[1] if update else part.inputs[0]
    x, g = values[x_name], local[s.grad.name]
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
        _put(s, gw, rows, local, outs)
    elif gw is not None:
        w, qas = values[part.inputs[0]], values[part.inputs[3]]
        sel = slice(rows.start, rows.start + gw.shape[0])
        update_weight_rows(part, w, gw, qas[sel], step, sel)


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
