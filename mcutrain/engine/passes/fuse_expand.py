"""Fusion: a pointwise expand conv and the depthwise conv it feeds become one op.

Why: the expanded tensor of an inverted-residual block is the biggest tensor of the network (MbV2
block 1 at 128x128: 64x64x48 = 192 KB) and, in the frozen prefix, nothing but the depthwise conv
reads it. Computed one expanded channel at a time (pointwise channel c into a one-channel scratch,
then depthwise channel c from it: channel c of a depthwise conv needs channel c only), it is never
whole: the block then needs its input, one channel and the depthwise output (MCUNetV2 / TinyEngine's
trick for the early, high-resolution blocks, DESIGN.md section 6). ``lifetimes`` reserves the
scratch (H*W bytes).
Legal when the expand conv (1x1, stride 1, groups 1) has a single output (no mask: it is not trained,
the backward does not pass through its clamp), that output is read by exactly one depthwise conv and
is not a graph output, and no update writes the expand conv's parameters. The fused op
``pointwise_depthwise`` takes the depthwise conv's place, outputs and attributes, and the expand
conv's attributes prefixed ``expand_``; the numbers are exactly the two convs'.
"""

from __future__ import annotations

from mcutrain.engine.ir import Graph, Op, make_attrs
from mcutrain.engine.ops import has_general_geometry

PREFIX = "expand_"


def fuse_expand(graph: Graph, options=None) -> Graph:
    """Replace each fusable (pointwise expand, depthwise) pair by one ``pointwise_depthwise`` op."""
    readers: dict[str, list[int]] = {}
    for i, op in enumerate(graph.ops):
        for name in op.inputs:
            readers.setdefault(name, []).append(i)
    written = {op.inputs[0] for op in graph.ops if op.phase == "update"}
    ops: list[Op | None] = list(graph.ops)
    gone: set[str] = set()
    for i, expand in enumerate(graph.ops):
        if not _is_plain_expand(expand, graph, written):
            continue
        uses = readers.get(expand.outputs[0], [])
        if len(uses) == 1 and _is_depthwise_of(graph.ops[uses[0]], expand.outputs[0]):
            ops[uses[0]] = _fused(expand, graph.ops[uses[0]])
            ops[i] = None
            gone.add(expand.outputs[0])
    return graph.with_ops([op for op in ops if op is not None],
                          tensors={n: t for n, t in graph.tensors.items() if n not in gone})


def split(op: Op) -> tuple[Op, Op]:
    """The (expand, depthwise) pair a ``pointwise_depthwise`` op stands for; the expand's output is
    named ``{op}.expanded`` (a tensor no graph holds): executors run the pair channel by channel."""
    x, w1, b1, m1, s1, w2, b2, m2, s2 = op.inputs
    expand_attrs = {k[len(PREFIX):]: v for k, v in op.attrs if k.startswith(PREFIX)}
    dw_attrs = {k: v for k, v in op.attrs if not k.startswith(PREFIX)}
    mid = f"{op.name}.expanded"
    return (Op(f"{op.name}.expand", "conv2d", (x, w1, b1, m1, s1), (mid,), make_attrs(**expand_attrs)),
            Op(op.name, "conv2d", (mid, w2, b2, m2, s2), op.outputs, make_attrs(**dw_attrs)))


def _is_plain_expand(op: Op, graph: Graph, written: set[str]) -> bool:
    """A 1x1 stride-1 conv of the zoo's geometry (general-geometry convs are never fused)."""
    if (op.kind != "conv2d" or has_general_geometry(op) or op.attr("groups") != 1 or op.attr("stride") != 1
            or len(op.outputs) != 1):
        return False
    return (graph.tensor(op.inputs[1]).shape[2:] == (1, 1) and op.outputs[0] not in graph.outputs
            and not written.intersection(op.inputs[1:3]))


def _is_depthwise_of(op: Op, tensor: str) -> bool:
    """A depthwise conv of the zoo's geometry reading ``tensor`` (its row loop assumes that geometry)."""
    return op.kind == "conv2d" and not has_general_geometry(op) and op.attr("groups") > 1 and op.inputs[0] == tensor


def _fused(expand: Op, depthwise: Op) -> Op:
    attrs = make_attrs(**dict(depthwise.attrs), **{PREFIX + k: v for k, v in expand.attrs})
    return Op(depthwise.name, "pointwise_depthwise", expand.inputs + depthwise.inputs[1:], depthwise.outputs,
              attrs, depthwise.phase)
