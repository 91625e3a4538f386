"""Emitters of the TFLite op kinds an imported graph adds (issue 13): pools clipped at the border,
MEAN, the channels-last flatten, their backward ops, and the forward of a hidden fully connected
layer (a ``conv2d`` with ``rescale``; ``emit_conv2d`` hands it here) (kernels in ``c/mct_kernels.h``).

Why a module of its own: ``emitters`` holds the zoo's kinds and is near its size limit; these build on
its helpers the same way ``emitters_fused`` does. A reshape that keeps the element order and was
planned in place (``passes/inplace``: a view) emits no code at all.
"""

from __future__ import annotations

import math

from mcutrain.codegen.emitters import Emitted, OpContext, channels_plane, declare, numel
from mcutrain.codegen.errors import CodegenError
from mcutrain.codegen.literals import int_literal
from mcutrain.engine.executor.graph_kernels import mean_multiplier
from mcutrain.engine.ops import conv_out_hw, reshape_permutes


def _double_literal(value: float) -> str:
    if not math.isfinite(value):
        raise CodegenError(f"non-finite constant {value!r} cannot be emitted")
    return repr(float(value))  # the shortest decimal that reads back to the same double


def emit_fc_conv(ctx: OpContext, decl: str) -> Emitted:
    """A hidden fully connected layer (a 1x1 conv over [C, 1, 1] with LiteRT's double ``rescale``)."""
    op, name = ctx.op, ctx.struct()
    x, y = op.inputs[0], op.outputs[0]
    rescale = op.attr("rescale")
    n, c, h, w = ctx.info(x).shape
    if (h, w) != (1, 1) or ctx.info(y).shape != (n, len(rescale), 1, 1) or op.attr("groups") != 1:
        raise CodegenError(f"op {op.name}: a rescaled conv must be a fully connected layer over [N, C, 1, 1]")
    if op.attr("inplace") is not None:
        raise CodegenError(f"op {op.name}: a fully connected layer cannot run in place")
    values = ", ".join(_double_literal(v) for v in rescale)
    table = f"static const double {name}_rescale[{len(rescale)}] = {{{values}}};"
    return Emitted((decl, table), f"mct_fc_forward(&{name}, {name}_rescale, {ctx.ptr(x)}, {ctx.ptr(y)}, "
                                  f"{ctx.output(1)});")


def pool_struct(ctx: OpContext, x_shape, y_shape) -> str:
    """``mct_tfl_pool`` of the op (forward: its own attributes; backward: the forward's, copied)."""
    a = ctx.attrs()
    _, c, h, w = x_shape
    (kh, kw), (sh, sw), pads = tuple(a["kernel"]), tuple(a["strides"]), tuple(a["pads"])
    oh, ow = y_shape[2:]
    if (oh, ow) != conv_out_hw(h, w, (kh, kw), (sh, sw), pads) or max(pads[:2]) >= kh or max(pads[2:]) >= kw:
        raise CodegenError(f"op {ctx.op.name}: window {(kh, kw)} strides {(sh, sw)} padding {pads} (below the "
                           f"window) do not make {tuple(y_shape)} of {tuple(x_shape)}")
    fields = [("channels", c), ("in_h", h), ("in_w", w), ("out_h", oh), ("out_w", ow), ("kh", kh), ("kw", kw),
              ("sh", sh), ("sw", sw), ("pad_top", pads[0]), ("pad_left", pads[2]), ("qmin", a.get("qmin", -128)),
              ("qmax", a.get("qmax", 127))]
    name = ctx.struct()
    return declare("mct_tfl_pool", name, ctx.op, [(f, int_literal(v)) for f, v in fields]
                   + [("ratio", _double_literal(a.get("ratio", 1.0)))])


def _emit_pool(function: str):
    def emit(ctx: OpContext) -> Emitted:
        (x,), y = ctx.op.inputs, ctx.op.outputs[0]
        decl = pool_struct(ctx, ctx.info(x).shape, ctx.info(y).shape)
        return Emitted((decl,), f"{function}(&{ctx.struct()}, {ctx.ptr(x)}, {ctx.ptr(y)}, {ctx.output(1)});")
    return emit


def emit_tfl_mean(ctx: OpContext) -> Emitted:
    a = ctx.attrs()
    (x,) = ctx.op.inputs
    c, count = channels_plane(ctx.info(x).shape)
    mult, shift = mean_multiplier(a["x_scale"], a["y_scale"], count)
    fields = [("channels", c), ("count", count), ("x_zero", a["x_zero"]), ("multiplier", mult), ("shift", shift),
              ("y_zero", a["y_zero"])]
    decl = declare("mct_tfl_mean_params", ctx.struct(), ctx.op, [(f, int_literal(v)) for f, v in fields])
    return Emitted((decl,), f"mct_tfl_mean(&{ctx.struct()}, {ctx.ptr(x)}, {ctx.output(0)}, {ctx.output(1)});")


def _emit_reshape(copy: str, ctype: str):
    def emit(ctx: OpContext) -> Emitted:
        (x,), (y,) = ctx.op.inputs, ctx.op.outputs
        shape = tuple(ctx.op.attr("input_shape") or ctx.info(x).shape)
        if reshape_permutes(ctx.op, shape):
            if ctx.op.attr("inplace") is not None:
                raise CodegenError(f"op {ctx.op.name}: a permuting reshape cannot run in place")
            c, plane = channels_plane(shape)
            return Emitted((), f"{copy}({ctx.ptr(x)}, {c}, {plane}, {ctx.ptr(y)});")
        if ctx.op.attr("inplace") == 0:
            return Emitted((), "/* a view: the output is the input's bytes */")
        return Emitted((), f"memcpy({ctx.ptr(y)}, {ctx.ptr(x)}, {numel(shape)} * sizeof({ctype}));")
    return emit


def emit_tfl_avgpool_grad(ctx: OpContext) -> Emitted:
    g, mask = ctx.op.inputs
    decl = pool_struct(ctx, ctx.op.attr("input_shape"), ctx.info(g).shape)
    return Emitted((decl,), f"mct_tfl_avgpool_grad(&{ctx.struct()}, {ctx.ptr(g)}, {ctx.ptr(mask)}, {ctx.output(0)});")


def emit_tfl_maxpool_grad(ctx: OpContext) -> Emitted:
    g, mask, x = ctx.op.inputs
    decl = pool_struct(ctx, ctx.op.attr("input_shape"), ctx.info(g).shape)
    return Emitted((decl,), f"mct_tfl_maxpool_grad(&{ctx.struct()}, {ctx.ptr(g)}, {ctx.ptr(mask)}, {ctx.ptr(x)}, "
                            f"{ctx.output(0)});")


GRAPH_EMITTERS = {
    "tfl_avgpool": _emit_pool("mct_tfl_avgpool"),
    "tfl_maxpool": _emit_pool("mct_tfl_maxpool"),
    "tfl_mean": emit_tfl_mean,
    "reshape": _emit_reshape("mct_nchw_to_nhwc_i8", "int8_t"),
    "reshape_grad": _emit_reshape("mct_nhwc_to_nchw_f32", "float"),
    "tfl_avgpool_grad": emit_tfl_avgpool_grad,
    "tfl_maxpool_grad": emit_tfl_maxpool_grad,
}

__all__ = ["GRAPH_EMITTERS"]
