"""`mcutrain export`: an mcutrain model file -> a .tflite flatbuffer that TFLite (Micro) and LiteRT run.

Today: imported graphs (``mcutrain import MODEL.tflite``, ``mcutrain.quant.graph_file``), written by
``mcutrain.models.tflite.writer`` with their softmax marker as TFLite's SOFTMAX, atomically. The
writer is the inverse of the importer, so import -> export -> import gives the same integers and
quantization. ``--params saved.bin --program DIR``: the parameters a device trained and saved with
``mct_save``, written into the graph before export (``mcutrain.codegen.snapshot`` checks the snapshot as
``mct_restore`` does). ``--program`` is required: a snapshot carries only a hash of the model, not which
parameters were trained nor their slices and offsets, which the compile's scheme decided (DIR's
manifest.json). Not yet: the zoo's int8 models.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.errors import CheckpointError, McutrainError, one_line

FORMATS = ("tflite",)
MAX_SNAPSHOT_BYTES = 64 << 20  # far above any snapshot that fits a microcontroller's SRAM
_NOT_YET = {
    "int8-model": "export of mcutrain zoo models is not supported yet; imported TFLite graphs "
                  "(mcutrain import MODEL.tflite --out M) can be exported",
    "float-checkpoint": "a float checkpoint cannot be exported; export takes an imported TFLite graph "
                        "(mcutrain import MODEL.tflite --out M)",
}


def register(subparsers) -> None:
    from mcutrain.api import defaults, exporting

    d = defaults.defaults(exporting.export)
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
    from mcutrain.api.exporting import export

    result = export(args.model, args.out, format=args.format, params=args.params, program=args.program)
    emit(args, result.to_dict(), _human)
    return 0


def export_payload(args) -> dict:
    """What ``run`` prints (``--json``), after writing the file: the work of ``mcutrain.api.export``."""
    from mcutrain.io.atomic import file_sha256
    from mcutrain.models.tflite.writer import write_tflite

    check_out_path(args.out)
    check_params_flags(args)
    model = load_exportable(args.model)
    source = model.provenance.get("source", "")
    g, trained = model.graph, {}
    if args.params is not None:
        g, trained = device_trained_graph(model.graph, args)
    with os_errors_as_one_line(args.out):
        write_tflite(g, args.out, description=f"mcutrain export of {source or args.model}"
                                              + (f" with {args.params}" if trained else ""))
    payload = {"out": str(args.out), "model": str(args.model), "format": args.format,
               "sha256": file_sha256(args.out), "source": source, "head": model.provenance.get("head", "kept"),
               "operators": len(g.nodes), "num_classes": len(model.classes), "classes": list(model.classes),
               "input": model.preprocessing, "softmax": any(n.kind == "softmax" for n in g.nodes)}
    if trained:
        payload.update(params=str(args.params), program=str(args.program), **trained)
    return payload


def check_out_path(path) -> None:
    """An output path must name a file: refused before any work (the atomic rename would fail last)."""
    if Path(path).is_dir():
        raise McutrainError(f"--out {one_line(str(path))}: is a folder; give the file to write")


@contextmanager
def os_errors_as_one_line(path, verb: str = "write"):
    """A failed write or read (no space, no permission, no file) is the user's to fix: one line."""
    try:
        yield
    except OSError as err:
        raise McutrainError(f"cannot {verb} {one_line(str(path))}: {one_line(err.strerror or str(err))}") from None


def check_params_flags(args) -> None:
    if (args.params is None) != (args.program is None):
        raise McutrainError("--params and --program go together: a snapshot's layout (which parameters were "
                            "trained, their slices) is the compiled program's (--program DIR)")


def device_trained_graph(graph, args):
    """``graph`` with the trained slices of the snapshot ``args.params`` of ``args.program``'s program, and
    what was applied; a folder not compiled from this graph or a snapshot mct_restore would refuse is
    refused (one line) before anything is written."""
    from mcutrain.codegen.host import read_manifest
    from mcutrain.codegen.snapshot import (check_identity, graph_parameters, layout_of, read_snapshot,
                                           with_trained_slices)

    manifest = read_manifest(args.program)
    storages = layout_of(manifest, one_line(str(args.program)))
    values = {name: value for name, (_, _, value) in graph_parameters(graph).items()}
    if not check_identity(storages, values, str(manifest.get("model_id", ""))):
        raise McutrainError(f"--program {one_line(str(args.program))} was not compiled from "
                            f"{one_line(str(args.model))} (its model identity differs); give the folder "
                            f"the device's program was compiled into")
    snapshot = read_snapshot(read_snapshot_file(args.params), storages, manifest["model_id"])
    trained = with_trained_slices(graph, snapshot.slices)
    return trained.validate(), {"step": snapshot.step, "trained": list(snapshot.slices)}


def read_snapshot_file(path) -> bytes:
    """The snapshot's bytes, read up to a bound (a wrong file must not fill memory)."""
    with os_errors_as_one_line(path, "read"):
        with open(path, "rb") as f:
            data = f.read(MAX_SNAPSHOT_BYTES + 1)
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise McutrainError(f"--params {one_line(str(path))}: larger than {MAX_SNAPSHOT_BYTES:,} bytes, "
                            f"not an mct_save snapshot")
    return data


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
    if "step" in r:
        lines.append(f"with the parameters of {r['params']} (step {r['step']}; trained: {', '.join(r['trained'])})")
    lines.append(f"wrote {r['out']} (tflite, sha256 {r['sha256'][:16]}...)")
    return "\n".join(lines)
