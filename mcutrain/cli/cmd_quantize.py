"""`mcutrain quantize`: float checkpoint -> int8 model file, with float and int8 accuracy.

A zoo float checkpoint becomes an int8 model (``quant.quantize``); an imported PyTorch float graph
(``mcutrain import FILE.py:FUNCTION``) becomes an int8 graph file (``quant.quantize_graph``)."""

from __future__ import annotations

import sys

from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.data import Preprocessing, load_dataset
from mcutrain.errors import DataError
from mcutrain.io.container import peek_container
from mcutrain.models.float_graph import KIND as FLOAT_GRAPH_KIND
from mcutrain.quant.model_file import save_qmodel
from mcutrain.quant.quantize import quantize_model
from mcutrain.quant.sim_model import Int8Net
from mcutrain.train.checkpoint import load_checkpoint
from mcutrain.train.evaluate import evaluate


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quantize", help=HELP["quantize"],
        description="Fold BatchNorm, calibrate activation ranges on training batches of --data, quantize "
                    "weights per channel and biases to int32 (DESIGN.md section 3); report float and int8 "
                    "test accuracy.")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--data", required=True, help="calibration and test data (the checkpoint's task)")
    p.add_argument("--out", required=True, metavar="MODEL", help="int8 model file to write")
    p.add_argument("--calibration-batches", type=int, default=16,
                   help="training batches of 64 images whose activation ranges set the scales (default 16)")
    p.add_argument("--seed", type=int, default=None, help="split seed (default: the checkpoint's)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if peek_container(args.checkpoint)[0] == FLOAT_GRAPH_KIND:
        return _run_float_graph(args)
    model, info = load_checkpoint(args.checkpoint)
    seed = args.seed if args.seed is not None else info.training.get("config", {}).get("seed", 0)
    dataset = load_dataset(args.data, seed=seed)
    if dataset.num_classes != info.num_classes:
        raise DataError(f"{args.data} has {dataset.num_classes} classes, {args.checkpoint} has {info.num_classes}")
    print(f"calibrating on {args.calibration_batches} batches of {args.data} ...", file=sys.stderr)
    qmodel = quantize_model(model, info, dataset.train, batches=args.calibration_batches, seed=seed,
                            calibration_data=args.data)
    save_qmodel(args.out, qmodel)
    prep = Preprocessing.from_dict(info.preprocessing)
    print(f"evaluating float and int8 on {len(dataset.test):,} test images ...", file=sys.stderr)
    fl = evaluate(model, dataset.test, info.resolution, prep)
    q8 = evaluate(Int8Net(qmodel), dataset.test, info.resolution, prep)
    frozen = sum(len(c.frozen_channels) for c in qmodel.convs())
    payload = {"out": args.out, "model": info.model, "resolution": info.resolution,
               "float_accuracy": fl["accuracy"], "int8_accuracy": q8["accuracy"], "n": q8["n"],
               "accuracy_drop": fl["accuracy"] - q8["accuracy"], "degenerate_channels": frozen}
    emit(args, payload, lambda r: f"{r['model']}: float {r['float_accuracy'] * 100:.2f}% -> int8 "
                                  f"{r['int8_accuracy'] * 100:.2f}% on {r['n']:,} test images; wrote {r['out']}")
    return 0


def _run_float_graph(args) -> int:
    """An imported PyTorch float graph -> an int8 graph file, with float and int8 test accuracy."""
    from mcutrain.cli.cmd_import_torch import quantize_and_evaluate
    from mcutrain.models.float_graph import load_float_graph
    from mcutrain.quant.graph_file import GraphModel, save_graph_model

    graph = load_float_graph(args.checkpoint)
    seed = args.seed if args.seed is not None else 0
    dataset = load_dataset(args.data, seed=seed)
    if dataset.num_classes != graph.num_outputs:
        raise DataError(f"{args.data} has {dataset.num_classes} classes, {args.checkpoint} has {graph.num_outputs}")
    print(f"calibrating on {args.calibration_batches} batches of {args.data} ...", file=sys.stderr)
    qgraph, metrics = quantize_and_evaluate(graph, dataset.train, dataset.test, args.calibration_batches, seed,
                                            args.data)
    classes = tuple(graph.classes) or tuple(str(i) for i in range(graph.num_outputs))
    save_graph_model(args.out, GraphModel(qgraph, classes))
    payload = {"out": args.out, "model": args.checkpoint, "nodes": len(qgraph.nodes), **metrics}
    emit(args, payload, lambda r: f"{r['model']}: float {r['float_accuracy'] * 100:.2f}% -> int8 "
                                  f"{r['int8_accuracy'] * 100:.2f}% on {r['n']:,} test images (same class: "
                                  f"{r['agreement'] * 100:.1f}%); int8 graph of {r['nodes']} nodes; wrote {r['out']}")
    return 0
