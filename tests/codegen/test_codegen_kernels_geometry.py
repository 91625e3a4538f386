"""The general C conv kernels against the NumPy executor's over random geometry (issue 13): any kh x kw
from 1 to 11, strides 1 or 2 per axis, any padding below the kernel on each side, regular and depthwise.
Forward: int8 outputs and clamp masks bit for bit; backward (input and weight gradients): to float
tolerance (the C accumulates exact products in another order)."""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.engine.executor.kernels import KERNELS
from mcutrain.engine.ir import Op, make_attrs
from tests.helpers.c_kernels import kernel_library, ptr
from tests.helpers.windows import draw_window, random_conv

WRAPPER = r"""
#include "mct_kernels.h"

/* g: in_c in_h in_w out_c out_h out_w kh sh pad_top groups kw sw pad_left x_zero y_zero qmin qmax */
static mct_conv conv_of(const int32_t *g, const int8_t *w, const int32_t *bias, const int32_t *mult,
                        const int32_t *shift) {
    mct_conv p = {.in_c = g[0], .in_h = g[1], .in_w = g[2], .out_c = g[3], .out_h = g[4], .out_w = g[5], .k = g[6],
                  .stride = g[7], .pad = g[8], .groups = g[9], .kw = g[10], .stride_w = g[11], .pad_left = g[12],
                  .x_zero = g[13], .y_zero = g[14], .qmin = g[15], .qmax = g[16], .bias = bias, .multiplier = mult,
                  .shift = shift};
    p.w.flash = w;
    p.w.sram = NULL;
    p.w.rows = g[3];
    p.w.cols = g[9] > 1 ? 1 : g[0];
    p.w.inner = g[6] * g[10];
    return p;
}

void forward(const int32_t *g, const int8_t *w, const int32_t *bias, const int32_t *mult, const int32_t *shift,
             const int8_t *x, int8_t *y, uint8_t *mask) {
    const mct_conv p = conv_of(g, w, bias, mult, shift);
    mct_conv2d(&p, x, y, mask, NULL);
}

void grad_x(const int32_t *g, const int8_t *w, const float *g_out, float *out) {
    const mct_conv p = conv_of(g, w, NULL, NULL, NULL);
    mct_conv2d_grad_x(&p, g_out, NULL, out, NULL);
}

void grad_w(const int32_t *g, const int8_t *x, const float *g_out, float *out) {
    const mct_conv p = conv_of(g, NULL, NULL, NULL, NULL);
    mct_conv2d_grad_w(&p, x, g_out, g[3], g[9] > 1 ? 1 : g[0], out);
}
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return kernel_library(tmp_path_factory.mktemp("geometry_kernels"), WRAPPER, "geometry")


@st.composite
def _cases(draw):
    (kh, kw), (sh, sw), pads, (h, w) = draw_window(draw, 11, 2, 14)
    depthwise = draw(st.booleans())
    return (kh, kw), (sh, sw), pads, (h, w), depthwise, draw(st.integers(0, 2**16))


@settings(max_examples=80, deadline=None)
@given(_cases())
def test_general_c_kernels_equal_the_numpy_kernels(lib, case):
    (kh, kw), (sh, sw), pads, (h, w), depthwise, seed = case
    c = 3
    x, weight, (ho, wo), groups, rng = random_conv(seed, (kh, kw), (sh, sw), pads, (h, w), depthwise, c, 4)
    o = weight.shape[0]
    bias = rng.integers(-3000, 3000, o).astype(np.int32)
    mult = rng.integers(1 << 30, (1 << 31) - 1, o).astype(np.int32)
    shift = rng.integers(-10, -4, o).astype(np.int32)
    attrs = dict(groups=groups, strides=(sh, sw), pads=pads, x_zero=5, y_zero=-3, qmin=-100, qmax=120)
    y_ref, mask_ref = KERNELS["conv2d"](Op("c", "conv2d", ("x", "w", "b", "m", "s"), ("y", "mask"),
                                           make_attrs(**attrs)), [x, weight, bias, mult, shift], 0)
    geometry = np.array([c, h, w, o, ho, wo, kh, sh, pads[0], groups, kw, sw, pads[2], 5, -3, -100, 120], np.int32)
    y = np.zeros((1, o, ho, wo), np.int8)
    mask = np.zeros(-(-y.size // 8), np.uint8)
    lib.forward(ptr(geometry), ptr(weight), ptr(bias), ptr(mult), ptr(shift), ptr(x), ptr(y), ptr(mask))
    assert y_ref.shape == y.shape and np.array_equal(y, y_ref)
    assert np.array_equal(np.unpackbits(mask, bitorder="little")[:y.size].astype(bool), mask_ref.reshape(-1) != 0)

    g = rng.standard_normal((1, o, ho, wo)).astype(np.float32)
    geo = dict(groups=groups, strides=(sh, sw), pads=pads)
    (gx_ref,) = KERNELS["conv2d_grad_x"](Op("gx", "conv2d_grad_x", ("g", "w"), ("gx",),
                                            make_attrs(input_shape=x.shape, **geo)), [g, weight], 0)
    gx = np.zeros(x.shape, np.float32)
    lib.grad_x(ptr(geometry), ptr(weight), ptr(g), ptr(gx))
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=1e-5)
    kept = c
    gw_op = Op("gw", "conv2d_grad_w", ("x", "g"), ("gw",),
               make_attrs(kept=kept, weight_shape=weight.shape, x_zero=5, **geo))
    (gw_ref,) = KERNELS["conv2d_grad_w"](gw_op, [x, g], 0)
    gw = np.zeros(gw_ref.shape, np.float32)
    lib.grad_w(ptr(geometry), ptr(x), ptr(g), ptr(gw))
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-5, atol=1e-4)
