"""The planner's plain records: a Buffer (size + inclusive lifetime) and a Plan (offsets + arena).

The planner never sees the IR. Whatever builds the schedule turns each tensor that must live in the
arena into a ``Buffer(name, size, first, last)``: defined by op ``first``, last read by op ``last``,
both inclusive (TFLite Micro's convention). Two buffers whose lifetimes share an op index are live
together and must not share bytes; a buffer read last at op t and one defined at op t conflict, because
an op reads its inputs while it writes its output.
"""

import heapq
from functools import lru_cache
from dataclasses import dataclass, field

DEFAULT_ALIGNMENT = 4  # C reads int32 and float through aligned pointers; 4 bytes is the Cortex-M need.


def _is_int(value) -> bool:
    """True for a real int: bools are ints to Python but a size of True is a bug, not one byte."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Buffer:
    """One arena tensor: ``size`` bytes, live at op indices ``first..last`` (both inclusive).

    ``kind`` is free text for reports ("activation", "gradient", "mask", "saved", "weight-copy"):
    the planner ignores it, the timeline and the plot group by it.
    """

    name: str
    size: int
    first: int
    last: int
    kind: str = "activation"

    def __post_init__(self):
        """Reject impossible records here, so no planner has to guess what a bad one means."""
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"buffer name must be a non-empty string, got {self.name!r}")
        for attr in ("size", "first", "last"):
            if not _is_int(getattr(self, attr)):
                raise ValueError(f"buffer {self.name!r}: {attr} must be an int, "
                                 f"got {getattr(self, attr)!r}")
        if self.size < 0:
            raise ValueError(f"buffer {self.name!r}: size must be >= 0 bytes, got {self.size}")
        if self.first < 0:
            raise ValueError(f"buffer {self.name!r}: first op index must be >= 0, got {self.first}")
        if self.last < self.first:
            raise ValueError(f"buffer {self.name!r}: last op index {self.last} is before first "
                             f"{self.first} (lifetimes are inclusive: first <= last)")
        if not isinstance(self.kind, str):
            raise ValueError(f"buffer {self.name!r}: kind must be a string, got {self.kind!r}")

    def live_at(self, op: int) -> bool:
        """Whether the buffer holds a value the schedule still needs while op ``op`` runs."""
        return self.first <= op <= self.last

    def lives_with(self, other: "Buffer") -> bool:
        """Whether the two lifetimes share at least one op index (then they may not share bytes)."""
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class Plan:
    """Where each buffer sits in one arena of ``arena_bytes`` bytes (offsets aligned to ``alignment``).

    ``buffers`` is kept in schedule order (first, last, name) whatever the planner was given, so two
    plans of the same buffer set compare equal and reports list buffers in the order they appear.
    """

    offsets: dict[str, int]
    arena_bytes: int
    buffers: tuple[Buffer, ...]
    alignment: int = DEFAULT_ALIGNMENT
    _by_name: dict[str, Buffer] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        """Copy the offsets (a frozen plan must not change when the caller's dict does)."""
        object.__setattr__(self, "offsets", dict(self.offsets))
        object.__setattr__(self, "buffers", tuple(self.buffers))
        object.__setattr__(self, "_by_name", {b.name: b for b in self.buffers})

    def buffer(self, name: str) -> Buffer:
        """The record of buffer ``name`` (KeyError names it when it is not in the plan)."""
        return self._by_name[name]

    def region(self, name: str) -> tuple[int, int]:
        """The half-open byte range ``[start, end)`` buffer ``name`` occupies in the arena."""
        start = self.offsets[name]
        return start, start + self._by_name[name].size

    @property
    def n_ops(self) -> int:
        """Length of the schedule the buffers span (last op index + 1; 0 for an empty plan)."""
        return schedule_length(self.buffers)


def check_alignment(alignment) -> int:
    """Return ``alignment`` if it is a usable byte alignment (a positive int), else raise."""
    if not _is_int(alignment) or alignment < 1:
        raise ValueError(f"alignment must be a positive number of bytes, got {alignment!r}")
    return alignment


def align_up(n: int, alignment: int) -> int:
    """The smallest multiple of ``alignment`` that is >= ``n``."""
    return -(-n // alignment) * alignment


def canonical(buffers) -> tuple[Buffer, ...]:
    """Validate a buffer collection and return it in schedule order (first, last, name).

    Names must be unique because plans, reports and the C code generator address buffers by name.
    """
    buffers = tuple(buffers)
    seen: set[str] = set()
    for b in buffers:
        if not isinstance(b, Buffer):
            raise ValueError(f"expected Buffer records, got {type(b).__name__}: {b!r}")
        if b.name in seen:
            raise ValueError(f"duplicate buffer name {b.name!r}: every buffer needs its own name")
        seen.add(b.name)
    return tuple(sorted(buffers, key=lambda b: (b.first, b.last, b.name)))


def schedule_length(buffers) -> int:
    """Number of op indices the buffers span: ``max(last) + 1``, 0 when there are none."""
    return max((b.last for b in buffers), default=-1) + 1


def live_bytes_per_op(buffers, n_ops: int | None = None) -> list[int]:
    """Bytes live at each op index ``0..n_ops-1`` (the memory curve, no reuse losses).

    ``n_ops`` defaults to the span of the buffers; a schedule longer than that just adds zero ops at
    the end, a shorter one is an error because some buffer would outlive the program.
    """
    buffers = tuple(buffers)
    span = schedule_length(buffers)
    n_ops = span if n_ops is None else n_ops
    if not _is_int(n_ops) or n_ops < span:
        raise ValueError(f"n_ops={n_ops!r} but the buffers are live up to op {span - 1}; "
                         f"n_ops must be an int >= {span}")
    delta = [0] * (n_ops + 1)  # difference array: +size at first, -size after last
    for b in buffers:
        delta[b.first] += b.size
        delta[b.last + 1] -= b.size
    live, running = [], 0
    for d in delta[:n_ops]:
        running += d
        live.append(running)
    return live


def conflicts(buffers) -> tuple[tuple[int, ...], ...]:
    """For each buffer (by index), the indices of the others whose lifetime shares an op, ascending.

    The same relation as ``Buffer.lives_with`` over all pairs, found by one sweep in order of first
    use that keeps the buffers still live: O(n log n + pairs), not O(n^2). A long program has few
    pairs per buffer (most buffers live for a few ops), so this is what keeps planning near-linear.
    The planners of one stage ask for the same buffers several times (``plan_best`` and its
    ``plan_greedy``, the report's reference plans): the last few answers are kept (as tuples, which
    no caller can disturb).
    """
    return _conflicts(tuple(buffers))


@lru_cache(maxsize=4)
def _conflicts(buffers: tuple) -> tuple[tuple[int, ...], ...]:
    found: list[list[int]] = [[] for _ in buffers]
    live: list[tuple[int, int]] = []  # heap of (last, index) of the buffers met so far that may still live
    for i in sorted(range(len(buffers)), key=lambda k: buffers[k].first):
        b = buffers[i]
        while live and live[0][0] < b.first:  # died before b is defined: lives with no later buffer
            heapq.heappop(live)
        for _, j in live:  # defined no later than b, still live at b.first
            found[i].append(j)
            found[j].append(i)
        heapq.heappush(live, (b.last, i))
    return tuple(tuple(sorted(row)) for row in found)
