"""`mcutrain export`: an mcutrain model file -> a .tflite flatbuffer that TFLite (Micro) and LiteRT run.

The work is ``mcutrain.api.export`` (what is written and checked: its module docstring); this declares
the flags (defaults from its signature) and prints."""

from __future__ import annotations

from mcutrain.api.defaults import defaults
from mcutrain.api.exporting import FORMATS, export
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit


def register(subparsers) -> None:
    d = defaults(export)
    p = subparsers.add_parser(
        "export", help=HELP["export"],
        description="Write MODEL, an int8 graph file of `mcutrain import MODEL.tflite`, as a full-int8 .tflite "
                    "flatbuffer: the same integers and quantization, NHWC, SAME/VALID padding, fused activations, "
                    "the softmax restored after the logits. LiteRT's reference kernels compute on it what "
                    "mcutrain's int8 forward computes, bit for bit. Not supported yet: exporting the zoo's int8 "
                    "models. With --params saved.bin --program DIR: the parameters a device trained with the program "
                    "compiled into DIR (from MODEL) and saved with mct_save, checked as mct_restore checks them "
                    "(length, magic and version, CRC, model identity) and written into the graph first. --program "
                    "is required with --params: a snapshot holds only a hash of its program, while which "
                    "parameters were trained and their slices come from the compile (DIR/manifest.json).")
    p.add_argument("model", metavar="MODEL", help="int8 graph file (from `mcutrain import MODEL.tflite`)")
    p.add_argument("--format", choices=FORMATS, default=d["format"], help="output format (default: tflite)")
    p.add_argument("--out", required=True, metavar="FILE", help="the .tflite file to write (atomically)")
    p.add_argument("--params", metavar="SAVED", help="a device's mct_save snapshot of the program in --program")
    p.add_argument("--program", metavar="DIR", help="the folder `mcutrain compile MODEL` wrote, which the "
                                                   "device ran (needed with --params: the snapshot's layout)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    result = export(args.model, args.out, format=args.format, params=args.params, program=args.program)
    emit(args, result.to_dict(), lambda _: result.text())
    return 0
