"""The op catalogue: every op kind the engine knows, with the rule that types its outputs.

One table (tinygrad-style): ``OUTPUT_TYPES[kind](graph, op) -> [(shape, dtype), ...]``. The verifier
checks every op's declared outputs against it, so a pass that builds a wrong op fails at once, next
to the pass that built it. Semantics of each kind (DESIGN.md section 3) live in the executors; the
names here are the contract between the frontend, autodiff, passes, the NumPy executor and codegen.

Forward (int8):   conv2d, add, avgpool, linear, slice_channels
Forward (TFLite): tfl_avgpool, tfl_maxpool, tfl_mean, reshape   (an imported graph's ops, issue 13)
Fused (forward):  pointwise_depthwise   (1x1 expand conv + depthwise conv, the expanded tensor never whole)
                  mbconv_rows           (a chain of frozen convs / adds run row by row through ring buffers)
Loss:             softmax_ce            (fp32 loss and the logits' gradient, fused)
Backward (fp32):  linear_grad_x, linear_grad_w, linear_grad_b, avgpool_grad, add_grad,
                  requant_grad, conv2d_grad_x, conv2d_grad_w, conv2d_grad_b, grad_sum,
                  tfl_avgpool_grad, tfl_maxpool_grad, reshape_grad
Update:           update_weight, update_bias   (no outputs: they write a trainable parameter)
Fused (update):   conv2d_grad_w_update, linear_grad_w_update   (weight gradient + update, no buffer)
Fused (backward): mbconv_grad   (a block's backward through its expanded channels, channel by channel)
Backward (int8):  loss_grad8, requant_grad8, add_grad8, avgpool_grad8, conv2d_grad_x8, conv2d_grad_w8,
                  conv2d_grad_b8, grad_sum8, linear_grad_x8, linear_grad_w8, linear_grad_b8, reshape_grad8,
                  tfl_maxpool_grad8, tfl_avgpool_grad8; update_weight8, update_bias8, conv2d_grad_w_update8,
                  linear_grad_w_update8   (``--backward int8``: see "The integer backward" below)

Operands and meaning (batch 1; ``g`` = fp32 gradients w.r.t. integer-domain values; DESIGN.md s. 3):
  conv2d(x, w, b, multiplier, shift) -> y [, mask]     mask = qmin < v < qmax (bit, v before the clamp)
                                                       geometry: {stride, pad} or {strides, pads} (below)
  add(a, b) -> y [, mask]                              avgpool(x) -> y [, mask]
  linear(x, w, b, logit_scale) -> logits (fp32)        slice_channels(x){channels} -> x[:, :channels]
  pointwise_depthwise(x, w1, b1, m1, s1, w2, b2, m2, s2){depthwise attrs, expand_* attrs} -> y [, mask]
                                                       = conv2d(conv2d(x, w1, ...){expand_*}, w2, ...),
                                                       one expanded channel at a time (H*W scratch)
  mbconv_rows(x, params...){stages, internal, program, stream, fused} -> y [, mask]
                                                       = the stages (conv2d / add ops) in a row, each
                                                       intermediate tensor a ring of a few rows in the
                                                       op's scratch; x read row by row (streamed: never
                                                       whole); program: schedule, rings, folds
                                                       (fused_program.RowsProgram); see passes/fuse_rows
  softmax_ce(logits, label) -> loss, g_logits          (softmax - onehot, mean over the batch of 1)
  requant_grad(g_y, mask, m) -> g_y * mask * m         m: float32 per channel [C] or one value [1]
  conv2d_grad_x(g_acc, w [, init]){stride, groups, pad, input_shape} -> [init +] conv_transpose(w, g_acc)
                                                       (init: 1x1 convs only, the terms added to it
                                                       one after the other in float32)
  conv2d_grad_w(x_kept, g_acc){stride, groups, pad, kept, weight_shape, x_zero}
                                                       -> correlate(x_kept - x_zero, g_acc), kept channels
  conv2d_grad_b(g_acc) -> sum over positions
  add_grad(g_y, mask, ratios[2]) -> g_y*mask*ratios[0], g_y*mask*ratios[1]
  avgpool_grad(g_y, mask, factor[1]){input_shape} -> g_y*mask*factor spread over H x W
  linear_grad_x(g, w, logit_scale) -> (g*logit_scale) @ w
  linear_grad_w(g, x, logit_scale){x_zero} -> (g*logit_scale)^T (x - x_zero)
  linear_grad_b(g, logit_scale) -> sum over the batch of g*logit_scale
  grad_sum(g_1, ..., g_n) -> g_1 + ... + g_n           (gradients at a fan-out are summed)
  update_weight(w, g, qas){lr, seed, tensor_id, rule, kept_shape}
                                                       w[kept] <- clamp(sr(w[kept] - lr*g*qas), -127, 127)
  update_bias(b, g, qas){lr, seed, tensor_id, rule, kept_shape}
                                                       b <- sat32(b + floor(0.5 - lr*g*qas))
  conv2d_grad_w_update(w, x_kept, g_acc, qas){conv2d_grad_w's and update_weight's attributes}
  linear_grad_w_update(w, g, x, logit_scale, qas){x_zero and update_weight's attributes}
                                                       the weight gradient, applied as update_weight
                                                       applies it, element by element: never stored
  mbconv_grad(inputs...){program, internal, channels, writes} -> the chain's outputs
                                                       = the parts (requant_grad, conv2d_grad_{x,b,w},
                                                       updates) of one block, run for each expanded
                                                       channel in turn; writes the parameters in
                                                       ``writes`` in place; program: typed steps,
                                                       scratch layout, recomputed forward
                                                       (fused_program.GradProgram); see passes/fuse_backward
The TFLite ops (arithmetic: ``mcutrain.quant.graph_forward``, which the NumPy kernels call; a mask is
``qmin < v < qmax`` for v before the clamp, which for these ops is ``qmin < y < qmax``):
  tfl_avgpool(x){kernel, strides, pads, qmin, qmax, x_scale, y_scale} -> y [, mask]
                                                       windows (kh, kw), strides (sh, sw), pads (t, b, l, r),
                                                       clipped at the border: round_half_away(sum x / n)
                                                       over the n valid positions (TFLite: in == out
                                                       quantization); global when the window is the input
  tfl_maxpool(x){kernel, strides, pads, qmin, qmax} -> y [, mask]   max over the clipped window
  tfl_mean(x){x_scale, x_zero, y_scale, y_zero, keep_dims} -> y [, mask]
                                                       TFLite MEAN over H, W: y [N, C] (or [N, C, 1, 1]
                                                       with keep_dims); mask over [-128, 127]
  reshape(x){channels_last[, shape]} -> [N, numel / N]  a flatten; channels_last (TFLite's NHWC order) on a
                                                       [N, C, H, W] input with H*W > 1 permutes (a copy),
                                                       otherwise the same bytes (a view: in place);
                                                       ``shape``: that output shape instead (never permutes:
                                                       a hidden FC's [N, C] -> [N, C, 1, 1])
  conv2d(...){rescale}                                 a hidden fully connected layer as its 1x1 conv
                                                       (``quant.graph.FcConv``): y = clamp(round_half_away(
                                                       sat32(acc) * rescale[c]) + y_zero) with ``rescale``
                                                       float64 per output channel (LiteRT's double
                                                       rescale, ``graph_forward.fc_values``); multiplier
                                                       and shift give the backward's M only. Always with
                                                       general-geometry attributes (no fused path)
  tfl_avgpool_grad(g_y, mask){kernel, strides, pads, input_shape, ratio}
                                                       -> g_x: each output's fl32(g*mask) * fl32(ratio / n)
                                                       added to its window's n valid positions
                                                       (ratio = s_x / s_y; float64 sum, rounded once)
  tfl_maxpool_grad(g_y, mask, x){kernel, strides, pads, input_shape} -> g_x: g*mask added (float32, outputs in C
                                                       order) at the window's first maximum of x in
                                                       window order (row by row): TFLite's argmax
  reshape_grad(g_y){channels_last, input_shape}        -> g_y in the input's layout (inverse permutation)
  tfl_mean's backward is avgpool_grad (factor s_x / (s_y H W)).
Every update-phase op writes its first input ``p`` in place, the leading slice
``kept = p[:s0, :s1, ...]`` with ``s = attr kept_shape`` (the kept channels; the gradient has that
shape; ``qas`` has ``s0`` entries, broadcast along axis 0). Stochastic rounding draws word ``i`` of the
stream (seed, step, tensor_id) for element ``i`` of the slice in C order. Products are float32 in the
order written (the simulation's).
An op with the attribute ``inplace=i`` writes its first output over its input ``i`` (same bytes):
set by the in-place pass only where that input dies at the op, so executors may rely on it.

The integer backward (``PassOptions.backward == "int8"``, issue 16; arithmetic: ``mcutrain.quant.int8_grad``,
the NumPy kernels in ``executor/int8_kernels`` call it; made from the float ops by ``passes/int8_backward``).
Gradient dtypes (``ir.GRAD_DTYPES``), at any 4-aligned arena offset, little endian:
  grad8   [int32 E][numel x int8 g]   value g * 2**E, canonical (normalize: |g| <= 127, max|g| >= 64 unless
                                      all zero, then E = 0); nbytes = 4 + numel
  grad32  [int32 E][numel x int32 G]  a parameter gradient, unrounded (E: its g_acc's); nbytes = 4 + 4 numel
Factor operands ``F`` are int32 [2, n] constants: F[0] = m, F[1] = sh (``grad_multiplier`` of the float
path's float32 factor widened to float64: real ~= m * 2**sh); n = 1 is one factor for every element.
The updates keep the float path's QAS operand ``qas`` (float32, one per kept row) and take
``(m_c, x_c) = update_factor(lr, qas)`` when they run (the C's learning rate is a runtime value).
  loss_grad8(g_logits fp32 [1, K], logit_scale fp32 [K]) -> grad8 [1, K]
                                              = normalize(float64(g) * float64(scale)) (exact product)
  requant_grad8(g_y, mask, F[2, C or 1]) -> g_acc = scale_grad(g, E, F[0], F[1], mask, channel axis 1)
  add_grad8(g_y, mask, F[2, 2]) -> (scale_grad(g, E, F[0,0], F[1,0], mask), scale_grad(.., F[0,1], F[1,1], mask))
  avgpool_grad8(g_y [N, C](,1,1), mask, F[2, 1]){input_shape} -> scale_grad(g, E, F, mask) [N, C] spread
                                              unchanged (same E) over H x W
  conv2d_grad_x8(g_acc, w [, init]){conv2d_grad_x's} -> normalize_int(conv_transpose(w, g_acc), E) (int32 sums,
                                              exact); with init: add_grads(init, that)
  conv2d_grad_w8(x_kept, g_acc){conv2d_grad_w's} -> grad32: correlate(x_kept - x_zero, g_acc) at E
  conv2d_grad_b8(g_acc) -> grad32 [C]: sum over positions at E
  grad_sum8(g_1, ..., g_n) -> add_grads(...add_grads(add_grads(g_1, g_2), g_3)..., g_n)  (left fold, reading order)
  linear_grad_x8(g8, w) -> normalize_int(g @ w, E);  linear_grad_w8(g8, x){x_zero} -> grad32 g^T (x - x_zero)
  linear_grad_b8(g8) -> grad32 sum over the batch of g          (g8: loss_grad8's output, E its exponent)
  reshape_grad8(g_y){reshape_grad's} -> the payload permuted as reshape_grad, same E (a view when it keeps order)
  tfl_maxpool_grad8(g_y, mask, x){tfl_maxpool_grad's} -> normalize_int(g*mask summed at each window's first max, E)
  tfl_avgpool_grad8(g_y, mask, F[2, OH*OW]){tfl_avgpool_grad's} -> normalize_int(sum over windows of
                                              g*mask*(F[0,p] << (F[1,p] - min F[1])), E + min F[1])
                                              (F per output position p: fl32(ratio / n_p))
  update_weight8(w, G grad32, qas){seed, tensor_id, rule, kept_shape, lr}
                                              w[kept] <- update_weight(w[kept], G, E, m_c, x_c, r): r = word i
                                              of the stream (seed, step, tensor_id) for element i of the kept
                                              slice in C order (the float rule's words)
  update_bias8(b, G grad32, qas){..., kept_shape} b[:k] <- update_bias(b[:k], G, E, m_c, x_c)
  conv2d_grad_w_update8(w, x_kept, g_acc, qas), linear_grad_w_update8(w, g8, x, qas)
                                              the grad32 weight gradient applied as update_weight8, element
                                              by element (each G element is final on its own): never stored
Every int8 kernel that normalizes needs the peak of its whole result before it writes an element: on
the device it computes the result twice (peak, then values) or holds it; no scratch is planned for it.
In place as the float kinds (requant_grad8, add_grad8, grad_sum8, conv2d_grad_x8 over init or, depthwise,
over g_acc with a one-channel scratch; reshape_grad8 a view). The block backward (mbconv_grad) is not
made in int8 mode (v1).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mcutrain.engine.ir import Graph, Op

Shape = tuple[int, ...]


# ----------------------------------------------------------------------------------------------
# Conv geometry. A conv op of the zoo's geometry (square odd kernel k, "same" padding k // 2 on every
# side) has the attributes ``stride`` and ``pad``; any other conv (issue 13: kh x kw, per-axis
# strides, explicit asymmetric padding) has ``strides`` = (sh, sw) and ``pads`` = (top, bottom, left,
# right) instead, and NOT ``stride``/``pad``: code that knows only the zoo's geometry then fails
# loudly instead of computing something else. The fused fast paths take only zoo-geometry ops
# (``has_general_geometry`` is the predicate each of those passes checks).


def has_general_geometry(op: Op) -> bool:
    """True for a conv-like op (conv2d and its gradient ops) whose geometry is not the zoo's."""
    return op.attr("pads") is not None


def geometry_attrs(op: Op) -> dict:
    """The geometry attributes of a conv op, to copy onto the ops derived from it."""
    if has_general_geometry(op):
        return dict(strides=tuple(op.attr("strides")), pads=tuple(op.attr("pads")))
    return dict(stride=op.attr("stride"), pad=op.attr("pad"))


def conv_geometry(op: Op, kernel_hw) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """((sh, sw), (top, bottom, left, right)) of a conv-like op with a kernel of ``kernel_hw``."""
    if has_general_geometry(op):
        return tuple(op.attr("strides")), tuple(op.attr("pads"))
    s, (kh, kw) = op.attr("stride"), kernel_hw
    return (s, s), (kh // 2, kh // 2, kw // 2, kw // 2)


def conv_out_hw(h: int, w: int, kernel_hw, strides, pads) -> tuple[int, int]:
    (kh, kw), (sh, sw), (top, bottom, left, right) = kernel_hw, strides, pads
    return (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1


def stride_and_top_pad(op: Op) -> tuple[int, int]:
    """(stride, rows of padding at the top) of a conv a row pipeline runs (``row_geometry``)."""
    if has_general_geometry(op):
        return int(op.attr("strides")[0]), int(op.attr("pads")[0])
    return op.attr("stride"), op.attr("pad")


def row_geometry(g: Graph, op: Op) -> tuple[int, int] | None:
    """(stride, top padding) when a row pipeline can run conv ``op``, else None.

    The row kernels (``passes/fuse_rows``, ``c/mct_fused.c``, ``executor/arena_kernels``) read output
    row r from input rows ``s*r - top ...`` and column c from columns ``s*c - left ...``, clipped to the
    input (what lies outside is the zero point), for ``ceil(in / s)`` outputs per axis. That is the
    zoo's "same" conv (k // 2 on every side) and also TFLite's SAME convolution of any input, e.g. a
    stride-2 one on an even input, whose one row/column of padding is at the bottom/right only (top =
    left = k // 2 - 1): a square odd kernel, one stride, top == left, bottom == right, outputs
    ceil(in / s). A hidden fully connected layer's conv (``rescale``) never is one."""
    if op.kind != "conv2d" or op.attr("rescale") is not None:
        return None
    if not has_general_geometry(op):
        return op.attr("stride"), op.attr("pad")
    n, c, h, w = g.tensor(op.inputs[0]).shape
    kh, kw = g.tensor(op.inputs[1]).shape[2:]
    (sh, sw), (top, bottom, left, right) = op.attr("strides"), op.attr("pads")
    same = conv_out_hw(h, w, (kh, kw), (sh, sw), (top, bottom, left, right)) == (-(-h // sh), -(-w // sw))
    if kh != kw or kh % 2 == 0 or sh != sw or top != left or bottom != right or not same:
        return None
    return int(sh), int(top)


def is_pointwise_conv(op: Op, weight_shape) -> bool:
    """A 1x1, stride-1, groups-1 conv with no padding: the kernels' pointwise fast paths."""
    strides, pads = conv_geometry(op, tuple(weight_shape[2:]))
    return (op.attr("groups") == 1 and tuple(weight_shape[2:]) == (1, 1) and strides == (1, 1)
            and pads == (0, 0, 0, 0))


def _conv2d(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    n, _, h, w = g.tensor(op.inputs[0]).shape
    o, _, kh, kw = g.tensor(op.inputs[1]).shape
    strides, pads = conv_geometry(op, (kh, kw))
    y = ((n, o) + conv_out_hw(h, w, (kh, kw), strides, pads), "int8")
    return [y, (y[0], "bit")] if len(op.outputs) == 2 else [y]


def _same_as_first_int8(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    y = (g.tensor(op.inputs[0]).shape, "int8")
    return [y, (y[0], "bit")] if len(op.outputs) == 2 else [y]


def _pointwise_depthwise(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    n, _, h, w = g.tensor(op.inputs[0]).shape
    s = op.attr("stride")
    y = ((n, g.tensor(op.inputs[5]).shape[0], -(-h // s), -(-w // s)), "int8")
    return [y, (y[0], "bit")] if len(op.outputs) == 2 else [y]


class _WithInternal:
    """``graph.tensor`` plus the intermediate tensors of an ``mbconv_rows`` op."""

    def __init__(self, g: Graph, op: Op):
        self.g, self.extra = g, {t.name: t for t in op.attr("internal", ())}

    def tensor(self, name: str):
        return self.extra[name] if name in self.extra else self.g.tensor(name)


def _mbconv_rows(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    last = op.attr("stages")[-1]
    return OUTPUT_TYPES[last.kind](_WithInternal(g, op), last)


def _mbconv_grad(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    view, types = _WithInternal(g, op), {}
    for part in op.attr("program").all_ops:
        types.update(zip(part.outputs, OUTPUT_TYPES[part.kind](view, part)))
    return [types[o] for o in op.outputs]


def _avgpool(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    n, c = g.tensor(op.inputs[0]).shape[:2]
    return [((n, c), "int8"), ((n, c), "bit")] if len(op.outputs) == 2 else [((n, c), "int8")]


def _pool_out(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    n, c, h, w = g.tensor(op.inputs[0]).shape
    y = ((n, c) + conv_out_hw(h, w, tuple(op.attr("kernel")), tuple(op.attr("strides")), tuple(op.attr("pads"))),
         "int8")
    return [y, (y[0], "bit")] if len(op.outputs) == 2 else [y]


def _tfl_mean(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    n, c = g.tensor(op.inputs[0]).shape[:2]
    y = ((n, c, 1, 1) if op.attr("keep_dims") else (n, c), "int8")
    return [y, (y[0], "bit")] if len(op.outputs) == 2 else [y]


def _reshape(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    x = g.tensor(op.inputs[0])
    shape = op.attr("shape")
    if shape is not None and int(np.prod(shape)) == x.numel:
        return [(tuple(shape), x.dtype)]
    return [((x.shape[0], x.numel // x.shape[0]), x.dtype)]


def reshape_permutes(op: Op, input_shape) -> bool:
    """True when a reshape (or its gradient) reorders elements: channels-last flatten of a 4-D tensor
    with more than one position; otherwise it only renames the same bytes (a view)."""
    return bool(op.attr("channels_last")) and len(input_shape) == 4 and input_shape[2] * input_shape[3] > 1


def _linear(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [((g.tensor(op.inputs[0]).shape[0], g.tensor(op.inputs[1]).shape[0]), "float32")]


def _slice_channels(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    n, _, h, w = g.tensor(op.inputs[0]).shape
    return [((n, op.attr("channels"), h, w), g.tensor(op.inputs[0]).dtype)]


def _softmax_ce(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [((1,), "float32"), (g.tensor(op.inputs[0]).shape, "float32")]


def _float_like(index: int) -> Callable[[Graph, Op], list[tuple[Shape, str]]]:
    return lambda g, op: [(g.tensor(op.inputs[index]).shape, "float32")]


def _linear_grad_x(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    n = g.tensor(op.inputs[0]).shape[0]
    return [((n, g.tensor(op.inputs[1]).shape[1]), "float32")]


def _linear_grad_w(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [((g.tensor(op.inputs[0]).shape[1], g.tensor(op.inputs[1]).shape[1]), "float32")]


def _linear_grad_b(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [((g.tensor(op.inputs[0]).shape[1],), "float32")]


def _avgpool_grad(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [(tuple(op.attr("input_shape")), "float32")]


def _add_grad(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    shape = g.tensor(op.inputs[0]).shape
    return [(shape, "float32"), (shape, "float32")]


def _conv2d_grad_x(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [(tuple(op.attr("input_shape")), "float32")]


def _conv2d_grad_w(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    o, i, kh, kw = op.attr("weight_shape")
    k = op.attr("kept")
    return [((k, 1, kh, kw) if op.attr("groups") > 1 else (o, k, kh, kw), "float32")]


def _conv2d_grad_b(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [((g.tensor(op.inputs[0]).shape[1],), "float32")]


def _no_outputs(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return []


def _as_dtype(rule: Callable[[Graph, Op], list[tuple[Shape, str]]], dtype: str) -> Callable:
    """The float rule's shapes with another dtype: an int8-backward kind's outputs (``grad8``/``grad32``)."""
    return lambda g, op: [(shape, dtype) for shape, _ in rule(g, op)]


INT8_BACKWARD_TYPES: dict[str, Callable[[Graph, Op], list[tuple[Shape, str]]]] = {
    "loss_grad8": _as_dtype(_float_like(0), "grad8"),
    "requant_grad8": _as_dtype(_float_like(0), "grad8"),
    "add_grad8": _as_dtype(_add_grad, "grad8"),
    "avgpool_grad8": _as_dtype(_avgpool_grad, "grad8"),
    "conv2d_grad_x8": _as_dtype(_conv2d_grad_x, "grad8"),
    "conv2d_grad_w8": _as_dtype(_conv2d_grad_w, "grad32"),
    "conv2d_grad_b8": _as_dtype(_conv2d_grad_b, "grad32"),
    "grad_sum8": _as_dtype(_float_like(0), "grad8"),
    "linear_grad_x8": _as_dtype(_linear_grad_x, "grad8"),
    "linear_grad_w8": _as_dtype(_linear_grad_w, "grad32"),
    "linear_grad_b8": _as_dtype(_linear_grad_b, "grad32"),
    "tfl_avgpool_grad8": _as_dtype(_avgpool_grad, "grad8"),
    "tfl_maxpool_grad8": _as_dtype(_avgpool_grad, "grad8"),
    "reshape_grad8": _as_dtype(_avgpool_grad, "grad8"),
    "update_weight8": _no_outputs,
    "update_bias8": _no_outputs,
    "conv2d_grad_w_update8": _no_outputs,
    "linear_grad_w_update8": _no_outputs,
}


OUTPUT_TYPES: dict[str, Callable[[Graph, Op], list[tuple[Shape, str]]]] = {
    "conv2d": _conv2d,
    "pointwise_depthwise": _pointwise_depthwise,
    "mbconv_rows": _mbconv_rows,
    "add": _same_as_first_int8,
    "avgpool": _avgpool,
    "linear": _linear,
    "slice_channels": _slice_channels,
    "softmax_ce": _softmax_ce,
    "linear_grad_x": _linear_grad_x,
    "linear_grad_w": _linear_grad_w,
    "linear_grad_b": _linear_grad_b,
    "avgpool_grad": _avgpool_grad,
    "add_grad": _add_grad,
    "requant_grad": _float_like(0),
    "conv2d_grad_x": _conv2d_grad_x,
    "conv2d_grad_w": _conv2d_grad_w,
    "conv2d_grad_b": _conv2d_grad_b,
    "grad_sum": _float_like(0),
    "update_weight": _no_outputs,
    "update_bias": _no_outputs,
    "conv2d_grad_w_update": _no_outputs,
    "mbconv_grad": _mbconv_grad,
    "linear_grad_w_update": _no_outputs,
    "tfl_avgpool": _pool_out,
    "tfl_maxpool": _pool_out,
    "tfl_mean": _tfl_mean,
    "reshape": _reshape,
    "tfl_avgpool_grad": _avgpool_grad,
    "tfl_maxpool_grad": _avgpool_grad,
    "reshape_grad": _avgpool_grad,
    **INT8_BACKWARD_TYPES,
}
