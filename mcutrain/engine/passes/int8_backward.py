"""Lower the float backward to the integer backward (``PassOptions.backward == "int8"``, issue 16).

Why a pass and not a second set of VJP rules: autodiff decides WHAT the backward computes (which
gradients, which fan-outs, which saved activations); the int8 mode changes only HOW each backward op
computes (``quant.int8_grad``). Rewriting each float backward / update op into its int8 twin keeps one
autodiff, and turns every real factor into integers once, here, at compile time:
  * a float32 factor constant (a conv's ``real_multiplier``, an add's ratios, a pool's factor) becomes
    ``{name}.grad8`` int32 [2, n]: row 0 ``m``, row 1 ``sh`` of ``grad_multiplier`` of the float32
    value widened to float64 (the same reals the float path multiplies by);
  * the updates keep their float32 QAS constant: their kernels take ``update_factor(lr, qas)`` per kept
    row when they run, from the learning rate the program runs with (the C's is a runtime value: a
    rollback halves it, a host may set it), one float32 multiply per row;
  * the loss gradient (float32, K values) is normalized once by a ``loss_grad8`` op with the logit scale,
    and the classifier's three gradient ops read its grad8 output;
  * gradient tensors become ``grad8`` (int8 payload + int32 exponent), parameter gradients ``grad32``.
Runs right after ``insert_updates`` (so the update ops exist), before anything fuses; in float32 mode it
returns the graph unchanged (the float path does not change by a bit).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mcutrain.engine.ir import Graph, Op, TensorInfo
from mcutrain.engine.ops import OUTPUT_TYPES
from mcutrain.engine.passes.options import PassOptions
from mcutrain.errors import McutrainError
from mcutrain.quant import int8_grad as ig

__all__ = ["FACTOR_OPERAND", "INT8_KINDS", "int8_backward"]

# float kind -> int8 kind (same operands and attributes unless ``_lower`` says otherwise)
INT8_KINDS = {k: f"{k}8" for k in (
    "requant_grad", "add_grad", "avgpool_grad", "conv2d_grad_x", "conv2d_grad_w", "conv2d_grad_b", "grad_sum",
    "linear_grad_x", "linear_grad_w", "linear_grad_b", "reshape_grad", "tfl_maxpool_grad", "tfl_avgpool_grad",
    "update_weight", "update_bias")}
FACTOR_OPERAND = {"requant_grad": 2, "add_grad": 2, "avgpool_grad": 2}  # a float32 real factor -> int32 [2, n]
_LINEAR = ("linear_grad_x", "linear_grad_w", "linear_grad_b")


class _Lowering:
    def __init__(self, graph: Graph, options: PassOptions):
        self.graph, self.options = graph, options
        self.tensors, self.constants = dict(graph.tensors), dict(graph.constants)
        self.loss_grads: dict[str, str] = {}  # float g_logits -> its grad8 twin
        self.ops: list[Op] = []
        self.replaced: set[str] = set()  # float constants with an integer twin (dropped if unread)

    def const(self, name: str, array: np.ndarray) -> str:
        self.constants[name] = np.ascontiguousarray(array, dtype=np.int32)
        self.tensors[name] = TensorInfo(name, array.shape, "int32", "const")
        return name

    def factor(self, name: str) -> str:
        """The int32 [2, n] (m, sh) twin of a float32 factor constant."""
        m, sh = ig.grad_multiplier(self.graph.constants[name].astype(np.float64).ravel())
        self.replaced.add(name)
        return self.const(f"{name}.grad8", np.stack([m, sh]))

    def loss_grad(self, op: Op) -> str:
        """The grad8 loss gradient: one ``loss_grad8`` op before the classifier's first gradient op."""
        g, scale = op.inputs[0], op.inputs[-1]
        if g not in self.loss_grads:
            name = f"{g}8"
            self.tensors[name] = TensorInfo(name, self.graph.tensor(g).shape, "grad8", "gradient")
            self.ops.append(Op(f"{g}.loss_grad8", "loss_grad8", (g, scale), (name,), phase="backward"))
            self.loss_grads[g] = name
        return self.loss_grads[g]

    def lower(self, op: Op) -> Op:
        if op.phase == "forward" or op.kind == "softmax_ce":
            return op
        if op.kind not in INT8_KINDS:
            raise McutrainError(f"int8 backward: op kind {op.kind!r} ({op.name}) has no int8 form")
        inputs = list(op.inputs)
        if op.kind in FACTOR_OPERAND:
            inputs[FACTOR_OPERAND[op.kind]] = self.factor(inputs[FACTOR_OPERAND[op.kind]])
        elif op.kind in _LINEAR:
            inputs = [self.loss_grad(op)] + inputs[1:-1]  # the logit scale is in the grad8 loss gradient
        elif op.kind == "tfl_avgpool_grad":
            inputs.append(self._pool_factor(op))
        lowered = replace(op, kind=INT8_KINDS[op.kind], inputs=tuple(inputs))
        for name, (_, dtype) in zip(op.outputs, OUTPUT_TYPES[lowered.kind](self, lowered)):  # the catalogue's
            self.tensors[name] = replace(self.tensors[name], dtype=dtype)  # dtypes: grad8, or grad32
        return lowered

    def tensor(self, name: str) -> TensorInfo:
        """The tensors as lowered so far (ops are lowered in order): what ``OUTPUT_TYPES`` reads."""
        return self.tensors[name]

    def _pool_factor(self, op: Op) -> str:
        """int32 [2, OH*OW]: grad_multiplier of fl32(ratio / n[p]) per output position (n[p]: the valid
        positions of its clipped window, as the float kernel's factor)."""
        from mcutrain.engine.executor.graph_kernels import valid_counts  # the executor imports the passes

        h, w = op.attr("input_shape")[2:]
        real = (np.float64(op.attr("ratio")) / valid_counts(op, (h, w))).astype(np.float32)
        return self.const(f"{op.name}.grad8", np.stack(ig.grad_multiplier(real.astype(np.float64).ravel())))


def int8_backward(graph: Graph, options: PassOptions) -> Graph:
    """Float backward + updates -> the integer backward (identity unless ``options.backward == "int8"``)."""
    if options.backward != "int8":
        return graph
    lowering = _Lowering(graph, options)
    for op in graph.ops:
        lowering.ops.append(lowering.lower(op))
    used = {n for op in lowering.ops for n in op.inputs}
    dropped = lowering.replaced - used  # float factors and QAS constants that now have int32 twins
    return graph.with_ops(lowering.ops, tensors={n: t for n, t in lowering.tensors.items() if n not in dropped},
                          constants={n: a for n, a in lowering.constants.items() if n not in dropped})
