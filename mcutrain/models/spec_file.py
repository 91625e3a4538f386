"""Architectures as JSON: how a user brings a MobileNet-style network of their own.

A NetSpec is plain data, so its JSON document is the spec field by field (format in
docs/own-model.md). Parsing validates everything the float model, the quantizer, the engine and the C
kernels rely on, and every error names the field and the value (``blocks[3].kernel: 9 is not
supported``), because a bad spec found later shows up as a shape error deep in training. The same
document is embedded in checkpoints and int8 model files, so a model never needs its JSON file again.

Limits (every message states the one it hits). They are far above any network a microcontroller
runs, and low enough that nothing downstream allocates absurd amounts from a forged file: the
paper's networks have 14-20 blocks, at most 576 channels, an expand ratio of 6, 128x128 inputs,
at most 0.5 M backbone weights and 0.2 M values in the largest feature map (mbv2-w0.35 at 128:
48x64x64).
* ``MAX_BLOCKS`` 1024 blocks (the deepest ImageNet MobileNets have ~50); compile time grows about
  n log n in blocks (docs/results/compile_scaling.md), so 1024 compiles in minutes, not hours.
* ``MAX_CHANNELS`` 4096 for every channel count (stem, expand, output): 7x the paper's widest.
* ``MAX_EXPAND_RATIO`` 16: ``mid_ch <= 16 * in_ch`` (MobileNetV2 uses 6).
* ``MAX_RESOLUTION`` 1024: the input side, ``default_resolution`` or any resolution a command is
  given (MCU cameras deliver at most VGA; ``MIN_RESOLUTION`` 8 keeps a stride-2 stem meaningful).
* ``MAX_WEIGHTS`` 2**25 (33.5 M) backbone weights: 30x the paper's networks, 5x MobileNetV2-1.4; an
  MCU's Flash holds at most a few MB.
* ``MAX_FEATURE_VALUES`` 2**25 values in any one feature map at the resolution used (C x H x W):
  e.g. 32 channels at 1024x1024; the paper's networks stay under it even at resolution 1024.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from mcutrain.errors import ModelError
from mcutrain.io.atomic import atomic_write_text
from mcutrain.io.jsonfile import brief, check_header, check_keys, read_json_file
from mcutrain.models.specs import ALL_SPECS, BlockSpec, NetSpec

FORMAT = "mcutrain-arch"
VERSION = 1
KERNELS = (3, 5, 7)  # the depthwise kernels of the paper's networks, the ones the engine and C are tested on
STRIDES = (1, 2)
IN_CHANNELS = 3  # the data pipeline feeds RGB (greyscale is repeated to 3 channels)
MIN_RESOLUTION = 8
MAX_RESOLUTION = 1024
MAX_BLOCKS = 1024
MAX_CHANNELS = 4096
MAX_EXPAND_RATIO = 16
MAX_WEIGHTS = 2 ** 25
MAX_FEATURE_VALUES = 2 ** 25
_TOP_KEYS = ("format", "version", "name", "in_ch", "stem_ch", "stem_kernel", "stem_stride",
             "default_resolution", "blocks")
_BLOCK_KEYS = ("in_ch", "mid_ch", "out_ch", "kernel", "stride")
# Names end up in file names, report titles and C comments: keep them to a safe alphabet.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ZOO = {spec.name: spec for spec in ALL_SPECS}


def spec_to_json(spec: NetSpec) -> dict:
    """The canonical document of ``spec`` (every field written out)."""
    return {
        "format": FORMAT, "version": VERSION, "name": spec.name, "in_ch": spec.in_ch,
        "stem_ch": spec.stem_ch, "stem_kernel": spec.stem_kernel, "stem_stride": spec.stem_stride,
        "default_resolution": spec.default_resolution,
        "blocks": [{"in_ch": b.in_ch, "mid_ch": b.mid_ch, "out_ch": b.out_ch, "kernel": b.kernel,
                    "stride": b.stride} for b in spec.blocks],
    }


def spec_from_json(doc: Any, *, embedded: bool = False) -> NetSpec:
    """Parse and validate a document. ``embedded``: it comes from a model file, which is the truth
    even when its name is a zoo name with other layers (a user file may not reuse a zoo name)."""
    if not isinstance(doc, dict):
        raise ModelError(f"an architecture must be a JSON object, got {type(doc).__name__}")
    _check_header(doc)
    for key in ("name", "stem_ch", "blocks"):
        if key not in doc:
            raise ModelError(f"{key}: missing (an architecture needs name, stem_ch and blocks)")
    name = _name(doc.get("name"))
    _check_int(doc.get("in_ch", IN_CHANNELS), "in_ch", allowed=(IN_CHANNELS,),
               why="the data pipeline feeds 3-channel images; greyscale is repeated to 3 channels")
    stem_ch = _check_int(doc.get("stem_ch"), "stem_ch", maximum=MAX_CHANNELS)
    spec = NetSpec(
        name=name, stem_ch=stem_ch, blocks=_blocks(doc.get("blocks"), stem_ch),
        default_resolution=check_resolution(doc.get("default_resolution", 128), "default_resolution"),
        in_ch=IN_CHANNELS,
        stem_kernel=_check_int(doc.get("stem_kernel", 3), "stem_kernel", allowed=KERNELS, why="must be odd"),
        stem_stride=_check_int(doc.get("stem_stride", 2), "stem_stride", allowed=STRIDES))
    if not embedded and name in _ZOO and _ZOO[name] != spec:
        raise ModelError(f"name: {brief(name)} is a zoo model with other layers; give your architecture "
                         f"another name (zoo: {', '.join(_ZOO)})")
    check_size(spec, spec.default_resolution)
    return spec


def check_resolution(value: Any, field: str = "resolution") -> int:
    """An input side within ``MIN_RESOLUTION..MAX_RESOLUTION`` (ModelError naming ``field`` otherwise)."""
    return _check_int(value, field, minimum=MIN_RESOLUTION, maximum=MAX_RESOLUTION)


def check_size(spec: NetSpec, resolution: int) -> None:
    """Refuse a network over ``MAX_WEIGHTS`` backbone weights or with a feature map over
    ``MAX_FEATURE_VALUES`` values at ``resolution`` (what training and compiling would allocate)."""
    check_resolution(resolution)
    weights, (values, shape, where) = network_size(spec, resolution)
    if weights > MAX_WEIGHTS:
        raise ModelError(f"{spec.name}: {weights:,} backbone weights, over the limit of {MAX_WEIGHTS:,} "
                         f"(use fewer blocks or channels)")
    if values > MAX_FEATURE_VALUES:
        raise ModelError(f"{spec.name} at resolution {resolution}: {where} makes a feature map of "
                         f"{shape} = {values:,} values, over the limit of {MAX_FEATURE_VALUES:,} "
                         f"(use a lower resolution or fewer channels)")


def network_size(spec: NetSpec, resolution: int) -> tuple[int, tuple[int, str, str]]:
    """Backbone weights, and the largest feature map (values, "CxHxW", which layer makes it).

    Counted with Python ints from the spec alone (nothing is allocated): the same shapes as
    ``mcutrain.models.conv_shapes``."""
    side = -(-resolution // spec.stem_stride)
    weights = spec.in_ch * spec.stem_ch * spec.stem_kernel ** 2
    maps = [(spec.stem_ch, side, "stem_ch")]
    for i, b in enumerate(spec.blocks):
        if b.mid_ch is not None:
            weights += b.in_ch * b.mid_ch
            maps.append((b.mid_ch, side, f"blocks[{i}].mid_ch"))
        side = -(-side // b.stride)
        weights += b.dw_ch * b.kernel ** 2 + b.dw_ch * b.out_ch
        maps += [(b.dw_ch, side, f"blocks[{i}] depthwise"), (b.out_ch, side, f"blocks[{i}].out_ch")]
    channels, side, where = max(maps, key=lambda m: m[0] * m[1] * m[1])
    return weights, (channels * side * side, f"{channels}x{side}x{side}", where)


def read_spec_file(path: str | os.PathLike) -> NetSpec:
    """Parse and validate the architecture file ``path``; every error names the file."""
    return read_json_file(path, spec_from_json, ModelError, "no such architecture file")


def write_spec_file(path: str | os.PathLike, spec: NetSpec) -> None:
    atomic_write_text(path, json.dumps(spec_to_json(spec), indent=2) + "\n")


def _check_header(doc: dict) -> None:
    check_header(doc, format=FORMAT, version=VERSION, keys=_TOP_KEYS, what="architecture", error=ModelError)


def _check_keys(doc: dict, known: tuple[str, ...], what: str, where: str = "") -> None:
    check_keys(doc, known, what, ModelError, where)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ModelError(f"name: {brief(value)} is not a valid name (1-64 characters: letters, digits, "
                         f"'.', '_', '-'; starting with a letter or digit)")
    return value


def _check_int(value: Any, field: str, *, minimum: int = 1, maximum: int | None = None,
               allowed: tuple[int, ...] = (), why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{field}: {brief(value)} is not an integer")
    if allowed and value not in allowed:
        choices = ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}" if len(allowed) > 1 else str(allowed[0])
        raise ModelError(f"{field}: {value} is not supported ({why + ': ' if why else ''}{choices})")
    if value < minimum:
        raise ModelError(f"{field}: {value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ModelError(f"{field}: {value} is over the limit of {maximum}")
    return value


def _blocks(rows: Any, stem_ch: int) -> tuple[BlockSpec, ...]:
    if not isinstance(rows, list) or not rows:
        raise ModelError(f"blocks: must be a non-empty list of blocks, got {brief(rows)}")
    if len(rows) > MAX_BLOCKS:
        raise ModelError(f"blocks: {len(rows)} blocks, over the limit of {MAX_BLOCKS}")
    blocks, prev_out, prev_where = [], stem_ch, "stem_ch"
    for i, row in enumerate(rows):
        where = f"blocks[{i}]"
        if not isinstance(row, dict):
            raise ModelError(f"{where}: must be an object with the keys {', '.join(_BLOCK_KEYS)}, got {brief(row)}")
        _check_keys(row, _BLOCK_KEYS, "a block", f"{where}: ")
        for key in ("out_ch", "kernel", "stride"):
            if key not in row:
                raise ModelError(f"{where}.{key}: missing")
        in_ch = _check_int(row.get("in_ch", prev_out), f"{where}.in_ch")
        if in_ch != prev_out:
            raise ModelError(f"{where}.in_ch: {in_ch} does not chain: {prev_where} is {prev_out} "
                             f"(a block takes the previous block's output)")
        mid = row.get("mid_ch")
        blocks.append(BlockSpec(
            in_ch=in_ch, mid_ch=None if mid is None else _check_mid(mid, in_ch, where),
            out_ch=_check_int(row["out_ch"], f"{where}.out_ch", maximum=MAX_CHANNELS),
            kernel=_check_int(row["kernel"], f"{where}.kernel", allowed=KERNELS),
            stride=_check_int(row["stride"], f"{where}.stride", allowed=STRIDES)))
        prev_out, prev_where = blocks[-1].out_ch, f"blocks[{i}].out_ch"
    return tuple(blocks)


def _check_mid(value: Any, in_ch: int, where: str) -> int:
    mid = _check_int(value, f"{where}.mid_ch", maximum=MAX_CHANNELS)
    if mid > MAX_EXPAND_RATIO * in_ch:
        raise ModelError(f"{where}.mid_ch: {mid} is more than {MAX_EXPAND_RATIO} x in_ch ({in_ch}), the "
                         f"limit of the expand ratio (at most {MAX_EXPAND_RATIO * in_ch} here)")
    return mid
