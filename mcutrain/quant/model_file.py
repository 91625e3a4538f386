"""The int8 model file: a QModel in the safe container, checked against its architecture on load.

Integers and scales are stored as tensors (``<conv name>.weight`` int8, ``.bias`` int32,
``.w_scale`` float32); per-tensor quantization parameters and the architecture go in the JSON
metadata.

Versions: 1 names a zoo architecture (meta ``arch``); 2 also embeds the architecture (meta ``spec``,
the JSON of docs/own-model.md), which is what the file is checked against and built from, even when
``arch`` is a zoo name with other layers (the file is the truth). Version 2 is written whenever the
architecture is not a zoo network verbatim; zoo networks are still written as version 1.

Validation (on load, and before saving: a file mcutrain writes is one it reads back). Every field is
checked for its type (``True`` is not an integer), its range and its consistency with the tensors and
with the other fields; a bad one is a ``CheckpointError`` whose one line names the field (or tensor)
and what is allowed. Besides the limits shared with float checkpoints (``train.checkpoint``:
resolution [8, 1024], num_classes [2, 10000] = len(classes), distinct class names):
  * meta keys: exactly those ``save_qmodel`` writes (``spec`` only in version 2); every conv entry
    named, in order, as the architecture's convs, with its stride and groups;
  * preprocessing: offset 128 and scale = ``input.scale``, input zero point 0: the int8 input is
    ``p - 128`` for every model (``qmodel`` module docstring);
  * activation quantization (input, every conv's x/y, adds' a/b/y, pool x/y, classifier x): scale a
    finite number in ACTIVATION_SCALE_RANGE = [1e-9, 1e4] (the quantizer's smallest is 1e-6/255),
    zero point an integer in [-128, 127]; each tensor's x equals the y of the tensor it reads
    (first conv <- input, block convs chained, add a <- block input and b <- pointwise2, pool x <-
    last block, classifier x <- pool y);
  * clamp ranges (convs, adds): integers with -128 <= qmin < qmax <= 127;
  * tensors: exactly the architecture's, each with its dtype and shape; int8 weights in [-127, 127];
    weight scales finite, conv ones in [0, 1e4], classifier ones in (0, 1e4];
  * general geometry (issue 13, optional, written only where a conv has it): ``kernel_hw`` [kh, kw]
    in [1, MAX_KERNEL = 11], ``stride_w`` 1 or 2 and ``pad`` [top, bottom, left, right], all three or
    none (a conv with them is checked against them, not against the architecture's kernel and
    stride); ``in_ch`` (first conv only) 1 or 3; meta ``input_hw`` [H, W] in [8, 1024] for a
    non-square input. Every padding is below its kernel, every output at least 1 x 1, and every
    residual add joins equal heights and widths;
  * ``frozen_channels``: strictly increasing channel indices in [0, out_channels), including every
    channel whose weight scale is below DEGENERATE_W_SCALE (1e-8; QAS divides by its square);
  * fixed-point constants: every conv multiplier x.scale * w_scale / y.scale must be below 2**30
    (``fixedpoint.quantize_multiplier``: shift <= 30), every add's max(a.scale, b.scale) / y.scale
    below 2**49 (its output multiplier, after the 2**20 headroom shift, below 2**30), the pool's
    x.scale / (y.scale * H * W) below 2**30 with H * W <= 2**16 positions (H x W: the last output)
    (``int8_ops.avgpool_params``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mcutrain.errors import CheckpointError, McutrainError
from mcutrain.io.container import read_versioned_container, write_container
from mcutrain.models import conv_shapes
from mcutrain.models.spec_file import MAX_RESOLUTION as MAX_SIDE
from mcutrain.models.spec_file import MIN_RESOLUTION as MIN_SIDE
from mcutrain.models.zoo import spec_of_file, spec_to_embed
from mcutrain.quant.fixedpoint import ADD_LEFT_SHIFT, MAX_SHIFT, quantize_multiplier
from mcutrain.quant.int8_ops import MAX_POOL_COUNT, add_params, avgpool_params
from mcutrain.quant.qmodel import QAdd, QBlock, QConv, QLinear, QModel, QPool, QTensor
from mcutrain.quant.quantize import DEGENERATE_W_SCALE
from mcutrain.train.checkpoint import (
    check_classes,
    check_preprocessing,
    check_resolution,
    meta_dict,
    meta_int,
    meta_list,
    meta_number,
    meta_str,
    shown,
)

KIND = "int8-model"
VERSION = 2  # the newest; see the module docstring
READS = (1, 2)

ACTIVATION_SCALE_RANGE = (1e-9, 1e4)
MAX_WEIGHT_SCALE = 1e4
INPUT_OFFSET = 128.0
MAX_MULTIPLIER = 2.0 ** MAX_SHIFT  # quantize_multiplier refuses reals from about here on
_META_KEYS = ("arch", "num_classes", "resolution", "classes", "preprocessing", "input", "convs", "adds",
              "pool", "classifier")
_OPTIONAL_META_KEYS = ("provenance", "input_hw")
_CONV_KEYS = ("name", "stride", "groups", "x", "y", "qmin", "qmax", "frozen_channels")
# General geometry (issue 13), written only for convs that have it, so zoo files stay as they were:
# the kernel (kh, kw), the width stride, the padding (top, bottom, left, right); the first conv may
# also read a 1-channel input. A conv with them is checked against them, not the architecture's.
_GEOMETRY_KEYS = ("kernel_hw", "stride_w", "pad", "in_ch")
MAX_KERNEL = 11
INPUT_CHANNELS = (1, 3)


def save_qmodel(path: str | os.PathLike, model: QModel) -> None:
    """Write ``model``; a model that ``load_qmodel`` would refuse is refused here, nothing written."""
    try:
        check_qmodel(model)
    except CheckpointError as err:
        raise CheckpointError(f"refusing to write {path}: {err}") from None
    tensors: dict[str, np.ndarray] = {}
    convs = []
    for conv in model.convs():
        tensors[f"{conv.name}.weight"] = conv.weight
        tensors[f"{conv.name}.bias"] = conv.bias
        tensors[f"{conv.name}.w_scale"] = conv.w_scale
        convs.append({"name": conv.name, "stride": conv.stride, "groups": conv.groups,
                      "x": conv.x.to_dict(), "y": conv.y.to_dict(), "qmin": conv.qmin, "qmax": conv.qmax,
                      "frozen_channels": list(conv.frozen_channels)} | _geometry_to_dict(conv, model))
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
    if model.input_hw is not None:
        meta["input_hw"] = [int(v) for v in model.input_hw]
    spec = spec_to_embed(model.spec)
    if spec is not None:
        meta["spec"] = spec
    write_container(path, KIND, VERSION if spec is not None else 1, meta, tensors)


def _geometry_to_dict(conv: QConv, model: QModel) -> dict:
    """The general-geometry keys of a conv entry: none for the zoo's geometry."""
    out = {}
    if conv.general_geometry:
        out = {"kernel_hw": list(conv.kernel_hw), "stride_w": conv.strides[1], "pad": list(conv.padding)}
    if conv is model.first_conv and conv.in_ch != model.spec.in_ch:
        out["in_ch"] = conv.in_ch
    return out


def load_qmodel(path: str | os.PathLike) -> QModel:
    """The int8 model of ``path``; anything wrong in it is a ``CheckpointError`` naming the field."""
    version, meta, tensors = read_versioned_container(path, KIND, READS)
    try:
        return check_qmodel(_build(meta, tensors, version))
    except McutrainError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError, IndexError) as err:  # a gap in the checks: still one line
        raise CheckpointError(f"{path}: malformed int8 model metadata ({type(err).__name__}: {err})") from None


# ---------------------------------------------------------------------------------------------- parsing
# Types, keys, names and shapes: the meta and tensors -> a QModel. Ranges and consistency: check_qmodel.


def _build(meta: dict, tensors: dict[str, np.ndarray], version: int) -> QModel:
    optional = _OPTIONAL_META_KEYS + (("spec",) if version >= 2 else ())
    meta_dict(meta, "", _META_KEYS, optional)
    spec = spec_of_file(meta, version, meta_str(meta["arch"], "arch"))
    resolution = check_resolution(meta["resolution"])
    num_classes, classes = check_classes(meta["num_classes"], meta["classes"])
    shapes = conv_shapes(spec, resolution)
    entries = meta_list(meta["convs"], "convs", len(shapes))
    input_hw = None
    if "input_hw" in meta:
        hw = meta_list(meta["input_hw"], "input_hw", 2)
        input_hw = tuple(meta_int(v, f"input_hw[{i}]", MIN_SIDE, MAX_SIDE) for i, v in enumerate(hw))
    convs = [_conv(entry, i, shape, tensors) for i, (entry, shape) in enumerate(zip(entries, shapes))]
    classifier = QLinear(
        weight=_tensor(tensors, "classifier.weight", np.int8, (num_classes, spec.feature_ch)),
        bias=_tensor(tensors, "classifier.bias", np.int32, (num_classes,)),
        w_scale=_tensor(tensors, "classifier.w_scale", np.float32, (num_classes,)),
        x=_qtensor(meta_dict(meta["classifier"], "classifier", ("x",), ())["x"], "classifier.x"))
    expected = {f"{c.name}.{t}" for c in convs for t in ("weight", "bias", "w_scale")}
    expected |= {"classifier.weight", "classifier.bias", "classifier.w_scale"}
    unexpected = sorted(set(tensors) - expected)
    if unexpected:
        raise CheckpointError(f"tensor {unexpected[0]} is not part of {spec.name} "
                              f"({len(unexpected)} unexpected tensors)")
    pool = meta_dict(meta["pool"], "pool", ("x", "y"), ())
    provenance = meta.get("provenance", {})
    meta_dict(provenance, "provenance")
    return QModel(spec=spec, num_classes=num_classes, resolution=resolution, classes=classes,
                  preprocessing=check_preprocessing(meta["preprocessing"]),
                  input=_qtensor(meta["input"], "input"), first_conv=convs[0],
                  blocks=_blocks(spec, convs[1:], meta_list(meta["adds"], "adds", len(spec.blocks))),
                  pool=QPool(_qtensor(pool["x"], "pool.x"), _qtensor(pool["y"], "pool.y")),
                  classifier=classifier, provenance=dict(provenance), input_hw=input_hw)


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


def _conv(entry: Any, index: int, shape, tensors) -> QConv:
    m = meta_dict(entry, f"convs[{index}]", _CONV_KEYS, _GEOMETRY_KEYS if index == 0 else _GEOMETRY_KEYS[:3])
    if m["name"] != shape.name:
        raise CheckpointError(f"convs[{index}].name: conv {shown(m['name'])} found where the architecture "
                              f"has {shape.name!r}")
    name = shape.name
    stride = meta_int(m["stride"], f"{name}.stride", 1, 2)
    groups = meta_int(m["groups"], f"{name}.groups", 1, shape.out_ch)
    general = "kernel_hw" in m
    if groups != shape.groups or (stride != shape.stride and not general):
        raise CheckpointError(f"{name}: stride/groups {stride}/{groups}, "
                              f"architecture has {shape.stride}/{shape.groups}")
    in_ch = meta_int(m["in_ch"], f"{name}.in_ch", 1, 3) if "in_ch" in m else shape.in_ch
    if "in_ch" in m and in_ch not in INPUT_CHANNELS:
        raise CheckpointError(f"{name}.in_ch: {in_ch}, the input has 1 or 3 channels")
    kh, kw, stride_w, pad = _geometry(m, name, shape.kernel, stride)
    wshape = (shape.out_ch, in_ch // shape.groups, kh, kw)
    frozen = meta_list(m["frozen_channels"], f"{name}.frozen_channels")
    return QConv(name=name, stride=stride, groups=groups, stride_w=stride_w, pad=pad,
                 weight=_tensor(tensors, f"{name}.weight", np.int8, wshape),
                 bias=_tensor(tensors, f"{name}.bias", np.int32, (shape.out_ch,)),
                 w_scale=_tensor(tensors, f"{name}.w_scale", np.float32, (shape.out_ch,)),
                 x=_qtensor(m["x"], f"{name}.x"), y=_qtensor(m["y"], f"{name}.y"),
                 qmin=meta_int(m["qmin"], f"{name}.qmin", -128, 127),
                 qmax=meta_int(m["qmax"], f"{name}.qmax", -128, 127),
                 frozen_channels=tuple(meta_int(c, f"{name}.frozen_channels[{j}]", 0, shape.out_ch - 1)
                                       for j, c in enumerate(frozen)))


def _geometry(m: dict, name: str, kernel: int, stride: int):
    """(kh, kw, stride_w, pad) of a conv entry: the architecture's square kernel (stride_w, pad None)
    unless the entry has the general-geometry keys, which must then all be there."""
    present = [k for k in _GEOMETRY_KEYS[:3] if k in m]
    if not present:
        return kernel, kernel, None, None
    if len(present) != 3:
        raise CheckpointError(f"{name}: general geometry needs kernel_hw, stride_w and pad together")
    kh, kw = (meta_int(v, f"{name}.kernel_hw[{i}]", 1, MAX_KERNEL)
              for i, v in enumerate(meta_list(m["kernel_hw"], f"{name}.kernel_hw", 2)))
    stride_w = meta_int(m["stride_w"], f"{name}.stride_w", 1, 2)
    pad = tuple(meta_int(v, f"{name}.pad[{i}]", 0, MAX_KERNEL - 1)
                for i, v in enumerate(meta_list(m["pad"], f"{name}.pad", 4)))
    return kh, kw, stride_w, pad


def _tensor(tensors: dict, name: str, dtype, shape: tuple) -> np.ndarray:
    if name not in tensors:
        raise CheckpointError(f"tensor {name} is missing")
    t = tensors[name]
    if t.dtype != dtype or tuple(t.shape) != tuple(shape):
        raise CheckpointError(f"{name} is {t.dtype}{list(t.shape)}, expected {np.dtype(dtype)}{list(shape)}")
    return t


def _qtensor(d: Any, name: str) -> QTensor:
    d = meta_dict(d, name, ("scale", "zero"), ())
    return QTensor(meta_number(d["scale"], f"{name}.scale", *ACTIVATION_SCALE_RANGE),
                   meta_int(d["zero"], f"{name}.zero", -128, 127))


def _add_to_dict(add: QAdd | None) -> dict | None:
    if add is None:
        return None
    return {"a": add.a.to_dict(), "b": add.b.to_dict(), "y": add.y.to_dict(), "qmin": add.qmin, "qmax": add.qmax}


def _add_from_dict(d: Any, name: str) -> QAdd | None:
    if d is None:
        return None
    d = meta_dict(d, name, ("a", "b", "y", "qmin", "qmax"), ())
    return QAdd(_qtensor(d["a"], f"{name}.a"), _qtensor(d["b"], f"{name}.b"), _qtensor(d["y"], f"{name}.y"),
                meta_int(d["qmin"], f"{name}.qmin", -128, 127), meta_int(d["qmax"], f"{name}.qmax", -128, 127))


# ---------------------------------------------------------------------------------------------- checks


def check_qmodel(model: QModel) -> QModel:
    """Ranges and consistency of a QModel, however it was made (loaded, quantized, imported): the rules
    of the module docstring. Returns ``model``; raises ``CheckpointError`` naming the first bad field."""
    check_resolution(model.resolution)
    check_classes(model.num_classes, list(model.classes))
    _check_input(model)
    for conv in model.convs():
        _check_conv(conv)
    for i, block in enumerate(model.blocks):
        if block.add is not None:
            _check_add(block.add, f"blocks.{i}.add")
    _check_chain(model)
    _check_shapes(model)
    _check_pool(model)
    _check_classifier(model.classifier)
    return model


def _check_input(model: QModel) -> None:
    prep = check_preprocessing(dict(model.preprocessing))
    _check_qtensor(model.input, "input")
    if model.input.zero != 0:
        raise CheckpointError(f"input.zero: {model.input.zero}, must be 0 (the int8 input is p - 128)")
    if prep["offset"] != INPUT_OFFSET:
        raise CheckpointError(f"preprocessing.offset: {prep['offset']:g}, must be 128 for an int8 model "
                              f"(its input is p - 128)")
    if prep["scale"] != model.input.scale:
        raise CheckpointError(f"preprocessing.scale: {prep['scale']!r} must equal input.scale "
                              f"{model.input.scale!r}")


def _check_qtensor(q: QTensor, name: str) -> None:
    meta_number(q.scale, f"{name}.scale", *ACTIVATION_SCALE_RANGE)
    meta_int(q.zero, f"{name}.zero", -128, 127)


def _check_clamp(qmin: int, qmax: int, name: str) -> None:
    meta_int(qmin, f"{name}.qmin", -128, 127)
    meta_int(qmax, f"{name}.qmax", -128, 127)
    if not qmin < qmax:
        raise CheckpointError(f"{name}: clamp range [{qmin}, {qmax}] is not inside int8 "
                              f"(needs -128 <= qmin < qmax <= 127)")


def _check_conv(conv: QConv) -> None:
    name = conv.name
    _check_qtensor(conv.x, f"{name}.x")
    _check_qtensor(conv.y, f"{name}.y")
    _check_clamp(conv.qmin, conv.qmax, name)
    if conv.weight.size and conv.weight.min() < -127:
        raise CheckpointError(f"{name}.weight: -128 is outside the symmetric range [-127, 127]")
    w_scale = conv.w_scale.astype(np.float64)
    bad = ~np.isfinite(w_scale) | (w_scale < 0) | (w_scale > MAX_WEIGHT_SCALE)
    if bad.any():
        c = int(np.flatnonzero(bad)[0])
        raise CheckpointError(f"{name}.w_scale: {int(bad.sum())} scales outside [0, {MAX_WEIGHT_SCALE:g}] or not "
                              f"finite (channel {c}: {w_scale[c]!r})")
    _check_frozen(conv, w_scale)
    _check_multiplier(conv.real_multiplier, f"{name}: requantization multiplier x.scale * w_scale / y.scale")


def _check_frozen(conv: QConv, w_scale: np.ndarray) -> None:
    name, frozen = f"{conv.name}.frozen_channels", conv.frozen_channels
    for j, c in enumerate(frozen):
        meta_int(c, f"{name}[{j}]", 0, conv.out_ch - 1)
    if any(a >= b for a, b in zip(frozen, frozen[1:])):
        raise CheckpointError(f"{name}: channel indices must be strictly increasing")
    unfrozen = sorted(set(np.flatnonzero(w_scale < DEGENERATE_W_SCALE).tolist()) - set(frozen))
    if unfrozen:
        raise CheckpointError(f"{name}: channel {unfrozen[0]} has w_scale {w_scale[unfrozen[0]]:.3g} < "
                              f"{DEGENERATE_W_SCALE:g} and must be frozen ({len(unfrozen)} such channels)")


def _check_multiplier(real: np.ndarray, what: str) -> None:
    """A real multiplier the fixed-point requantizer can encode (``quantize_multiplier``)."""
    per_channel = np.ndim(real) > 0
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    worst = int(np.argmax(np.where(np.isfinite(real), real, np.inf)))
    if not real[worst] < MAX_MULTIPLIER:
        channel = f" (channel {worst})" if per_channel else ""
        raise CheckpointError(f"{what} = {real[worst]:.4g}{channel} must be below 2^{MAX_SHIFT} "
                              f"(the fixed-point shift is at most {MAX_SHIFT})")
    try:
        quantize_multiplier(real)
    except ValueError as err:  # the carry of rounding just below 2^30
        raise CheckpointError(f"{what}: {err}") from None


def _check_add(add: QAdd, name: str) -> None:
    for part in ("a", "b", "y"):
        _check_qtensor(getattr(add, part), f"{name}.{part}")
    _check_clamp(add.qmin, add.qmax, name)
    ratio = max(add.a.scale, add.b.scale) / add.y.scale
    limit = 2.0 ** (MAX_SHIFT + ADD_LEFT_SHIFT - 1)
    if not ratio < limit:
        raise CheckpointError(f"{name}: scale ratio max(a.scale, b.scale) / y.scale = {ratio:.4g} must be below "
                              f"2^{MAX_SHIFT + ADD_LEFT_SHIFT - 1} (the fixed-point add's output multiplier)")
    try:
        add_params(add.a.scale, add.a.zero, add.b.scale, add.b.zero, add.y.scale, add.y.zero, add.qmin, add.qmax)
    except ValueError as err:
        raise CheckpointError(f"{name}: {err}") from None


def _check_chain(model: QModel) -> None:
    """Every tensor is read with the quantization it was written with."""
    _same(model.first_conv.x, model.input, "first_conv.x", "input")
    t, t_name = model.first_conv.y, "first_conv.y"
    for i, block in enumerate(model.blocks):
        block_in, block_in_name = t, t_name
        for conv in block.convs():
            _same(conv.x, t, f"{conv.name}.x", t_name)
            t, t_name = conv.y, f"{conv.name}.y"
        if block.add is not None:
            _same(block.add.a, block_in, f"blocks.{i}.add.a", block_in_name)
            _same(block.add.b, t, f"blocks.{i}.add.b", t_name)
            t, t_name = block.add.y, f"blocks.{i}.add.y"
    _same(model.pool.x, t, "pool.x", t_name)
    _same(model.classifier.x, model.pool.y, "classifier.x", "pool.y")


def _check_shapes(model: QModel) -> None:
    """Every conv's output is at least 1 x 1, its padding smaller than its kernel, and every residual
    add joins tensors of one height x width (general geometry can break both)."""
    if model.input_hw is not None:
        for i, v in enumerate(model.input_hw):
            meta_int(v, f"input_hw[{i}]", MIN_SIDE, MAX_SIDE)
    if model.input_channels not in INPUT_CHANNELS:
        raise CheckpointError(f"first_conv: {model.input_channels} input channels, the input has 1 or 3")
    h, w = model.input_size
    for conv in model.convs():
        kh, kw = conv.kernel_hw
        top, bottom, left, right = conv.padding
        if not (1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL) or max(top, bottom) >= kh or max(left, right) >= kw:
            raise CheckpointError(f"{conv.name}: kernel {kh}x{kw} with padding {conv.padding} (kernel 1 to "
                                  f"{MAX_KERNEL}, padding below the kernel)")
        if conv.strides[1] not in (1, 2):
            raise CheckpointError(f"{conv.name}.stride_w: {conv.strides[1]}, allowed 1 or 2")
        h_in, w_in = h, w
        h, w = conv.out_hw(h, w)
        if h < 1 or w < 1:
            raise CheckpointError(f"{conv.name}: a {h_in}x{w_in} input leaves no output for kernel {kh}x{kw}")
    sizes = iter(model.activation_sizes()[1:])
    size = model.activation_sizes()[0]
    for i, block in enumerate(model.blocks):
        block_in = size
        for _ in block.convs():
            size = next(sizes)
        if block.add is not None and size != block_in:
            raise CheckpointError(f"blocks.{i}.add: joins {block_in[0]}x{block_in[1]} and {size[0]}x{size[1]}")


def _same(reader: QTensor, writer: QTensor, reader_name: str, writer_name: str) -> None:
    if reader != writer:
        raise CheckpointError(f"{reader_name}: (scale {reader.scale!r}, zero {reader.zero}) must equal "
                              f"{writer_name} (scale {writer.scale!r}, zero {writer.zero}), the tensor it reads")


def _check_pool(model: QModel) -> None:
    _check_qtensor(model.pool.x, "pool.x")
    _check_qtensor(model.pool.y, "pool.y")
    h, w = model.activation_sizes()[-1]
    if h * w > MAX_POOL_COUNT:
        raise CheckpointError(f"resolution: {model.resolution} leaves {h}x{w} positions to pool, more "
                              f"than the {MAX_POOL_COUNT} the int8 average pool sums")
    _check_multiplier(model.pool.x.scale / (model.pool.y.scale * h * w),
                      "pool: multiplier x.scale / (y.scale * positions)")
    try:
        avgpool_params(model.pool.x.scale, model.pool.x.zero, model.pool.y.scale, model.pool.y.zero, h * w)
    except ValueError as err:
        raise CheckpointError(f"pool: {err}") from None


def _check_classifier(classifier: QLinear) -> None:
    _check_qtensor(classifier.x, "classifier.x")
    if classifier.weight.size and classifier.weight.min() < -127:
        raise CheckpointError("classifier.weight: -128 is outside the symmetric range [-127, 127]")
    w_scale = classifier.w_scale.astype(np.float64)
    bad = ~np.isfinite(w_scale) | (w_scale <= 0) | (w_scale > MAX_WEIGHT_SCALE)
    if bad.any():
        raise CheckpointError(f"classifier.w_scale: {int(bad.sum())} scales outside (0, {MAX_WEIGHT_SCALE:g}] "
                              f"or not finite")
