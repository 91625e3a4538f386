"""Operator reordering: run each update as soon as it is legal, so its gradient buffer dies at once.

Why: a weight gradient is as big as the trained part of the weight (float32); kept until the end of
the backward, all of them would be live together. Applied in place right after the gradient is
complete, each dies immediately (the paper's in-place update + operator reordering).
"As soon as legal" respects both hazards on the parameter:
  read-after-write   the update needs its complete gradient (and its other inputs);
  write-after-read   every op that reads the OLD value must run first: the forward op that used the
                     weight, and the backward's conv2d_grad_x / linear_grad_x, which multiply the
                     output gradient by the same (old) weight. Updating a weight before its input
                     gradient is computed would silently mix old and new weights.
So each update goes right after max(producer of its gradient, last op reading its parameter);
updates ready at the same op keep their relative order. Nothing else moves.
"""

from __future__ import annotations

from mcutrain.engine.ir import Graph, Op

def reorder(graph: Graph, options=None) -> Graph:
    """Each update moved to right after the op at which it becomes legal."""
    body = [op for op in graph.ops if op.phase != "update"]
    last_read, last_made = _last_uses(body)
    after: dict[int, list[Op]] = {}
    for update in (op for op in graph.ops if op.phase == "update"):
        ready = max([last_read.get(update.inputs[0], -1)] + [last_made.get(n, -1) for n in update.inputs])
        after.setdefault(ready, []).append(update)
    ops = [u for u in after.get(-1, [])]
    for i, op in enumerate(body):
        ops.append(op)
        ops.extend(after.get(i, []))
    return graph.with_ops(ops)


def _last_uses(body: list[Op]) -> tuple[dict[str, int], dict[str, int]]:
    """For each tensor, the last op of ``body`` reading it and the last making it: one pass, so that
    placing every update costs O(ops + updates), not O(ops x updates) (``ready_index`` per update)."""
    last_read: dict[str, int] = {}
    last_made: dict[str, int] = {}
    for i, op in enumerate(body):
        for n in op.inputs:
            last_read[n] = i
        for n in op.outputs:
            last_made[n] = i
    return last_read, last_made


def ready_index(body: list[Op], update: Op) -> int:
    """The last op of ``body`` that must precede ``update``: it makes one of the update's inputs
    (read-after-write) or reads the parameter's old value (write-after-read); -1 if none.
    An update-phase op writes its first input, the parameter. (The definition ``reorder`` computes
    for all updates at once; the tests compare the two.)"""
    param = update.inputs[0]
    last = -1
    for i, op in enumerate(body):
        if param in op.inputs or set(update.inputs).intersection(op.outputs):
            last = i
    return last
