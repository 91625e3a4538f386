"""In-place rule: an op writes its output over an input that dies at that op.

Why: when an input is never read again, the output can take its bytes, so at that op one buffer is
live instead of two. Two kinds of op allow it:
  * elementwise ops read element i and write element i: ``requant_grad`` (g_acc over g_y: one float32
    buffer the size of every trained conv's output), ``grad_sum`` (a residual's gradient sum),
    ``add_grad`` (its first gradient) and the forward residual ``add`` (over a dying input);
  * depthwise convs (TinyEngine's in-place depthwise): output channel c depends on input channel c
    only, so channel by channel the output goes over the input through a one-channel scratch buffer
    (``lifetimes`` reserves it: one output channel, live at that op). With stride 2 the smaller output
    channel c lands on input bytes of channels <= c, all consumed by then. In the frozen,
    high-resolution prefix this removes one of the two big tensors of every depthwise step; in the
    backward the same holds for the depthwise input gradient (``conv2d_grad_x`` with groups > 1,
    stride 1: g_x over g_acc, when g_acc dies there, i.e. the weight is frozen);
  * a reshape (and its gradient) that keeps the element order is a view: its output takes its input's
    bytes and no kernel runs (a channels-last flatten of H*W > 1 positions permutes: a copy);
  * accumulating ops add their terms into an input one after the other: a 1x1 ``conv2d_grad_x``
    with ``init`` (a residual fan-out's total over the skip branch's gradient).
Legal only when the input is made by an op of this graph (not a caller's input, constant or
parameter), is not a graph output, is last read by this op (and read once by it), has the output's
dtype, and is as big (elementwise: the same shape; depthwise: at least the output's bytes).
The op gets the attribute ``inplace=i``; lifetimes then give both tensors one buffer.
"""

from __future__ import annotations

from dataclasses import replace

from mcutrain.engine.ir import Graph, Op, TensorInfo, make_attrs
from mcutrain.engine.ops import reshape_permutes

# op kind -> alternatives (input positions its first output may overwrite, None: any; how the bytes must fit)
INPLACE_RULES: dict[str, tuple[tuple[tuple[int, ...] | None, str], ...]] = {
    "requant_grad": (((0,), "elementwise"),),
    "grad_sum": ((None, "elementwise"),),
    "add_grad": (((0,), "elementwise"),),
    "add": (((1, 0), "elementwise"),),
    "conv2d": (((0,), "depthwise"),),
    "conv2d_grad_x": (((2,), "elementwise"), ((0,), "depthwise")),
    "reshape": (((0,), "view"),),
    "reshape_grad": (((0,), "view"),),
    # the integer backward: the same rules (a kernel that normalizes finds the peak before it writes)
    "requant_grad8": (((0,), "elementwise"),),
    "grad_sum8": ((None, "elementwise"),),
    "add_grad8": (((0,), "elementwise"),),
    "conv2d_grad_x8": (((2,), "elementwise"), ((0,), "depthwise")),
    "reshape_grad8": (((0,), "view"),),
}


def inplace(graph: Graph, options=None) -> Graph:
    """Mark every op whose first output can overwrite a dying input."""
    last_read = {name: i for i, op in enumerate(graph.ops) for name in op.inputs}
    made = {out for op in graph.ops for out in op.outputs}
    ops = [_mark(graph, i, op, last_read, made) for i, op in enumerate(graph.ops)]
    return graph.with_ops(ops)


def is_inplace_depthwise(op: Op) -> bool:
    """A depthwise conv (or its input gradient) marked in place: it needs a one-channel scratch."""
    return (op.kind in ("conv2d", "conv2d_grad_x", "conv2d_grad_x8") and op.attr("inplace") == 0
            and op.attr("groups", 1) > 1)


def _fits(how: str, op: Op, src: TensorInfo, out: TensorInfo) -> bool:
    if src.dtype != out.dtype:
        return False
    if how == "elementwise":
        return src.shape == out.shape
    if how == "view":
        return src.nbytes == out.nbytes and not reshape_permutes(op, op.attr("input_shape") or src.shape)
    return op.attr("groups", 1) > 1 and out.nbytes <= src.nbytes


def _mark(graph: Graph, index: int, op: Op, last_read: dict[str, int], made: set[str]) -> Op:
    if op.kind not in INPLACE_RULES or op.attr("inplace") is not None or not op.outputs:
        return op
    out = graph.tensor(op.outputs[0])
    for positions, how in INPLACE_RULES[op.kind]:
        for j in positions if positions is not None else range(len(op.inputs)):
            if j >= len(op.inputs):
                continue
            name = op.inputs[j]
            if (name in made and name not in graph.outputs and last_read[name] == index
                    and op.inputs.count(name) == 1 and _fits(how, op, graph.tensor(name), out)):
                return replace(op, attrs=make_attrs(**dict(op.attrs), inplace=j))
    return op
