"""Golden plans: hand-computed arenas, including TFLite Micro's own greedy planner test cases."""

import pytest

from mcutrain.engine.memory import Buffer, check_plan, lower_bound, plan_bump, plan_greedy
from mcutrain.engine.memory.planners import first_fit, placement_order


def bufs(*specs, kind="activation"):
    """Buffers t0, t1, ... from (size, first, last) triples, the way TFLite Micro's tests add them."""
    return [Buffer(f"t{i}", size, first, last, kind) for i, (size, first, last) in enumerate(specs)]


def offsets(plan):
    return [plan.offsets[f"t{i}"] for i in range(len(plan.buffers))]


def test_tflm_basics_disjoint_lifetimes_share_offset_zero():
    plan = plan_greedy(bufs((10, 0, 1), (20, 2, 3)), alignment=1)
    assert offsets(plan) == [0, 0]
    assert plan.arena_bytes == 20
    check_plan(plan)


def test_tflm_medium_offsets_and_arena():
    plan = plan_greedy(bufs((10, 0, 1), (20, 1, 2), (30, 2, 3), (40, 3, 4), (50, 0, 1)), alignment=1)
    assert offsets(plan) == [50, 70, 40, 0, 0]  # t0 fills the gap between t4 and t1
    assert plan.arena_bytes == 90
    assert lower_bound(plan.buffers) == 80  # greedy is not optimal here, and need not be
    check_plan(plan)


def test_tflm_overlap_case():
    plan = plan_greedy(bufs((100, 0, 1), (50, 2, 3), (20, 1, 2)), alignment=1)
    assert offsets(plan) == [0, 0, 100]
    assert plan.arena_bytes == 120
    check_plan(plan)


PERSON_DETECTION = (  # TFLite Micro's test: the 250 KB person-detection MobileNet's activations
    (9216, 0, 29), (3, 28, 29), (256, 27, 28), (2304, 26, 27), (2304, 25, 26), (2304, 24, 25),
    (1152, 23, 24), (4608, 22, 23), (4608, 21, 22), (4608, 20, 21), (4608, 19, 20), (4608, 18, 19),
    (4608, 17, 18), (4608, 16, 17), (4608, 15, 16), (4608, 14, 15), (4608, 13, 14), (4608, 12, 13),
    (2304, 11, 12), (9216, 10, 11), (9216, 9, 10), (9216, 8, 9), (4608, 7, 8), (18432, 6, 7),
    (18432, 5, 6), (18432, 4, 5), (9216, 3, 4), (36864, 2, 3), (18432, 1, 2), (18432, 0, 1))


@pytest.mark.parametrize("alignment", [1, 4, 16])
def test_tflm_person_detection_reaches_the_lower_bound(alignment):
    buffers = bufs(*PERSON_DETECTION)
    plan = plan_greedy(buffers, alignment)
    check_plan(plan)
    assert sum(s for s, _, _ in PERSON_DETECTION) == 241027  # TFLM's "sum of all the buffers"
    assert lower_bound(buffers) == 64512  # 36 KB + 18 KB + 9 KB live at op 2
    assert plan.arena_bytes == 64512  # every size here is a multiple of 16 except the 3-byte one
    assert plan_bump(buffers, 1).arena_bytes == 241027


def test_chain_ping_pongs_between_two_regions():
    plan = plan_greedy(bufs((100, 0, 1), (100, 1, 2), (100, 2, 3), (100, 3, 4)), alignment=4)
    assert offsets(plan) == [0, 100, 0, 100]
    assert plan.arena_bytes == 200 == lower_bound(plan.buffers)
    assert plan_bump(plan.buffers).arena_bytes == 400


def test_buffers_live_together_are_stacked_biggest_first():
    plan = plan_greedy(bufs((60, 0, 0), (100, 0, 0)), alignment=4)
    assert offsets(plan) == [100, 0]
    assert plan.arena_bytes == 160


@pytest.mark.parametrize("alignment, small_offset, arena", [(1, 5, 8), (4, 8, 12), (16, 16, 32)])
def test_alignment_pads_offsets_and_the_arena(alignment, small_offset, arena):
    plan = plan_greedy(bufs((5, 0, 0), (3, 0, 0)), alignment=alignment)
    assert offsets(plan) == [0, small_offset]
    assert plan.arena_bytes == arena
    check_plan(plan)


def test_alignment_padding_accumulates_along_a_stack():
    # t1 sits on t0 (ends at 10) and t2 on t1 (ends at 18): each start rounds up to a multiple of 4
    plan = plan_greedy(bufs((10, 0, 2), (6, 0, 1), (6, 1, 2)), alignment=4)
    assert offsets(plan) == [0, 12, 20]
    assert plan.arena_bytes == 28
    assert plan_greedy(plan.buffers, alignment=1).arena_bytes == 22


def test_zero_size_buffers_sit_at_zero_and_block_nothing():
    buffers = [Buffer("empty", 0, 0, 5), Buffer("a", 8, 0, 5), Buffer("b", 8, 2, 3)]
    plan = plan_greedy(buffers)
    assert plan.offsets == {"empty": 0, "a": 0, "b": 8}
    assert plan.arena_bytes == 16
    check_plan(plan)
    assert plan_bump(buffers).offsets["empty"] == 0


def test_empty_and_all_zero_inputs():
    for buffers in ([], [Buffer("z", 0, 0, 3)]):
        for planner in (plan_greedy, plan_bump):
            plan = planner(buffers)
            assert plan.arena_bytes == 0
            check_plan(plan)
        assert lower_bound(buffers) == 0


def test_bump_stacks_in_schedule_order_with_aligned_sizes():
    plan = plan_bump([Buffer("late", 3, 5, 6), Buffer("early", 5, 0, 1), Buffer("mid", 8, 2, 2)])
    assert plan.offsets == {"early": 0, "mid": 8, "late": 16}
    assert plan.arena_bytes == 20  # 8 + 8 + 4
    check_plan(plan)


def test_placement_order_breaks_ties_by_first_use_then_name():
    order = placement_order([Buffer("b", 8, 0, 1), Buffer("a", 8, 0, 1), Buffer("c", 8, 0, 0),
                             Buffer("big", 9, 7, 7), Buffer("late", 8, 3, 4)])
    assert [b.name for b in order] == ["big", "a", "b", "c", "late"]


def test_ties_decide_who_gets_offset_zero():
    plan = plan_greedy([Buffer("b", 8, 0, 1), Buffer("a", 8, 0, 1)])
    assert plan.offsets == {"a": 0, "b": 8}


def test_first_fit_walks_gaps():
    assert first_fit(4, [], 4) == 0
    assert first_fit(4, [(4, 8)], 4) == 0
    assert first_fit(5, [(4, 8)], 4) == 8
    assert first_fit(4, [(0, 4), (12, 20)], 4) == 4
    assert first_fit(9, [(0, 4), (12, 20)], 4) == 20
    assert first_fit(2, [(0, 5), (8, 9)], 4) == 12  # the gap [5,8) starts unaligned at 5 -> 8
    assert first_fit(2, [(0, 5), (10, 12)], 4) == 8


def test_input_order_does_not_change_the_plan():
    buffers = bufs((10, 0, 1), (20, 1, 2), (30, 2, 3), (40, 3, 4), (50, 0, 1))
    assert plan_greedy(buffers) == plan_greedy(list(reversed(buffers)))
    assert plan_bump(buffers) == plan_bump(list(reversed(buffers)))


def test_lower_bound_is_the_peak_of_live_bytes():
    assert lower_bound(bufs((10, 0, 1), (20, 1, 2), (5, 2, 2))) == 30
    assert lower_bound(bufs((10, 0, 0), (20, 1, 1))) == 20
