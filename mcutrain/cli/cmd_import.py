"""`mcutrain import`: a foreign int8 model file -> an mcutrain model file (``mcutrain.api.imports``).

Two formats: the paper's tiny-training .pkl (-> an int8 model of the zoo's family) and a full-int8
TFLite flatbuffer (-> an int8 graph file, ``mcutrain.quant.graph_file``), told apart by ``--format``
or, for TFLite, by the ``.tflite`` suffix or the flatbuffer's ``TFL3`` identifier; and PyTorch's
``FILE.py:FUNCTION``. The work and the defaults are ``mcutrain.api.imports.import_model``'s.
"""

from __future__ import annotations

from mcutrain.api.defaults import defaults
from mcutrain.api.imports import FORMATS, detect_format, graph_report, import_model, parse_classes
from mcutrain.cli.cmd_import_torch import add_torch_import_arguments
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit

__all__ = ["FORMATS", "detect_format", "graph_report", "parse_classes", "register", "run"]


def register(subparsers) -> None:
    d = defaults(import_model)
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
    p.add_argument("--format", choices=FORMATS, default=d["format"],
                   help="format of PATH (default: tflite for a .tflite file or a TFL3 flatbuffer; "
                        "otherwise required)")
    head = p.add_mutually_exclusive_group()
    head.add_argument("--num-classes", type=int, metavar="N", default=d["num_classes"],
                      help="new head with N classes (named 0..N-1)")
    head.add_argument("--classes", metavar="A,B,C", default=d["classes"],
                      help="new head with these class names (comma-separated)")
    p.add_argument("--new-head", action="store_true", default=d["new_head"],
                   help="tflite: replace the classifier even when the class count matches the model's")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write")
    add_json_flag(p)
    torch_args = p.add_argument_group("pytorch (PATH is FILE.py:FUNCTION)")
    add_torch_import_arguments(torch_args, shared=False)
    p.set_defaults(func=run, parser=p)


def run(args) -> int:
    fmt = args.format or detect_format(args.path)
    if fmt is None:
        args.parser.error(f"--format is required: {args.path} is neither a .tflite file nor a TFLite flatbuffer "
                          f"(choose from {', '.join(FORMATS)})")
    result = import_model(args.path, args.out, format=fmt, num_classes=args.num_classes, classes=args.classes,
                          new_head=args.new_head, weights=args.weights, input_shape=args.input_shape,
                          mean=args.mean, std=args.std, offset=args.offset, scale=args.scale, data=args.data,
                          calibration_batches=args.calibration_batches, seed=args.seed)
    emit(args, result.to_dict(), lambda _: result.text())
    return 0
