"""The block backward's depthwise transpose (c/mct_fused_depthwise.c: mct_fg_depthwise_grad_x) against the
whole-tensor kernel's position-by-position sum (mct_transpose_tap_sum, c/mct_backward.c), bit for bit, with
float32 accumulators (the firmware's default).

Why here and not only through generated nets: the fused tests compare float32 gradients to a tolerance,
where a reordered sum of a position's taps passes; here gradients of very different sizes make the sum
depend on its order, and the shapes reach the interior fast paths (the 3x3 stride-1 sliding window with
its remainder columns, the 3x3 stride-2 interior of one or two tap rows, either first phase) and the
edges, for kernels 3, 5 and 7.
"""

from __future__ import annotations


import numpy as np
import pytest

from tests.helpers.c_kernels import kernel_library, ptr

WRAPPER = r"""
#include "mct_fused.h"

static mct_conv conv(const int8_t *w, int c, int in_h, int in_w, int out_h, int out_w, int k, int s, int pad) {
    mct_conv p = {0};
    p.in_c = p.out_c = p.groups = c, p.in_h = in_h, p.in_w = in_w, p.out_h = out_h, p.out_w = out_w;
    p.k = p.kw = k, p.stride = p.stride_w = s, p.pad = p.pad_left = pad;
    const mct_weight wt = {w, NULL, c, 1, k * k, 0, 0};
    p.w = wt;
    return p;
}

/* Channel ch both ways: fused into ``fused``, position by position into ``each``. */
void transposes(const int8_t *w, int c, int ch, int in_h, int in_w, int out_h, int out_w, int k, int s, int pad,
                const float *g_c, float *fused, float *each) {
    const mct_conv p = conv(w, c, in_h, in_w, out_h, out_w, k, s, pad);
    mct_fg_depthwise_grad_x(&p, ch, g_c, fused);
    for (int y = 0; y < in_h; ++y)
        for (int x = 0; x < in_w; ++x)
            each[y * in_w + x] = (float)mct_transpose_tap_sum(&p, mct_weight_at(&p.w, ch, 0), g_c, y, x);
}
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """The kernel library copied into one folder (so every source includes the float32 header), built."""
    return kernel_library(tmp_path_factory.mktemp("dw"), WRAPPER, "dw", ("mct_fused_depthwise.c",), float32=True)


def _order_sensitive(rng, *shape) -> np.ndarray:
    """Both signs over ten decades, some zeros of both signs: a float32 sum of them depends on its order."""
    g = (rng.standard_normal(shape) * 10.0 ** rng.integers(-4, 6, shape)).astype(np.float32)
    g[rng.random(shape) < 0.1] = 0.0
    g[rng.random(shape) < 0.05] = -0.0
    return g


# (in side, kernel, stride, pad): "same" convs (out = ceil(in / stride)) and stride 2 with the extra row at
# the bottom (pad k / 2 - 1); sides whose interiors are 0, 1, 2 and many columns, of either first phase
CASES = [(side, k, s, pad) for k in (3, 5, 7) for s in (1, 2) for side in (3, 4, 5, 8, 9, 13, 16)
         for pad in ({k // 2, k // 2 - 1} if s == 2 else {k // 2}) if pad >= 0]
CASES += [(side, 3, 2, 3) for side in (5, 8, 9)]  # interiors from an odd column: the stride-2 phase 1 first


@pytest.mark.parametrize("side, k, s, pad", CASES)
def test_depthwise_transpose_equals_the_tap_sums(lib, side, k, s, pad):
    rng = np.random.default_rng(side * 100 + k * 10 + s + pad)
    out_side = (side + 2 * pad - k) // s + 1
    if out_side < 1:
        pytest.skip("no output")
    c, ch = 3, 1
    w = rng.integers(-128, 128, (c, k, k)).astype(np.int8)
    g = _order_sensitive(rng, out_side, out_side)
    fused = np.full((side, side), np.nan, np.float32)
    each = np.full((side, side), np.nan, np.float32)
    lib.transposes(ptr(w), c, ch, side, side, out_side, out_side, k, s, pad, ptr(g), ptr(fused), ptr(each))
    np.testing.assert_array_equal(fused.view(np.uint32), each.view(np.uint32))


def test_the_gradients_make_the_order_count():
    """The cases' gradients: a 3x3 window's nine products summed in another order give other floats."""
    rng = np.random.default_rng(0)
    g, w = _order_sensitive(rng, 200, 9), rng.integers(-128, 128, (200, 9)).astype(np.float32)

    def total(order):
        acc = np.zeros(200, np.float32)
        for t in order:
            acc = (acc + g[:, t] * w[:, t]).astype(np.float32)
        return acc

    assert (total(range(9)).view(np.uint32) != total(reversed(range(9))).view(np.uint32)).any()
