"""The int8 model file: a QModel in the safe container, checked against its architecture on load.

Integers and scales are stored as tensors (``<conv name>.weight`` int8, ``.bias`` int32,
``.w_scale`` float32); per-tensor quantization parameters and the architecture go in the JSON
metadata. Loading refuses wrong dtypes, wrong shapes, non-finite or non-positive scales and zero
points outside int8, naming the offending tensor, so a bad file never reaches an executor.

Versions: 1 names a zoo architecture (meta ``arch``); 2 also embeds the architecture (meta ``spec``,
the JSON of docs/own-model.md), which is what the file is checked against and built from, even when
``arch`` is a zoo name with other layers (the file is the truth). Version 2 is written whenever the
architecture is not a zoo network verbatim; zoo networks are still written as version 1, byte-identical
to earlier files, whose sha256 keys the bundled contribution analysis (``models.zoo.spec_to_embed``).
"""

from __future__ import annotations

import os

import numpy as np

from mcutrain.errors import CheckpointError, McutrainError
from mcutrain.io.container import read_versioned_container, write_container
from mcutrain.models import conv_shapes
from mcutrain.models.zoo import spec_of_file, spec_to_embed
from mcutrain.quant.qmodel import QAdd, QBlock, QConv, QLinear, QModel, QPool, QTensor

KIND = "int8-model"
VERSION = 2  # the newest; see the module docstring
READS = (1, 2)


def save_qmodel(path: str | os.PathLike, model: QModel) -> None:
    tensors: dict[str, np.ndarray] = {}
    convs = []
    for conv in model.convs():
        tensors[f"{conv.name}.weight"] = conv.weight
        tensors[f"{conv.name}.bias"] = conv.bias
        tensors[f"{conv.name}.w_scale"] = conv.w_scale
        convs.append({"name": conv.name, "stride": conv.stride, "groups": conv.groups,
                      "x": conv.x.to_dict(), "y": conv.y.to_dict(), "qmin": conv.qmin, "qmax": conv.qmax,
                      "frozen_channels": list(conv.frozen_channels)})
    tensors["classifier.weight"] = model.classifier.weight
    tensors["classifier.bias"] = model.classifier.bias
    tensors["classifier.w_scale"] = model.classifier.w_scale
    meta = {
        "arch": model.spec.name, "num_classes": model.num_classes, "resolution": model.resolution,
        "classes": list(model.classes), "preprocessing": model.preprocessing,
        "input": model.input.to_dict(), "convs": convs,
        "adds": [_add_to_dict(b.add) for b in model.blocks],
        "pool": {"x": model.pool.x.to_dict(), "y": model.pool.y.to_dict()},
        "classifier": {"x": model.classifier.x.to_dict()}, "provenance": model.provenance,
    }
    spec = spec_to_embed(model.spec)
    if spec is not None:
        meta["spec"] = spec
    write_container(path, KIND, VERSION if spec is not None else 1, meta, tensors)


def load_qmodel(path: str | os.PathLike) -> QModel:
    version, meta, tensors = read_versioned_container(path, KIND, READS)
    try:
        return _build(meta, tensors, version)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except McutrainError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise CheckpointError(f"{path}: malformed int8 model metadata ({type(err).__name__}: {err})") from None


def _build(meta: dict, tensors: dict[str, np.ndarray], version: int) -> QModel:
    spec = spec_of_file(meta, version, meta["arch"])
    shapes = conv_shapes(spec, int(meta["resolution"]))
    if len(meta["convs"]) != len(shapes):
        raise CheckpointError(f"{len(meta['convs'])} convs stored, {spec.name} has {len(shapes)}")
    convs = [_conv(m, s, tensors) for m, s in zip(meta["convs"], shapes)]
    num_classes = int(meta["num_classes"])
    classifier = QLinear(
        weight=_tensor(tensors, "classifier.weight", np.int8, (num_classes, spec.feature_ch)),
        bias=_tensor(tensors, "classifier.bias", np.int32, (num_classes,)),
        w_scale=_tensor(tensors, "classifier.w_scale", np.float32, (num_classes,)),
        x=_qtensor(meta["classifier"]["x"], "classifier.x"))
    _check_scales(classifier.w_scale, "classifier.w_scale")
    return QModel(spec=spec, num_classes=num_classes, resolution=int(meta["resolution"]),
                  classes=tuple(meta["classes"]), preprocessing=dict(meta["preprocessing"]),
                  input=_qtensor(meta["input"], "input"), first_conv=convs[0],
                  blocks=_blocks(spec, convs[1:], meta["adds"]),
                  pool=QPool(_qtensor(meta["pool"]["x"], "pool.x"), _qtensor(meta["pool"]["y"], "pool.y")),
                  classifier=classifier, provenance=dict(meta.get("provenance", {})))


def _blocks(spec, convs: list[QConv], adds: list) -> tuple[QBlock, ...]:
    blocks, it = [], iter(convs)
    for i, b in enumerate(spec.blocks):
        pw1 = next(it) if b.mid_ch is not None else None
        dw, pw2 = next(it), next(it)
        add = _add_from_dict(adds[i], f"blocks.{i}.add")
        if (add is not None) != b.residual:
            raise CheckpointError(f"blocks.{i}: residual add {'missing' if b.residual else 'unexpected'}")
        blocks.append(QBlock(pw1, dw, pw2, add))
    return tuple(blocks)


def _conv(m: dict, shape, tensors) -> QConv:
    if m["name"] != shape.name:
        raise CheckpointError(f"conv {m['name']!r} found where the architecture has {shape.name!r}")
    wshape = (shape.out_ch, shape.in_ch // shape.groups, shape.kernel, shape.kernel)
    conv = QConv(name=shape.name, stride=int(m["stride"]), groups=int(m["groups"]),
                 weight=_tensor(tensors, f"{shape.name}.weight", np.int8, wshape),
                 bias=_tensor(tensors, f"{shape.name}.bias", np.int32, (shape.out_ch,)),
                 w_scale=_tensor(tensors, f"{shape.name}.w_scale", np.float32, (shape.out_ch,)),
                 x=_qtensor(m["x"], f"{shape.name}.x"), y=_qtensor(m["y"], f"{shape.name}.y"),
                 qmin=int(m["qmin"]), qmax=int(m["qmax"]),
                 frozen_channels=tuple(int(c) for c in m["frozen_channels"]))
    if (conv.stride, conv.groups) != (shape.stride, shape.groups):
        raise CheckpointError(f"{shape.name}: stride/groups {conv.stride}/{conv.groups}, "
                              f"architecture has {shape.stride}/{shape.groups}")
    if not -128 <= conv.qmin < conv.qmax <= 127:
        raise CheckpointError(f"{shape.name}: clamp range [{conv.qmin}, {conv.qmax}] is not inside int8")
    if conv.weight.min(initial=0) < -127:
        raise CheckpointError(f"{shape.name}.weight: -128 is outside the symmetric range [-127, 127]")
    _check_scales(conv.w_scale, f"{shape.name}.w_scale", allow_zero=True)
    return conv


def _tensor(tensors: dict, name: str, dtype, shape: tuple) -> np.ndarray:
    if name not in tensors:
        raise CheckpointError(f"tensor {name} is missing")
    t = tensors[name]
    if t.dtype != dtype or tuple(t.shape) != tuple(shape):
        raise CheckpointError(f"{name} is {t.dtype}{list(t.shape)}, expected {np.dtype(dtype)}{list(shape)}")
    return t


def _qtensor(d: dict, name: str) -> QTensor:
    q = QTensor.from_dict(d)
    if not (np.isfinite(q.scale) and q.scale > 0):
        raise CheckpointError(f"{name}: scale {q.scale} must be positive and finite")
    if not -128 <= q.zero <= 127:
        raise CheckpointError(f"{name}: zero point {q.zero} is outside int8")
    return q


def _check_scales(scales: np.ndarray, name: str, allow_zero: bool = False) -> None:
    # Degenerate channels (w_scale ~ 0) exist in the paper's files; they are frozen, not refused.
    bad = ~np.isfinite(scales) | (scales < 0 if allow_zero else scales <= 0)
    if bad.any():
        raise CheckpointError(f"{name}: {int(bad.sum())} scales are negative or not finite")


def _add_to_dict(add: QAdd | None) -> dict | None:
    if add is None:
        return None
    return {"a": add.a.to_dict(), "b": add.b.to_dict(), "y": add.y.to_dict(), "qmin": add.qmin, "qmax": add.qmax}


def _add_from_dict(d: dict | None, name: str) -> QAdd | None:
    if d is None:
        return None
    return QAdd(_qtensor(d["a"], f"{name}.a"), _qtensor(d["b"], f"{name}.b"), _qtensor(d["y"], f"{name}.y"),
                int(d["qmin"]), int(d["qmax"]))
