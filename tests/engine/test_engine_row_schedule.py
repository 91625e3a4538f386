"""``engine.row_schedule``: the row pipelines' buffer packing and what a fold costs (``FoldShape``).

Properties (hypothesis): the liveness packing never lets two buffers that one event needs share a byte
and is never above the buffers' sum nor below the most bytes one event needs; a fold's counted expanded
rows are the ones its schedule's events make, and batching output rows never recomputes more.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.engine.compile import compile_training
from mcutrain.engine.passes.fuse_rows import _Types, stages_of
from mcutrain.engine.row_schedule import STREAM, fold_shape, foldable, place_buffers, plan_rows, window
from mcutrain.models.specs import BlockSpec, NetSpec
from mcutrain.quant.random_model import random_qmodel
from tests.codegen.test_codegen_host_fused import _plan


@st.composite
def _buffers(draw):
    events = draw(st.integers(1, 40))
    found = []
    for _ in range(draw(st.integers(0, 12))):
        starts = sorted(draw(st.sets(st.integers(0, events - 1), min_size=1, max_size=4)))
        spans = tuple((a, min(a + draw(st.integers(0, 3)), events - 1)) for a in starts)
        merged = []  # disjoint, ordered spans, as plan_rows makes them
        for a, z in spans:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], z))
            else:
                merged.append((a, z))
        found.append((draw(st.integers(1, 300)), tuple(merged)))
    return found


def _events(spans) -> set[int]:
    return {e for a, z in spans for e in range(a, z + 1)}


@settings(max_examples=200, deadline=None)
@given(_buffers())
def test_packing_shares_bytes_only_between_buffers_no_event_needs_together(buffers):
    offsets, total = place_buffers(buffers)
    assert all(off % 4 == 0 for off in offsets)
    assert total == max((off + size for off, (size, _) in zip(offsets, buffers)), default=0)
    for i, (a, la) in enumerate(buffers):
        for j, (b, lb) in enumerate(buffers[:i]):
            if _events(la) & _events(lb):
                assert offsets[i] + a <= offsets[j] or offsets[j] + b <= offsets[i]
    busiest = max((sum(size for size, live in buffers if e in _events(live))
                   for e in set().union(*(_events(live) for _, live in buffers))), default=0)
    assert busiest <= total <= sum(-(-size // 4) * 4 for size, _ in buffers)


def _one_block(k: int, stride: int, side: int):
    """A stem and one inverted-residual block (expand 8 -> 24, k x k depthwise): its pipeline folds."""
    spec = NetSpec("fold", 8, (BlockSpec(8, 24, 8, k, stride),), default_resolution=side)
    q = random_qmodel(spec, side, 4, seed=1)[0]
    program = compile_training(q, _plan(spec, side, {}, {-1}), lr=0.1, seed=0, row_fusion="max")
    op = next(op for op in program.train.graph.ops if op.kind == "mbconv_rows" and foldable(stages_of(op)))
    stages = stages_of(op)
    return stages, _Types(program.train.graph, {t.name: t for t in op.attr("internal")}), op.inputs[0], \
        bool(op.attr("stream"))


@settings(max_examples=12, deadline=None)
@given(st.sampled_from([3, 5, 7]), st.sampled_from([1, 2]), st.sampled_from([16, 18, 24]), st.sampled_from([1, 2, 4]))
def test_a_folds_counted_rows_are_the_ones_its_events_make(k, stride, side, batch):
    stages, types, x, streamed = _one_block(k, stride, side)
    (folded,) = foldable(stages)
    depthwise = next(i for i, s in enumerate(stages) if s.inputs[0] == folded)
    plan = plan_rows(stages, x, types, streamed, (folded,), 0, (batch,))
    made, out_h = 0, types.tensor(stages[depthwise].outputs[0]).shape[2]
    for s, r in plan.schedule:
        if s == depthwise:  # rows r .. r + batch - 1, from the union of their windows
            _, lo, _ = window(stages[depthwise], r, types)
            made += window(stages[depthwise], min(r + batch, out_h) - 1, types)[2] - lo + 1
    shape = fold_shape(stages, folded, types, batch)
    assert made == shape.rows
    assert shape.recomputed_macs == (made - shape.height) * shape.width * shape.c_in * shape.channels
    assert shape.recomputed_macs <= fold_shape(stages, folded, types, 1).recomputed_macs
    (window_buffer,) = plan.folds
    assert window_buffer[2] == k + (batch - 1) * stride and window_buffer[6] == batch
    assert sum(1 for s, _ in plan.schedule if s == depthwise) == -(-out_h // batch)

