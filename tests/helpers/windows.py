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
