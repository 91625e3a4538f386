"""Fusion: a weight gradient and its update become one op, so the gradient is never stored.

Why: after ``reorder`` a weight gradient dies right after it is complete, but it is still whole for a
moment, in float32: 4 bytes per trained weight element (a 384x64 pointwise conv: 96 KB, more than
the int8 weight it updates). Each element of the gradient is one dot product and its update uses
only that element (QAS factor of its row, stochastic rounding with the counter-based RNG at its own
index), so a kernel can compute an element and apply it at once: no buffer at all.
Legal where the gradient (made by ``conv2d_grad_w`` or ``linear_grad_w``) is read by its
``update_weight`` only, and no op between the two reads the parameter (moving the update up to the
gradient op must not let any reader of the OLD weight see the new one). The fused op takes the
update's place in the update phase and both ops' attributes; the numbers are exactly the pair's.
The integer backward's pairs (``conv2d_grad_w8`` / ``linear_grad_w8`` + ``update_weight8``) fuse the
same way: an int32 gradient element is final on its own (its exponent is g_acc's, known before).
"""

from __future__ import annotations

from mcutrain.engine.ir import Graph, Op, make_attrs

FUSED_KINDS = {"conv2d_grad_w": "conv2d_grad_w_update", "linear_grad_w": "linear_grad_w_update",
               # the integer backward (each element of an int32 parameter gradient is final on its own too)
               "conv2d_grad_w8": "conv2d_grad_w_update8", "linear_grad_w8": "linear_grad_w_update8"}
UPDATE_OF = {"conv2d_grad_w": "update_weight", "linear_grad_w": "update_weight",
             "conv2d_grad_w8": "update_weight8", "linear_grad_w8": "update_weight8"}


def fuse_updates(graph: Graph, options=None) -> Graph:
    """Replace each fusable (weight gradient op, update_weight) pair by one fused op at the first's place."""
    ops = list(graph.ops)
    producer = {out: i for i, op in enumerate(ops) for out in op.outputs}
    readers: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        for name in op.inputs:
            readers.setdefault(name, []).append(i)
    dropped: set[int] = set()
    gone: set[str] = set()
    for i, update in enumerate(ops):
        j = producer.get(update.inputs[1]) if update.kind in ("update_weight", "update_weight8") else None
        if j is None or not _fusable(ops, j, i, readers):
            continue
        ops[j] = _fused(ops[j], update)
        dropped.add(i)
        gone.add(update.inputs[1])
    kept = [op for i, op in enumerate(ops) if i not in dropped]
    return graph.with_ops(kept, tensors={n: t for n, t in graph.tensors.items() if n not in gone})


def _fusable(ops: list[Op], j: int, i: int, readers: dict[str, list[int]]) -> bool:
    grad_op, update = ops[j], ops[i]
    param = update.inputs[0]
    return (grad_op.kind in FUSED_KINDS and UPDATE_OF[grad_op.kind] == update.kind and readers[update.inputs[1]] == [i]
            and not any(param in ops[k].inputs for k in range(j + 1, i)))


def _fused(grad_op: Op, update: Op) -> Op:
    """update(p, g, qas) of g = grad(args...) -> fused(p, args..., qas) with both ops' attributes."""
    param, _, qas = update.inputs
    attrs = make_attrs(**dict(grad_op.attrs), **dict(update.attrs))
    return Op(update.name, FUSED_KINDS[grad_op.kind], (param,) + grad_op.inputs + (qas,), (), attrs, "update")
