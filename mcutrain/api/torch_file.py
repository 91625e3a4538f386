"""The PyTorch import (``mcutrain import my_model.py:build --weights state.pt ...``): a user's own
torch.fx-traceable module -> a float graph checkpoint that ``quantize``/``finetune``/``compile`` take.

Why: a user's own PyTorch model (any network of the layers ``models.torch_import`` lists) must become
something the pipeline takes, without hand-written JSON architectures or renamed tensors.

Decision: the import writes the FLOAT graph checkpoint (``models.float_graph``, kind
``mcutrain-float-graph``): the lossless result of the import, independent of any data. The int8
QGraph is made by ``quantize`` from that file and a dataset (``quant.quantize_graph.quantize_float_graph``,
which ``quantize_and_evaluate`` below wraps for it), as for the zoo's float checkpoints. With ``data``,
the import also runs that quantization once and reports float and int8 test accuracy and their argmax
agreement, so a user learns at import time whether the model survives int8; that QGraph is returned
by `import_torch` (for a caller that stores int8 graphs) but not written.

The builder runs the user's own Python code (``FILE.py`` is imported as ``python FILE.py`` would run
it); the weights file is read with ``torch.load(weights_only=True)``, which runs nothing. torch loads
when a function here runs, not on import (``import mcutrain`` stays cheap).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Any

from mcutrain.errors import McutrainError

__all__ = ["TorchImport", "check_shape", "import_torch", "preprocessing_of", "quantize_and_evaluate",
           "torch_import_text"]

MAX_EVAL_IMAGES = 2000  # test images evaluated at import (the NumPy int8 forward is slow on big inputs)
HEAD_SEED = 0


@dataclass(frozen=True)
class TorchImport:
    """The float graph written, its int8 graph when ``data`` was given, and the command's JSON."""

    graph: Any
    qgraph: Any
    payload: dict[str, Any]


def import_torch(path: str, out: str, *, num_classes: int | None = None, classes: str | None = None,
                 weights: str | None = None, input_shape: tuple[int, int, int] | None = None,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 offset: float | None = None, scale: float | None = None, data: str | None = None,
                 calibration_batches: int = 16, seed: int = 0) -> TorchImport:
    """Build, load, trace, write the float graph ``out``; with ``data`` also quantize and evaluate."""
    import torch

    from mcutrain.data import load_dataset
    from mcutrain.models.float_graph import save_float_graph
    from mcutrain.models.torch_import import import_module, load_user_module, load_weights

    if input_shape is None:
        raise McutrainError("--input-shape C,H,W is required for a PyTorch model (e.g. 3,224,224)")
    c, h, w = input_shape
    prep = preprocessing_of(c, mean, std, offset, scale)
    names = _class_names(classes)
    module = load_user_module(path)
    if weights:
        load_weights(module, weights)
    graph = import_module(module, torch.zeros(1, c, h, w), preprocessing=prep, source=path)
    dataset = load_dataset(data, seed=seed) if data else None
    if names is not None and dataset is not None:
        raise McutrainError("--classes names the classes of a new head; with --data they are the data's")
    graph, head = _fit_head(graph, len(names) if names is not None else num_classes,
                            tuple(dataset.classes) if dataset else names)
    save_float_graph(out, graph)
    payload = {"out": out, "source": path, "weights": weights or "", "nodes": len(graph.nodes),
               "kinds": _kind_counts(graph), "input_shape": [c, h, w], "preprocessing": prep.to_dict(),
               "num_classes": graph.num_outputs, "head": head}
    qgraph = None
    if dataset is not None and data is not None:
        print(f"calibrating on {calibration_batches} batches of {data} ...", file=sys.stderr)
        qgraph, metrics = quantize_and_evaluate(graph, dataset.train, dataset.test, calibration_batches, seed, data)
        payload.update(metrics)
    return TorchImport(graph, qgraph, payload)


def check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) as ``--input-shape`` takes it: channels 1 or 3, height and width 1..1024."""
    if len(shape) != 3:
        raise McutrainError(f"input shape {shape!r} is not C,H,W (three integers)")
    c, h, w = (int(v) for v in shape)
    if c not in (1, 3) or not (1 <= h <= 1024 and 1 <= w <= 1024):
        raise McutrainError(f"input shape {c},{h},{w}: channels must be 1 or 3, height and width 1..1024")
    return c, h, w


def preprocessing_of(channels: int, mean: tuple[float, ...] | None, std: tuple[float, ...] | None,
                     offset: float | None, scale: float | None) -> Any:
    """The input preprocessing the arguments give (``McutrainError`` naming a bad combination or value)."""
    from mcutrain.models.float_graph import InputPreprocessing

    if (mean is None) != (std is None):
        raise McutrainError("--mean and --std go together")
    if mean is not None and std is not None:
        if offset is not None or scale is not None:
            raise McutrainError("give either --mean/--std or --offset/--scale, not both")
        if len(mean) != channels or len(std) != channels:
            raise McutrainError(f"--mean and --std need {channels} values (one per input channel)")
        if not all(0.0 <= m <= 1.0 for m in mean) or not all(1 / 255 <= s <= 1e6 for s in std):
            raise McutrainError("--mean values must be in [0, 1] and --std values in [1/255, 1e6] (pixel/255 units)")
        return InputPreprocessing(mean=tuple(mean), std=tuple(std))
    offset = 128.0 if offset is None else offset
    scale = 1.0 / 128.0 if scale is None else scale
    if not (0.0 <= offset <= 255.0 and 1e-6 <= scale <= 1.0):
        raise McutrainError(f"--offset must be in [0, 255] and --scale in [1e-6, 1], got {offset:g} and {scale:g}")
    return InputPreprocessing(offset=offset, scale=scale)


def _class_names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(","))
    if any(not n for n in names) or len(set(names)) != len(names):
        raise McutrainError(f"--classes {text!r}: class names must be distinct and non-empty, separated by commas")
    return names


def _fit_head(graph: Any, num_classes: int | None, classes: tuple[str, ...] | None) -> tuple[Any, str]:
    """The graph with classes named and, when the task has another class count, a new final Linear
    (uniform in +-1/sqrt(C), PyTorch's default bound, from a fixed seed; bias 0)."""
    import numpy as np

    from mcutrain.errors import DataError
    from mcutrain.models.float_graph import Linear

    k = graph.num_outputs
    want = num_classes if num_classes is not None else (len(classes) if classes else k)
    if classes is not None and want != len(classes):
        raise DataError(f"--num-classes {want}, but the data has {len(classes)} classes")
    if not 2 <= want <= 10000:
        raise McutrainError(f"--num-classes {want}: expected 2 to 10000")
    names = tuple(classes) if classes else tuple(str(i) for i in range(want))
    if want == k:
        return replace(graph, classes=names), "kept"
    last = graph.nodes[-1] if graph.nodes else None
    if last is None or last.kind != "linear" or last.output != graph.output:
        raise McutrainError(f"the model has {k} outputs, the task {want} classes, and its output is not made by "
                            f"a final Linear layer that could be replaced")
    c = last.params.weight.shape[1]
    bound = 1.0 / np.sqrt(c)
    weight = np.random.default_rng(HEAD_SEED).uniform(-bound, bound, (want, c)).astype(np.float32)
    head = replace(last, params=Linear(weight, np.zeros(want, np.float32)))
    return replace(graph, nodes=graph.nodes[:-1] + (head,), classes=names), "replaced"


def quantize_and_evaluate(graph: Any, calib: Any, test: Any, batches: int, seed: int,
                          data_name: str) -> tuple[Any, dict[str, Any]]:
    """(the QGraph, float and int8 accuracy on up to MAX_EVAL_IMAGES test images, argmax agreement)."""
    import numpy as np
    import torch

    from mcutrain.models.float_graph import run_float
    from mcutrain.quant.graph_forward import graph_forward
    from mcutrain.quant.quantize_graph import image_pixels, quantize_float_graph

    qgraph = quantize_float_graph(graph, calib, batches=batches, batch_size=64, seed=seed,
                                  calibration_data=data_name)
    test = test.subset(MAX_EVAL_IMAGES, seed)
    c, h, w = graph.input_shape
    float_pred, int8_pred = [], []
    for start in range(0, len(test), 256):
        pixels = image_pixels(test.images[start:start + 256], c, h, w)
        with torch.no_grad():
            float_pred.append(run_float(graph, graph.preprocessing.normalize(pixels.float())).argmax(1).numpy())
        q = (pixels.numpy() - 128.0).astype(np.int8)
        int8_pred.append(graph_forward(qgraph, q)[qgraph.output].argmax(1))
    fp, qp = np.concatenate(float_pred), np.concatenate(int8_pred)
    return qgraph, {"float_accuracy": float((fp == test.labels).mean()),
                    "int8_accuracy": float((qp == test.labels).mean()),
                    "agreement": float((fp == qp).mean()), "n": int(len(test))}


def _kind_counts(graph: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in graph.nodes:
        counts[n.kind] = counts.get(n.kind, 0) + 1
    return counts


def torch_import_text(r: dict[str, Any]) -> str:
    """What ``mcutrain import FILE.py:FUNCTION`` prints."""
    kinds = ", ".join(f"{n} {k}" for k, n in r["kinds"].items())
    lines = [f"{r['source']}: {r['nodes']} nodes ({kinds}), input {'x'.join(map(str, r['input_shape']))}, "
             f"{r['num_classes']} classes (head {r['head']})"]
    if "int8_accuracy" in r:
        lines.append(f"float {r['float_accuracy'] * 100:.2f}% -> int8 {r['int8_accuracy'] * 100:.2f}% on {r['n']:,} "
                     f"test images; argmax agreement {r['agreement'] * 100:.2f}%")
    lines.append(f"wrote {r['out']} (float graph; `mcutrain quantize` makes the int8 model)")
    return "\n".join(lines)
