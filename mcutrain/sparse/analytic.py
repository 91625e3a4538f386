"""The paper's analytic "extra memory" of a sparse update: what training keeps beyond inference.

The model (DESIGN.md section 5, and the reference's ``nelem_saved_for_backward``), in bytes:
  * the classifier's input activation: ``feature_ch`` int8 values;
  * per bias-updated conv: a 1-bit-per-element mask of its OUTPUT (where the clamp passed gradient),
    ``ceil(C_out * H_out * W_out / 8)`` bytes, and its int32 bias, ``C_out * 4`` bytes;
  * per weight-updated conv: the kept input-activation channels, ``kept * H_in * W_in`` bytes (int8),
    and the kept weights at 1 byte each: ``kept * kh * kw`` for a depthwise conv, ``C_out * kept * kh * kw``
    otherwise (``C_out * kept`` for a 1x1 conv); ``kept`` at most the conv's channels.
Sizes come from the architecture at a square resolution, or (``qmodel=``) from an int8 model's own
convs: any kernel, strides, padding and H x W input (issue 13); for an imported graph
(``graph_extra_bytes``) from the shapes of each conv's own input and output tensors (a graph is not a
chain: a shortcut conv reads a block's input), and the classifier input is its fully connected head's.
The classifier's own weights and bias are NOT counted (the reference sets their bits to 0): they are
the same for every scheme. KB means 1024 bytes.

Checked against the paper (tests/sparse/test_sparse_analytic.py): at 128x128 every one of the 15 paper
schemes gives ``floor(total / 1024)`` equal to the number in its name (e.g. mcunet-5fps paper-99kb:
102,240 bytes = 99.84 KB). The variants KB = 1000 and "mask of the input" both break that match.
This is a model of the paper's bookkeeping, not a memory plan: the compiler's measured peak is the
number that matters on the device.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

from mcutrain.models.specs import NetSpec
from mcutrain.models.zoo import ConvShape, conv_shapes
from mcutrain.sparse.errors import SchemeError
from mcutrain.sparse.scheme import ConvUpdate, UpdatePlan

KB = 1024
BIAS_BYTES = 4  # int32
PARTS = ("classifier_input", "bias_masks", "biases", "weight_inputs", "weights")


@dataclass(frozen=True)
class ConvSizes:
    """What the analytic model reads of one conv: channels, kernel and input/output height x width."""

    name: str
    in_ch: int
    out_ch: int
    kernel_hw: tuple[int, int]
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]

    @classmethod
    def of_shape(cls, s: ConvShape) -> "ConvSizes":
        return cls(s.name, s.in_ch, s.out_ch, (s.kernel, s.kernel), (s.in_side,) * 2, (s.out_side,) * 2)


def qmodel_conv_sizes(qmodel) -> list[ConvSizes]:
    """The sizes of an int8 model's convs (a ``QModel``: its own kernels, strides, padding, input)."""
    sizes, hw = [], qmodel.input_size
    for conv in qmodel.convs():
        out = conv.out_hw(*hw)
        sizes.append(ConvSizes(conv.name, conv.in_ch, conv.out_ch, conv.kernel_hw, tuple(hw), out))
        hw = out
    return sizes


def analytic_extra_bytes(plan: UpdatePlan, spec: NetSpec, resolution: int = 128, qmodel=None) -> dict:
    """Total and per-part extra bytes of ``plan`` at ``resolution`` (see the module docstring); with
    ``qmodel`` (an int8 model of ``spec``) the sizes are that model's, its resolution the input's.

    Returns ``{"model", "scheme", "resolution", "total_bytes", "total_kb", "parts": {part: bytes},
    "per_conv": [{"index", "name", part: bytes ...} for each trained conv]}``.
    """
    if plan.model != spec.name:
        raise SchemeError(f"plan is for model {plan.model!r}, not {spec.name!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise SchemeError(f"resolution must be a positive integer, got {resolution!r}")
    if qmodel is not None:
        shapes, resolution = qmodel_conv_sizes(qmodel), qmodel.resolution
    else:
        shapes = [ConvSizes.of_shape(s) for s in conv_shapes(spec, resolution)]
    return extra_bytes(plan, shapes, spec.feature_ch, spec.name, resolution)


def graph_conv_sizes(graph) -> list[ConvSizes]:
    """The sizes of an imported graph's convs (``QGraph``, node order), from their tensors' NCHW shapes."""
    sizes = []
    for node in graph.nodes:
        if node.kind == "conv2d":
            x, y = graph.tensor[node.inputs[0]].shape, graph.tensor[node.output].shape
            conv = node.params
            sizes.append(ConvSizes(conv.name, int(x[1]), int(y[1]), tuple(conv.kernel_hw), (int(x[2]), int(x[3])),
                                   (int(y[2]), int(y[3]))))
    return sizes


def graph_extra_bytes(plan: UpdatePlan, graph) -> dict:
    """``analytic_extra_bytes`` of a plan on an imported graph (``sparse.builtin.graph_plan``); the
    resolution reported is the graph's input [height, width]."""
    from mcutrain.quant.graph_head import classifier_node  # sparse does not import quant at load time

    _, head, _ = classifier_node(graph)
    shape = graph.tensor[graph.input].shape
    return extra_bytes(plan, graph_conv_sizes(graph), int(head.params.weight.shape[1]), "graph",
                       [int(shape[2]), int(shape[3])])


def extra_bytes(plan: UpdatePlan, shapes: list[ConvSizes], classifier_in: int, model: str, resolution) -> dict:
    """The analytic model of ``plan`` on convs of ``shapes`` (one per plan conv) and a classifier input."""
    per_conv = [_conv_bytes(c, s) for c, s in zip(plan.convs, shapes, strict=True) if c.trained]
    parts = {part: sum(row[part] for row in per_conv) for part in PARTS[1:]}
    parts = {"classifier_input": classifier_in, **parts}
    total = sum(parts.values())
    return {"model": model, "scheme": plan.scheme, "resolution": resolution, "total_bytes": total,
            "total_kb": total / KB, "parts": parts, "per_conv": per_conv}


def _conv_bytes(update: ConvUpdate, shape: ConvSizes) -> dict:
    """One trained conv's share: mask + bias if bias-updated, kept input + kept weights if weight-updated."""
    row = {"index": update.index, "name": update.name, "bias_masks": 0, "biases": 0,
           "weight_inputs": 0, "weights": 0}
    if update.bias:
        row["bias_masks"] = math.ceil(shape.out_ch * shape.out_hw[0] * shape.out_hw[1] / 8)
        row["biases"] = shape.out_ch * BIAS_BYTES
    if update.updates_weight:
        row["weight_inputs"] = _kept(update, shape) * shape.in_hw[0] * shape.in_hw[1]
        row["weights"] = kept_weight_count(update, shape)
    return row


def _kept(update: ConvUpdate, shape: ConvSizes | ConvShape) -> int:
    """Kept channels, at most the conv's (a plan made for 3 input channels on a 1-channel model)."""
    return min(update.kept_channels, shape.in_ch)


def kept_weight_count(update: ConvUpdate, shape: ConvSizes | ConvShape) -> int:
    """Weights a partial update touches: the kept channels' kernels (all outputs for a dense conv)."""
    if isinstance(shape, ConvShape):
        shape = ConvSizes.of_shape(shape)
    per_channel = shape.kernel_hw[0] * shape.kernel_hw[1]
    if update.kind == "depthwise":
        return _kept(update, shape) * per_channel
    return shape.out_ch * _kept(update, shape) * per_channel
