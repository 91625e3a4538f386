"""The op catalogue: every op kind the engine knows, with the rule that types its outputs.

One table (tinygrad-style): ``OUTPUT_TYPES[kind](graph, op) -> [(shape, dtype), ...]``. The verifier
checks every op's declared outputs against it, so a pass that builds a wrong op fails at once, next
to the pass that built it. Semantics of each kind (DESIGN.md section 3) live in the executors; the
names here are the contract between the frontend, autodiff, passes, the NumPy executor and codegen.

Forward (int8):   conv2d, add, avgpool, linear, slice_channels
Loss:             softmax_ce            (fp32 loss and the logits' gradient, fused)
Backward (fp32):  linear_grad_x, linear_grad_w, linear_grad_b, avgpool_grad, add_grad,
                  requant_grad, conv2d_grad_x, conv2d_grad_w, conv2d_grad_b, grad_sum
Update:           update_weight, update_bias   (no outputs: they write a trainable parameter)
"""

from __future__ import annotations

from typing import Callable

from mcutrain.engine.ir import Graph, Op

Shape = tuple[int, ...]


def _out_side(side: int, stride: int) -> int:
    return -(-side // stride)


def _conv2d(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    n, _, h, w = g.tensor(op.inputs[0]).shape
    o = g.tensor(op.inputs[1]).shape[0]
    s = op.attr("stride")
    y = ((n, o, _out_side(h, s), _out_side(w, s)), "int8")
    return [y, (y[0], "bit")] if len(op.outputs) == 2 else [y]


def _same_as_first_int8(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    y = (g.tensor(op.inputs[0]).shape, "int8")
    return [y, (y[0], "bit")] if len(op.outputs) == 2 else [y]


def _avgpool(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    n, c = g.tensor(op.inputs[0]).shape[:2]
    return [((n, c), "int8"), ((n, c), "bit")] if len(op.outputs) == 2 else [((n, c), "int8")]


def _linear(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [((g.tensor(op.inputs[0]).shape[0], g.tensor(op.inputs[1]).shape[0]), "float32")]


def _slice_channels(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    n, _, h, w = g.tensor(op.inputs[0]).shape
    return [((n, op.attr("channels"), h, w), g.tensor(op.inputs[0]).dtype)]


def _softmax_ce(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [((1,), "float32"), (g.tensor(op.inputs[0]).shape, "float32")]


def _float_like(index: int) -> Callable[[Graph, Op], list[tuple[Shape, str]]]:
    return lambda g, op: [(g.tensor(op.inputs[index]).shape, "float32")]


def _linear_grad_x(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    n = g.tensor(op.inputs[0]).shape[0]
    return [((n, g.tensor(op.inputs[1]).shape[1]), "float32")]


def _linear_grad_w(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [((g.tensor(op.inputs[0]).shape[1], g.tensor(op.inputs[1]).shape[1]), "float32")]


def _linear_grad_b(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [((g.tensor(op.inputs[0]).shape[1],), "float32")]


def _avgpool_grad(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [(tuple(op.attr("input_shape")), "float32")]


def _add_grad(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    shape = g.tensor(op.inputs[0]).shape
    return [(shape, "float32"), (shape, "float32")]


def _conv2d_grad_x(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [(tuple(op.attr("input_shape")), "float32")]


def _conv2d_grad_w(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    o, i, kh, kw = op.attr("weight_shape")
    k = op.attr("kept")
    return [((k, 1, kh, kw) if op.attr("groups") > 1 else (o, k, kh, kw), "float32")]


def _conv2d_grad_b(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return [((g.tensor(op.inputs[0]).shape[1],), "float32")]


def _no_outputs(g: Graph, op: Op) -> list[tuple[Shape, str]]:
    return []


OUTPUT_TYPES: dict[str, Callable[[Graph, Op], list[tuple[Shape, str]]]] = {
    "conv2d": _conv2d,
    "add": _same_as_first_int8,
    "avgpool": _avgpool,
    "linear": _linear,
    "slice_channels": _slice_channels,
    "softmax_ce": _softmax_ce,
    "linear_grad_x": _linear_grad_x,
    "linear_grad_w": _linear_grad_w,
    "linear_grad_b": _linear_grad_b,
    "avgpool_grad": _avgpool_grad,
    "add_grad": _add_grad,
    "requant_grad": _float_like(0),
    "conv2d_grad_x": _conv2d_grad_x,
    "conv2d_grad_w": _conv2d_grad_w,
    "conv2d_grad_b": _conv2d_grad_b,
    "grad_sum": _float_like(0),
    "update_weight": _no_outputs,
    "update_bias": _no_outputs,
}
