"""The row schedule of a fused ``mbconv_rows`` segment (``passes.fuse_rows``): in which order its
stages compute output rows, the ring buffers that hold the few input rows each stage still needs,
the folded windows of expanded tensors, and the scratch they take. Pure functions of the stages and
their tensor types; the pass decides WHAT to fuse, this module HOW the fused rows run.

Split from ``passes/fuse_rows.py`` to keep each file one idea; the executors read ``window`` and
``STREAM`` from here through that module."""

from __future__ import annotations

from dataclasses import dataclass

from mcutrain.engine.ir import Op
from mcutrain.engine.memory.planners import first_fit
from mcutrain.engine.ops import stride_and_top_pad

STREAM = -1  # schedule event: fetch the next row of the streamed input into its ring
ALIGN = 4
FOLD_BYTES = 1024  # a folded expanded tensor's window: this many bytes of its channels at a time
MAX_WINDOW_ROWS = 16  # rows of a folded window at most (the C kernels' row arrays, MCT_ROWS_MAX_K)


@dataclass(frozen=True)
class RowPlan:
    schedule: tuple[tuple[int, int], ...]
    rings: tuple[tuple, ...]  # (tensor, channels, rows, width, offset, live event spans)
    folds: tuple[tuple, ...]  # (folded tensor, channels, rows, width, offset, live event spans)
    scratch_bytes: int
    inplace_ok: bool  # the output may overwrite x row by row


def window(stage: Op, row: int, types) -> tuple[str, int, int]:
    """(tensor, first row, last row) of the conv ``stage``'s input that its output row ``row`` reads."""
    return _clipped(_geometry(stage, types), row)


def _geometry(stage: Op, types) -> tuple[str, int, int, int, int]:
    """(input tensor, its height, k, stride, top padding) of a conv stage."""
    x = stage.inputs[0]
    return (x, types.tensor(x).shape[2], types.tensor(stage.inputs[1]).shape[-1], *stride_and_top_pad(stage))


def _clipped(geometry: tuple[str, int, int, int, int], row: int) -> tuple[str, int, int]:
    x, height, k, stride, top = geometry
    lo = stride * row - top
    return x, max(lo, 0), min(lo + k - 1, height - 1)


class _Reads:
    """What an event (stage s, row r) reads, each stage's geometry looked up once (the planner asks for
    every row of every stage of every segment it costs). ``batched``: stage -> rows an event (a folded
    depthwise stage's batch: rows r .. r + batch - 1, its windows' union)."""

    def __init__(self, stages: tuple[Op, ...], types, batched: dict[int, int] | None = None):
        self.stages, self.batched = stages, batched or {}
        self.geometry = [None if st.kind == "add" else _geometry(st, types) for st in stages]
        self.height = [types.tensor(st.outputs[0]).shape[2] for st in stages]

    def rows(self, s: int, row: int) -> int:
        """Output rows event (s, row) makes."""
        batch = self.batched.get(s)
        return 1 if batch is None else min(batch, self.height[s] - row)

    def __call__(self, s: int, row: int) -> list[tuple[str, int, int]]:
        """(tensor, first row, last row) per input (two for an add, the window(s) for a conv)."""
        geometry = self.geometry[s]
        if geometry is None:
            return [(self.stages[s].inputs[0], row, row), (self.stages[s].inputs[1], row, row)]
        if s not in self.batched:
            return [_clipped(geometry, row)]
        x, lo, _ = _clipped(geometry, row)
        return [(x, lo, _clipped(geometry, row + self.rows(s, row) - 1)[2])]


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


@dataclass(frozen=True)
class FoldShape:
    """What folding one expanded tensor costs, as numbers: its ``channels``, the bytes of one channel of
    its window (k rows of ``width``), the expanded ``rows`` made over all output rows (each output row's
    window, clipped), and its expand conv's input (``c_in`` channels, ``height`` rows)."""
    channels: int
    channel_bytes: int
    rows: int
    height: int
    width: int
    c_in: int

    @property
    def recomputed_macs(self) -> int:
        """MACs beyond computing each expanded row once."""
        return max(self.rows - self.height, 0) * self.width * self.c_in * self.channels

    def group(self, window: int) -> int:
        """Channels a window of ``window`` bytes holds."""
        return window_group(self.channels, self.channel_bytes, window)

    def reread_inputs(self, window: int) -> int:
        """Input elements read beyond reading each once: every window's input rows, once per group."""
        groups = -(-self.channels // self.group(window))
        return max(self.rows * groups - self.height, 0) * self.width * self.c_in

    def window_for(self, groups: int) -> int:
        """Bytes of a window that holds the tensor in ``groups`` groups."""
        return -(-self.channels // groups) * self.channel_bytes


def window_group(channels: int, channel_bytes: int, window: int) -> int:
    """Channels of a folded tensor a window of ``window`` bytes holds: at least one, at most all."""
    return max(1, min(channels, window // channel_bytes))


def fold_shape(stages: tuple[Op, ...], folded: str, types, batch: int = 1) -> FoldShape:
    """The ``FoldShape`` of expanded tensor ``folded`` (made by stage i, read by depthwise stage i + 1)
    when the depthwise stage makes ``batch`` output rows an event."""
    i = next(i for i, st in enumerate(stages) if st.outputs[0] == folded)
    expand, depthwise = stages[i], stages[i + 1]
    reads = _Reads(stages, types, {i + 1: batch})
    rows = sum(hi - lo + 1 for r in range(0, reads.height[i + 1], batch) for _, lo, hi in reads(i + 1, r))
    _, c_in, height, width = types.tensor(expand.inputs[0]).shape
    return FoldShape(types.tensor(folded).shape[1], window_rows(depthwise, batch, types) * width, rows, height,
                     width, c_in)


def window_rows(depthwise: Op, batch: int, types) -> int:
    """Rows of a folded window: the k tap rows of ``batch`` output rows, ``stride`` apart."""
    return types.tensor(depthwise.inputs[1]).shape[-1] + (batch - 1) * stride_and_top_pad(depthwise)[0]


def plan_rows(stages: tuple[Op, ...], x: str, types, streamed: bool, fold: tuple[str, ...] = (),
              window: int = FOLD_BYTES, batches: tuple[int, ...] = ()) -> RowPlan:
    """Pull schedule, ring sizes and in-place legality of a chain of stages reading ``x``.

    ``fold``: expanded tensors that get no ring: the depthwise stage reading one makes ``batches[i]``
    (default 1) output rows an event from a window of the expanded rows they read (k + (batch - 1) *
    stride rows), made from the expand conv's input rows ``window`` bytes of channels at a time
    (recomputing each expanded row for every event whose window holds it: a batch of 2 makes a 7x7
    stride-2 window's rows 2.25 times each instead of 3.5)."""
    producer = {st.outputs[0]: i for i, st in enumerate(stages)}
    folded = {t: stages[producer[t]].inputs[0] for t in fold}  # folded tensor -> its expand conv's input
    batch = dict(zip(fold, batches or (1,) * len(fold)))
    batched = {producer[t] + 1: batch[t] for t in fold}  # the folded depthwise stages: rows an event
    reads_of = _Reads(stages, types, batched)
    final = stages[-1].outputs[0]
    produced = {t: 0 for t in producer}
    schedule: list[tuple[int, int]] = []
    made: dict[str, list[int]] = {}  # tensor -> event time of each row
    last_read: dict[str, list[int]] = {}
    fetched = [0]

    heights = {t: types.tensor(t).shape[2] for t in [x] + list(producer)}
    height = heights.__getitem__

    def ensure(t: str, r: int) -> None:
        if t == x:
            while streamed and fetched[0] <= r:
                made.setdefault(x, []).append(len(schedule))
                schedule.append((STREAM, fetched[0]))
                fetched[0] += 1
            return
        s = producer[t]
        while produced[t] <= r:
            row, count = produced[t], reads_of.rows(s, produced[t])
            needs = [(folded.get(u, u), lo, hi) for u, lo, hi in reads_of(s, row)]
            for u, _, hi in needs:
                if hi >= 0:
                    ensure(u, hi)
            time = len(schedule)
            for u, lo, hi in needs:
                reads = last_read.setdefault(u, [-1] * height(u))
                for rr in range(lo, hi + 1):
                    reads[rr] = time
            schedule.append((s, row))
            made.setdefault(t, []).extend([time] * count)
            produced[t] += count

    for r in range(height(final)):
        ensure(final, r)
    buffers = []  # (tensor, channels, rows, width, live spans), rings first
    for t in ([x] if streamed else []) + [st.outputs[0] for st in stages[:-1] if st.outputs[0] not in folded]:
        info, reads = types.tensor(t), last_read.get(t, [])
        buffers.append((t, info.shape[1], _ring_rows(made[t], reads), info.shape[3], _ring_spans(made[t], reads)))
    for t in fold:  # one window (k + (batch - 1) * stride rows) of a few channels of the folded tensor
        info = types.tensor(t)
        rows = window_rows(stages[producer[t] + 1], batch[t], types)
        events = tuple((e, e) for e, (s, _) in enumerate(schedule) if s == producer[t] + 1)
        group = window_group(info.shape[1], rows * info.shape[3], window)
        buffers.append((t, group, rows, info.shape[3], events))
    offsets, scratch = place_buffers([(c * rows * w, live) for _, c, rows, w, live in buffers])
    placed = [(t, c, rows, w, off, live) for (t, c, rows, w, live), off in zip(buffers, offsets)]
    rings, folds = placed[:len(placed) - len(fold)], [(*f, batch[f[0]]) for f in placed[len(placed) - len(fold):]]
    inplace_ok = (not streamed and types.tensor(x).shape == types.tensor(final).shape
                  and all(lr <= made[final][r] for r, lr in enumerate(last_read.get(x, [])) if r < len(made[final])))
    return RowPlan(tuple(schedule), tuple(rings), tuple(folds), scratch, inplace_ok)


def _ring_spans(made: list[int], last_read: list[int]) -> tuple[tuple[int, int], ...]:
    """When a ring holds bytes still to be read: each row from the event that makes it to the last that
    reads it, overlapping spans merged (rows are made in order: one pass)."""
    spans: list[list[int]] = []
    for r, first in enumerate(made):
        last = max(first, last_read[r] if r < len(last_read) else -1)
        if spans and first <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], last)
        else:
            spans.append([first, last])
    return tuple((a, b) for a, b in spans)


def _ring_rows(made: list[int], last_read: list[int]) -> int:
    """Fewest ring rows such that row r never lands on row r - rows while that row is still to be read."""
    last = [max(t, last_read[r] if r < len(last_read) else -1) for r, t in enumerate(made)]
    rows = 1
    while any(last[r - rows] >= made[r] for r in range(rows, len(made))):
        rows += 1
    return rows


def buffer_needs(stages: tuple[Op, ...], x: str, schedule, folded: dict[str, int], types) -> dict[str, list]:
    """Tensor -> the (first, last) events between which its bytes must stay as written: for each row, from
    the event that writes it to the last that reads it; for a folded tensor's window, each event of the
    depthwise stage that fills and reads it (``folded``: tensor -> rows an event). From the schedule alone,
    for the verifier to check that each lies inside one of the buffer's live spans (``plan_rows`` makes
    them as it schedules)."""
    expand_input = {st.outputs[0]: st.inputs[0] for st in stages}
    batched = {i + 1: folded[st.outputs[0]] for i, st in enumerate(stages) if st.outputs[0] in folded}
    reads_of = _Reads(stages, types, batched)
    rows: dict[tuple[str, int], list[int]] = {}  # (tensor, row) -> [written at, last read at]
    needs: dict[str, list[tuple[int, int]]] = {}
    for event, (s, r) in enumerate(schedule):
        if s == STREAM:
            rows[(x, r)] = [event, event]
            continue
        for t, lo, hi in reads_of(s, r):
            if t in folded:
                needs.setdefault(t, []).append((event, event))
                t = expand_input[t]
            for rr in range(lo, hi + 1):
                if (t, rr) in rows:
                    rows[(t, rr)][1] = event
        for i in range(reads_of.rows(s, r)):
            rows[(stages[s].outputs[0], r + i)] = [event, event]
    for (t, _), (first, last) in rows.items():
        needs.setdefault(t, []).append((first, last))
    return needs


def spans_meet(a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> bool:
    """Whether two sets of inclusive event spans share an event."""
    return any(s0 <= t1 and s1 <= t0 for s0, t0 in a for s1, t1 in b)


def _event_bits(live: tuple[tuple[int, int], ...]) -> int:
    """The events of inclusive spans as the bits of one integer."""
    bits = 0
    for first, last in live:
        bits |= ((1 << (last - first + 1)) - 1) << first
    return bits


def place_buffers(buffers: list[tuple[int, tuple]]) -> tuple[list[int], int]:
    """(offset of each (bytes, live spans) buffer, scratch bytes): greedy by size, first fit
    (``memory.planners``' rule, TFLite Micro's), two buffers sharing bytes only if no event uses both.

    Why: the planner charges a pipeline its scratch, and ``fuse_rows`` folds expand convs (recomputing
    them) only when that scratch would set the program's peak. The one-row rings between a depthwise
    and its project conv and the folded windows are each live for one or two events at a time, so they
    share bytes with each other instead of adding up: fewer folds for the same peak."""
    order = sorted(range(len(buffers)), key=lambda i: (-buffers[i][0], buffers[i][1][:1], i))
    events = [_event_bits(live) for _, live in buffers]  # the test of two lives meeting: one AND
    offsets = [0] * len(buffers)
    placed: list[int] = []
    for i in order:
        blocked = [(offsets[j], offsets[j] + buffers[j][0]) for j in placed if events[i] & events[j]]
        offsets[i] = first_fit(buffers[i][0], blocked, ALIGN)
        placed.append(i)
    end = max((off + size for off, (size, _) in zip(offsets, buffers)), default=0)
    return offsets, end
