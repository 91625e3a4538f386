"""Import a full-int8 .tflite file as a graph model for a task (``mcutrain import MODEL.tflite``).

Why: ``from_tflite`` maps a parsed flatbuffer onto a QGraph; a user's import also needs the
provenance that identifies the file (its name and the sha256 of the very bytes parsed) and the
classifier for their task (the model's own, or a new head: ``graph_head.head_for_task``).

Degenerate channels, whose weight scale is below ``DEGENERATE_W_SCALE`` (1e-8; TFLite converters give
channels pruned to zero scales of about 1e-11), are frozen as the quantizer and the tiny-training
importer freeze them: Quantization-Aware Scaling divides by the square of the scale. Freezing changes
no integer and no output; export does not write it, and importing the export freezes them again.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from mcutrain.errors import one_line
from mcutrain.models.tflite.reader import MAX_FILE_BYTES, TfliteError, parse_tflite
from mcutrain.quant.from_tflite import graph_from_tflite
from mcutrain.quant.graph import Node, QGraph
from mcutrain.quant.graph_file import GraphModel
from mcutrain.quant.graph_head import head_for_task
from mcutrain.quant.quantize import DEGENERATE_W_SCALE


def import_tflite(path, num_classes: int | None = None, classes: tuple[str, ...] | None = None,
                  new_head: bool = False) -> GraphModel:
    """``path`` -> a GraphModel with its own head (no task given, or the same count) or a new one."""
    data = _read(Path(path))
    graph = graph_from_tflite(parse_tflite(data, source=str(path)), source=str(path))
    provenance = {"source": one_line(Path(path).name)[:4096] or "model", "format": "tflite",
                  "sha256": hashlib.sha256(data).hexdigest()}
    graph = QGraph(graph.tensors, freeze_degenerate(graph.nodes), graph.input, graph.output, provenance)
    graph, names = head_for_task(graph, num_classes, classes, force_new=new_head)
    return GraphModel(graph, names)


def freeze_degenerate(nodes: tuple[Node, ...]) -> tuple[Node, ...]:
    """The nodes with every convolution's channels of weight scale < DEGENERATE_W_SCALE frozen."""
    out = []
    for node in nodes:
        if node.kind == "conv2d":
            p = node.params
            frozen = set(p.frozen_channels) | set(np.flatnonzero(p.w_scale < DEGENERATE_W_SCALE).tolist())
            node = replace(node, params=replace(p, frozen_channels=tuple(int(c) for c in sorted(frozen))))
        out.append(node)
    return tuple(out)


def frozen_per_layer(graph: QGraph) -> dict[str, int]:
    """Frozen channels per convolution (node name -> count), for the import report."""
    return {n.name: len(n.params.frozen_channels) for n in graph.nodes
            if n.kind == "conv2d" and n.params.frozen_channels}


def _read(path: Path) -> bytes:
    """The file's bytes, read once (parsed and hashed alike), refused over the reader's size limit."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise TfliteError(f"{one_line(str(path))}: {size} bytes, over the limit of {MAX_FILE_BYTES} (16 MiB)")
        return path.read_bytes()
    except OSError as e:
        raise TfliteError(f"cannot read {one_line(str(path))}: {one_line(e.strerror or str(e))}") from None
