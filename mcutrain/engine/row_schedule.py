"""The row schedule of a fused ``mbconv_rows`` segment (``passes.fuse_rows``): in which order its
stages compute output rows, the ring buffers that hold the few input rows each stage still needs,
the folded windows of expanded tensors, and the scratch they take. Pure functions of the stages and
their tensor types; the pass decides WHAT to fuse, this module HOW the fused rows run.

Split from ``passes/fuse_rows.py`` to keep each file one idea; the executors read ``window`` and
``STREAM`` from here through that module."""

from __future__ import annotations

from dataclasses import dataclass

from mcutrain.engine.ir import Op
from mcutrain.engine.ops import stride_and_top_pad

STREAM = -1  # schedule event: fetch the next row of the streamed input into its ring
ALIGN = 4
FOLD_BYTES = 1024  # a folded expanded tensor's window: this many bytes of its channels at a time


@dataclass(frozen=True)
class RowPlan:
    schedule: tuple[tuple[int, int], ...]
    rings: tuple[tuple[str, int, int, int, int], ...]  # (tensor, channels, rows, width, offset)
    folds: tuple[tuple[str, int, int, int, int], ...]  # (folded tensor, channels, rows, width, offset)
    scratch_bytes: int
    inplace_ok: bool  # the output may overwrite x row by row


def window(stage: Op, row: int, types) -> tuple[str, int, int]:
    """(tensor, first row, last row) of the conv ``stage``'s input that its output row ``row`` reads."""
    x = stage.inputs[0]
    height = types.tensor(x).shape[2]
    k = types.tensor(stage.inputs[1]).shape[-1]
    stride, top = stride_and_top_pad(stage)
    lo = stride * row - top
    return x, max(lo, 0), min(lo + k - 1, height - 1)


def _needs(stage: Op, row: int, types, folded: dict[str, Op]) -> list[tuple[str, int, int]]:
    """(tensor, first row, last row) that output row ``row`` of ``stage`` reads (a folded tensor's rows
    are its 1x1 expand conv's input rows: the stage makes them as it goes)."""
    if stage.kind == "add":
        return [(stage.inputs[0], row, row), (stage.inputs[1], row, row)]
    x, lo, hi = window(stage, row, types)
    return [(folded[x].inputs[0] if x in folded else x, lo, hi)]


def foldable(stages: tuple[Op, ...]) -> list[str]:
    """Expanded tensors (of a 1x1, stride-1 expand conv) read only by a depthwise conv with k > 1."""
    found = []
    for i, st in enumerate(stages[:-1]):
        nxt = stages[i + 1]
        if (st.kind == "conv2d" and st.attr("groups") == 1 and stride_and_top_pad(st) == (1, 0)
                and nxt.kind == "conv2d" and nxt.attr("groups") > 1 and nxt.inputs[0] == st.outputs[0]
                and stride_and_top_pad(nxt)[1] > 0 and not any(st.outputs[0] in o.inputs for o in stages[i + 2:])):
            found.append(st.outputs[0])
    return found


def plan_rows(stages: tuple[Op, ...], x: str, types, streamed: bool, fold: tuple[str, ...] = ()) -> RowPlan:
    """Pull schedule, ring sizes and in-place legality of a chain of stages reading ``x``.

    ``fold``: expanded tensors that get no ring: the depthwise stage reading one makes the expanded
    rows of its window from the expand conv's input rows, ``FOLD_BYTES`` of channels at a time
    (recomputing each expanded row for every output row whose window holds it)."""
    producer = {st.outputs[0]: i for i, st in enumerate(stages)}
    folded = {t: stages[producer[t]] for t in fold}
    final = stages[-1].outputs[0]
    produced = {t: 0 for t in producer}
    schedule: list[tuple[int, int]] = []
    made: dict[str, list[int]] = {}  # tensor -> event time of each row
    last_read: dict[str, list[int]] = {}
    fetched = [0]

    def height(t: str) -> int:
        return types.tensor(t).shape[2]

    def ensure(t: str, r: int) -> None:
        if t == x:
            while streamed and fetched[0] <= r:
                made.setdefault(x, []).append(len(schedule))
                schedule.append((STREAM, fetched[0]))
                fetched[0] += 1
            return
        s = producer[t]
        while produced[t] <= r:
            row = produced[t]
            needs = _needs(stages[s], row, types, folded)
            for u, _, hi in needs:
                if hi >= 0:
                    ensure(u, hi)
            time = len(schedule)
            for u, lo, hi in needs:
                reads = last_read.setdefault(u, [-1] * height(u))
                for rr in range(lo, hi + 1):
                    reads[rr] = time
            schedule.append((s, row))
            made.setdefault(t, []).append(time)
            produced[t] += 1

    for r in range(height(final)):
        ensure(final, r)
    rings, folds, offset = [], [], 0
    for t in ([x] if streamed else []) + [st.outputs[0] for st in stages[:-1] if st.outputs[0] not in folded]:
        rows = _ring_rows(made[t], last_read.get(t, []))
        info = types.tensor(t)
        rings.append((t, info.shape[1], rows, info.shape[3], offset))
        offset += -(-info.shape[1] * rows * info.shape[3] // ALIGN) * ALIGN
    for t in fold:  # one window (k rows) of a few channels of the folded tensor
        info = types.tensor(t)
        k = types.tensor(stages[producer[t] + 1].inputs[1]).shape[-1]
        group = max(1, min(info.shape[1], FOLD_BYTES // (k * info.shape[3])))
        folds.append((t, group, k, info.shape[3], offset))
        offset += -(-group * k * info.shape[3] // ALIGN) * ALIGN
    inplace_ok = (not streamed and types.tensor(x).shape == types.tensor(final).shape
                  and all(lr <= made[final][r] for r, lr in enumerate(last_read.get(x, [])) if r < len(made[final])))
    return RowPlan(tuple(schedule), tuple(rings), tuple(folds), offset, inplace_ok)


def _ring_rows(made: list[int], last_read: list[int]) -> int:
    """Fewest ring rows such that row r never lands on row r - rows while that row is still to be read."""
    last = [max(t, last_read[r] if r < len(last_read) else -1) for r, t in enumerate(made)]
    rows = 1
    while any(last[r - rows] >= made[r] for r in range(rows, len(made))):
        rows += 1
    return rows
