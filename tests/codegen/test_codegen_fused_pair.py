"""The block backward's two-channel helpers (c/mct_fused_pair.c) against its one-channel ones
(c/mct_fused_grad.c), bit for bit, with float32 accumulators (the firmware's default).

Why here and not only through generated nets: the small nets of the other fused tests have fewer than
eight channels where the pair helpers have their eight-wide passes (the head's eight output channels,
the tail's eight input channels, the weight gradient's eight columns), and their lazy heads' mask bits
off byte boundaries; these shapes reach every pass and remainder, weights split between SRAM and
Flash, and gradients with zeros, signed zeros and both signs.
"""

from __future__ import annotations


import numpy as np
import pytest

from tests.helpers.c_kernels import kernel_library, ptr

WRAPPER = r"""
#include "mct_fused.h"

static mct_weight weight(const int8_t *flash, int8_t *sram, int rows, int cols, int kept_rows, int kept_cols) {
    const mct_weight w = {flash, sram, rows, cols, 1, kept_rows, kept_cols};
    return w;
}

void heads(const int8_t *flash, int8_t *sram, int rows, int cols, int kept_rows, int kept_cols, int c,
           const float *g, int lazy_on, const float *pooled, const uint8_t *pool_mask, const uint8_t *mask,
           const float *m, int per_channel, int plane, float *pair, float *one) {
    const mct_weight w = weight(flash, sram, rows, cols, kept_rows, kept_cols);
    const mct_lazy_grad lazy = {pooled, pool_mask, 0.0625f, mask, m, per_channel, rows, plane};
    const mct_lazy_grad *l = lazy_on ? &lazy : NULL;
    mct_fg_head2(&w, c, rows, g, l, plane, pair, pair + plane);
    mct_fg_head(&w, c, rows, g, l, plane, one);
    mct_fg_head(&w, c + 1, rows, g, l, plane, one + plane);
}

void tails(const int8_t *flash, int8_t *sram, int rows, int cols, int kept_rows, int kept_cols, int c,
           const float *g0, const float *g1, const float *init, int plane, float *pair, float *one) {
    const mct_weight w = weight(flash, sram, rows, cols, kept_rows, kept_cols);
    mct_fg_tail2(&w, c, g0, g1, init, cols, plane, pair);
    mct_fg_tail(&w, c, g0, init, cols, plane, one);
    mct_fg_tail(&w, c + 1, g1, NULL, cols, plane, one);
}

void updates(const int8_t *x, int in_c, int side, int x_zero, int out_c, const float *g0, const float *g1, int r,
             int8_t *pair, int8_t *one, int rows, int cols, const float *qas) {
    static const float lr = 0.05f;
    mct_conv p = {0};
    p.in_c = in_c, p.in_h = p.in_w = side, p.out_c = out_c, p.out_h = p.out_w = side;
    p.k = p.kw = p.stride = p.stride_w = p.groups = 1, p.x_zero = x_zero;
    mct_update u = {pair, NULL, qas, &lr, 7u, 3u, rows, cols, 1};
    mct_fg_grad_w_update_row2(&p, &u, x, g0, g1, r, 11u);
    u.w = one;
    mct_fg_grad_w_update_row(&p, &u, x, g0, NULL, r, 11u);
    mct_fg_grad_w_update_row(&p, &u, x, g1, NULL, r + 1, 11u);
}
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """The kernel library copied into one folder (so every source includes the float32 header), built."""
    return kernel_library(tmp_path_factory.mktemp("pair"), WRAPPER, "pair", ("mct_fused_grad.c", "mct_fused_pair.c"),
                          float32=True)


def _gradient(rng, *shape) -> np.ndarray:
    """Values of both signs, some exactly zero and some negative zero (the sign of a zero sum counts)."""
    g = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 3, shape)).astype(np.float32)
    g[rng.random(shape) < 0.15] = 0.0
    g[rng.random(shape) < 0.05] = -0.0
    return g


def _weight(rng, rows: int, cols: int, split: bool):
    """(flash, sram copy of the kept slice or None, kept rows, kept cols)."""
    flash = rng.integers(-128, 128, (rows, cols)).astype(np.int8)
    if not split:
        return flash, None, 0, 0
    kept_rows, kept_cols = rows - rows // 3, cols - cols // 4
    sram = np.ascontiguousarray(rng.integers(-128, 128, (kept_rows, kept_cols)).astype(np.int8))
    return flash, sram, kept_rows, kept_cols


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("out_c, plane", [(8, 16), (21, 16), (16, 9), (13, 64)])
@pytest.mark.parametrize("split", [False, True])
def test_head2_equals_two_heads(lib, lazy, out_c, plane, split):
    rng = np.random.default_rng(out_c * plane + lazy)
    cols = 12
    flash, sram, kept_rows, kept_cols = _weight(rng, out_c, cols, split)
    g = _gradient(rng, out_c, plane)
    pooled = _gradient(rng, out_c)
    pool_mask = np.packbits(rng.random(out_c) < 0.8, bitorder="little")
    mask = np.packbits(rng.random(out_c * plane) < 0.7, bitorder="little")
    m = (rng.random(out_c) + 0.5).astype(np.float32)
    for c in (0, kept_cols - 1 if split else 5, cols - 2):  # a pair across the SRAM / Flash split too
        pair, one = np.full((2, plane), np.nan, np.float32), np.full((2, plane), np.nan, np.float32)
        lib.heads(ptr(flash), ptr(sram) if sram is not None else None, out_c, cols, kept_rows, kept_cols, c, ptr(g),
                  int(lazy), ptr(pooled), ptr(pool_mask), ptr(mask), ptr(m), 1, plane, ptr(pair), ptr(one))
        np.testing.assert_array_equal(_bits(pair), _bits(one))


@pytest.mark.parametrize("in_c, plane", [(8, 16), (19, 16), (5, 64), (24, 9)])
@pytest.mark.parametrize("c", [0, 1, 6])
def test_tail2_equals_two_tails(lib, in_c, plane, c):
    rng = np.random.default_rng(in_c * plane + c)
    rows = 8
    flash, sram, kept_rows, kept_cols = _weight(rng, rows, in_c, True)
    g0, g1 = _gradient(rng, plane), _gradient(rng, plane)
    init = _gradient(rng, in_c, plane)
    start = _gradient(rng, in_c, plane)  # the sum of the channels before c (c > 0)
    pair, one = start.copy(), start.copy()
    lib.tails(ptr(flash), ptr(sram), rows, in_c, kept_rows, kept_cols, c, ptr(g0), ptr(g1), ptr(init), plane,
              ptr(pair), ptr(one))
    np.testing.assert_array_equal(_bits(pair), _bits(one))


@pytest.mark.parametrize("in_c, side", [(8, 4), (13, 3), (20, 8)])
@pytest.mark.parametrize("r", [0, 4, 5])  # of 6 trained rows: pairs in them; row r + 1 frozen
def test_grad_w_update_row2_equals_two_rows(lib, in_c, side, r):
    rng = np.random.default_rng(in_c * side + r)
    out_c, rows, cols = 8, 6, in_c - in_c // 4
    x = rng.integers(-128, 128, (in_c, side, side)).astype(np.int8)
    g0, g1 = _gradient(rng, side * side), _gradient(rng, side * side)
    weights = rng.integers(-128, 128, (rows + 1, cols)).astype(np.int8)  # a last row past the trained ones
    qas = (rng.random(rows + 1) + 0.5).astype(np.float32)
    pair, one = weights.copy(), weights.copy()
    lib.updates(ptr(x), in_c, side, -3, out_c, ptr(g0), ptr(g1), r, ptr(pair), ptr(one), rows, cols, ptr(qas))
    np.testing.assert_array_equal(pair, one)
    assert (pair[r] != weights[r]).any()  # the step changed row r: the comparison is not vacuous
    np.testing.assert_array_equal(pair[rows], weights[rows])  # nothing written past the trained rows


def _in_order(g: np.ndarray, v: np.ndarray, order) -> np.float32:
    acc = np.float32(0)
    for q in order:
        acc = np.float32(acc + np.float32(g[q] * v[q]))
    return acc


@pytest.mark.parametrize("side", [4, 5])  # 16 positions: four words; 25: a position after them
def test_grad_w_update_row2_keeps_the_order_of_positions(lib, side):
    """Gradients of +-2^24 next to small ones: a 1x1 weight gradient's sum depends on the order of its
    positions, and lr * qas = 1 makes an order's difference whole units of the updated weights."""
    rng = np.random.default_rng(side)
    in_c, plane, r, rows, cols = 9, side * side, 0, 2, 9
    x = rng.integers(-100, 100, (in_c, plane)).astype(np.int8)
    x[:, 2::4] = x[:, 0::4][:, : x[:, 2::4].shape[1]]  # the big terms of a word cancel
    g0 = np.where(np.arange(plane) % 4 == 0, 2.0**24, np.where(np.arange(plane) % 4 == 2, -(2.0**24), 1.0))
    g0[plane // 4 * 4 :] = 5.0  # the positions after the words: no big term left alone
    g0 = g0.astype(np.float32)
    g1 = (g0 * 3).astype(np.float32)
    v = x.astype(np.int32) + 3  # x_zero = -3
    swapped = [q ^ 1 if q % 4 >= 2 and (q ^ 1) < plane else q for q in range(plane)]  # q + 2 and q + 3 swapped
    assert any(_in_order(g0, v[i], range(plane)) != _in_order(g0, v[i], swapped) for i in range(in_c))
    weights = np.zeros((rows, cols), np.int8)
    qas = np.full(rows, 20.0, np.float32)
    pair, one = weights.copy(), weights.copy()
    lib.updates(ptr(x), in_c, side, -3, 8, ptr(g0), ptr(g1), r, ptr(pair), ptr(one), rows, cols, ptr(qas))
    np.testing.assert_array_equal(pair, one)
