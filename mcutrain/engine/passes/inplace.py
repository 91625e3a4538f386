"""In-place rule: an elementwise op writes its output over an input that dies at that op.

Why: an elementwise op reads element i of its input and writes element i of its output, so when the
input is never read again the output can take its bytes: at that op one buffer is live instead of
two. In the backward this removes one float32 buffer the size of every trained conv's output
(``requant_grad``: g_acc over g_y), of every residual gradient sum (``grad_sum``) and of the add's
first gradient (``add_grad``); in the forward the residual ``add`` writes over a dying input.
Legal only when: the input is made by an op of this graph (not a caller's input, constant or
parameter), is not a graph output, is last read by this op (and read once by it), and has the output's
shape and dtype. The op gets the attribute ``inplace=i``; lifetimes then give both tensors one buffer.
"""

from __future__ import annotations

from dataclasses import replace

from mcutrain.engine.ir import Graph, Op, make_attrs

# op kind -> input positions its first output may overwrite (None: any input)
INPLACE_INPUTS: dict[str, tuple[int, ...] | None] = {
    "requant_grad": (0,),
    "grad_sum": None,
    "add_grad": (0,),
    "add": (1, 0),
}


def inplace(graph: Graph, options=None) -> Graph:
    """Mark every elementwise op whose output can overwrite a dying input."""
    last_read = {name: i for i, op in enumerate(graph.ops) for name in op.inputs}
    made = {out for op in graph.ops for out in op.outputs}
    ops = [_mark(graph, i, op, last_read, made) for i, op in enumerate(graph.ops)]
    return graph.with_ops(ops)


def _mark(graph: Graph, index: int, op: Op, last_read: dict[str, int], made: set[str]) -> Op:
    if op.kind not in INPLACE_INPUTS or op.attr("inplace") is not None or not op.outputs:
        return op
    positions = INPLACE_INPUTS[op.kind]
    out = graph.tensor(op.outputs[0])
    for j in positions if positions is not None else range(len(op.inputs)):
        name = op.inputs[j]
        t = graph.tensor(name)
        if (name in made and name not in graph.outputs and last_read[name] == index
                and op.inputs.count(name) == 1 and (t.shape, t.dtype) == (out.shape, out.dtype)):
            return replace(op, attrs=make_attrs(**dict(op.attrs), inplace=j))
    return op
