"""Emitters of the fused op kinds of the full pipeline: row pipelines and channel-by-channel block backwards.

Why a module of its own: these two kinds are not one kernel call over whole tensors but a program of
their own, and their emitters are the longest: ``mbconv_rows`` becomes tables in Flash (the tensors it
touches as row views, its stages, the static row schedule) for the kernel ``mct_mbconv_rows``;
``mbconv_grad`` becomes a C loop over the expanded channels that calls one per-channel helper of
``c/mct_fused.h`` per part of the chain, in the chain's order (as ``arena_kernels.mbconv_grad`` does,
one channel at a time instead of a few: per channel the numbers are the same). Both keep their
intermediate data in the op's planned scratch bytes: the rings and folded windows of the pipeline at
the offsets the pass chose, one channel of each gradient (and of the recomputed forward) of the block.
Both read the program their pass lowered (``engine.fused_program``: the row schedule and buffers; the
typed steps, resolved operands and scratch layout of a block backward) and derive none of it again.
"""

from __future__ import annotations

import numpy as np

from mcutrain.codegen.add_tables import add_structs
from mcutrain.codegen.dsp_plans import dsp_plan
from mcutrain.codegen.emitters import (Emitted, OpContext, conv_fields, declare, forward_conv_struct, numel,
                                       update_struct)
from mcutrain.codegen.errors import CodegenError
from mcutrain.codegen.literals import array_definition, comment, struct_initializer
from mcutrain.engine.fused_program import (BIAS_GRAD, DEFERRED, DEPTHWISE_X, FLOAT_PLANE, HEAD, INT8_PLANE, LAZY_HEAD,
                                           OUTPUT, REQUANT, SCRATCH, TAIL, UPDATE_BIAS, UPDATE_WEIGHT, WEIGHT_GRAD,
                                           WEIGHT_GRAD_UPDATE, Step, program_of)
from mcutrain.engine.ir import Op
from mcutrain.engine.ops import stride_and_top_pad
from mcutrain.engine.lifetimes import scratch_bytes
from mcutrain.engine.passes.fuse_backward import internal_of as grad_internal
from mcutrain.engine.passes.fuse_rows import STREAM, internal_of, rings_of, stages_of
from mcutrain.engine.passes.fuse_rows import program_of as rows_program_of
from mcutrain.engine.row_schedule import MAX_WINDOW_ROWS

MAX_K = MAX_WINDOW_ROWS  # MCT_ROWS_MAX_K: a pipeline's kernels and folded windows, in rows


def _scratch_offset(ctx: OpContext) -> int | None:
    if not scratch_bytes(ctx.stage.graph, ctx.op):
        return None
    return ctx.stage.plan.offsets[f"{ctx.op.name}.scratch"]


# ----------------------------------------------------------------------------------------------
# mbconv_rows


class _Views:
    """The tensors a pipeline touches, as ``mct_rows_view`` rows: rings in the scratch, whole tensors
    (a non-streamed input, the output) at their arena offsets."""

    def __init__(self, ctx: OpContext, scratch: int | None):
        self.ctx, self.scratch = ctx, scratch
        self.internal, self.rings = internal_of(ctx.op), rings_of(ctx.op)
        self.index: dict[str, int] = {}
        self.rows: list[list[tuple[str, str]]] = []

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.internal[name].shape if name in self.internal else self.ctx.info(name).shape)

    def __call__(self, name: str) -> int:
        if name not in self.index:
            _, c, h, w = self.shape(name)
            if name in self.rings:
                rc, ring, rw, off = self.rings[name]
                if (rc, rw) != (c, w):
                    raise CodegenError(f"op {self.ctx.op.name}: ring of {name} is {rc}x{ring}x{rw}, "
                                       f"the tensor {c}x{h}x{w}")
                offset = self.scratch + off
            else:
                ring, offset = h, self.ctx.stage.offset(name)
            self.index[name] = len(self.rows)
            self.rows.append([("offset", str(offset)), ("c", str(c)), ("h", str(h)), ("ring", str(ring)),
                              ("w", str(w))])
        return self.index[name]


# ``mct_rows_stage``'s fields as a stage that is not scheduled leaves them (a folded expand conv's)
_STAGE_FIELDS = {"conv": "NULL", "add": "NULL", "add_tables": "NULL", "expand": "NULL", "in": "-1", "in2": "-1",
                 "out": "-1", "window": "-1", "window_channels": "0", "batch": "1"}


def _stage_fields(given: dict[str, str]) -> list[tuple[str, str]]:
    """``mct_rows_stage``'s fields: ``given`` ones, the others as ``_STAGE_FIELDS`` says."""
    return [(key, given.get(key, default)) for key, default in _STAGE_FIELDS.items()]


def _rows_stage(ctx: OpContext, views: _Views, st: Op, s: int, folded: dict[str, Op], scratch: int | None,
                folds: dict) -> tuple[list[str], list[tuple[str, str]]]:
    """(decls, fields of the stage's ``mct_rows_stage``)."""
    tag = ctx.struct(f"s{s}")
    if st.kind == "add":
        decl, table = add_structs(ctx.symbols, tag, st)
        return [decl], _stage_fields({"add": f"&{tag}", "add_tables": f"&{table}", "in": str(views(st.inputs[0])),
                                      "in2": str(views(st.inputs[1])), "out": str(views(st.outputs[0]))})
    if st.kind != "conv2d":
        raise CodegenError(f"op {ctx.op.name}: a row pipeline stage of kind {st.kind!r} has no C kernel")
    x, y = st.inputs[0], st.outputs[0]
    k = ctx.info(st.inputs[1]).shape[-1]
    if k > MAX_K:
        raise CodegenError(f"op {ctx.op.name}: kernel {k} > {MAX_K} in a row pipeline")
    plan = dsp_plan(ctx.symbols, st)  # a row pipeline's convs are frozen: their DSP operands are constants
    decls = [forward_conv_struct(ctx, tag, st, views.shape(x), views.shape(y), plan)]
    if x in folds:  # folded: rows of x are made by its expand conv from the expand's input
        expand, b = folded[x], folds[x]
        e_tag = ctx.struct(f"s{s}e")
        plan = dsp_plan(ctx.symbols, expand, max(b.channels, 1))
        decls.append(forward_conv_struct(ctx, e_tag, expand, views.shape(expand.inputs[0]), views.shape(x), plan))
        # folded_stage derives the window's rows from k, stride and batch: they must agree
        if b.rows != k + (b.batch - 1) * stride_and_top_pad(st)[0] or b.rows > MAX_K or b.width != views.shape(x)[3]:
            raise CodegenError(f"op {ctx.op.name}: window of {x} ({b.rows} rows) is not the {b.batch} rows' of its "
                               f"kernel {k} (at most {MAX_K})")
        return decls, _stage_fields({"conv": f"&{tag}", "expand": f"&{e_tag}", "in": str(views(expand.inputs[0])),
                                     "out": str(views(y)), "window": str(scratch + b.offset),
                                     "window_channels": str(b.channels), "batch": str(b.batch)})
    if y in folds:  # a folded expand conv: never scheduled (its depthwise stage makes its rows)
        return decls, _stage_fields({"conv": f"&{tag}"})
    return decls, _stage_fields({"conv": f"&{tag}", "in": str(views(x)), "out": str(views(y))})


def emit_mbconv_rows(ctx: OpContext) -> Emitted:
    op = ctx.op
    stages = stages_of(op)
    x, y = op.inputs[0], op.outputs[0]
    scratch = _scratch_offset(ctx)
    streamed = bool(op.attr("stream"))
    if op.attr("inplace") == 0 and any(st.kind == "conv2d" and st.inputs[0] == x for st in stages[-1:]):
        raise CodegenError(f"op {op.name}: in place with a last conv reading the input it overwrites")
    views = _Views(ctx, scratch)
    producer = {st.outputs[0]: st for st in stages}
    folds = {b.tensor: b for b in rows_program_of(op).folds}
    folded = {name: producer[name] for name in folds}
    stream = views(x) if streamed else -1  # a streamed input's view is its ring
    views(x)
    out = views(y)
    decls, rows = [], []
    for s, st in enumerate(stages):
        d, fields = _rows_stage(ctx, views, st, s, folded, scratch, folds)
        decls += d
        rows.append(fields)
    schedule = np.array([(s, r) for s, r in rows_program_of(op).schedule], np.int64).reshape(-1)
    if schedule.size and (schedule.max() > 32767 or schedule.min() < STREAM):
        raise CodegenError(f"op {op.name}: row schedule does not fit int16")
    name = ctx.struct()
    decls.append(array_definition(f"{name}_schedule", schedule, "int16", const=True,
                                  note=f"{op.name}: (stage, row) events, stage -1: the next streamed row"))
    decls.append(f"static const mct_rows_view {name}_views[] = {{\n"
                 + ",\n".join("    " + struct_initializer(v, indent="      ").replace("\n", " ") for v in views.rows)
                 + "\n};")
    decls.append(f"static const mct_rows_stage {name}_stages[] = {{\n"
                 + ",\n".join("    " + struct_initializer(f, indent="      ").replace("\n", " ") for f in rows)
                 + "\n};")
    mask = str(ctx.stage.offset(op.outputs[1])) if len(op.outputs) == 2 else "-1"
    decls.append(declare("mct_rows", name, op, [
        ("stages", f"{name}_stages"), ("views", f"{name}_views"), ("schedule", f"{name}_schedule"),
        ("n_events", str(schedule.size // 2)), ("stream", str(stream)), ("out", str(out)), ("mask_offset", mask)]))
    return Emitted(tuple(decls), f"mct_mbconv_rows(&{name}, arena, {'image' if streamed else 'NULL'});")


# ----------------------------------------------------------------------------------------------
# mbconv_grad


class _Chain:
    """Emits the statements of one ``mbconv_grad`` op: where each chain tensor of the current channel
    is (a float plane in the scratch or an output, a scalar, the lazily computed source) and the
    operand structs of every part."""

    def __init__(self, ctx: OpContext):
        self.ctx, self.op = ctx, ctx.op
        self.internal = grad_internal(ctx.op)
        self.decls: list[str] = []
        self.count = 0
        self.deferred: dict[tuple, tuple] = {}  # (weight gradient, channel) -> how its update computes it
        self.program = program_of(ctx.op)
        self.lazy_name = self.program.source
        self.structs: dict[tuple, str] = {}  # one struct per part and operand, however many loop bodies use it

    def once(self, key: tuple, make) -> str:
        if key not in self.structs:
            self.structs[key] = make()
        return self.structs[key]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.internal[name].shape if name in self.internal else self.ctx.info(name).shape)

    def plane(self, name: str) -> int:
        return numel(self.shape(name)[2:])

    def tag(self, suffix: str) -> str:
        self.count += 1
        return self.ctx.struct(f"{suffix}{self.count}")

    def weight(self, name: str) -> str:
        def make():
            tag = self.tag("w")
            self.decls.append(f"static const mct_weight {tag} = {self.ctx.symbols.weight(name)};")
            return f"&{tag}"
        return self.once(("weight", name), make)

    def conv(self, part: Op, x_shape, g_shape, weight: str | None, weight_shape) -> str:
        def make():
            tag = self.tag("c")
            fields = conv_fields(self.ctx, dict(part.attrs), x_shape, g_shape, weight, weight_shape)
            self.decls.append(declare("mct_conv", tag, part, fields))
            return f"&{tag}"
        return self.once(("conv", part.name), make)

    def update(self, part: Op, param: str, qas: str) -> str:
        def make():
            tag = self.tag("u")
            self.decls.append(update_struct(self.ctx, tag, param, qas, part))
            return f"&{tag}"
        return self.once(("update", part.name, param), make)

    def factor(self, m: str, channels: int, chan: str) -> str:
        size = self.ctx.symbols.constants[m].size
        if size not in (1, channels):
            raise CodegenError(f"op {self.op.name}: {size} factors for {channels} channels")
        return f"{self.ctx.symbols.array(m)}[{chan if size == channels and channels > 1 else 0}]"


def _lazy_init(chain: _Chain) -> str:
    """The ``mct_lazy_grad`` of the op's lazily computed head input (a local of the emitted block)."""
    ctx = chain.ctx
    pool, requant = chain.program.lazy
    if pool.kind != "avgpool_grad" or requant.kind != "requant_grad" or requant.inputs[0] != pool.outputs[0]:
        raise CodegenError(f"op {ctx.op.name}: lazily computed source {[pool.kind, requant.kind]} has no C kernel")
    g, pool_mask, factor = pool.inputs
    _, mask, m = requant.inputs
    channels, plane = chain.shape(requant.outputs[0])[1], chain.plane(requant.outputs[0])
    size = ctx.symbols.constants[m].size
    if size not in (1, channels) or ctx.symbols.constants[factor].size != 1:
        raise CodegenError(f"op {ctx.op.name}: lazy source factors of sizes {size}, "
                           f"{ctx.symbols.constants[factor].size} for {channels} channels")
    per_channel = int(size == channels and channels > 1)
    return (f"const mct_lazy_grad lazy = {{{ctx.ptr(g)}, {ctx.ptr(pool_mask)}, {ctx.symbols.array(factor)}[0], "
            f"{ctx.ptr(mask)}, {ctx.symbols.array(m)}, {per_channel}, {channels}, {plane}}};")


def _source(chain: _Chain, where: dict, name: str) -> tuple[str, str]:
    """(plane pointer, lazy pointer) of a gradient the current part reads."""
    if name == chain.lazy_name and name not in where:
        return "NULL", "&lazy"
    if name not in where:
        raise CodegenError(f"op {chain.op.name}: {name} read before it is made")
    return where[name], "NULL"


def _dest(chain: _Chain, name: str, chan: str, where: dict, slots: dict) -> str:
    """Where channel ``chan`` of a plane a part makes goes: its row of an output, or its scratch slot."""
    if name in chain.op.outputs:
        return f"{chain.ctx.ptr(name)} + (size_t){chan} * {chain.plane(name)}"
    where[name] = slots[name]
    return slots[name]


def _step(chain: _Chain, s: Step, chan: str, where: dict, slots: dict, masks: dict) -> list[str]:
    """C statements of one typed step of the program for channel ``chan`` (``where``: chain tensor ->
    C expression of its current channel, updated here)."""
    ctx, part, role = chain.ctx, s.op, s.role
    outputs = set(chain.op.outputs)
    out = part.outputs[0] if part.outputs else None
    if s.out is not None and s.out.place == OUTPUT and role not in (HEAD, LAZY_HEAD, DEPTHWISE_X, TAIL, BIAS_GRAD,
                                                                    WEIGHT_GRAD):
        raise CodegenError(f"op {chain.op.name}: a {part.kind} output read outside the chain has no C kernel")

    def dest(name: str) -> str:
        return _dest(chain, name, chan, where, slots)

    if role == DEPTHWISE_X:
        g, w = part.inputs[:2]
        src, _ = _source(chain, where, g)
        conv = chain.conv(part, tuple(part.attr("input_shape")), chain.shape(g), w, ctx.info(w).shape)
        return [f"mct_fg_depthwise_grad_x({conv}, {chan}, {src}, {dest(out)});"]
    if role in (HEAD, LAZY_HEAD, TAIL):
        g, w = part.inputs[:2]
        w_shape = ctx.info(w).shape
        if not (part.attr("stride") == 1 and tuple(w_shape[2:]) == (1, 1)):
            raise CodegenError(f"op {chain.op.name}: a {w_shape} conv's input gradient in a block backward")
        if role != TAIL:  # a whole gradient of the arena, or the lazily computed source
            src = "NULL, &lazy" if role == LAZY_HEAD else f"{ctx.ptr(g)}, NULL"
            target = dest(out)
            return [f"mct_fg_head({chain.weight(w)}, {chan}, {w_shape[0]}, {src}, {chain.plane(out)}, {target});"]
        if out not in outputs:
            raise CodegenError(f"op {chain.op.name}: the tail's input gradient is not an output")
        init = ctx.ptr(part.inputs[2]) if len(part.inputs) == 3 else "NULL"
        return [f"mct_fg_tail({chain.weight(w)}, {chan}, {where[g]}, {init}, {w_shape[1]}, {chain.plane(out)}, "
                f"{ctx.ptr(out)});"]
    if role == REQUANT:
        g, mask, m = part.inputs
        src, _ = _source(chain, where, g)
        plane = chain.plane(g)
        bits, bit0 = masks[mask] if s.mask.place == SCRATCH else (ctx.ptr(mask), f"{chan} * {plane}")
        where[out] = src  # in place, element by element
        return [f"mct_fg_requant({src}, {bits}, {bit0}, {chain.factor(m, chain.shape(g)[1], chan)}, {plane}, {src});"]
    if role == BIAS_GRAD:
        (g,) = part.inputs
        src, lazy = _source(chain, where, g)
        var = chain.tag("gb")  # a local of the loop body
        where[out] = var
        value = f"mct_fg_lazy_sum(&lazy, {chan})" if lazy != "NULL" else f"mct_fg_sum({src}, {chain.plane(g)})"
        code = [f"const float {var} = {value};"]
        if s.out.place == OUTPUT:
            code.append(f"{ctx.ptr(out)}[{chan}] = {var};")
        return code
    if role == UPDATE_BIAS:
        b, g, qas = part.inputs
        return [f"mct_fg_update_bias_row({chain.update(part, b, qas)}, {chan}, {where[g]});"]
    if role in (WEIGHT_GRAD, WEIGHT_GRAD_UPDATE):
        return _weight_step(chain, s, chan, where)
    if role == UPDATE_WEIGHT:
        w, g, qas = part.inputs
        u = chain.update(part, w, qas)
        if s.grad.place == DEFERRED:  # the same row, its elements applied as they are computed (same numbers)
            conv, x, src, lazy, matrix = chain.deferred[g, chan]
            if matrix != ctx.symbols.params[w].kept_matrix():
                raise CodegenError(f"op {chain.op.name}: gradient slice {matrix} differs from the SRAM copy")
            return [f"mct_fg_grad_w_update_row({conv}, {u}, {x}, {src}, {lazy}, {chan}, step);"]
        return [f"mct_fg_update_weight_row({u}, {chan}, {where[g]}, step);"]
    raise CodegenError(f"op {chain.op.name}: a {part.kind} part of a block backward has no C kernel")


def _weight_step(chain: _Chain, s: Step, chan: str, where: dict, next_src: str | None = None) -> list[str]:
    """A weight gradient's row ``chan``: applied at once (fused update), stored in its output, or
    left to its update (``DEFERRED``: computed there element by element, no buffer). ``next_src``: a
    fused update of rows chan and chan + 1 (whose gradient plane that is) in one call."""
    ctx, part = chain.ctx, s.op
    update = s.role == WEIGHT_GRAD_UPDATE
    x, g = part.inputs[1:3] if update else part.inputs[:2]
    a = dict(part.attrs)
    src, lazy = _source(chain, where, g)
    shape = tuple(a["weight_shape"])
    if lazy != "NULL" and (a["groups"] > 1 or shape[2:] != (1, 1) or a["stride"] != 1):
        raise CodegenError(f"op {chain.op.name}: a lazily computed gradient feeds a {shape} weight gradient")
    conv = chain.conv(part, ctx.info(x).shape, chain.shape(g), None, shape)
    rows, cols = (a["kept"], 1) if a["groups"] > 1 else (shape[0], a["kept"])
    if update:
        u = chain.update(part, part.inputs[0], part.inputs[3])
        if (rows, cols) != ctx.symbols.params[part.inputs[0]].kept_matrix():
            raise CodegenError(f"op {chain.op.name}: gradient slice ({rows}, {cols}) differs from the SRAM copy")
        if next_src is not None and lazy == "NULL":
            return [f"mct_fg_grad_w_update_row2({conv}, {u}, {ctx.ptr(x)}, {src}, {next_src}, {chan}, step);"]
        return [f"mct_fg_grad_w_update_row({conv}, {u}, {ctx.ptr(x)}, {src}, {lazy}, {chan}, step);"]
    out = part.outputs[0]
    if s.out.place == DEFERRED:
        chain.deferred[out, chan] = (conv, ctx.ptr(x), src, lazy, (rows, cols))
        return [comment(f"{part.name}: row {chan} computed by its update")]
    per_row = cols * shape[2] * shape[3]
    where[out] = f"({ctx.ptr(out)} + (size_t){chan} * {per_row})"
    return [f"if ({chan} < {rows}) mct_fg_grad_w_row({conv}, {ctx.ptr(x)}, {src}, {lazy}, {chan}, {cols}, "
            f"{where[out]});"]


def _pair_step(chain: _Chain, s: Step, lanes: list) -> list[str]:
    """C statements of one step for the two channels of a pass (``lanes``: (chan, where, slots, masks)
    of each): the head, the tail and a 1x1 weight gradient's fused update as one call of their pair
    helper (c/mct_fused_pair.c, the same numbers), any other step for each channel in turn."""
    ctx, part = chain.ctx, s.op
    (c0, where0, slots0, _), (c1, where1, slots1, _) = lanes
    w_shape = ctx.info(part.inputs[1]).shape if s.role in (HEAD, LAZY_HEAD, TAIL) else None
    is_1x1 = w_shape is not None and part.attr("stride") == 1 and tuple(w_shape[2:]) == (1, 1)
    out = part.outputs[0] if part.outputs else None
    if s.role in (HEAD, LAZY_HEAD) and is_1x1:
        src = "NULL, &lazy" if s.role == LAZY_HEAD else f"{ctx.ptr(part.inputs[0])}, NULL"
        out0, out1 = _dest(chain, out, c0, where0, slots0), _dest(chain, out, c1, where1, slots1)
        return [f"mct_fg_head2({chain.weight(part.inputs[1])}, {c0}, {w_shape[0]}, {src}, {chain.plane(out)}, "
                f"{out0}, {out1});"]
    if s.role == TAIL and is_1x1 and out in chain.op.outputs:
        g = part.inputs[0]
        init = ctx.ptr(part.inputs[2]) if len(part.inputs) == 3 else "NULL"
        return [f"mct_fg_tail2({chain.weight(part.inputs[1])}, {c0}, {where0[g]}, {where1[g]}, {init}, {w_shape[1]}, "
                f"{chain.plane(out)}, {ctx.ptr(out)});"]
    if s.role == WEIGHT_GRAD_UPDATE and part.inputs[2] in where1:  # a plane of the pass, not the lazy source
        return _weight_step(chain, s, c0, where0, where1[part.inputs[2]])
    return [line for chan, where, slots, masks in lanes for line in _step(chain, s, chan, where, slots, masks)]


def _expand_recompute(tag: str, x: str, n: int, size: int, chan: str, sfx: str, lane: int | None,
                      stride: int) -> list[str]:
    """The statements recomputing a lane's channel of the expand conv (plane y0, mask bits m0): alone
    (``lane`` None) one mct_pointwise_channel; in a two-channel pass lane 0 makes both lanes' planes and bits
    in one two-channel call (lane 1's slots lie ``stride`` bytes after lane 0's; the 1x1 conv's widened path
    reads the input once for both), lane 1 nothing."""
    if lane is None:
        return [f"memset(m0{sfx}, 0, {size});", f"mct_pointwise_channel(&{tag}, {chan}, {x}, y0{sfx}, m0{sfx}, 0);"]
    if lane == 1:
        return []
    return [f"memset(m0, 0, {size});", f"memset(m0_1, 0, {size});",
            f"mct_pointwise(&{tag}, c, c + 2, {x}, {n}, {n}, y0, {stride}, m0, 0, {8 * stride});"]


def _layout(chain: _Chain, scratch: int | None, lane: int = 0, chan: str = "c", pair: bool = False
            ) -> tuple[dict, dict, list[str], list[str]]:
    """Pointers to channel ``lane`` of a pass in each slot of the program's scratch layout (the
    gradient planes, float, first; then the recomputed expand plane, int8, and each recomputed mask's
    bits) and the statements recomputing channel ``chan``'s forward. Returns (slots, masks, recompute
    statements, declarations of the scratch pointers). ``pair``: a two-channel pass, whose expand conv
    lane 0 recomputes for both lanes in one call (the 1x1 conv's two-channel path reads the input once:
    lane 1's slots lie ``pass_stride`` bytes after lane 0's), lane 1 only its depthwise."""
    ctx, op, program = chain.ctx, chain.op, chain.program
    slots, masks, pointers, code = {}, {}, [], []
    sfx = f"_{lane}" if lane else ""
    for slot in program.scratch.slots:
        at = scratch + program.scratch.pass_offset(slot, lane)
        if slot.kind == FLOAT_PLANE:
            name = f"g{len(slots)}{sfx}"
            pointers.append(f"float *const {name} = AF({at});")
            slots[slot.tensor] = name
        elif slot.kind == INT8_PLANE:
            pointers.append(f"int8_t *const y0{sfx} = A8({at});")
        else:
            i = len(masks)
            pointers.append(f"uint8_t *const m{i}{sfx} = AB({at});")
            masks[slot.tensor] = (f"m{i}{sfx}", "0")
    rec = program.recompute
    for i, fwd in enumerate(rec.convs if rec is not None else ()):
        y, mask = fwd.outputs
        x_shape = chain.shape(fwd.inputs[0]) if fwd.inputs[0] in chain.internal else ctx.info(fwd.inputs[0]).shape
        def make(fwd=fwd, y=y, x_shape=x_shape):
            tag = chain.tag("r")
            chain.decls.append(forward_conv_struct(ctx, tag, fwd, x_shape, chain.shape(y)))
            return tag
        tag = chain.once(("recompute", fwd.name), make)
        size = program.scratch.slot(mask).per_channel
        if fwd.attr("groups") > 1:
            if fwd.inputs[0] != rec.plane:
                raise CodegenError(f"op {op.name}: recomputed depthwise conv does not read the expand conv")
            code.append(f"memset(m{i}{sfx}, 0, {size});")
            code.append(f"mct_depthwise_channel(&{tag}, {chan}, y0{sfx}, NULL, m{i}{sfx}, 0);")
        else:
            if i != 0:
                raise CodegenError(f"op {op.name}: recomputed convs are (expand, depthwise)")
            x, n = ctx.ptr(fwd.inputs[0]), x_shape[2] * x_shape[3]
            code += _expand_recompute(tag, x, n, size, chan, sfx, lane if pair else None, program.scratch.pass_stride)
    size = scratch_bytes(ctx.stage.graph, op)
    if program.scratch.pass_bytes > size:
        raise CodegenError(f"op {op.name}: a pass needs {program.scratch.pass_bytes} scratch bytes, "
                           f"the plan reserves {size}")
    return slots, masks, code, pointers


def emit_mbconv_grad(ctx: OpContext) -> Emitted:
    op = ctx.op
    chain = _Chain(ctx)
    scratch = _scratch_offset(ctx)
    if scratch is not None and scratch % 4:
        raise CodegenError(f"op {op.name}: scratch at offset {scratch}, not aligned for float32")
    channels, pair = op.attr("channels"), chain.program.scratch.pass_channels == 2
    slots, masks, recompute, lines = _layout(chain, scratch)
    if chain.lazy_name is not None:
        lines.append(_lazy_init(chain))
    lines += _output_channel_loop(chain, chain.program.pre, "pre", slots, masks)
    if pair:  # two channels per pass (c, c1); an odd last channel alone
        _, _, recompute0, _ = _layout(chain, scratch, 0, "c", pair=True)
        slots1, masks1, recompute1, pointers1 = _layout(chain, scratch, 1, "c1", pair=True)
        lines[:0] = pointers1
        lanes = [("c", {}, slots, masks), ("c1", {}, slots1, masks1)]
        body = ["const int32_t c1 = c + 1;"] + recompute0 + recompute1
        body += [line for step in chain.program.steps for line in _pair_step(chain, step, lanes)]
        lines += _loop(f"int32_t c = 0; c + 1 < {channels}; c += 2", body)
    if not pair or channels % 2:
        where: dict[str, str] = {}
        body = list(recompute)
        for step in chain.program.steps:
            body += _step(chain, step, "c", where, slots, masks)
        lines += _loop(f"int32_t c = {channels - 1 if pair else 0}; c < {channels}; ++c", body)
    lines += _output_channel_loop(chain, chain.program.post, "post", slots, masks)
    code = "{\n" + "\n".join("        " + line for line in lines) + "\n    }"
    return Emitted(tuple(chain.decls), code)


def _loop(head: str, body: list[str]) -> list[str]:
    return [f"for ({head}) {{"] + ["    " + s for s in body] + ["}"]


def _output_channel_loop(chain, steps, phase: str, slots, masks) -> list[str]:
    """The pre / post phase: a loop over the block's output channels (o) running ``steps``."""
    if not steps:
        return []
    channels = chain.shape(chain.lazy_name)[1]
    where: dict[str, str] = {}
    body = [line for s in steps for line in _step(chain, s, "o", where, slots, masks)]
    return [f"for (int32_t o = 0; o < {channels}; ++o) {{ {comment(phase)}"] + ["    " + s for s in body] + ["}"]


FUSED_EMITTERS = {"mbconv_rows": emit_mbconv_rows, "mbconv_grad": emit_mbconv_grad}

__all__ = ["FUSED_EMITTERS", "emit_mbconv_grad", "emit_mbconv_rows"]
