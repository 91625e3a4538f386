"""One emitter per op kind: a scheduled op -> the C that runs it (a kernel call and its operand struct).

``EMITTERS[kind](ctx) -> Emitted``: ``decls`` are file-scope definitions (the op's ``static const``
operand structs: geometry, zero points, pointers to its parameters and constants), ``code`` is the
statement in the stage function, with arena pointers at the planned offsets. Emitters only build
strings; ``generate`` assembles them. What the kernels compute is in ``c/mct_kernels.h`` (the emitters
of the fused kinds, row pipelines and block backwards, are in ``emitters_fused``: ``c/mct_fused.h``; those
of the TFLite ops of imported graphs, pools, MEAN and reshape, in ``emitters_graph``).
Parameters and constants are referenced through ``Symbols``, which records what is used so that
only referenced Flash arrays are defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from mcutrain.codegen.add_tables import add_structs
from mcutrain.codegen.errors import CodegenError
from mcutrain.codegen.literals import declare, identifier, int_literal, uint_literal
from mcutrain.codegen.storage import ParamStorage
from mcutrain.engine.ir import Op, TensorInfo
from mcutrain.engine.lifetimes import scratch_bytes
from mcutrain.engine.ops import conv_geometry, conv_out_hw, is_pointwise_conv
from mcutrain.engine.passes.fuse_expand import split
from mcutrain.engine.passes.inplace import is_inplace_depthwise
from mcutrain.quant.int8_ops import avgpool_params

ARENA_MACROS = {"int8": "A8", "int32": "A32", "float32": "AF", "bit": "AB"}


@dataclass(frozen=True)
class Emitted:
    decls: tuple[str, ...]
    code: str


# The program's learning rate in model.c: one runtime float (mct_init sets it to the compiled lr, the
# guard halves it on a rollback) that every update reads through its struct's ``lr`` pointer.
LR_SYMBOL = "&engine.lr"


class Symbols:
    """The file-scope data emitted code refers to; records which constants are used. ``lr``: the
    program's compiled learning rate (float32), the one every update op must carry."""

    def __init__(self, constants: Mapping[str, np.ndarray], params: Mapping[str, ParamStorage],
                 lr: float | None = None):
        self.constants, self.params = constants, params
        self.lr = None if lr is None else np.float32(lr)
        self.used: dict[str, None] = {}
        self.tables: dict[str, str] = {}  # symbol -> definition (Symbols.table)

    def table(self, symbol: str, define: Callable[[str], str]) -> str:
        """A table the generator computed (an add's operand tables, a frozen conv's DSP plan), ``define(name)`` its
        C definition as ``name``: defined once beside the Flash arrays however many ops of the two stages read it
        (``symbol`` names its op; another table whose op's name makes the same identifier gets a suffix)."""
        name, n = symbol, 1
        while self.tables.setdefault(name, text := define(name)) != text:
            n += 1
            name = f"{symbol}_{n}"
        return name

    def array(self, name: str) -> str:
        """A pointer to a constant, or to a parameter's current value (its SRAM copy when trained whole)."""
        self.used[name] = None
        if name in self.params:
            p = self.params[name]
            if p.trained and p.kept_shape != p.shape:
                raise CodegenError(f"{name}: partly trained parameter read as a plain array (use weight())")
            return p.sram or p.flash
        if name not in self.constants:
            raise CodegenError(f"{name!r} is neither a parameter nor a constant of the program")
        return identifier(name, "c_")

    def sram(self, name: str) -> str:
        p = self.params.get(name)
        if p is None or not p.trained:
            raise CodegenError(f"{name!r} is written by an update but has no SRAM copy")
        self.used[name] = None
        return p.sram

    def weight(self, name: str | None) -> str:
        """An ``mct_weight`` initializer: Flash array, SRAM slice, [rows][cols][inner], kept rows/cols."""
        if name is None:
            return "{NULL, NULL, 0, 0, 0, 0, 0}"
        p = self.params.get(name)
        if p is None or p.dtype != "int8":
            raise CodegenError(f"{name!r} is not an int8 weight parameter")
        self.used[name] = None
        rows, cols, inner = p.matrix()
        kept_rows, kept_cols = p.kept_matrix()
        return f"{{{p.flash}, {p.sram or 'NULL'}, {rows}, {cols}, {inner}, {kept_rows}, {kept_cols}}}"


@dataclass(frozen=True)
class OpContext:
    op: Op
    index: int
    stage: object  # mcutrain.engine.compile.Stage
    tag: str  # "T" (training) or "I" (inference): prefix of the op's struct names
    symbols: Symbols

    def info(self, name: str) -> TensorInfo:
        return self.stage.graph.tensor(name)

    def ptr(self, name: str) -> str:
        """The typed arena pointer of tensor ``name`` at its planned offset."""
        info = self.info(name)
        if name not in self.stage.storage:
            raise CodegenError(f"op {self.op.name}: tensor {name!r} is not in the arena")
        return f"{ARENA_MACROS[info.dtype]}({self.stage.offset(name)})"

    def output(self, position: int) -> str:
        return self.ptr(self.op.outputs[position]) if position < len(self.op.outputs) else "NULL"

    def scratch(self, macro: str) -> str:
        size = scratch_bytes(self.stage.graph, self.op)
        return f"{macro}({self.stage.plan.offsets[f'{self.op.name}.scratch']})" if size else "NULL"

    def struct(self, suffix: str = "") -> str:
        return f"{self.tag}{self.index}{suffix}"

    def attrs(self) -> dict:
        return dict(self.op.attrs)


def numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def channels_plane(shape) -> tuple[int, int]:
    """(channels, elements per channel) of a batch-1 tensor [1, C, ...]."""
    return int(shape[1]), numel(shape[2:])


# ----------------------------------------------------------------------------------------------
# Operand structs


def conv_fields(ctx: OpContext, attrs: dict, x_shape, y_shape, weight: str | None, weight_shape,
                operands: tuple[str, str, str] | None = None) -> list[tuple[str, str]]:
    """``mct_conv`` fields: geometry from the input/output shapes, the weight, and (forward) the
    bias, multiplier and shift arrays."""
    _, c, h, w = x_shape
    _, o, ho, wo = y_shape
    kernel, groups = tuple(int(v) for v in weight_shape[2:]), int(attrs["groups"])
    (sh, sw), (top, bottom, left, right) = conv_geometry(_Attrs(attrs), kernel)
    if (ho, wo) != conv_out_hw(h, w, kernel, (sh, sw), (top, bottom, left, right)):
        raise CodegenError(f"op {ctx.op.name}: output {y_shape} is not what a {kernel} conv with strides {(sh, sw)} "
                           f"and padding {(top, bottom, left, right)} makes of {x_shape}")
    if max(kernel) > MAX_KERNEL or max(top, bottom) >= kernel[0] or max(left, right) >= kernel[1]:
        raise CodegenError(f"op {ctx.op.name}: kernel {kernel} with padding {(top, bottom, left, right)} (kernel "
                           f"sides up to {MAX_KERNEL}, padding below the kernel)")
    if groups > 1 and not (groups == o == weight_shape[0] and weight_shape[1] == 1 and c <= groups):
        raise CodegenError(f"op {ctx.op.name}: grouped convs must be depthwise (groups == channels)")
    if groups == 1 and c > weight_shape[1]:
        raise CodegenError(f"op {ctx.op.name}: input has {c} channels, the weight {weight_shape[1]}")
    qmin, qmax, y_zero = attrs.get("qmin", 0), attrs.get("qmax", 0), attrs.get("y_zero", 0)
    if not (-128 <= qmin <= qmax <= 127 and abs(y_zero) <= 255):  # what mct_requantize_fast relies on
        raise CodegenError(f"op {ctx.op.name}: output range [{qmin}, {qmax}] / zero point {y_zero} is not int8")
    bias, mult, shift = (ctx.symbols.array(n) for n in operands) if operands else ("NULL",) * 3
    geometry = dict(in_c=c, in_h=h, in_w=w, out_c=o, out_h=ho, out_w=wo, k=kernel[0], stride=sh, pad=top,
                    groups=groups, kw=kernel[1], stride_w=sw, pad_left=left, x_zero=attrs.get("x_zero", 0),
                    y_zero=attrs.get("y_zero", 0), qmin=attrs.get("qmin", 0), qmax=attrs.get("qmax", 0))
    return ([(key, int_literal(v)) for key, v in geometry.items()]
            + [("w", ctx.symbols.weight(weight)), ("bias", bias), ("multiplier", mult), ("shift", shift)])


MAX_KERNEL = 11  # the largest kernel side the general kernels are tested with (issue 13)


class _Attrs:
    """An op-like view of an attribute dict (conv_geometry reads ``attr``)."""

    def __init__(self, attrs: dict):
        self.attrs = attrs

    def attr(self, key: str, default=None):
        return self.attrs.get(key, default)


def forward_conv_struct(ctx: OpContext, name: str, op: Op, x_shape, y_shape, dsp_plan: str = "NULL") -> str:
    """``dsp_plan``: the value of its field (dsp_plans.dsp_plan)."""
    x, w, b, m, s = op.inputs
    for array, what in ((m, "multiplier"), (s, "shift"), (b, "bias")):
        if ctx.symbols.params.get(array) is None and ctx.symbols.constants[array].shape != (y_shape[1],):
            raise CodegenError(f"op {op.name}: one {what} per output channel expected")
    fields = conv_fields(ctx, dict(op.attrs), x_shape, y_shape, w, ctx.info(w).shape, (b, m, s))
    return declare("mct_conv", name, op, fields + ([("dsp_plan", dsp_plan)] if dsp_plan != "NULL" else []))


def linear_fields(ctx: OpContext, in_features: int, out_features: int, weight: str | None, bias: str | None,
                  scale: str | None) -> list[tuple[str, str]]:
    """``mct_linear`` fields; ``scale`` None: the integer backward's gradient ops (the scale is in their g)."""
    if scale is not None and ctx.symbols.constants[scale].shape != (out_features,):
        raise CodegenError(f"op {ctx.op.name}: one logit scale per class expected")
    return [("in_features", str(in_features)), ("out_features", str(out_features)),
            ("x_zero", int_literal(ctx.attrs().get("x_zero", 0))), ("w", ctx.symbols.weight(weight)),
            ("bias", ctx.symbols.array(bias) if bias else "NULL"),
            ("scale", ctx.symbols.array(scale) if scale else "NULL")]


def update_struct(ctx: OpContext, name: str, param: str, qas: str, op: Op | None = None) -> str:
    """``mct_update`` of the parameter an update op (``op``, default the context's) writes: its SRAM
    slice, QAS factors, the runtime learning rate (``LR_SYMBOL``), RNG stream, slice shape."""
    op = op if op is not None else ctx.op
    attrs = dict(op.attrs)
    if attrs.get("rule") != "sr":
        raise CodegenError(f"op {op.name}: update rule {attrs.get('rule')!r} has no C kernel (only 'sr')")
    storage = ctx.symbols.params[param]
    kept = tuple(attrs["kept_shape"])
    if kept != storage.kept_shape:
        raise CodegenError(f"op {op.name}: kept shape {kept} differs from the SRAM copy {storage.kept_shape}")
    if ctx.symbols.constants[qas].shape != (kept[0],):
        raise CodegenError(f"op {op.name}: one QAS factor per trained row expected")
    rows, cols = storage.kept_matrix()
    inner = numel(kept[2:])
    sram = ctx.symbols.sram(param)
    w, b = (sram, "NULL") if storage.dtype == "int8" else ("NULL", sram)
    if ctx.symbols.lr is None or np.float32(attrs["lr"]) != ctx.symbols.lr:
        raise CodegenError(f"op {op.name}: learning rate {attrs['lr']!r} differs from the program's "
                           f"{ctx.symbols.lr!r}; the C holds one runtime learning rate for all updates")
    fields = [("w", w), ("b", b), ("qas", ctx.symbols.array(qas)), ("lr", LR_SYMBOL),
              ("seed", uint_literal(attrs["seed"])), ("tensor_id", uint_literal(attrs["tensor_id"])),
              ("rows", str(rows)), ("cols", str(cols)), ("inner", str(inner))]
    return declare("mct_update", name, op, fields)


def check_inplace(ctx: OpContext) -> None:
    """An op marked in place must find its output at its input's offset (the kernels rely on it)."""
    j = ctx.op.attr("inplace")
    if j is not None and ctx.stage.offset(ctx.op.outputs[0]) != ctx.stage.offset(ctx.op.inputs[j]):
        raise CodegenError(f"op {ctx.op.name}: marked in place but planned at another offset")


# ----------------------------------------------------------------------------------------------
# Forward


def emit_conv2d(ctx: OpContext) -> Emitted:
    op = ctx.op
    x, y = op.inputs[0], op.outputs[0]
    name = ctx.struct()
    decl = forward_conv_struct(ctx, name, op, ctx.info(x).shape, ctx.info(y).shape)
    if op.attr("rescale") is not None:
        return emit_fc_conv(ctx, decl)
    scratch = ctx.scratch("A8") if is_inplace_depthwise(op) else "NULL"
    if op.attr("inplace") not in (None, 0) or (op.attr("inplace") == 0 and scratch == "NULL"):
        raise CodegenError(f"op {op.name}: only depthwise convs run in place")
    return Emitted((decl,), f"mct_conv2d(&{name}, {ctx.ptr(x)}, {ctx.ptr(y)}, {ctx.output(1)}, {scratch});")


def emit_pointwise_depthwise(ctx: OpContext) -> Emitted:
    expand, depthwise = split(ctx.op)
    x, y = ctx.op.inputs[0], ctx.op.outputs[0]
    x_shape = ctx.info(x).shape
    mid_shape = (1, ctx.info(expand.inputs[1]).shape[0]) + tuple(x_shape[2:])
    e, d = ctx.struct("e"), ctx.struct("d")
    decls = (forward_conv_struct(ctx, e, expand, x_shape, mid_shape),
             forward_conv_struct(ctx, d, depthwise, mid_shape, ctx.info(y).shape))
    return Emitted(decls, f"mct_pointwise_depthwise(&{e}, &{d}, {ctx.ptr(x)}, {ctx.ptr(y)}, {ctx.output(1)}, "
                          f"{ctx.scratch('A8')});")


def emit_add(ctx: OpContext) -> Emitted:
    name = ctx.struct()
    a, b = ctx.op.inputs
    decl, table = add_structs(ctx.symbols, name, ctx.op)
    return Emitted((decl,), f"mct_add_tensors(&{name}, &{table}, {ctx.ptr(a)}, {ctx.ptr(b)}, {ctx.output(0)}, "
                            f"{ctx.output(1)}, {numel(ctx.info(a).shape)});")


def emit_avgpool(ctx: OpContext) -> Emitted:
    a = ctx.attrs()
    (x,) = ctx.op.inputs
    c, plane = channels_plane(ctx.info(x).shape)
    p = avgpool_params(a["x_scale"], a["x_zero"], a["y_scale"], a["y_zero"], plane)
    fields = [("channels", c), ("count", p.count), ("x_zero", p.x_zero), ("multiplier", p.multiplier),
              ("shift", p.shift), ("y_zero", p.y_zero), ("qmin", p.qmin), ("qmax", p.qmax)]
    name = ctx.struct()
    decl = declare("mct_pool", name, ctx.op, [(f, int_literal(v)) for f, v in fields])
    return Emitted((decl,), f"mct_global_avgpool(&{name}, {ctx.ptr(x)}, {ctx.output(0)}, {ctx.output(1)});")


def emit_linear(ctx: OpContext) -> Emitted:
    x, w, b, scale = ctx.op.inputs
    k, c = ctx.info(w).shape
    name = ctx.struct()
    decl = declare("mct_linear", name, ctx.op, linear_fields(ctx, c, k, w, b, scale))
    return Emitted((decl,), f"mct_linear_forward(&{name}, {ctx.ptr(x)}, {ctx.output(0)});")


def emit_slice_channels(ctx: OpContext) -> Emitted:
    (x,), (y,) = ctx.op.inputs, ctx.op.outputs
    return Emitted((), f"memcpy({ctx.ptr(y)}, {ctx.ptr(x)}, {ctx.info(y).nbytes}); /* batch 1: a leading run */")


def emit_softmax_ce(ctx: OpContext) -> Emitted:
    logits, label = ctx.op.inputs
    loss, grad = ctx.op.outputs
    k = ctx.info(logits).shape[1]
    return Emitted((), f"mct_softmax_ce({ctx.ptr(logits)}, {k}, {ctx.ptr(label)}[0], {ctx.ptr(loss)}, "
                       f"{ctx.ptr(grad)});")


# ----------------------------------------------------------------------------------------------
# Backward


def emit_requant_grad(ctx: OpContext) -> Emitted:
    g, mask, m = ctx.op.inputs
    c, plane = channels_plane(ctx.info(g).shape)
    size = ctx.symbols.constants[m].size
    if size not in (1, c):
        raise CodegenError(f"op {ctx.op.name}: {size} factors for {c} channels")
    return Emitted((), f"mct_requant_grad({ctx.ptr(g)}, {ctx.ptr(mask)}, {ctx.symbols.array(m)}, "
                       f"{int(size == c and c > 1)}, {c}, {plane}, {ctx.output(0)});")


def emit_add_grad(ctx: OpContext) -> Emitted:
    g, mask, ratios = ctx.op.inputs
    n = numel(ctx.info(g).shape)
    return Emitted((), f"mct_add_grad({ctx.ptr(g)}, {ctx.ptr(mask)}, {ctx.symbols.array(ratios)}, {n}, "
                       f"{ctx.output(0)}, {ctx.output(1)});")


def emit_avgpool_grad(ctx: OpContext) -> Emitted:
    g, mask, factor = ctx.op.inputs
    c, plane = channels_plane(ctx.op.attr("input_shape"))
    return Emitted((), f"mct_avgpool_grad({ctx.ptr(g)}, {ctx.ptr(mask)}, {ctx.symbols.array(factor)}, {c}, "
                       f"{plane}, {ctx.output(0)});")


def emit_grad_sum(ctx: OpContext) -> Emitted:
    terms = ", ".join(ctx.ptr(t) for t in ctx.op.inputs)
    n = numel(ctx.info(ctx.op.outputs[0]).shape)
    return Emitted((), f"{{\n        const float *const terms[] = {{{terms}}};\n        "
                       f"mct_grad_sum(terms, {len(ctx.op.inputs)}, {n}, {ctx.output(0)});\n    }}")


def emit_conv2d_grad_x(ctx: OpContext) -> Emitted:
    op = ctx.op
    g, w = op.inputs[:2]
    init = ctx.ptr(op.inputs[2]) if len(op.inputs) == 3 else "NULL"
    a = ctx.attrs()
    pointwise = is_pointwise_conv(op, ctx.info(w).shape)
    if init != "NULL" and not pointwise:
        raise CodegenError(f"op {op.name}: an accumulated input gradient needs a 1x1 conv")
    name = ctx.struct()
    fields = conv_fields(ctx, a, tuple(a["input_shape"]), ctx.info(g).shape, w, ctx.info(w).shape)
    scratch = ctx.scratch("AF") if is_inplace_depthwise(op) else "NULL"
    if op.attr("inplace") == 0 and scratch == "NULL":
        raise CodegenError(f"op {op.name}: in place over its gradient without a scratch channel")
    return Emitted((declare("mct_conv", name, op, fields),),
                   f"mct_conv2d_grad_x(&{name}, {ctx.ptr(g)}, {init}, {ctx.output(0)}, {scratch});")


def grad_w_geometry(ctx: OpContext, x: str, g: str) -> tuple[list[tuple[str, str]], int, int]:
    """Fields of the struct a weight gradient needs (no weight), and its (rows, cols)."""
    a = ctx.attrs()
    shape = tuple(a["weight_shape"])
    rows, cols = (a["kept"], 1) if a["groups"] > 1 else (shape[0], a["kept"])
    if ctx.info(x).shape[1] < (rows if a["groups"] > 1 else cols):
        raise CodegenError(f"op {ctx.op.name}: the saved input has fewer channels than the trained slice")
    return conv_fields(ctx, a, ctx.info(x).shape, ctx.info(g).shape, None, shape), rows, cols


def emit_conv2d_grad_w(ctx: OpContext) -> Emitted:
    x, g = ctx.op.inputs
    fields, rows, cols = grad_w_geometry(ctx, x, g)
    name = ctx.struct()
    return Emitted((declare("mct_conv", name, ctx.op, fields),),
                   f"mct_conv2d_grad_w(&{name}, {ctx.ptr(x)}, {ctx.ptr(g)}, {rows}, {cols}, {ctx.output(0)});")


def emit_conv2d_grad_b(ctx: OpContext) -> Emitted:
    (g,) = ctx.op.inputs
    c, plane = channels_plane(ctx.info(g).shape)
    return Emitted((), f"mct_conv2d_grad_b({ctx.ptr(g)}, {c}, {plane}, {ctx.output(0)});")


def emit_linear_grad_x(ctx: OpContext) -> Emitted:
    g, w, scale = ctx.op.inputs
    k, c = ctx.info(w).shape
    name = ctx.struct()
    decl = declare("mct_linear", name, ctx.op, linear_fields(ctx, c, k, w, None, scale))
    return Emitted((decl,), f"mct_linear_grad_x(&{name}, {ctx.ptr(g)}, {ctx.output(0)});")


def emit_linear_grad_w(ctx: OpContext) -> Emitted:
    g, x, scale = ctx.op.inputs
    name = ctx.struct()
    decl = declare("mct_linear", name, ctx.op,
                   linear_fields(ctx, ctx.info(x).shape[1], ctx.info(g).shape[1], None, None, scale))
    return Emitted((decl,), f"mct_linear_grad_w(&{name}, {ctx.ptr(g)}, {ctx.ptr(x)}, {ctx.output(0)});")


def emit_linear_grad_b(ctx: OpContext) -> Emitted:
    g, scale = ctx.op.inputs
    k = ctx.info(g).shape[1]
    name = ctx.struct()
    decl = declare("mct_linear", name, ctx.op, linear_fields(ctx, 0, k, None, None, scale))
    return Emitted((decl,), f"mct_linear_grad_b(&{name}, {ctx.ptr(g)}, {ctx.output(0)});")


# ----------------------------------------------------------------------------------------------
# Updates


def emit_update_weight(ctx: OpContext) -> Emitted:
    w, g, qas = ctx.op.inputs
    name = ctx.struct()
    return Emitted((update_struct(ctx, name, w, qas),), f"mct_update_weight(&{name}, {ctx.ptr(g)}, step);")


def emit_update_bias(ctx: OpContext) -> Emitted:
    b, g, qas = ctx.op.inputs
    name = ctx.struct()
    return Emitted((update_struct(ctx, name, b, qas),), f"mct_update_bias(&{name}, {ctx.ptr(g)});")


def grad_w_update_structs(ctx: OpContext) -> tuple[tuple[str, str], str, str]:
    """The (conv, update) struct definitions of a fused weight gradient + update, and their names."""
    w, x, g, qas = ctx.op.inputs
    fields, rows, cols = grad_w_geometry(ctx, x, g)
    if (rows, cols) != ctx.symbols.params[w].kept_matrix():
        raise CodegenError(f"op {ctx.op.name}: gradient slice ({rows}, {cols}) differs from the SRAM copy")
    c, u = ctx.struct("c"), ctx.struct("u")
    return (declare("mct_conv", c, ctx.op, fields), update_struct(ctx, u, w, qas)), c, u


def emit_conv2d_grad_w_update(ctx: OpContext) -> Emitted:
    _, x, g, _ = ctx.op.inputs
    decls, c, u = grad_w_update_structs(ctx)
    return Emitted(decls, f"mct_conv2d_grad_w_update(&{c}, &{u}, {ctx.ptr(x)}, {ctx.ptr(g)}, step);")


def emit_linear_grad_w_update(ctx: OpContext) -> Emitted:
    w, g, x, scale, qas = ctx.op.inputs
    p, u = ctx.struct("p"), ctx.struct("u")
    fields = linear_fields(ctx, ctx.info(x).shape[1], ctx.info(g).shape[1], None, None, scale)
    decls = (declare("mct_linear", p, ctx.op, fields), update_struct(ctx, u, w, qas))
    return Emitted(decls, f"mct_linear_grad_w_update(&{p}, &{u}, {ctx.ptr(g)}, {ctx.ptr(x)}, step);")


EMITTERS: dict[str, Callable[[OpContext], Emitted]] = {
    "conv2d": emit_conv2d,
    "pointwise_depthwise": emit_pointwise_depthwise,
    "add": emit_add,
    "avgpool": emit_avgpool,
    "linear": emit_linear,
    "slice_channels": emit_slice_channels,
    "softmax_ce": emit_softmax_ce,
    "requant_grad": emit_requant_grad,
    "add_grad": emit_add_grad,
    "avgpool_grad": emit_avgpool_grad,
    "grad_sum": emit_grad_sum,
    "conv2d_grad_x": emit_conv2d_grad_x,
    "conv2d_grad_w": emit_conv2d_grad_w,
    "conv2d_grad_b": emit_conv2d_grad_b,
    "linear_grad_x": emit_linear_grad_x,
    "linear_grad_w": emit_linear_grad_w,
    "linear_grad_b": emit_linear_grad_b,
    "update_weight": emit_update_weight,
    "update_bias": emit_update_bias,
    "conv2d_grad_w_update": emit_conv2d_grad_w_update,
    "linear_grad_w_update": emit_linear_grad_w_update,
}


from mcutrain.codegen.emitters_fused import FUSED_EMITTERS  # noqa: E402  (built on the helpers above)

EMITTERS.update(FUSED_EMITTERS)

from mcutrain.codegen.emitters_graph import GRAPH_EMITTERS, emit_fc_conv  # noqa: E402  (imported graphs' ops)

EMITTERS.update(GRAPH_EMITTERS)

from mcutrain.codegen.emitters_int8 import INT8_EMITTERS  # noqa: E402  (the integer backward's kinds)

EMITTERS.update(INT8_EMITTERS)


def emit(ctx: OpContext) -> Emitted:
    """The C of one op: its kind's emitter, after the in-place check."""
    emitter = EMITTERS.get(ctx.op.kind)
    if emitter is None:
        raise CodegenError(f"op {ctx.op.name}: kind {ctx.op.kind!r} has no C kernel")
    check_inplace(ctx)
    return emitter(ctx)
