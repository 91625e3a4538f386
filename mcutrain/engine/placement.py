"""The arena placement the compiler uses: the memory planner's greedy first fit, tried in a few orders.

Why: TFLite Micro's greedy-by-size order (``mcutrain.engine.memory.plan_greedy``) is tight for an
inference graph, but a training program has many long-lived small buffers (clamp masks, saved
activations) beside short-lived big ones (gradients, ring buffers); placing by size alone can push the
long-lived ones high and leave holes under the peak (MCUNet at 128x128: 39.6 KB arena for a 35.8 KB
lower bound). The same first-fit step (``memory.planners.first_fit``) in other orders (by size x
lifetime, by lifetime, by first use) often closes the gap. ``plan_best`` runs ``plan_greedy`` and
those orders and keeps the smallest arena (ties: the earlier in the list, ``plan_greedy`` first), so
it is never worse than ``plan_greedy``; every candidate is checked by ``memory.check_plan``.
Deterministic: the orders are total (ties broken by name).
"""

from __future__ import annotations

from typing import Callable

from mcutrain.engine.memory import DEFAULT_ALIGNMENT, Buffer, Plan, align_up, check_plan, plan_greedy
from mcutrain.engine.memory.planners import first_fit
from mcutrain.engine.memory.records import canonical

__all__ = ["ORDERS", "plan_best", "plan_in_order"]

ORDERS: dict[str, Callable[[Buffer], tuple]] = {
    "area": lambda b: (-(b.last - b.first + 1) * b.size, b.first, b.name),
    "lifetime": lambda b: (-(b.last - b.first), -b.size, b.name),
    "first_use": lambda b: (b.first, -b.size, b.name),
    "size_then_lifetime": lambda b: (-b.size, -(b.last - b.first), b.name),
}


def plan_in_order(buffers, key: Callable[[Buffer], tuple], alignment: int = DEFAULT_ALIGNMENT) -> Plan:
    """``plan_greedy``'s first-fit placement with buffers taken in the order ``key`` gives."""
    ordered = canonical(buffers)
    offsets: dict[str, int] = {}
    placed: list[Buffer] = []
    for b in sorted(ordered, key=key):
        if b.size == 0:
            offsets[b.name] = 0
            continue
        blocked = [(offsets[p.name], offsets[p.name] + p.size) for p in placed if p.lives_with(b)]
        offsets[b.name] = first_fit(b.size, blocked, alignment)
        placed.append(b)
    arena = max((offsets[b.name] + b.size for b in ordered), default=0)
    return Plan(offsets, align_up(arena, alignment), ordered, alignment)


def plan_best(buffers, alignment: int = DEFAULT_ALIGNMENT) -> Plan:
    """The smallest of ``plan_greedy`` and first fit in the other ``ORDERS``."""
    buffers = tuple(buffers)
    best = plan_greedy(buffers, alignment)
    for key in ORDERS.values():
        plan = plan_in_order(buffers, key, alignment)
        if plan.arena_bytes < best.arena_bytes:
            best = plan
    check_plan(best)
    return best
