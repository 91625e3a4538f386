"""FloatGraph: a float network as a graph of a few TinyML operators, imported from PyTorch (issue 13 item 4).

Why: a user's own PyTorch model (a MobileNetV2 written the torchvision way, a plain CNN, a small ResNet)
is not one of the zoo's classes, so it cannot be a float checkpoint of ``train.checkpoint``. A
FloatGraph holds such a network as frozen data: named tensors (NCHW, batch first) and nodes in
topological order, plus how uint8 pixels become its input. ``torch_import`` makes one from an
``nn.Module``; ``quant.quantize_graph`` turns it into an int8 ``QGraph``; ``run_float`` computes it
with torch (to check an import against the module, and to calibrate).

Node kinds and their parameters:
  conv2d          Conv2d: float weight [O, I/groups, kh, kw], optional bias, stride per axis, padding
                  (top, bottom, left, right) of zeros, groups 1 or depthwise (groups == I == O)
  batchnorm       BatchNorm: eval statistics, kept separate (folded into the conv at quantization)
  relu, relu6     no parameters
  add             two tensors of one shape
  avgpool         Pool2d: windows clipped at the border (padding is never averaged)
  maxpool         Pool2d
  global_avgpool  GlobalAvgPool: the mean over H and W, [N, C, 1, 1] (keep_dims) or [N, C]
  flatten         [N, C, H, W] -> [N, C*H*W] in PyTorch's (C, H, W) order
  linear          Linear: float weight [K, C], optional bias

Preprocessing (``InputPreprocessing``): ImageNet style ``x_c = (pixel / 255 - mean_c) / std_c`` with
one mean and std per channel, or one ``x = (pixel - offset) * scale`` for every channel.

File: a container (``io.container``) of kind ``mcutrain-float-graph`` version 1; the meta holds the
structure, the tensors the weights (``<node>.weight`` ...). ``load_float_graph`` validates everything
a hostile file could forge (types, ranges, names, shapes, finite values) and never unpickles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mcutrain.errors import CheckpointError, ModelError, one_line
from mcutrain.io.container import read_container, write_container
from mcutrain.quant.graph import Node  # the same node record as the int8 graph
from mcutrain.train.checkpoint import MAX_ABS_VALUE, meta_dict, meta_int, meta_list, meta_number, meta_str, shown

KIND = "mcutrain-float-graph"
VERSION = 1
KINDS = ("conv2d", "batchnorm", "relu", "relu6", "add", "avgpool", "maxpool", "global_avgpool", "flatten", "linear")
MAX_NODES = 4096
MAX_SIDE = 4096  # input height/width
MAX_CHANNELS = 65536
MAX_KERNEL = 64  # kernel, stride and padding sides
MAX_NAME = 256


class FloatGraphError(ModelError):
    """A FloatGraph whose structure, shapes or values do not hold together."""


@dataclass(frozen=True, kw_only=True)
class InputPreprocessing:
    """How uint8 pixels become the network input: per-channel ``mean``/``std`` (on pixel / 255, both
    given) or else one ``offset``/``scale`` (on pixels)."""

    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    offset: float = 128.0
    scale: float = 1.0 / 128.0

    @property
    def per_channel(self) -> bool:
        return bool(self.mean)

    def pixel_affine(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """(offset_c, scale_c) in float64, pixels: ``x_c = (pixel - offset_c) * scale_c``."""
        if not self.per_channel:
            return np.full(channels, float(self.offset)), np.full(channels, float(self.scale))
        mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
        return mean * 255.0, 1.0 / (std * 255.0)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float pixels [N, C, H, W] (0..255) -> the network input, in the pixels' dtype."""
        offset, scale = self.pixel_affine(pixels.shape[1])
        shape = (1, -1, 1, 1)
        return (pixels - torch.from_numpy(offset).to(pixels.dtype).view(shape)) * \
            torch.from_numpy(scale).to(pixels.dtype).view(shape)

    def to_dict(self) -> dict:
        if self.per_channel:
            return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}
        return {"offset": float(self.offset), "scale": float(self.scale)}

    @classmethod
    def from_dict(cls, d, channels: int) -> "InputPreprocessing":
        """Validated (``CheckpointError`` naming the bad field)."""
        if isinstance(d, dict) and "mean" in d:
            meta_dict(d, "preprocessing", ("mean", "std"), ())
            mean = [meta_number(v, f"preprocessing.mean[{i}]", 0.0, 1.0)
                    for i, v in enumerate(meta_list(d["mean"], "preprocessing.mean", channels))]
            std = [meta_number(v, f"preprocessing.std[{i}]", 1.0 / 255.0, 1e6)
                   for i, v in enumerate(meta_list(d["std"], "preprocessing.std", channels))]
            return cls(mean=tuple(mean), std=tuple(std))
        meta_dict(d, "preprocessing", ("offset", "scale"), ())
        return cls(offset=meta_number(d["offset"], "preprocessing.offset", 0.0, 255.0),
                   scale=meta_number(d["scale"], "preprocessing.scale", 1e-6, 1.0))


@dataclass(frozen=True, eq=False)
class Conv2d:
    weight: np.ndarray  # float32 [O, I/groups, kh, kw]
    bias: np.ndarray | None  # float32 [O]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]  # (top, bottom, left, right), zeros
    groups: int = 1


@dataclass(frozen=True, eq=False)
class BatchNorm:
    weight: np.ndarray  # float32 [C] (gamma)
    bias: np.ndarray  # float32 [C] (beta)
    running_mean: np.ndarray
    running_var: np.ndarray
    eps: float


@dataclass(frozen=True)
class Pool2d:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]  # (top, bottom, left, right): windows are clipped, never padded


@dataclass(frozen=True)
class GlobalAvgPool:
    keep_dims: bool


@dataclass(frozen=True, eq=False)
class Linear:
    weight: np.ndarray  # float32 [K, C]
    bias: np.ndarray | None  # float32 [K]


@dataclass(frozen=True, eq=False)
class FloatGraph:
    nodes: tuple[Node, ...]
    input: str
    output: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    preprocessing: InputPreprocessing = InputPreprocessing()
    classes: tuple[str, ...] = ()  # names of the output's classes; empty: "0".."K-1"
    provenance: dict = field(default_factory=dict)

    @cached_property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape without the batch dimension (validated)."""
        return infer_shapes(self)

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def producer(self, tensor: str) -> Node | None:
        return next((n for n in self.nodes if n.output == tensor), None)

    @property
    def num_outputs(self) -> int:
        return int(np.prod(self.shapes[self.output]))


# ---------------------------------------------------------------------------------------------- shapes


def infer_shapes(g: FloatGraph) -> dict[str, tuple[int, ...]]:
    """Tensor shapes (batch excluded); ``FloatGraphError`` naming the node whose shapes do not chain."""
    c, h, w = g.input_shape
    if not (1 <= c <= MAX_CHANNELS and 1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise FloatGraphError(f"input shape {g.input_shape} out of range (channels 1..{MAX_CHANNELS}, "
                              f"sides 1..{MAX_SIDE})")
    if len(g.nodes) > MAX_NODES:
        raise FloatGraphError(f"{len(g.nodes)} nodes, over the limit of {MAX_NODES}")
    shapes: dict[str, tuple[int, ...]] = {g.input: (c, h, w)}
    names: set[str] = set()
    for i, node in enumerate(g.nodes):
        where = f"node {i} ({node.kind} '{node.name}')"
        if node.name in names:
            raise FloatGraphError(f"{where}: node name used twice")
        names.add(node.name)
        missing = [t for t in node.inputs if t not in shapes]
        if missing:
            raise FloatGraphError(f"{where}: input '{missing[0]}' is not computed before it")
        if node.output in shapes:
            raise FloatGraphError(f"{where}: output '{node.output}' is computed twice")
        shapes[node.output] = _node_shape(node, [shapes[t] for t in node.inputs], where)
    if g.output not in shapes:
        raise FloatGraphError(f"graph output '{g.output}' is never computed")
    return shapes


def _node_shape(node: Node, ins: list[tuple[int, ...]], where: str) -> tuple[int, ...]:
    if node.kind not in KINDS:
        raise FloatGraphError(f"{where}: unknown kind; expected one of {', '.join(KINDS)}")
    need = 2 if node.kind == "add" else 1
    if len(ins) != need:
        raise FloatGraphError(f"{where}: {len(ins)} inputs, expected {need}")
    s, p = ins[0], node.params
    if node.kind in ("linear",) and len(s) != 1:
        raise FloatGraphError(f"{where}: input shape {list(s)} is not [N, C]")
    if node.kind not in ("add", "relu", "relu6", "linear") and len(s) != 3:
        raise FloatGraphError(f"{where}: input shape {list(s)} is not [N, C, H, W]")
    if node.kind == "conv2d":
        return _conv_shape(p, s, where)
    if node.kind == "batchnorm":
        _check_vectors(where, s[0], p.weight, p.bias, p.running_mean, p.running_var)
        return s
    if node.kind in ("avgpool", "maxpool"):
        _check_geometry(where, p.kernel, p.stride, p.padding)
        (kh, kw), (t, b, left, r) = p.kernel, p.padding
        if max(t, b) >= kh or max(left, r) >= kw:  # else a window could hold padding only
            raise FloatGraphError(f"{where}: padding {tuple(p.padding)} must be smaller than the window {kh}x{kw}")
        return (s[0],) + _out_hw(s, p.kernel, p.stride, p.padding, where)
    if node.kind == "global_avgpool":
        return (s[0], 1, 1) if p.keep_dims else (s[0],)
    if node.kind == "flatten":
        return (int(np.prod(s)),)
    if node.kind == "linear":
        if p.weight.ndim != 2 or p.weight.shape[1] != s[0] or not 1 <= p.weight.shape[0] <= MAX_CHANNELS:
            raise FloatGraphError(f"{where}: weight {list(p.weight.shape)} does not take {s[0]} inputs")
        _check_vectors(where, p.weight.shape[0], *([p.bias] if p.bias is not None else []))
        return (int(p.weight.shape[0]),)
    if node.kind == "add" and ins[0] != ins[1]:
        raise FloatGraphError(f"{where}: adds shapes {list(ins[0])} and {list(ins[1])} (must be equal)")
    return s  # add, relu, relu6


def _conv_shape(p: Conv2d, s: tuple[int, ...], where: str) -> tuple[int, ...]:
    if p.weight.ndim != 4:
        raise FloatGraphError(f"{where}: weight shape {list(p.weight.shape)} is not [O, I/groups, kh, kw]")
    o, i_g, kh, kw = (int(v) for v in p.weight.shape)
    _check_geometry(where, (kh, kw), p.stride, p.padding)
    if not 1 <= o <= MAX_CHANNELS:
        raise FloatGraphError(f"{where}: {o} output channels, expected 1..{MAX_CHANNELS}")
    if p.groups != 1 and not (p.groups == s[0] == o and i_g == 1):
        raise FloatGraphError(f"{where}: groups={p.groups} with {s[0]} inputs and {o} outputs; only groups 1 "
                              f"or depthwise (groups = input channels = output channels) are supported")
    if i_g * p.groups != s[0]:
        raise FloatGraphError(f"{where}: the input has {s[0]} channels, the weight takes {i_g * p.groups}")
    _check_vectors(where, o, *([p.bias] if p.bias is not None else []))
    return (int(o),) + _out_hw(s, (kh, kw), p.stride, p.padding, where)


def _check_geometry(where: str, kernel, stride, padding) -> None:
    values = list(kernel) + list(stride)
    if len(kernel) != 2 or len(stride) != 2 or len(padding) != 4 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values + list(padding)):
        raise FloatGraphError(f"{where}: kernel {kernel}, stride {stride}, padding {padding} are not integers "
                              f"(2, 2 and 4 of them)")
    if min(values) < 1 or max(values + list(padding)) > MAX_KERNEL or min(padding) < 0:
        raise FloatGraphError(f"{where}: kernel {tuple(kernel)}, stride {tuple(stride)}, padding {tuple(padding)} "
                              f"out of range (kernel and stride 1..{MAX_KERNEL}, padding 0..{MAX_KERNEL})")


def _out_hw(s, kernel, stride, padding, where: str) -> tuple[int, int]:
    (kh, kw), (sh, sw), (t, b, left, r) = kernel, stride, padding
    oh, ow = (s[1] + t + b - kh) // sh + 1, (s[2] + left + r - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise FloatGraphError(f"{where}: window {kh}x{kw} does not fit the padded input {s[1]}x{s[2]}")
    return oh, ow


def _check_vectors(where: str, n: int, *vectors: np.ndarray) -> None:
    for v in vectors:
        if v.shape != (n,):
            raise FloatGraphError(f"{where}: a parameter vector has shape {list(v.shape)}, expected [{n}]")


# ---------------------------------------------------------------------------------------------- forward


def run_float(g: FloatGraph, x: torch.Tensor,
              observe: Callable[[str, torch.Tensor], None] | None = None) -> torch.Tensor:
    """The graph's forward on the normalised input ``x`` [N, C, H, W], in ``x``'s float dtype; ``observe``
    sees every tensor (the input too) by name."""
    values = {g.input: x}
    if observe is not None:
        observe(g.input, x)
    for node in g.nodes:
        values[node.output] = run_node(node, [values[t] for t in node.inputs])
        if observe is not None:
            observe(node.output, values[node.output])
    return values[g.output]


def _t(a: np.ndarray | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.asarray(a)).to(like.dtype)


def run_node(node: Node, ins: list[torch.Tensor]) -> torch.Tensor:
    x, p, k = ins[0], node.params, node.kind
    if k == "conv2d":
        t, b, left, r = p.padding
        return F.conv2d(F.pad(x, (left, r, t, b)), _t(p.weight, x), _t(p.bias, x), p.stride, 0, 1, p.groups)
    if k == "batchnorm":
        return F.batch_norm(x, _t(p.running_mean, x), _t(p.running_var, x), _t(p.weight, x), _t(p.bias, x),
                            False, 0.0, p.eps)
    if k == "relu":
        return F.relu(x)
    if k == "relu6":
        return F.hardtanh(x, 0.0, 6.0)
    if k == "add":
        return x + ins[1]
    if k in ("avgpool", "maxpool"):
        return _pool(k, x, p)
    if k == "global_avgpool":
        return x.mean(dim=(2, 3), keepdim=p.keep_dims)
    if k == "flatten":
        return x.reshape(x.shape[0], -1)
    if k == "linear":
        return F.linear(x, _t(p.weight, x), _t(p.bias, x))
    raise FloatGraphError(f"unknown node kind {k!r}")


def _pool(kind: str, x: torch.Tensor, p: Pool2d) -> torch.Tensor:
    """Windows clipped to the input: max pads with -inf, the average divides by the count inside."""
    t, b, left, r = p.padding
    if kind == "maxpool":
        return F.max_pool2d(F.pad(x, (left, r, t, b), value=-math.inf), p.kernel, p.stride)
    sums = F.avg_pool2d(F.pad(x, (left, r, t, b)), p.kernel, p.stride, divisor_override=1)
    ones = F.pad(torch.ones_like(x[:1, :1]), (left, r, t, b))
    return sums / F.avg_pool2d(ones, p.kernel, p.stride, divisor_override=1)


# ---------------------------------------------------------------------------------------------- file


_ARRAYS = {"conv2d": ("weight", "bias"), "batchnorm": ("weight", "bias", "running_mean", "running_var"),
           "linear": ("weight", "bias")}


def graph_tensors(g: FloatGraph) -> dict[str, np.ndarray]:
    """The graph's weights under the names the file uses: ``<node>.<field>``."""
    out = {}
    for node in g.nodes:
        for name in _ARRAYS.get(node.kind, ()):
            value = getattr(node.params, name)
            if value is not None:
                out[f"{node.name}.{name}"] = np.ascontiguousarray(value, np.float32)
    return out


def _node_meta(node: Node) -> dict:
    d = {"kind": node.kind, "name": node.name, "inputs": list(node.inputs), "output": node.output}
    p = node.params
    if node.kind == "conv2d":
        d.update(stride=list(p.stride), padding=list(p.padding), groups=p.groups)
    elif node.kind == "batchnorm":
        d["eps"] = float(p.eps)
    elif node.kind in ("avgpool", "maxpool"):
        d.update(kernel=list(p.kernel), stride=list(p.stride), padding=list(p.padding))
    elif node.kind == "global_avgpool":
        d["keep_dims"] = bool(p.keep_dims)
    return d


def graph_meta(g: FloatGraph) -> dict:
    return {"input": g.input, "output": g.output, "input_shape": list(g.input_shape),
            "preprocessing": g.preprocessing.to_dict(), "classes": list(g.classes),
            "nodes": [_node_meta(n) for n in g.nodes], "provenance": g.provenance}


def save_float_graph(path, g: FloatGraph) -> None:
    """Write ``g`` atomically; a graph that ``load_float_graph`` would refuse is refused here."""
    meta, tensors = graph_meta(g), graph_tensors(g)
    try:
        graph_from_file(meta, tensors)
    except (CheckpointError, FloatGraphError) as err:
        raise CheckpointError(f"refusing to write {path}: {err}") from None
    write_container(path, KIND, VERSION, meta, tensors)


def load_float_graph(path) -> FloatGraph:
    """The FloatGraph of a file; anything wrong in it is one ``CheckpointError`` line naming it."""
    meta, tensors = read_container(path, KIND, (VERSION,))
    try:
        return graph_from_file(meta, tensors)
    except (CheckpointError, FloatGraphError) as err:
        raise CheckpointError(f"{path}: {one_line(str(err))}") from None


def graph_from_file(meta: dict, tensors: dict[str, np.ndarray]) -> FloatGraph:
    meta_dict(meta, "", ("input", "output", "input_shape", "preprocessing", "classes", "nodes"), ("provenance",))
    shape = tuple(meta_int(v, f"input_shape[{i}]", 1, MAX_SIDE if i else MAX_CHANNELS)
                  for i, v in enumerate(meta_list(meta["input_shape"], "input_shape", 3)))
    nodes_meta = meta_list(meta["nodes"], "nodes")
    if len(nodes_meta) > MAX_NODES:
        raise CheckpointError(f"nodes: {len(nodes_meta)} entries, over the limit of {MAX_NODES}")
    used: set[str] = set()
    nodes = tuple(_node_from_meta(d, i, tensors, used) for i, d in enumerate(nodes_meta))
    unused = sorted(set(tensors) - used)
    if unused:
        raise CheckpointError(f"tensor {shown(unused[0])} belongs to no node ({len(unused)} such tensors)")
    classes = [_name(v, f"classes[{i}]") for i, v in enumerate(meta_list(meta["classes"], "classes"))]
    provenance = meta_dict(meta.get("provenance", {}), "provenance")
    g = FloatGraph(nodes, _name(meta["input"], "input"), _name(meta["output"], "output"), shape,  # type: ignore
                   InputPreprocessing.from_dict(meta["preprocessing"], shape[0]), tuple(classes), dict(provenance))
    _ = g.shapes  # validates the structure
    if classes and (len(g.shapes[g.output]) != 1 or len(classes) != g.num_outputs or len(set(classes)) != len(classes)):
        raise CheckpointError(f"classes: {len(classes)} distinct names needed, one per output "
                              f"{list(g.shapes[g.output])}")
    return g


def _name(value, where: str) -> str:
    text = meta_str(value, where)
    if not 1 <= len(text) <= MAX_NAME or not text.isprintable():
        raise CheckpointError(f"{where}: {shown(value)} is not a printable name of 1 to {MAX_NAME} characters")
    return text


def _ints(d: dict, key: str, where: str, n: int, lo: int, hi: int) -> tuple[int, ...]:
    values = meta_list(d[key], f"{where}.{key}", n)
    return tuple(meta_int(v, f"{where}.{key}[{i}]", lo, hi) for i, v in enumerate(values))


_FIELDS = {"conv2d": ("stride", "padding", "groups"), "batchnorm": ("eps",),
           "avgpool": ("kernel", "stride", "padding"), "maxpool": ("kernel", "stride", "padding"),
           "global_avgpool": ("keep_dims",)}


def _node_from_meta(d, i: int, tensors: dict[str, np.ndarray], used: set[str]) -> Node:
    where = f"nodes[{i}]"
    meta_dict(d, where, ("kind", "name", "inputs", "output"))
    kind = meta_str(d["kind"], f"{where}.kind")
    if kind not in KINDS:
        raise CheckpointError(f"{where}.kind: {shown(kind)} is not one of {', '.join(KINDS)}")
    meta_dict(d, where, ("kind", "name", "inputs", "output") + _FIELDS.get(kind, ()), ())
    name = _name(d["name"], f"{where}.name")
    inputs = tuple(_name(v, f"{where}.inputs[{j}]") for j, v in enumerate(meta_list(d["inputs"], f"{where}.inputs")))

    def array(key: str, optional: bool = False) -> np.ndarray | None:
        full = f"{name}.{key}"
        if full not in tensors:
            if optional:
                return None
            raise CheckpointError(f"{where}: tensor '{full}' is missing")
        used.add(full)
        return _finite(tensors[full], full)

    p: object = None
    if kind == "conv2d":
        p = Conv2d(array("weight"), array("bias", True), _ints(d, "stride", where, 2, 1, MAX_KERNEL),
                   _ints(d, "padding", where, 4, 0, MAX_KERNEL),
                   meta_int(d["groups"], f"{where}.groups", 1, MAX_CHANNELS))
    elif kind == "batchnorm":
        p = BatchNorm(array("weight"), array("bias"), array("running_mean"), array("running_var"),
                      meta_number(d["eps"], f"{where}.eps", 1e-12, 1.0))
        if (p.running_var < 0).any():
            raise CheckpointError(f"{name}.running_var: negative variances (must be >= 0)")
    elif kind in ("avgpool", "maxpool"):
        p = Pool2d(_ints(d, "kernel", where, 2, 1, MAX_KERNEL), _ints(d, "stride", where, 2, 1, MAX_KERNEL),
                   _ints(d, "padding", where, 4, 0, MAX_KERNEL))
    elif kind == "global_avgpool":
        if not isinstance(d["keep_dims"], bool):
            raise CheckpointError(f"{where}.keep_dims: {shown(d['keep_dims'])} is not true or false")
        p = GlobalAvgPool(d["keep_dims"])
    elif kind == "linear":
        p = Linear(array("weight"), array("bias", True))
    return Node(kind, name, inputs, _name(d["output"], f"{where}.output"), p)


def _finite(t: np.ndarray, name: str) -> np.ndarray:
    if t.dtype != np.float32:
        raise CheckpointError(f"{name} is {t.dtype}, expected float32")
    if t.size and not np.isfinite(t).all():
        raise CheckpointError(f"{name} has {int(np.count_nonzero(~np.isfinite(t)))} non-finite values")
    if t.size and float(np.abs(t).max()) > MAX_ABS_VALUE:
        raise CheckpointError(f"{name} has values of magnitude {float(np.abs(t).max()):.3g}, "
                              f"over the limit of {MAX_ABS_VALUE:g}")
    return t
