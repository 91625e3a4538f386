"""``export``: an imported int8 graph written back as a ``.tflite`` flatbuffer that TFLite (Micro) and
LiteRT run (``mcutrain export``), optionally with the parameters a device trained and saved.

Today: imported graphs (``mcutrain import MODEL.tflite``, ``mcutrain.quant.graph_file``), written by
``mcutrain.models.tflite.writer`` with their softmax marker as TFLite's SOFTMAX, atomically. The
writer is the inverse of the importer, so import -> export -> import gives the same integers and
quantization. ``params`` with ``program``: the parameters a device trained and saved with ``mct_save``,
written into the graph before export (``mcutrain.codegen.snapshot`` checks the snapshot as
``mct_restore`` does). ``program`` is required: a snapshot carries only a hash of the model, not which
parameters were trained nor their slices and offsets, which the compile's scheme decided (its
manifest.json). Not yet: the zoo's int8 models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcutrain.api.arguments import PathLike, optional_path, path_of
from mcutrain.api.results import Result

__all__ = ["FORMATS", "ExportResult", "export"]

FORMATS = ("tflite",)
"""The formats `export` writes."""
MAX_SNAPSHOT_BYTES = 64 << 20  # far above any snapshot that fits a microcontroller's SRAM
_NOT_YET = {
    "int8-model": "export of mcutrain zoo models is not supported yet; imported TFLite graphs "
                  "(mcutrain import MODEL.tflite --out M) can be exported",
    "float-checkpoint": "a float checkpoint cannot be exported; export takes an imported TFLite graph "
                        "(mcutrain import MODEL.tflite --out M)",
}


@dataclass(frozen=True, eq=False)
class ExportResult(Result):
    """The file written (``out``, ``sha256``), the graph's operators, input and classes."""

    def text(self) -> str:
        r = dict(self.payload)
        pre = r["input"]
        lines = [f"{r['model']}: {r['operators']} operators, input {pre['height']}x{pre['width']}x"
                 f"{pre['channels']} int8 (scale {pre['scale']:.6g}, zero point {pre['zero']}), "
                 f"{r['num_classes']} classes (head {r['head']}{', softmax restored' if r['softmax'] else ''})"]
        if r["source"]:
            lines.append(f"imported from {r['source']}")
        if "step" in r:
            lines.append(f"with the parameters of {r['params']} (step {r['step']}; trained: "
                         f"{', '.join(r['trained'])})")
        lines.append(f"wrote {r['out']} (tflite, sha256 {r['sha256'][:16]}...)")
        return "\n".join(lines)

    @property
    def out(self) -> str:
        """The .tflite file written."""
        return str(self.payload["out"])


def export(model: PathLike, out: PathLike, *, format: str = "tflite", params: PathLike | None = None,
           program: PathLike | None = None) -> ExportResult:
    """Write ``model`` (an int8 graph file of `mcutrain.import_model` from a .tflite) as ``out`` in
    ``format``: the same integers and quantization. ``params`` (a device's ``mct_save`` snapshot) with
    ``program`` (the folder `mcutrain.generate_c` wrote, which the device ran): the trained parameters
    are written into the graph first."""
    from mcutrain.codegen.snapshot import device_trained_graph
    from mcutrain.errors import McutrainError
    from mcutrain.io.atomic import check_out_path, file_sha256, os_errors_as_one_line
    from mcutrain.models.tflite.writer import write_tflite

    model_path, target, saved, folder = path_of(model), path_of(out), optional_path(params), optional_path(program)
    if format not in FORMATS:
        raise McutrainError(f"format {format!r}: export writes {', '.join(FORMATS)}")
    check_out_path(target)
    if (saved is None) != (folder is None):
        raise McutrainError("--params and --program go together: a snapshot's layout (which parameters were "
                            "trained, their slices) is the compiled program's (--program DIR)")
    graph_model = _load_exportable(model_path)
    source = graph_model.provenance.get("source", "")
    g, trained = graph_model.graph, {}
    if saved is not None:
        g, trained = device_trained_graph(graph_model.graph, _read_snapshot_file(saved), folder, model_path)
    with os_errors_as_one_line(target):
        write_tflite(g, target, description=f"mcutrain export of {source or model_path}"
                                            + (f" with {saved}" if trained else ""))
    payload: dict[str, Any] = {
        "out": target, "model": model_path, "format": format, "sha256": file_sha256(target), "source": source,
        "head": graph_model.provenance.get("head", "kept"), "operators": len(g.nodes),
        "num_classes": len(graph_model.classes), "classes": list(graph_model.classes),
        "input": graph_model.preprocessing, "softmax": any(n.kind == "softmax" for n in g.nodes)}
    if trained:
        payload.update(params=saved, program=folder, **trained)
    return ExportResult(payload)


def _read_snapshot_file(path: str) -> bytes:
    """The snapshot's bytes, read up to a bound (a wrong file must not fill memory)."""
    from mcutrain.errors import McutrainError, one_line
    from mcutrain.io.atomic import os_errors_as_one_line

    with os_errors_as_one_line(path, "read"):
        with open(path, "rb") as f:
            data = f.read(MAX_SNAPSHOT_BYTES + 1)
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise McutrainError(f"--params {one_line(path)}: larger than {MAX_SNAPSHOT_BYTES:,} bytes, "
                            f"not an mct_save snapshot")
    return data


def _load_exportable(path: str) -> Any:
    """The graph model in ``path``; a model file of another kind is refused with what works instead."""
    from mcutrain.errors import CheckpointError, one_line
    from mcutrain.io.container import peek_container
    from mcutrain.quant.graph_file import KIND, load_graph_model

    kind, _, _ = peek_container(path)
    if kind != KIND:
        why = _NOT_YET.get(kind, f"a {kind!r} file cannot be exported; export takes an imported TFLite graph "
                                 f"(mcutrain import MODEL.tflite --out M)")
        raise CheckpointError(f"{one_line(path)}: {why}")
    return load_graph_model(path)
