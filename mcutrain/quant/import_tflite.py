"""Import a full-int8 .tflite file as a graph model for a task (``mcutrain import MODEL.tflite``).

Why: ``from_tflite`` maps a parsed flatbuffer onto a QGraph; a user's import also needs the
provenance that identifies the file (its name and the sha256 of the very bytes parsed) and the
classifier for their task (the model's own, or a new head: ``graph_head.head_for_task``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mcutrain.errors import one_line
from mcutrain.models.tflite.reader import MAX_FILE_BYTES, TfliteError, parse_tflite
from mcutrain.quant.from_tflite import graph_from_tflite
from mcutrain.quant.graph import QGraph
from mcutrain.quant.graph_file import GraphModel
from mcutrain.quant.graph_head import head_for_task


def import_tflite(path, num_classes: int | None = None, classes: tuple[str, ...] | None = None,
                  new_head: bool = False) -> GraphModel:
    """``path`` -> a GraphModel with its own head (no task given, or the same count) or a new one."""
    data = _read(Path(path))
    graph = graph_from_tflite(parse_tflite(data, source=str(path)), source=str(path))
    provenance = {"source": one_line(Path(path).name)[:4096] or "model", "format": "tflite",
                  "sha256": hashlib.sha256(data).hexdigest()}
    graph = QGraph(graph.tensors, graph.nodes, graph.input, graph.output, provenance)
    graph, names = head_for_task(graph, num_classes, classes, force_new=new_head)
    return GraphModel(graph, names)


def _read(path: Path) -> bytes:
    """The file's bytes, read once (parsed and hashed alike), refused over the reader's size limit."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise TfliteError(f"{one_line(str(path))}: {size} bytes, over the limit of {MAX_FILE_BYTES} (16 MiB)")
        return path.read_bytes()
    except OSError as e:
        raise TfliteError(f"cannot read {one_line(str(path))}: {one_line(e.strerror or str(e))}") from None
