"""Compile-time reverse-mode autodiff: forward + loss graph -> joint forward + backward graph.

Why at compile time: the microcontroller runs a fixed list of kernels with a fixed memory plan, so the
backward must exist as ops before anything is scheduled or planned (DESIGN.md section 6). The result
is a *joint* graph (as aot_autograd's): the forward (ops that the backward needs now also output their
clamp masks, and kept input channels of weight-trained convs are copied out right after they are
made), the loss, and the backward; its outputs are the loss and one gradient per trainable parameter,
so the joint graph runs on its own (the tests compare those gradients with the simulation) and the
update pass turns each gradient output into an update.

Rules (one per forward op kind, in ONE table, ``VJP_RULES``) follow DESIGN.md section 3 and the
simulation (``mcutrain.quant.sim_ops``) exactly, gradients taken w.r.t. integer-domain values:
  conv2d   g_acc = requant_grad(g_y, mask, M);  g_b = conv2d_grad_b(g_acc);
           g_x = conv2d_grad_x(g_acc, w);  g_w = conv2d_grad_w(x[:, :kept], g_acc)
  add      (g_a, g_b) = add_grad(g_y, mask, (s_a/s_y, s_b/s_y))   (one side only: requant_grad)
  avgpool  g_x = avgpool_grad(g_y, mask, s_x/(s_y*H*W))
  linear   g_x, g_w, g_b = linear_grad_{x,w,b}(g_logits, ..., logit_scale)
  tfl_avgpool  g_x = tfl_avgpool_grad(g_y, mask){ratio = s_x/s_y}: the real-valued average's gradient,
           each output's share spread over its window's valid positions (a global pool: avgpool_grad
           with factor ratio/(H*W), the same numbers, which the fused block backward computes lazily)
  tfl_maxpool  g_x = tfl_maxpool_grad(g_y, mask, x): to the window's first maximum (x is kept)
  tfl_mean g_x = avgpool_grad(g_y, mask, s_x/(s_y*H*W))      reshape  g_x = reshape_grad(g_y)
Only what can reach a trainable parameter is differentiated: a tensor needs a gradient iff it is a
trainable parameter or computed from one (requires-grad propagation), so nothing below the lowest
trained layer gets an input gradient. A tensor read by several ops (a residual's fan-out) receives one
gradient per reader, and they are SUMMED (the reference engine overwrote one with the other): by a
``grad_sum``, or, when the last contribution is a 1x1 conv's input gradient and one contribution came
before it (a residual block's input: the skip branch's gradient first), by that conv2d_grad_x
accumulating into the earlier contribution (its third operand ``init``): the sum is then made in
place, without a third buffer, the same float32 additions one term after the other.
Scales stay constants (float32), computed exactly as the simulation computes them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from mcutrain.engine.ir import Graph, Op, TensorInfo, make_attrs
from mcutrain.engine.ops import geometry_attrs, is_pointwise_conv
from mcutrain.engine.loss import grad_name
from mcutrain.engine.verify import verify
from mcutrain.errors import McutrainError
from mcutrain.sparse import UpdatePlan

__all__ = ["VJP_RULES", "AutodiffError", "differentiate", "grad_name", "mask_name", "param_gradients",
           "real_multiplier"]


class AutodiffError(McutrainError):
    """The graph cannot be differentiated (an op without a rule, an unreachable trained parameter)."""


def mask_name(tensor: str) -> str:
    """The clamp mask (1 bit per element) of the forward tensor ``tensor``."""
    return f"{tensor}.mask"


def kept_name(tensor: str, kept: int) -> str:
    """The copy of the first ``kept`` channels of ``tensor`` that a weight gradient reads."""
    return f"{tensor}.keep{kept}"


def real_multiplier(multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``multiplier * 2**(shift - 31)`` rounded once to float32: ``Int8Conv.real_multiplier`` exactly."""
    return (multiplier.astype(np.float64) * np.exp2(shift.astype(np.float64) - 31)).astype(np.float32)


def param_gradients(graph: Graph) -> dict[str, str]:
    """Trainable parameter -> its gradient, for the gradients that are graph outputs (a joint graph)."""
    return {p: grad_name(p) for p in graph.params if grad_name(p) in graph.outputs}


# ----------------------------------------------------------------------------------------------
# The builder the rules talk to


class _Backward:
    """Collects backward tensors, constants and ops, and what the forward must additionally produce.

    Gradient contributions are named up front from how many readers will contribute (``expected``),
    so a tensor with one reader gets its gradient as ``t.grad`` directly and a fan-out gets
    ``t.grad0``, ``t.grad1``, ... summed into ``t.grad``.
    """

    def __init__(self, graph: Graph, plan: UpdatePlan, needs: set[str], expected: dict[str, int]):
        self.graph, self.plan, self.needs_grad, self.expected = graph, plan, needs, expected
        self.contributions: dict[str, list[str]] = {}
        self.totals: dict[str, str] = {}  # tensors whose last contribution wrote their total
        self.tensors: dict[str, TensorInfo] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.ops: list[Op] = []
        self.masks: set[str] = set()  # forward op names that must also output their mask
        self.slices: dict[tuple[str, int], str] = {}  # (tensor, kept) -> saved copy

    def info(self, name: str) -> TensorInfo:
        return self.tensors.get(name) or self.graph.tensor(name)

    def needs(self, tensor: str) -> bool:
        return tensor in self.needs_grad

    def declare(self, name: str, shape: tuple[int, ...], dtype: str = "float32", role: str = "gradient") -> str:
        self.tensors[name] = TensorInfo(name, tuple(shape), dtype, role)
        return name

    def const(self, name: str, array: np.ndarray) -> str:
        self.constants[name] = np.ascontiguousarray(array)
        return self.declare(name, array.shape, array.dtype.name, "const")

    def grad_slot(self, tensor: str, shape: tuple[int, ...] | None = None) -> str:
        """The name the next gradient contribution to ``tensor`` is written to (declared here)."""
        made = self.contributions.setdefault(tensor, [])
        name = grad_name(tensor) if self.expected[tensor] == 1 else f"{grad_name(tensor)}{len(made)}"
        made.append(name)
        return self.declare(name, shape if shape is not None else self.info(tensor).shape)

    def accumulate_slot(self, tensor: str) -> tuple[str, str] | None:
        """(earlier contribution, total) when the next contribution is the last of two: the op making it
        may add into the earlier one and write the total itself (no ``grad_sum``); else None."""
        made = self.contributions.get(tensor, [])
        if self.expected.get(tensor) != 2 or len(made) != 1:
            return None
        total = self.declare(grad_name(tensor), self.info(tensor).shape)
        made.append(total)
        self.totals[tensor] = total
        return made[0], total

    def total(self, tensor: str) -> str:
        """The whole gradient of ``tensor``: its one contribution, or the sum of all of them."""
        if tensor in self.totals:
            return self.totals[tensor]
        made = self.contributions.get(tensor, [])
        if len(made) != self.expected.get(tensor, 0):
            raise AutodiffError(f"{tensor!r}: {len(made)} gradient contributions, expected "
                                f"{self.expected.get(tensor, 0)} (internal error: order of rules)")
        if len(made) == 1:
            return made[0]
        total = self.declare(grad_name(tensor), self.info(made[0]).shape)
        self.ops.append(Op(f"{tensor}.grad_sum", "grad_sum", tuple(made), (total,), phase="backward"))
        return total

    def emit(self, op: Op, kind: str, inputs: tuple[str, ...], outputs: tuple[str, ...], **attrs) -> None:
        """A backward op of forward op ``op`` (named after it: one op of each kind per forward op)."""
        self.ops.append(Op(f"{op.name}.{kind}", kind, inputs, outputs, make_attrs(**attrs), "backward"))

    def mask(self, op: Op) -> str:
        """The clamp mask of ``op``'s output: the forward op is rewritten to produce it."""
        self.masks.add(op.name)
        y = op.outputs[0]
        return self.declare(mask_name(y), self.info(y).shape, "bit", "mask")

    def saved(self, x: str, kept: int) -> str:
        """The first ``kept`` channels of activation ``x``, copied right after ``x`` is made (so ``x``
        itself can die early); ``x`` itself when every channel is kept (a copy would only cost)."""
        info = self.info(x)
        if kept == info.shape[1]:
            return x
        name = kept_name(x, kept)
        self.slices[(x, kept)] = name
        shape = (info.shape[0], kept) + info.shape[2:]
        self.tensors[name] = TensorInfo(name, shape, info.dtype, "activation", info.scale, info.zero)
        return name

    def kept(self, op: Op) -> int:
        """Weight channels ``op`` (a conv) trains: the plan's kept channels, 0 for a frozen weight."""
        if not self.needs(op.inputs[1]):
            return 0
        kept = self.plan.convs[op.attr("index")].kept_channels
        if kept <= 0:
            raise AutodiffError(f"{op.name}: weight is marked trainable but the plan keeps no channels")
        # At most the weight's channels (a 1-channel input under a plan made for 3), as the simulation.
        shape = self.info(op.inputs[1]).shape
        return min(kept, shape[0] if op.attr("groups") > 1 else shape[1])


# ----------------------------------------------------------------------------------------------
# Vector-Jacobian rules


def _conv2d_vjp(bw: _Backward, op: Op, g_y: str) -> None:
    x, w, b, mult, shift = op.inputs
    m = bw.const(f"{op.name}.real_multiplier",
                 real_multiplier(bw.graph.constants[mult], bw.graph.constants[shift]))
    g_acc = bw.declare(f"{op.name}.g_acc", bw.info(g_y).shape)
    bw.emit(op, "requant_grad", (g_y, bw.mask(op), m), (g_acc,))
    geometry = dict(groups=op.attr("groups"), **geometry_attrs(op))
    # Order: the bias gradient first (its update can run at once); then the input gradient, which
    # reads the OLD weight, so the weight's update can follow its gradient; a frozen weight leaves
    # the input gradient as g_acc's last reader (so it may overwrite g_acc, see passes/inplace).
    if bw.needs(b):
        bw.emit(op, "conv2d_grad_b", (g_acc,), (bw.grad_slot(b),))
    if bw.needs(x):
        pointwise = is_pointwise_conv(op, bw.info(w).shape)
        acc = bw.accumulate_slot(x) if pointwise else None
        if acc is not None:  # g_x = earlier contribution + conv_transpose(w, g_acc), summed in place
            bw.emit(op, "conv2d_grad_x", (g_acc, w, acc[0]), (acc[1],), input_shape=bw.info(x).shape, **geometry)
        else:
            bw.emit(op, "conv2d_grad_x", (g_acc, w), (bw.grad_slot(x),), input_shape=bw.info(x).shape, **geometry)
    kept = bw.kept(op)
    if kept:
        shape = bw.info(w).shape
        g_shape = (kept,) + shape[1:] if op.attr("groups") > 1 else (shape[0], kept) + shape[2:]
        bw.emit(op, "conv2d_grad_w", (bw.saved(x, kept), g_acc), (bw.grad_slot(w, g_shape),),
                kept=kept, weight_shape=shape, x_zero=op.attr("x_zero"), **geometry)


def _add_vjp(bw: _Backward, op: Op, g_y: str) -> None:
    a, b = op.inputs
    ratios = np.array([op.attr("a_ratio"), op.attr("b_ratio")], dtype=np.float32)
    mask = bw.mask(op)
    if bw.needs(a) and bw.needs(b):
        r = bw.const(f"{op.name}.ratios", ratios)
        bw.emit(op, "add_grad", (g_y, mask, r), (bw.grad_slot(a), bw.grad_slot(b)))
        return
    side, x = (0, a) if bw.needs(a) else (1, b)
    r = bw.const(f"{op.name}.ratio{'ab'[side]}", ratios[side:side + 1])
    bw.emit(op, "requant_grad", (g_y, mask, r), (bw.grad_slot(x),))


def _avgpool_vjp(bw: _Backward, op: Op, g_y: str) -> None:
    (x,) = op.inputs
    shape = bw.info(x).shape
    h, w = shape[2:]
    factor = op.attr("x_scale") / (op.attr("y_scale") * h * w)  # the simulation's float64 expression
    f = bw.const(f"{op.name}.grad_factor", np.array([factor], dtype=np.float32))
    bw.emit(op, "avgpool_grad", (g_y, bw.mask(op), f), (bw.grad_slot(x),), input_shape=shape)


def _tfl_avgpool_vjp(bw: _Backward, op: Op, g_y: str) -> None:
    (x,) = op.inputs
    ratio = float(op.attr("x_scale")) / float(op.attr("y_scale"))  # 1 for TFLite's pools (one quantization)
    shape = bw.info(x).shape
    if tuple(op.attr("kernel")) == tuple(shape[2:]) and not any(op.attr("pads")):  # global: the zoo pool's rule,
        f = bw.const(f"{op.name}.grad_factor", np.array([ratio / (shape[2] * shape[3])], dtype=np.float32))
        bw.emit(op, "avgpool_grad", (g_y, bw.mask(op), f), (bw.grad_slot(x),), input_shape=shape)  # so it fuses
        return
    bw.emit(op, "tfl_avgpool_grad", (g_y, bw.mask(op)), (bw.grad_slot(x),), input_shape=bw.info(x).shape,
            ratio=ratio, **_window_attrs(op))


def _tfl_maxpool_vjp(bw: _Backward, op: Op, g_y: str) -> None:
    (x,) = op.inputs
    bw.emit(op, "tfl_maxpool_grad", (g_y, bw.mask(op), x), (bw.grad_slot(x),), input_shape=bw.info(x).shape,
            **_window_attrs(op))


def _window_attrs(op: Op) -> dict:
    return dict(kernel=tuple(op.attr("kernel")), strides=tuple(op.attr("strides")), pads=tuple(op.attr("pads")))


def _tfl_mean_vjp(bw: _Backward, op: Op, g_y: str) -> None:
    (x,) = op.inputs
    shape = bw.info(x).shape
    factor = op.attr("x_scale") / (op.attr("y_scale") * shape[2] * shape[3])  # float64, rounded once
    f = bw.const(f"{op.name}.grad_factor", np.array([factor], dtype=np.float32))
    bw.emit(op, "avgpool_grad", (g_y, bw.mask(op), f), (bw.grad_slot(x),), input_shape=shape)


def _reshape_vjp(bw: _Backward, op: Op, g_y: str) -> None:
    (x,) = op.inputs
    bw.emit(op, "reshape_grad", (g_y,), (bw.grad_slot(x),), input_shape=bw.info(x).shape,
            channels_last=bool(op.attr("channels_last")))


def _linear_vjp(bw: _Backward, op: Op, g_logits: str) -> None:
    x, w, b, scale = op.inputs
    if bw.needs(x):  # first: it reads the OLD weight
        bw.emit(op, "linear_grad_x", (g_logits, w, scale), (bw.grad_slot(x),))
    if bw.needs(w):
        bw.emit(op, "linear_grad_w", (g_logits, x, scale), (bw.grad_slot(w),), x_zero=op.attr("x_zero"))
    if bw.needs(b):
        bw.emit(op, "linear_grad_b", (g_logits, scale), (bw.grad_slot(b),))


@dataclass(frozen=True)
class VJP:
    """A rule and the input positions it can differentiate."""

    inputs: tuple[int, ...]
    rule: Callable[[_Backward, Op, str], None]


VJP_RULES: dict[str, VJP] = {
    "conv2d": VJP((0, 1, 2), _conv2d_vjp),
    "add": VJP((0, 1), _add_vjp),
    "avgpool": VJP((0,), _avgpool_vjp),
    "linear": VJP((0, 1, 2), _linear_vjp),
    "tfl_avgpool": VJP((0,), _tfl_avgpool_vjp),
    "tfl_maxpool": VJP((0,), _tfl_maxpool_vjp),
    "tfl_mean": VJP((0,), _tfl_mean_vjp),
    "reshape": VJP((0,), _reshape_vjp),
}


# ----------------------------------------------------------------------------------------------
# The transformation


def differentiate(graph: Graph, plan: UpdatePlan) -> Graph:
    """Forward + loss graph (``append_loss``) -> verified joint graph with outputs (loss, gradients...)."""
    forward = [op for op in graph.ops if op.phase == "forward"]
    loss_ops = [op for op in graph.ops if op.phase != "forward"]
    loss = _loss_op(loss_ops)
    logits = loss.inputs[0]
    needs = _requires_grad(graph, forward)
    active = needs & _ancestors(forward, logits)
    bw = _Backward(graph, plan, needs, _expected_contributions(forward, needs, active))
    bw.expected[logits] = 1
    bw.contributions[logits] = [grad_name(logits)]
    for op in reversed(forward):
        if op.outputs[0] in active:
            if op.kind not in VJP_RULES:
                raise AutodiffError(f"op {op.name!r}: no gradient rule for {op.kind!r}")
            VJP_RULES[op.kind].rule(bw, op, bw.total(op.outputs[0]))
    grads = _parameter_gradients(graph, bw)
    ops = _forward_with_saves(graph, forward, bw) + loss_ops + bw.ops
    return verify(graph.with_ops(ops, tensors={**graph.tensors, **bw.tensors},
                                 constants={**graph.constants, **bw.constants},
                                 outputs=graph.outputs + tuple(grads)))


def _loss_op(loss_ops: list[Op]) -> Op:
    if len(loss_ops) != 1 or loss_ops[0].kind != "softmax_ce":
        raise AutodiffError("differentiate needs a forward graph followed by its loss (append_loss)")
    return loss_ops[0]


def _requires_grad(graph: Graph, forward: list[Op]) -> set[str]:
    """Trainable parameters and every tensor computed from one (forward propagation)."""
    needs = {p for p in graph.params if graph.tensor(p).trainable}
    for op in forward:
        rule = VJP_RULES.get(op.kind)
        positions = rule.inputs if rule else range(len(op.inputs))
        if any(op.inputs[i] in needs for i in positions):
            needs.add(op.outputs[0])
    return needs


def _ancestors(forward: list[Op], root: str) -> set[str]:
    """``root`` and every tensor it is computed from: what the loss depends on."""
    producer = {out: op for op in forward for out in op.outputs}
    seen, stack = {root}, [root]
    while stack:
        op = producer.get(stack.pop())
        for name in op.inputs if op else ():
            if name not in seen:
                seen.add(name)
                stack.append(name)
    return seen


def _expected_contributions(forward: list[Op], needs: set[str], active: set[str]) -> dict[str, int]:
    """How many gradient contributions each tensor will receive: one per differentiated reader."""
    expected: dict[str, int] = {}
    for op in forward:
        rule = VJP_RULES.get(op.kind)
        if rule is None or op.outputs[0] not in active:
            continue
        for i in rule.inputs:
            if op.inputs[i] in needs:
                expected[op.inputs[i]] = expected.get(op.inputs[i], 0) + 1
    return expected


def _parameter_gradients(graph: Graph, bw: _Backward) -> list[str]:
    """The total gradient of every trainable parameter, in parameter order."""
    grads = []
    for p in graph.params:
        if graph.tensor(p).trainable:
            if p not in bw.contributions:
                raise AutodiffError(f"trainable parameter {p!r} does not influence the loss")
            grads.append(bw.total(p))
    return grads


def _forward_with_saves(graph: Graph, forward: list[Op], bw: _Backward) -> list[Op]:
    """The forward ops, those the backward needs with their mask output, each kept-channel copy
    right after the op that makes its tensor (graph inputs: at the start)."""

    def copies(tensor: str) -> list[Op]:
        return [Op(name, "slice_channels", (x,), (name,), make_attrs(channels=k))
                for (x, k), name in bw.slices.items() if x == tensor]

    ops = [c for x in graph.inputs for c in copies(x)]
    for op in forward:
        if op.name in bw.masks:
            op = replace(op, outputs=op.outputs + (mask_name(op.outputs[0]),))
        ops.append(op)
        ops.extend(copies(op.outputs[0]))
    return ops
