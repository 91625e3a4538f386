"""Fixed-point primitives: NumPy == torch == a pure-Python integer model, plus accuracy bounds."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.quant import fixedpoint as fp
from mcutrain.quant import int8_ops

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
int32s = st.integers(I32_MIN, I32_MAX)
multipliers = st.one_of(st.just(0), st.integers(2**30, 2**31 - 1), st.integers(0, I32_MAX))
shifts = st.integers(fp.MIN_SHIFT, fp.MAX_SHIFT)
SETTINGS = settings(max_examples=300, deadline=None)
EXTREMES = np.array([I32_MIN, I32_MIN + 1, -(2**30), -2, -1, 0, 1, 2, 2**30, I32_MAX - 1, I32_MAX], dtype=np.int64)
MODELS = Path("/work/shared/upstream/mcu_models")


# ---------------------------------------------------------------- pure-Python model of the spec


def round_half_away(f: Fraction) -> int:
    n = math.floor(abs(f) + Fraction(1, 2))
    return n if f >= 0 else -n


def ref_srdhm(a: int, b: int) -> int:
    """The saturating doubling high multiply as mathematics: floor(a*b/2**31 + 1/2), saturated."""
    return min(math.floor(Fraction(a * b, 2**31) + Fraction(1, 2)), I32_MAX)


def ref_srdhm_gemmlowp(a: int, b: int) -> int:
    """The gemmlowp C code, transcribed: nudge, then truncating division."""
    if a == b == I32_MIN:
        return I32_MAX
    ab = a * b
    q = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    return q // 2**31 if q >= 0 else -((-q) // 2**31)


def ref_rdbpot(x: int, e: int) -> int:
    return round_half_away(Fraction(x, 2**e))


def ref_mbqm(x: int, m: int, s: int) -> int:
    left, right = max(s, 0), max(-s, 0)
    shifted = min(max(x * 2**left, I32_MIN), I32_MAX)
    return ref_rdbpot(ref_srdhm(shifted, m), right)


def ref_round1(x: int, m: int, s: int) -> int:
    return min(max(round_half_away(Fraction(x * m, 2 ** (31 - s))), I32_MIN), I32_MAX)


def t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.int64))


# ---------------------------------------------------------------- quantize_multiplier


@SETTINGS
@given(st.floats(min_value=2.0**-32, max_value=2.0**29, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_reconstructs_real_within_2_pow_minus_31(real):
    m, s = fp.quantize_multiplier(real)
    assert 2**30 <= m < 2**31 and fp.MIN_SHIFT <= s <= fp.MAX_SHIFT
    back = Fraction(m) * Fraction(2) ** (s - 31)
    assert abs(back - Fraction(real)) <= Fraction(real) / 2**31  # ~4.7e-10 relative


def test_quantize_multiplier_special_values():
    assert fp.quantize_multiplier(0.0) == (0, 0)
    assert fp.quantize_multiplier(1.0) == (2**30, 1)
    assert fp.quantize_multiplier(0.5) == (2**30, 0)
    assert fp.quantize_multiplier(0.75) == (3 * 2**29, 0)
    assert fp.quantize_multiplier(3.0) == (3 * 2**29, 2)
    # q * 2**31 rounds up to 2**31: the multiplier is halved and the shift bumped
    assert fp.quantize_multiplier(1.0 - 2.0**-33) == (2**30, 1)
    # smallest real that keeps shift >= -31, and the first that underflows to an exact zero
    assert fp.quantize_multiplier(2.0**-32) == (2**30, -31)
    assert fp.quantize_multiplier(2.0**-33) == (0, 0)
    assert fp.quantize_multiplier(1e-300) == (0, 0)
    for bad in (-1e-3, math.nan, math.inf, 2.0**31):
        with pytest.raises(ValueError):
            fp.quantize_multiplier(bad)


def test_quantize_multiplier_vectorised_matches_scalar():
    reals = np.array([0.0, 1e-12, 2.0**-32, 1e-9, 0.0123, 0.5, 0.99999, 1.0, 7.5, 1000.0], dtype=np.float64)
    m, s = fp.quantize_multiplier(reals)
    assert m.dtype == np.int32 and s.dtype == np.int32 and m.shape == reals.shape
    assert [fp.quantize_multiplier(float(r)) for r in reals] == list(zip(m.tolist(), s.tolist()))
    np.testing.assert_array_equal(fp.quantize_multiplier(reals.astype(np.float32))[0],
                                  fp.quantize_multiplier(reals.astype(np.float32).astype(np.float64))[0])


# ---------------------------------------------------------------- SRDHM


@SETTINGS
@given(st.lists(st.tuples(int32s, int32s), min_size=1, max_size=50))
def test_srdhm_numpy_torch_and_reference_agree(pairs):
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int64)
    got = fp.saturating_rounding_doubling_high_mul(a, b)
    assert got.dtype == np.int32
    expected = [ref_srdhm(int(x), int(y)) for x, y in zip(a, b)]
    assert got.tolist() == expected
    assert [ref_srdhm_gemmlowp(int(x), int(y)) for x, y in zip(a, b)] == expected
    assert fp.saturating_rounding_doubling_high_mul_torch(t(a), t(b)).tolist() == expected


def test_srdhm_extremes_and_saturation():
    a, b = np.meshgrid(EXTREMES, EXTREMES)
    got = fp.saturating_rounding_doubling_high_mul(a, b)
    expected = np.vectorize(ref_srdhm_gemmlowp, otypes=[np.int64])(a, b)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(fp.saturating_rounding_doubling_high_mul_torch(t(a), t(b)).numpy(), got)
    assert fp.saturating_rounding_doubling_high_mul(I32_MIN, I32_MIN) == I32_MAX
    # ties: +0.5 rounds up, -0.5 rounds towards zero (half towards +inf)
    assert fp.saturating_rounding_doubling_high_mul(2**30, 1) == 1
    assert fp.saturating_rounding_doubling_high_mul(-(2**30), 1) == 0
    assert fp.saturating_rounding_doubling_high_mul(-(2**30) - 1, 1) == -1


def test_srdhm_equals_cmsis_smlal_form_off_the_saturating_case():
    rng = np.random.default_rng(1)
    a = rng.integers(I32_MIN, I32_MAX, 200_000, endpoint=True)
    b = rng.integers(I32_MIN + 1, I32_MAX, 200_000, endpoint=True)
    cmsis = (a * b + (1 << 30)) >> 31  # arm_nn_doubling_high_mult_no_sat: floor((ab + 2**30) / 2**31)
    np.testing.assert_array_equal(fp.saturating_rounding_doubling_high_mul(a, b), cmsis)


def test_srdhm_rejects_values_outside_int32():
    with pytest.raises(ValueError):
        fp.saturating_rounding_doubling_high_mul(np.array([2**31]), 1)


# ---------------------------------------------------------------- RDBPOT


@SETTINGS
@given(st.lists(st.tuples(int32s, st.integers(0, 31)), min_size=1, max_size=50))
def test_rdbpot_rounds_half_away_from_zero(pairs):
    x = np.array([p[0] for p in pairs], dtype=np.int64)
    e = np.array([p[1] for p in pairs], dtype=np.int64)
    expected = [ref_rdbpot(int(v), int(k)) for v, k in zip(x, e)]
    assert fp.rounding_divide_by_pot(x, e).tolist() == expected
    assert fp.rounding_divide_by_pot_torch(t(x), t(e)).tolist() == expected


def test_rdbpot_ties_and_extremes():
    assert fp.rounding_divide_by_pot(np.array([3, -3, 1, -1, 5, -5, 2, -2]), 1).tolist() == [2, -2, 1, -1, 3, -3, 1, -1]
    for e in range(32):
        got = fp.rounding_divide_by_pot(EXTREMES, e)
        assert got.tolist() == [ref_rdbpot(int(v), e) for v in EXTREMES]
        assert fp.rounding_divide_by_pot_torch(t(EXTREMES), e).tolist() == got.tolist()
    with pytest.raises(ValueError):
        fp.rounding_divide_by_pot(1, 32)


# ---------------------------------------------------------------- MultiplyByQuantizedMultiplier


@SETTINGS
@given(st.lists(st.tuples(int32s, multipliers, shifts), min_size=1, max_size=40))
def test_mbqm_numpy_torch_and_reference_agree(triples):
    x, m, s = (np.array(c, dtype=np.int64) for c in zip(*triples))
    expected = [ref_mbqm(int(a), int(b), int(c)) for a, b, c in triples]
    got = fp.multiply_by_quantized_multiplier(x, m, s)
    assert got.dtype == np.int32 and got.tolist() == expected
    assert fp.multiply_by_quantized_multiplier_torch(t(x), t(m), t(s)).tolist() == expected


def test_mbqm_large_random_batch_numpy_equals_torch():
    rng = np.random.default_rng(2)
    n = 300_000
    x = np.concatenate([rng.integers(I32_MIN, I32_MAX, n, endpoint=True), np.repeat(EXTREMES, 31 + 31)])
    m = np.concatenate([rng.integers(2**30, 2**31, n), np.tile(np.array([2**30, 2**31 - 1]), (x.size - n) // 2)])
    s = np.concatenate([rng.integers(-31, 31, n), np.tile(np.arange(-31, 31), EXTREMES.size)])
    got = fp.multiply_by_quantized_multiplier(x, m, s)
    np.testing.assert_array_equal(fp.multiply_by_quantized_multiplier_torch(t(x), t(m), t(s)).numpy(), got)
    idx = rng.choice(x.size, 2000, replace=False)
    assert got[idx].tolist() == [ref_mbqm(int(x[i]), int(m[i]), int(s[i])) for i in idx]


@settings(max_examples=400, deadline=None)
@given(
    st.floats(min_value=2.0**-40, max_value=2.0**20, allow_nan=False, allow_infinity=False),
    st.integers(-(2**31), 2**31 - 1),
)
def test_mbqm_of_quantized_real_is_within_bound_of_exact_product(real, acc):
    """Proven bound: |MBQM(acc, Q(r)) - acc*r| <= 0.75 + |acc*r| * 2**-31 (no saturation).

    Hence for |acc*r| < 2**29 the result is within 1 of round(acc*r) (and often equal).
    """
    m, s = fp.quantize_multiplier(real)
    if abs(acc) * 2 ** max(s, 0) >= 2**31:  # the left shift would saturate: outside the bound
        acc = int(np.sign(acc)) * ((2**31 - 1) >> max(s, 0))
    exact = Fraction(acc) * Fraction(real)
    got = int(fp.multiply_by_quantized_multiplier(acc, m, s))
    assert got == ref_mbqm(acc, m, s)
    assert abs(got - exact) <= Fraction(3, 4) + abs(exact) / 2**31
    if abs(exact) < 2**29:
        assert abs(got - round_half_away(exact)) <= 1


def test_mbqm_is_usually_the_correctly_rounded_product():
    rng = np.random.default_rng(3)
    reals = np.exp(rng.uniform(np.log(1e-5), np.log(0.5), 50_000))
    acc = rng.integers(-(2**20), 2**20, 50_000)
    m, s = fp.quantize_multiplier(reals)
    got = fp.multiply_by_quantized_multiplier(acc, m, s).astype(np.int64)
    prod = acc * reals
    exact = np.sign(prod) * np.floor(np.abs(prod) + 0.5)
    assert np.abs(got - exact).max() <= 1
    # Double rounding: every miss is an exact tie of the second rounding (RDBPOT), after SRDHM rounded
    # the product onto a half-way point. With right shifts between 1 and 17 that is ~3% of the draws.
    right = np.maximum(-s, 0).astype(np.int64)
    high = fp.saturating_rounding_doubling_high_mul(acc, m).astype(np.int64)
    second_tie = (right > 0) & ((high & ((1 << right) - 1)) == (1 << np.maximum(right - 1, 0)))
    assert not np.any((got != exact) & ~second_tie)
    assert (got == exact).mean() > 0.95


def test_mbqm_saturates_the_left_shift():
    # 2**30 * 2**5 saturates to INT32_MAX (TFLite would overflow), then * 0.5 rounds half up
    assert fp.multiply_by_quantized_multiplier(2**30, 2**30, 5) == 2**30
    assert fp.multiply_by_quantized_multiplier(-(2**30), 2**30, 5) == -(2**30)  # saturates to -2**31
    assert fp.multiply_by_quantized_multiplier(2**30, 2**31 - 1, 5) == I32_MAX - 1
    with pytest.raises(ValueError):
        fp.multiply_by_quantized_multiplier(1, 2**30, 31)
    with pytest.raises(ValueError):
        fp.multiply_by_quantized_multiplier(1, 2**30, -32)


# ---------------------------------------------------------------- single-rounding multiply


@SETTINGS
@given(st.lists(st.tuples(int32s, multipliers, shifts), min_size=1, max_size=40))
def test_single_round_numpy_torch_and_reference_agree(triples):
    x, m, s = (np.array(c, dtype=np.int64) for c in zip(*triples))
    expected = [ref_round1(int(a), int(b), int(c)) for a, b, c in triples]
    assert fp.multiply_by_quantized_multiplier_single_round(x, m, s).tolist() == expected
    assert fp.multiply_by_quantized_multiplier_single_round_torch(t(x), t(m), t(s)).tolist() == expected


# ---------------------------------------------------------------- requantize


def test_requantize_per_channel_matches_elementwise_reference_and_torch():
    rng = np.random.default_rng(4)
    acc = rng.integers(-(2**21), 2**21, (3, 5, 4, 4)).astype(np.int32)
    acc[0, 0, 0, :] = [I32_MIN, I32_MAX, 0, -1]
    reals = np.array([1e-4, 3e-3, 0.02, 0.7, 0.0])
    m, s = fp.quantize_multiplier(reals)
    y, inside = fp.requantize_with_mask(acc, m, s, zero_point=-5, qmin=-128, qmax=127)
    assert y.dtype == np.int8 and inside.dtype == np.bool_ and y.shape == acc.shape
    for idx in np.ndindex(acc.shape):
        c = idx[1]
        v = ref_mbqm(int(acc[idx]), int(m[c]), int(s[c])) - 5
        assert y[idx] == min(max(v, -128), 127)
        assert inside[idx] == (-128 < v < 127)
    yt, it = fp.requantize_with_mask_torch(torch.from_numpy(acc), m, s, -5, -128, 127)
    np.testing.assert_array_equal(yt.numpy(), y)
    np.testing.assert_array_equal(it.numpy(), inside)
    assert np.all(y[:, 4] == -5)  # a zero multiplier (degenerate channel) outputs the zero point
    np.testing.assert_array_equal(fp.requantize(acc, m, s, -5), y)


def test_requantize_channel_last_and_per_tensor():
    rng = np.random.default_rng(5)
    acc = rng.integers(-(2**16), 2**16, (7, 6)).astype(np.int64)
    m, s = fp.quantize_multiplier(np.linspace(1e-3, 0.1, 6))
    last = fp.requantize(acc, m, s, 3, channel_axis=-1)
    first = fp.requantize(acc.T.copy(), m, s, 3, channel_axis=0)
    np.testing.assert_array_equal(last, first.T)
    np.testing.assert_array_equal(fp.requantize_torch(torch.from_numpy(acc), m, s, 3, channel_axis=-1).numpy(), last)
    m0, s0 = fp.quantize_multiplier(0.01)
    per_tensor = fp.requantize(acc, m0, s0, 0)
    np.testing.assert_array_equal(per_tensor, fp.requantize(acc, np.full(6, m0), np.full(6, s0), 0, channel_axis=1))
    with pytest.raises(ValueError):
        fp.requantize(acc, m[:5], s[:5], 0, channel_axis=1)


def test_requantize_relu6_clamp_mask_is_strict():
    # ReLU6 folded: qmin = zero point = -128. Values landing exactly on qmin or qmax are outside.
    m, s = fp.quantize_multiplier(1.0)
    acc = np.array([[-5, 0, 1, 254, 255, 256, 1000]])
    y, inside = fp.requantize_with_mask(acc, m, s, zero_point=-128, qmin=-128, qmax=127, channel_axis=0)
    assert y.tolist() == [[-128, -128, -127, 126, 127, 127, 127]]
    assert inside.tolist() == [[False, False, True, True, False, False, False]]


def test_requantize_saturates_int64_accumulators_and_float_tensors_work():
    m, s = fp.quantize_multiplier(2.0**-24)
    acc = np.array([2**40, -(2**40), 2**31 - 1 + 12345])
    y = fp.requantize(acc, m, s, 0, channel_axis=0)
    assert y.tolist() == [127, -128, 127]
    exact_float = torch.tensor([3.0 * 2**24, -5.0 * 2**24, 100.0], dtype=torch.float64)
    assert fp.requantize_torch(exact_float, m, s, 1, channel_axis=0).tolist() == [4, -4, 1]


# ---------------------------------------------------------------- residual add


ADD_CASES = [
    (0.05, 3, 0.1, -2, 0.12, 5),
    (0.0575, 0, 0.1065, 12, 0.1065, 12),
    (0.0894, 23, 0.1106, -2, 0.13, 1),
    (0.02, -128, 0.02, -128, 0.04, -128),
    (0.3, 10, 0.001, 0, 0.3, 10),
]


@pytest.mark.parametrize("case", ADD_CASES)
def test_quantized_add_all_int8_pairs(case):
    s_a, z_a, s_b, z_b, s_y, z_y = case
    p = int8_ops.add_params(s_a, z_a, s_b, z_b, s_y, z_y)
    a = np.arange(-128, 128, dtype=np.int8)[:, None].repeat(256, 1)
    b = a.T.copy()
    y, inside = int8_ops.quantized_add_with_mask(a, b, p)
    yt, it = int8_ops.quantized_add_with_mask_torch(torch.from_numpy(a), torch.from_numpy(b), p)
    np.testing.assert_array_equal(yt.numpy(), y)
    np.testing.assert_array_equal(it.numpy(), inside)
    real = (s_a * (a.astype(np.float64) - z_a) + s_b * (b.astype(np.float64) - z_b)) / s_y
    v = np.sign(real) * np.floor(np.abs(real) + 0.5) + z_y
    assert np.abs(y - np.clip(v, -128, 127)).max() <= 1
    off_tie = np.abs(np.abs(real) % 1 - 0.5) > 1e-6  # float64 cannot place exact ties reliably
    assert (y == np.clip(v, -128, 127))[off_tie].mean() > 0.98
    # the mask follows the pre-clamp value; away from the boundary it matches the float reference
    assert not inside[(real + z_y > 128)].any() and not inside[(real + z_y < -129)].any()
    assert inside[(real + z_y > -126) & (real + z_y < 125)].all()


def test_add_params_formula_and_validation():
    p = int8_ops.add_params(0.05, 3, 0.1, -2, 0.12, 5)
    assert p.left_shift == 20
    assert fp.dequantize_multiplier(p.a_multiplier, p.a_shift) == pytest.approx(0.05 / 0.2, rel=1e-9)
    assert fp.dequantize_multiplier(p.b_multiplier, p.b_shift) == pytest.approx(0.5, rel=1e-9)
    assert fp.dequantize_multiplier(p.out_multiplier, p.out_shift) == pytest.approx(0.2 / (2**20 * 0.12), rel=1e-9)
    with pytest.raises(ValueError):
        int8_ops.add_params(0.0, 0, 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError):
        int8_ops.add_params(0.1, 200, 0.1, 0, 0.1, 0)
    with pytest.raises(AttributeError):
        p.left_shift = 3  # frozen


# ---------------------------------------------------------------- average pool


@pytest.mark.parametrize("count", [1, 2, 3, 4, 9, 16, 25, 36, 49, 64, 100, 196, 1024, 4096])
def test_avgpool_same_scale_is_exact_rounded_division(count):
    """Exhaustive over every reachable sum: rescale == round_half_away(sum / count) (TFLite AVERAGE_POOL)."""
    p = int8_ops.avgpool_params(0.037, 0, 0.037, 0, count, qmin=-128, qmax=127)
    sums = np.arange(-255 * count, 255 * count + 1, dtype=np.int64)
    q = np.abs(sums) // count
    r = np.abs(sums) - q * count
    exact = np.sign(sums) * (q + (2 * r >= count))
    y, _ = int8_ops.avgpool_sum_rescale(sums, p)
    np.testing.assert_array_equal(y, np.clip(exact, -128, 127))
    yt, _ = int8_ops.avgpool_sum_rescale_torch(torch.from_numpy(sums), p)
    np.testing.assert_array_equal(yt.numpy(), y)


def test_avgpool_general_scales_numpy_torch_and_float_reference():
    rng = np.random.default_rng(6)
    for (n, c, h, w), s_x, z_x, s_y, z_y in [((4, 160, 4, 4), 0.11, -3, 0.147, -1), ((2, 96, 5, 5), 0.09, 7, 0.05, 2),
                                             ((3, 8, 7, 7), 0.2, -128, 0.2, -128)]:
        x = rng.integers(-128, 128, (n, c, h, w)).astype(np.int8)
        y, inside = int8_ops.avgpool_int8_with_mask(x, z_x, s_x, s_y, z_y)
        assert y.shape == (n, c) and y.dtype == np.int8
        yt, it = int8_ops.avgpool_int8_with_mask_torch(torch.from_numpy(x), z_x, s_x, s_y, z_y)
        np.testing.assert_array_equal(yt.numpy(), y)
        np.testing.assert_array_equal(it.numpy(), inside)
        real = (x.astype(np.float64) - z_x).mean(axis=(2, 3)) * s_x / s_y
        v = np.sign(real) * np.floor(np.abs(real) + 0.5) + z_y
        assert np.abs(y - np.clip(v, -128, 127)).max() <= 1
        np.testing.assert_array_equal(inside, (v > -128) & (v < 127))


def test_avgpool_validation():
    with pytest.raises(ValueError):
        int8_ops.avgpool_int8(np.zeros((1, 2, 3), np.int8), 0, 0.1, 0.1, 0)
    with pytest.raises(ValueError):
        int8_ops.avgpool_params(0.1, 0, 0.0, 0, 16)
    with pytest.raises(ValueError):
        int8_ops.avgpool_params(0.1, 0, 0.1, 0, 2**16 + 1)


# ---------------------------------------------------------------- the paper's models


def _convs(model: dict) -> list[dict]:
    convs = [model["first_conv"]]
    for block in model["blocks"]:
        convs += [block[k] for k in ("pointwise1", "depthwise", "pointwise2") if block[k] is not None]
    return convs


def test_every_multiplier_of_the_paper_models_encodes():
    if not MODELS.is_dir():
        pytest.skip(f"{MODELS} not present: the paper's model files are not available here")
    from mcutrain.quant.safe_pickle import load_tiny_training_pickle

    for path in sorted(MODELS.glob("*.pkl")):
        model = load_tiny_training_pickle(path)
        for conv in _convs(model):
            prm = conv["params"]
            reals = prm["x_scale"] * prm["w_scales"].astype(np.float64) / prm["y_scale"]
            m, s = fp.quantize_multiplier(reals)
            ok = m > 0
            assert np.all(ok | (prm["w_scales"] < 1e-8)), path.name  # only degenerate channels may vanish
            rel = np.abs(fp.dequantize_multiplier(m[ok], s[ok]) - reals[ok]) / reals[ok]
            assert rel.max() <= 2.0**-31
        for block in model["blocks"]:
            if block["residual"] is not None:
                r = block["residual"]["params"]
                other = block["pointwise2"]["params"]
                p = int8_ops.add_params(r["x_scale"], r["x_zero"], other["y_scale"], other["y_zero"],
                                  r["y_scale"], r["y_zero"])
                assert p.out_multiplier >= 2**30 and p.out_shift < 0


def test_torch_kernels_on_cuda_match_numpy():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the torch kernels were checked on CPU only")
    rng_ = np.random.default_rng(7)
    acc = rng_.integers(I32_MIN, I32_MAX, (8, 16, 5, 5), endpoint=True)
    m, s = fp.quantize_multiplier(np.exp(rng_.uniform(np.log(1e-6), np.log(8.0), 16)))
    y, inside = fp.requantize_with_mask(acc, m, s, 7, -128, 127)
    yc, ic = fp.requantize_with_mask_torch(torch.from_numpy(acc).cuda(), m, s, 7, -128, 127)
    np.testing.assert_array_equal(yc.cpu().numpy(), y)
    np.testing.assert_array_equal(ic.cpu().numpy(), inside)
    a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128))
    p = int8_ops.add_params(0.05, 3, 0.1, -2, 0.12, 5)
    np.testing.assert_array_equal(
        int8_ops.quantized_add_torch(torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda(), p).cpu().numpy(),
        int8_ops.quantized_add(a, b, p))
    x = rng_.integers(-128, 128, (4, 32, 7, 7)).astype(np.int8)
    np.testing.assert_array_equal(int8_ops.avgpool_int8_torch(torch.from_numpy(x).cuda(), -3, 0.1, 0.13, 2).cpu().numpy(),
                                  int8_ops.avgpool_int8(x, -3, 0.1, 0.13, 2))
