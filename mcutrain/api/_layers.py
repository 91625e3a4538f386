"""The layer table of a `mcutrain.Model` (private to ``mcutrain.api.models``): one row per layer with its
output shape, weights and multiply-accumulates per image, computed as ``mcutrain zoo`` and ``mcutrain
import`` compute them (``models.zoo.conv_shapes``, ``quant.graph.node_cost``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcutrain.api.models import Model


def layers_of(model: Model) -> list[dict[str, Any]]:
    """Rows of ``index``, ``name``, ``kind``, ``output`` (C, H, W), ``weights``, ``macs``."""
    if model.kind == "int8-graph":
        return _qgraph_layers(model.value.graph)
    if model.kind == "float-graph":
        return _float_graph_layers(model.value)
    return _spec_layers(_spec(model), int(model.resolution))


def _spec(model: Model) -> Any:
    if model.kind == "architecture":
        return model.value
    if model.kind == "float-checkpoint":
        from mcutrain.models import resolve_spec

        return resolve_spec(model.path) if model.path else resolve_spec(model.value[1].model)
    return model.value.spec


def _spec_layers(spec: Any, resolution: int) -> list[dict[str, Any]]:
    """The backbone's convs, as ``mcutrain zoo`` counts them (the classifier excluded)."""
    from mcutrain.models import conv_shapes

    rows = []
    for i, c in enumerate(conv_shapes(spec, resolution)):
        kind = "depthwise_conv2d" if c.groups > 1 and c.groups == c.in_ch else "conv2d"
        rows.append({"index": i, "name": c.name, "kind": kind, "output": [c.out_ch, c.out_side, c.out_side],
                     "weights": c.weights, "macs": c.macs})
    return rows


def _qgraph_layers(g: Any) -> list[dict[str, Any]]:
    from mcutrain.quant.graph import node_cost

    rows = []
    for i, node in enumerate(g.nodes):
        shape = g.tensor[node.output].shape
        weights, macs = node_cost(node, shape)
        kind = "depthwise_conv2d" if node.kind == "conv2d" and node.params.depthwise else node.kind
        rows.append({"index": i, "name": node.name, "kind": kind, "output": list(shape[1:]), "weights": weights,
                     "macs": macs})
    return rows


def _float_graph_layers(g: Any) -> list[dict[str, Any]]:
    rows = []
    for i, node in enumerate(g.nodes):
        shape = g.shapes[node.output]
        weight = getattr(node.params, "weight", None) if node.kind in ("conv2d", "linear") else None
        weights = int(weight.size) if weight is not None else 0
        spatial = int(shape[1] * shape[2]) if node.kind == "conv2d" and len(shape) == 3 else 1
        rows.append({"index": i, "name": node.name, "kind": node.kind, "output": list(shape), "weights": weights,
                     "macs": weights * spatial})
    return rows
