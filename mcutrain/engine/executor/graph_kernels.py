"""NumPy kernels of the TFLite ops an imported graph adds (issue 13): pools, MEAN, reshape, and their
backward rules.

Why a module of their own: the forward arithmetic is not re-implemented here but CALLED from
``mcutrain.quant.graph_forward`` (the reference that equals LiteRT's kernels bit for bit), so the
engine, the simulation and the importer share one arithmetic. The clamp masks follow from the
outputs: ``y = clamp(v, qmin, qmax)`` gives ``qmin < v < qmax`` exactly when ``qmin < y < qmax``.
Backward sums are float64 rounded once to float32 (the C accumulates in ``mct_acc_t`` in its own
order: equal to tolerance), except the max pool's, which adds float32 values one after the other in
output order (C order), as the C kernel does: bit for bit.
"""

from __future__ import annotations

import numpy as np

from mcutrain.engine.ir import Op
from mcutrain.engine.ops import reshape_permutes
from mcutrain.quant import graph_forward
from mcutrain.quant.fixedpoint import quantize_multiplier
from mcutrain.quant.graph import Mean, Pool2d
from mcutrain.quant.qmodel import QTensor

_ANY = QTensor(1.0, 0)  # the integer pools ignore scales (TFLite: in == out quantization)


def pool_params(op: Op) -> Pool2d:
    """The QGraph pool the op's attributes describe (what ``graph_forward`` computes)."""
    return Pool2d(tuple(op.attr("kernel")), tuple(op.attr("strides")), tuple(op.attr("pads")), _ANY, _ANY,
                  int(op.attr("qmin", -128)), int(op.attr("qmax", 127)))


def _with_mask(op: Op, y: np.ndarray, qmin: int, qmax: int) -> tuple:
    return (y, (y > qmin) & (y < qmax))[: len(op.outputs)]


def tfl_avgpool(op: Op, args: list, step: int) -> tuple:
    return _with_mask(op, graph_forward.avgpool(args[0], pool_params(op)), op.attr("qmin"), op.attr("qmax"))


def tfl_maxpool(op: Op, args: list, step: int) -> tuple:
    return _with_mask(op, graph_forward.maxpool(args[0], pool_params(op)), op.attr("qmin"), op.attr("qmax"))


def tfl_mean(op: Op, args: list, step: int) -> tuple:
    p = Mean(QTensor(op.attr("x_scale"), op.attr("x_zero")), QTensor(op.attr("y_scale"), op.attr("y_zero")),
             bool(op.attr("keep_dims")))
    return _with_mask(op, graph_forward.mean(args[0], p), -128, 127)


def mean_multiplier(x_scale: float, y_scale: float, count: int) -> tuple[int, int]:
    """(multiplier, shift) of ``graph_forward._mean_rescaled`` with 1 / count folded in: the constants
    of the C kernel (``mct_tfl_mean``), tested equal to the NumPy kernel on every op the tests make."""
    mult, shift = quantize_multiplier(x_scale / y_scale)
    fold = min(int(count).bit_length() - 1, 32, 31 + int(shift))
    return (int(mult) << fold) // int(count), int(shift) - fold


def reshape(op: Op, args: list, step: int) -> tuple:
    x = args[0]
    if reshape_permutes(op, x.shape):
        x = x.transpose(0, 2, 3, 1)
    shape = op.attr("shape")
    return (np.ascontiguousarray(x).reshape(tuple(shape) if shape is not None else (x.shape[0], -1)),)


def reshape_grad(op: Op, args: list, step: int) -> tuple:
    g, shape = args[0], tuple(op.attr("input_shape"))
    if reshape_permutes(op, shape):
        n, c, h, w = shape
        return (np.ascontiguousarray(g.reshape(n, h, w, c).transpose(0, 3, 1, 2)),)
    return (g.reshape(shape).copy(),)


def valid_counts(op: Op, hw) -> np.ndarray:
    """Input positions inside each clipped window, [OH, OW] (graph_forward's count)."""
    return graph_forward.valid_counts(tuple(hw), pool_params(op))


def _window_origins(op: Op, out_hw) -> tuple[np.ndarray, np.ndarray]:
    """Padded-coordinate rows and columns where each output's window starts."""
    (sh, sw) = op.attr("strides")
    return np.arange(out_hw[0]) * sh, np.arange(out_hw[1]) * sw


def tfl_avgpool_grad(op: Op, args: list, step: int) -> tuple:
    """Each output's fl32(g * mask) * fl32(ratio / n) added to its n valid input positions."""
    g, mask = args
    n, c, h, w = op.attr("input_shape")
    (kh, kw), (top, bottom, left, right) = op.attr("kernel"), op.attr("pads")
    oh, ow = g.shape[2:]
    factor = (np.float64(op.attr("ratio")) / valid_counts(op, (h, w))).astype(np.float32)
    spread = ((g * mask.astype(np.float32)) * factor).astype(np.float64)
    rows, cols = _window_origins(op, (oh, ow))
    out = np.zeros((n, c, h + top + bottom + kh, w + left + right + kw))
    for i in range(kh):
        for j in range(kw):
            out[:, :, (rows + i)[:, None], (cols + j)[None, :]] += spread
    return (out[:, :, top:top + h, left:left + w].astype(np.float32),)


def maxpool_argmax(op: Op, x: np.ndarray) -> np.ndarray:
    """Flat index (into one [H, W] plane) of each window's first maximum in window order, [N, C, OH, OW]."""
    (kh, kw), (top, bottom, left, right) = op.attr("kernel"), op.attr("pads")
    h, w = x.shape[2:]
    win = graph_forward.windows(x.astype(np.int64), (kh, kw), tuple(op.attr("strides")), (top, bottom, left, right),
                                 -(2**40))
    first = win.reshape(win.shape[:4] + (kh * kw,)).argmax(axis=4)  # argmax: the first maximum
    rows, cols = _window_origins(op, win.shape[2:4])
    r = rows[:, None] + first // kw - top
    s = cols[None, :] + first % kw - left
    return r * w + s


def tfl_maxpool_grad(op: Op, args: list, step: int) -> tuple:
    g, mask, x = args
    n, c, h, w = op.attr("input_shape")
    where = maxpool_argmax(op, x).reshape(n * c, -1)
    terms = (g * mask.astype(np.float32)).astype(np.float32).reshape(n * c, -1)
    out = np.zeros((n * c, h * w), np.float32)
    for plane in range(n * c):  # np.add.at adds in index order: the C kernel's float32 sums
        np.add.at(out[plane], where[plane], terms[plane])
    return (out.reshape(n, c, h, w),)


GRAPH_KERNELS = {
    "tfl_avgpool": tfl_avgpool,
    "tfl_maxpool": tfl_maxpool,
    "tfl_mean": tfl_mean,
    "reshape": reshape,
    "tfl_avgpool_grad": tfl_avgpool_grad,
    "tfl_maxpool_grad": tfl_maxpool_grad,
    "reshape_grad": reshape_grad,
}
