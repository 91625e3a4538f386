"""Memory planners: pure functions from Buffer records to a Plan.

``plan_greedy`` is TFLite Micro's GreedyMemoryPlanner idea: place the biggest buffers first (they are
the hardest to fit), each at the lowest aligned offset that is free for its whole lifetime. "Free"
only looks at the buffers it lives with, so a buffer that died earlier leaves its bytes to later ones.
``plan_bump`` gives every buffer its own bytes: the baseline that says how much the reuse saves.
``lower_bound`` is the most bytes ever live at once; no placement can use less.

Why greedy cannot lose to bump: a buffer lands at 0 or right after (aligned) one already placed,
which itself landed at 0 or right after an earlier one, so its end is at most the sum of the
aligned sizes of a chain of distinct buffers, never more than the bump arena.
"""

from mcutrain.engine.memory.records import (
    DEFAULT_ALIGNMENT,
    Buffer,
    Plan,
    align_up,
    canonical,
    check_alignment,
    conflicts,
    live_bytes_per_op,
)


def placement_order(buffers) -> list[Buffer]:
    """Greedy order: size descending; ties by earlier first use, then name (total, so deterministic)."""
    return sorted(buffers, key=lambda b: (-b.size, b.first, b.name))


def first_fit(size: int, blocked: list[tuple[int, int]], alignment: int) -> int:
    """Lowest aligned offset where ``size`` bytes avoid every ``[start, end)`` range in ``blocked``.

    Walks the blocked ranges by start address (TFLite Micro's walk): the candidate either fits in the
    gap before the next range or jumps past that range's aligned end. Only 0 and aligned ends are ever
    candidates, and the lowest aligned fit is always one of them.
    """
    candidate = 0
    for start, end in sorted(blocked):
        if candidate + size <= start:
            break
        candidate = max(candidate, align_up(end, alignment))
    return candidate


def plan_greedy(buffers, alignment: int = DEFAULT_ALIGNMENT) -> Plan:
    """Greedy-by-size, first-fit placement with reuse across disjoint lifetimes (TFLite Micro style).

    Zero-size buffers take offset 0 and block nothing: they hold no bytes, so they cannot collide.
    """
    alignment = check_alignment(alignment)
    ordered = canonical(buffers)
    index = {b.name: i for i, b in enumerate(ordered)}
    others = conflicts(ordered)  # computed once: the blocked ranges are the placed buffers among them
    placed = [False] * len(ordered)
    offsets: dict[str, int] = {}
    for b in placement_order(ordered):
        if b.size == 0:
            offsets[b.name] = 0
            continue
        i = index[b.name]
        blocked = [(offsets[ordered[j].name], offsets[ordered[j].name] + ordered[j].size) for j in others[i] if placed[j]]
        offsets[b.name] = first_fit(b.size, blocked, alignment)
        placed[i] = True
    arena = max((offsets[b.name] + b.size for b in ordered), default=0)
    return Plan(offsets, align_up(arena, alignment), ordered, alignment)


def plan_bump(buffers, alignment: int = DEFAULT_ALIGNMENT) -> Plan:
    """No reuse: buffers stacked in schedule order, each rounded up to the alignment.

    The arena is the sum of the aligned sizes: what a runtime that mallocs every tensor and never
    frees would need. Zero-size buffers still get offset 0 (same rule as the greedy planner).
    """
    alignment = check_alignment(alignment)
    ordered = canonical(buffers)
    offsets, top = {}, 0
    for b in ordered:
        offsets[b.name] = top if b.size else 0
        top += align_up(b.size, alignment)
    return Plan(offsets, top, ordered, alignment)


def lower_bound(buffers) -> int:
    """The most bytes live at any one op: every plan's arena is at least this (alignment aside)."""
    return max(live_bytes_per_op(canonical(buffers)), default=0)
