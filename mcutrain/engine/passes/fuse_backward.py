"""Channel-by-channel backward of an inverted-residual block: the expanded gradients are never whole.

Why: once the forward prefix is cheap, the training peak is the backward through the expanded
tensors of the trained blocks, in float32 (MCUNet block 10 at 128x128: g_acc of the stride-2
depthwise conv 240x4x4, its input gradient 240x8x8 = 60 KB, then the expand conv's g_acc as big).
Every op between the project conv's input gradient and the expand conv's input gradient is
separable along the expanded channels ``c``: channel c of the project conv's input gradient is
``sum_o w2[o, c] g[o]``; the clamp masks, multipliers, bias gradients, the depthwise conv (both
gradients) and the expand conv's weight gradient (row c) and bias gradient need channel c only;
the expand conv's input gradient ``sum_c w1[c, i] g1[c]`` is accumulated channel by channel into
its output. So one op can run the whole chain one expanded channel at a time, with a scratch of one
channel of each gradient, applying each update as soon as its channel is complete.

The chain, found from its head (a 1x1 ``conv2d_grad_x`` whose output gradient has E channels):
  head -> requant_grad -> [conv2d_grad_b [-> update_bias]] [weight gradient (+ update)]
       -> [depthwise conv2d_grad_x -> requant_grad -> ... (the same again)] -> [1x1 conv2d_grad_x: tail]
Weight gradients qualify when their rows are the E channels (depthwise: channel c; 1x1: row c).
Updates join the chain when they run inside it or right after it (after ``reorder``); otherwise
(no reorder) the gradients stay whole outputs and the updates stay where they were. Other ops
between the chain's ops (e.g. the project conv's own weight update, which waits for the head to read
the old weight) move after the fused op when they depend on it, else stay before; a chain whose
ops cannot be separated that way is left alone.

The fused op ``mbconv_grad`` takes the place of the chain's last op:
  inputs   every tensor the chain reads from outside (gradient, masks, weights, saved activations,
           multipliers, QAS factors), in order of first use
  outputs  chain tensors read outside it (the tail's input gradient first; bias / weight gradients
           when their updates are elsewhere), written channel by channel (the tail's: accumulated,
           over its ``init`` operand, the skip branch's gradient, when that dies here: ``inplace``)
  attrs    program  the chain lowered once (``fused_program.GradProgram``): typed steps with their
                    operands resolved (the chain per expanded channel; ``pre`` / ``post`` over the
                    channels of a lazily computed head input: the last block's, the average pool's
                    gradient spread over the positions and requantized, computed as needed from the
                    pooled vector, ``lazy``; the project conv's bias gradient + update run first,
                    its weight gradient + update last, after the head read the old weight), the
                    recomputed forward (the expand / depthwise convs whose masks are recomputed per
                    channel from the block input when the expand conv's weight gradient keeps it
                    whole anyway: the forward then outputs neither mask), and the scratch layout
                    (``group`` channels of each gradient it materialises, rows of the lazy source)
           internal TensorInfo of each chain tensor that is never whole
           channels E;  writes the parameters the fused updates write
Numbers: exactly the unfused kernels' (per channel they are the same operations; the 1x1 input
gradient is summed in float32 over the channels in ascending order in both, see ``kernels``).
"""

from __future__ import annotations

from bisect import insort

from mcutrain.engine.ir import Graph, Op, TensorInfo, make_attrs
from mcutrain.engine.fused_program import lower_grad, program_of
from mcutrain.engine.ops import has_general_geometry, is_pointwise_conv

KIND = "mbconv_grad"

__all__ = ["KIND", "all_parts", "fuse_backward", "internal_of", "parts_of", "update_ops"]

UPDATE_KINDS = ("update_weight", "update_bias", "conv2d_grad_w_update", "linear_grad_w_update")


def parts_of(op: Op) -> tuple[Op, ...]:
    """The backward / update ops an ``mbconv_grad`` op runs for each channel, in order."""
    return program_of(op).parts


def update_ops(graph: Graph) -> list[Op]:
    """Every update the program applies: update-phase ops and the updates inside fused block
    backwards (each writes its first input, the parameter, in its ``kept_shape`` slice)."""
    found = []
    for op in graph.ops:
        if op.kind == KIND:
            found.extend(p for p in all_parts(op) if p.kind in UPDATE_KINDS)
        elif op.phase == "update":
            found.append(op)
    return found


def all_parts(op: Op) -> tuple[Op, ...]:
    """Every op an ``mbconv_grad`` op stands for: lazily computed source, pre phase, chain, post phase."""
    return program_of(op).all_ops


def internal_of(op: Op) -> dict[str, TensorInfo]:
    return {t.name: t for t in op.attr("internal")}


def is_pointwise(graph: Graph, op: Op) -> bool:
    """A conv gradient op of a 1x1, stride-1, groups-1 conv (its weight is its ``w`` operand)."""
    if op.kind in ("conv2d_grad_w", "conv2d_grad_w_update"):
        shape = op.attr("weight_shape")
    else:
        shape = graph.tensor(op.inputs[1]).shape
    return not has_general_geometry(op) and is_pointwise_conv(op, shape)


def block_fusable(graph: Graph, parts) -> bool:
    """Whether a block's backward parts may run channel by channel: only convs of the zoo's geometry
    (the fused kernels' tap loops assume it); a chain with any other conv stays unfused."""
    return not any(has_general_geometry(graph.ops[i]) for i in parts)


def _grad_input(op: Op) -> str:
    """The output gradient a weight-gradient op reads (conv2d_grad_w(x, g), ..._update(w, x, g, qas))."""
    return op.inputs[2] if op.kind == "conv2d_grad_w_update" else op.inputs[1]


def _writes(op: Op) -> set[str]:
    if op.kind == KIND:
        return set(op.attr("writes"))
    return {op.inputs[0]} if op.phase == "update" else set()


def _depends(a: Op, b: Op) -> bool:
    """b (later) must stay after a: b reads what a makes or writes, or writes what a reads or writes."""
    wa, wb = _writes(a), _writes(b)
    return bool((set(a.outputs) | wa) & set(b.inputs) or wb & (set(a.inputs) | wa))


class _Chain:
    def __init__(self, graph: Graph, readers: dict[str, list[int]], producers: dict[str, int]):
        self.g, self.readers, self.producers = graph, readers, producers

    def source(self, h: int) -> tuple[list[int], list[int], list[int]] | None:
        """When the head's input is the requantized gradient of the average pool (a per-channel value
        spread over the positions, times the project conv's mask): (lazy ops: avgpool_grad,
        requant_grad; pre: its bias gradient and update; post: its weight gradient and update).
        The fused op then computes that input from the pooled gradient as it goes: never whole."""
        g, ops = self.g, self.g.ops
        src = ops[h].inputs[0]
        r = self.producers.get(src)
        if r is None or ops[r].kind != "requant_grad" or src in g.outputs:
            return None
        spread = ops[r].inputs[0]
        p = self.producers.get(spread)
        if p is None or ops[p].kind != "avgpool_grad" or self.readers.get(spread) != [r] or spread in g.outputs:
            return None
        channels = g.tensor(src).shape[1]
        pre, post = [], []
        for k in self.readers.get(src, []):
            op = ops[k]
            if k == h:
                continue
            if op.kind == "conv2d_grad_b" and op.inputs[0] == src:
                pre += [k] + self._updates(op.outputs[0], "update_bias")
            elif (op.kind in ("conv2d_grad_w", "conv2d_grad_w_update") and is_pointwise(g, op)
                  and op.attr("weight_shape")[0] == channels and _grad_input(op) == src):
                post += [k] + (self._updates(op.outputs[0], "update_weight") if op.kind == "conv2d_grad_w" else [])
            else:
                return None
        if not block_fusable(g, pre + post):
            return None
        return [p, r], pre, post

    def find(self, h: int) -> tuple[list[int], int] | None:
        """Indices of the chain's ops starting at head ``h`` (unsorted), and E; None if no chain."""
        g, ops = self.g, self.g.ops
        head = ops[h]
        if head.kind != "conv2d_grad_x" or not is_pointwise(g, head):
            return None
        channels = g.tensor(head.outputs[0]).shape[1]
        parts, cur = [h], head.outputs[0]
        while cur is not None:
            rs = self.readers.get(cur, [])
            if cur in g.outputs or len(rs) != 1 or ops[rs[0]].kind != "requant_grad" or ops[rs[0]].inputs[0] != cur:
                return None
            parts.append(rs[0])
            acc, cur = ops[rs[0]].outputs[0], None
            if acc in g.outputs:
                return None
            for r in self.readers.get(acc, []):
                op = ops[r]
                if op.kind == "conv2d_grad_b" and op.inputs[0] == acc:
                    parts.append(r)
                    parts.extend(self._updates(op.outputs[0], "update_bias"))
                elif op.kind in ("conv2d_grad_w", "conv2d_grad_w_update") and _grad_input(op) == acc:
                    rows_are_channels = (op.attr("groups") == channels
                                         or (is_pointwise(g, op) and op.attr("weight_shape")[0] == channels))
                    if not rows_are_channels:
                        return None
                    parts.append(r)
                    if op.kind == "conv2d_grad_w":
                        parts.extend(self._updates(op.outputs[0], "update_weight"))
                elif op.kind == "conv2d_grad_x" and op.inputs[0] == acc:
                    if op.attr("groups") == channels and channels > 1:
                        parts.append(r)
                        cur = op.outputs[0]
                    elif is_pointwise(g, op):
                        parts.append(r)  # the tail: accumulated over the channels
                    else:
                        return None
                else:
                    return None
        if not block_fusable(g, parts):
            return None
        return parts, channels

    def _updates(self, grad: str, kind: str) -> list[int]:
        rs = self.readers.get(grad, [])
        if len(rs) == 1 and self.g.ops[rs[0]].kind == kind and self.g.ops[rs[0]].inputs[1] == grad:
            return rs
        return []


def _split(ops: tuple[Op, ...], parts: set[int]) -> tuple[list[int], list[int]] | None:
    """Ops between the chain's first and last op that are not in it: (stay before, move after),
    or None if some op cannot go either way."""
    lo, hi = min(parts), max(parts)
    before, after = [], []
    for k in range(lo, hi + 1):
        if k in parts:
            continue
        if any(_depends(ops[p], ops[k]) for p in parts if p < k) or any(_depends(ops[a], ops[k]) for a in after):
            if any(_depends(ops[k], ops[p]) for p in parts if p > k):
                return None
            after.append(k)
        else:
            before.append(k)
    return before, after


def _trim_updates(ops: tuple[Op, ...], parts: list[int]) -> list[int]:
    """Updates join the chain when they sit inside it or in the run of updates right after it."""
    core = [p for p in parts if ops[p].kind not in ("update_bias", "update_weight")]
    end = max(core)
    k = end + 1
    while k < len(ops) and k in parts:
        end, k = k, k + 1
    return [p for p in parts if p <= end]


def _fused(graph: Graph, parts: list[int], channels: int,
           lazy: tuple[list[int], list[int], list[int]] | None = None,
           readers: dict[str, list[int]] | None = None,
           producers: dict[str, int] | None = None) -> tuple[Op, set[str], dict[int, Op]]:
    """The fused op, the tensors that leave the graph, and forward ops to replace (index -> op).
    ``readers`` (tensor -> indices of the ops reading it, ``_readers``) and ``producers`` (tensor ->
    index of the op making it), when the caller has them: a fusion then costs its own ops."""
    ops = graph.ops
    readers = _readers(graph) if readers is None else readers
    producers = {o: i for i, op in enumerate(ops) for o in op.outputs} if producers is None else producers
    members = [ops[p] for p in sorted(parts)]
    source, pre, post = ([ops[k] for k in group] for group in (lazy or ([], [], [])))
    made = [o for op in source + pre + members + post for o in op.outputs]
    inside = set(parts) | {k for group in (lazy or ()) for k in group}
    outside_readers = ({o for o in made for r in readers.get(o, []) if r not in inside}
                       | (set(made) & set(graph.outputs)))
    tail = next((op for op in members if op.kind == "conv2d_grad_x" and op.inputs[0] in made
                 and op.attr("groups") == 1), None)
    first = [tail.outputs[0]] if tail is not None and tail.outputs[0] in outside_readers else []
    outputs = tuple(first + [o for o in made if o in outside_readers and o not in first])
    internal = [graph.tensor(o) for o in made if o not in outside_readers]
    recompute, edits, masks = _recompute(graph, members, inside, readers)
    forward = tuple(f.name for f in edits.values())  # (expand, depthwise): ``_recompute`` makes them in order
    recomputed = {o for r in recompute for o in r.outputs}
    for r in recompute:  # the recomputed output (int8, the forward output's shape: its mask's) and the mask
        mask = graph.tensor(r.outputs[1])
        internal += [TensorInfo(r.outputs[0], mask.shape, "int8", "activation"), mask]
    inputs: list[str] = []
    for op in source + pre + list(recompute) + members + post:
        for n in op.inputs:
            if n not in made and n not in masks and n not in recomputed and n not in inputs:
                inputs.append(n)
    writes = tuple(sorted({w for op in pre + members + post for w in _writes(op)}))
    shapes = {t.name: t for t in internal}
    program = lower_grad(lambda n: shapes[n] if n in shapes else graph.tensor(n), channels, members, source, pre,
                         post, recompute, forward, outputs)
    name = f"{(source + members)[0].name}..{(members + post)[-1].name}"
    extra = {}
    if first and len(tail.inputs) == 3:  # the tail adds into ``init``: write over it if it dies here
        init = tail.inputs[2]
        made_by_op = init in producers
        if made_by_op and init not in graph.outputs and set(readers.get(init, [])) <= inside:
            extra["inplace"] = inputs.index(init)
    attrs = make_attrs(internal=tuple(internal), channels=channels, writes=writes, program=program, **extra)
    op = Op(name, KIND, tuple(inputs), outputs, attrs, "backward" if outputs else "update")
    return op, {t.name for t in internal}, edits


def _recompute(graph: Graph, members: list[Op], inside: set[int],
               readers: dict[str, list[int]]) -> tuple[tuple[Op, ...], dict[int, Op], set[str]]:
    """Masks of the block's expand and depthwise convs recomputed per channel from the block input,
    when that input is whole in the arena anyway (the expand conv's weight gradient reads all of it):
    the forward then keeps neither mask. Returns (recompute ops, forward ops to replace, masks).
    The forward convs are looked for among the readers of the tensors they read (the first in graph
    order, as a scan of the whole graph finds), so a block costs its own ops, not the graph's."""
    weight = next((p for p in members if p.kind in ("conv2d_grad_w", "conv2d_grad_w_update")
                   and is_pointwise(graph, p)), None)
    if weight is None:
        return (), {}, set()
    x = weight.inputs[1] if weight.kind == "conv2d_grad_w_update" else weight.inputs[0]
    chain_masks = {p.inputs[1] for p in members if p.kind == "requant_grad"}
    ops = graph.ops
    index: dict[str, int] = {}
    expand = _first_reader(ops, readers, x, lambda op: (
        op.phase == "forward" and op.kind == "conv2d" and op.inputs[0] == x and len(op.outputs) == 2
        and op.outputs[1] in chain_masks and op.attr("groups") == 1), index)
    if expand is None:
        return (), {}, set()
    depthwise = _first_reader(ops, readers, expand.outputs[0], lambda op: (
        op.phase == "forward" and op.kind == "conv2d" and len(op.outputs) == 2
        and op.inputs[0] == expand.outputs[0] and op.outputs[1] in chain_masks), index)
    forward = [expand] + ([depthwise] if depthwise is not None else [])
    if any(set(readers.get(f.outputs[1], [])) - inside for f in forward):
        return (), {}, set()
    y = f"{expand.outputs[0]}.recomputed"
    clean = lambda op: tuple((k, v) for k, v in op.attrs if k != "inplace")  # noqa: E731
    recompute = [Op(f"{expand.name}.recompute", "conv2d", expand.inputs, (y, expand.outputs[1]), clean(expand))]
    if depthwise is not None:
        recompute.append(Op(f"{depthwise.name}.recompute", "conv2d", (y,) + depthwise.inputs[1:],
                            (f"{depthwise.outputs[0]}.recomputed", depthwise.outputs[1]), clean(depthwise)))
    edits = {index[f.name]: Op(f.name, f.kind, f.inputs, f.outputs[:1], f.attrs, f.phase) for f in forward}
    return tuple(recompute), edits, {f.outputs[1] for f in forward}


def _first_reader(ops, readers: dict[str, list[int]], name: str, test, index: dict[str, int]) -> Op | None:
    """The first op in graph order reading ``name`` that passes ``test``; its index goes to ``index``."""
    for i in sorted(set(readers.get(name, []))):
        if test(ops[i]):
            index[ops[i].name] = i
            return ops[i]
    return None


def _readers(graph: Graph) -> dict[str, list[int]]:
    """Tensor -> indices of the ops reading it, ascending (an op reading it twice: listed twice)."""
    readers: dict[str, list[int]] = {}
    for i, op in enumerate(graph.ops):
        for n in op.inputs:
            readers.setdefault(n, []).append(i)
    return readers


class _Index:
    """Readers and producers of the ops of a graph being fused, kept up to date across fusions.

    ``readers.get(t)`` / ``producers.get(t)`` answer as ``_readers`` / a producer map of the current
    graph would (absolute op indices, ascending, an op reading twice listed twice). A fusion replaces
    ops ``lo..hi`` with a different number of ops, which shifts every later index; rebuilding the
    maps after each fusion made the pass quadratic. So ops before ``start`` (never moved again: later
    fusions lie after it) are keyed by their index, and the others by their distance from the end of
    the graph (``index - len``), which a fusion before them does not change. Each fusion then costs
    the ops it replaces plus the ops the search passed over since the last one."""

    def __init__(self, ops):
        self.n, self.start = len(ops), 0
        self.front_r: dict[str, list[int]] = {}
        self.front_p: dict[str, int] = {}
        self.back_r: dict[str, list[int]] = {}
        self.back_p: dict[str, int] = {}
        for i, op in enumerate(ops):
            self._add(op, i)
        self.readers, self.producers = _View(self, "r"), _View(self, "p")

    def _maps(self, i: int):
        return (self.front_r, self.front_p, i) if i < self.start else (self.back_r, self.back_p, i - self.n)

    def _add(self, op: Op, i: int) -> None:
        readers, producers, key = self._maps(i)
        for name in op.inputs:
            insort(readers.setdefault(name, []), key)
        for name in op.outputs:
            producers[name] = key

    def _remove(self, op: Op, i: int) -> None:
        readers, producers, key = self._maps(i)
        for name in op.inputs:
            readers[name].remove(key)
        for name in op.outputs:
            if producers.get(name) == key:
                del producers[name]

    def fused(self, old: tuple[Op, ...], new: list[Op], lo: int, hi: int, edits: dict[int, Op]) -> None:
        """``old`` became ``new``: ops ``lo..hi`` replaced (``new[lo:len(new) - (len(old) - hi - 1)]``)
        and forward ops ``edits`` changed in place."""
        if lo < self.start:  # a fusion before the settled ops: start over (does not happen in practice)
            self.__init__(new)
            return
        settling = range(self.start, lo)  # the ops the search passed over: from now on keyed by index
        for i in settling:
            self._remove(old[i], i)
        self.start = lo
        for i in settling:
            self._add(old[i], i)
        for i, op in edits.items():
            self._remove(old[i], i)
            self._add(op, i)
        for i in range(lo, hi + 1):
            self._remove(edits.get(i, old[i]), i)
        self.n = len(new)  # the ops after the replaced ones keep their keys: index - len is unchanged
        for i in range(lo, len(new) - (len(old) - hi - 1)):
            self._add(new[i], i)


class _View:
    """``readers`` or ``producers`` of an ``_Index`` as the dict-like ``_Chain`` and ``_fused`` read."""

    def __init__(self, index: _Index, what: str):
        self.index, self.what = index, what

    def get(self, name: str, default=None):
        x = self.index
        if self.what == "r":
            front, back = x.front_r.get(name, ()), x.back_r.get(name, ())
            if not front and not back:
                return default
            return list(front) + [x.n + k for k in back]
        if name in x.front_p:
            return x.front_p[name]
        return x.n + x.back_p[name] if name in x.back_p else default

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None


def fuse_backward(graph: Graph, options=None) -> Graph:
    """Replace each channel-separable backward chain (see the module doc) by one ``mbconv_grad`` op.

    Chains are fused one at a time, first head first. After a fusion the search goes on from the
    start of the replaced ops, not from the top: a head before them was tried on the graph before
    the fusion and failed, and a fusion changes only its own block's ops and tensors (and drops its
    own forward convs' mask outputs), which no earlier head's chain reads. Restarting from the top
    made the pass quadratic in the number of blocks."""
    if options is not None and getattr(options, "backward", "float32") == "int8":
        return graph  # v1 of the integer backward: not fused (a block's normalize needs every channel first)
    draft = _Draft(graph.ops, dict(graph.tensors), graph.outputs)
    start, index, fused_any = 0, _Index(graph.ops), False
    while True:
        start = _fuse_one(draft, start, index)
        if start is None:
            return graph.with_ops(draft.ops, tensors=draft.tensors) if fused_any else graph
        fused_any = True


class _Draft:
    """The graph while chains are fused into it: ops and tensors change in place, and the ``Graph``
    (whose construction copies every table) is built once at the end, not once per fusion."""

    def __init__(self, ops: tuple[Op, ...], tensors: dict[str, TensorInfo], outputs: tuple[str, ...]):
        self.ops, self.tensors, self.outputs = ops, tensors, outputs

    def tensor(self, name: str) -> TensorInfo:
        return self.tensors[name]


def _fuse_one(graph: _Draft, start: int, index: _Index) -> int | None:
    """Fuse the first fusable chain whose head is at or after ``start`` into ``graph`` (and bring
    ``index``, its readers and producers, up to date); return the index where the replaced ops
    began, or None when no chain there can be fused."""
    ops = graph.ops
    readers, producers = index.readers, index.producers
    chains = _Chain(graph, readers, producers)
    for h in range(start, len(ops)):
        found = chains.find(h)
        if found is None:
            continue
        parts, channels = found
        source = chains.source(h)
        for candidate in (_trim_updates(ops, parts),
                          [p for p in parts if ops[p].kind not in ("update_bias", "update_weight")]):
            if min(candidate) != h or any(ops[p].kind == "conv2d_grad_w_update" for p in set(parts) - set(candidate)):
                continue
            for lazy in ([source] if source is not None else []) + [None]:
                extra = [] if lazy is None else [k for group in lazy for k in group]
                split = _split(ops, set(candidate) | set(extra))
                if split is not None:
                    break
            if split is None:
                continue
            before, after = split
            op_new, gone, edits = _fused(graph, candidate, channels, lazy, readers, producers)
            lo, hi = min(candidate + extra), max(candidate + extra)
            edited = list(ops)
            for i, op in edits.items():
                edited[i] = op
            new_ops = (edited[:lo] + [edited[k] for k in before] + [op_new] + [edited[k] for k in after]
                       + edited[hi + 1:])
            for name in gone:
                graph.tensors.pop(name, None)
            index.fused(ops, new_ops, lo, hi, edits)
            graph.ops = tuple(new_ops)
            return lo
    return None
