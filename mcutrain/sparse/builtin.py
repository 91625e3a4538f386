"""Built-in schemes: the 15 the paper shipped (DESIGN.md section 5) and four baselines for any model.

Paper schemes are named by their model's own figure (``paper-49kb`` ...); the numbers are the paper's
analytic extra-memory estimate, which ``mcutrain.sparse.analytic`` recomputes. The rows below are the
paper's configs verbatim (``n_bias`` = the last k convs' biases; weight layers as 0-based forward conv
indices with their ratios); ratio-0 entries meant "not updated" and are dropped when a Scheme is built.

Baselines (any model, ``tiny`` included):
  ``full``        every backbone bias and weight (ratio 1) and the classifier;
  ``last-layer``  the classifier only;
  ``bias-only``   every backbone bias and the classifier;
  ``last-k:N``    bias and weight (ratio 1) of the last N backbone convs, and the classifier.

Imported graphs (``QGraph``): the baselines (``graph_plan``) on the graph's convs in node order, or a
scheme file with ``"model": "graph"`` (any bias layers, weight ratios; the kept channels are the
first ones, a graph is not permuted); the paper's schemes name zoo convs and are refused there.
Channels a graph froze at import (degenerate weight scales, ``QConv.frozen_channels``) stay frozen
whatever the scheme: the optimizer's QAS factor is 0 on them.
"""

from __future__ import annotations

import re

from mcutrain.models.specs import NetSpec
from mcutrain.models.zoo import get_spec, spec_to_embed
from mcutrain.sparse.errors import SchemeError
from mcutrain.io.jsonfile import brief, check_header, read_json_file
from mcutrain.sparse.scheme import (ALLOWED_RATIOS, FORMAT, MAX_NAME_CHARS, TOP_KEYS, VERSION, ConvUpdate, Scheme,
                                    UpdatePlan, backbone_convs, kept_channels, last_k_layers, looks_like_path,
                                    validate)

_EVERY_THIRD = (36, 39, 42, 45, 48, 51, 54, 57)  # proxyless "36,39,...,57 (step 3)"
_MBV2_SAME = (27, 30, 33, 36, 39, 42, 45, 48)  # mbv2 99kb layers, reused by 123kb and 138kb

# model -> (name, n_bias, weight layers, ratios), copied from DESIGN.md section 5.
PAPER_ROWS: dict[str, tuple[tuple[str, int, tuple[int, ...], tuple[float, ...]], ...]] = {
    "mcunet-5fps": (
        ("paper-49kb", 20, (23, 24, 27, 30, 33, 39), (0, .25, .5, .5, 0, 0)),
        ("paper-74kb", 21, (21, 23, 24, 26, 27, 30), (1, 0, 1, 0, .5, 1)),
        ("paper-99kb", 22, (21, 24, 27, 30, 36, 39), (1, 1, 1, 1, .125, .25)),
        ("paper-124kb", 24, (21, 24, 27, 30, 33, 39), (.25, 1, 1, 1, .5, .5)),
        ("paper-148kb", 23, (21, 24, 27, 30, 36, 39), (1, 1, 1, 1, 1, .5)),
    ),
    "mbv2-w0.35": (
        ("paper-49kb", 16, (36, 39, 40, 41, 42, 45, 48, 49), (1, 1, 0, .25, .125, .125, .125, .125)),
        ("paper-73kb", 20, (32, 33, 36, 39, 41, 42, 45, 48), (.125, .5, .5, 1, .25, .125, .125, 1)),
        ("paper-99kb", 25, _MBV2_SAME, (1, 1, 1, 1, 1, .125, .5, 1)),
        ("paper-123kb", 31, _MBV2_SAME, (1, 1, 1, 1, 1, .5, 1, 1)),
        ("paper-138kb", 34, _MBV2_SAME, (1, 1, 1, 1, 1, 1, 1, 1)),
    ),
    "proxyless-w0.3": (
        ("paper-49kb", 21, (39, 42, 44, 45, 50, 51, 54, 57), (.25, 1, 0, 1, 0, .125, .25, .25)),
        ("paper-74kb", 28, (33, 36, 39, 42, 45, 51, 54, 57), (.5, .25, 1, 1, 1, .5, .25, .5)),
        ("paper-98kb", 25, _EVERY_THIRD, (1, .5, 1, 1, .25, .5, 1, 1)),
        ("paper-120kb", 32, _EVERY_THIRD, (1, 1, 1, 1, .5, 1, 1, 1)),
        ("paper-148kb", 45, _EVERY_THIRD, (1, 1, 1, 1, 1, 1, 1, 1)),
    ),
}
# Another name for a scheme, so that every model answers to "paper-99kb".
ALIASES: dict[str, dict[str, str]] = {"proxyless-w0.3": {"paper-99kb": "paper-98kb"}}
BASELINES = ("full", "last-layer", "bias-only")
GRAPH_MODEL = "graph"  # the "model" of a scheme file for an imported graph
LAST_K = "last-k:N"
_LAST_K_RE = re.compile(r"last-k:(-?\d+)")


def _spec(model: str | NetSpec) -> NetSpec:
    return model if isinstance(model, NetSpec) else get_spec(model)


def _paper_rows(spec: NetSpec) -> tuple:
    # Paper schemes are conv indices of the paper's networks: only a zoo network verbatim has them
    # (an architecture of the user's that reuses a zoo name gets the baselines only).
    return PAPER_ROWS.get(spec.name, ()) if spec_to_embed(spec) is None else ()


def builtin_names(model: str | NetSpec) -> list[str]:
    """Canonical built-in names for ``model`` (a name or a NetSpec: paper schemes, then baselines);
    aliases and ``last-k:N`` are accepted by ``get_builtin`` but not listed here."""
    return [row[0] for row in _paper_rows(_spec(model))] + list(BASELINES)


def builtin_aliases(model: str | NetSpec) -> dict[str, str]:
    spec = _spec(model)
    return dict(ALIASES.get(spec.name, {})) if _paper_rows(spec) else {}


def get_builtin(name: str, model: str | NetSpec) -> Scheme:
    """The built-in scheme ``name`` for ``model`` (an alias returns its target, under its own name)."""
    spec = _spec(model)
    name = builtin_aliases(spec).get(name, name)
    for row in _paper_rows(spec):
        if row[0] == name:
            return _paper_scheme(spec, *row)
    if name in BASELINES or _LAST_K_RE.fullmatch(name):
        return _baseline(spec, name)
    raise SchemeError(f"no built-in scheme {name!r} for {spec.name}; available: {_available(spec)}")


def _available(spec: NetSpec) -> str:
    names = builtin_names(spec) + [f"{a} (= {t})" for a, t in builtin_aliases(spec).items()]
    n = len(backbone_convs(spec))
    return ", ".join(names + [f"{LAST_K} (N = 0..{n})"]) + ", or a path to a .json scheme file"


def _paper_scheme(spec: NetSpec, name: str, n_bias: int, layers: tuple[int, ...],
                  ratios: tuple[float, ...]) -> Scheme:
    kept = tuple((i, float(r)) for i, r in zip(layers, ratios, strict=True) if r != 0)
    kb = name.removeprefix("paper-").removesuffix("kb")
    scheme = Scheme(spec.name, name, last_k_layers(spec, n_bias, "n_bias"), kept,
                    description=f"MCUNetV3 paper scheme for {spec.name} ({kb} KB analytic extra memory): "
                                f"biases of the last {n_bias} convs, {len(kept)} weight-updated convs")
    validate(scheme, spec)
    return scheme


def _baseline(spec: NetSpec, name: str) -> Scheme:
    n = len(backbone_convs(spec))
    if name == "full":
        return _last_k(spec, name, n, "every backbone bias and weight, and the classifier")
    if name == "last-layer":
        return Scheme(spec.name, name, (), (), "the classifier only")
    if name == "bias-only":
        return Scheme(spec.name, name, last_k_layers(spec, n), (), "every backbone bias, and the classifier")
    k = int(_LAST_K_RE.fullmatch(name).group(1))
    return _last_k(spec, name, k, f"bias and weight of the last {k} backbone convs, and the classifier")


def _last_k(spec: NetSpec, name: str, k: int, description: str) -> Scheme:
    layers = last_k_layers(spec, k, f"{name}: N")
    return Scheme(spec.name, name, layers, tuple((i, 1.0) for i in layers), description)


# ---------------------------------------------------------------------------------------------- graphs


def graph_plan(graph, name: str) -> UpdatePlan:
    """The UpdatePlan of baseline scheme ``name`` on an imported graph's convs (conv i = i-th conv node)."""
    convs = graph.convs()
    n = len(convs)
    allowed = f"{', '.join(BASELINES)} or {LAST_K} (N = 0..{n})"
    if name in BASELINES:
        k = {"full": n, "bias-only": n, "last-layer": 0}[name]
        weights = name == "full"
    elif (m := _LAST_K_RE.fullmatch(name)) is not None:
        k, weights = int(m.group(1)), True
        if not 0 <= k <= n:
            raise SchemeError(f"{name}: N must be from 0 to {n} (the number of convolutions of this graph)")
    elif looks_like_path(name):
        return _graph_scheme_file(graph, name)
    elif name.startswith("paper-"):
        raise SchemeError(f"scheme {name!r} addresses convs of the paper's zoo networks; for an imported graph "
                          f"use {allowed}, or a scheme file with \"model\": \"{GRAPH_MODEL}\"")
    else:
        raise SchemeError(f"no built-in scheme {name!r} for an imported graph; use {allowed}, or a scheme file "
                          f"with \"model\": \"{GRAPH_MODEL}\"")
    bias = set(range(n - k, n))
    return _graph_resolved(graph, name, bias, {i: 1.0 for i in bias} if weights else {})


def _graph_resolved(graph, name: str, bias: set[int], ratios: dict[int, float]) -> UpdatePlan:
    updates = tuple(_graph_conv_update(i, c, i in bias, ratios.get(i, 0.0)) for i, c in enumerate(graph.convs()))
    return UpdatePlan(model=_graph_label(graph), scheme=name, convs=updates)


def _graph_conv_update(index: int, conv, bias: bool, ratio: float) -> ConvUpdate:
    """Kept channels are the first ones (a graph is not permuted): ratio r keeps floor(C * r), at least 1."""
    depthwise = conv.groups > 1
    kind = "depthwise" if depthwise else ("pointwise" if conv.kernel_hw == (1, 1) else "normal")
    channels = conv.in_ch
    return ConvUpdate(index=index, name=conv.name, kind=kind, channels=channels, bias=bias,
                      weight_ratio=float(ratio), kept_channels=kept_channels(channels, ratio))


def _graph_scheme_file(graph, path: str) -> UpdatePlan:
    """A scheme file for an imported graph: ``"model": "graph"``, layers as conv indices (node order) or
    conv names, bias ``{"last": k}`` or ``{"layers": [...]}``, weights with ratios as for zoo models."""
    return read_json_file(path, lambda doc: graph_scheme_doc(graph, doc), SchemeError, "no such scheme file")


def graph_scheme_doc(graph, doc) -> UpdatePlan:
    check_header(doc, format=FORMAT, version=VERSION, keys=TOP_KEYS, what="scheme", error=SchemeError)
    if doc.get("model") != GRAPH_MODEL:
        raise SchemeError(f"scheme for model {brief(doc.get('model'))}; a scheme for an imported graph has "
                          f"\"model\": \"{GRAPH_MODEL}\" (conv indices in the graph's node order)")
    names = [c.name for c in graph.convs()]
    name = doc.get("name")
    if not isinstance(name, str) or not name.isprintable() or not 0 < len(name) <= MAX_NAME_CHARS:
        raise SchemeError(f"'name' must be printable text of 1 to {MAX_NAME_CHARS} characters, got {brief(name)}")
    bias = _graph_bias(doc.get("bias"), names)
    ratios = _graph_weights(doc.get("weights", []), names)
    missing = sorted(set(ratios) - bias)
    if missing:
        raise SchemeError(f"layer {missing[0]} updates its weight but not its bias; every weight-updated conv "
                          f"must also be bias-updated")
    return _graph_resolved(graph, name, bias, ratios)


def graph_layer(ref, names: list[str], where: str) -> int:
    if isinstance(ref, int) and not isinstance(ref, bool) and 0 <= ref < len(names):
        return ref
    if isinstance(ref, str) and ref in names:
        return names.index(ref)
    raise SchemeError(f"{where}: {brief(ref)} is not a conv of this graph; use an index 0..{len(names) - 1} "
                      f"or a conv name (mcutrain import --json lists them)")


def _graph_bias(bias, names: list[str]) -> set[int]:
    if not isinstance(bias, dict) or len(bias) != 1 or not set(bias) <= {"last", "layers"}:
        raise SchemeError(f"'bias' must be {{\"last\": k}} or {{\"layers\": [...]}}, got {brief(bias)}")
    if "last" in bias:
        k = bias["last"]
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(names):
            raise SchemeError(f"bias.last: must be an integer from 0 to {len(names)} (the graph's convs), "
                              f"got {brief(k)}")
        return set(range(len(names) - k, len(names)))
    layers = bias["layers"]
    if not isinstance(layers, list) or len(layers) > len(names):
        raise SchemeError(f"bias.layers must be a list of at most {len(names)} conv indices or names")
    found = [graph_layer(ref, names, "bias.layers") for ref in layers]
    if len(set(found)) != len(found):
        raise SchemeError("bias.layers: a layer is listed twice")
    return set(found)


def _graph_weights(weights, names: list[str]) -> dict[int, float]:
    if not isinstance(weights, list) or len(weights) > len(names):
        raise SchemeError(f"'weights' must be a list of at most {len(names)} {{\"layer\": ..., \"ratio\": ...}}")
    ratios: dict[int, float] = {}
    for entry in weights:
        if not isinstance(entry, dict) or set(entry) != {"layer", "ratio"}:
            raise SchemeError(f"each weights entry must be {{\"layer\": ..., \"ratio\": ...}}, got {brief(entry)}")
        i = graph_layer(entry["layer"], names, "weights")
        r = entry["ratio"]
        if isinstance(r, bool) or not isinstance(r, (int, float)) or r not in ALLOWED_RATIOS or i in ratios:
            raise SchemeError(f"weights: layer {i} has ratio {brief(r)} or is listed twice; a ratio is one of "
                              f"1/8, 1/4, 1/2, 1 (0.125, 0.25, 0.5, 1.0)")
        ratios[i] = float(r)
    return ratios


def _graph_label(graph) -> str:
    return f"graph:{graph.provenance.get('source', 'imported')}"
