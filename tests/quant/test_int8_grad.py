"""The integer backward's arithmetic (quant/int8_grad.py) against exact rational arithmetic.

Every primitive is checked on values where Python's Fraction gives the true result, so an executor
that follows the definition cannot differ from another by a bit; the torch twins must equal the
NumPy forms sample by sample.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.quant import int8_grad as ig

ints = st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=40)


def _floor(x: Fraction) -> int:
    return math.floor(x)


def _normalize_exact(values: list[Fraction]) -> tuple[list[int], int]:
    peak = max(abs(v) for v in values)
    if peak == 0:
        return [0] * len(values), ig.ZERO_EXPONENT
    e = -200
    while peak > 127 * Fraction(2) ** e:
        e += 1
    return [_floor(v / Fraction(2) ** e + Fraction(1, 2)) for v in values], e


@given(ints, st.integers(-60, 60))
@settings(max_examples=200, deadline=None)
def test_normalize_int_is_the_exact_definition(acc, exponent):
    g, e = ig.normalize_int(np.array(acc), exponent)
    want_g, want_e = _normalize_exact([Fraction(a) * Fraction(2) ** exponent for a in acc])
    assert (g.tolist(), e) == (want_g, want_e)
    assert np.abs(g).max() <= 127
    if any(acc):
        assert np.abs(g).max() >= 64  # canonical: the smallest exponent that fits


@given(ints, st.integers(-60, 60))
@settings(max_examples=100, deadline=None)
def test_normalize_of_values_equals_normalize_int(acc, exponent):
    acc = np.array(acc) >> 10  # float64 holds these exactly
    g, e = ig.normalize(np.ldexp(acc.astype(np.float64), exponent))
    assert (g.tolist(), e) == tuple(x.tolist() if hasattr(x, "tolist") else x for x in ig.normalize_int(acc, exponent))


@given(st.lists(st.integers(-127, 127), min_size=6, max_size=6), st.integers(-40, 10),
       st.lists(st.floats(1e-9, 1e3), min_size=2, max_size=2), st.lists(st.booleans(), min_size=6, max_size=6))
@settings(max_examples=200, deadline=None)
def test_scale_grad_is_exact_and_the_torch_twin_agrees(g, exponent, reals, mask):
    g = np.array(g).reshape(2, 3)  # two channels of three elements
    mask = np.array(mask).reshape(2, 3)
    m, sh = ig.grad_multiplier(np.array(reals))
    out, e = ig.scale_grad(g, exponent, m, sh, mask)
    exact = [Fraction(int(g[c, i]) * int(mask[c, i]) * int(m[c])) * Fraction(2) ** (exponent + int(sh[c]))
             for c in range(2) for i in range(3)]
    assert (out.flatten().tolist(), e) == _normalize_exact(exact)
    v = torch.from_numpy(ig.value(g, exponent))[None]
    twin = ig.scale_grad_torch(v, m, sh, torch.from_numpy(mask)[None])
    assert torch.equal(twin[0], torch.from_numpy(ig.value(out, e)))


def test_grad_multiplier_is_within_its_rounding():
    reals = np.array([1e-12, 0.0371, 0.5, 1.0, 3.9999999, 1234.5])
    m, sh = ig.grad_multiplier(reals)
    assert np.all((m >= 2**14) & (m <= 2**15))
    assert np.all(np.abs(np.ldexp(m.astype(np.float64), sh) / reals - 1) <= 2.0**-15)
    assert ig.grad_multiplier(0.0) == (0, 0)


@given(st.lists(st.integers(-127, 127), min_size=3, max_size=3), st.integers(-30, 30),
       st.lists(st.integers(-127, 127), min_size=3, max_size=3), st.integers(-80, 30))
@settings(max_examples=200, deadline=None)
def test_add_grads_is_the_exact_sum_normalized(ga, ea, gb, eb):
    (ga, ea), (gb, eb) = ig.normalize_int(np.array(ga), ea), ig.normalize_int(np.array(gb), eb)  # canonical
    ga, gb = ga.tolist(), gb.tolist()
    g, e = ig.add_grads(np.array(ga), ea, np.array(gb), eb)
    exact = [Fraction(a) * Fraction(2) ** ea + Fraction(b) * Fraction(2) ** eb for a, b in zip(ga, gb)]
    assert (g.tolist(), e) == _normalize_exact(exact)


@given(st.integers(-(2**61), 2**61), st.integers(-40, 70), st.integers(0, 2**32 - 1))
@settings(max_examples=400, deadline=None)
def test_shift_round_is_floor_of_the_exact_sum(p, s, r):
    got = int(ig.shift_round(np.array([p]), s, np.array([r], dtype=np.uint64))[0])
    nearest = int(ig.shift_round(np.array([p]), s)[0])
    if s < 0:
        want = max(-(2**33), min(2**33, p * 2**-s))
        assert got == nearest == want
        return
    q = p >> (s - 62) if s > 62 else p
    s = min(s, 62)
    x = Fraction(q, 2**s)
    assert got == _floor(x + Fraction(r >> 8, 2**24))
    assert nearest == _floor(x + Fraction(1, 2))


def test_stochastic_update_is_unbiased_over_the_stream():
    """A step of 0.3 LSB moves about 30% of 20,000 weights by one (the float32 rule's expectation)."""
    n = 20000
    from mcutrain.quant.rng import uniform_u32

    m_c, x_c = ig.update_factor(0.01, np.float32(30.0))  # lr * qas = 0.3
    w = ig.update_weight(np.zeros(n, np.int8), np.full(n, -1), 0, m_c, x_c, uniform_u32(0, 1, 5, n))
    assert set(np.unique(w).tolist()) <= {0, 1}
    assert abs(w.mean() - 0.3) < 0.01


def test_update_factor_is_the_float32_product_exactly():
    m, x = ig.update_factor(0.0123, np.array([1.0, 77.7, 0.0], np.float32))
    c = np.float32(0.0123) * np.array([1.0, 77.7, 0.0], np.float32)
    assert np.array_equal(np.ldexp(m.astype(np.float64), x), c.astype(np.float64))
    assert np.all(np.abs(m) < 2**24)


def test_bias_update_rounds_to_nearest_and_saturates():
    b = ig.update_bias(np.array([5, 2**31 - 2, 0], np.int32), np.array([3, -(2**20), 1]), 0,
                       np.array([1, 1, 1]), np.array([-1, 20, -2]))
    assert b.tolist() == [5 + math.floor(-1.5 + 0.5), 2**31 - 1, math.floor(-0.25 + 0.5)]


@given(st.lists(st.integers(-(2**20), 2**20), min_size=8, max_size=8), st.integers(-30, 30))
@settings(max_examples=100, deadline=None)
def test_normalize_torch_is_per_sample(acc, exponent):
    acc = np.array(acc).reshape(2, 4)
    v = torch.from_numpy(np.ldexp(acc.astype(np.float64), exponent))
    out = ig.normalize_torch(v)
    for n in range(2):
        g, e = ig.normalize_int(acc[n], exponent)
        assert torch.equal(out[n], torch.from_numpy(ig.value(g, e)))
        assert ig.exponent_torch(out)[n] == e


@given(st.lists(st.integers(-127, 127), min_size=4, max_size=4), st.integers(-60, 30),
       st.lists(st.integers(-127, 127), min_size=4, max_size=4), st.integers(-60, 30))
@settings(max_examples=200, deadline=None)
def test_add_grads_torch_is_per_sample(ga, ea, gb, eb):
    a = np.array(ga).reshape(2, 2)
    b = np.array(gb).reshape(2, 2)
    canon = [(ig.normalize_int(a[n], ea + 50 * n), ig.normalize_int(b[n], eb)) for n in range(2)]
    va = torch.from_numpy(np.stack([ig.value(*ca) for ca, _ in canon]))
    vb = torch.from_numpy(np.stack([ig.value(*cb) for _, cb in canon]))
    out = ig.add_grads_torch(va, vb)
    for n, ((g1, e1), (g2, e2)) in enumerate(canon):
        assert torch.equal(out[n], torch.from_numpy(ig.value(*ig.add_grads(g1, e1, g2, e2))))


def test_scale_grad_torch_takes_one_scalar_factor():
    g, e = ig.normalize_int(np.array([[5, -100, 7], [64, 0, -3]]), -4)
    m, sh = ig.grad_multiplier(0.3)
    twin = ig.scale_grad_torch(torch.from_numpy(ig.value(g, e))[None], m, sh)
    assert torch.equal(twin[0], torch.from_numpy(ig.value(*ig.scale_grad(g, e, m, sh))))
