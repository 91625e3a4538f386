"""The typed programs of the fused ops: block backwards (``lower_grad``) and row pipelines (``lower_rows``).

Checked on compiled zoo programs (every ``mbconv_grad`` op carries one; its roles, operand places and
scratch layout are consistent; the planner charges exactly the layout's total) and, as a hypothesis
property, on synthetic chains of every shape the pass makes (head or lazy head, depthwise or not,
bias gradients, recomputed masks, a head gradient that leaves the op): the slots never overlap, in
either layout, and sum to the total. Row pipelines: rings and windows disjoint, the total charged.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.engine.compile import compile_training
from mcutrain.engine.fused_program import (BIAS_GRAD, DEFERRED, DEPTHWISE_X, FLOAT_PLANE, GROUP_BYTES, HEAD, INPUT,
                                           INT8_PLANE, LAZY, LAZY_HEAD, MASK_BITS, OUTPUT, PASS_CHANNELS, REQUANT,
                                           SCRATCH, TAIL, UPDATE_BIAS, UPDATE_WEIGHT, WEIGHT_GRAD, GradProgram,
                                           RowsProgram, lower_grad, program_of)
from mcutrain.engine.ir import Op, TensorInfo, make_attrs
from mcutrain.engine.lifetimes import scratch_bytes
from mcutrain.engine.memory import check_plan
from mcutrain.engine.passes import PIPELINE, fuse_updates, reorder
from mcutrain.engine.verify import VerifyError, _check_scratch, verify
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve

NO_REORDER = tuple(p for p in PIPELINE if p not in (reorder, fuse_updates))
CASES = [("tiny", 32, "full", PIPELINE), ("tiny", 32, "full", NO_REORDER), ("mcunet-5fps", 48, "paper-99kb", PIPELINE)]


@lru_cache(maxsize=None)
def _compiled(name: str, res: int, scheme: str, passes):
    q = random_qmodel(name, res, 4, seed=4)[0]
    return compile_training(q, resolve(get_builtin(scheme, name), q.spec), lr=0.1, seed=9, passes=passes)


def _grads(stage):
    return [(i, op, program_of(op)) for i, op in enumerate(stage.graph.ops) if op.kind == "mbconv_grad"]


# ----------------------------------------------------------------------------------------------
# invariants every lowered program keeps


def _check_program(program: GradProgram, outputs: tuple[str, ...]) -> None:
    layout = program.scratch
    _check_scratch(program, "op")  # the verifier's layout check passes
    spans = [(s.offset, s.offset + layout.group * s.per_channel) for s in layout.slots]
    channel = [(s.channel_offset, s.channel_offset + s.per_channel) for s in layout.slots]
    for intervals in (spans, channel):
        assert all(x[1] <= y[0] for x, y in zip(intervals, intervals[1:]))  # in order, no two slots share a byte
    assert all(s.per_channel > 0 for s in layout.slots)
    batch = max(layout.group * layout.per_channel, layout.pass_channels * layout.pass_stride)
    assert layout.total == batch + layout.source_group * layout.source_row
    assert layout.pass_channels == min(PASS_CHANNELS, program.channels)  # the C loop's pass, in the total
    assert layout.pass_stride % 4 == 0 and layout.per_channel <= layout.pass_stride < layout.per_channel + 4
    assert all(layout.pass_offset(s, 1) >= layout.pass_offset(layout.slots[-1], 0) + layout.slots[-1].per_channel
               for s in layout.slots)  # the second channel of a pass after every slot of the first
    assert layout.per_channel == sum(s.per_channel for s in layout.slots)
    assert layout.group * layout.per_channel <= max(GROUP_BYTES, layout.per_channel)
    assert 1 <= layout.group <= program.channels
    for s in layout.slots:
        expected = {FLOAT_PLANE: 4 * s.plane, INT8_PLANE: s.plane, MASK_BITS: -(-s.plane // 8)}[s.kind]
        assert s.per_channel == expected
    assert [s.kind for s in layout.slots] == sorted((s.kind for s in layout.slots),
                                                   key=(FLOAT_PLANE, INT8_PLANE, MASK_BITS).index)
    roles = [s.role for s in program.steps]
    assert roles[0] == (LAZY_HEAD if program.lazy else HEAD)
    convs = [r for r in roles if r in (HEAD, LAZY_HEAD, DEPTHWISE_X, TAIL)]
    assert convs[1:] == [DEPTHWISE_X] * (len(convs) - 1 - (TAIL in convs)) + [TAIL] * (TAIL in convs)
    slots = {s.tensor for s in layout.slots}
    for phase in (program.pre, program.steps, program.post):
        made = {}
        for step in phase:
            if step.role in (UPDATE_BIAS, UPDATE_WEIGHT):  # reads a gradient a step of its phase made
                assert step.grad.name in made and step.grad == made[step.grad.name]
            if step.role == REQUANT and step.grad.place == SCRATCH and step.out.place == SCRATCH:
                assert step.out.slot == step.grad.slot  # in place
            if step.role == REQUANT and step.mask.place == SCRATCH:
                assert program.recompute is not None and step.mask.name in program.recompute.masks
            for operand in (step.grad, step.out, step.mask):
                if operand is not None and operand.place == SCRATCH:
                    assert operand.slot in slots
                if operand is not None and operand.place == OUTPUT:
                    assert operand.name in outputs
            if step.out is not None:
                made[step.out.name] = step.out
    if program.recompute is not None:
        assert program.recompute.plane in slots and set(program.recompute.masks) <= slots
        assert len(program.recompute.forward) == len(program.recompute.convs)


@pytest.mark.parametrize("name,res,scheme,passes", CASES)
def test_every_block_backward_carries_a_consistent_program(name, res, scheme, passes):
    stage = _compiled(name, res, scheme, passes).train
    grads = _grads(stage)
    assert grads
    for i, op, program in grads:
        _check_program(program, op.outputs)
        assert program.parts == tuple(s.op for s in program.steps)
        size = scratch_bytes(stage.graph, op)
        assert size == program.scratch.total  # the planner charges exactly the layout
        buffer = next(b for b in stage.buffers if b.name == f"{op.name}.scratch")
        assert (buffer.size, buffer.first, buffer.last) == (size, i, i)
    check_plan(stage.plan)  # and places it over no live tensor


def test_the_variants_are_reached():
    """The cases above cover lazy heads, recomputed masks, and updates computing deferred gradients."""
    programs = [p for case in CASES for _, _, p in _grads(_compiled(*case).train)]
    assert any(p.lazy for p in programs) and any(p.recompute for p in programs)
    places = {s.grad.place for p in programs for s in p.pre + p.steps + p.post}
    assert {INPUT, LAZY, SCRATCH} <= places
    outs = {s.out.place for p in programs for s in p.pre + p.steps + p.post if s.out is not None}
    assert {SCRATCH, OUTPUT} <= outs


def test_the_verifier_rejects_an_overlapping_layout():
    program = next(p for _, _, p in _grads(_compiled(*CASES[0]).train) if len(p.scratch.slots) >= 2)
    slots = list(program.scratch.slots)
    slots[1] = replace(slots[1], offset=slots[0].offset)
    broken = replace(program, scratch=replace(program.scratch, slots=tuple(slots)))
    with pytest.raises(VerifyError, match="scratch slot"):
        _check_scratch(broken, "op")
    short = replace(program, scratch=replace(program.scratch, total=program.scratch.total - 1))
    with pytest.raises(VerifyError, match="the layout says"):
        _check_scratch(short, "op")


# ----------------------------------------------------------------------------------------------
# synthetic chains


def _t(name: str, shape, dtype: str = "float32") -> TensorInfo:
    return TensorInfo(name, tuple(shape), dtype, "gradient" if dtype == "float32" else "mask")


def _conv_x(name: str, g: str, w: str, out: str, groups: int) -> Op:
    return Op(name, "conv2d_grad_x", (g, w), (out,), make_attrs(groups=groups, stride=1), "backward")


def _chain(e: int, cin: int, cout: int, h: int, w: int, h2: int, w2: int, depthwise: bool, bias: bool,
           recompute: int, lazy: bool, head_out: bool):
    """(tensors, parts, lazy ops, pre ops, post ops, recompute convs, outputs) of a synthetic chain."""
    tensors = {}

    def add(name, shape, dtype="float32"):
        tensors[name] = _t(name, shape, dtype)
        return name

    src = add("g_in", (1, cout, h, w))
    lazy_ops, pre, post = [], [], []
    if lazy:
        add("spread", (1, cout, h, w))
        lazy_ops = [Op("pool", "avgpool_grad", ("pooled", "pmask", "k"), ("spread",), (), "backward"),
                    Op("rq0", "requant_grad", ("spread", "m0", "f0"), (src,), (), "backward")]
        pre = [Op("b0", "conv2d_grad_b", (src,), (add("gb0", (cout,)),), (), "backward")]
        post = [Op("gw0", "conv2d_grad_w", ("y", src), (add("gw", (cout, e, 1, 1)),), make_attrs(groups=1), "backward"),
                Op("uw0", "update_weight", ("w2", "gw", "qas"), (), (), "update")]  # gw: read by its update only
    parts = [_conv_x("head", src, "w2", add("gx", (1, e, h, w)), 1),
             Op("rq1", "requant_grad", ("gx", "mask1", "m1"), (add("ga", (1, e, h, w)),), (), "backward")]
    last = "ga"
    if bias:
        parts.append(Op("b1", "conv2d_grad_b", ("ga",), (add("gb1", (e,)),), (), "backward"))
    if depthwise:
        parts += [_conv_x("dw", "ga", "wd", add("gd", (1, e, h2, w2)), e),
                  Op("rq2", "requant_grad", ("gd", "mask2", "m2"), (add("gda", (1, e, h2, w2)),), (), "backward")]
        last = "gda"
    plane = tensors[last].shape
    parts.append(_conv_x("tail", last, "w1", add("gt", (1, cin) + plane[2:]), 1))
    mask2, mask1 = ("mask2", "mask1") if depthwise else ("mask1", None)
    add(mask2, plane, "bit")
    if mask1:
        add(mask1, (1, e, h, w), "bit")
    convs = []
    if recompute:
        convs.append(Op("exp.re", "conv2d", ("x", "w1"), ("y.re", mask2), make_attrs(groups=1)))
        add("y.re", plane, "int8")
    if recompute == 2 and depthwise:
        convs.append(Op("dw.re", "conv2d", ("y.re", "wd"), ("yd.re", mask1), make_attrs(groups=e)))
        add("yd.re", (1, e, h, w), "int8")
    outputs = ("gt",) + (("gx",) if head_out else ()) + (("gb0",) if lazy else ())
    return tensors, parts, lazy_ops, pre, post, convs, outputs


@settings(max_examples=60, deadline=None)  # E >= 2: a depthwise conv of one channel is no chain part
@given(e=st.integers(2, 40), cin=st.integers(1, 8), cout=st.integers(1, 40), h=st.integers(1, 12),
       w=st.integers(1, 12), stride=st.sampled_from([1, 2]), depthwise=st.booleans(), bias=st.booleans(),
       recompute=st.integers(0, 2), lazy=st.booleans(), head_out=st.booleans())
def test_synthetic_chains_lower_to_disjoint_slots_that_sum_to_the_total(e, cin, cout, h, w, stride, depthwise, bias,
                                                                      recompute, lazy, head_out):
    h2, w2 = -(-h // stride), -(-w // stride)
    tensors, parts, lazy_ops, pre, post, convs, outputs = _chain(e, cin, cout, h, w, h2, w2, depthwise, bias, recompute,
                                                           lazy, head_out)
    program = lower_grad(tensors.__getitem__, e, parts, lazy_ops, pre, post, tuple(convs),
                         tuple(c.name.removesuffix(".re") for c in convs), outputs)
    _check_program(program, outputs)
    floats = [s.tensor for s in program.scratch.slots if s.kind == FLOAT_PLANE]
    assert floats == (([] if head_out else ["gx"]) + (["gd"] if depthwise else []))
    assert [s.role for s in program.steps if s.role in (HEAD, LAZY_HEAD, DEPTHWISE_X, TAIL)] == (
        [LAZY_HEAD if lazy else HEAD] + ([DEPTHWISE_X] if depthwise else []) + [TAIL])
    assert all(s.grad.place == LAZY for s in program.pre)
    assert [(s.role, s.out.place if s.out else s.grad.place) for s in program.post] == (
        [(WEIGHT_GRAD, DEFERRED), (UPDATE_WEIGHT, DEFERRED)] if lazy else [])
    assert not any(s.role == BIAS_GRAD and s.out.place == DEFERRED for s in program.steps)
    if lazy:
        assert program.scratch.source_row == 4 * h * w
        assert program.scratch.source_group == max(1, min(cout, GROUP_BYTES // (4 * h * w)))
    else:
        assert program.scratch.source_group == 0


# ----------------------------------------------------------------------------------------------
# row pipelines


def _rows(stage):
    return [(i, op, program_of(op)) for i, op in enumerate(stage.graph.ops) if op.kind == "mbconv_rows"]


@pytest.mark.parametrize("name,res,scheme,passes", [("tiny", 32, "last-k:6", PIPELINE), CASES[2]])
def test_every_row_pipeline_carries_its_program_and_the_planner_charges_its_total(name, res, scheme, passes):
    stage = _compiled(name, res, scheme, passes).train
    pipelines = _rows(stage)
    assert pipelines
    for i, op, program in pipelines:
        assert isinstance(program, RowsProgram)
        buffers = program.rings + program.folds
        ends = [b.offset + b.nbytes for b in buffers]
        assert all(b.offset % 4 == 0 for b in buffers)
        for k, a in enumerate(buffers):  # two buffers share a byte only if no event needs both
            for b in buffers[k + 1:]:
                if a.offset < b.offset + b.nbytes and b.offset < a.offset + a.nbytes:
                    assert not _events(a) & _events(b), (a.tensor, b.tensor)
        assert program.total == max(ends, default=0) == scratch_bytes(stage.graph, op)
        if program.total:
            buffer = next(b for b in stage.buffers if b.name == f"{op.name}.scratch")
            assert (buffer.size, buffer.first, buffer.last) == (program.total, i, i)
        assert {s for s, _ in program.schedule} <= set(range(-1, len(op.attr("stages"))))
    check_plan(stage.plan)


def _events(buffer) -> set[int]:
    return {e for first, last in buffer.live for e in range(first, last + 1)}


def test_row_buffers_share_bytes_when_their_lives_do_not_meet():
    """The one-row rings between a depthwise and its project conv (and folded windows) live for a few
    events at a time: packed by liveness they share bytes, so the scratch is under the buffers' sum."""
    stage = _compiled("proxyless-w0.3", 128, "paper-99kb", PIPELINE).train
    for _, op, program in _rows(stage):
        buffers = program.rings + program.folds
        assert program.total < sum(b.nbytes for b in buffers)
        assert any(not (_events(a) & _events(b)) and a.offset == b.offset for a in buffers for b in buffers
                   if a is not b)


def test_the_verifier_rejects_a_live_span_that_ends_before_the_last_read():
    stage = _compiled(*CASES[2]).train
    op = next(op for _, op, p in _rows(stage) if p.rings)
    program = program_of(op)
    ring = max(program.rings, key=lambda b: b.live[-1][1] - b.live[0][0])
    cut = replace(ring, live=((ring.live[0][0], ring.live[0][0]),))
    moved = replace(program, rings=tuple(cut if b is ring else b for b in program.rings))
    broken = replace(op, attrs=tuple((k, moved if k == "program" else v) for k, v in op.attrs))
    with pytest.raises(VerifyError, match="outside its live spans"):
        verify(stage.graph.with_ops(broken if o is op else o for o in stage.graph.ops))


def test_the_verifier_rejects_overlapping_row_buffers():
    """Two rings live at one event moved onto the same bytes."""
    stage = _compiled(*CASES[2]).train
    op, program = next((op, p) for _, op, p in _rows(stage) if len(p.rings) >= 2)
    first, second = next((a, b) for a in program.rings for b in program.rings
                         if a is not b and _events(a) & _events(b))
    rings = tuple(replace(b, offset=first.offset) if b is second else b for b in program.rings)
    moved = replace(program, rings=rings)
    broken = replace(op, attrs=tuple((k, moved if k == "program" else v) for k, v in op.attrs))
    with pytest.raises(VerifyError, match="shares bytes"):
        verify(stage.graph.with_ops(broken if o is op else o for o in stage.graph.ops))
