"""Test helper: one hypothesis draw of a sliding-window geometry (convolutions and pools alike)."""

from __future__ import annotations

from hypothesis import strategies as st


def draw_window(draw, max_kernel: int, max_stride: int, max_side: int):
    """((kh, kw), (sh, sw), (top, bottom, left, right), (h, w)): each padding below its kernel, as
    TFLite's SAME makes it, and an input at least as large as one window."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    pads = tuple(draw(st.integers(0, k - 1)) for k in (kh, kh, kw, kw))
    h = draw(st.integers(max(1, kh - pads[0] - pads[1]), max_side))
    w = draw(st.integers(max(1, kw - pads[2] - pads[3]), max_side))
    return (kh, kw), (sh, sw), pads, (h, w)


def random_conv(seed: int, kernel, strides, pads, hw, depthwise: bool, channels: int = 3, out_channels: int = 4):
    """(int8 input [1, C, H, W], int8 weight, (Ho, Wo), groups) of one drawn geometry, seeded."""
    import numpy as np

    (kh, kw), (sh, sw), (h, w) = kernel, strides, hw
    rng = np.random.default_rng(seed)
    o, groups = (channels, channels) if depthwise else (out_channels, 1)
    out_hw = ((h + pads[0] + pads[1] - kh) // sh + 1, (w + pads[2] + pads[3] - kw) // sw + 1)
    x = rng.integers(-128, 128, (1, channels, h, w)).astype(np.int8)
    weight = rng.integers(-127, 128, (o, 1 if depthwise else channels, kh, kw)).astype(np.int8)
    return x, weight, out_hw, groups, rng
