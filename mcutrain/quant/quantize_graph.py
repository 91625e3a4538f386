"""Post-training quantization of a FloatGraph (an imported PyTorch model) into an int8 QGraph.

Why: ``quant.quantize`` quantizes the zoo's MobileNetV2 family only; an imported model is any graph of
convolutions, adds, pools and linear layers. The recipe is the same, with the same functions, so the
same rules hold (``quant.quantize``'s docstring: the same int8 file on every CPU):
  1. fold BatchNorm into the convolution before it (float64, rounded once to float32);
  2. fold the input preprocessing into the convolutions that read the input (below);
  3. calibrate per-tensor ranges in float64 (``run_float`` of the folded graph, the mean over batches
     of each batch's min and max, snapped to RANGE_BITS bits: ``quantize.RangeObserver``);
  4. quantize weights per output channel (symmetric int8) and biases to int32 at s_x * s_w[c]; fuse a
     ReLU/ReLU6 into the clamp of the conv, add, pool or fully connected layer before it (qmin/qmax as
     QConv does); a ReLU that cannot be fused (its input is read elsewhere too) becomes a 1x1 max pool
     with that clamp. Pools and flattens keep their input's quantization (a flatten of H x W > 1 read by
     linear layers flattens in TFLite's H, W, C order, their columns permuted); global average pools become
     ``mean`` nodes with their own range; linear layers become ``fully_connected`` nodes (int8 out).

The input. The int8 input is ``q = p - 128`` for a uint8 pixel p (``quant.qmodel``'s convention); its
QTensor (s_in, z_in) says what it means: ``u = s_in * (q - z_in) = s_in * (p - 128 - z_in)``. The
model's own input is ``x_c = (p - offset_c) * scale_c`` (ImageNet's ``(p/255 - mean_c)/std_c`` is
offset_c = 255 mean_c, scale_c = 1 / (255 std_c)). With one scale and one integer offset for all
channels, z_in = offset - 128 and s_in = scale: u = x (up to s_in's rounding to float32, see below),
and nothing is folded. Otherwise s_in = max_c scale_c, z_in = round(mean_c offset_c) - 128 and every convolution reading the input gets
``w'[o, c] = w[o, c] * scale_c / s_in`` and ``b'[o] = b[o] + sum_{c, i, j} w[o, c, i, j] * d_c`` with
``d_c = (z_in + 128 - offset_c) * scale_c`` (float64): the same outputs wherever the window lies
inside the image. At the border the int8 convolution pads with z_in, i.e. with the pixel value
z_in + 128, which the model sees as x_c = d_c, whereas PyTorch pads x with 0 (the pixel offset_c):
the first convolution's border outputs exceed PyTorch's by ``sum over padded taps of w[o, c, i, j] * d_c``.
For ImageNet's mean and std (z_in + 128 = 114: d = -0.166, -0.040, +0.182) that is the model with its
zero padding replaced by a mid grey, the image mean's neighbour; ``fold_graph``'s output is exactly
that model (tests/quant/test_quantize_graph.py checks it), and calibration sees it too. Where the
input is read by anything but convolutions, only the exact case is possible.

Every activation scale (the input's too) is rounded to float32 (``float32_scale``), the precision a
.tflite stores: the graph is then exactly what its export says (export -> import is the identity) and
LiteRT derives the same fixed-point multipliers from it. The rounding moves a scale by < 6e-8 of itself.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from mcutrain.data import ImageSet
from mcutrain.errors import DataError, McutrainError
from mcutrain.io.identity import tensors_sha256
from mcutrain.models.float_graph import Conv2d, FloatGraph, InputPreprocessing, Linear, Node, graph_tensors, run_float
from mcutrain.quant.graph import FullyConnected, GraphTensor, Mean, Pool2d, QGraph, Reshape
from mcutrain.quant.graph import Node as QNode
from mcutrain.quant.qmodel import QAdd, QConv, QTensor
from mcutrain.quant.quantize import (DEGENERATE_W_SCALE, RANGE_BITS, RangeObserver, quantize_bias,
                                     quantize_weights)

QUANTIZER = "mcutrain-graph-ptq-minmax-v1"
_FUSES_RELU = ("conv2d", "add", "maxpool", "avgpool", "linear")


class GraphQuantizeError(McutrainError):
    """A FloatGraph that cannot be quantized (a BatchNorm with no convolution before it, say)."""


def float32_scale(scale: float) -> float:
    """``scale`` rounded to float32, as a .tflite stores it: the graph then is exactly what its export
    says (export -> import is the identity) and LiteRT derives the multipliers we derive."""
    return float(np.float32(scale))


# ---------------------------------------------------------------------------------------------- folding


def fold_graph(g: FloatGraph) -> tuple[FloatGraph, QTensor]:
    """(the graph with BatchNorm and the preprocessing folded in, the int8 input's QTensor). The folded
    graph's input is u = s_in (p - 128 - z_in): preprocessing offset 128 + z_in, scale s_in."""
    nodes = _fold_batchnorm(g)
    offsets, scales = g.preprocessing.pixel_affine(g.input_shape[0])
    exact = np.all(offsets == offsets[0]) and np.all(scales == scales[0]) and offsets[0] == np.round(offsets[0])
    s_in = float32_scale(float(np.max(scales)))
    z_in = int(np.clip(np.round(offsets.mean()) - 128, -128, 127))
    if not exact:
        readers = [n for n in nodes if g.input in n.inputs]
        if any(n.kind != "conv2d" for n in readers):
            other = next(n for n in readers if n.kind != "conv2d")
            raise GraphQuantizeError(f"the input is read by {other.kind} '{other.name}': this preprocessing "
                                     f"(per-channel, or a fractional offset) can be folded only into "
                                     f"convolutions")
        d = (z_in + 128 - offsets) * scales
        nodes = [_fold_input(n, scales / s_in, d) if n in readers else n for n in nodes]
    nodes = [_as_float32(n) for n in nodes]
    folded = replace(g, nodes=tuple(nodes), preprocessing=InputPreprocessing(offset=128.0 + z_in, scale=s_in))
    return folded, QTensor(s_in, z_in)


def _fold_batchnorm(g: FloatGraph) -> list[Node]:
    """BatchNorm folded into the convolution whose output only it reads (float64 weights)."""
    out: list[Node] = []
    for node in g.nodes:
        if node.kind != "batchnorm":
            out.append(node)
            continue
        prev = next((n for n in out if n.output == node.inputs[0]), None)
        if prev is None or prev.kind != "conv2d" or len(g.consumers(prev.output)) != 1 or prev.output == g.output:
            raise GraphQuantizeError(f"batchnorm '{node.name}' does not follow a convolution whose output only "
                                     f"it reads; it cannot be folded")
        bn, conv = node.params, prev.params
        factor = _f64(bn.weight) / np.sqrt(_f64(bn.running_var) + float(bn.eps))
        bias = _f64(conv.bias) if conv.bias is not None else np.zeros(len(factor))
        params = replace(conv, weight=_f64(conv.weight) * factor[:, None, None, None],
                         bias=_f64(bn.bias) + (bias - _f64(bn.running_mean)) * factor)
        out[out.index(prev)] = replace(prev, output=node.output, params=params)
    return out


def _fold_input(node: Node, ratio: np.ndarray, d: np.ndarray) -> Node:
    """``w'[o, c] = w[o, c] * ratio_c``, ``b'[o] = b[o] + sum w[o, c, :, :] * d_c`` (module docstring)."""
    p: Conv2d = node.params
    w = _f64(p.weight)
    per_weight_channel = np.arange(p.groups * w.shape[1]).reshape(p.groups, w.shape[1])
    channel = np.repeat(per_weight_channel, w.shape[0] // p.groups, axis=0)  # [O, I/g]: input channel of each
    bias = _f64(p.bias) if p.bias is not None else np.zeros(w.shape[0])
    bias = bias + (w.sum(axis=(2, 3)) * d[channel]).sum(axis=1)
    return replace(node, params=replace(p, weight=w * ratio[channel][:, :, None, None], bias=bias))


def _as_float32(node: Node) -> Node:
    p = node.params
    if isinstance(p, (Conv2d, Linear)):
        bias = None if p.bias is None else np.asarray(p.bias).astype(np.float32)
        return replace(node, params=replace(p, weight=np.asarray(p.weight).astype(np.float32), bias=bias))
    return node


def _f64(a) -> np.ndarray:
    return np.asarray(a, np.float64)


# ---------------------------------------------------------------------------------------------- calibration


def calibration_pixels(data: ImageSet, shape: tuple[int, int, int], batches: int, batch_size: int,
                       seed: int):
    """``batches`` batches of float64 pixels [B, C, H, W] (0..255 integers) from a seeded shuffle of ``data``."""
    c, h, w = shape
    if data.images.shape[3] != c and not (data.images.shape[3] == 1 and c == 3):
        raise DataError(f"the data has {data.images.shape[3]}-channel images, the model takes {c} channels")
    order = np.random.default_rng(seed).permutation(len(data))[:batches * batch_size]
    for start in range(0, len(order), batch_size):
        yield image_pixels(data.images[np.sort(order[start:start + batch_size])], c, h, w)


def image_pixels(images: np.ndarray, c: int, h: int, w: int) -> torch.Tensor:
    """uint8 [N, H', W', C'] -> float64 pixels [N, c, h, w] on the 0..255 grid (bilinear resize, as the loader)."""
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()
    if x.shape[-2:] != (h, w):
        shrink = h < x.shape[-2] or w < x.shape[-1]
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
        x = x.round_().clamp_(0.0, 255.0)
    return x.expand(-1, c, -1, -1).double()


def calibrate(folded: FloatGraph, q_in: QTensor, pixel_batches) -> dict[str, RangeObserver]:
    """Range observers of every tensor of the folded graph, in float64 (``quant.quantize``)."""
    observers: dict[str, RangeObserver] = {}

    def observe(name: str, t: torch.Tensor) -> None:
        observers.setdefault(name, RangeObserver()).observe(t)

    with torch.no_grad():
        for pixels in pixel_batches:
            u = (pixels - 128.0 - q_in.zero) * q_in.scale  # exact: integers times one float64
            run_float(folded, u, observe)
    if not observers:
        raise DataError("no calibration images")
    return observers


# ---------------------------------------------------------------------------------------------- int8 graph


def fuse_activations(g: FloatGraph) -> list[tuple[Node, str | None]]:
    """(node, fused activation) in order: a ReLU/ReLU6 whose input only it reads is fused into the node
    that made that input (which then writes the ReLU's output tensor)."""
    out: list[tuple[Node, str | None]] = []
    for node in g.nodes:
        if node.kind in ("relu", "relu6") and out:
            prev, act = next(((p, a) for p, a in out if p.output == node.inputs[0]), (None, None))
            if prev is not None and act is None and prev.kind in _FUSES_RELU and \
                    len(g.consumers(prev.output)) == 1 and prev.output != g.output:
                out[out.index((prev, act))] = (replace(prev, output=node.output), node.kind)
                continue
        out.append((node, None))
    return out


def clamp_of(act: str | None, q: QTensor) -> tuple[int, int]:
    """(qmin, qmax) of an activation on the int8 grid of ``q``: ReLU clamps at the zero point, ReLU6 also
    at the step nearest 6 (when inside the range)."""
    if act is None:
        return -128, 127
    qmin = max(-128, q.zero)
    return (qmin, 127) if act == "relu" else (qmin, int(min(127, q.zero + np.round(6.0 / q.scale))))


def quantize_float_graph(g: FloatGraph, calib: ImageSet, *, batches: int = 16, batch_size: int = 64,
                         seed: int = 0, calibration_data: str = "") -> QGraph:
    """FloatGraph + calibration images -> int8 QGraph (module docstring)."""
    if batches < 1 or batch_size < 1:
        raise McutrainError(f"calibration needs at least 1 batch of at least 1 image, got {batches} batch(es) "
                            f"of {batch_size}")
    folded, q_in = fold_graph(g)
    obs = calibrate(folded, q_in, calibration_pixels(calib, g.input_shape, batches, batch_size, seed))
    graph = build_qgraph(folded, q_in, obs)
    graph.provenance.update(
        quantizer=QUANTIZER, source_tensors_sha256=tensors_sha256(graph_tensors(g)),
        calibration_data=str(calibration_data), calibration_batches=int(batches),
        calibration_batch_size=int(batch_size), seed=int(seed), range_bits=RANGE_BITS, format="pytorch")
    if g.provenance.get("source"):
        graph.provenance["source"] = str(g.provenance["source"])
    return graph


def build_qgraph(folded: FloatGraph, q_in: QTensor, obs: dict[str, RangeObserver]) -> QGraph:
    """The int8 graph of a folded FloatGraph with calibrated ranges."""
    shapes = folded.shapes
    hwc = _channels_last_flattens(folded)
    quant: dict[str, QTensor] = {folded.input: q_in}
    nodes: list[QNode] = []
    for node, act in fuse_activations(folded):
        if node.kind == "linear" and node.inputs[0] in hwc:
            c, h, w = hwc[node.inputs[0]]
            k = node.params.weight.shape[0]
            weight = node.params.weight.reshape(k, c, h, w).transpose(0, 2, 3, 1).reshape(k, -1)
            node = replace(node, params=replace(node.params, weight=np.ascontiguousarray(weight)))
        kind, params, y = _quantize_node(node, act, [quant[t] for t in node.inputs], obs, shapes)
        if node.output in hwc:
            params = Reshape(channels_last=True)
        quant[node.output] = y
        nodes.append(QNode(kind, node.name, node.inputs, node.output, params))
    tensors = tuple(GraphTensor(name, (1,) + tuple(shapes[name]), q) for name, q in quant.items())
    return QGraph(tensors, tuple(nodes), folded.input, folded.output, {}).validate()


def quantize_channel_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 weights, float32 scales, which channels are all zero): ``quantize.quantize_weights``, except
    that an all-zero channel (a BatchNorm gamma of 0, a pruned filter) gets the layer's largest scale
    instead of 0: its weights stay 0, but its bias (then the channel's whole output) stays representable
    at the precision of the other channels, and the scale stays a valid one (> 0) for the int8 graph file.
    Such channels are frozen (they were 0 in the float model)."""
    w_q, w_scale = quantize_weights(w)
    zero = w_scale == 0
    if zero.any():
        w_scale = np.where(zero, w_scale.max() if not zero.all() else np.float32(1 / 127), w_scale).astype(np.float32)
    return w_q, w_scale, zero


def _channels_last_flattens(g: FloatGraph) -> dict[str, tuple[int, int, int]]:
    """Flattens of [C, H, W] (H * W > 1) read only by linear layers, by output: they flatten in TFLite's
    (H, W, C) order and those layers' weight columns are permuted to match (the same sums, and a graph
    that exports to .tflite, whose RESHAPE flattens NHWC)."""
    out = {}
    for n in g.nodes:
        if n.kind == "flatten":
            c, h, w = g.shapes[n.inputs[0]]
            readers = g.consumers(n.output)
            if h * w > 1 and readers and all(r.kind == "linear" for r in readers):
                out[n.output] = (c, h, w)
    return out


def _quantize_node(node: Node, act, xs: list[QTensor], obs, shapes):
    """(QGraph kind, parameters, output QTensor) of one (fused) node."""
    kind, p, x = node.kind, node.params, xs[0]
    where = f"{kind} '{node.name}'"
    if kind in ("relu", "relu6"):  # not fusable: a 1x1 max pool that clamps, same quantization
        if len(shapes[node.inputs[0]]) != 3:
            raise GraphQuantizeError(f"{where}: a ReLU on a [N, C] tensor that no layer before it can fuse")
        qmin, qmax = clamp_of(kind, x)
        return "maxpool", Pool2d((1, 1), (1, 1), (0, 0, 0, 0), x, x, qmin, qmax), x
    if kind in ("maxpool", "avgpool"):  # integer pools keep their input's quantization
        qmin, qmax = clamp_of(act, x)
        return kind, Pool2d(p.kernel, p.stride, p.padding, x, x, qmin, qmax), x
    if kind == "flatten":
        return "reshape", Reshape(channels_last=False), x
    y = obs[node.output].qtensor()
    y = QTensor(float32_scale(y.scale), y.zero)
    qmin, qmax = clamp_of(act, y)
    if kind == "add":
        return "add", QAdd(x, xs[1], y, qmin, qmax), y
    if kind == "global_avgpool":
        return "mean", Mean(x, y, p.keep_dims), y
    w_q, w_scale, zero = quantize_channel_weights(p.weight)
    bias = quantize_bias(p.bias if p.bias is not None else np.zeros(len(w_scale)), x.scale, w_scale)
    if kind == "linear":
        return "fully_connected", FullyConnected(w_q, bias, w_scale, x, y, qmin, qmax), y
    frozen = tuple(int(c) for c in np.flatnonzero(zero | (w_scale < DEGENERATE_W_SCALE)))
    sh, sw = p.stride
    return "conv2d", QConv(node.name, sh, p.groups, w_q, bias, w_scale, x, y, qmin=qmin, qmax=qmax,
                           frozen_channels=frozen, stride_w=sw, pad=tuple(p.padding)), y
