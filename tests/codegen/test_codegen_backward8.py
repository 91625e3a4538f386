"""The integer backward's C kernels (c/mct_backward8.c) against the spec (quant/int8_grad.py) over random
geometry: any kh x kw up to 7, strides 1 or 2 per axis, any padding below the kernel, regular, depthwise
and 1x1 convs, the classifier, the pool, fan-out sums and the updates. Bit for bit: every sum is exact,
so the reference is torch's float64 transposed conv / correlation on integers (exact below 2**53)
followed by the spec's normalization."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.quant import int8_grad as ig
from mcutrain.quant.rng import uniform_u32
from mcutrain.quant.sim_ops import input_grad, partial_weight_grad
from tests.helpers.c_kernels import kernel_library, ptr
from tests.helpers.windows import draw_window, random_conv

WRAPPER = r"""
#include "mct_backward8.h"

/* g: in_c in_h in_w out_c out_h out_w kh sh pad_top groups kw sw pad_left x_zero */
static mct_conv conv_of(const int32_t *g, const int8_t *w) {
    mct_conv p = {.in_c = g[0], .in_h = g[1], .in_w = g[2], .out_c = g[3], .out_h = g[4], .out_w = g[5], .k = g[6],
                  .stride = g[7], .pad = g[8], .groups = g[9], .kw = g[10], .stride_w = g[11], .pad_left = g[12],
                  .x_zero = g[13]};
    p.w.flash = w;
    p.w.sram = NULL;
    p.w.rows = g[3];
    p.w.cols = g[9] > 1 ? 1 : g[0];
    p.w.inner = g[6] * g[10];
    return p;
}

int32_t grad_x(const int32_t *g, const int8_t *w, const int8_t *g_out, int32_t e, const int8_t *init,
               int32_t e_init, int8_t *out, int8_t *scratch) {
    const mct_conv p = conv_of(g, w);
    return mct_g8_conv2d_grad_x(&p, g_out, e, init, e_init, out, scratch);
}

void grad_w(const int32_t *g, const int8_t *x, const int8_t *g_out, int32_t *out) {
    const mct_conv p = conv_of(g, NULL);
    mct_g8_conv2d_grad_w(&p, x, g_out, g[3], g[9] > 1 ? 1 : g[0], out);
}

static mct_linear linear_of(int32_t in_f, int32_t out_f, int32_t x_zero, const int8_t *w) {
    mct_linear p = {.in_features = in_f, .out_features = out_f, .x_zero = x_zero};
    p.w.flash = w;
    p.w.sram = NULL;
    p.w.rows = out_f;
    p.w.cols = in_f;
    p.w.inner = 1;
    return p;
}

int32_t linear_x(int32_t in_f, int32_t out_f, const int8_t *w, const int8_t *g, int32_t e, int8_t *out) {
    const mct_linear p = linear_of(in_f, out_f, 0, w);
    return mct_g8_linear_grad_x(&p, g, e, out);
}

void linear_w(int32_t in_f, int32_t out_f, int32_t x_zero, const int8_t *g, const int8_t *x, int32_t *out) {
    const mct_linear p = linear_of(in_f, out_f, x_zero, NULL);
    mct_g8_linear_grad_w(&p, g, x, out);
}

void update(int8_t *w, int32_t *b, const float *qas, float lr, int32_t rows, int32_t cols, const int32_t *g,
            const int32_t *gb, int32_t e, uint32_t step) {
    const mct_update uw = {.w = w, .qas = qas, .lr = &lr, .seed = 7, .tensor_id = 3, .rows = rows, .cols = cols,
                           .inner = 1};
    const mct_update ub = {.b = b, .qas = qas, .lr = &lr, .seed = 7, .tensor_id = 3, .rows = rows, .cols = 1,
                           .inner = 1};
    mct_g8_update_weight(&uw, g, e, step);
    mct_g8_update_bias(&ub, gb, e);
}
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return kernel_library(tmp_path_factory.mktemp("backward8_kernels"), WRAPPER, "backward8")


@st.composite
def _cases(draw):
    (kh, kw), (sh, sw), pads, (h, w) = draw_window(draw, 7, 2, 10)
    kind = draw(st.sampled_from(["general", "depthwise", "pointwise"]))
    if kind == "pointwise":
        (kh, kw), (sh, sw), pads = (1, 1), (1, 1), (0, 0, 0, 0)
    return (kh, kw), (sh, sw), pads, (h, w), kind, draw(st.integers(0, 2**16))


@settings(max_examples=60, deadline=None)
@given(_cases())
def test_conv_gradients_equal_the_spec(lib, case):
    (kh, kw), (sh, sw), pads, (h, w), kind, seed = case
    c = 3
    x, weight, (ho, wo), groups, rng = random_conv(seed, (kh, kw), (sh, sw), pads, (h, w), kind == "depthwise", c, 5)
    o = weight.shape[0]
    g, e = ig.normalize_int(rng.integers(-(2**20), 2**20, (1, o, ho, wo)) * (rng.random((1, o, ho, wo)) > 0.3),
                            int(rng.integers(-50, 0)))
    geometry = np.array([c, h, w, o, ho, wo, kh, sh, pads[0], groups, kw, sw, pads[2], 5], np.int32)

    exact = input_grad(x.shape, torch.from_numpy(weight.astype(np.float64)), torch.from_numpy(g.astype(np.float64)),
                       (sh, sw), groups, pads).numpy()
    want_g, want_e = ig.normalize_int(exact.astype(np.int64), e)
    gx = np.zeros(x.shape, np.int8)
    got_e = lib.grad_x(ptr(geometry), ptr(weight), ptr(g), e, None, 0, ptr(gx), None)
    assert (got_e, gx.tolist()) == (want_e, want_g.tolist())
    if kind == "pointwise":  # accumulated into a fan-out's gradient, in place: add_grads(init, that)
        init, e_init = ig.normalize_int(rng.integers(-(2**12), 2**12, x.shape), int(rng.integers(-60, 0)))
        want_sum = ig.add_grads(init, e_init, want_g, want_e)
        got_e = lib.grad_x(ptr(geometry), ptr(weight), ptr(g), e, ptr(init), e_init, ptr(init), None)
        assert (got_e, init.tolist()) == (want_sum[1], want_sum[0].tolist())
    if kind == "depthwise" and (h, w) == (ho, wo):  # in place over its gradient, through one channel
        g_copy = g.copy()
        got_e = lib.grad_x(ptr(geometry), ptr(weight), ptr(g_copy), e, None, 0, ptr(g_copy),
                           ptr(np.zeros(h * w, np.int8)))
        assert (got_e, g_copy.tolist()) == (want_e, want_g.tolist())

    xz = torch.from_numpy(x.astype(np.float64) - 5)
    want_w = partial_weight_grad(xz, torch.from_numpy(weight.astype(np.float64)),
                                 torch.from_numpy(g.astype(np.float64)),
                                 (sh, sw), groups, c, pads).numpy()
    gw = np.zeros(weight.shape, np.int32)
    lib.grad_w(ptr(geometry), ptr(x), ptr(g), ptr(gw))
    assert np.array_equal(gw, want_w.astype(np.int64))


def test_classifier_gradients_equal_the_spec(lib):
    rng = np.random.default_rng(1)
    k, features = 10, 37
    w = rng.integers(-127, 128, (k, features)).astype(np.int8)
    x = rng.integers(-128, 128, features).astype(np.int8)
    g, e = ig.normalize_int(rng.integers(-1000, 1000, k), -20)
    out = np.zeros(features, np.int8)
    got_e = lib.linear_x(features, k, ptr(w), ptr(g), e, ptr(out))
    want_g, want_e = ig.normalize_int(g.astype(np.int64) @ w.astype(np.int64), e)
    assert (got_e, out.tolist()) == (want_e, want_g.tolist())
    gw = np.zeros((k, features), np.int32)
    lib.linear_w(features, k, -3, ptr(g), ptr(x), ptr(gw))
    assert np.array_equal(gw, np.outer(g.astype(np.int64), x.astype(np.int64) + 3))


def test_updates_equal_the_spec(lib):
    rng = np.random.default_rng(2)
    rows, cols, step, e = 6, 9, 11, -30
    w = rng.integers(-127, 128, (rows, cols)).astype(np.int8)
    b = rng.integers(-(10**6), 10**6, rows).astype(np.int32)
    qas = np.exp(rng.uniform(0, 20, rows)).astype(np.float32)
    qas[2] = 0.0  # a frozen channel never moves
    g = rng.integers(-(2**27), 2**27, (rows, cols)).astype(np.int32)
    gb = rng.integers(-(2**20), 2**20, rows).astype(np.int32)
    lr = np.float32(0.01)
    m, xc = ig.update_factor(lr, qas)
    words = uniform_u32(7, step, 3, w.size).reshape(w.shape)
    want_w = ig.update_weight(w, g, e, m[:, None], xc[:, None], words)
    want_b = ig.update_bias(b, gb, e, m, xc)
    w0 = w.copy()
    lib.update(ptr(w), ptr(b), ptr(qas), ctypes.c_float(lr), rows, cols, ptr(g), ptr(gb), e, step)
    assert np.array_equal(w, want_w) and np.array_equal(b, want_b)
    assert np.array_equal(w[2], w0[2]) and not np.array_equal(w, w0)  # the frozen row alone stays


@pytest.mark.parametrize("k", [3, 5])
def test_in_place_depthwise_input_gradient_goes_through_one_channel(lib, k):
    """A stride-1 'same' depthwise conv written over its own gradient: the result must equal the out-of-place one."""
    rng = np.random.default_rng(k)
    c, h, w = 4, 6, 7
    weight = rng.integers(-127, 128, (c, 1, k, k)).astype(np.int8)
    g, e = ig.normalize_int(rng.integers(-(2**15), 2**15, (1, c, h, w)), -9)
    geometry = np.array([c, h, w, c, h, w, k, 1, k // 2, c, k, 1, k // 2, 0], np.int32)
    want = np.zeros(g.shape, np.int8)
    want_e = lib.grad_x(ptr(geometry), ptr(weight), ptr(g), e, None, 0, ptr(want), None)
    inplace = g.copy()
    scratch = np.zeros(h * w, np.int8)
    got_e = lib.grad_x(ptr(geometry), ptr(weight), ptr(inplace), e, None, 0, ptr(inplace), ptr(scratch))
    assert got_e == want_e and np.array_equal(inplace, want)
