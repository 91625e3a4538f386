"""Architectures as JSON: how a user brings a MobileNet-style network of their own.

A NetSpec is plain data, so its JSON document is the spec field by field (format in
docs/own-model.md). Parsing validates everything the float model, the quantizer, the engine and the C
kernels rely on, and every error names the field and the value (``blocks[3].kernel: 9 is not
supported``), because a bad spec found later shows up as a shape error deep in training. The same
document is embedded in checkpoints and int8 model files, so a model never needs its JSON file again.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from mcutrain.errors import ModelError
from mcutrain.io.atomic import atomic_write_text
from mcutrain.io.jsonfile import check_header, check_keys, read_json_file
from mcutrain.models.specs import ALL_SPECS, BlockSpec, NetSpec

FORMAT = "mcutrain-arch"
VERSION = 1
KERNELS = (3, 5, 7)  # the depthwise kernels of the paper's networks, the ones the engine and C are tested on
STRIDES = (1, 2)
IN_CHANNELS = 3  # the data pipeline feeds RGB (greyscale is repeated to 3 channels)
MIN_RESOLUTION = 8
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
    stem_ch = _check_int(doc.get("stem_ch"), "stem_ch")
    spec = NetSpec(
        name=name, stem_ch=stem_ch, blocks=_blocks(doc.get("blocks"), stem_ch),
        default_resolution=_check_int(doc.get("default_resolution", 128), "default_resolution",
                                      minimum=MIN_RESOLUTION),
        in_ch=IN_CHANNELS,
        stem_kernel=_check_int(doc.get("stem_kernel", 3), "stem_kernel", allowed=KERNELS, why="must be odd"),
        stem_stride=_check_int(doc.get("stem_stride", 2), "stem_stride", allowed=STRIDES))
    if not embedded and name in _ZOO and _ZOO[name] != spec:
        raise ModelError(f"name: {name!r} is a zoo model with other layers; give your architecture "
                         f"another name (zoo: {', '.join(_ZOO)})")
    return spec


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
        raise ModelError(f"name: {value!r} is not a valid name (1-64 characters: letters, digits, "
                         f"'.', '_', '-'; starting with a letter or digit)")
    return value


def _check_int(value: Any, field: str, *, minimum: int = 1, allowed: tuple[int, ...] = (), why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{field}: {value!r} is not an integer")
    if allowed and value not in allowed:
        choices = ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}" if len(allowed) > 1 else str(allowed[0])
        raise ModelError(f"{field}: {value} is not supported ({why + ': ' if why else ''}{choices})")
    if value < minimum:
        raise ModelError(f"{field}: {value} must be at least {minimum}")
    return value


def _blocks(rows: Any, stem_ch: int) -> tuple[BlockSpec, ...]:
    if not isinstance(rows, list) or not rows:
        raise ModelError(f"blocks: must be a non-empty list of blocks, got {rows!r}")
    blocks, prev_out, prev_where = [], stem_ch, "stem_ch"
    for i, row in enumerate(rows):
        where = f"blocks[{i}]"
        if not isinstance(row, dict):
            raise ModelError(f"{where}: must be an object with the keys {', '.join(_BLOCK_KEYS)}, got {row!r}")
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
            in_ch=in_ch, mid_ch=None if mid is None else _check_int(mid, f"{where}.mid_ch"),
            out_ch=_check_int(row["out_ch"], f"{where}.out_ch"),
            kernel=_check_int(row["kernel"], f"{where}.kernel", allowed=KERNELS),
            stride=_check_int(row["stride"], f"{where}.stride", allowed=STRIDES)))
        prev_out, prev_where = blocks[-1].out_ch, f"blocks[{i}].out_ch"
    return tuple(blocks)
