"""Counter-based RNG and stochastic rounding: NumPy == torch == plain Python; unbiased; stream separation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.quant import rng

U32_MAX = 2**32 - 1
u32s = st.integers(0, U32_MAX)
ALL_U = np.arange(2**24, dtype=np.uint32) << np.uint32(8)  # every value of u = (r >> 8) * 2**-24


def py_lowbias32(x: int) -> int:
    """Independent transcription of the C code, with explicit masking."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) % 2**32
    x ^= x >> 15
    x = (x * 0x846CA68B) % 2**32
    x ^= x >> 16
    return x


@settings(max_examples=300, deadline=None)
@given(st.lists(u32s, min_size=1, max_size=64))
def test_hash32_numpy_torch_and_python_agree(values):
    expected = [py_lowbias32(v) for v in values]
    assert [rng.hash32_int(v) for v in values] == expected
    assert rng.hash32(np.array(values, dtype=np.uint64)).tolist() == expected
    assert rng.hash32_torch(torch.tensor(values, dtype=torch.int64)).tolist() == expected


def test_hash32_pinned_values_and_bijectivity():
    # pinned so that any change of the spec is noticed (the C side must change with it)
    assert [rng.hash32_int(v) for v in (0, 1, 2, 0x12345678, U32_MAX)] == [
        0, 0x688990C0, 0xD1132181, 0xF5E71C96, 0x6768824A]
    x = np.arange(2**20, dtype=np.uint32) * np.uint32(4099)  # odd stride: distinct inputs
    assert np.unique(rng.hash32(x)).size == x.size  # xorshifts and odd multiplies are bijections
    with pytest.raises(ValueError):
        rng.hash32(np.array([-1]))
    with pytest.raises(ValueError):
        rng.hash32_int(2**32)


@settings(max_examples=60, deadline=None)
@given(u32s, u32s, u32s, st.integers(0, 3000))
def test_uniform_u32_numpy_torch_and_python_agree(seed, step, tensor_id, n):
    key = py_lowbias32(seed ^ py_lowbias32(step ^ py_lowbias32(tensor_id)))
    assert rng.stream_key(seed, step, tensor_id) == key
    words = rng.uniform_u32(seed, step, tensor_id, n)
    assert words.dtype == np.uint32 and words.shape == (n,)
    probe = [i for i in (0, 1, n // 2, n - 1) if 0 <= i < n]
    assert [int(words[i]) for i in probe] == [py_lowbias32((key + i * 0x9E3779B9) % 2**32) for i in probe]
    np.testing.assert_array_equal(rng.uniform_u32_torch(seed, step, tensor_id, n).numpy(), words)


def test_streams_depend_on_seed_step_tensor_and_index():
    n = 100_000
    base = rng.uniform_u32(11, 500, 7, n)
    for other in (rng.uniform_u32(12, 500, 7, n), rng.uniform_u32(11, 501, 7, n), rng.uniform_u32(11, 500, 8, n),
                  rng.uniform_u32(0, 0, 0, n)):
        assert (other == base).mean() < 1e-3  # ~n / 2**32 coincidences expected
    # swapping the roles of the arguments gives a different stream too
    assert (rng.uniform_u32(7, 500, 11, n) == base).mean() < 1e-3
    # within a stream no word repeats (index -> word is a bijection)
    assert np.unique(rng.uniform_u32(3, 4, 5, 2**21)).size == 2**21
    # the stream is a prefix-stable function of the index: longer draws extend shorter ones
    np.testing.assert_array_equal(rng.uniform_u32(11, 500, 7, 10), base[:10])


def test_words_look_uniform():
    words = rng.uniform_u32(2024, 1, 1, 2**20).astype(np.float64)
    u = words / 2**32
    # mean of 2**20 uniforms: sd = 0.29 / 1024 = 2.8e-4; 6 sd (deterministic seed)
    assert abs(u.mean() - 0.5) < 6 * math.sqrt(1 / 12 / u.size)
    counts = np.bincount((words.astype(np.uint64) >> 24).astype(np.int64), minlength=256)
    chi2 = ((counts - u.size / 256) ** 2 / (u.size / 256)).sum()
    assert chi2 < 255 + 6 * math.sqrt(2 * 255)  # chi-square(255): mean 255, sd 22.6
    bits = ((words.astype(np.uint64)[:, None] >> np.arange(32, dtype=np.uint64)) & 1).mean(axis=0)
    assert np.abs(bits - 0.5).max() < 6 * 0.5 / math.sqrt(u.size)


def test_stream_arguments_are_checked():
    for bad in ((-1, 0, 0), (0, 2**32, 0), (0, 0, 1.5)):
        with pytest.raises(ValueError):
            rng.uniform_u32(*bad, 4)


# ---------------------------------------------------------------- stochastic rounding


@pytest.mark.parametrize("k", [1, 2**24 - 1, 5_033_165, -1, -(2**24), -12_345_678])
def test_stochastic_round_exactly_unbiased_on_the_2_pow_minus_24_grid(k):
    """Enumerating all 2**24 values of u proves P(round up) = x - floor(x) exactly for x = k * 2**-24."""
    x = np.float32(k * 2.0**-24)
    assert float(x) == k * 2.0**-24
    y = rng.stochastic_round_from_bits(np.full(ALL_U.size, x, np.float32), ALL_U).astype(np.int64)
    floor = math.floor(k * 2.0**-24)
    assert set(np.unique(y).tolist()) <= {floor, floor + 1}
    assert int((y == floor + 1).sum()) == k - floor * 2**24


@pytest.mark.parametrize("x", [-1.0e-10, 1.37, -2.75, 100.7, 1000.3])
def test_stochastic_round_bias_bound_off_the_grid(x):
    x = np.float32(x)
    y = rng.stochastic_round_from_bits(np.full(ALL_U.size, x, np.float32), ALL_U).astype(np.int64)
    bias = y.sum() / 2**24 - float(x)
    assert abs(bias) <= np.spacing(np.float32(abs(float(x)) + 1)) / 2


def test_stochastic_round_uses_float32_arithmetic():
    # x + u = 1 - 2**-24 + 0.75 * 2**-24: float32 rounds it up to 1.0 (floor 1), float64 would give 0
    x = np.float32(3 * 2.0**-26)
    r = np.array([(2**24 - 1) << 8], dtype=np.uint32)
    assert rng.stochastic_round_from_bits(np.array([x]), r).tolist() == [1]
    r_torch = torch.from_numpy(r.astype(np.int64))
    assert rng.stochastic_round_from_bits_torch(torch.tensor([float(x)]), r_torch).tolist() == [1]
    with pytest.raises(ValueError):
        rng.stochastic_round_from_bits(np.array([0.5]), np.array([0]))  # float64 input refused


def test_stochastic_round_mean_and_support():
    for value in (0.3, -2.7, 0.001, 17.25):
        x = np.full(1_000_000, value, np.float32)
        y = rng.stochastic_round(x, seed=123, step=9, tensor_id=4)
        assert y.dtype == np.int32 and set(np.unique(y).tolist()) <= {math.floor(value), math.floor(value) + 1}
        frac = float(np.float32(value)) - math.floor(value)
        sd = math.sqrt(frac * (1 - frac) / x.size)
        assert abs(y.mean() - float(np.float32(value))) < 6 * sd + 1e-7  # deterministic: fixed seed


def test_stochastic_round_numpy_equals_torch_including_specials():
    g = np.random.default_rng(8)
    x = np.concatenate([
        g.normal(0, 3, 200_000).astype(np.float32),
        np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 3e9, -3e9, 2.0**31, -(2.0**31), 1e-45, -1e-45,
                  2147483520.0, 127.99999, -128.00001], dtype=np.float32),
    ]).reshape(-1, 2)
    y = rng.stochastic_round(x, 5, 6, 7)
    yt = rng.stochastic_round_torch(torch.from_numpy(x), 5, 6, 7)
    assert yt.dtype == torch.int32 and tuple(yt.shape) == x.shape
    np.testing.assert_array_equal(yt.numpy(), y)
    tail = y.reshape(-1)[-14:].tolist()
    assert tail[2] == 0 and tail[3] == 2147483520 and tail[4] == -(2**31)  # NaN, +inf, -inf
    assert tail[5] == 2147483520 and tail[6] == -(2**31)  # clamped to the int32 range


def test_stochastic_round_depends_on_stream():
    x = np.full(10_000, 0.5, np.float32)
    a = rng.stochastic_round(x, 1, 1, 1)
    for other in ((2, 1, 1), (1, 2, 1), (1, 1, 2)):
        assert (rng.stochastic_round(x, *other) != a).mean() > 0.4  # independent coins differ half the time
    np.testing.assert_array_equal(rng.stochastic_round(x, 1, 1, 1), a)  # and it is deterministic


def test_torch_rng_on_cuda_matches_numpy():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the torch RNG was checked on CPU only")
    np.testing.assert_array_equal(rng.uniform_u32_torch(5, 6, 7, 100_000, device="cuda").cpu().numpy(),
                                  rng.uniform_u32(5, 6, 7, 100_000))
    x = np.random.default_rng(9).normal(0, 3, (300, 300)).astype(np.float32)
    np.testing.assert_array_equal(rng.stochastic_round_torch(torch.from_numpy(x).cuda(), 1, 2, 3).cpu().numpy(),
                                  rng.stochastic_round(x, 1, 2, 3))
