"""Emitters of the integer backward's kinds (``--backward int8``; c/mct_backward8.h, quant/mct_int8_grad.h).

A gradient tensor in the arena is ``[int32 E][payload]`` (``ir.GRAD_DTYPES``: grad8 an int8 payload,
grad32 an int32 one), so each operand is two C expressions: its exponent ``A32(o)[0]`` and its payload
at ``o + 4``. A kernel that makes a gradient returns its exponent, which the statement stores in the
output's header; in-place kernels read the input's exponent as an argument before the store. The real
factors are the int32 ``[2, n]`` constants the lowering pass made (row 0 ``m``, row 1 ``sh``).
"""

from __future__ import annotations

from typing import Callable

from mcutrain.codegen.emitters import (Emitted, OpContext, channels_plane, conv_fields, declare, grad_w_geometry,
                                       grad_w_update_structs, linear_fields, numel, update_struct)
from mcutrain.codegen.emitters_graph import pool_struct
from mcutrain.codegen.errors import CodegenError
from mcutrain.engine.ir import GRAD_HEADER_BYTES
from mcutrain.engine.ops import reshape_permutes
from mcutrain.engine.passes.inplace import is_inplace_depthwise

PAYLOAD_MACROS = {"grad8": "A8", "grad32": "A32"}


def exponent(ctx: OpContext, name: str) -> str:
    """The int32 exponent in the header of gradient tensor ``name`` (an lvalue)."""
    _check_grad(ctx, name)
    return f"A32({ctx.stage.offset(name)})[0]"


def payload(ctx: OpContext, name: str) -> str:
    """A pointer to the payload of gradient tensor ``name``, after its header."""
    info = _check_grad(ctx, name)
    return f"{PAYLOAD_MACROS[info.dtype]}({ctx.stage.offset(name)} + {GRAD_HEADER_BYTES})"


def _check_grad(ctx: OpContext, name: str):
    info = ctx.info(name)
    if info.dtype not in PAYLOAD_MACROS:
        raise CodegenError(f"op {ctx.op.name}: {name!r} is {info.dtype}, not an integer gradient")
    if name not in ctx.stage.storage:
        raise CodegenError(f"op {ctx.op.name}: tensor {name!r} is not in the arena")
    return info


def _factor(ctx: OpContext, name: str, count: int | None = None) -> tuple[str, str, int]:
    """(m pointer, sh pointer, n) of an int32 [2, n] factor constant."""
    array = ctx.symbols.constants[name]
    if array.ndim != 2 or array.shape[0] != 2 or (count is not None and array.shape[1] not in (1, count)):
        raise CodegenError(f"op {ctx.op.name}: factor {name!r} of shape {array.shape} (int32 [2, n] expected)")
    base = ctx.symbols.array(name)
    return base, f"{base} + {array.shape[1]}", int(array.shape[1])


def _store(ctx: OpContext, out: str, call: str) -> str:
    return f"{exponent(ctx, out)} = {call};"


def emit_loss_grad8(ctx: OpContext) -> Emitted:
    g, scale = ctx.op.inputs
    k = ctx.info(g).shape[1]
    if ctx.symbols.constants[scale].shape != (k,):
        raise CodegenError(f"op {ctx.op.name}: one logit scale per class expected")
    (out,) = ctx.op.outputs
    return Emitted((), _store(ctx, out, f"mct_g8_from_products({ctx.ptr(g)}, {ctx.symbols.array(scale)}, {k}, "
                                        f"{payload(ctx, out)})"))


def emit_requant_grad8(ctx: OpContext) -> Emitted:
    g, mask, factor = ctx.op.inputs
    c, plane = channels_plane(ctx.info(g).shape)
    m, sh, n = _factor(ctx, factor, c)
    (out,) = ctx.op.outputs
    call = (f"mct_g8_scale({payload(ctx, g)}, {exponent(ctx, g)}, {ctx.ptr(mask)}, {m}, {sh}, {int(n == c and c > 1)}, "
            f"{c}, {plane}, {payload(ctx, out)})")
    return Emitted((), _store(ctx, out, call))


def emit_add_grad8(ctx: OpContext) -> Emitted:
    g, mask, factor = ctx.op.inputs
    m, sh, n = _factor(ctx, factor)
    if n != 2:
        raise CodegenError(f"op {ctx.op.name}: an add's gradient needs two factors, got {n}")
    size = numel(ctx.info(g).shape)
    out_a, out_b = ctx.op.outputs

    def one(out: str, j: int) -> str:  # b first: out_a may be g (in place), out_b never is
        return _store(ctx, out, f"mct_g8_scale({payload(ctx, g)}, e_g, {ctx.ptr(mask)}, {m} + {j}, {sh} + {j}, 0, 1, "
                                f"{size}, {payload(ctx, out)})")
    return Emitted((), f"{{\n        const int32_t e_g = {exponent(ctx, g)};\n        {one(out_b, 1)}\n"
                       f"        {one(out_a, 0)}\n    }}")


def emit_avgpool_grad8(ctx: OpContext) -> Emitted:
    g, mask, factor = ctx.op.inputs
    m, sh, n = _factor(ctx, factor, 1)
    c, plane = channels_plane(ctx.op.attr("input_shape"))
    (out,) = ctx.op.outputs
    call = (f"mct_g8_avgpool_grad({payload(ctx, g)}, {exponent(ctx, g)}, {ctx.ptr(mask)}, ({m})[0], ({sh})[0], {c}, "
            f"{plane}, {payload(ctx, out)})")
    return Emitted((), _store(ctx, out, call))


def emit_grad_sum8(ctx: OpContext) -> Emitted:
    terms = ", ".join(payload(ctx, t) for t in ctx.op.inputs)
    exps = ", ".join(exponent(ctx, t) for t in ctx.op.inputs)
    (out,) = ctx.op.outputs
    n = numel(ctx.info(out).shape)
    call = f"mct_g8_grad_sum(terms, exponents, {len(ctx.op.inputs)}, {n}, {payload(ctx, out)})"
    return Emitted((), f"{{\n        const int8_t *const terms[] = {{{terms}}};\n        "
                       f"const int32_t exponents[] = {{{exps}}};\n        {_store(ctx, out, call)}\n    }}")


def emit_conv2d_grad_x8(ctx: OpContext) -> Emitted:
    op = ctx.op
    g, w = op.inputs[:2]
    init = op.inputs[2] if len(op.inputs) == 3 else None
    a = ctx.attrs()
    name = ctx.struct()
    fields = conv_fields(ctx, a, tuple(a["input_shape"]), ctx.info(g).shape, w, ctx.info(w).shape)
    scratch = ctx.scratch("A8") if is_inplace_depthwise(op) else "NULL"
    if op.attr("inplace") == 0 and scratch == "NULL":
        raise CodegenError(f"op {op.name}: in place over its gradient without a scratch channel")
    init_args = f"{payload(ctx, init)}, {exponent(ctx, init)}" if init else "NULL, 0"
    (out,) = op.outputs
    call = (f"mct_g8_conv2d_grad_x(&{name}, {payload(ctx, g)}, {exponent(ctx, g)}, {init_args}, {payload(ctx, out)}, "
            f"{scratch})")
    return Emitted((declare("mct_conv", name, op, fields),), _store(ctx, out, call))


def emit_conv2d_grad_w8(ctx: OpContext) -> Emitted:
    x, g = ctx.op.inputs
    fields, rows, cols = grad_w_geometry(ctx, x, g)
    name, (out,) = ctx.struct(), ctx.op.outputs
    return Emitted((declare("mct_conv", name, ctx.op, fields),),
                   f"mct_g8_conv2d_grad_w(&{name}, {ctx.ptr(x)}, {payload(ctx, g)}, {rows}, {cols}, "
                   f"{payload(ctx, out)}); "
                   f"{exponent(ctx, out)} = {exponent(ctx, g)};")


def emit_conv2d_grad_b8(ctx: OpContext) -> Emitted:
    (g,), (out,) = ctx.op.inputs, ctx.op.outputs
    c, plane = channels_plane(ctx.info(g).shape)
    return Emitted((), f"mct_g8_conv2d_grad_b({payload(ctx, g)}, {c}, {plane}, {payload(ctx, out)}); "
                       f"{exponent(ctx, out)} = {exponent(ctx, g)};")


def _linear_struct(ctx: OpContext, in_features: int, out_features: int, weight: str | None) -> str:
    fields = linear_fields(ctx, in_features, out_features, weight, None, None)
    return declare("mct_linear", ctx.struct(), ctx.op, fields)


def emit_linear_grad_x8(ctx: OpContext) -> Emitted:
    (g, w), (out,) = ctx.op.inputs, ctx.op.outputs
    k, c = ctx.info(w).shape
    call = f"mct_g8_linear_grad_x(&{ctx.struct()}, {payload(ctx, g)}, {exponent(ctx, g)}, {payload(ctx, out)})"
    return Emitted((_linear_struct(ctx, c, k, w),), _store(ctx, out, call))


def emit_linear_grad_w8(ctx: OpContext) -> Emitted:
    (g, x), (out,) = ctx.op.inputs, ctx.op.outputs
    decl = _linear_struct(ctx, ctx.info(x).shape[1], ctx.info(g).shape[1], None)
    return Emitted((decl,), f"mct_g8_linear_grad_w(&{ctx.struct()}, {payload(ctx, g)}, {ctx.ptr(x)}, "
                            f"{payload(ctx, out)}); {exponent(ctx, out)} = {exponent(ctx, g)};")


def emit_linear_grad_b8(ctx: OpContext) -> Emitted:
    (g,), (out,) = ctx.op.inputs, ctx.op.outputs
    decl = _linear_struct(ctx, 0, ctx.info(g).shape[1], None)
    return Emitted((decl,), f"mct_g8_linear_grad_b(&{ctx.struct()}, {payload(ctx, g)}, {payload(ctx, out)}); "
                            f"{exponent(ctx, out)} = {exponent(ctx, g)};")


def emit_update_weight8(ctx: OpContext) -> Emitted:
    w, g, qas = ctx.op.inputs
    name = ctx.struct()
    return Emitted((update_struct(ctx, name, w, qas),),
                   f"mct_g8_update_weight(&{name}, {payload(ctx, g)}, {exponent(ctx, g)}, step);")


def emit_update_bias8(ctx: OpContext) -> Emitted:
    b, g, qas = ctx.op.inputs
    name = ctx.struct()
    return Emitted((update_struct(ctx, name, b, qas),), f"mct_g8_update_bias(&{name}, {payload(ctx, g)}, "
                                                          f"{exponent(ctx, g)});")


def emit_conv2d_grad_w_update8(ctx: OpContext) -> Emitted:
    _, x, g, _ = ctx.op.inputs
    decls, c, u = grad_w_update_structs(ctx)
    return Emitted(decls, f"mct_g8_conv2d_grad_w_update(&{c}, &{u}, {ctx.ptr(x)}, {payload(ctx, g)}, "
                          f"{exponent(ctx, g)}, step);")


def emit_linear_grad_w_update8(ctx: OpContext) -> Emitted:
    w, g, x, qas = ctx.op.inputs
    u = ctx.struct("u")
    decls = (_linear_struct(ctx, ctx.info(x).shape[1], ctx.info(g).shape[1], None), update_struct(ctx, u, w, qas))
    return Emitted(decls, f"mct_g8_linear_grad_w_update(&{ctx.struct()}, &{u}, {payload(ctx, g)}, {ctx.ptr(x)}, "
                          f"{exponent(ctx, g)}, step);")


def _pool_grad8(ctx: OpContext, function: str, operands: str) -> Emitted:
    """A TFLite pool's integer backward: its window struct, g and its mask, the kind's own operands."""
    g, mask = ctx.op.inputs[:2]
    decl = pool_struct(ctx, ctx.op.attr("input_shape"), ctx.info(g).shape)
    (out,) = ctx.op.outputs
    call = (f"{function}(&{ctx.struct()}, {payload(ctx, g)}, {exponent(ctx, g)}, {ctx.ptr(mask)}, {operands}, "
            f"{payload(ctx, out)})")
    return Emitted((decl,), _store(ctx, out, call))


def emit_tfl_avgpool_grad8(ctx: OpContext) -> Emitted:
    g, _, factor = ctx.op.inputs
    oh, ow = ctx.info(g).shape[2:]
    if ctx.symbols.constants[factor].shape != (2, oh * ow):
        raise CodegenError(f"op {ctx.op.name}: one factor per output position expected")
    m, sh, _ = _factor(ctx, factor)
    return _pool_grad8(ctx, "mct_g8_tfl_avgpool_grad", f"{m}, {sh}")


def emit_tfl_maxpool_grad8(ctx: OpContext) -> Emitted:
    return _pool_grad8(ctx, "mct_g8_tfl_maxpool_grad", ctx.ptr(ctx.op.inputs[2]))


def emit_reshape_grad8(ctx: OpContext) -> Emitted:
    """The payload permuted (channels-last back to channels-first) or copied, the exponent kept; a view
    planned in place (same offset: header and payload are the input's) emits nothing."""
    (g,), (out,) = ctx.op.inputs, ctx.op.outputs
    shape = tuple(ctx.op.attr("input_shape") or ctx.info(g).shape)
    keep = f"{exponent(ctx, out)} = {exponent(ctx, g)};"
    if reshape_permutes(ctx.op, shape):
        if ctx.op.attr("inplace") is not None:
            raise CodegenError(f"op {ctx.op.name}: a permuting reshape cannot run in place")
        c, plane = channels_plane(shape)
        return Emitted((), f"mct_nhwc_to_nchw_i8({payload(ctx, g)}, {c}, {plane}, {payload(ctx, out)}); {keep}")
    if ctx.op.attr("inplace") == 0:
        return Emitted((), "/* a view: the output is the input's bytes, header included */")
    return Emitted((), f"memcpy({payload(ctx, out)}, {payload(ctx, g)}, {numel(shape)}); {keep}")


INT8_EMITTERS: dict[str, Callable[[OpContext], Emitted]] = {
    "loss_grad8": emit_loss_grad8,
    "requant_grad8": emit_requant_grad8,
    "add_grad8": emit_add_grad8,
    "avgpool_grad8": emit_avgpool_grad8,
    "grad_sum8": emit_grad_sum8,
    "conv2d_grad_x8": emit_conv2d_grad_x8,
    "conv2d_grad_w8": emit_conv2d_grad_w8,
    "conv2d_grad_b8": emit_conv2d_grad_b8,
    "linear_grad_x8": emit_linear_grad_x8,
    "linear_grad_w8": emit_linear_grad_w8,
    "linear_grad_b8": emit_linear_grad_b8,
    "update_weight8": emit_update_weight8,
    "update_bias8": emit_update_bias8,
    "conv2d_grad_w_update8": emit_conv2d_grad_w_update8,
    "linear_grad_w_update8": emit_linear_grad_w_update8,
    "reshape_grad8": emit_reshape_grad8,
    "tfl_maxpool_grad8": emit_tfl_maxpool_grad8,
    "tfl_avgpool_grad8": emit_tfl_avgpool_grad8,
}
