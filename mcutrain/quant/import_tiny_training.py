"""Import the paper's int8 model files (mit-han-lab/tiny-training ``mcu_models/*.pkl``) as a QModel.

The file format is described in ``../shared/upstream/README.md``: a ``torch.save`` zip whose pickle is a
plain dict (``first_conv``, ``blocks``, ``feature_mix``, ``classifier``), each conv a dict of shapes and
``params`` (int8 OIHW weights, int32 biases, float32 per-channel ``w_scales``, per-tensor
``x_scale/x_zero/y_scale/y_zero``). It is read with the restricted unpickler
(:func:`mcutrain.quant.safe_pickle.load_tiny_training_pickle`), never with plain pickle.

How their forward maps onto the QModel contract (checked against their code, ``quantized_ops_diff.py``
and ``custom_quantized_format.py`` of tiny-training, and against the three files):

- The architecture is not named in the file: it is identified by matching every conv's shape (in/out
  channels, kernel, stride, groups, input and output side) and the block structure (expand conv
  present, residual present) against the known specs (:data:`mcutrain.models.specs.ALL_SPECS`). The
  resolution is the first conv's ``in_shape``.
- Conv: ``acc = conv(x - x_zero, w) + b``; ``y = clamp(round(acc * s_x*s_w[c]/s_y) + y_zero, -128, 127)``
  with a float multiply and round-half-to-even (``torch.round``). The ``act`` field is ``None`` in
  every conv of the three files and their loader never reads it: ReLU6 is folded into the output
  range only through ``y_zero = -128`` (the clamp at -128 is the ReLU; 127 is the top of the range,
  there is no separate clip at 6). So every imported conv gets ``qmin, qmax = -128, 127``: the same
  clamp as their forward. mcutrain requantizes in fixed point (TFLite/CMSIS-NN ``(multiplier,
  shift)``, double rounding): it may differ from their float rounding by 1 LSB on (near-)ties.
- Residual add: ``y = clamp(round(((a - z_a)*s_a + (b - z_b)*s_b) / s_y) + z_y, -128, 127)`` where
  ``a`` is the shortcut (``residual.params`` x_scale/x_zero) and ``b`` the pointwise2 output
  (its y_scale/y_zero): :class:`QAdd` ``(a, b, y)``; mcutrain's fixed-point add is within 1 LSB.
- Global average pool: theirs is ``round(mean(x_q))`` (half to even) and keeps the scale and zero
  point: its output feeds the classifier, which reads it with its own ``x_scale/x_zero`` (equal to the
  last block's output quantization in all three files). :class:`QPool` ``x`` = the last block's
  output, ``y`` = the classifier's input quantization; mcutrain's pool rounds half away from zero,
  so exact ties (a mean ending in .5) differ by 1 LSB.
- Classifier: their file has a 1000-class ImageNet head that requantizes the logits to int8
  (``y_scale/y_zero``); mcutrain's classifier returns fp32 logits ``s_x*s_w[k]*acc[k]`` and ignores the
  head's output quantization. The head is kept (to check ImageNet logits) or replaced by a
  zero-initialised int8 head for a new task (:func:`mcutrain.quant.head.new_head`).
- Input: their images are ``round(p - 127.5)`` (ToTensor, Normalize(mean 0.5, std 1/255)) with
  ``x_scale = 1/127.5``, ``x_zero = 0``. mcutrain feeds every model the int8 input ``p - 128``
  (preprocessing offset 128, scale = their first conv's ``x_scale``): a documented half-LSB shift.
  (Recomputing their transform in float32, ``(p/255 - 0.5) / (1/255)`` is never exactly ``x.5``, so
  their rounded input is ``p - 127`` for 184 of the 256 pixel values and ``p - 128`` for the other 72.)
- Degenerate channels (``w_scale < 1e-8``, bias saturated at the int32 limits; mcunet-5fps has 57,
  proxyless-w0.3 30) are listed in each conv's ``frozen_channels`` (Quantization-Aware Scaling divides
  by ``w_scale**2``) and counted in ``provenance``.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mcutrain.errors import CheckpointError, McutrainError
from mcutrain.models import conv_shapes
from mcutrain.models.specs import ALL_SPECS, PAPER_SPECS, NetSpec
from mcutrain.models.zoo import ConvShape
from mcutrain.quant.head import new_head
from mcutrain.quant.model_file import check_qmodel
from mcutrain.quant.qmodel import QAdd, QBlock, QConv, QLinear, QModel, QPool, QTensor
from mcutrain.quant.quantize import DEGENERATE_W_SCALE
from mcutrain.quant.safe_pickle import load_tiny_training_pickle
from mcutrain.train.checkpoint import MAX_CLASSES, MIN_CLASSES, shown
from mcutrain.io.atomic import file_sha256

FORMAT = "tiny-training"
IMAGENET_CLASSES = 1000
INPUT_OFFSET = 128.0
"""mcutrain's int8 input is ``p - 128`` for every model (theirs is ``round(p - 127.5)``)."""


def import_tiny_training(path: str | os.PathLike, num_classes: int | None = None,
                         classes: tuple[str, ...] | list[str] | None = None) -> QModel:
    """Read a tiny-training int8 model file as a :class:`QModel`.

    ``classes`` (names) or ``num_classes`` (names ``"0"``, ``"1"``, ...) replace the ImageNet head by a
    zero-initialised int8 head; with neither, the file's head is kept (the paper's files: 1000 ImageNet
    classes, named ``"imagenet_000"`` ... ``"imagenet_999"``: the file holds no class names). Raises
    :class:`CheckpointError` for anything that is not such a file (missing, not a zip, a foreign or
    malicious pickle, an unknown architecture, out-of-range integers or scales).
    """
    path = Path(path)
    head_classes = _head_classes(num_classes, classes)
    raw = load_tiny_training_pickle(path)
    try:
        model = check_qmodel(_convert(raw))  # the limits and rules of every int8 model file
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:  # a gap in the checks
        raise CheckpointError(f"{path}: malformed tiny-training model ({type(err).__name__}: {err})") from None
    degenerate = {c.name: len(c.frozen_channels) for c in model.convs() if c.frozen_channels}
    provenance = {
        "format": FORMAT,
        "source": path.name,
        "sha256": file_sha256(path),
        "degenerate_channels": degenerate,
        "degenerate_channels_total": sum(degenerate.values()),
        "head": "original" if head_classes is None else "new",
        "input": "int8 p - 128 (the original models were fed round(p - 127.5): half-LSB shift)",
    }
    model = replace(model, provenance=provenance)
    return model if head_classes is None else new_head(model, head_classes)


# ------------------------------------------------------------------------------------------------ head


def _head_classes(num_classes: int | None, classes) -> tuple[str, ...] | None:
    if classes is not None:
        classes = tuple(str(c) for c in classes)
        if num_classes is not None and num_classes != len(classes):
            raise McutrainError(f"num_classes={num_classes} but {len(classes)} class names were given")
        if len(set(classes)) != len(classes):
            raise McutrainError(f"class names must be distinct, got {list(classes)}")
        _check_head_size(len(classes))
        return classes
    if num_classes is not None:
        _check_head_size(num_classes)
        return tuple(str(i) for i in range(num_classes))
    return None


def _check_head_size(k: int) -> None:
    # before the head is allocated: --num-classes 1000000000 would ask for gigabytes
    if not MIN_CLASSES <= k <= MAX_CLASSES:
        raise McutrainError(f"a new head needs {MIN_CLASSES} to {MAX_CLASSES} classes, got {k}")



# ------------------------------------------------------------------------------------------------ structure


def _convert(raw: dict) -> QModel:
    if raw["feature_mix"] is not None:
        raise CheckpointError("has a feature_mix conv: no known architecture has one")
    most = max(len(s.blocks) for s in ALL_SPECS)
    if len(raw["blocks"]) > most:  # before walking them: each may be a shared reference
        raise CheckpointError(f"blocks: {len(raw['blocks'])} blocks, no known architecture has more than {most}")
    named = _named_convs(raw)
    spec, resolution = identify_architecture(named)
    for i, (b, block) in enumerate(zip(spec.blocks, raw["blocks"])):
        if b.residual != (block["residual"] is not None):
            raise CheckpointError(f"blocks.{i}: residual add {'missing' if b.residual else 'unexpected'} "
                                  f"(the conv shapes are those of {spec.name})")
    shapes = conv_shapes(spec, resolution)
    convs = [_qconv(shape, conv) for shape, (_, conv) in zip(shapes, named)]
    first, it = convs[0], iter(convs[1:])
    blocks, t = [], first.y
    for i, b in enumerate(spec.blocks):
        pw1 = next(it) if b.mid_ch is not None else None
        dw, pw2 = next(it), next(it)
        add = None
        if b.residual:
            p = _dict(_dict(raw["blocks"][i]["residual"], f"blocks.{i}.residual")["params"],
                      f"blocks.{i}.residual.params")
            add = QAdd(a=_qtensor(p, "x", f"blocks.{i}.residual"), b=pw2.y, y=_qtensor(p, "y", f"blocks.{i}.residual"))
        blocks.append(QBlock(pw1, dw, pw2, add))
        t = add.y if add is not None else pw2.y
    classifier = _qlinear(_dict(raw["classifier"], "classifier"), spec.feature_ch)
    k = classifier.weight.shape[0]
    names = (tuple(f"imagenet_{c:03d}" for c in range(k)) if k == IMAGENET_CLASSES
             else tuple(str(c) for c in range(k)))
    return QModel(spec=spec, num_classes=k, resolution=resolution, classes=names,
                  preprocessing={"offset": INPUT_OFFSET, "scale": float(first.x.scale)},
                  input=QTensor(first.x.scale, 0), first_conv=first, blocks=tuple(blocks),
                  pool=QPool(x=t, y=classifier.x), classifier=classifier)


def _named_convs(raw: dict) -> list[tuple[str, dict]]:
    """Every conv of the file in forward order, named as mcutrain names them (``blocks.3.depthwise``).

    The names carry the block structure (which blocks have an expand conv); residual adds are checked
    against the identified spec by the caller.
    """
    convs = [("first_conv", _dict(raw["first_conv"], "first_conv"))]
    for i, block in enumerate(raw["blocks"]):
        block = _dict(block, f"blocks.{i}")
        for key in ("pointwise1", "depthwise", "pointwise2", "residual"):
            if key not in block:
                raise CheckpointError(f"blocks.{i} has no {key!r} entry")
        if block.get("se") is not None:
            raise CheckpointError(f"blocks.{i} has a squeeze-excitation module: not supported")
        for key in ("depthwise", "pointwise2"):
            if block[key] is None:
                raise CheckpointError(f"blocks.{i}.{key} is missing (None)")
        residual = block["residual"]
        if residual is not None and ("kernel_size" in _dict(residual, f"blocks.{i}.residual")
                                     or "params" not in residual):
            raise CheckpointError(f"blocks.{i}.residual is not an identity add: not supported")
        for key in ("pointwise1", "depthwise", "pointwise2"):
            if block[key] is not None:
                convs.append((f"blocks.{i}.{key}", _dict(block[key], f"blocks.{i}.{key}")))
    return convs


def _describe(c: dict | ConvShape) -> str:
    if isinstance(c, ConvShape):
        return (f"{c.in_ch}->{c.out_ch} k{c.kernel} s{c.stride} groups {c.groups} "
                f"in {c.in_side} out {c.out_side}")
    def field(key: str) -> str:
        return shown(c.get(key))
    return (f"{field('in_channel')}->{field('out_channel')} k{shown(_kernel(c))} s{field('stride')} groups "
            f"{field('groups')} in {field('in_shape')} out {field('out_shape')}")


def _int(v: Any) -> int | None:
    """A structural field as a plain int, or None: a forged file may hold arrays, whose comparison
    with ``==`` is no truth value."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return int(v)
    return None


def _kernel(c: dict) -> Any:
    k = c.get("kernel_size")
    if isinstance(k, (tuple, list)) and len(k) == 2 and _int(k[0]) is not None and _int(k[0]) == _int(k[1]):
        return _int(k[0])
    return _int(k)


def _matches(c: dict, s: ConvShape) -> bool:
    got = (_int(c.get("in_channel")), _int(c.get("out_channel")), _kernel(c), _int(c.get("stride")),
           _int(c.get("groups")), _int(c.get("in_shape")), _int(c.get("out_shape", s.out_side)))
    return got == (s.in_ch, s.out_ch, s.kernel, s.stride, s.groups, s.in_side, s.out_side)


def identify_architecture(named: list[tuple[str, dict]]) -> tuple[NetSpec, int]:
    """The spec whose every conv (name, channels, kernel, stride, groups, sides) matches, and the resolution.

    ``named`` is :func:`_named_convs` of a file. Raises :class:`CheckpointError` naming the first conv
    that differs from the closest known architecture (the one with the longest matching prefix).
    """
    resolution = named[0][1].get("in_shape")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise CheckpointError(f"first_conv.in_shape is {shown(resolution)}, expected the input side (an int)")
    best: tuple[int, NetSpec, list[ConvShape]] | None = None
    for spec in PAPER_SPECS + tuple(s for s in ALL_SPECS if s not in PAPER_SPECS):
        shapes = conv_shapes(spec, resolution)
        prefix = 0
        for (name, conv), shape in zip(named, shapes):
            if name != shape.name or not _matches(conv, shape):
                break
            prefix += 1
        if prefix == len(named) == len(shapes):
            return spec, resolution
        if best is None or prefix > best[0]:
            best = (prefix, spec, shapes)
    prefix, spec, shapes = best
    known = ", ".join(s.name for s in ALL_SPECS)
    if prefix == len(shapes):
        raise CheckpointError(f"unknown architecture: {len(named)} convs, the closest known architecture "
                              f"{spec.name} has {len(shapes)} (known: {known})")
    if prefix == len(named):
        raise CheckpointError(f"unknown architecture: {len(named)} convs, the closest known architecture "
                              f"{spec.name} has {len(shapes)}: {shapes[prefix].name} is missing (known: {known})")
    name, conv = named[prefix]
    want = shapes[prefix]
    raise CheckpointError(
        f"unknown architecture: conv {prefix} ({name}: {_describe(conv)}) differs from the closest known "
        f"architecture {spec.name} (its conv {prefix} is {want.name}: {_describe(want)}); known: {known}")


# ------------------------------------------------------------------------------------------------ tensors


def _qconv(shape: ConvShape, conv: dict) -> QConv:
    name = shape.name
    p = _dict(conv.get("params"), f"{name}.params")
    wshape = (shape.out_ch, shape.in_ch // shape.groups, shape.kernel, shape.kernel)
    weight = _int8_weight(p, wshape, name)
    bias = _array(p, "bias", np.int32, (shape.out_ch,), name)
    w_scale = _w_scales(p, shape.out_ch, name)
    depthwise = conv.get("depthwise")
    if depthwise is not None and bool(depthwise) != (shape.groups > 1):
        raise CheckpointError(f"{name}: depthwise={shown(depthwise)} but groups={shape.groups}")
    frozen = tuple(int(c) for c in np.flatnonzero(w_scale < DEGENERATE_W_SCALE))
    # Their forward clamps every conv output to [-128, 127]; ReLU6 is y_zero = -128 (see module doc).
    return QConv(name=name, stride=shape.stride, groups=shape.groups, weight=weight, bias=bias,
                 w_scale=w_scale, x=_qtensor(p, "x", name), y=_qtensor(p, "y", name),
                 qmin=-128, qmax=127, frozen_channels=frozen)


def _qlinear(cls: dict, feature_ch: int) -> QLinear:
    p = _dict(cls.get("params"), "classifier.params")
    k = cls.get("out_channel")
    if not isinstance(k, int) or k < 2:
        raise CheckpointError(f"classifier.out_channel is {shown(k)}")
    weight = _int8_weight(p, (k, feature_ch, 1, 1), "classifier").reshape(k, feature_ch)
    w_scale = _w_scales(p, k, "classifier")
    if (w_scale <= 0).any():
        raise CheckpointError(f"classifier.w_scales: {int((w_scale <= 0).sum())} scales are zero")
    return QLinear(weight=np.ascontiguousarray(weight), bias=_array(p, "bias", np.int32, (k,), "classifier"),
                   w_scale=w_scale, x=_qtensor(p, "x", "classifier"))


def _dict(d: Any, where: str) -> dict:
    if not isinstance(d, dict):
        raise CheckpointError(f"{where} is a {type(d).__name__}, expected a dict")
    return d


def _array(p: dict, key: str, dtype, shape: tuple, where: str) -> np.ndarray:
    a = p.get(key)
    if not isinstance(a, np.ndarray):
        raise CheckpointError(f"{where}.{key} is {type(a).__name__}, expected a numpy array")
    if a.dtype != dtype or a.shape != tuple(shape):
        raise CheckpointError(f"{where}.{key} is {a.dtype}{list(a.shape)}, expected {np.dtype(dtype)}{list(shape)}")
    return np.ascontiguousarray(a)


def _int8_weight(p: dict, shape: tuple, where: str) -> np.ndarray:
    w = _array(p, "weight", np.int8, shape, where)
    if w.size and w.min() < -127:
        raise CheckpointError(f"{where}.weight holds -128: outside the symmetric int8 range [-127, 127]")
    return w


def _w_scales(p: dict, n: int, where: str) -> np.ndarray:
    s = p.get("w_scales")
    if not isinstance(s, np.ndarray) or s.dtype.kind != "f" or s.shape != (n,):
        got = f"{s.dtype}{list(s.shape)}" if isinstance(s, np.ndarray) else type(s).__name__
        raise CheckpointError(f"{where}.w_scales is {got}, expected {n} floats")
    if not np.all(np.isfinite(s)) or (s < 0).any():
        raise CheckpointError(f"{where}.w_scales: scales must be finite and >= 0")
    return s.astype(np.float32)


def _qtensor(p: dict, which: str, where: str) -> QTensor:
    scale, zero = p.get(f"{which}_scale"), p.get(f"{which}_zero")
    if isinstance(scale, np.generic):
        scale = scale.item()
    if isinstance(zero, np.generic):
        zero = zero.item()
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise CheckpointError(f"{where}.{which}_scale is {shown(scale)}, expected a positive finite number")
    if isinstance(zero, bool) or not isinstance(zero, int) or not -128 <= zero <= 127:
        raise CheckpointError(f"{where}.{which}_zero is {shown(zero)}, expected an int8 zero point")
    return QTensor(float(scale), int(zero))
