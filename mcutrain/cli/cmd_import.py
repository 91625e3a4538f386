"""`mcutrain import`: a foreign int8 model file -> an mcutrain model file.

Two formats: the paper's tiny-training .pkl (-> an int8 model of the zoo's family) and a full-int8
TFLite flatbuffer (-> an int8 graph file, ``mcutrain.quant.graph_file``), told apart by ``--format``
or, for TFLite, by the ``.tflite`` suffix or the flatbuffer's ``TFL3`` identifier.
"""

from __future__ import annotations

from mcutrain.cli.cmd_import_torch import add_torch_import_arguments, run_torch_import
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit, table
from mcutrain.errors import McutrainError

FORMATS = ("tiny-training", "tflite", "pytorch")
_TFLITE_ID = b"TFL3"  # the flatbuffer file identifier, bytes 4..8 of every .tflite


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import", help=HELP["import"],
        description="Import a foreign int8 model. tiny-training: the paper's mcu_models/*.pkl, read with a "
                    "restricted unpickler (no code in the file ever runs); its architecture is identified from its "
                    "conv shapes, degenerate channels (w_scale < 1e-8) frozen, and an mcutrain int8 model file "
                    "written. tflite: a full-int8 .tflite (what TensorFlow Lite Micro runs), mapped exactly "
                    "(integers, scales, padding, activations) onto an int8 graph file, which `mcutrain export` "
                    "writes back as .tflite; `mcutrain finetune` trains it. With --num-classes or "
                    "--classes the classifier is replaced by a zero-initialised int8 head for the new task, unless "
                    "the class count matches the model's (then its own head is kept; --new-head replaces it anyway). "
                    "pytorch: FILE.py:FUNCTION returns an nn.Module (this RUNS the file's code); it is traced with "
                    "torch.fx into a float graph file, which `mcutrain quantize` makes int8 (docs/tflite.md).")
    p.add_argument("path", metavar="PATH", help="the model file to import, or FILE.py:FUNCTION for PyTorch")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="format of PATH (default: tflite for a .tflite file or a TFL3 flatbuffer; "
                        "otherwise required)")
    head = p.add_mutually_exclusive_group()
    head.add_argument("--num-classes", type=int, metavar="N", help="new head with N classes (named 0..N-1)")
    head.add_argument("--classes", metavar="A,B,C", help="new head with these class names (comma-separated)")
    p.add_argument("--new-head", action="store_true",
                   help="tflite: replace the classifier even when the class count matches the model's")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write")
    add_json_flag(p)
    torch_args = p.add_argument_group("pytorch (PATH is FILE.py:FUNCTION)")
    add_torch_import_arguments(torch_args, shared=False)
    p.set_defaults(func=run, parser=p)


def parse_classes(text: str | None) -> tuple[str, ...] | None:
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


def run(args) -> int:
    fmt = args.format or detect_format(args.path)
    if fmt is None:
        args.parser.error(f"--format is required: {args.path} is neither a .tflite file nor a TFLite flatbuffer "
                          f"(choose from {', '.join(FORMATS)})")
    if fmt == "tflite":
        return _run_tflite(args)
    if fmt == "pytorch":
        return run_torch_import(args)
    if args.new_head:
        raise McutrainError("--new-head applies to --format tflite (a tiny-training head is replaced whenever "
                            "--num-classes or --classes is given)")
    return _run_tiny_training(args)


# ---------------------------------------------------------------------------------------------- tiny-training


def _run_tiny_training(args) -> int:
    from mcutrain.quant.import_tiny_training import import_tiny_training
    from mcutrain.quant.model_file import save_qmodel

    qmodel = import_tiny_training(args.path, num_classes=args.num_classes, classes=parse_classes(args.classes))
    save_qmodel(args.out, qmodel)
    prov = qmodel.provenance
    payload = {
        "out": args.out, "source": prov["source"], "format": prov["format"], "sha256": prov["sha256"],
        "model": qmodel.spec.name, "resolution": qmodel.resolution, "convs": len(qmodel.convs()),
        "degenerate_channels": prov["degenerate_channels_total"],
        "frozen_per_layer": prov["degenerate_channels"],
        "head": "replaced" if prov["head"] == "new" else "kept",
        "num_classes": qmodel.num_classes,
    }
    emit(args, payload, _human)
    return 0


def _human(r: dict) -> str:
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


# ---------------------------------------------------------------------------------------------- tflite


def _run_tflite(args) -> int:
    from mcutrain.cli.cmd_export import check_out_path, os_errors_as_one_line
    from mcutrain.quant.graph_file import save_graph_model
    from mcutrain.quant.import_tflite import import_tflite

    check_out_path(args.out)
    model = import_tflite(args.path, args.num_classes, parse_classes(args.classes), args.new_head)
    with os_errors_as_one_line(args.out):
        save_graph_model(args.out, model)
    emit(args, graph_report(model, args.out), _human_tflite)
    return 0


def graph_report(model, out: str) -> dict:
    """The facts ``import`` prints about a graph model (``--json``: this dict)."""
    from mcutrain.quant.graph import node_cost
    from mcutrain.quant.graph_head import HEAD_LOGIT_SCALE

    g = model.graph
    layers, counts = [], {}
    for i, node in enumerate(g.nodes):
        weights, macs = node_cost(node, g.tensor[node.output].shape)
        kind = "depthwise_conv2d" if node.kind == "conv2d" and node.params.depthwise else node.kind
        counts[kind] = counts.get(kind, 0) + 1
        layers.append({"index": i, "kind": node.kind, "name": node.name,
                       "inputs": [list(g.tensor[n].shape) for n in node.inputs],
                       "output": list(g.tensor[node.output].shape), "weights": weights, "macs": macs})
    from mcutrain.quant.import_tflite import frozen_per_layer

    prov, frozen = model.provenance, frozen_per_layer(g)
    return {"out": str(out), "source": prov.get("source", ""), "format": prov.get("format", "tflite"),
            "sha256": prov.get("sha256", ""), "input": model.preprocessing, "nodes": len(g.nodes),
            "weights": sum(r["weights"] for r in layers), "macs": sum(r["macs"] for r in layers),
            "op_counts": counts, "head": prov.get("head", "kept"), "num_classes": len(model.classes),
            "classes": list(model.classes), "softmax": any(n.kind == "softmax" for n in g.nodes),
            "head_logit_scale": HEAD_LOGIT_SCALE if prov.get("head") == "replaced" else None,
            "degenerate_channels": sum(frozen.values()), "frozen_per_layer": frozen,
            "describe": g.describe().splitlines(), "layers": layers}


def _frozen_by_index(r: dict) -> dict[int, int]:
    """Frozen channel counts keyed by node index (the names of TFLite tensors run to 200 characters)."""
    return {layer["index"]: r["frozen_per_layer"][layer["name"]] for layer in r["layers"]
            if layer["name"] in r["frozen_per_layer"]}


def _human_tflite(r: dict) -> str:
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
