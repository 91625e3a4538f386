"""Properties of the planners on random buffer sets, judged by the independent checker."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.engine.memory import (
    Buffer,
    Plan,
    PlanError,
    check_plan,
    live_bytes_per_op,
    lower_bound,
    plan_bump,
    plan_greedy,
    timeline_text,
)
from mcutrain.engine.memory.planners import first_fit

MAX_OPS = 60
KINDS = ("activation", "gradient", "mask", "saved", "weight-copy")


@st.composite
def buffer_sets(draw, max_size=40):
    """Up to ``max_size`` buffers: sizes 0..64 KB (some tiny, some odd), lifetimes inside 60 ops."""
    n = draw(st.integers(0, max_size))
    out = []
    for i in range(n):
        size = draw(st.one_of(st.integers(0, 64 * 1024), st.integers(0, 9)))
        first = draw(st.integers(0, MAX_OPS - 1))
        last = draw(st.integers(first, min(MAX_OPS - 1, first + draw(st.sampled_from([0, 3, 60])))))
        out.append(Buffer(f"b{i}", size, first, last, draw(st.sampled_from(KINDS))))
    return out


alignments = st.sampled_from([1, 2, 4, 8, 16])
SETTINGS = settings(max_examples=120, deadline=None)


@SETTINGS
@given(buffer_sets(), alignments)
def test_greedy_plan_is_valid_and_between_the_bounds(buffers, alignment):
    greedy = plan_greedy(buffers, alignment)
    bump = plan_bump(buffers, alignment)
    check_plan(greedy)
    check_plan(bump)
    assert all(offset % alignment == 0 for offset in greedy.offsets.values())
    assert greedy.arena_bytes % alignment == 0
    assert lower_bound(buffers) <= greedy.arena_bytes <= bump.arena_bytes
    assert bump.arena_bytes == sum(-(-b.size // alignment) * alignment for b in buffers)


@SETTINGS
@given(buffer_sets(), alignments, st.randoms(use_true_random=False))
def test_greedy_plan_is_deterministic_and_ignores_input_order(buffers, alignment, rng):
    plan = plan_greedy(buffers, alignment)
    shuffled = list(buffers)
    rng.shuffle(shuffled)
    assert plan_greedy(buffers, alignment) == plan
    assert plan_greedy(shuffled, alignment) == plan
    assert plan_bump(shuffled, alignment) == plan_bump(buffers, alignment)


@SETTINGS
@given(buffer_sets(max_size=25), alignments)
def test_all_live_together_means_no_reuse(buffers, alignment):
    together = [Buffer(b.name, b.size, 0, 5) for b in buffers]
    assert plan_greedy(together, alignment).arena_bytes == plan_bump(together, alignment).arena_bytes


@SETTINGS
@given(buffer_sets(max_size=25), alignments)
def test_disjoint_lifetimes_reuse_one_region(buffers, alignment):
    apart = [Buffer(b.name, b.size, i, i) for i, b in enumerate(buffers)]
    plan = plan_greedy(apart, alignment)
    assert set(plan.offsets.values()) <= {0}
    assert plan.arena_bytes == -(-lower_bound(apart) // alignment) * alignment


@SETTINGS
@given(buffer_sets())
def test_live_bytes_match_a_brute_force_count(buffers):
    n_ops = max((b.last for b in buffers), default=-1) + 3
    expected = [sum(b.size for b in buffers if b.first <= t <= b.last) for t in range(n_ops)]
    assert live_bytes_per_op(buffers, n_ops) == expected
    assert lower_bound(buffers) == max(expected)


@SETTINGS
@given(buffer_sets(), st.data())
def test_checker_catches_any_forced_collision(buffers, data):
    plan = plan_greedy(buffers)
    pairs = [(a, b) for i, a in enumerate(buffers) for b in buffers[i + 1:]
             if a.size and b.size and a.lives_with(b)]
    if not pairs:
        return
    a, b = data.draw(st.sampled_from(pairs))
    offsets = dict(plan.offsets)
    offsets[b.name] = offsets[a.name]
    bad = Plan(offsets, plan.arena_bytes + max(a.size, b.size), plan.buffers, plan.alignment)
    with pytest.raises(PlanError, match="overlap"):
        check_plan(bad)


@settings(max_examples=30, deadline=None)
@given(buffer_sets(max_size=20))
def test_timeline_has_a_row_per_op_and_names_every_buffer(buffers):
    plan = plan_greedy(buffers)
    text = timeline_text(plan, width=40)
    lines = text.splitlines()
    rows = [line for line in lines if line.rstrip().endswith(("|", "peak")) and "arena" not in line]
    assert len(rows) == plan.n_ops
    legend = text.split("legend:")[1]
    assert all(f" {b.name} " in legend for b in buffers)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.lists(st.tuples(st.integers(0, 60), st.integers(1, 12)), max_size=8),
       st.sampled_from([1, 2, 4, 8]))
def test_first_fit_is_the_lowest_aligned_free_offset(size, ranges, alignment):
    blocked = [(start, start + length) for start, length in ranges]
    scan = next(x for x in range(0, 200, alignment)
                if all(x + size <= lo or hi <= x for lo, hi in blocked))
    assert first_fit(size, blocked, alignment) == scan
