"""The arena placement the compiler uses: the memory planner's greedy first fit, in the best of many orders.

Why: TFLite Micro's greedy-by-size order (``mcutrain.engine.memory.plan_greedy``) is tight for an
inference graph, but a training program has many long-lived small buffers (clamp masks, saved
activations) beside short-lived big ones (gradients, ring buffers); placing by size alone can push the
long-lived ones high and leave holes under the peak (MbV2 at 128x128: 32.1 KB arena for a 25.1 KB
lower bound). The same first-fit step (``memory.planners.first_fit``) in other orders often closes the
gap. ``plan_best`` runs ``plan_greedy``, a few fixed orders (by size x lifetime, by lifetime, by first
use, ...) and then, while the arena is above the lower bound, ``trials`` orders drawn by a seeded
generator (size^a x lifetime^b x (1 + c x noise), random a, b, c; skipped when the gap is within
1 KB or 1/64 of the bound; a trial stops as soon as it cannot win): it keeps the smallest arena (ties:
the earliest candidate, ``plan_greedy`` first), so it is never worse than ``plan_greedy`` and always
the same for the same buffers. The chosen plan is checked by ``memory.check_plan``.
"""

from __future__ import annotations

import random
from typing import Callable

from mcutrain.engine.memory import DEFAULT_ALIGNMENT, Buffer, Plan, align_up, check_plan, lower_bound, plan_greedy
from mcutrain.engine.memory.records import canonical, conflicts

__all__ = ["ORDERS", "TRIALS", "plan_best", "plan_in_order"]

TRIALS = 2000  # random orders tried when the fixed ones leave the arena clearly above the lower bound
CLOSE_ENOUGH = 1 / 64  # ... i.e. by more than this fraction of it (and 1 KB): not worth the search

ORDERS: dict[str, Callable[[Buffer], tuple]] = {
    "area": lambda b: (-(b.last - b.first + 1) * b.size, b.first, b.name),
    "lifetime": lambda b: (-(b.last - b.first), -b.size, b.name),
    "first_use": lambda b: (b.first, -b.size, b.name),
    "size_then_lifetime": lambda b: (-b.size, -(b.last - b.first), b.name),
}


class _Placer:
    """First-fit placement of one buffer set in any order (conflicts computed once).

    ``place`` is the hot loop of ``plan_best`` (up to 2000 orders per plan): it is ``first_fit`` inlined
    over precomputed sizes and the conflicts that hold bytes, the same arithmetic step for step."""

    def __init__(self, buffers: tuple[Buffer, ...], alignment: int):
        self.buffers, self.alignment = buffers, alignment
        self.conflicts = conflicts(buffers)  # [j for j, c in enumerate(buffers) if j != i and b.lives_with(c)]
        self.sizes = [b.size for b in buffers]
        self.holding = [[j for j in js if self.sizes[j]] for js in self.conflicts]  # zero-size blocks nothing

    def place(self, order: list[int], limit: int | None = None) -> tuple[list[int] | None, int]:
        """Offsets and arena; (None, limit) as soon as a buffer would end at or past ``limit``."""
        sizes, holding, a = self.sizes, self.holding, self.alignment
        offsets: list[int | None] = [None] * len(sizes)
        for i in order:
            size = sizes[i]
            if size == 0:
                offsets[i] = 0
                continue
            blocked = sorted([(offsets[j], offsets[j] + sizes[j]) for j in holding[i] if offsets[j] is not None])
            candidate = 0  # first_fit: 0 or the aligned end of a blocking range
            for start, end in blocked:
                if candidate + size <= start:
                    break
                end = -(-end // a) * a
                if end > candidate:
                    candidate = end
            offsets[i] = candidate
            if limit is not None and -(-(candidate + size) // a) * a >= limit:
                return None, limit
        arena = max((o + s for o, s in zip(offsets, sizes)), default=0)
        return offsets, align_up(arena, a)

    def plan(self, offsets: list[int]) -> Plan:
        arena = max((o + b.size for o, b in zip(offsets, self.buffers)), default=0)
        return Plan({b.name: o for b, o in zip(self.buffers, offsets)}, align_up(arena, self.alignment),
                    self.buffers, self.alignment)


def plan_in_order(buffers, key: Callable[[Buffer], tuple], alignment: int = DEFAULT_ALIGNMENT) -> Plan:
    """``plan_greedy``'s first-fit placement with buffers taken in the order ``key`` gives."""
    placer = _Placer(canonical(buffers), alignment)
    order = sorted(range(len(placer.buffers)), key=lambda i: key(placer.buffers[i]))
    return placer.plan(placer.place(order)[0])


def plan_best(buffers, alignment: int = DEFAULT_ALIGNMENT, trials: int = TRIALS, seed: int = 0,
              enough: int = 0) -> Plan:
    """The smallest arena of ``plan_greedy``, first fit in ``ORDERS`` and ``trials`` seeded random orders.

    ``enough``: stop as soon as the arena is at most this many bytes (default 0: only the lower bound
    stops early). The search uses it to decide "arena <= X" exactly without running every order: the
    full run's arena is <= X if and only if some order reaches <= X, and the orders and their random
    draws do not depend on where the loop stops.
    """
    best = plan_greedy(buffers, alignment)
    placer = _Placer(best.buffers, alignment)
    bufs = placer.buffers
    floor = align_up(lower_bound(bufs), alignment)
    stop = max(floor, enough)  # the skip rule below keeps using the true floor
    for key in ORDERS.values():
        if best.arena_bytes <= stop:
            break
        offsets, arena = placer.place(sorted(range(len(bufs)), key=lambda i: key(bufs[i])))
        if arena < best.arena_bytes:
            best = placer.plan(offsets)
    rng = random.Random(seed)
    if best.arena_bytes - floor <= max(1024, floor * CLOSE_ENOUGH):
        trials = 0
    for _ in range(trials):
        if best.arena_bytes <= stop:
            break
        a, b, c = rng.random(), rng.random(), rng.random()
        weight = [-(x.size ** (0.5 + a)) * (x.last - x.first + 1) ** b * (1 + c * rng.random()) for x in bufs]
        offsets, arena = placer.place(sorted(range(len(bufs)), key=lambda i: (weight[i], bufs[i].name)),
                                      best.arena_bytes)
        if offsets is not None and arena < best.arena_bytes:
            best = placer.plan(offsets)
    check_plan(best)
    return best
