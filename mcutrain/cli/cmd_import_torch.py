"""`mcutrain import my_model.py:build --weights state.pt --input-shape 3,224,224 ... --out M`: PyTorch in.

Why: a user's own PyTorch model (any torch.fx-traceable network of the layers ``models.torch_import``
lists) must become something ``quantize``/``finetune``/``compile`` take, without hand-written JSON
architectures or renamed tensors. ``run_torch_import(args)`` is the command; ``add_torch_import_arguments``
declares its arguments on a parser (the ``import`` command wires both in).

Decision: ``import`` writes the FLOAT graph checkpoint (``models.float_graph``, kind
``mcutrain-float-graph``): the lossless result of the import, independent of any data. The int8
QGraph is made by ``quantize`` from that file and a dataset (``quant.quantize_graph.quantize_float_graph``,
which ``quantize_and_evaluate`` below wraps for it), as for the zoo's float checkpoints. With ``--data``,
import also runs that quantization once and reports float and int8 test accuracy and their argmax
agreement, so a user learns at import time whether the model survives int8; that QGraph is returned
by ``import_torch`` (for a caller that stores int8 graphs) but not written by this command.

The builder runs the user's own Python code (``FILE.py`` is imported as ``python FILE.py`` would run
it); the weights file is read with ``torch.load(weights_only=True)``, which runs nothing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace

import numpy as np
import torch

from mcutrain.api.defaults import defaults
from mcutrain.api.imports import import_model
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.data import ImageSet, load_dataset
from mcutrain.errors import DataError, McutrainError
from mcutrain.models.float_graph import FloatGraph, InputPreprocessing, Linear, run_float, save_float_graph
from mcutrain.models.torch_import import import_module, load_user_module, load_weights
from mcutrain.quant.graph import QGraph
from mcutrain.quant.graph_forward import graph_forward
from mcutrain.quant.quantize_graph import image_pixels, quantize_float_graph

MAX_EVAL_IMAGES = 2000  # test images evaluated at import (the NumPy int8 forward is slow on big inputs)
HEAD_SEED = 0


def add_torch_import_arguments(parser: argparse.ArgumentParser, *, shared: bool = True) -> None:
    """The PyTorch import's arguments. ``shared=False`` leaves out those the ``import`` command already
    declares for its other formats (the positional PATH, ``--num-classes``/``--classes``, ``--out``,
    ``--json``) and leaves ``--input-shape`` optional for the parser (``import_torch`` then requires it).
    Defaults: ``mcutrain.api.import_model``'s."""
    d = defaults(import_model)
    if shared:
        parser.add_argument("path", metavar="FILE.py:FUNCTION",
                            help="a Python file and the function in it that returns the nn.Module; the file is "
                                 "imported and the function called: this RUNS THE FILE'S CODE")
        parser.add_argument("--num-classes", type=int, metavar="N", default=d["num_classes"],
                            help="classes of the task; a final Linear with another count is replaced by a new one")
        parser.add_argument("--out", required=True, metavar="M", help="float graph checkpoint to write")
        add_json_flag(parser)
    parser.add_argument("--weights", metavar="STATE.pt", default=d["weights"],
                        help="state dict saved with torch.save(model.state_dict()), read with "
                             "torch.load(weights_only=True), mapped by module path (default: the builder's weights)")
    parser.add_argument("--input-shape", required=shared, metavar="C,H,W", type=_shape, default=d["input_shape"],
                        help="the model's input: channels (1 or 3), height, width, e.g. 3,224,224")
    parser.add_argument("--mean", metavar="M1,M2,M3", type=_floats, default=d["mean"],
                        help="per-channel mean of pixel/255 (ImageNet: 0.485,0.456,0.406); needs --std")
    parser.add_argument("--std", metavar="S1,S2,S3", type=_floats, default=d["std"],
                        help="per-channel std of pixel/255 (ImageNet: 0.229,0.224,0.225); needs --mean")
    parser.add_argument("--offset", type=float, default=d["offset"],
                        help="input = (pixel - OFFSET) * SCALE for every channel (default 128)")
    parser.add_argument("--scale", type=float, default=d["scale"], help="see --offset (default 1/128)")
    parser.add_argument("--data", default=d["data"],
                        help="also quantize with this data (calibration on its training split) and "
                             "report float and int8 test accuracy")
    parser.add_argument("--calibration-batches", type=int, default=d["calibration_batches"],
                        help="training batches of 64 images that set the activation ranges (default 16)")
    parser.add_argument("--seed", type=int, default=d["seed"], help="split and calibration seed (default 0)")


def _shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not C,H,W (three integers)") from None
    if c not in (1, 3) or not (1 <= h <= 1024 and 1 <= w <= 1024):
        raise argparse.ArgumentTypeError(f"{text!r}: channels must be 1 or 3, height and width 1..1024")
    return c, h, w


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def preprocessing_of(args, channels: int) -> InputPreprocessing:
    """The input preprocessing the arguments give (``McutrainError`` naming a bad combination or value)."""
    if (args.mean is None) != (args.std is None):
        raise McutrainError("--mean and --std go together")
    if args.mean is not None:
        if args.offset is not None or args.scale is not None:
            raise McutrainError("give either --mean/--std or --offset/--scale, not both")
        if len(args.mean) != channels or len(args.std) != channels:
            raise McutrainError(f"--mean and --std need {channels} values (one per input channel)")
        if not all(0.0 <= m <= 1.0 for m in args.mean) or not all(1 / 255 <= s <= 1e6 for s in args.std):
            raise McutrainError("--mean values must be in [0, 1] and --std values in [1/255, 1e6] (pixel/255 units)")
        return InputPreprocessing(mean=tuple(args.mean), std=tuple(args.std))
    offset = 128.0 if args.offset is None else args.offset
    scale = 1.0 / 128.0 if args.scale is None else args.scale
    if not (0.0 <= offset <= 255.0 and 1e-6 <= scale <= 1.0):
        raise McutrainError(f"--offset must be in [0, 255] and --scale in [1e-6, 1], got {offset:g} and {scale:g}")
    return InputPreprocessing(offset=offset, scale=scale)


@dataclass(frozen=True)
class TorchImport:
    graph: FloatGraph
    qgraph: QGraph | None
    payload: dict


def run_torch_import(args) -> int:
    result = import_torch(args)
    emit(args, result.payload, _human)
    return 0


def import_torch(args) -> TorchImport:
    """Build, load, trace, write the float graph; with ``--data`` also quantize and evaluate."""
    if args.input_shape is None:
        raise McutrainError("--input-shape C,H,W is required for a PyTorch model (e.g. 3,224,224)")
    c, h, w = args.input_shape
    prep = preprocessing_of(args, c)
    classes = _class_names(getattr(args, "classes", None))
    module = load_user_module(args.path)
    if args.weights:
        load_weights(module, args.weights)
    graph = import_module(module, torch.zeros(1, c, h, w), preprocessing=prep, source=args.path)
    dataset = load_dataset(args.data, seed=args.seed) if args.data else None
    if classes is not None and dataset is not None:
        raise McutrainError("--classes names the classes of a new head; with --data they are the data's")
    num_classes = len(classes) if classes is not None else args.num_classes
    graph, head = _fit_head(graph, num_classes, dataset.classes if dataset else classes)
    save_float_graph(args.out, graph)
    payload = {"out": args.out, "source": args.path, "weights": args.weights or "", "nodes": len(graph.nodes),
               "kinds": _kind_counts(graph), "input_shape": [c, h, w], "preprocessing": prep.to_dict(),
               "num_classes": graph.num_outputs, "head": head}
    qgraph = None
    if dataset is not None:
        print(f"calibrating on {args.calibration_batches} batches of {args.data} ...", file=sys.stderr)
        qgraph, metrics = quantize_and_evaluate(graph, dataset.train, dataset.test, args.calibration_batches,
                                                args.seed, args.data)
        payload.update(metrics)
    return TorchImport(graph, qgraph, payload)


def _class_names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(","))
    if any(not n for n in names) or len(set(names)) != len(names):
        raise McutrainError(f"--classes {text!r}: class names must be distinct and non-empty, separated by commas")
    return names


def _fit_head(graph: FloatGraph, num_classes: int | None, classes) -> tuple[FloatGraph, str]:
    """The graph with classes named and, when the task has another class count, a new final Linear
    (uniform in +-1/sqrt(C), PyTorch's default bound, from a fixed seed; bias 0)."""
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


def quantize_and_evaluate(graph: FloatGraph, calib: ImageSet, test: ImageSet, batches: int, seed: int,
                          data_name: str) -> tuple[QGraph, dict]:
    """(the QGraph, float and int8 accuracy on up to MAX_EVAL_IMAGES test images, argmax agreement)."""
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


def _kind_counts(graph: FloatGraph) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in graph.nodes:
        counts[n.kind] = counts.get(n.kind, 0) + 1
    return counts


def _human(r: dict) -> str:
    kinds = ", ".join(f"{n} {k}" for k, n in r["kinds"].items())
    lines = [f"{r['source']}: {r['nodes']} nodes ({kinds}), input {'x'.join(map(str, r['input_shape']))}, "
             f"{r['num_classes']} classes (head {r['head']})"]
    if "int8_accuracy" in r:
        lines.append(f"float {r['float_accuracy'] * 100:.2f}% -> int8 {r['int8_accuracy'] * 100:.2f}% on {r['n']:,} "
                     f"test images; argmax agreement {r['agreement'] * 100:.2f}%")
    lines.append(f"wrote {r['out']} (float graph; `mcutrain quantize` makes the int8 model)")
    return "\n".join(lines)
