"""Tensor lifetimes from a schedule, and the arena buffers the memory planner places.

Why a module of its own: the planner (``mcutrain.engine.memory``) works on plain records and never sees
the IR; this is the one place that decides which tensors live in the arena and for how long.
Conventions (inclusive op indices, TFLite Micro style):
  * arena tensors: graph inputs and every op output. Parameters and constants are NOT in the arena
    (trainable copies have their own SRAM, frozen data stays in Flash), nor are streamed inputs
    (``Graph.streams``: their rows go through the ring in the reading op's scratch);
  * a graph input lives from op 0; a tensor made by op i lives from i; it lives until its last reader,
    and a graph output until the last op (the caller reads it after the program ran);
  * an op marked ``inplace=j`` writes its first output over input j: the two tensors share one
    buffer (a storage root), live for the union of their lifetimes; an in-place depthwise conv also
    needs a scratch buffer of one output channel, a fused pointwise-depthwise op one of the
    expanded channel, a row pipeline (``mbconv_rows``) its ring buffers, a channel-by-channel block
    backward (``mbconv_grad``) a few channels of each gradient (``{op}.scratch``, live at that op only).
Buffer kinds, for reports: input, activation, saved (a forward tensor the backward reads), mask,
gradient, loss, scratch.
"""

from __future__ import annotations

from mcutrain.engine.ir import Graph
from mcutrain.engine.memory import Buffer
from mcutrain.engine.passes.fuse_rows import scratch_size
from mcutrain.engine.passes.inplace import is_inplace_depthwise

__all__ = ["SCRATCH_RULES", "arena_tensors", "buffers", "lifetimes", "scratch_buffers", "scratch_bytes",
           "storage_roots"]


def arena_tensors(graph: Graph) -> list[str]:
    """Tensors that live in the arena, in order of definition."""
    return [n for n in graph.inputs if n not in graph.streams] + [out for op in graph.ops for out in op.outputs]


def lifetimes(graph: Graph) -> dict[str, tuple[int, int]]:
    """Arena tensor -> (first, last) op index, both inclusive."""
    end = max(len(graph.ops) - 1, 0)
    first = {name: 0 for name in graph.inputs if name not in graph.streams}
    first.update({out: i for i, op in enumerate(graph.ops) for out in op.outputs})
    last = dict(first)
    for i, op in enumerate(graph.ops):
        for name in op.inputs:
            if name in last:
                last[name] = max(last[name], i)
    for name in graph.outputs:
        last[name] = end
    return {name: (first[name], last[name]) for name in arena_tensors(graph)}


def storage_roots(graph: Graph) -> dict[str, str]:
    """Arena tensor -> the tensor whose buffer it occupies (itself unless written in place)."""
    root = {name: name for name in arena_tensors(graph)}
    for op in graph.ops:
        j = op.attr("inplace")
        if j is not None:
            root[op.outputs[0]] = root[op.inputs[j]]
    return root


def buffers(graph: Graph) -> tuple[Buffer, ...]:
    """One Buffer per storage root: the largest of its tensors, over the union of their lifetimes."""
    spans, roots = lifetimes(graph), storage_roots(graph)
    kinds = _kinds(graph)
    groups: dict[str, list[str]] = {}
    for name in arena_tensors(graph):
        groups.setdefault(roots[name], []).append(name)
    tensors = tuple(Buffer(root, max(graph.tensor(n).nbytes for n in members),
                           min(spans[n][0] for n in members), max(spans[n][1] for n in members),
                           kinds[root])
                    for root, members in groups.items())
    return tensors + scratch_buffers(graph)


def scratch_buffers(graph: Graph) -> tuple[Buffer, ...]:
    """The scratch an op needs besides its tensors, as a buffer live at that op only."""
    sizes = ((i, op, scratch_bytes(graph, op)) for i, op in enumerate(graph.ops))
    return tuple(Buffer(f"{op.name}.scratch", size, i, i, "scratch") for i, op, size in sizes if size)


def scratch_bytes(graph: Graph, op) -> int:
    """The scratch bytes ``op`` needs besides its tensors (``SCRATCH_RULES``, one rule per kind that has one)."""
    rule = SCRATCH_RULES.get(op.kind)
    return rule(graph, op) if rule is not None else 0


def _depthwise_channel(graph: Graph, op) -> int:
    """An in-place depthwise conv (or its input gradient): one channel of the output, computed aside,
    then copied over its input channel."""
    if not is_inplace_depthwise(op):
        return 0
    out = graph.tensor(op.outputs[0])
    return out.nbytes // out.shape[1]


def _expanded_channel(graph: Graph, op) -> int:
    """A fused pointwise-depthwise op: one channel of the expanded tensor."""
    n, _, h, w = graph.tensor(op.inputs[0]).shape
    return n * h * w


def _row_pipeline(graph: Graph, op) -> int:
    """A row pipeline: its rings, then its folded windows, at the offsets the pass chose."""
    return scratch_size(op)


def _block_backward(graph: Graph, op) -> int:
    """A channel-by-channel block backward: its program's scratch layout (``fused_program``)."""
    return op.attr("program").scratch.total


SCRATCH_RULES = {"conv2d": _depthwise_channel, "conv2d_grad_x": _depthwise_channel,
                 "conv2d_grad_x8": _depthwise_channel,
                 "pointwise_depthwise": _expanded_channel, "mbconv_rows": _row_pipeline,
                 "mbconv_grad": _block_backward}


def _kinds(graph: Graph) -> dict[str, str]:
    """Report kind of each arena tensor: its role, with forward tensors the backward reads as 'saved'."""
    read_by_backward = {n for op in graph.ops if op.phase != "forward" for n in op.inputs}
    kinds = {}
    for name in arena_tensors(graph):
        role = graph.tensor(name).role
        if role in ("input", "label"):
            kinds[name] = "input"
        elif role == "activation" and name in read_by_backward:
            kinds[name] = "saved"
        else:
            kinds[name] = role
    return kinds
