"""The model zoo: build a network by name and count what a microcontroller cares about.

It is also where a model the user names is resolved (``resolve_spec``: a zoo name, an architecture
JSON file, a model file) and where model files get their architecture (``spec_to_embed``,
``spec_of_file``), so that every command means the same thing by the same name.

The counts are computed from the spec (analytically), so they need no forward pass; the tests check
them against a forward pass with hooks and against the paper's published figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mcutrain.errors import ModelError
from mcutrain.io.container import KIND_HINTS, peek_container
from mcutrain.models.mobilenet import MobileNetLike
from mcutrain.models.spec_file import read_spec_file, spec_from_json, spec_to_json
from mcutrain.models.specs import ALL_SPECS, NetSpec

_BY_NAME = {spec.name: spec for spec in ALL_SPECS}
# Architectures met in this process that are not the zoo's (from a JSON file or embedded in a model
# file), by name. WHY: a Scheme names its model, and some callers (``mcutrain search --out``, the
# demo) save a scheme with only that name; the spec they mean is the one of the model just loaded.
# A loaded spec wins over a zoo spec of the same name: the model file is the truth.
_LOADED: dict[str, NetSpec] = {}


def model_names() -> list[str]:
    """The zoo's names (architectures loaded from files are not listed)."""
    return list(_BY_NAME)


def get_spec(name: str) -> NetSpec:
    """The architecture called ``name``: the last one loaded from a file in this process, or the zoo's."""
    if name in _LOADED:
        return _LOADED[name]
    return zoo_spec(name)


def zoo_spec(name: str) -> NetSpec:
    """The zoo's architecture ``name`` (what files written before specs were embedded refer to)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(_BY_NAME)}, or a path to an "
                         f"architecture .json file (docs/own-model.md)") from None


def remember_spec(spec: NetSpec) -> NetSpec:
    """Make ``spec`` what its name means in this process (a no-op for an unchanged zoo spec)."""
    if _BY_NAME.get(spec.name) == spec:
        _LOADED.pop(spec.name, None)
    else:
        _LOADED[spec.name] = spec
    return spec


def forget_loaded_specs() -> None:
    """Back to the zoo alone (tests that load colliding specs clean up with this)."""
    _LOADED.clear()


def spec_to_embed(spec: NetSpec) -> dict | None:
    """What a model file stores of its architecture: nothing for a zoo network exactly as in the zoo
    (the zoo is frozen code; leaving it out keeps such files' metadata what it was before specs
    travelled),
    the whole spec (JSON) otherwise."""
    return None if _BY_NAME.get(spec.name) == spec else spec_to_json(spec)


def spec_of_file(meta: dict, version: int, name: str) -> NetSpec:
    """The architecture of a model file (float checkpoint or int8 model) from its metadata: version 1
    names a zoo network; version 2 embeds its spec, which wins over a zoo network of the same name
    (the file is the truth) and becomes what ``name`` means in this process."""
    if version < 2:
        return zoo_spec(name)
    if "spec" not in meta:
        raise ModelError(f"version {version} file without its architecture (meta 'spec')")
    try:
        spec = spec_from_json(meta["spec"], embedded=True)
    except ModelError as err:
        raise ModelError(f"embedded architecture: {err}") from None
    if spec.name != name:
        raise ModelError(f"the embedded architecture is {spec.name!r}, the metadata names {name!r}")
    return remember_spec(spec)


def looks_like_spec_path(text: str) -> bool:
    return text.lower().endswith(".json") or os.sep in text or "/" in text


def resolve_spec(name_or_path: str | os.PathLike | NetSpec) -> NetSpec:
    """The one entry point for a model given by the user: a zoo name, an architecture .json file, or
    a model file (``.safetensors``: a float checkpoint or an int8 model, whose architecture it is).

    A zoo name wins over a file of the same name in the current folder, as with schemes; a value
    ending in ``.json`` or containing a path separator is a file.
    """
    if isinstance(name_or_path, NetSpec):
        return name_or_path
    text = os.fspath(name_or_path)
    if text in _BY_NAME:
        return _BY_NAME[text]
    if text.lower().endswith(".safetensors"):
        return spec_of_model_file(text)
    if looks_like_spec_path(text):
        return remember_spec(read_spec_file(text))
    return zoo_spec(text)


def spec_of_model_file(path: str | os.PathLike) -> NetSpec:
    """The architecture of a float checkpoint or int8 model file, from its header alone."""
    kind, version, meta = peek_container(path)
    name_key = {"float-checkpoint": "model", "int8-model": "arch"}.get(kind)
    if name_key is None and kind in KIND_HINTS:
        raise ModelError(f"{path}: {KIND_HINTS[kind]}")
    if name_key is None:
        raise ModelError(f"{path}: a {kind!r} file has no architecture (give a float checkpoint, "
                         f"an int8 model, a zoo name or an architecture .json file)")
    try:
        return spec_of_file(meta, version, str(meta[name_key]))
    except (ModelError, KeyError) as err:
        raise ModelError(f"{path}: {err}") from None


def build_model(model: str | NetSpec, num_classes: int) -> MobileNetLike:
    """A float network for a zoo name, an architecture file path, or a NetSpec."""
    if num_classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, got {num_classes}")
    return MobileNetLike(resolve_spec(model), num_classes)


@dataclass(frozen=True)
class ConvShape:
    """One convolution as the engine sees it (input side before the conv)."""

    name: str
    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    groups: int
    in_side: int

    @property
    def out_side(self) -> int:
        return -(-self.in_side // self.stride)  # 'same' padding: ceil(side / stride)

    @property
    def weights(self) -> int:
        return self.out_ch * (self.in_ch // self.groups) * self.kernel * self.kernel

    @property
    def macs(self) -> int:
        return self.out_side * self.out_side * self.weights


def conv_shapes(spec: NetSpec, resolution: int) -> list[ConvShape]:
    """Every backbone convolution in forward order (the paper's 0-based conv index)."""
    side = -(-resolution // spec.stem_stride)
    convs = [ConvShape("first_conv", spec.in_ch, spec.stem_ch, spec.stem_kernel, spec.stem_stride, 1, resolution)]
    for i, b in enumerate(spec.blocks):
        if b.mid_ch is not None:
            convs.append(ConvShape(f"blocks.{i}.pointwise1", b.in_ch, b.mid_ch, 1, 1, 1, side))
        convs.append(ConvShape(f"blocks.{i}.depthwise", b.dw_ch, b.dw_ch, b.kernel, b.stride, b.dw_ch, side))
        side = -(-side // b.stride)
        convs.append(ConvShape(f"blocks.{i}.pointwise2", b.dw_ch, b.out_ch, 1, 1, 1, side))
    return convs


def model_summary(model: str | NetSpec, resolution: int | None = None) -> dict:
    """The numbers `mcutrain zoo` prints: classifier and its bias are excluded from every count."""
    spec = resolve_spec(model)
    res = resolution or spec.default_resolution
    convs = conv_shapes(spec, res)
    return {
        "name": spec.name,
        "convs": len(convs),
        "blocks": len(spec.blocks),
        "backbone_weights": sum(c.weights for c in convs),
        "biases": sum(c.out_ch for c in convs),
        "macs": sum(c.macs for c in convs),
        "resolution": res,
        "feature_channels": spec.feature_ch,
    }
