"""An independent NumPy int8 forward of a QModel (einsum over sliding windows, int64 throughout).

Written separately from the torch simulation (no shared conv code) so the equality tests mean
something; shares only the fixed-point primitives, which are tested on their own against pure
Python integers and the C header.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mcutrain.quant.fixedpoint import requantize
from mcutrain.quant.int8_ops import add_params, avgpool_int8, quantized_add
from mcutrain.quant.qmodel import QConv, QModel


def conv_acc(x_q: np.ndarray, conv: QConv) -> np.ndarray:
    k, s = conv.kernel, conv.stride
    xz = np.pad(x_q.astype(np.int64) - conv.x.zero, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    out = -(-x_q.shape[2] // s)
    win = sliding_window_view(xz, (k, k), axis=(2, 3))[:, :, ::s, ::s][:, :, :out, :out]
    w = conv.weight.astype(np.int64)
    if conv.groups == 1:
        acc = np.einsum("nchwij,ocij->nohw", win, w)
    else:
        acc = np.einsum("nchwij,cij->nchw", win, w[:, 0])
    return acc + conv.bias.astype(np.int64)[None, :, None, None]


def conv_forward(x_q: np.ndarray, conv: QConv) -> np.ndarray:
    mult, shift = conv.requant
    return requantize(conv_acc(x_q, conv), mult, shift, conv.y.zero, conv.qmin, conv.qmax)


def forward(model: QModel, x_q: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """int8 input [N,3,R,R] -> (fp32 logits, every intermediate int8 tensor by name)."""
    acts = {}
    t = conv_forward(x_q, model.first_conv)
    acts["first_conv"] = t
    for i, b in enumerate(model.blocks):
        y = t if b.pointwise1 is None else conv_forward(t, b.pointwise1)
        y = conv_forward(conv_forward(y, b.depthwise), b.pointwise2)
        if b.add is not None:
            a = b.add
            y = quantized_add(t, y, add_params(a.a.scale, a.a.zero, a.b.scale, a.b.zero, a.y.scale, a.y.zero))
        t = y
        acts[f"blocks.{i}"] = t
    p = model.pool
    pooled = avgpool_int8(t, p.x.zero, p.x.scale, p.y.scale, p.y.zero)
    acts["pool"] = pooled
    c = model.classifier
    acc = (pooled.astype(np.int64) - c.x.zero) @ c.weight.astype(np.int64).T + c.bias.astype(np.int64)
    logits = (acc.astype(np.float64) * (c.x.scale * c.w_scale.astype(np.float64))).astype(np.float32)
    return logits, acts
