"""An independent checker for memory plans: the oracle the planner tests trust.

It shares no placement code with the planners (its interval tests are written out here on purpose),
so a bug in a planner's bookkeeping cannot hide itself. The pairs it compares are the pairs live at a
common op, found by a sweep over the buffers in order of first use (O(n log n + such pairs), so a
long program checks in near-linear time); every such pair is compared, and the reported one is the
first in schedule order, as a plain loop over all pairs would report.
"""

from mcutrain.engine.memory.records import Plan


class PlanError(Exception):
    """A plan puts two live buffers on the same bytes, misaligns one, or overruns its arena.

    A planner that produces one has a bug; the message names the buffers and ranges to look at.
    """


def _check_names(plan: Plan) -> None:
    """Every buffer has exactly one offset and no offset names an unknown buffer."""
    names = [b.name for b in plan.buffers]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise PlanError(f"plan lists buffer names more than once: {dup}")
    missing = sorted(set(names) - set(plan.offsets))
    extra = sorted(set(plan.offsets) - set(names))
    if missing or extra:
        raise PlanError(f"plan offsets do not match its buffers: missing {missing}, unknown {extra}")


def _check_placement(plan: Plan) -> None:
    """Each offset is an aligned int >= 0 and each buffer ends inside the arena."""
    if plan.alignment < 1:
        raise PlanError(f"plan alignment must be >= 1, got {plan.alignment}")
    for b in plan.buffers:
        offset = plan.offsets[b.name]
        if not isinstance(offset, int) or offset < 0:
            raise PlanError(f"buffer {b.name!r}: offset must be an int >= 0, got {offset!r}")
        if offset % plan.alignment:
            raise PlanError(f"buffer {b.name!r}: offset {offset} is not a multiple of the "
                            f"alignment {plan.alignment}")
        if offset + b.size > plan.arena_bytes:
            raise PlanError(f"buffer {b.name!r}: bytes [{offset}, {offset + b.size}) run past the "
                            f"arena of {plan.arena_bytes} bytes")


def _live_pairs(sized: list) -> list[tuple[int, int]]:
    """Index pairs (i < j) of buffers whose inclusive lifetimes share an op."""
    pairs = []
    alive: list[int] = []  # buffers defined so far, pruned of those dead before the current one
    for j in sorted(range(len(sized)), key=lambda k: sized[k].first):
        b = sized[j]
        alive = [i for i in alive if sized[i].last >= b.first]
        pairs += [(min(i, j), max(i, j)) for i in alive]
        alive.append(j)
    return pairs


def _check_pairs(plan: Plan) -> None:
    """No two buffers that are live at a common op share a byte (zero-size buffers hold none)."""
    sized = [b for b in plan.buffers if b.size > 0]
    for i, k in sorted(_live_pairs(sized)):
        a, b = sized[i], sized[k]
        t_lo, t_hi = max(a.first, b.first), min(a.last, b.last)
        if t_lo > t_hi:  # cannot happen for a live pair: kept so the check stands on its own
            continue
        a_lo, b_lo = plan.offsets[a.name], plan.offsets[b.name]
        a_hi, b_hi = a_lo + a.size, b_lo + b.size
        if a_lo < b_hi and b_lo < a_hi:
            raise PlanError(
                f"buffers {a.name!r} (bytes [{a_lo}, {a_hi})) and {b.name!r} "
                f"(bytes [{b_lo}, {b_hi})) overlap in bytes [{max(a_lo, b_lo)}, "
                f"{min(a_hi, b_hi)}) while both are live at ops {t_lo}..{t_hi}")


def check_plan(plan: Plan) -> None:
    """Raise PlanError unless ``plan`` is safe to run: names match, offsets aligned, all in the
    arena, and no two buffers live at the same op share a byte. Returns None when it is fine."""
    _check_names(plan)
    _check_placement(plan)
    _check_pairs(plan)
