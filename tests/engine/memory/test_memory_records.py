"""Buffer and Plan records: validation messages, alignment helpers, the live-bytes curve."""

import pytest

from mcutrain.engine.memory import Buffer, Plan, align_up, live_bytes_per_op, plan_bump, plan_greedy
from mcutrain.engine.memory.planners import lower_bound
from mcutrain.engine.memory.records import canonical, check_alignment, schedule_length


def test_buffer_defaults_and_fields():
    b = Buffer("x", 12, 0, 3)
    assert (b.name, b.size, b.first, b.last, b.kind) == ("x", 12, 0, 3, "activation")
    assert Buffer("g", 4, 1, 1, kind="gradient").kind == "gradient"


def test_buffer_is_frozen():
    b = Buffer("x", 12, 0, 3)
    with pytest.raises(AttributeError):
        b.size = 13


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="x", size=-1, first=0, last=0), "size must be >= 0"),
    (dict(name="x", size=1, first=-1, last=0), "first op index must be >= 0"),
    (dict(name="x", size=1, first=3, last=2), "last op index 2 is before first 3"),
    (dict(name="", size=1, first=0, last=0), "non-empty string"),
    (dict(name=7, size=1, first=0, last=0), "non-empty string"),
    (dict(name="x", size=1.5, first=0, last=0), "size must be an int"),
    (dict(name="x", size=True, first=0, last=0), "size must be an int"),
    (dict(name="x", size=1, first=0, last="2"), "last must be an int"),
    (dict(name="x", size=1, first=0, last=0, kind=None), "kind must be a string"),
])
def test_invalid_buffers_are_rejected_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Buffer(**kwargs)


def test_message_names_the_buffer():
    with pytest.raises(ValueError, match="buffer 'conv3.out'"):
        Buffer("conv3.out", -4, 0, 1)


@pytest.mark.parametrize("fn", [plan_greedy, plan_bump, lower_bound, canonical])
def test_duplicate_names_are_rejected_by_every_entry_point(fn):
    with pytest.raises(ValueError, match="duplicate buffer name 'a'"):
        fn([Buffer("a", 4, 0, 1), Buffer("b", 4, 0, 1), Buffer("a", 8, 2, 3)])


def test_non_buffer_records_are_rejected():
    with pytest.raises(ValueError, match="expected Buffer records"):
        plan_greedy([("a", 4, 0, 1)])


def test_lifetimes_are_inclusive():
    a, b, c = Buffer("a", 1, 0, 2), Buffer("b", 1, 2, 4), Buffer("c", 1, 3, 4)
    assert a.lives_with(b) and b.lives_with(a)  # a read at op 2 while b is written at op 2
    assert not a.lives_with(c) and not c.lives_with(a)
    assert a.live_at(0) and a.live_at(2) and not a.live_at(3)


@pytest.mark.parametrize("n, alignment, expected", [
    (0, 4, 0), (1, 4, 4), (4, 4, 4), (5, 4, 8), (17, 16, 32), (7, 1, 7), (10, 3, 12),
])
def test_align_up(n, alignment, expected):
    assert align_up(n, alignment) == expected


@pytest.mark.parametrize("bad", [0, -4, 2.0, True, None])
def test_bad_alignment_is_rejected(bad):
    with pytest.raises(ValueError, match="alignment must be a positive number of bytes"):
        check_alignment(bad)
    with pytest.raises(ValueError, match="alignment"):
        plan_greedy([Buffer("a", 4, 0, 0)], alignment=bad)


def test_canonical_order_is_schedule_order():
    bs = [Buffer("z", 1, 2, 3), Buffer("b", 1, 0, 5), Buffer("a", 1, 0, 5), Buffer("m", 1, 0, 1)]
    assert [b.name for b in canonical(bs)] == ["m", "a", "b", "z"]


def test_live_bytes_per_op():
    bs = [Buffer("a", 10, 0, 1), Buffer("b", 20, 1, 2), Buffer("c", 5, 4, 4)]
    assert live_bytes_per_op(bs) == [10, 30, 20, 0, 5]
    assert live_bytes_per_op(bs, 7) == [10, 30, 20, 0, 5, 0, 0]
    assert live_bytes_per_op([]) == []
    assert schedule_length(bs) == 5 and schedule_length([]) == 0


def test_live_bytes_refuses_a_schedule_shorter_than_the_buffers():
    with pytest.raises(ValueError, match="live up to op 4"):
        live_bytes_per_op([Buffer("c", 5, 4, 4)], 3)


def test_plan_copies_offsets_and_answers_regions():
    offsets = {"a": 0, "b": 16}
    plan = Plan(offsets, 32, (Buffer("a", 16, 0, 1), Buffer("b", 10, 1, 2)))
    offsets["a"] = 99
    assert plan.offsets == {"a": 0, "b": 16}
    assert plan.region("b") == (16, 26)
    assert plan.buffer("a").size == 16
    assert plan.n_ops == 3
    assert plan.alignment == 4
    with pytest.raises(AttributeError):
        plan.arena_bytes = 0
