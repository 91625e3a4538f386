"""The NumPy integer reference forward of a QGraph: TensorFlow Lite's int8 arithmetic, op by op.

Why: an imported model must compute what TFLite computes, bit for bit, before mcutrain trains it.
This is the reference every other executor of a QGraph is checked against, and it is itself checked
against the LiteRT interpreter's reference kernels layer by layer (tests/quant/test_graph_litert.py).
It returns every tensor so that a difference is found at the layer where it starts.

Arithmetic per kind (the facts of TFLite's reference int8 kernels; see docs/tflite.md):
- conv2d: ``acc = bias[c] + sum (x - z_x) * w`` over the window, the padding counting as ``x = z_x``;
  ``y = clamp(MBQM(acc, m[c], s[c]) + z_y, qmin, qmax)`` (``fixedpoint.requantize``).
- add: ``int8_ops.quantized_add`` (TFLite's int8 ADD with 20 bits of headroom).
- avgpool: the window clipped to the input; ``acc = sum x`` (raw int8 values), ``n`` = positions
  inside; ``y = clamp(round_half_away(acc / n), qmin, qmax)`` (``int8_ops.rounded_divide``).
- maxpool: the maximum over the clipped window, clamped.
- mean: LiteRT's integer ``QuantizedMeanOrSum``: ``MBQM(sum x - z_x * H*W, m', s')`` with 1/(H*W) folded
  into the multiplier of s_x/s_y (see ``_mean_rescaled``). (Older TFLite versions and TFLM pick other
  kernels by keep_dims and the scales; those round differently.)
- fully_connected: ``acc = bias + sum (x - z_x) w``; LiteRT's reference kernel rescales it in double
  precision, ``round_half_away(acc * s_x * s_w / s_y)`` (``fixed_point=True``: the MBQM form of TFLM).
- reshape: a copy (flattened in H, W, C order when ``channels_last``).
- softmax: the float softmax of the dequantized logits, rounded to the output quantization. A marker:
  training drops it and keeps the logits. This equals LiteRT 2.3.0's int8 softmax on every output
  tried (tests); TFLite Micro's gemmlowp fixed-point kernel may differ from it by a step.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mcutrain.quant.fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier, requantize
from mcutrain.quant.graph import FullyConnected, Mean, Node, Pool2d, QGraph, fc_rescale
from mcutrain.quant.int8_ops import add_params, quantized_add, rounded_divide
from mcutrain.quant.qmodel import QConv

_EXACT_SUM_TERMS = 2**20
"""Convolutions are summed in float64 (BLAS) and converted back: exact while every partial sum stays
below 2**53; with |x - z| <= 255 and |w| <= 128 each term is < 2**15, so up to 2**20 terms are exact."""


def graph_forward(graph: QGraph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``graph`` on int8 ``x`` (the input's shape, batch first); every tensor by name."""
    x = np.asarray(x)
    shape = graph.tensor[graph.input].shape
    if x.dtype != np.int8 or x.shape[1:] != tuple(shape[1:]):
        raise ValueError(f"input must be int8 of shape [N, {', '.join(map(str, shape[1:]))}], "
                         f"got {x.dtype} {x.shape}")
    values = {graph.input: x}
    for node in graph.nodes:
        values[node.output] = run_node(node, [values[n] for n in node.inputs])
    return values


def run_node(node: Node, inputs: list[np.ndarray]) -> np.ndarray:
    p = node.params
    if node.kind == "conv2d":
        return conv2d(inputs[0], p)
    if node.kind == "add":
        a, b, y = p.a, p.b, p.y
        return quantized_add(inputs[0], inputs[1], add_params(a.scale, a.zero, b.scale, b.zero, y.scale, y.zero,
                                                               p.qmin, p.qmax))
    if node.kind == "avgpool":
        return avgpool(inputs[0], p)
    if node.kind == "maxpool":
        return maxpool(inputs[0], p)
    if node.kind == "mean":
        return mean(inputs[0], p)
    if node.kind == "fully_connected":
        return fully_connected(inputs[0], p)
    if node.kind == "reshape":
        x = inputs[0]
        if p.channels_last and x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x).reshape(x.shape[0], -1)
    if node.kind == "softmax":
        return softmax(inputs[0], p)
    raise ValueError(f"unknown node kind {node.kind!r}")


def windows(x: np.ndarray, kernel, strides, pad, fill) -> np.ndarray:
    """[N, C, OH, OW, kh, kw] views of the padded input."""
    (kh, kw), (sh, sw), (t, b, left, r) = kernel, strides, pad
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)), constant_values=fill)
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]


def conv2d(x: np.ndarray, p: QConv) -> np.ndarray:
    """int8 [N, C, H, W] -> int8 [N, O, OH, OW] (regular or depthwise)."""
    kh, kw = p.kernel_hw
    if p.weight.shape[1] * kh * kw > _EXACT_SUM_TERMS:
        raise ValueError(f"convolution '{p.name}': {p.weight.shape[1] * kh * kw} terms per output, "
                         f"over {_EXACT_SUM_TERMS}")
    centered = x.astype(np.float64) - p.x.zero  # padding with the zero point contributes 0, as TFLite skips it
    win = windows(centered, (kh, kw), p.strides, p.padding, 0.0)
    w = p.weight.astype(np.float64)
    if p.depthwise:
        acc = np.einsum("nchwij,cij->nchw", win, w[:, 0], optimize=True)
    else:
        acc = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    acc = np.rint(acc).astype(np.int64) + p.bias.astype(np.int64)[None, :, None, None]
    mult, shift = p.requant
    return requantize(acc, mult, shift, p.y.zero, p.qmin, p.qmax)


def fully_connected(x: np.ndarray, p: FullyConnected, fixed_point: bool = False) -> np.ndarray:
    """int8 [N, C] -> int8 [N, K].

    LiteRT's reference kernel rescales the int32 accumulator in double precision,
    ``round_half_away(acc * (double(s_x) * double(s_w[k]) / double(s_y)))``; ``fixed_point=True`` gives
    the multiplier/shift form of TFLite Micro and the optimized kernels (``MBQM``), which differs by
    one step on a few outputs (about 2**-right_shift of them).
    """
    acc = (x.astype(np.int64) - p.x.zero) @ p.weight.astype(np.int64).T
    if p.bias is not None:
        acc = acc + p.bias.astype(np.int64)
    if fixed_point:
        acc = np.clip(acc, -(2**31), 2**31 - 1)
        mult, shift = p.requant
        return requantize(acc, mult, shift, p.y.zero, p.qmin, p.qmax)
    return np.clip(fc_values(acc, fc_rescale(p), p.y.zero), p.qmin, p.qmax).astype(np.int8)


def fc_values(acc: np.ndarray, rescale: np.ndarray, y_zero: int, channel_axis: int = -1) -> np.ndarray:
    """LiteRT's FULLY_CONNECTED output before the clamp (int64): ``round_half_away(acc * rescale) + z_y``
    with ``acc`` saturated to int32 and ``rescale`` (float64, one per output channel along
    ``channel_axis``) from ``graph.fc_rescale``. The engine's ``conv2d`` with a ``rescale`` (a hidden
    fully connected layer) calls this too."""
    acc = np.clip(np.asarray(acc, np.int64), -(2**31), 2**31 - 1).astype(np.float64)
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    return round_half_away(acc * np.asarray(rescale, np.float64).reshape(shape)) + y_zero


def fully_connected_logits(x: np.ndarray, p: FullyConnected) -> np.ndarray:
    """The float logits training uses: the int32 accumulators times ``s_x * s_w[k]`` ([N, K] float64)."""
    acc = (x.astype(np.int64) - p.x.zero) @ p.weight.astype(np.int64).T
    if p.bias is not None:
        acc = acc + p.bias.astype(np.int64)
    return acc * (np.float64(p.x.scale) * p.w_scale.astype(np.float64))


def round_half_away(v: np.ndarray) -> np.ndarray:
    """C's ``round``: to nearest, ties away from zero (exact: ``v - trunc(v)`` has no rounding error)."""
    t = np.trunc(v)
    return (t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0.0)).astype(np.int64)


def valid_counts(shape_hw, p: Pool2d) -> np.ndarray:
    """Number of input positions inside each (clipped) window: [OH, OW]."""
    ones = np.ones((1, 1) + tuple(shape_hw), np.int64)
    return windows(ones, p.kernel, p.strides, p.pad, 0).sum(axis=(4, 5))[0, 0]


def pool_values(x: np.ndarray, p: Pool2d, kind: str) -> np.ndarray:
    """The integers of an ``avgpool`` or ``maxpool`` before the clamp (int64): what the clamp and the
    backward's mask ``qmin < v < qmax`` both read."""
    if kind == "avgpool":
        sums = windows(x.astype(np.int64), p.kernel, p.strides, p.pad, 0).sum(axis=(4, 5))
        return rounded_divide(sums, valid_counts(x.shape[2:], p))
    # Padding is filled with a value below every int8, so it never wins: the window is clipped.
    return windows(x.astype(np.int64), p.kernel, p.strides, p.pad, -(2**40)).max(axis=(4, 5))


def avgpool(x: np.ndarray, p: Pool2d) -> np.ndarray:
    return np.clip(pool_values(x, p, "avgpool"), p.qmin, p.qmax).astype(np.int8)


def maxpool(x: np.ndarray, p: Pool2d) -> np.ndarray:
    return np.clip(pool_values(x, p, "maxpool"), p.qmin, p.qmax).astype(np.int8)


def mean(x: np.ndarray, p: Mean) -> np.ndarray:
    """TFLite MEAN over H, W (LiteRT's reference kernel for int8, whatever keep_dims and the scales)."""
    sums = x.astype(np.int64).sum(axis=(2, 3))
    y = _mean_rescaled(sums, x.shape[2] * x.shape[3], p)
    return y[:, :, None, None] if p.keep_dims else y


def _mean_rescaled(sums: np.ndarray, count: int, p: Mean) -> np.ndarray:
    """TFLite's integer ``QuantizedMeanOrSum`` (mean): 1/count folded into the multiplier of s_x/s_y.

    ``shift = min(floor(log2(count)), 32, 31 + s)``, ``m' = trunc(m * 2**shift / count)``,
    ``y = clamp(MBQM(sum - z_x * count, m', s - shift) + z_y)``.
    """
    mult, shift = quantize_multiplier(p.x.scale / p.y.scale)
    fold = min(count.bit_length() - 1, 32, 31 + shift)
    mult, shift = (mult << fold) // count, shift - fold
    scaled = multiply_by_quantized_multiplier(sums - p.x.zero * count, mult, shift).astype(np.int64)
    return np.clip(scaled + p.y.zero, -128, 127).astype(np.int8)


def softmax(x: np.ndarray, p) -> np.ndarray:
    logits = p.beta * p.x.scale * (x.astype(np.float64) - p.x.zero)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    prob = e / e.sum(axis=-1, keepdims=True)
    return np.clip(np.floor(prob / p.y.scale + 0.5) + p.y.zero, -128, 127).astype(np.int8)
