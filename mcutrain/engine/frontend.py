"""Frontend: trace the int8 simulation (``Int8Net``) with torch.fx into the engine's IR.

The int8 layer modules are fx leaves; tracing records which layer feeds which (including the
residual fan-out), and each leaf becomes one IR op whose integers and scales come from the layer's
QConv/QAdd/QPool/QLinear. Anything else in the traced graph (a function, a method, another module) is
an error that names the node and its op: the engine supports exactly what it can compile to C.
The engine trains at batch 1, as the device does.

Besides the forward's own operands, each conv and the classifier get a constant ``{op name}.w_scale``
(float32 per output channel) and an attribute ``x_scale``: no forward op reads them, the update pass
derives the QAS factors from them (DESIGN.md section 4); pruning drops the ones nobody needs.

Imported graphs (``QGraph``, simulated by ``GraphNet``): ``graph_from_qgraph`` walks the simulation's
leaves in the graph's topological order (``GraphNet`` runs its nodes in a Python loop over a dict of
values, which fx cannot trace as a graph of modules; the walk records the same producer -> consumer
edges). Each node becomes the op the engine has for it: conv2d (general geometry), add, tfl_avgpool,
tfl_maxpool, tfl_mean, reshape; the classifier node becomes ``linear`` (fp32 logits, softmax dropped).
A fully connected layer before the classifier (conv i of a scheme: ``quant.graph.FcConv`` says why)
becomes three ops: ``reshape`` [N, C] -> [N, C, 1, 1] (a view), the 1x1 ``conv2d`` (attribute
``rescale``: LiteRT's double-precision rescale, one float64 per output channel, instead of the
fixed-point multiplier in the forward; general-geometry attributes, so no fused fast path takes it)
and ``reshape`` back to [N, K] (a view), the node's tensor.
Engine names come from the node's position, not its TFLite tensor name (long, with ``/`` and ``;``):
``engine_names`` maps the graph's tensors to them (conv parameters are ``{engine name}.weight``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx

from mcutrain.engine.ir import Graph, Op, TensorInfo, make_attrs
from mcutrain.engine.verify import verify
from mcutrain.errors import McutrainError
from mcutrain.quant.graph import QGraph
from mcutrain.quant.qmodel import QModel
from mcutrain.quant.sim_graph import GraphNet, Int8FcConv, Int8Mean, Int8Pool2d, Reshape
from mcutrain.quant.sim_model import Int8Add, Int8Conv, Int8Linear, Int8Net, Int8Pool
from mcutrain.sparse import UpdatePlan

LEAVES = (Int8Conv, Int8Add, Int8Pool, Int8Linear)


class UnsupportedError(McutrainError):
    """The model contains a layer or operation the engine cannot compile."""


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAVES) or super().is_leaf_module(m, qualname)


class _IntegerForward(torch.nn.Module):
    """The traced function: int8 image -> logits (input quantization happens before the engine)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x_q: torch.Tensor) -> torch.Tensor:
        return self.net.classifier(self.net.features(x_q))


def trace(net: torch.nn.Module) -> torch.fx.Graph:
    return _Tracer().trace(_IntegerForward(net))


def graph_from_qmodel(qmodel: QModel, plan: UpdatePlan | None = None) -> Graph:
    """Trace ``Int8Net(qmodel)`` into a verified forward graph (batch 1); ``plan`` marks trainables."""
    net = Int8Net(qmodel)
    builder = _Builder(qmodel, plan)
    modules = dict(net.named_modules())
    env: dict[str, str] = {}
    for node in trace(net).nodes:
        if node.op == "placeholder":
            env[node.name] = builder.input_image()
        elif node.op == "call_module" and isinstance(modules.get(node.target[len("net."):]), LEAVES):
            module = modules[node.target[len("net."):]]
            env[node.name] = builder.add_layer(node.target[len("net."):], module, [env[a.name] for a in node.args])
        elif node.op == "output":
            builder.outputs = (env[node.args[0].name],)
        else:
            raise UnsupportedError(f"node {node.name!r}: op {node.op} {node.target!r} is not supported by the "
                                   f"engine (supported layers: int8 conv, residual add, average pool, classifier)")
    return verify(builder.graph())


def engine_names(qgraph: QGraph) -> dict[str, str]:
    """The graph's input and every node output before the classifier -> the engine's tensor (and op) name."""
    names = {qgraph.input: "image"}
    for position, node in enumerate(qgraph.nodes[:GraphNet(qgraph).head_index]):
        names[node.output] = f"{node.kind}_{position}"
    return names


def graph_from_qgraph(qgraph: QGraph, plan: UpdatePlan | None = None) -> Graph:
    """The imported graph's ``GraphNet`` as a verified forward graph (batch 1); ``plan`` marks trainables."""
    net = GraphNet(qgraph)
    builder = _Builder(None, plan)
    t = qgraph.tensor[qgraph.input]
    env = {qgraph.input: builder.input_image((1,) + net.input_chw, t.q.scale, t.q.zero)}
    names = engine_names(qgraph)
    for node, leaf in zip(net.body, net.leaves):
        env[node.output] = builder.add_graph_node(names[node.output], node, leaf, [env[n] for n in node.inputs])
    builder.outputs = (builder._linear("classifier", net.classifier, env[net.head_input]),)
    return verify(builder.graph())


class _Builder:
    """Accumulates tensors, constants and ops while walking the traced graph."""

    def __init__(self, qmodel: QModel, plan: UpdatePlan | None):
        self.q, self.plan = qmodel, plan
        self.tensors: dict[str, TensorInfo] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.params: list[str] = []
        self.ops: list[Op] = []
        self.outputs: tuple[str, ...] = ()

    def graph(self) -> Graph:
        return Graph(self.tensors, tuple(self.ops), ("image",), self.outputs, self.constants, tuple(self.params))

    def input_image(self, shape: tuple[int, ...] | None = None, scale=None, zero=None) -> str:
        """The int8 image: the zoo model's input, or ``shape``/``scale``/``zero`` (an imported graph's)."""
        if shape is None:
            h, w = self.q.input_size
            shape, scale, zero = (1, self.q.input_channels, h, w), self.q.input.scale, self.q.input.zero
        self.tensors["image"] = TensorInfo("image", tuple(shape), "int8", "input", scale, zero)
        return "image"

    def const(self, name: str, array: np.ndarray, role: str = "const", trainable: bool = False) -> str:
        self.constants[name] = np.ascontiguousarray(array)
        self.tensors[name] = TensorInfo(name, tuple(array.shape), array.dtype.name, role, trainable=trainable)
        if role in ("weight", "bias"):
            self.params.append(name)
        return name

    def activation(self, name: str, shape: tuple[int, ...], dtype: str, scale=None, zero=None) -> str:
        self.tensors[name] = TensorInfo(name, tuple(shape), dtype, "activation", scale, zero)
        return name

    def add_layer(self, path: str, module: torch.nn.Module, args: list[str]) -> str:
        if isinstance(module, Int8Conv):
            return self._conv(path, module, args[0])
        if isinstance(module, Int8Add):
            return self._add(path, module, args)
        if isinstance(module, Int8Pool):
            return self._pool(path, module, args[0])
        return self._linear(path, module, args[0])

    def add_graph_node(self, name: str, node, leaf: torch.nn.Module, args: list[str]) -> str:
        """One node of an imported graph (its ``GraphNet`` leaf) -> op ``name``; returns its output tensor."""
        if isinstance(leaf, Int8FcConv):
            return self._fc_conv(name, leaf, args[0])
        if isinstance(leaf, Int8Conv):
            return self._conv(name, leaf, args[0], name=name)
        if isinstance(leaf, Int8Add):
            return self._graph_add(name, leaf, args)
        if isinstance(leaf, Int8Pool2d):
            return self._pool2d(name, leaf, args[0])
        if isinstance(leaf, Int8Mean):
            return self._mean(name, leaf, args[0])
        if isinstance(leaf, Reshape):
            return self._reshape(name, leaf, args[0])
        raise UnsupportedError(f"node {node.name!r} ({node.kind}, inputs {list(node.inputs)}) has no engine op")

    def _graph_add(self, name: str, m: Int8Add, args: list[str]) -> str:
        y = self.activation(name, self.tensors[args[0]].shape, "int8", m.q.y.scale, m.q.y.zero)
        attrs = make_attrs(params=tuple(m.params.__dict__.items()), a_ratio=m.a_ratio, b_ratio=m.b_ratio)
        self.ops.append(Op(name, "add", tuple(args), (y,), attrs))
        return y

    def _pool2d(self, name: str, m: Int8Pool2d, x: str) -> str:
        p = m.p
        n, c, h, w = self.tensors[x].shape
        y = self.activation(name, (n, c) + p.out_hw(h, w), "int8", p.y.scale, p.y.zero)
        geometry = dict(kernel=tuple(p.kernel), strides=tuple(p.strides), pads=tuple(p.pad), qmin=p.qmin, qmax=p.qmax)
        if m.kind == "avgpool":
            self.ops.append(Op(name, "tfl_avgpool", (x,), (y,), make_attrs(
                x_scale=float(p.x.scale), y_scale=float(p.y.scale), **geometry)))
        else:
            self.ops.append(Op(name, "tfl_maxpool", (x,), (y,), make_attrs(**geometry)))
        return y

    def _mean(self, name: str, m: Int8Mean, x: str) -> str:
        p = m.p
        n, c = self.tensors[x].shape[:2]
        y = self.activation(name, (n, c, 1, 1) if p.keep_dims else (n, c), "int8", p.y.scale, p.y.zero)
        self.ops.append(Op(name, "tfl_mean", (x,), (y,), make_attrs(
            x_scale=float(p.x.scale), x_zero=p.x.zero, y_scale=float(p.y.scale), y_zero=p.y.zero,
            keep_dims=bool(p.keep_dims))))
        return y

    def _reshape(self, name: str, m: Reshape, x: str) -> str:
        info = self.tensors[x]
        n = info.shape[0]
        y = self.activation(name, (n, int(np.prod(info.shape)) // n), "int8", info.scale, info.zero)
        self.ops.append(Op(name, "reshape", (x,), (y,), make_attrs(channels_last=bool(m.channels_last))))
        return y

    def _fc_conv(self, name: str, m: Int8FcConv, x: str) -> str:
        """A hidden fully connected layer: reshape (view) -> 1x1 conv2d with ``rescale`` -> reshape (view)."""
        info = self.tensors[x]
        n, c = info.shape
        x4 = self.activation(f"{name}_in", (n, c, 1, 1), "int8", info.scale, info.zero)
        self.ops.append(Op(f"{name}_in", "reshape", (x,), (x4,), make_attrs(channels_last=False, shape=(n, c, 1, 1))))
        y4 = self._conv(name, m, x4, name=name, out=f"{name}_out",
                        extra=dict(rescale=tuple(float(v) for v in m.q.rescale), strides=(1, 1), pads=(0, 0, 0, 0)))
        k = self.tensors[y4].shape[1]
        y = self.activation(name, (n, k), "int8", self.tensors[y4].scale, self.tensors[y4].zero)
        self.ops.append(Op(f"{name}_out", "reshape", (y4,), (y,), make_attrs(channels_last=False)))
        return y

    def _trainable(self, index: int) -> tuple[bool, int]:
        if self.plan is None:
            return False, 0
        u = self.plan.convs[index]
        return u.bias, u.kept_channels

    def _conv(self, path: str, m: Int8Conv, x: str, name: str | None = None, out: str | None = None,
              extra: dict | None = None) -> str:
        """``name``: the op's (and its tensors') name, by default the QConv's; ``out``: the output tensor's
        name (default ``name``); ``extra``: attributes over the conv's own (a hidden FC's geometry, rescale)."""
        q = m.q
        name = name or q.name
        bias_trains, kept = self._trainable(m.index)
        mult, shift = q.requant
        w = self.const(f"{name}.weight", q.weight, "weight", trainable=kept > 0)
        b = self.const(f"{name}.bias", q.bias, "bias", trainable=bias_trains)
        ins = (x, w, b, self.const(f"{name}.multiplier", mult), self.const(f"{name}.shift", shift))
        self.const(f"{name}.w_scale", np.asarray(q.w_scale, np.float32))
        n, _, h, w = self.tensors[x].shape
        y = self.activation(out or name, (n, q.out_ch) + q.out_hw(h, w), "int8", q.y.scale, q.y.zero)
        # The zoo's geometry keeps its two attributes; any other carries it whole (engine/ops.py).
        geometry = (dict(strides=q.strides, pads=q.padding) if q.general_geometry
                    else dict(stride=q.stride, pad=q.kernel // 2))
        geometry.update(extra or {})
        attrs = make_attrs(index=m.index, groups=q.groups, x_zero=q.x.zero, y_zero=q.y.zero, qmin=q.qmin,
                           qmax=q.qmax, frozen=tuple(q.frozen_channels), x_scale=float(q.x.scale), **geometry)
        self.ops.append(Op(name, "conv2d", ins, (y,), attrs))
        return y

    def _add(self, path: str, m: Int8Add, args: list[str]) -> str:
        name = path.replace(".add", ".add_out") if path.endswith(".add") else f"{path}_out"
        shape = self.tensors[args[0]].shape
        y = self.activation(name, shape, "int8", m.q.y.scale, m.q.y.zero)
        p = m.params
        attrs = make_attrs(params=tuple(p.__dict__.items()), a_ratio=m.a_ratio, b_ratio=m.b_ratio)
        self.ops.append(Op(path, "add", tuple(args), (y,), attrs))
        return y

    def _pool(self, path: str, m: Int8Pool, x: str) -> str:
        n, c = self.tensors[x].shape[:2]
        y = self.activation("pool", (n, c), "int8", m.y.scale, m.y.zero)
        attrs = make_attrs(x_zero=m.x.zero, x_scale=m.x.scale, y_scale=m.y.scale, y_zero=m.y.zero)
        self.ops.append(Op("pool", "avgpool", (x,), (y,), attrs))
        return y

    def _linear(self, path: str, m: Int8Linear, x: str) -> str:
        q = m.q
        k = q.weight.shape[0]
        # An imported head may be quantized per tensor: its one scale serves every class.
        w_scale = np.broadcast_to(np.asarray(q.w_scale, np.float32), (k,)).copy()
        bias = np.zeros(k, np.int32) if q.bias is None else q.bias
        w = self.const("classifier.weight", q.weight, "weight", trainable=self.plan is not None)
        b = self.const("classifier.bias", np.asarray(bias, np.int32), "bias", trainable=self.plan is not None)
        scale = self.const("classifier.logit_scale", (q.x.scale * w_scale.astype(np.float64)).astype(np.float32))
        self.const("classifier.w_scale", w_scale)
        y = self.activation("logits", (self.tensors[x].shape[0], q.weight.shape[0]), "float32")
        attrs = make_attrs(x_zero=q.x.zero, x_scale=float(q.x.scale))
        self.ops.append(Op("classifier", "linear", (x, w, b, scale), (y,), attrs))
        return y
