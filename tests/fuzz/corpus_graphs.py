"""Hostile int8 graph files (``mcutrain.quant.graph_file``, what ``mcutrain import MODEL.tflite`` writes).

``int8-graph``: flipped bits (header and data, seeded positions) and truncations of a valid graph
file, through ``export`` and ``finetune`` (which must refuse a graph file in one line anyway), and
fields forged with a valid checksum (``tests.helpers.files.tamper``): wrong types, out-of-range
numbers, broken shape chains, 100k-entry lists, huge declared shapes, extra and missing tensors,
through ``export``. (A damaged .tflite is not a case here: it has no checksum, so a flipped weight
bit gives a valid model that import rightly accepts; the reader's refusals are tested in
tests/models/tflite.)

Every generator is deterministic (fixed seeds, fixed lists), so the number of cases is stable. The
valid inputs these are made from pass their commands (``valid_graph_cases``, run by
``test_fuzz.test_valid_inputs_are_accepted``).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from tests.fuzz.assets import Assets
from tests.fuzz.harness import Case, fresh_dir
from tests.helpers.files import tamper

KIND = "int8-graph"


def graph_assets(root: Path) -> tuple[Path, Path]:
    """(graph file, .tflite) of a small classifier with every kind of layer but add (plain_cnn)."""
    from mcutrain.models.tflite.writer import write_tflite
    from mcutrain.quant.graph_file import GraphModel, save_graph_model
    from tests.quant.graph_models import classes_of, plain_cnn

    root.mkdir(parents=True, exist_ok=True)
    graph, model_file, tfl = plain_cnn(), root / "graph.safetensors", root / "model.tflite"
    if not model_file.exists():
        save_graph_model(model_file, GraphModel(graph, classes_of(graph)))
        write_tflite(graph, tfl)
    return model_file, tfl


def valid_graph_cases(assets: Assets, root: Path) -> list[Case]:
    model_file, tfl = graph_assets(root / "graph-assets")
    out = root / "valid-graph-out"
    return [Case("valid", "export graph", ["export", str(model_file), "--out", str(out / "m.tflite")]),
            Case("valid", "import tflite", ["import", str(tfl), "--num-classes", "3", "--out",
                                             str(out / "m.safetensors")])]


def _argv(command: str, path: Path, assets: Assets, out: Path) -> list[str]:
    if command == "export":
        return ["export", str(path), "--out", str(out / "m.tflite")]
    if command == "finetune":
        return ["finetune", str(path), "--data", f"npz:{assets.npz}", "--scheme", "last-k:2", "--out",
                str(out / "m.safetensors"), "--epochs", "1", "--quiet"]
    raise ValueError(command)


def _damaged(category: str, src: Path, suffix: str, assets: Assets, root: Path, commands: tuple[str, ...],
             seed: int, flips: int, header: int) -> list[Case]:
    """Seeded bit flips (half in the first ``header`` bytes) and truncations of ``src``."""
    blob, cases = src.read_bytes(), []
    rng = np.random.default_rng(seed)
    bits = [int(b) for b in rng.integers(0, header * 8, flips // 2)]
    bits += [int(b) for b in rng.integers(header * 8, len(blob) * 8, flips - flips // 2)]
    variants = []
    for bit in bits:
        flipped = bytearray(blob)
        flipped[bit // 8] ^= 1 << (bit % 8)
        variants.append((f"bit {bit} flipped (byte {bit // 8} of {len(blob)})", bytes(flipped)))
    for cut in sorted({0, 1, 7, 8, 9, header // 2, header - 1, header, header + 1, len(blob) // 2, len(blob) - 1}):
        variants.append((f"truncated to {cut} of {len(blob)} bytes", blob[:cut]))
    for i, (name, data) in enumerate(variants):
        d = fresh_dir(root, f"{category}-damaged")
        path = d / f"model{suffix}"
        path.write_bytes(data)
        out = d / "out"
        out.mkdir()
        command = commands[i % len(commands)]
        cases.append(Case(category, f"{name} [{command}]", _argv(command, path, assets, out), out_dir=out))
    return cases


def _set(*path, value):
    def edit(meta, tensors):
        node = meta
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value() if callable(value) else value
    return edit


def _tensor(name: str, value: Callable[[np.ndarray], np.ndarray]):
    def edit(meta, tensors):
        tensors[name] = value(tensors[name])
    return edit


def _edits() -> list[tuple[str, Callable, tuple[str, ...]]]:
    """plain_cnn: nodes 0 conv, 1 max pool, 2 depthwise conv, 3 mean, 4 fully connected, 5 softmax."""
    edits = []
    for name, v in [("nan", math.nan), ("inf", math.inf), ("0", 0.0), ("-1", -1.0), ("1e30", 1e30), ("'1'", "1"),
                    ("true", True), ("null", None)]:
        edits.append((f"tensors[2].scale {name}", _set("tensors", 2, "scale", value=v), ("scale",)))
        edits.append((f"conv y scale {name}", _set("nodes", 0, "params", "y", "scale", value=v), ("scale",)))
    for name, v in [("128", 128), ("-129", -129), ("1.5", 1.5), ("2^63", 2**63), ("'0'", "0")]:
        edits.append((f"tensors[1].zero {name}", _set("tensors", 1, "zero", value=v), ("zero",)))
        edits.append((f"fc qmin {name}", _set("nodes", 4, "params", "qmin", value=v), ("qmin",)))
    edits += [
        ("100000 nodes", _set("nodes", value=lambda: [{}] * 100_000), ("nodes", "at most")),
        ("100000 tensors", _set("tensors", value=lambda: [{}] * 100_000), ("tensors", "at most")),
        ("100000 classes", _set("classes", value=lambda: [str(i) for i in range(100_000)]), ("classes",)),
        ("a 1 MB tensor name", _set("tensors", 0, "name", value=lambda: "x" * 1_000_000), ("name", "characters")),
        ("input shape 2^40", _set("tensors", 0, "shape", value=[1, 3, 2**40, 2**40]), ("shape",)),
        ("input shape 65536^4", _set("tensors", 0, "shape", value=[65536] * 4), ("shape", "elements")),
        ("input shape [] ", _set("tensors", 0, "shape", value=[]), ("shape", "rank")),
        ("node kind 'exec'", _set("nodes", 0, "kind", value="exec"), ("kind",)),
        ("node kind 0", _set("nodes", 0, "kind", value=0), ("kind",)),
        ("params a list", _set("nodes", 0, "params", value=[1, 2]), ("params",)),
        ("inputs: itself", _set("nodes", 0, "inputs", value=["conv_1"]), ("conv_1", "topological")),
        ("inputs: 50 names", _set("nodes", 0, "inputs", value=["input_0"] * 50), ("inputs",)),
        ("output unknown", _set("output", value="nowhere"), ("output", "nowhere")),
        ("input unknown", _set("input", value="nowhere"), ("input", "nowhere")),
        ("conv stride 0", _set("nodes", 0, "params", "stride", value=0), ("stride",)),
        ("conv stride 1e9", _set("nodes", 0, "params", "stride", value=10**9), ("stride",)),
        ("conv groups 0", _set("nodes", 0, "params", "groups", value=0), ("groups",)),
        ("conv groups 6", _set("nodes", 0, "params", "groups", value=6), ("channels", "depthwise", "grouped")),
        ("conv pad 10^6", _set("nodes", 0, "params", "pad", value=[10**6, 0, 0, 0]), ("pad",)),
        ("pool kernel 10^6", _set("nodes", 1, "params", "kernel", value=[10**6, 1]), ("kernel",)),
        ("pool strides -1", _set("nodes", 1, "params", "strides", value=[-1, 1]), ("strides",)),
        ("mean keep_dims 'no'", _set("nodes", 3, "params", "keep_dims", value="no"), ("keep_dims",)),
        ("softmax beta -1", _set("nodes", 5, "params", "beta", value=-1.0), ("beta",)),
        ("frozen 10^9", _set("nodes", 0, "params", "frozen_channels", value=[10**9]), ("frozen",)),
        ("preprocessing scale 2", _set("preprocessing", "scale", value=2.0), ("preprocessing",)),
        ("provenance sha256 'x'", _set("provenance", "sha256", value="x"), ("sha256",)),
        ("provenance nested", _set("provenance", value={"source": {"a": 1}}), ("source",)),
        ("unknown key", _set("surprise", value=1), ("surprise",)),
        ("weight int64", _tensor("nodes.0.weight", lambda t: t.astype(np.int64)), ("weight",)),
        ("weight rank 2", _tensor("nodes.0.weight", lambda t: t.reshape(t.shape[0], -1)), ("weight",)),
        ("weight 2^20+ terms", _tensor("nodes.0.weight", lambda t: np.zeros((6, 1, 1025, 1025), np.int8)),
         ("terms", "weight")),
        ("w_scale nan", _tensor("nodes.2.w_scale", lambda t: np.full_like(t, np.nan)), ("w_scale",)),
        ("w_scale float16", _tensor("nodes.2.w_scale", lambda t: t.astype(np.float16)), ("w_scale",)),
        ("bias float32", _tensor("nodes.0.bias", lambda t: t.astype(np.float32)), ("bias",)),
        ("fc weight 3 rows", _tensor("nodes.4.weight", lambda t: t[:3]), ("shape", "weights", "w_scale", "bias")),
        ("tensor missing", lambda m, t: t.pop("nodes.4.bias"), ("nodes.4.bias", "missing")),
        ("extra tensor", lambda m, t: t.__setitem__("evil", np.zeros(4, np.int8)), ("evil", "unexpected")),
    ]
    return edits


def graph_cases(assets: Assets, root: Path) -> list[Case]:
    model_file, _ = graph_assets(root / "assets")
    header = 8 + int.from_bytes(model_file.read_bytes()[:8], "little")
    cases = _damaged("int8-graph", model_file, ".safetensors", assets, root, ("export", "finetune"), seed=13,
                     flips=40, header=header)
    for name, edit, names in _edits():
        d = fresh_dir(root, "int8-graph-forged")
        path = d / "model.safetensors"
        shutil.copy(model_file, path)
        tamper(path, KIND, edit)
        out = d / "out"
        out.mkdir()
        cases.append(Case("int8-graph", f"forged {name} [export]", _argv("export", path, assets, out),
                          out_dir=out, names=names))
    return cases

