"""Row pipelines: a chain of frozen forward ops computed row by row through small ring buffers.

Why: below the lowest trained layer the backward needs nothing of the forward (no saved input, no
mask), yet the early, high-resolution tensors are the biggest of the network (MCUNet at 128x128: the
image 48 KB, the first conv's output 64 KB, block 1's expanded tensor 128 KB). An output row of a
"same"-padded k x k conv with stride s needs only k rows of its input (rows s*r - k//2 ...), so a
chain of convs (and residual adds) can be run row by row, each intermediate tensor living in a ring
of a few rows: MCUNetV2's patch-based inference and TinyEngine's line buffers, without recompute.
Only the chain's input and output are whole; a streamed input (the camera image, ``Graph.streams``)
is not even that: its rows are copied into a ring as the first conv needs them.

The fused op ``mbconv_rows`` (catalogue: ``mcutrain.engine.ops``) replaces ops i..j of the forward:
  inputs   (x, every constant / parameter the stages read, in order of first use)
  outputs  the last op's outputs (its int8 output and, if the backward needs it, its clamp mask)
  attrs    stages   the fused ops, one conv2d / add each (a pointwise_depthwise op is split back
                    into its two convs), with their original names, operands and attributes;
                    intermediate tensors keep their names but leave the graph;
           internal the TensorInfo of every intermediate tensor (shape and quantization);
           program  the resolved program (``fused_program.RowsProgram``, lowered once from the row plan):
                    schedule  the static row schedule: ((stage, row), ...) in execution order; stage
                              -1 fetches the next row of the streamed input into its ring;
                    rings     each ring is ``channels x rows x width`` int8 (row r of the tensor in
                              slot r % rows) at ``offset`` of the op's scratch buffer (aligned to 4;
                              ``lifetimes`` reserves ``total``); two buffers share bytes when no
                              event needs both (``live``: the one-row rings between a depthwise and
                              its project conv, the folded windows; ``row_schedule.place_buffers``);
                    folds     expanded tensors that get no ring (below); each has a window of ``rows``
                              (k + (batch - 1) * stride) rows of ``channels`` of its channels, its
                              depthwise stage making ``batch`` output rows an event;
           stream   whether x is streamed (then x is never read whole);
           window   (a folding pipeline) the bytes of each folded tensor's window (``row_choice``);
           fused    the names of the graph ops the pipeline replaced;
           inplace  0 when the output overwrites x row by row (same shape, and the schedule writes
                    output row r only after the last read of x's row r).
The schedule is the pull order: output row r of the last stage is computed once every row it needs is
there, recursively; ring sizes are the fewest rows for which row r never lands on a row still to be
read (checked, not assumed). ``stages_of`` / ``internal_of`` / ``rings_of`` / ``program_of(op).folds``
give a C generator the parts back.

Folding (a segment variant the search may pick): the ring of an expanded tensor (E channels x k rows,
the biggest ring: MCUNet block 3 has a 7x7 depthwise on 48 channels) is replaced by the expand conv's
input ring (C_in < E channels x k rows) and a window of a few channels: for each event the depthwise
stage makes the expanded rows its ``batch`` output rows read (k + (batch - 1) * stride rows), a few
channels at a time, from the input rows, then its own rows of those channels. The expand conv is then
recomputed about (k + (batch - 1) * stride) / (batch * stride) times per row (the price of MCUNetV2's
patch overlap). "auto" folds only when the peak needs it, and then the set of expanded tensors, the
window and the batches that add the least work under the peak (``row_choice``); "max" whenever it
lowers the peak, with one-channel windows.

Which convs: those of the row geometry (``ops.row_geometry``): the zoo's "same" convs and TFLite's
SAME ones, stride 2 on an even input included (its padding row/column at the bottom/right only: the
windows start at ``s*r - top``, clipped to the input); not VALID convs, not a hidden FC layer's.
Which chains: a segment of the leading forward ops (kinds conv2d, add, pointwise_depthwise) whose
intermediate outputs have one output each (no mask: nothing trained reads them) read only inside the
segment, with exactly one outside activation input. The segmentation is a small dynamic program over
the prefix with the live bytes each segment would need (its outside tensors + rings, each segment
folded or not): options ``row_fusion`` "auto" (default: as little folding and fusion as keeps the
prefix from setting the program's peak; both only cost time), "max" (the lowest prefix peak), "off";
``row_segments`` forces the segmentation (the inference program reuses the training program's).
With ``stream_input`` the image reader is always a pipeline (of one op at least) whose input is
streamed, if nothing else reads the image (a trained first conv's weight gradient needs it whole;
then it stays in the arena).
"""

from __future__ import annotations

from dataclasses import replace

from mcutrain.engine.fused_program import RowsProgram, lower_rows
from mcutrain.engine.ir import Graph, Op, TensorInfo, make_attrs
from mcutrain.engine.memory import Buffer, live_bytes_per_op
from mcutrain.engine.ops import OUTPUT_TYPES, has_general_geometry, row_geometry
from mcutrain.engine.passes.fuse_expand import split as split_expand
from mcutrain.engine.row_choice import choose
from mcutrain.engine.row_schedule import (FOLD_BYTES, STREAM, FoldShape, RowPlan, fold_shape, foldable,  # noqa: F401
                                          plan_rows, window)

KIND = "mbconv_rows"
FUSABLE = ("conv2d", "add", "pointwise_depthwise")
MAX_OPS = 12  # longest segment considered (in graph ops): keeps the search small
MAX_FOLDS = 4  # a segment with more foldable tensors than this folds all or none (2^n choices otherwise)

__all__ = ["KIND", "STREAM", "RowPlan", "foldable", "fuse_rows", "internal_of", "plan_rows", "rings_of",
           "row_segments", "scratch_size", "stages_of", "window"]


# ----------------------------------------------------------------------------------------------
# The parts of a fused op, for executors and code generators


def stages_of(op: Op) -> tuple[Op, ...]:
    """The conv2d / add ops an ``mbconv_rows`` op runs, in order (their original names and operands)."""
    return op.attr("stages")


def internal_of(op: Op) -> dict[str, TensorInfo]:
    """Intermediate tensor name -> its TensorInfo (these tensors exist only as rings)."""
    return {t.name: t for t in op.attr("internal")}


def program_of(op: Op) -> RowsProgram:
    """The op's resolved program: schedule, rings and folded windows at their offsets, scratch bytes."""
    return op.attr("program")


def rings_of(op: Op) -> dict[str, tuple[int, int, int, int]]:
    """Ring tensor -> (channels, rows, width, byte offset in the op's scratch)."""
    return {b.tensor: (b.channels, b.rows, b.width, b.offset) for b in program_of(op).rings}


def scratch_size(op: Op) -> int:
    """The scratch bytes the planner reserves for the op (its program's total)."""
    return program_of(op).total


def row_segments(graph: Graph) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """The segmentation a graph's row pipelines use ((graph op names), (folded tensors), window bytes, (rows an
    event of each fold)), e.g. to give the inference program the same kernels."""
    return tuple((op.attr("fused"), tuple(b.tensor for b in program_of(op).folds), op.attr("window", FOLD_BYTES),
                  tuple(b.batch for b in program_of(op).folds)) for op in graph.ops if op.kind == KIND)


class _Types:
    """``graph.tensor`` that also knows the intermediate tensors of a pipeline (for the catalogue rules)."""

    def __init__(self, graph: Graph, extra: dict[str, TensorInfo]):
        self.graph, self.extra = graph, extra

    def tensor(self, name: str) -> TensorInfo:
        return self.extra[name] if name in self.extra else self.graph.tensor(name)


# ----------------------------------------------------------------------------------------------
# Building the fused op


def row_fusable(op: Op, graph: Graph) -> bool:
    """Ops a row pipeline can run: adds, the zoo's "same" convs and any conv of the same row geometry
    (``ops.row_geometry``: TFLite's SAME convs, stride 2 on even inputs included); a conv of any other
    geometry stays a whole op (general kernels), and so does a fused expand (zoo geometry only)."""
    if op.kind == "conv2d":
        return row_geometry(graph, op) is not None
    return op.kind in FUSABLE and not has_general_geometry(op)


def _activation_inputs(op: Op) -> tuple[str, ...]:
    return op.inputs[:2] if op.kind == "add" else op.inputs[:1]


def _stages(graph: Graph, seg: list[Op]) -> tuple[tuple[Op, ...], dict[str, TensorInfo]]:
    """Stage ops (pointwise_depthwise split back into two convs, in-place marks dropped) and the
    TensorInfo of each intermediate tensor."""
    stages: list[Op] = []
    internal: dict[str, TensorInfo] = {}
    types = _Types(graph, internal)
    for op in seg:
        parts = split_expand(op) if op.kind == "pointwise_depthwise" else (op,)
        for part in parts:
            attrs = tuple((k, v) for k, v in part.attrs if k != "inplace")
            stages.append(replace(part, attrs=attrs, phase="forward"))
    for st in stages[:-1]:
        (shape, dtype), *_ = OUTPUT_TYPES[st.kind](types, st)
        y = st.outputs[0]
        if y in graph.tensors:
            internal[y] = graph.tensor(y)
        else:  # the expanded tensor of a split pointwise_depthwise op
            internal[y] = TensorInfo(y, tuple(shape), dtype, "activation", None, st.attr("y_zero"))
    return tuple(stages), internal


# A search compiles many plans whose frozen prefixes share segments: the two costly steps of a segment's
# cost are pure functions of the segment's ops and the types of the tensors they touch, so they are
# remembered under exactly that key (bounded; the results are immutable or copied).
_MEMO_SIZE = 4096
_STAGES_MEMO: dict[tuple, tuple[tuple[Op, ...], dict[str, TensorInfo]]] = {}
_ROWS_MEMO: dict[tuple, RowPlan] = {}


def _remember(memo: dict, key: tuple, value):
    if len(memo) >= _MEMO_SIZE:
        memo.pop(next(iter(memo)))
    memo[key] = value
    return value


def clear_memos() -> None:
    """Forget the remembered segment steps (benchmarks measuring a cold start)."""
    _STAGES_MEMO.clear()
    _ROWS_MEMO.clear()


def _stages_memo(graph: Graph, seg: list[Op]) -> tuple[tuple[Op, ...], dict[str, TensorInfo]]:
    """``_stages`` remembered by (the ops, the TensorInfo of every name they read or write)."""
    names = [n for op in seg for n in op.inputs + op.outputs]
    key = (tuple(seg), tuple(graph.tensors.get(n) for n in names))
    found = _STAGES_MEMO.get(key) or _remember(_STAGES_MEMO, key, _stages(graph, seg))
    return found[0], dict(found[1])


def _plan_rows_memo(stages: tuple[Op, ...], x: str, types: _Types, streamed: bool, folds: tuple[str, ...],
                    window: int, batches: tuple[int, ...]) -> RowPlan:
    """``plan_rows`` remembered by (its arguments, the TensorInfo of every tensor it looks up)."""
    names = [x] + [n for st in stages for n in st.inputs[:2] + st.outputs[:1]]
    key = (stages, x, streamed, folds, window, batches, tuple(types.tensor(n) for n in names))
    return _ROWS_MEMO.get(key) or _remember(_ROWS_MEMO, key, plan_rows(stages, x, types, streamed, folds, window,
                                                                       batches))


def _fused_op(graph: Graph, seg: list[Op], x: str, streamed: bool, inplace: bool, folds: tuple[str, ...],
              window: int, batches: tuple[int, ...]) -> Op:
    stages, internal = _stages(graph, seg)
    plan = plan_rows(stages, x, _Types(graph, internal), streamed, folds, window, batches)
    inputs = [x]
    for st in stages:
        for name in st.inputs:
            if name != x and name not in internal and name not in inputs:
                inputs.append(name)
    name = seg[0].name if len(seg) == 1 else f"{seg[0].name}..{seg[-1].name}"
    attrs = dict(stages=stages, internal=tuple(internal.values()), program=lower_rows(plan), stream=streamed,
                 fused=tuple(op.name for op in seg))
    if folds:  # what row_segments gives the inference program (the batches are the folds' own)
        attrs["window"] = window
    if inplace:
        attrs["inplace"] = 0
    return Op(name, KIND, tuple(inputs), seg[-1].outputs, make_attrs(**attrs), "forward")


# ----------------------------------------------------------------------------------------------
# The pass


class _Prefix:
    """The leading forward ops and what a segment of them would cost once fused."""

    def __init__(self, graph: Graph, options):
        self.graph, self.options = graph, options
        ops = graph.ops
        n = 0
        while n < len(ops) and ops[n].phase == "forward" and ops[n].kind in FUSABLE:
            n += 1
        self.n = n
        self.readers: dict[str, list[int]] = {}
        for i, op in enumerate(ops):
            for name in op.inputs:
                self.readers.setdefault(name, []).append(i)
        from mcutrain.engine.lifetimes import buffers, storage_roots  # lifetimes imports the passes

        bufs = buffers(graph)
        self.live = live_bytes_per_op(bufs, len(ops)) if ops else []
        roots = storage_roots(graph)
        self.members: dict[str, list[str]] = {}
        for t, root in roots.items():
            self.members.setdefault(root, []).append(t)
        self.bufs = [b for b in bufs if b.kind != "scratch"]
        self.roots = roots
        self.by_name = {b.name: b for b in self.bufs}
        # Bytes of the buffers live somewhere in ops i..j = (defined before op j + 1) - (dead before op i):
        # two prefix sums, so that costing a segment does not walk every buffer of the program.
        self.defined_before = [0] * (len(ops) + 1)
        self.dead_before = [0] * (len(ops) + 1)
        for b in self.bufs:
            self.defined_before[b.first + 1] += b.size
            self.dead_before[b.last + 1] += b.size
        for k in range(len(ops)):
            self.defined_before[k + 1] += self.defined_before[k]
            self.dead_before[k + 1] += self.dead_before[k]
        self.floor = max(self.live[n:], default=0)
        self._cache: dict[tuple, tuple[int, bool, bool] | None] = {}
        self._foldable: dict[tuple[int, int], tuple[str, ...]] = {}
        self._stage_cache: dict[tuple[int, int], tuple] = {}
        self._shapes: dict[tuple[int, int, str, int], FoldShape] = {}

    def external_input(self, i: int, j: int) -> str | None:
        """The one outside activation input of ops i..j if they form a fusable chain, else None."""
        ops = self.graph.ops
        made = {o for op in ops[i:j + 1] for o in op.outputs}
        for k in range(i, j):
            op = ops[k]
            if len(op.outputs) != 1 or op.outputs[0] in self.graph.outputs:
                return None
            if any(not i < r <= j for r in self.readers.get(op.outputs[0], [])):
                return None
        outside = {n for op in ops[i:j + 1] for n in _activation_inputs(op) if n not in made}
        return outside.pop() if len(outside) == 1 else None

    def streamable(self, x: str, i: int, j: int) -> bool:
        return (self.options.stream_input and x in self.graph.inputs
                and all(i <= r <= j for r in self.readers.get(x, [])))

    def segment(self, i: int, j: int, folds: tuple[str, ...] = (), window: int = FOLD_BYTES,
                batches: tuple[int, ...] = ()):
        """(live bytes while the fused op runs, streamed, in place), or None if not fusable (or if
        ``folds`` are not expanded tensors it can fold); ``window``: bytes of a folded tensor's window,
        ``batches``: output rows each folded depthwise stage makes an event (default 1)."""
        key = (i, j, folds, window, batches or (1,) * len(folds)) if folds else (i, j, (), 0, ())  # one plan
        if key not in self._cache:
            self._cache[key] = self._segment(*key)
        return self._cache[key]

    def stages(self, i: int, j: int) -> tuple[tuple[Op, ...], dict[str, TensorInfo]]:
        """``_stages`` of ops i..j, remembered for this graph (the module memo's key costs more to make)."""
        if (i, j) not in self._stage_cache:
            self._stage_cache[(i, j)] = _stages_memo(self.graph, list(self.graph.ops[i:j + 1]))
        return self._stage_cache[(i, j)]

    def foldable(self, i: int, j: int) -> tuple[str, ...]:
        """The expanded tensors a pipeline of ops i..j could fold (none if ops i..j make no pipeline)."""
        if (i, j) not in self._foldable:
            fusable = self.segment(i, j) is not None
            stages = self.stages(i, j)[0] if fusable else ()
            self._foldable[(i, j)] = tuple(foldable(stages))
        return self._foldable[(i, j)]

    def fold_shapes(self, i: int, j: int, folds: tuple[str, ...], batches: tuple[int, ...] = ()) -> list[FoldShape]:
        """The ``FoldShape`` of each of ``folds`` (``batches``: rows an event each, default 1) in a pipeline
        of ops i..j (remembered: the choice asks for them once per window it prices)."""
        keys = [(i, j, t, b) for t, b in zip(folds, batches or (1,) * len(folds))]
        if any(key not in self._shapes for key in keys):
            stages, internal = self.stages(i, j)
            for key in keys:
                self._shapes[key] = fold_shape(stages, key[2], _Types(self.graph, internal), key[3])
        return [self._shapes[key] for key in keys]

    def _segment(self, i: int, j: int, folds: tuple[str, ...], window: int, batches: tuple[int, ...]):
        if not all(row_fusable(op, self.graph) for op in self.graph.ops[i:j + 1]):
            return None
        x = self.external_input(i, j)
        if x is None:
            return None
        streamed = self.streamable(x, i, j)
        if i == j and not streamed:
            return None  # one op with whole input and output: nothing to gain
        g = self.graph
        seg = list(g.ops[i:j + 1])
        stages, internal = self.stages(i, j)
        if folds and not set(folds) <= set(self.foldable(i, j)):
            return None
        plan = _plan_rows_memo(stages, x, _Types(g, internal), streamed, folds, window, batches)
        inplace = (plan.inplace_ok and x not in g.inputs and x not in g.outputs
                   and max(self.readers.get(x, [])) <= j)
        inside = {o for op in seg[:-1] for o in op.outputs}
        total = plan.scratch_bytes + self.live_in(i, j)
        for b in self._not_counted(i, j, inside, x if streamed else None):
            total -= b.size
        if inplace:
            total -= g.tensor(seg[-1].outputs[0]).nbytes
        return total, streamed, inplace

    def live_in(self, i: int, j: int) -> int:
        """Bytes of the buffers (scratch aside) live at some op of i..j."""
        return self.defined_before[j + 1] - self.dead_before[i]

    def _not_counted(self, i: int, j: int, inside: set[str], streamed: str | None) -> list[Buffer]:
        """The buffers live in i..j that the fused op does not hold: those all of whose tensors are
        made inside it (never whole), and the streamed input. Only buffers of names made inside or
        the input can qualify, so only those are looked at (a few, not every buffer)."""
        names = set(inside) | {self.roots.get(m, m) for m in inside} | ({streamed} if streamed else set())
        found = []
        for name in sorted(names):
            b = self.by_name.get(name)
            if b is None or not (b.first <= j and b.last >= i):
                continue
            members = self.members.get(b.name, [b.name])
            if all(m in inside for m in members) or b.name == streamed:
                found.append(b)
        return found

    def cost(self, i: int, j: int, folds: tuple[str, ...] | None, window: int = FOLD_BYTES,
             batches: tuple[int, ...] = ()) -> int | None:
        """Live bytes of ops i..j run as one unfused op (``folds`` None) or a pipeline folding ``folds``."""
        if folds is None:
            return None if i != j or self._must_stream(i) else self.live[i]
        seg = self.segment(i, j, folds, window, batches)
        return None if seg is None else seg[0]

    def _must_stream(self, i: int) -> bool:
        """The image reader is a pipeline when its input can be streamed."""
        op = self.graph.ops[i]
        return row_fusable(op, self.graph) and any(x in self.graph.inputs and self.streamable(x, i, i)
                                       for x in _activation_inputs(op))


def _forced(prefix: _Prefix, given) -> list[tuple[int, int, tuple[str, ...]]]:
    """The given segments ((graph op names), (folded tensors)) where they are contiguous and fusable here."""
    index = {op.name: i for i, op in enumerate(prefix.graph.ops)}
    segs = []
    for names, folds, window, batches in given:
        idx = [index.get(n) for n in names]
        if None in idx or idx != list(range(idx[0], idx[0] + len(idx))) or idx[-1] >= prefix.n:
            continue
        if prefix.cost(idx[0], idx[-1], tuple(folds), window, tuple(batches)) is not None:
            segs.append((idx[0], idx[-1], tuple(folds), window, tuple(batches)))
    for i in range(prefix.n):  # the image reader streams even if the given segmentation has no segment there
        if prefix._must_stream(i) and not any(s[0] <= i <= s[1] for s in segs) and prefix.segment(i, i):
            segs.append((i, i, (), FOLD_BYTES, ()))
    return sorted(segs)


def fuse_rows(graph: Graph, options) -> Graph:
    """Replace chosen segments of the frozen forward prefix by ``mbconv_rows`` ops."""
    mode = getattr(options, "row_fusion", "auto")
    forced = getattr(options, "row_segments", None)
    if mode == "off" and not getattr(options, "stream_input", False):
        return graph
    prefix = _Prefix(graph, options)
    if forced is not None:
        segs = _forced(prefix, forced)
    elif mode == "off":
        segs = [(i, i, (), FOLD_BYTES, ()) for i in range(prefix.n) if prefix._must_stream(i) and prefix.segment(i, i)]
    else:
        segs = [s for s in choose(prefix, mode, MAX_OPS, MAX_FOLDS) if s[2] is not None]
    if not segs:
        return graph
    ops: list[Op] = []
    gone: set[str] = set()
    streams = list(graph.streams)
    start = {seg[0]: seg[1:] for seg in segs}
    k = 0
    while k < len(graph.ops):
        if k not in start:
            ops.append(graph.ops[k])
            k += 1
            continue
        j, folds, window, batches = start[k]
        _, streamed, inplace = prefix.segment(k, j, folds, window, batches)
        seg = list(graph.ops[k:j + 1])
        x = prefix.external_input(k, j)
        op = _fused_op(graph, seg, x, streamed, inplace, folds, window, batches)
        ops.append(op)
        gone.update(internal_of(op))
        if streamed and x not in streams:
            streams.append(x)
        k = j + 1
    return graph.with_ops(ops, tensors={n: t for n, t in graph.tensors.items() if n not in gone},
                          streams=tuple(streams))
