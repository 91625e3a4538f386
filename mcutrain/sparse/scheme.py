"""Sparse-update schemes: which parameters on-device training updates, as data, JSON and a resolved plan.

A scheme (DESIGN.md section 5) names
  * the backbone convs whose BIAS is updated: the last k convs, or an explicit list;
  * the convs whose WEIGHT is updated, each with a ratio r in {1/8, 1/4, 1/2, 1} of its channels
    (input channels for 1x1 and normal convs, the channels of a depthwise conv);
  * the classifier (weight + bias), which is always updated and therefore never written down.
Every weight-updated conv must also be bias-updated (the bias gradient is the cheap by-product of the
output gradient the weight gradient needs anyway). Layers are the paper's 0-based forward conv index,
``mcutrain.models.conv_shapes(spec, res)[i]``; the classifier is not a conv and has no index.

JSON format ``mcutrain-scheme``, version 1 (one object; keys other than these are refused)::

    {
      "format": "mcutrain-scheme",          # required, exactly this string
      "version": 1,                         # required; readers refuse versions they do not know
      "model": "mcunet-5fps",               # required; the zoo model the indices refer to
      "name": "paper-99kb",                 # required; free text, shown by the CLI
      "bias": {"last": 22},                 # required; {"last": k} (0 <= k <= number of convs)
                                            #   or {"layers": [20, "blocks.7.pointwise1", ...]}
      "weights": [{"layer": 21, "ratio": 1}, {"layer": "blocks.8.pointwise1", "ratio": 0.25}],
                                            # optional (default: none); ratio one of 0.125, 0.25, 0.5, 1
      "description": "..."                  # optional free text
    }

A layer is an int conv index or a conv name as ``conv_shapes`` spells it (``first_conv``,
``blocks.B.pointwise1`` / ``blocks.B.depthwise`` / ``blocks.B.pointwise2``). A ratio of 0 (which
the paper's configs use to mean "not updated") is refused: leave the layer out of ``weights``.
Writers emit indices, and ``{"last": k}`` whenever the bias layers are the last k convs.

Resolution: ``resolve(scheme, spec)`` gives an ``UpdatePlan`` with one ``ConvUpdate`` per backbone conv.
Kept channels of a weight-updated conv are ``max(1, floor(C * ratio))`` (C = input channels, or the
depthwise channels): floor as the reference implementation, but never 0, because a weight update that
updates nothing is a scheme error, not a plan. The kept channels are the FIRST ``kept`` channels; the
exporter permutes channels so that the chosen ones come first (DESIGN.md section 10).
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mcutrain.io.atomic import atomic_write_text
from mcutrain.io.jsonfile import brief, check_header, read_json_file
from mcutrain.models.specs import NetSpec
from mcutrain.models.zoo import ConvShape, conv_shapes, get_spec
from mcutrain.sparse.errors import SchemeError

FORMAT = "mcutrain-scheme"
VERSION = 1
ALLOWED_RATIOS = (0.125, 0.25, 0.5, 1.0)
TOP_KEYS = ("format", "version", "model", "name", "bias", "weights", "description")
# A scheme's name is shown by the CLI, in reports and plot titles, and its description by the CLI:
# both free text, of bounded length. (Sizes and nesting of the whole file are
# bounded by ``mcutrain.io.jsonfile``; layer lists by the model's conv count, duplicates refused.)
MAX_NAME_CHARS = 128
MAX_DESCRIPTION_CHARS = 4096

LayerRef = int | str


@dataclass(frozen=True)
class Scheme:
    """A scheme as plain data; ``__post_init__`` sorts the layers so equal schemes compare equal.

    Construction does not check anything model-dependent: call ``validate`` (``resolve`` and the
    JSON reader do) before trusting a hand-built scheme.
    """

    model: str
    name: str
    bias_layers: tuple[int, ...]
    weight_ratios: tuple[tuple[int, float], ...]
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "bias_layers", tuple(sorted(self.bias_layers)))
        object.__setattr__(self, "weight_ratios", tuple(sorted(tuple(p) for p in self.weight_ratios)))

    @property
    def weight_layers(self) -> tuple[int, ...]:
        return tuple(i for i, _ in self.weight_ratios)


# ----------------------------------------------------------------------------------------------
# Facts about a model's convs that schemes refer to


@lru_cache(maxsize=None)
def backbone_convs(spec: NetSpec) -> tuple[ConvShape, ...]:
    """The backbone convs in index order (shapes at the model's default resolution)."""
    return tuple(conv_shapes(spec, spec.default_resolution))


def conv_names(spec: NetSpec) -> tuple[str, ...]:
    return tuple(c.name for c in backbone_convs(spec))


def conv_kind(conv: ConvShape) -> str:
    """``depthwise``, ``pointwise`` (1x1, dense) or ``normal``: the kind fixes what a ratio counts."""
    if conv.groups > 1 and conv.groups == conv.in_ch == conv.out_ch:
        return "depthwise"
    if conv.groups != 1:
        raise SchemeError(f"{conv.name}: grouped convs (groups={conv.groups}) are not supported")
    return "pointwise" if conv.kernel == 1 else "normal"


def ratio_channels(conv: ConvShape) -> int:
    """The channel count a ratio is a fraction of: input channels, or the depthwise channels."""
    return conv.in_ch


def kept_channels(channels: int, ratio: float) -> int:
    """Channels whose weights a ratio updates: floor(C * r), at least 1; 0 for a frozen weight."""
    return 0 if ratio == 0 else max(1, math.floor(channels * ratio))


def layer_forms(spec: NetSpec) -> str:
    """How a user may name a layer of ``spec``, for error messages."""
    n = len(backbone_convs(spec))
    expand = [i for i, b in enumerate(spec.blocks) if b.mid_ch is not None]
    last = len(spec.blocks) - 1
    return (f"a conv index 0..{n - 1} or a name: first_conv, blocks.B.pointwise1 (B in "
            f"{compact_ranges(expand)}), blocks.B.depthwise or blocks.B.pointwise2 (B in 0..{last})")


def compact_ranges(values: list[int] | tuple[int, ...]) -> str:
    """Sorted ints as ranges, for people: [1, 2, 3, 5] -> '1..3, 5'."""
    parts, start = [], None
    for k, v in enumerate(values):
        start = v if start is None else start
        if k + 1 == len(values) or values[k + 1] != v + 1:
            parts.append(str(v) if start == v else f"{start}..{v}")
            start = None
    return ", ".join(parts)


def layer_index(ref: Any, spec: NetSpec, where: str) -> int:
    """Resolve a conv index or a conv name to an index; ``where`` says which field it came from."""
    names = conv_names(spec)
    if isinstance(ref, int) and not isinstance(ref, bool):
        if 0 <= ref < len(names):
            return ref
        raise SchemeError(f"{where}: layer {ref} does not exist in {spec.name}; use {layer_forms(spec)}")
    if isinstance(ref, str):
        if ref in names:
            return names.index(ref)
        close = difflib.get_close_matches(ref, names, n=1)
        hint = f" (did you mean {brief(close[0])}?)" if close else ""
        raise SchemeError(f"{where}: {spec.name} has no conv named {brief(ref)}{hint}; use {layer_forms(spec)}")
    raise SchemeError(f"{where}: a layer must be a conv index or name, got {brief(ref)}; use {layer_forms(spec)}")


def last_k_layers(spec: NetSpec, k: Any, where: str = "bias.last") -> tuple[int, ...]:
    """Indices of the last ``k`` backbone convs, refusing k outside 0..number of convs."""
    n = len(backbone_convs(spec))
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise SchemeError(f"{where}: must be an integer from 0 to {n} (the number of backbone convs "
                          f"of {spec.name}), got {brief(k)}")
    return tuple(range(n - k, n))


# ----------------------------------------------------------------------------------------------
# Validation


def validate(scheme: Scheme, spec: NetSpec, resolution: int | None = None) -> None:
    """Raise ``SchemeError`` saying exactly what is wrong; return None for a usable scheme.

    ``resolution`` (optional) is only checked to be a positive input side: which convs exist and
    their channel counts do not depend on it.
    """
    if scheme.model != spec.name:
        raise SchemeError(f"scheme {brief(scheme.name)} is for model {brief(scheme.model)}; it cannot be used "
                          f"with model {spec.name!r} (conv indices differ between models)")
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)
                                   or resolution < 1):
        raise SchemeError(f"resolution must be a positive integer, got {brief(resolution)}")
    _check_layers(scheme.bias_layers, spec, "bias layers")
    _check_layers(scheme.weight_layers, spec, "weights")
    _check_ratios(scheme, spec)
    _check_weight_implies_bias(scheme, spec)


def _check_layers(indices: tuple[int, ...], spec: NetSpec, where: str) -> None:
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int):
            raise SchemeError(f"{where}: layer {brief(i)} is not a conv index; use {layer_forms(spec)}")
        layer_index(i, spec, where)
    names = conv_names(spec)
    for i, count in sorted(Counter(indices).items()):
        if count > 1:
            raise SchemeError(f"{where}: layer {i} ({names[i]}) is listed {count} times")


def _check_ratios(scheme: Scheme, spec: NetSpec) -> None:
    names = conv_names(spec)
    for i, r in scheme.weight_ratios:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or r not in ALLOWED_RATIOS:
            raise SchemeError(f"weights: layer {i} ({names[i]}) has ratio {brief(r)}; a ratio must be one of "
                              f"1/8, 1/4, 1/2, 1 (0.125, 0.25, 0.5, 1.0); to freeze a weight, leave "
                              f"the layer out of the weights")


def _check_weight_implies_bias(scheme: Scheme, spec: NetSpec) -> None:
    names = conv_names(spec)
    biased = set(scheme.bias_layers)
    missing = [i for i in scheme.weight_layers if i not in biased]
    if missing:
        i = missing[0]
        raise SchemeError(f"layer {i} ({names[i]}) updates its weight but not its bias; every "
                          f"weight-updated conv must also be bias-updated (add it to the bias layers, "
                          f"or raise 'last' to at least {len(names) - min(missing)})")


# ----------------------------------------------------------------------------------------------
# JSON


def scheme_to_json(scheme: Scheme, spec: NetSpec | None = None) -> dict:
    """The JSON document of ``scheme`` (indices; ``{"last": k}`` when the bias layers are a suffix)."""
    spec = spec or get_spec(scheme.model)
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": scheme.model,
        "name": scheme.name,
        "bias": _bias_to_json(scheme.bias_layers, len(backbone_convs(spec))),
        "weights": [{"layer": i, "ratio": r} for i, r in scheme.weight_ratios],
        "description": scheme.description,
    }


def _bias_to_json(layers: tuple[int, ...], n_convs: int) -> dict:
    k = len(layers)
    return {"last": k} if layers == tuple(range(n_convs - k, n_convs)) else {"layers": list(layers)}


def scheme_from_json(doc: Any, spec: NetSpec) -> Scheme:
    """Parse and validate a JSON document for model ``spec``."""
    if not isinstance(doc, dict):
        raise SchemeError(f"a scheme must be a JSON object, got {type(doc).__name__}")
    _check_header(doc)
    model = _string(doc, "model")
    if model != spec.name:
        raise SchemeError(f"scheme {brief(doc.get('name'))} is for model {brief(model)}; it cannot be used with "
                          f"model {spec.name!r} (conv indices differ between models)")
    scheme = Scheme(model=model, name=_name(doc),
                    bias_layers=_parse_bias(doc.get("bias"), spec),
                    weight_ratios=_parse_weights(doc.get("weights", []), spec),
                    description=_string(doc, "description", default=""))
    if len(scheme.description) > MAX_DESCRIPTION_CHARS:
        raise SchemeError(f"'description' has {len(scheme.description)} characters, over the limit of "
                          f"{MAX_DESCRIPTION_CHARS}")
    validate(scheme, spec)
    return scheme


def _check_header(doc: dict) -> None:
    check_header(doc, format=FORMAT, version=VERSION, keys=TOP_KEYS, what="scheme", error=SchemeError)


def _string(doc: dict, key: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise SchemeError(f"'{key}' must be a string, got {brief(value)}")
    return value


def _name(doc: dict) -> str:
    name = _string(doc, "name")
    if len(name) > MAX_NAME_CHARS:
        raise SchemeError(f"'name' has {len(name)} characters, over the limit of {MAX_NAME_CHARS}: "
                          f"{brief(name)}")
    if not name.isprintable():  # it is a title line: no newline or control character
        raise SchemeError(f"'name' must be printable text on one line, got {brief(name)}")
    return name


def _parse_bias(bias: Any, spec: NetSpec) -> tuple[int, ...]:
    if not isinstance(bias, dict) or len(bias) != 1 or not set(bias) <= {"last", "layers"}:
        raise SchemeError(f"'bias' must be {{\"last\": k}} or {{\"layers\": [...]}}, got {brief(bias)}")
    if "last" in bias:
        return last_k_layers(spec, bias["last"])
    layers = bias["layers"]
    if not isinstance(layers, list):
        raise SchemeError(f"bias.layers must be a list of conv indices or names, got {brief(layers)}")
    _check_length(layers, spec, "bias.layers")
    return tuple(layer_index(ref, spec, "bias.layers") for ref in layers)


def _parse_weights(weights: Any, spec: NetSpec) -> tuple[tuple[int, float], ...]:
    if not isinstance(weights, list):
        raise SchemeError(f"'weights' must be a list of {{\"layer\": ..., \"ratio\": ...}}, got {brief(weights)}")
    _check_length(weights, spec, "weights")
    return tuple(_parse_weight(entry, spec) for entry in weights)


def _check_length(entries: list, spec: NetSpec, where: str) -> None:
    """A list longer than the model's conv count must repeat a layer: say so before resolving it."""
    n = len(backbone_convs(spec))
    if len(entries) > n:
        raise SchemeError(f"{where}: {len(entries)} entries, but {spec.name} has only {n} convs "
                          f"(each may be listed once)")


def _parse_weight(entry: Any, spec: NetSpec) -> tuple[int, float]:
    if not isinstance(entry, dict) or set(entry) != {"layer", "ratio"}:
        raise SchemeError(f"each weights entry must be {{\"layer\": ..., \"ratio\": ...}}, got {brief(entry)}")
    index = layer_index(entry["layer"], spec, "weights")
    ratio = entry["ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise SchemeError(f"weights: layer {index} ({conv_names(spec)[index]}) has ratio {brief(ratio)}; "
                          f"a ratio must be one of 1/8, 1/4, 1/2, 1 (0.125, 0.25, 0.5, 1.0)")
    return index, float(ratio)


def load_scheme(path_or_name: str | os.PathLike, model: str | NetSpec) -> Scheme:
    """A scheme from a JSON file or a built-in name, validated for ``model`` (a name or a NetSpec:
    pass the spec of a loaded model, which may be an architecture of the user's).

    A value ending in ``.json`` or containing a path separator is a file; anything else is a
    built-in name (``mcutrain.sparse.builtin``), so a stray file never shadows a built-in.
    """
    spec = model if isinstance(model, NetSpec) else get_spec(model)
    text = os.fspath(path_or_name)
    if looks_like_path(text):
        return read_scheme_file(text, spec)
    from mcutrain.sparse.builtin import get_builtin  # builtin imports this module

    return get_builtin(text, spec)


def read_scheme_file(path: str | os.PathLike, spec: NetSpec) -> Scheme:
    """Parse and validate the JSON scheme file ``path``; every error names the file."""
    return read_json_file(path, lambda doc: scheme_from_json(doc, spec), SchemeError, "no such scheme file")


def looks_like_path(text: str) -> bool:
    return text.lower().endswith(".json") or os.sep in text or "/" in text


def save_scheme(path: str | os.PathLike, scheme: Scheme, spec: NetSpec | None = None) -> None:
    """Validate, then write the JSON document atomically (a crash leaves the old file or the new)."""
    spec = spec or get_spec(scheme.model)
    validate(scheme, spec)
    atomic_write_text(path, json.dumps(scheme_to_json(scheme, spec), indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# The resolved plan


@dataclass(frozen=True)
class ConvUpdate:
    """What training does to one backbone conv."""

    index: int
    name: str
    kind: str  # "normal" | "pointwise" | "depthwise"
    channels: int  # what a ratio is a fraction of: input channels, or the depthwise channels
    bias: bool
    weight_ratio: float  # 0.0: frozen weight
    kept_channels: int  # channels whose weights are updated (the first ones); 0 when frozen

    @property
    def updates_weight(self) -> bool:
        return self.weight_ratio > 0

    @property
    def trained(self) -> bool:
        return self.bias or self.updates_weight


@dataclass(frozen=True)
class UpdatePlan:
    """A validated scheme resolved against its model: one ``ConvUpdate`` per backbone conv.

    The per-layer facts a compiler needs are methods: which convs need their output gradient, which
    must pass a gradient to their input, and which must keep (the kept channels of) their input.
    """

    model: str
    scheme: str
    convs: tuple[ConvUpdate, ...]
    classifier: bool = True  # always: the classifier's weight and bias are always updated

    @property
    def trained_convs(self) -> tuple[ConvUpdate, ...]:
        return tuple(c for c in self.convs if c.trained)

    @property
    def lowest_trained_conv(self) -> int | None:
        """Index of the earliest trained conv; None when only the classifier trains."""
        trained = self.trained_convs
        return trained[0].index if trained else None

    def needs_output_grad(self, index: int) -> bool:
        """The gradient reaches this conv's output: it is trained, or a trained conv lies before it."""
        low = self.lowest_trained_conv
        return low is not None and index >= low

    def needs_input_grad(self, index: int) -> bool:
        """This conv must pass a gradient to its input: some trained conv lies before it.

        The backbone is a chain of blocks, so every earlier conv feeds this conv's input.
        """
        low = self.lowest_trained_conv
        return low is not None and index > low

    def saves_input(self, index: int) -> bool:
        """The forward pass must keep this conv's input (its kept channels): its weight is updated."""
        return self.convs[index].updates_weight


def resolve(scheme: Scheme, spec: NetSpec) -> UpdatePlan:
    """Validate ``scheme`` and resolve it to one ``ConvUpdate`` per backbone conv of ``spec``."""
    validate(scheme, spec)
    bias = set(scheme.bias_layers)
    ratios = dict(scheme.weight_ratios)
    convs = tuple(_conv_update(i, conv, i in bias, ratios.get(i, 0.0))
                  for i, conv in enumerate(backbone_convs(spec)))
    return UpdatePlan(model=spec.name, scheme=scheme.name, convs=convs)


def _conv_update(index: int, conv: ConvShape, bias: bool, ratio: float) -> ConvUpdate:
    channels = ratio_channels(conv)
    return ConvUpdate(index=index, name=conv.name, kind=conv_kind(conv), channels=channels, bias=bias,
                      weight_ratio=float(ratio), kept_channels=kept_channels(channels, ratio))
