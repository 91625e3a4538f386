"""QGraph: a general int8 graph (any DAG of convolutions, adds, pools, fully connected layers).

Why: ``QModel`` describes the zoo's MobileNetV2 family only. Imported models (TFLite today, PyTorch
modules later) are arbitrary graphs of a few TinyML operators: plain CNNs, ResNets with convolution
shortcuts, depthwise-separable nets with any kernel. A QGraph holds such a network as frozen integer
data in NCHW layout: named tensors with their quantization, and nodes in topological order, each with
its kind, input tensor names, output tensor name and integer parameters. Parameters reuse the
QModel types wherever they exist (``QConv``, ``QAdd``, ``QTensor``) so the arithmetic is defined once.

Node kinds and their parameters:
  conv2d          QConv (regular or depthwise with multiplier 1; explicit padding, stride per axis)
  add             QAdd (TFLite's int8 ADD, ``int8_ops.add_params``)
  avgpool         Pool2d (TFLite's AVERAGE_POOL_2D: windows clipped at the border, rounded division)
  maxpool         Pool2d
  mean            Mean (TFLite MEAN over H and W, what Keras' GlobalAveragePooling2D becomes)
  fully_connected FullyConnected (int8 in, int32 accumulators requantized to int8 out)
  reshape         Reshape (``channels_last``: elements flattened in TFLite's H, W, C order)
  softmax         Softmax (a marker: training drops it and keeps the logits; export restores it)

Training sees a fully connected layer before the classifier (a "hidden" one) as a convolution
(``FcConv``, ``fc_as_conv``): see ``convs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from functools import cached_property

import numpy as np

from mcutrain.errors import ModelError
from mcutrain.quant.qmodel import QConv, QTensor

KINDS = ("conv2d", "add", "avgpool", "maxpool", "mean", "fully_connected", "reshape", "softmax")


class GraphError(ModelError):
    """A QGraph whose shapes or quantization do not chain."""


@dataclass(frozen=True)
class Pool2d:
    """A windowed pool. Border windows are clipped to the input (TFLite): padding is never averaged."""

    kernel: tuple[int, int]  # (kh, kw)
    strides: tuple[int, int]
    pad: tuple[int, int, int, int]  # (top, bottom, left, right)
    x: QTensor
    y: QTensor
    qmin: int = -128
    qmax: int = 127

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (t, b, left, r) = self.kernel, self.strides, self.pad
        return (h + t + b - kh) // sh + 1, (w + left + r - kw) // sw + 1


@dataclass(frozen=True)
class Mean:
    """Mean over H and W. ``keep_dims``: output [N, C, 1, 1], else [N, C]."""

    x: QTensor
    y: QTensor
    keep_dims: bool


@dataclass(frozen=True, eq=False)
class FullyConnected:
    """int8 [N, C] -> int8 [N, K]: ``clamp(MBQM(sum (x - z_x) w + bias) + z_y, qmin, qmax)``."""

    weight: np.ndarray  # int8 [K, C]
    bias: np.ndarray | None  # int32 [K]
    w_scale: np.ndarray  # float32 [K] (per channel) or [1] (per tensor)
    x: QTensor
    y: QTensor
    qmin: int = -128
    qmax: int = 127

    @cached_property
    def requant(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-output (multiplier, shift) of ``s_x * s_w / s_y``, the same encoding as QConv."""
        from mcutrain.quant.fixedpoint import quantize_multiplier

        real = self.x.scale * self.w_scale.astype(np.float64) / self.y.scale
        mult, shift = quantize_multiplier(np.broadcast_to(real, (self.weight.shape[0],)).copy())
        return np.asarray(mult, np.int32), np.asarray(shift, np.int32)


def fc_rescale(p: FullyConnected) -> np.ndarray:
    """float64 [K]: LiteRT's FULLY_CONNECTED rescale ``double(s_x) * double(s_w[k]) / double(s_y)``, the
    factor of ``round_half_away(acc * rescale) + z_y`` (``graph_forward.fully_connected``)."""
    k = p.weight.shape[0]
    return np.broadcast_to(np.float64(p.x.scale) * p.w_scale.astype(np.float64) / np.float64(p.y.scale), (k,)).copy()


@dataclass(frozen=True, eq=False)
class FcConv(QConv):
    """A fully connected layer before the classifier, as the convolution training sees (``fc_as_conv``).

    Decision (issue 13): a hidden FC layer IS a 1x1 convolution over its [N, C] input seen as [N, C, 1, 1]
    (C input channels, K output channels): the same sums, the same per-output-channel bias, clamp and
    straight-through backward. So it is conv i of a scheme (bias, weight ratio of input channels: kept
    channels are the first input features), the QAS factors, the optimizer, the engine's conv VJP,
    passes, planner and C backward kernels, and the memory cost models all apply unchanged. One thing
    differs: LiteRT rescales a FULLY_CONNECTED accumulator in double precision (``fc_rescale``), not with
    the conv's fixed-point multiplier, so ``rescale`` travels with it and every forward of it (the
    simulation's, the engine's ``conv2d`` with attribute ``rescale``, the C ``mct_fc_forward``) uses
    it; the fixed-point pair of ``requant`` encodes the same real factor and gives the backward's
    multiplier, as for any conv. A flatten before the layer stays a reshape op (a copy in H, W, C order,
    or a view): folding it into an H x W kernel would save that small copy but make the scheme's
    channels depend on the graph around the layer.
    """

    fc: FullyConnected | None = None

    @property
    def rescale(self) -> np.ndarray:
        return fc_rescale(self.fc)

    def to_fully_connected(self) -> FullyConnected:
        """The (trained) integers as the graph's FullyConnected; a missing bias stays missing while it is 0."""
        bias = None if self.fc.bias is None and not self.bias.any() else np.asarray(self.bias, np.int32)
        return replace(self.fc, weight=np.asarray(self.weight[:, :, 0, 0], np.int8), bias=bias)


def fc_as_conv(node: Node) -> FcConv:
    """The hidden fully connected ``node`` as the 1x1 convolution training sees (``FcConv``).

    A per-tensor weight scale serves every output channel; a missing bias is 0; channels whose weight
    scale is degenerate are frozen (QAS divides by it), as an imported convolution's."""
    from mcutrain.quant.quantize import DEGENERATE_W_SCALE

    p: FullyConnected = node.params
    k = p.weight.shape[0]
    w_scale = np.broadcast_to(np.asarray(p.w_scale, np.float32), (k,)).copy()
    bias = np.zeros(k, np.int32) if p.bias is None else np.asarray(p.bias, np.int32)
    frozen = tuple(int(c) for c in np.flatnonzero(w_scale < DEGENERATE_W_SCALE))
    return FcConv(node.name, 1, 1, p.weight[:, :, None, None].copy(), bias, w_scale, p.x, p.y, p.qmin, p.qmax,
                  frozen, None, (0, 0, 0, 0), fc=p)


def hidden_fully_connected(g: "QGraph") -> set[int]:
    """Indices of the fully connected nodes that are not the classifier (``graph_head.classifier_node``;
    a graph without one: every fully connected node)."""
    from mcutrain.quant.graph_head import NoClassifier, classifier_node

    try:
        head = classifier_node(g)[0]
    except NoClassifier:
        head = None
    return {i for i, n in enumerate(g.nodes) if n.kind == "fully_connected" and i != head}


@dataclass(frozen=True)
class Reshape:
    channels_last: bool = False  # flatten [N, C, H, W] in (H, W, C) order, as TFLite's NHWC does


@dataclass(frozen=True)
class Softmax:
    beta: float
    x: QTensor
    y: QTensor


@dataclass(frozen=True)
class GraphTensor:
    name: str
    shape: tuple[int, ...]  # NCHW for 4-D tensors, [N, K] for vectors
    q: QTensor


@dataclass(frozen=True, eq=False)
class Node:
    """One node of a graph (int8 here, float in ``models.float_graph``): ``params`` per ``kind``."""

    kind: str
    name: str
    inputs: tuple[str, ...]
    output: str
    params: object = None  # None for kinds without parameters (a float relu)


@dataclass(frozen=True, eq=False)
class QGraph:
    tensors: tuple[GraphTensor, ...]
    nodes: tuple[Node, ...]
    input: str
    output: str
    provenance: dict = field(default_factory=dict)

    @cached_property
    def tensor(self) -> dict[str, GraphTensor]:
        return {t.name: t for t in self.tensors}

    def __eq__(self, other) -> bool:
        """Same network: tensors, nodes and their integers (provenance, a note on origin, is ignored)."""
        return isinstance(other, QGraph) and all(
            deep_equal(getattr(self, f), getattr(other, f)) for f in ("tensors", "nodes", "input", "output"))

    __hash__ = None  # type: ignore[assignment]

    def convs(self) -> list[QConv]:
        """The convolutions in forward order (index i is conv i, as schemes address them).

        A fully connected layer before the classifier counts as a convolution (``fc_as_conv``: the 1x1
        conv over [N, C, 1, 1] that computes it), in node order with the others; the classifier does not
        (it is always trained, as the zoo's)."""
        hidden = hidden_fully_connected(self)
        return [n.params if n.kind == "conv2d" else fc_as_conv(n) for i, n in enumerate(self.nodes)
                if n.kind == "conv2d" or i in hidden]

    def validate(self) -> "QGraph":
        """Raise GraphError unless every node's shapes and quantization chain; returns self."""
        validate(self)
        return self

    def describe(self) -> str:
        return describe(self)


def deep_equal(a, b) -> bool:
    """Structural equality of graph data: dataclasses field by field, arrays by dtype and value."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b))
    if is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(deep_equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(map(deep_equal, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(deep_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


# ----------------------------------------------------------------------------------------------
# Validation: shapes chain, quantization matches the tensors
# ----------------------------------------------------------------------------------------------


def validate(g: QGraph) -> None:
    names = [t.name for t in g.tensors]
    if len(set(names)) != len(names):
        raise GraphError("tensor names are not unique")
    tensors = g.tensor
    if g.input not in tensors or g.output not in tensors:
        raise GraphError(f"graph input '{g.input}' or output '{g.output}' is not a tensor")
    ready = {g.input}
    for i, node in enumerate(g.nodes):
        where = f"node {i} ({node.kind} '{node.name}')"
        if node.kind not in KINDS:
            raise GraphError(f"{where}: unknown kind; expected one of {', '.join(KINDS)}")
        for name in node.inputs:
            if name not in ready:
                raise GraphError(f"{where}: input '{name}' is not computed before it (order is not topological)")
        if node.output not in tensors or node.output in ready:
            raise GraphError(f"{where}: output '{node.output}' is unknown or computed twice")
        ins = [tensors[n] for n in node.inputs]
        expected = _out_shape(node, [t.shape for t in ins], where)
        out = tensors[node.output]
        if expected is not None and tuple(out.shape) != tuple(expected):
            raise GraphError(f"{where}: output shape {out.shape}, inputs give {tuple(expected)}")
        _check_quant(node, ins, out, where)
        ready.add(node.output)
    if g.output not in ready:
        raise GraphError(f"graph output '{g.output}' is never computed")


def _out_shape(node: Node, shapes: list[tuple[int, ...]], where: str) -> tuple[int, ...] | None:
    k, p = node.kind, node.params
    need = 2 if k == "add" else 1
    if len(shapes) != need:
        raise GraphError(f"{where}: {len(shapes)} inputs, expected {need}")
    s = shapes[0]
    if k in ("conv2d", "avgpool", "maxpool", "mean") and len(s) != 4:
        raise GraphError(f"{where}: input shape {s} is not [N, C, H, W]")
    if k == "conv2d":
        return _conv_shape(p, s, where)
    if k in ("avgpool", "maxpool"):
        oh, ow = p.out_hw(s[2], s[3])
        if oh < 1 or ow < 1 or min(p.kernel) < 1 or min(p.strides) < 1:
            raise GraphError(f"{where}: window {p.kernel} stride {p.strides} does not fit input {s}")
        return (s[0], s[1], oh, ow)
    if k == "mean":
        return (s[0], s[1], 1, 1) if p.keep_dims else (s[0], s[1])
    if k == "add":
        if shapes[0] != shapes[1]:
            raise GraphError(f"{where}: adds shapes {shapes[0]} and {shapes[1]} (must be equal)")
        return s
    if k == "fully_connected":
        if len(s) != 2 or s[1] != p.weight.shape[1]:
            raise GraphError(f"{where}: input {s} does not match weights {p.weight.shape}")
        return (s[0], p.weight.shape[0])
    if k == "reshape":
        return None  # any shape with the same elements (checked in _check_quant)
    return s  # softmax


def _conv_shape(p: QConv, s: tuple[int, ...], where: str) -> tuple[int, ...]:
    if s[1] != p.in_ch:
        raise GraphError(f"{where}: input has {s[1]} channels, weights expect {p.in_ch}")
    if p.depthwise and not (p.groups == p.out_ch == p.in_ch):
        raise GraphError(f"{where}: grouped convolution is supported only as depthwise (multiplier 1)")
    oh, ow = p.out_hw(s[2], s[3])
    if oh < 1 or ow < 1:
        raise GraphError(f"{where}: kernel {p.kernel_hw} does not fit input {s[2]}x{s[3]}")
    return (s[0], p.out_ch, oh, ow)


def _check_quant(node: Node, ins: list[GraphTensor], out: GraphTensor, where: str) -> None:
    p = node.params
    if node.kind == "reshape":
        if int(np.prod(ins[0].shape)) != int(np.prod(out.shape)) or ins[0].q != out.q:
            raise GraphError(f"{where}: reshape {ins[0].shape} -> {out.shape} must keep elements and quantization")
        return
    pairs = [(p.a, ins[0]), (p.b, ins[1])] if node.kind == "add" else [(p.x, ins[0])]
    pairs.append((p.y, out))
    for q, t in pairs:
        if q != t.q:
            raise GraphError(f"{where}: quantization {q} differs from tensor '{t.name}' {t.q}")


# ----------------------------------------------------------------------------------------------
# describe(): one line per node
# ----------------------------------------------------------------------------------------------


def describe(g: QGraph) -> str:
    """The graph as text, one line per node (kind, geometry, shapes, weights, MACs), like torch.fx's."""
    tensors = g.tensor
    lines = [f"input {g.input} {list(tensors[g.input].shape)} scale={tensors[g.input].q.scale:.6g} "
             f"zero={tensors[g.input].q.zero}"]
    total_w = total_macs = 0
    for i, node in enumerate(g.nodes):
        shape_in = " + ".join(str(list(tensors[n].shape)) for n in node.inputs)
        shape_out = list(tensors[node.output].shape)
        weights, macs = node_cost(node, tensors[node.output].shape)
        total_w, total_macs = total_w + weights, total_macs + macs
        lines.append(f"%{i:<3} {node.kind:<15} {_geometry(node):<34} {shape_in} -> {shape_out}"
                     f"  w={weights} macs={macs}  ({node.name})")
    lines.append(f"output {g.output}: {len(g.nodes)} nodes, {total_w} weights, {total_macs} MACs")
    return "\n".join(lines)


def node_cost(node: Node, out_shape: tuple[int, ...]) -> tuple[int, int]:
    """(number of weights, multiply-accumulates) of one node for one input of the batch."""
    if node.kind == "conv2d":
        p = node.params
        per_out = p.weight.shape[1] * p.kernel_hw[0] * p.kernel_hw[1]
        return int(p.weight.size), int(np.prod(out_shape[1:])) * per_out
    if node.kind == "fully_connected":
        return int(node.params.weight.size), int(node.params.weight.size)
    return 0, 0


def _act(qmin: int, qmax: int, zero: int) -> str:
    if qmin == -128 and qmax == 127:
        return ""
    return f" clamp[{qmin},{qmax}]" if qmin != zero or qmax != 127 else " relu"


def _geometry(node: Node) -> str:
    p = node.params
    if node.kind == "conv2d":
        (kh, kw), (sh, sw) = p.kernel_hw, p.strides
        dw = " dw" if p.depthwise else ""
        return f"k{kh}x{kw} s{sh}x{sw} pad{p.padding}{dw}{_act(p.qmin, p.qmax, p.y.zero)}"
    if node.kind in ("avgpool", "maxpool"):
        return f"k{p.kernel[0]}x{p.kernel[1]} s{p.strides[0]}x{p.strides[1]} pad{p.pad}{_act(p.qmin, p.qmax, p.y.zero)}"
    if node.kind == "mean":
        return f"over H,W keep_dims={p.keep_dims}"
    if node.kind == "add":
        return _act(p.qmin, p.qmax, p.y.zero).strip()
    if node.kind == "fully_connected":
        return f"{p.weight.shape[1]}->{p.weight.shape[0]}{_act(p.qmin, p.qmax, p.y.zero)}"
    if node.kind == "reshape":
        return "HWC order" if p.channels_last else ""
    return f"beta={p.beta:g}"
