"""Dead-code elimination: keep only what reaches a graph output or an update.

Why: autodiff and the frontend describe more than one program needs. The inference program is the
training program's forward with the logits as its only output: pruning drops the loss, the backward,
the kept-channel copies and every mask output (an optional output nobody reads is removed from its op,
so the op no longer spends the bits). It also drops tensor declarations, constants and parameters no
op uses any more (e.g. the per-channel weight scales once the QAS constants exist), so the Flash
accounting counts only data the program reads. Updates have no outputs: they are roots themselves.
"""

from __future__ import annotations

from dataclasses import replace

from mcutrain.engine.ir import Graph, Op

# op kinds whose outputs after the first (the mask) may be dropped
OPTIONAL_OUTPUTS = ("conv2d", "pointwise_depthwise", "add", "avgpool", "tfl_avgpool", "tfl_maxpool", "tfl_mean")


def prune(graph: Graph, options=None) -> Graph:
    """The graph without ops, optional outputs, tensors and constants that nothing live reads."""
    live = set(graph.outputs)
    kept: list[Op] = []
    for op in reversed(graph.ops):
        if op.outputs and not live.intersection(op.outputs):
            continue
        op = _drop_dead_outputs(op, live)
        kept.append(op)
        live.update(op.inputs)
    ops = tuple(reversed(kept))
    used = set(graph.inputs) | set(graph.outputs) | {n for op in ops for n in op.inputs + op.outputs}
    return graph.with_ops(ops, tensors={n: t for n, t in graph.tensors.items() if n in used},
                          constants={n: a for n, a in graph.constants.items() if n in used},
                          params=tuple(p for p in graph.params if p in used))


def _drop_dead_outputs(op: Op, live: set[str]) -> Op:
    if op.kind not in OPTIONAL_OUTPUTS or len(op.outputs) == 1:
        return op
    outputs = op.outputs[:1] + tuple(o for o in op.outputs[1:] if o in live)
    return op if outputs == op.outputs else replace(op, outputs=outputs)
