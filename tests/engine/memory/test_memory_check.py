"""The overlap checker catches what it must (hand-made bad plans) and passes what is safe."""

import pytest

from mcutrain.engine.memory import Buffer, Plan, PlanError, check_plan


def plan(offsets, arena, *buffers, alignment=4):
    return Plan(offsets, arena, tuple(buffers), alignment)


def test_overlap_in_time_and_bytes_is_caught_and_explained():
    bad = plan({"a": 0, "b": 8}, 32, Buffer("a", 16, 0, 2), Buffer("b", 16, 2, 4))
    with pytest.raises(PlanError) as err:
        check_plan(bad)
    message = str(err.value)
    assert "'a'" in message and "'b'" in message
    assert "bytes [0, 16)" in message and "bytes [8, 24)" in message
    assert "overlap in bytes [8, 16)" in message
    assert "ops 2..2" in message


def test_overlap_reports_the_shared_op_range():
    bad = plan({"a": 0, "b": 0}, 16, Buffer("a", 16, 0, 9), Buffer("b", 4, 3, 5))
    with pytest.raises(PlanError, match=r"live at ops 3\.\.5"):
        check_plan(bad)


def test_same_bytes_at_different_times_are_fine():
    check_plan(plan({"a": 0, "b": 0}, 16, Buffer("a", 16, 0, 1), Buffer("b", 16, 2, 3)))


def test_touching_byte_ranges_are_fine():
    check_plan(plan({"a": 0, "b": 8}, 16, Buffer("a", 8, 0, 3), Buffer("b", 8, 0, 3)))


def test_zero_size_buffers_never_conflict():
    check_plan(plan({"a": 0, "z": 4}, 16, Buffer("a", 16, 0, 3), Buffer("z", 0, 0, 3)))


def test_misaligned_offset_is_caught():
    with pytest.raises(PlanError, match="offset 6 is not a multiple of the alignment 4"):
        check_plan(plan({"a": 6}, 16, Buffer("a", 4, 0, 0)))
    check_plan(plan({"a": 6}, 16, Buffer("a", 4, 0, 0), alignment=2))


def test_buffer_past_the_arena_is_caught():
    with pytest.raises(PlanError, match=r"'a': bytes \[8, 24\) run past the arena of 16 bytes"):
        check_plan(plan({"a": 8}, 16, Buffer("a", 16, 0, 0)))


def test_negative_offset_is_caught():
    with pytest.raises(PlanError, match="offset must be an int >= 0"):
        check_plan(plan({"a": -4}, 16, Buffer("a", 4, 0, 0)))


def test_offsets_must_match_buffers():
    with pytest.raises(PlanError, match=r"missing \['b'\], unknown \[\]"):
        check_plan(plan({"a": 0}, 16, Buffer("a", 4, 0, 0), Buffer("b", 4, 0, 0)))
    with pytest.raises(PlanError, match=r"missing \[\], unknown \['ghost'\]"):
        check_plan(plan({"a": 0, "ghost": 0}, 16, Buffer("a", 4, 0, 0)))


def test_duplicate_buffers_in_a_hand_made_plan_are_caught():
    with pytest.raises(PlanError, match="more than once"):
        check_plan(plan({"a": 0}, 16, Buffer("a", 4, 0, 0), Buffer("a", 4, 1, 1)))
