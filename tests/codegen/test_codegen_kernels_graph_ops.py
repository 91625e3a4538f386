"""The C kernels of the TFLite ops of imported graphs (issue 13) against the NumPy executor's, over random
shapes: pools (windows clipped at the border, any padding below the window), MEAN (with the generator's
folded multiplier), the channels-last flatten and its gradient. Forward: int8 outputs and packed masks
bit for bit; the max pool's backward bit for bit (float32 in the same order); the average pool's to
float tolerance (the C sums each input position's terms in another order)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.engine.executor.graph_kernels import mean_multiplier
from mcutrain.engine.executor.kernels import KERNELS
from mcutrain.engine.ir import Op, make_attrs
from tests.helpers.c_kernels import kernel_library, ptr
from tests.helpers.windows import draw_window

WRAPPER = r"""
#include "mct_kernels.h"

/* g: channels in_h in_w out_h out_w kh kw sh sw pad_top pad_left qmin qmax */
static mct_tfl_pool pool_of(const int32_t *g, double ratio) {
    mct_tfl_pool p = {.channels = g[0], .in_h = g[1], .in_w = g[2], .out_h = g[3], .out_w = g[4], .kh = g[5],
                      .kw = g[6], .sh = g[7], .sw = g[8], .pad_top = g[9], .pad_left = g[10], .qmin = g[11],
                      .qmax = g[12], .ratio = ratio};
    return p;
}

void avgpool(const int32_t *g, const int8_t *x, int8_t *y, uint8_t *mask) {
    const mct_tfl_pool p = pool_of(g, 1.0);
    mct_tfl_avgpool(&p, x, y, mask);
}

void maxpool(const int32_t *g, const int8_t *x, int8_t *y, uint8_t *mask) {
    const mct_tfl_pool p = pool_of(g, 1.0);
    mct_tfl_maxpool(&p, x, y, mask);
}

void avgpool_grad(const int32_t *g, double ratio, const float *g_y, const uint8_t *mask, float *out) {
    const mct_tfl_pool p = pool_of(g, ratio);
    mct_tfl_avgpool_grad(&p, g_y, mask, out);
}

void maxpool_grad(const int32_t *g, const float *g_y, const uint8_t *mask, const int8_t *x, float *out) {
    const mct_tfl_pool p = pool_of(g, 1.0);
    mct_tfl_maxpool_grad(&p, g_y, mask, x, out);
}

void mean(const int32_t *m, const int8_t *x, int8_t *y, uint8_t *mask) {
    const mct_tfl_mean_params p = {m[0], m[1], m[2], m[3], m[4], m[5]};
    mct_tfl_mean(&p, x, y, mask);
}
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    library = kernel_library(tmp_path_factory.mktemp("graph_kernels"), WRAPPER, "graphops")
    library.avgpool_grad.argtypes = [ctypes.c_void_p, ctypes.c_double] + [ctypes.c_void_p] * 3
    return library


def _packed(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.reshape(-1).astype(bool), bitorder="little")


def _unpacked(bits: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(bits, bitorder="little")[:n].astype(bool)


@st.composite
def _pools(draw):
    (kh, kw), (sh, sw), pads, (h, w) = draw_window(draw, 6, 3, 13)
    qmin, qmax = draw(st.sampled_from([(-128, 127), (-5, 127), (-128, 30)]))
    return dict(kernel=(kh, kw), strides=(sh, sw), pads=pads, qmin=qmin, qmax=qmax), (h, w), draw(st.integers(0, 2**16))


@settings(max_examples=80, deadline=None)
@given(_pools(), st.floats(0.25, 4.0))
def test_c_pools_equal_the_numpy_kernels(lib, case, ratio):
    a, (h, w), seed = case
    rng = np.random.default_rng(seed)
    c = 3
    x = rng.integers(-128, 128, (1, c, h, w)).astype(np.int8)
    (kh, kw), (sh, sw), (t, b, left, r) = a["kernel"], a["strides"], a["pads"]
    oh, ow = (h + t + b - kh) // sh + 1, (w + left + r - kw) // sw + 1
    geometry = np.array([c, h, w, oh, ow, kh, kw, sh, sw, t, left, a["qmin"], a["qmax"]], np.int32)
    g = rng.standard_normal((1, c, oh, ow)).astype(np.float32)
    for kind in ("tfl_avgpool", "tfl_maxpool"):
        op = Op("p", kind, ("x",), ("y", "mask"), make_attrs(**a, x_scale=ratio, y_scale=1.0))
        y_ref, mask_ref = KERNELS[kind](op, [x], 0)
        y = np.zeros((1, c, oh, ow), np.int8)
        mask = np.full(-(-y.size // 8), 0xFF, np.uint8)  # the kernel must clear the bits it does not set
        getattr(lib, kind[4:])(ptr(geometry), ptr(x), ptr(y), ptr(mask))
        assert np.array_equal(y, y_ref) and np.array_equal(_unpacked(mask, y.size), mask_ref.reshape(-1))
        grad_op = Op("gp", f"{kind}_grad", ("g", "mask") + (("x",) if kind == "tfl_maxpool" else ()), ("gx",),
                     make_attrs(kernel=a["kernel"], strides=a["strides"], pads=a["pads"], input_shape=x.shape,
                                **({"ratio": ratio} if kind == "tfl_avgpool" else {})))
        args = [g, mask_ref] + ([x] if kind == "tfl_maxpool" else [])
        (gx_ref,) = KERNELS[grad_op.kind](grad_op, args, 0)
        gx = np.full(x.shape, np.nan, np.float32)
        bits = _packed(mask_ref)
        if kind == "tfl_avgpool":
            lib.avgpool_grad(ptr(geometry), ratio, ptr(g), ptr(bits), ptr(gx))
            np.testing.assert_allclose(gx, gx_ref, rtol=1e-6, atol=1e-7)
        else:
            lib.maxpool_grad(ptr(geometry), ptr(g), ptr(bits), ptr(x), ptr(gx))
            assert gx.tobytes() == gx_ref.tobytes()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 16), st.integers(1, 16), st.floats(0.05, 20.0), st.integers(-128, 127), st.integers(-128, 127),
       st.integers(0, 2**16))
def test_c_mean_equals_the_numpy_kernel(lib, h, w, ratio, x_zero, y_zero, seed):
    c = 4
    x = np.random.default_rng(seed).integers(-128, 128, (1, c, h, w)).astype(np.int8)
    attrs = dict(x_scale=0.01 * ratio, x_zero=x_zero, y_scale=0.01, y_zero=y_zero, keep_dims=False)
    y_ref, mask_ref = KERNELS["tfl_mean"](Op("m", "tfl_mean", ("x",), ("y", "mask"), make_attrs(**attrs)), [x], 0)
    mult, shift = mean_multiplier(attrs["x_scale"], attrs["y_scale"], h * w)
    params = np.array([c, h * w, x_zero, mult, shift, y_zero], np.int32)
    y = np.zeros(c, np.int8)
    mask = np.full(1, 0xFF, np.uint8)
    lib.mean(ptr(params), ptr(x), ptr(y), ptr(mask))
    assert np.array_equal(y, y_ref.reshape(-1)) and np.array_equal(_unpacked(mask, c), mask_ref.reshape(-1))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 7), st.integers(1, 7), st.integers(0, 2**16))
def test_c_channels_last_flatten_and_its_gradient_equal_the_numpy_kernels(lib, c, h, w, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, c, h, w)).astype(np.int8)
    op = Op("r", "reshape", ("x",), ("y",), make_attrs(channels_last=True))
    (y_ref,) = KERNELS["reshape"](op, [x], 0)
    y = np.zeros(x.size, np.int8)
    lib.mct_nchw_to_nhwc_i8(ptr(x), c, h * w, ptr(y))
    assert np.array_equal(y, y_ref.reshape(-1))
    g = rng.standard_normal((1, x.size)).astype(np.float32)
    back = Op("rg", "reshape_grad", ("g",), ("gx",), make_attrs(channels_last=True, input_shape=x.shape))
    (gx_ref,) = KERNELS["reshape_grad"](back, [g], 0)
    gx = np.zeros(x.shape, np.float32)
    lib.mct_nhwc_to_nchw_f32(ptr(g), c, h * w, ptr(gx))
    assert gx.tobytes() == gx_ref.tobytes()
