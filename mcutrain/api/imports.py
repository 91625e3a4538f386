"""``import_model``: a foreign model file -> an mcutrain model file (``mcutrain import``).

Three ways in: the paper's tiny-training ``.pkl`` (-> an int8 model of the zoo's family), a full-int8
``.tflite`` (-> an int8 graph file), and a PyTorch ``FILE.py:FUNCTION`` (-> a float graph file, which
`mcutrain.quantize` makes int8). `mcutrain.load_model` reads the same files into memory instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mcutrain.api.arguments import PathLike, comma_text, path_of
from mcutrain.api.results import Result
from mcutrain.errors import McutrainError

__all__ = ["FORMATS", "ImportResult", "detect_format", "import_model", "parse_classes"]

FORMATS = ("tiny-training", "tflite", "pytorch")
"""The formats `import_model` reads."""
_TFLITE_ID = b"TFL3"  # the flatbuffer file identifier, bytes 4..8 of every .tflite


@dataclass(frozen=True, eq=False)
class ImportResult(Result):
    """What an import found (format, layers, degenerate channels, head) and the file it wrote."""

    def text(self) -> str:
        r = dict(self.payload)
        if "kinds" in r:
            from mcutrain.api.torch_file import torch_import_text as torch_text

            return str(torch_text(r))
        return tflite_text(r) if "layers" in r else tiny_training_text(r)

    @property
    def out(self) -> str:
        """The model file written."""
        return str(self.payload["out"])


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """Class names from ``"A,B,C"`` (None stays None); an empty name is refused."""
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(","))
    if any(not n for n in names):
        raise McutrainError(f"--classes {text!r}: class names must be non-empty, separated by commas")
    return names


def detect_format(path: str) -> str | None:
    """``pytorch`` for FILE.py:FUNCTION, ``tflite`` for a .tflite name or a TFL3 flatbuffer; None when
    the file does not say."""
    if ".py:" in str(path):
        return "pytorch"
    if str(path).lower().endswith(".tflite"):
        return "tflite"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return "tflite" if head[4:8] == _TFLITE_ID else None


def import_model(path: PathLike, out: PathLike, *, format: str | None = None, num_classes: int | None = None,
                 classes: str | Sequence[str] | None = None, new_head: bool = False, weights: PathLike | None = None,
                 input_shape: Sequence[int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, offset: float | None = None, scale: float | None = None,
                 data: str | None = None, calibration_batches: int = 16, seed: int = 0) -> ImportResult:
    """Import the foreign model ``path`` and write ``out`` (``mcutrain import``; docs/own-model.md).

    ``format``: one of `FORMATS` (None: told from the file). ``num_classes`` or ``classes`` (a list,
    or ``"A,B,C"``) give the classifier a new zero-initialised head for that task. PyTorch only
    (``path`` is ``FILE.py:FUNCTION``; this runs the file's code): ``weights``, ``input_shape``
    (C, H, W), ``mean``/``std`` or ``offset``/``scale``, and ``data`` to also quantize and report
    float and int8 accuracy."""
    source, target = path_of(path), path_of(out)
    fmt = format or detect_format(source)
    if fmt not in FORMATS:
        raise McutrainError(f"--format is required: {source} is neither a .tflite file nor a TFLite flatbuffer "
                            f"(choose from {', '.join(FORMATS)})" if fmt is None else
                            f"format {fmt!r}: choose from {', '.join(FORMATS)}")
    names = comma_text(classes)
    if fmt == "tflite":
        return _tflite(source, target, num_classes, parse_classes(names), new_head)
    if fmt == "pytorch":
        from mcutrain.api.torch_file import check_shape, import_torch

        torch_import = import_torch(source, target, num_classes=num_classes, classes=names,
                                    weights=None if weights is None else path_of(weights),
                                    input_shape=None if input_shape is None else check_shape(tuple(input_shape)),
                                    mean=None if mean is None else tuple(mean), std=None if std is None else tuple(std),
                                    offset=offset, scale=scale, data=data, calibration_batches=calibration_batches,
                                    seed=seed)
        return ImportResult(torch_import.payload)
    if new_head:
        raise McutrainError("--new-head applies to --format tflite (a tiny-training head is replaced whenever "
                            "--num-classes or --classes is given)")
    return _tiny_training(source, target, num_classes, parse_classes(names))


def _tiny_training(path: str, out: str, num_classes: int | None, classes: tuple[str, ...] | None) -> ImportResult:
    from mcutrain.quant.import_tiny_training import import_tiny_training
    from mcutrain.quant.model_file import save_qmodel

    qmodel = import_tiny_training(path, num_classes=num_classes, classes=classes)
    save_qmodel(out, qmodel)
    prov = qmodel.provenance
    return ImportResult({
        "out": out, "source": prov["source"], "format": prov["format"], "sha256": prov["sha256"],
        "model": qmodel.spec.name, "resolution": qmodel.resolution, "convs": len(qmodel.convs()),
        "degenerate_channels": prov["degenerate_channels_total"],
        "frozen_per_layer": prov["degenerate_channels"],
        "head": "replaced" if prov["head"] == "new" else "kept",
        "num_classes": qmodel.num_classes,
    })


def _tflite(path: str, out: str, num_classes: int | None, classes: tuple[str, ...] | None,
            new_head: bool) -> ImportResult:
    from mcutrain.io.atomic import check_out_path, os_errors_as_one_line
    from mcutrain.quant.graph_file import save_graph_model
    from mcutrain.quant.import_tflite import import_tflite

    check_out_path(out)
    model = import_tflite(path, num_classes, classes, new_head)
    with os_errors_as_one_line(out):
        save_graph_model(out, model)
    return ImportResult(graph_report(model, out))


def graph_report(model: Any, out: str) -> dict[str, Any]:
    """The facts ``import`` prints about a graph model (``--json``: this dict)."""
    from mcutrain.quant.graph import node_cost
    from mcutrain.quant.graph_head import HEAD_LOGIT_SCALE
    from mcutrain.quant.import_tflite import frozen_per_layer

    g = model.graph
    layers: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for i, node in enumerate(g.nodes):
        weights, macs = node_cost(node, g.tensor[node.output].shape)
        kind = "depthwise_conv2d" if node.kind == "conv2d" and node.params.depthwise else node.kind
        counts[kind] = counts.get(kind, 0) + 1
        layers.append({"index": i, "kind": node.kind, "name": node.name,
                       "inputs": [list(g.tensor[n].shape) for n in node.inputs],
                       "output": list(g.tensor[node.output].shape), "weights": weights, "macs": macs})
    prov, frozen = model.provenance, frozen_per_layer(g)
    return {"out": str(out), "source": prov.get("source", ""), "format": prov.get("format", "tflite"),
            "sha256": prov.get("sha256", ""), "input": model.preprocessing, "nodes": len(g.nodes),
            "weights": sum(r["weights"] for r in layers), "macs": sum(r["macs"] for r in layers),
            "op_counts": counts, "head": prov.get("head", "kept"), "num_classes": len(model.classes),
            "classes": list(model.classes), "softmax": any(n.kind == "softmax" for n in g.nodes),
            "head_logit_scale": HEAD_LOGIT_SCALE if prov.get("head") == "replaced" else None,
            "degenerate_channels": sum(frozen.values()), "frozen_per_layer": frozen,
            "describe": g.describe().splitlines(), "layers": layers}


def tiny_training_text(r: dict[str, Any]) -> str:
    """The text ``mcutrain import`` prints for a tiny-training import."""
    from mcutrain.cli.output import table

    lines = [f"{r['source']} ({r['format']}): {r['model']} at {r['resolution']}x{r['resolution']}, "
             f"{r['convs']} convs"]
    if r["frozen_per_layer"]:
        lines.append(f"{r['degenerate_channels']} degenerate channels (w_scale < 1e-8) frozen:")
        lines.append(table([[name, n] for name, n in r["frozen_per_layer"].items()], ["layer", "frozen"]))
    else:
        lines.append("no degenerate channels")
    if r["head"] == "replaced":
        lines.append(f"head replaced: new zero-initialised int8 head, {r['num_classes']} classes")
    else:
        lines.append(f"head kept: the file's {r['num_classes']}-class classifier")
    lines.append(f"wrote {r['out']}")
    return "\n".join(lines)


def _frozen_by_index(r: dict[str, Any]) -> dict[int, int]:
    """Frozen channel counts keyed by node index (the names of TFLite tensors run to 200 characters)."""
    return {layer["index"]: r["frozen_per_layer"][layer["name"]] for layer in r["layers"]
            if layer["name"] in r["frozen_per_layer"]}


def tflite_text(r: dict[str, Any]) -> str:
    """The text ``mcutrain import`` prints for a TFLite import."""
    pre = r["input"]
    lines = [f"{r['source']} ({r['format']}, sha256 {r['sha256'][:16]}...): {r['nodes']} nodes, "
             f"{r['weights']:,} weights, {r['macs']:,} MACs",
             f"input: {pre['height']}x{pre['width']}x{pre['channels']} int8 = round(x / {pre['scale']:.6g}) "
             f"{'+' if pre['zero'] >= 0 else '-'} {abs(pre['zero'])}",
             *r["describe"],
             "ops: " + ", ".join(f"{kind} {n}" for kind, n in r["op_counts"].items())]
    if r["frozen_per_layer"]:
        layers = ", ".join(f"%{i} {n}" for i, n in _frozen_by_index(r).items())
        lines.append(f"{r['degenerate_channels']} degenerate channels (w_scale < 1e-8) frozen: {layers}")
    else:
        lines.append("no degenerate channels")
    shown = ", ".join(r["classes"][:10]) + (", ..." if r["num_classes"] > 10 else "")
    if r["head"] == "replaced":
        lines.append(f"head replaced: new zero-initialised int8 classifier, {r['num_classes']} classes ({shown}); "
                     f"logits int8 at scale {r['head_logit_scale']:g}, zero point 0")
    else:
        lines.append(f"head kept: the model's {r['num_classes']}-class classifier ({shown})")
    if r["softmax"]:
        lines.append("softmax kept as a marker: training uses the logits, export writes it back")
    lines.append(f"wrote {r['out']}")
    return "\n".join(lines)
