"""`mcutrain export`: an mcutrain model file -> a .tflite flatbuffer that TFLite (Micro) and LiteRT run.

Today: imported graphs (``mcutrain import MODEL.tflite``, ``mcutrain.quant.graph_file``), written by
``mcutrain.models.tflite.writer`` with their softmax marker as TFLite's SOFTMAX, atomically. The
writer is the inverse of the importer, so import -> export -> import gives the same integers and
quantization. Not yet: the zoo's int8 models, and a device's trained parameters (``--params``).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.errors import CheckpointError, McutrainError, one_line

FORMATS = ("tflite",)
_NOT_YET = {
    "int8-model": "export of mcutrain zoo models is not supported yet; imported TFLite graphs "
                  "(mcutrain import MODEL.tflite --out M) can be exported",
    "float-checkpoint": "a float checkpoint cannot be exported; export takes an imported TFLite graph "
                        "(mcutrain import MODEL.tflite --out M)",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help=HELP["export"],
        description="Write MODEL, an int8 graph file of `mcutrain import MODEL.tflite`, as a full-int8 .tflite "
                    "flatbuffer: the same integers and quantization, NHWC, SAME/VALID padding, fused activations, "
                    "the softmax restored after the logits. LiteRT's reference kernels compute on it what "
                    "mcutrain's int8 forward computes, bit for bit. Not supported yet: exporting the zoo's int8 "
                    "models, and a device's trained parameters (--params saved.bin, the mct_save format).")
    p.add_argument("model", metavar="MODEL", help="int8 graph file (from `mcutrain import MODEL.tflite`)")
    p.add_argument("--format", choices=FORMATS, default="tflite", help="output format (default: tflite)")
    p.add_argument("--out", required=True, metavar="FILE", help="the .tflite file to write (atomically)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mcutrain.io.atomic import file_sha256
    from mcutrain.models.tflite.writer import write_tflite

    check_out_path(args.out)
    model = load_exportable(args.model)
    source = model.provenance.get("source", "")
    with os_errors_as_one_line(args.out):
        write_tflite(model.graph, args.out, description=f"mcutrain export of {source or args.model}")
    g = model.graph
    payload = {"out": str(args.out), "model": str(args.model), "format": args.format,
               "sha256": file_sha256(args.out), "source": source, "head": model.provenance.get("head", "kept"),
               "operators": len(g.nodes), "num_classes": len(model.classes), "classes": list(model.classes),
               "input": model.preprocessing, "softmax": any(n.kind == "softmax" for n in g.nodes)}
    emit(args, payload, _human)
    return 0


def check_out_path(path) -> None:
    """An output path must name a file: refused before any work (the atomic rename would fail last)."""
    if Path(path).is_dir():
        raise McutrainError(f"--out {one_line(str(path))}: is a folder; give the file to write")


@contextmanager
def os_errors_as_one_line(path):
    """A failed write (no space, no permission) is the user's to fix: one line, not a traceback."""
    try:
        yield
    except OSError as err:
        raise McutrainError(f"cannot write {one_line(str(path))}: {one_line(err.strerror or str(err))}") from None


def load_exportable(path):
    """The graph model in ``path``; a model file of another kind is refused with what works instead."""
    from mcutrain.io.container import peek_container
    from mcutrain.quant.graph_file import KIND, load_graph_model

    kind, _, _ = peek_container(path)
    if kind != KIND:
        why = _NOT_YET.get(kind, f"a {kind!r} file cannot be exported; export takes an imported TFLite graph "
                                 f"(mcutrain import MODEL.tflite --out M)")
        raise CheckpointError(f"{one_line(str(path))}: {why}")
    return load_graph_model(path)


def _human(r: dict) -> str:
    pre = r["input"]
    lines = [f"{r['model']}: {r['operators']} operators, input {pre['height']}x{pre['width']}x{pre['channels']} "
             f"int8 (scale {pre['scale']:.6g}, zero point {pre['zero']}), {r['num_classes']} classes "
             f"(head {r['head']}{', softmax restored' if r['softmax'] else ''})"]
    if r["source"]:
        lines.append(f"imported from {r['source']}")
    lines.append(f"wrote {r['out']} (tflite, sha256 {r['sha256'][:16]}...)")
    return "\n".join(lines)
