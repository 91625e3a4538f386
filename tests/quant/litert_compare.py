"""Test helper: run a .tflite with LiteRT's reference kernels and compare every tensor with graph_forward.

Not a test module (no ``test_`` prefix): imported by the tests that need LiteRT.
"""

from __future__ import annotations

import numpy as np

from mcutrain.models.tflite.reader import TfliteModel
from mcutrain.quant.graph import QGraph
from mcutrain.quant.graph_forward import graph_forward


def litert_all_tensors(path, x_nhwc: np.ndarray) -> dict[int, np.ndarray]:
    """Every tensor LiteRT computed (reference kernels, no delegate), by tensor index."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x_nhwc)
    interp.invoke()
    out = {}
    for d in interp.get_tensor_details():
        try:
            out[d["index"]] = np.array(interp.get_tensor(d["index"]))
        except ValueError:  # tensors without data (none in these models; kept for safety)
            pass
    return out


def graph_index(model: TfliteModel, graph: QGraph) -> dict[str, int]:
    """Graph tensor name -> TFLite tensor index (names are TFLite's, '#index' added to duplicates)."""
    by_name = {}
    for t in model.tensors:
        for name in (t.name, f"{t.name}#{t.index}"):
            if name in graph.tensor and name not in by_name:
                by_name[name] = t.index
    return by_name


def to_nhwc(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def compare(path, model: TfliteModel, graph: QGraph, x_nchw: np.ndarray) -> list[dict]:
    """One row per node: kind, name, elements, bit-exact fraction, max |diff| against LiteRT."""
    ours = graph_forward(graph, x_nchw)
    theirs = litert_all_tensors(path, to_nhwc(x_nchw))
    index = graph_index(model, graph)
    rows = []
    for node in graph.nodes:
        a = to_nhwc(ours[node.output]).astype(np.int64)
        b = theirs[index[node.output]].astype(np.int64)
        assert a.shape == b.shape, (node.name, a.shape, b.shape)
        diff = np.abs(a - b)
        rows.append({"kind": node.kind, "name": node.name, "n": int(a.size),
                     "exact": int((diff == 0).sum()), "max_diff": int(diff.max(initial=0))})
    return rows


def summarize(rows: list[dict]) -> dict[str, tuple[float, int, int]]:
    """Per kind: (% bit-exact, max |diff|, number of nodes)."""
    out = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind]
        n, exact = sum(r["n"] for r in rs), sum(r["exact"] for r in rs)
        out[kind] = (100.0 * exact / n, max(r["max_diff"] for r in rs), len(rs))
    return out
