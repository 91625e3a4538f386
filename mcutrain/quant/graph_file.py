"""The int8 graph model file: an imported QGraph with its classes, in the safe container, validated on load.

Why: ``mcutrain import MODEL.tflite`` turns a user's model into a QGraph; the later commands
(export today, training later) need it back exactly, without the .tflite and without trusting the
file. The container (``mcutrain.io.container``: versioned, whole-file checksum, atomic, never
unpickled) holds it as kind ``int8-graph``, version 1:

meta (JSON)
  ``classes``        the class names, one per output of the classifier (num_classes = len, [2, 10000]);
  ``preprocessing``  the int8 input: ``scale``, ``zero`` (int8 = round(real / scale) + zero) and its
                     ``height``, ``width``, ``channels``; must equal the input tensor's quantization
                     and shape (a redundant copy, so a reader needs no graph walk to feed the model);
  ``input``, ``output``  tensor names;
  ``tensors``        ``[{name, shape, scale, zero}]``: every activation, NCHW (or [N, K]);
  ``nodes``          ``[{kind, name, inputs, output, params}]`` in topological order; ``params`` holds
                     the per-kind integers and quantizations (see ``_PARAM_KEYS``);
  ``provenance``     optional ``source`` (the imported file's name), ``format``, ``sha256`` (of the
                     imported file's bytes), ``head`` (``kept`` or ``replaced``); for a quantized PyTorch
                     import also its recipe: ``quantizer``, ``source_tensors_sha256``, ``calibration_data``
                     and the integers ``calibration_batches``, ``calibration_batch_size``, ``seed``,
                     ``range_bits``; after ``mcutrain finetune``, ``finetune``: its recipe as one line.
tensors (safetensors)
  ``nodes.<i>.weight`` int8, ``nodes.<i>.bias`` int32, ``nodes.<i>.w_scale`` float32 for convolutions
  and fully connected nodes (a fully connected node may have no bias, and one per-tensor w_scale).

Validation (on load, and before saving: a file mcutrain writes is one it reads back). Every field is
typed (``True`` is not an integer) and ranged, and a bad one is a ``CheckpointError`` whose one line
names the field and the allowed range:
  * counts: at most MAX_TENSORS tensors and MAX_NODES nodes; names 1 to MAX_NAME characters;
  * shapes: rank 2 or 4, every dimension in [1, MAX_DIM], at most MAX_ELEMENTS elements;
  * activation quantization: scale in ACTIVATION_SCALE_RANGE = [1e-9, 1e4], zero point in [-128, 127];
  * clamps: -128 <= qmin <= qmax <= 127; strides [1, 16]; pool windows [1, 4096]; padding [0, 4096];
  * weights int8 of the stated layout, biases int32, weight scales float32, finite, in (0, 1e4];
    ``frozen_channels`` strictly increasing in [0, out_channels); a convolution sums at most 2**20
    terms per output (``graph_forward``'s exact float64 sum);
  * the graph itself: ``QGraph.validate()`` (shapes chain, each node reads the quantization its input
    was written with, topological order), and every fixed-point constant derivable (the rescales
    of convolutions, fully connected layers, adds and means, as ``from_tflite`` checks on import);
  * the output is [N, K] with K = the number of classes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from mcutrain.errors import CheckpointError, McutrainError, one_line
from mcutrain.io.container import read_versioned_container, write_container
from mcutrain.quant.graph import KINDS, FullyConnected, GraphTensor, Mean, Node, Pool2d, QGraph, Reshape, Softmax
from mcutrain.quant.model_file import ACTIVATION_SCALE_RANGE, MAX_WEIGHT_SCALE
from mcutrain.quant.qmodel import QAdd, QConv, QTensor
from mcutrain.train.checkpoint import check_classes, meta_dict, meta_int, meta_list, meta_number, meta_str, shown

KIND = "int8-graph"
VERSION = 1
READS = (1,)

MAX_TENSORS = 10_000
MAX_NODES = 10_000
MAX_NAME = 4096
MAX_DIM = 65_536
MAX_ELEMENTS = 1 << 28
MAX_STRIDE = 16
MAX_WINDOW = 4096
MAX_SUM_TERMS = 2**20
MAX_BETA = 1e4
_SHA256 = re.compile(r"[0-9a-f]{64}")

_META_KEYS = ("classes", "preprocessing", "input", "output", "tensors", "nodes")
_PROVENANCE_KEYS = ("source", "format", "sha256", "head", "quantizer", "source_tensors_sha256", "calibration_data",
                    "finetune")
# What ``quant.quantize_graph`` records of its recipe (a PyTorch import), as integers.
_PROVENANCE_INTS = {"calibration_batches": (1, 1 << 20), "calibration_batch_size": (1, 1 << 20),
                    "seed": (0, 2**63 - 1), "range_bits": (1, 52)}
_HEADS = ("kept", "replaced")
_PARAM_KEYS = {
    "conv2d": ("name", "stride", "stride_w", "groups", "pad", "x", "y", "qmin", "qmax", "frozen_channels"),
    "add": ("a", "b", "y", "qmin", "qmax"),
    "avgpool": ("kernel", "strides", "pad", "x", "y", "qmin", "qmax"),
    "maxpool": ("kernel", "strides", "pad", "x", "y", "qmin", "qmax"),
    "mean": ("x", "y", "keep_dims"),
    "fully_connected": ("x", "y", "qmin", "qmax", "bias"),
    "reshape": ("channels_last",),
    "softmax": ("beta", "x", "y"),
}


@dataclass(frozen=True, eq=False)
class GraphModel:
    """What the file holds: the graph (with its provenance) and the names of its classes."""

    graph: QGraph
    classes: tuple[str, ...]

    @property
    def provenance(self) -> dict:
        return self.graph.provenance

    @property
    def preprocessing(self) -> dict:
        """The int8 input: int8 = round(real / scale) + zero, of height x width x channels."""
        t = self.graph.tensor[self.graph.input]
        return {"scale": t.q.scale, "zero": t.q.zero, "height": t.shape[2], "width": t.shape[3],
                "channels": t.shape[1]}

    def __eq__(self, other) -> bool:
        return (isinstance(other, GraphModel) and self.graph == other.graph and self.classes == other.classes
                and self.provenance == other.provenance)

    __hash__ = None  # type: ignore[assignment]


def save_graph_model(path: str | os.PathLike, model: GraphModel) -> None:
    """Write ``model``; one that ``load_graph_model`` would refuse is refused here, nothing written."""
    meta, tensors = _serialise(model)
    try:
        _build(json.loads(json.dumps(meta)), tensors)  # exactly what a reader will see and check
    except McutrainError as err:
        raise CheckpointError(f"refusing to write {path}: {one_line(str(err))}") from None
    write_container(path, KIND, VERSION, meta, tensors)


def load_graph_model(path: str | os.PathLike) -> GraphModel:
    """The graph model of ``path``; anything wrong in it is a ``CheckpointError`` naming the field."""
    _, meta, tensors = read_versioned_container(path, KIND, READS)
    try:
        return _build(meta, tensors)
    except McutrainError as err:
        raise CheckpointError(f"{path}: {one_line(str(err))}") from None
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, RecursionError) as err:
        # a gap in the checks: still one line
        raise CheckpointError(f"{path}: malformed int8 graph ({type(err).__name__}: {one_line(str(err))[:200]})") \
            from None


# ---------------------------------------------------------------------------------------------- writing


def _serialise(model: GraphModel) -> tuple[dict, dict[str, np.ndarray]]:
    g, tensors = model.graph, {}
    nodes = []
    for i, node in enumerate(g.nodes):
        params = _params_to_dict(node, f"nodes.{i}", tensors)
        nodes.append({"kind": node.kind, "name": node.name, "inputs": list(node.inputs), "output": node.output,
                      "params": params})
    meta = {
        "classes": list(model.classes), "preprocessing": _plain(model.preprocessing),
        "input": g.input, "output": g.output,
        "tensors": [{"name": t.name, "shape": [int(s) for s in t.shape], **t.q.to_dict()} for t in g.tensors],
        "nodes": nodes, "provenance": _plain(dict(g.provenance)),
    }
    return meta, tensors


def _plain(d: dict) -> dict:
    return {k: (float(v) if isinstance(v, (float, np.floating)) else int(v) if isinstance(v, np.integer) else v)
            for k, v in d.items()}


def _params_to_dict(node: Node, prefix: str, tensors: dict[str, np.ndarray]) -> dict:
    p, kind = node.params, node.kind
    if kind == "conv2d":
        tensors.update({f"{prefix}.weight": p.weight, f"{prefix}.bias": p.bias, f"{prefix}.w_scale": p.w_scale})
        return {"name": p.name, "stride": int(p.stride), "stride_w": None if p.stride_w is None else int(p.stride_w),
                "groups": int(p.groups), "pad": None if p.pad is None else [int(v) for v in p.pad],
                "x": p.x.to_dict(), "y": p.y.to_dict(), "qmin": int(p.qmin), "qmax": int(p.qmax),
                "frozen_channels": [int(c) for c in p.frozen_channels]}
    if kind == "fully_connected":
        tensors.update({f"{prefix}.weight": p.weight, f"{prefix}.w_scale": p.w_scale})
        if p.bias is not None:
            tensors[f"{prefix}.bias"] = p.bias
        return {"x": p.x.to_dict(), "y": p.y.to_dict(), "qmin": int(p.qmin), "qmax": int(p.qmax),
                "bias": p.bias is not None}
    if kind == "add":
        return {"a": p.a.to_dict(), "b": p.b.to_dict(), "y": p.y.to_dict(), "qmin": int(p.qmin), "qmax": int(p.qmax)}
    if kind in ("avgpool", "maxpool"):
        return {"kernel": [int(v) for v in p.kernel], "strides": [int(v) for v in p.strides],
                "pad": [int(v) for v in p.pad], "x": p.x.to_dict(), "y": p.y.to_dict(),
                "qmin": int(p.qmin), "qmax": int(p.qmax)}
    if kind == "mean":
        return {"x": p.x.to_dict(), "y": p.y.to_dict(), "keep_dims": bool(p.keep_dims)}
    if kind == "reshape":
        return {"channels_last": bool(p.channels_last)}
    return {"beta": float(p.beta), "x": p.x.to_dict(), "y": p.y.to_dict()}


# ---------------------------------------------------------------------------------------------- reading


def _build(meta: dict, arrays: dict[str, np.ndarray]) -> GraphModel:
    meta_dict(meta, "", _META_KEYS, ("provenance",))
    tensors = tuple(_graph_tensor(t, i) for i, t in enumerate(_bounded_list(meta["tensors"], "tensors", MAX_TENSORS)))
    used: set[str] = set()
    nodes = tuple(_node(n, i, arrays, used) for i, n in enumerate(_bounded_list(meta["nodes"], "nodes", MAX_NODES)))
    unexpected = sorted(set(arrays) - used)
    if unexpected:
        raise CheckpointError(f"tensor {shown(unexpected[0])} belongs to no node "
                              f"({len(unexpected)} unexpected tensors)")
    graph = QGraph(tensors, nodes, _name(meta["input"], "input"), _name(meta["output"], "output"),
                   _provenance(meta.get("provenance", {})))
    graph.validate()  # GraphError is a McutrainError: one line naming the node
    for i, node in enumerate(nodes):
        _check_arithmetic(node, i)
    names = meta_list(meta["classes"], "classes")
    _, classes = check_classes(len(names), names)
    out = graph.tensor[graph.output]
    if len(out.shape) != 2 or out.shape[1] != len(classes):
        raise CheckpointError(f"classes: {len(classes)} names, but the output '{one_line(out.name)[:80]}' has shape "
                              f"{list(out.shape)} (expected [N, {len(classes)}])")
    model = GraphModel(graph, classes)
    _check_preprocessing(meta["preprocessing"], model)
    return model


def _bounded_list(value: Any, field: str, most: int) -> list:
    items = meta_list(value, field)
    if len(items) > most:
        raise CheckpointError(f"{field}: {len(items)} entries, at most {most}")
    return items


def _name(value: Any, field: str) -> str:
    text = meta_str(value, field)
    if not 1 <= len(text) <= MAX_NAME:
        raise CheckpointError(f"{field}: a name of {len(text)} characters, expected 1 to {MAX_NAME}")
    return text


def _qtensor(d: Any, field: str) -> QTensor:
    d = meta_dict(d, field, ("scale", "zero"), ())
    return QTensor(meta_number(d["scale"], f"{field}.scale", *ACTIVATION_SCALE_RANGE),
                   meta_int(d["zero"], f"{field}.zero", -128, 127))


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise CheckpointError(f"{field}: {shown(value)} is not true or false")
    return value


def _ints(value: Any, field: str, length: int, lo: int, hi: int) -> tuple[int, ...]:
    return tuple(meta_int(v, f"{field}[{j}]", lo, hi) for j, v in enumerate(meta_list(value, field, length)))


def _graph_tensor(entry: Any, i: int) -> GraphTensor:
    field = f"tensors[{i}]"
    d = meta_dict(entry, field, ("name", "shape", "scale", "zero"), ())
    shape = meta_list(d["shape"], f"{field}.shape")
    if len(shape) not in (2, 4):
        raise CheckpointError(f"{field}.shape: rank {len(shape)}, expected 2 ([N, K]) or 4 ([N, C, H, W])")
    shape = _ints(shape, f"{field}.shape", len(shape), 1, MAX_DIM)
    if int(np.prod(shape, dtype=object)) > MAX_ELEMENTS:
        raise CheckpointError(f"{field}.shape: {list(shape)} has more than {MAX_ELEMENTS} elements")
    return GraphTensor(_name(d["name"], f"{field}.name"), shape,
                       _qtensor({"scale": d["scale"], "zero": d["zero"]}, field))


def _node(entry: Any, i: int, arrays: dict[str, np.ndarray], used: set[str]) -> Node:
    field = f"nodes[{i}]"
    d = meta_dict(entry, field, ("kind", "name", "inputs", "output", "params"), ())
    kind = meta_str(d["kind"], f"{field}.kind")
    if kind not in KINDS:
        raise CheckpointError(f"{field}.kind: {shown(kind)} is not one of {', '.join(KINDS)}")
    inputs = tuple(_name(v, f"{field}.inputs[{j}]") for j, v in enumerate(meta_list(d["inputs"], f"{field}.inputs")))
    if not 1 <= len(inputs) <= 2:
        raise CheckpointError(f"{field}.inputs: {len(inputs)} inputs, expected 1 or 2")
    params = meta_dict(d["params"], f"{field}.params", _PARAM_KEYS[kind], ())
    built = _PARSERS[kind](params, f"{field}.params", _Arrays(arrays, f"nodes.{i}", used))
    return Node(kind, _name(d["name"], f"{field}.name"), inputs, _name(d["output"], f"{field}.output"), built)


class _Arrays:
    """The safetensors arrays of one node, each checked for its dtype and rank when taken."""

    def __init__(self, arrays: dict[str, np.ndarray], prefix: str, used: set[str]) -> None:
        self.arrays, self.prefix, self.used = arrays, prefix, used

    def take(self, part: str, dtype, rank: int) -> np.ndarray:
        name = f"{self.prefix}.{part}"
        if name not in self.arrays:
            raise CheckpointError(f"tensor {name} is missing")
        a = self.arrays[name]
        if a.dtype != dtype or a.ndim != rank or not all(1 <= s <= MAX_DIM for s in a.shape):
            raise CheckpointError(f"{name} is {a.dtype}{list(a.shape)}, expected {np.dtype(dtype)} of rank {rank} "
                                  f"with dimensions in [1, {MAX_DIM}]")
        self.used.add(name)
        return a

    def w_scale(self, sizes: tuple[int, ...]) -> np.ndarray:
        """The float32 weight scales, ``sizes`` of them, finite and in (0, MAX_WEIGHT_SCALE]."""
        w_scale = self.take("w_scale", np.float32, 1)
        if w_scale.shape[0] not in sizes:
            raise CheckpointError(f"{self.prefix}.w_scale has {w_scale.shape[0]} scales, expected "
                                  f"{' or '.join(map(str, sizes))}")
        s = w_scale.astype(np.float64)
        bad = ~np.isfinite(s) | (s <= 0) | (s > MAX_WEIGHT_SCALE)
        if bad.any():
            c = int(np.flatnonzero(bad)[0])
            raise CheckpointError(f"{self.prefix}.w_scale: {int(bad.sum())} scales outside (0, {MAX_WEIGHT_SCALE:g}] "
                                  f"or not finite (channel {c}: {s[c]!r})")
        return w_scale

    def bias(self, out: int) -> np.ndarray:
        b = self.take("bias", np.int32, 1)
        if b.shape[0] != out:
            raise CheckpointError(f"{self.prefix}.bias has {b.shape[0]} values for {out} outputs")
        return b


def _clamp(d: dict, field: str) -> tuple[int, int]:
    qmin, qmax = meta_int(d["qmin"], f"{field}.qmin", -128, 127), meta_int(d["qmax"], f"{field}.qmax", -128, 127)
    if qmin > qmax:
        raise CheckpointError(f"{field}: clamp range [{qmin}, {qmax}] is empty (needs -128 <= qmin <= qmax <= 127)")
    return qmin, qmax


def _conv(d: dict, field: str, arrays: _Arrays) -> QConv:
    weight = arrays.take("weight", np.int8, 4)
    out = weight.shape[0]
    if weight.shape[1] * weight.shape[2] * weight.shape[3] > MAX_SUM_TERMS:
        raise CheckpointError(f"{arrays.prefix}.weight {list(weight.shape)}: more than {MAX_SUM_TERMS} terms "
                              f"per output")
    w_scale = arrays.w_scale((out,))
    bias = arrays.bias(out)
    frozen = meta_list(d["frozen_channels"], f"{field}.frozen_channels")
    frozen = tuple(meta_int(c, f"{field}.frozen_channels[{j}]", 0, out - 1) for j, c in enumerate(frozen))
    if any(a >= b for a, b in zip(frozen, frozen[1:])):
        raise CheckpointError(f"{field}.frozen_channels: channel indices must be strictly increasing")
    stride_w = None if d["stride_w"] is None else meta_int(d["stride_w"], f"{field}.stride_w", 1, MAX_STRIDE)
    pad = None if d["pad"] is None else _ints(d["pad"], f"{field}.pad", 4, 0, MAX_WINDOW)
    qmin, qmax = _clamp(d, field)
    return QConv(_name(d["name"], f"{field}.name"), meta_int(d["stride"], f"{field}.stride", 1, MAX_STRIDE),
                 meta_int(d["groups"], f"{field}.groups", 1, MAX_DIM), weight, bias, w_scale,
                 _qtensor(d["x"], f"{field}.x"), _qtensor(d["y"], f"{field}.y"), qmin, qmax, frozen, stride_w, pad)


def _fully_connected(d: dict, field: str, arrays: _Arrays) -> FullyConnected:
    weight = arrays.take("weight", np.int8, 2)
    k = weight.shape[0]
    w_scale = arrays.w_scale((k, 1) if k != 1 else (1,))
    bias = arrays.bias(k) if _bool(d["bias"], f"{field}.bias") else None
    qmin, qmax = _clamp(d, field)
    return FullyConnected(weight, bias, w_scale, _qtensor(d["x"], f"{field}.x"), _qtensor(d["y"], f"{field}.y"),
                          qmin, qmax)


def _add(d: dict, field: str, arrays: _Arrays) -> QAdd:
    qmin, qmax = _clamp(d, field)
    return QAdd(_qtensor(d["a"], f"{field}.a"), _qtensor(d["b"], f"{field}.b"), _qtensor(d["y"], f"{field}.y"),
                qmin, qmax)


def _pool(d: dict, field: str, arrays: _Arrays) -> Pool2d:
    qmin, qmax = _clamp(d, field)
    return Pool2d(_ints(d["kernel"], f"{field}.kernel", 2, 1, MAX_WINDOW),
                  _ints(d["strides"], f"{field}.strides", 2, 1, MAX_STRIDE),
                  _ints(d["pad"], f"{field}.pad", 4, 0, MAX_WINDOW),
                  _qtensor(d["x"], f"{field}.x"), _qtensor(d["y"], f"{field}.y"), qmin, qmax)


def _mean(d: dict, field: str, arrays: _Arrays) -> Mean:
    return Mean(_qtensor(d["x"], f"{field}.x"), _qtensor(d["y"], f"{field}.y"),
                _bool(d["keep_dims"], f"{field}.keep_dims"))


def _reshape(d: dict, field: str, arrays: _Arrays) -> Reshape:
    return Reshape(_bool(d["channels_last"], f"{field}.channels_last"))


def _softmax(d: dict, field: str, arrays: _Arrays) -> Softmax:
    return Softmax(meta_number(d["beta"], f"{field}.beta", 1e-6, MAX_BETA), _qtensor(d["x"], f"{field}.x"),
                   _qtensor(d["y"], f"{field}.y"))


_PARSERS = {"conv2d": _conv, "fully_connected": _fully_connected, "add": _add, "avgpool": _pool, "maxpool": _pool,
            "mean": _mean, "reshape": _reshape, "softmax": _softmax}


def _check_arithmetic(node: Node, i: int) -> None:
    """The node's fixed-point constants derive (``from_tflite`` refuses the same on import)."""
    from mcutrain.quant.from_tflite import check_arithmetic as derive

    try:
        derive(node.kind, node.params, f"node {i} ({node.kind} '{one_line(node.name)[:80]}')")
    except McutrainError as err:
        raise CheckpointError(str(err)) from None


def _provenance(value: Any) -> dict:
    d = meta_dict(value, "provenance", (), _PROVENANCE_KEYS + tuple(_PROVENANCE_INTS))
    out = {}
    for key in _PROVENANCE_KEYS:
        if key in d:
            out[key] = _name(d[key], f"provenance.{key}")
    for key, (lo, hi) in _PROVENANCE_INTS.items():
        if key in d:
            out[key] = meta_int(d[key], f"provenance.{key}", lo, hi)
    for key in ("sha256", "source_tensors_sha256"):
        if key in out and not _SHA256.fullmatch(out[key]):
            raise CheckpointError(f"provenance.{key}: {shown(out[key])} is not 64 lowercase hex digits")
    if "head" in out and out["head"] not in _HEADS:
        raise CheckpointError(f"provenance.head: {shown(out['head'])} is not one of {', '.join(_HEADS)}")
    return out


def _check_preprocessing(value: Any, model: GraphModel) -> None:
    d = meta_dict(value, "preprocessing", ("scale", "zero", "height", "width", "channels"), ())
    if len(model.graph.tensor[model.graph.input].shape) != 4:
        raise CheckpointError("input: the graph's input must be an image, [N, C, H, W]")
    expected = model.preprocessing
    for key in ("scale", "zero", "height", "width", "channels"):
        if type(d[key]) is not type(expected[key]) or d[key] != expected[key]:
            raise CheckpointError(f"preprocessing.{key}: {shown(d[key])}, but the input tensor has "
                                  f"{expected[key]!r}")
