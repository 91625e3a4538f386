"""The forward of the paper's int8 models in THEIR arithmetic, on the raw dict of a tiny-training file.

Independent of mcutrain's QModel, fixed-point code and executors: it reads the dict returned by
``load_tiny_training_pickle`` and follows the formulas of their simulation (tiny-training
``quantized_ops.py`` / ``quantized_ops_diff.py``, summarised in ../shared/upstream/README.md):

- conv: ``acc = conv(x - x_zero, w) + b`` (padding (k-1)//2), then the FLOAT requantization
  ``y = clamp(round(acc * s_x*s_w[c]/s_y) + y_zero, -128, 127)`` with ``round`` half to even
  (``torch.round`` / ``np.round``), the effective scale in float64 as their ``get_effective_scale``
  (their training-path modules then cast it to float32 and multiply in float32: on the three paper
  models that changes about one output in a million, never by more than 1);
- residual add: dequantize both inputs, add, ``round(sum / s_y) + y_zero``, clamp;
- global average pool: ``round(mean(x_q))`` over H, W of the raw int8 values (half to even), keeping
  the input's scale and zero point;
- classifier: float logits ``s_x * s_w[k] * (sum (x - x_zero) w + b)`` (their head requantizes to
  int8 logits; the project keeps fp32 logits, so the reference stops before that).

Convolutions are float64 sums of integer products (exact below 2**53), written as one matmul per
kernel tap; no code is shared with ``tests/helpers/int8_numpy.py`` or the torch simulation.
"""

from __future__ import annotations

import numpy as np


def named_convs(raw: dict) -> list[tuple[str, dict]]:
    """(mcutrain name, conv dict) in forward order: ``first_conv``, ``blocks.3.pointwise1``, ..."""
    out = [("first_conv", raw["first_conv"])]
    for i, block in enumerate(raw["blocks"]):
        out += [(f"blocks.{i}.{k}", block[k]) for k in ("pointwise1", "depthwise", "pointwise2")
                if block[k] is not None]
    return out


def conv_acc(conv: dict, x_q: np.ndarray) -> np.ndarray:
    """int32-domain accumulator (as float64 holding exact integers), bias included: [N, O, H', W']."""
    p = conv["params"]
    w = p["weight"].astype(np.float64)
    o, i_per_group, kh, kw = w.shape
    stride, groups = conv["stride"], conv["groups"]
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    x = np.pad(x_q.astype(np.float64) - p["x_zero"], ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, c, hp, wp = x.shape
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    acc = np.zeros((n, o, oh, ow))
    for di in range(kh):
        for dj in range(kw):
            tap = x[:, :, di:di + stride * (oh - 1) + 1:stride, dj:dj + stride * (ow - 1) + 1:stride]
            if groups == 1:
                acc += np.einsum("oc,nchw->nohw", w[:, :, di, dj], tap, optimize=True)
            elif groups == c == o and i_per_group == 1:
                acc += w[None, :, 0, di, dj, None, None] * tap
            else:
                raise NotImplementedError(f"grouped conv with groups={groups}")
    return acc + p["bias"].astype(np.float64)[None, :, None, None]


def effective_scale(p: dict) -> np.ndarray:
    """Their ``get_effective_scale``: s_x * s_w / s_y in double."""
    return np.float64(p["x_scale"]) * p["w_scales"].astype(np.float64) / np.float64(p["y_scale"])


def conv(conv_dict: dict, x_q: np.ndarray) -> np.ndarray:
    p = conv_dict["params"]
    y = np.round(conv_acc(conv_dict, x_q) * effective_scale(p)[None, :, None, None]) + p["y_zero"]
    return np.clip(y, -128, 127).astype(np.int8)


def residual_add(block: dict, shortcut_q: np.ndarray, branch_q: np.ndarray) -> np.ndarray:
    r = block["residual"]["params"]
    b = block["pointwise2"]["params"]
    real = (shortcut_q.astype(np.float64) - r["x_zero"]) * r["x_scale"] \
        + (branch_q.astype(np.float64) - b["y_zero"]) * b["y_scale"]
    return np.clip(np.round(real / r["y_scale"]) + r["y_zero"], -128, 127).astype(np.int8)


def avg_pool(x_q: np.ndarray) -> np.ndarray:
    """[N, C, H, W] -> [N, C]: ``round(mean(x_q))``, half to even, same quantization as the input."""
    return np.clip(np.round(x_q.astype(np.float64).mean(axis=(2, 3))), -128, 127).astype(np.int8)


def classifier_logits(raw: dict, pooled_q: np.ndarray) -> np.ndarray:
    p = raw["classifier"]["params"]
    w = p["weight"].reshape(p["weight"].shape[0], -1).astype(np.float64)
    acc = (pooled_q.astype(np.float64) - p["x_zero"]) @ w.T + p["bias"].astype(np.float64)
    return acc * (np.float64(p["x_scale"]) * p["w_scales"].astype(np.float64))


def forward(raw: dict, x_q: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """int8 input [N, 3, R, R] -> (float64 logits [N, 1000], every int8 tensor by mcutrain's name)."""
    acts = {}
    t = acts["first_conv"] = conv(raw["first_conv"], x_q)
    for i, block in enumerate(raw["blocks"]):
        y = t
        for k in ("pointwise1", "depthwise", "pointwise2"):
            if block[k] is not None:
                y = acts[f"blocks.{i}.{k}"] = conv(block[k], y)
        if block["residual"] is not None:
            y = acts[f"blocks.{i}.add"] = residual_add(block, t, y)
        t = y
    pooled = acts["pool"] = avg_pool(t)
    return classifier_logits(raw, pooled), acts
