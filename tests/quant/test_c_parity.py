"""mct_int8.h (compiled with gcc, undefined-behaviour sanitizer on) == the NumPy reference, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mcutrain.quant
from mcutrain.quant import fixedpoint as fp
from mcutrain.quant import int8_ops
from mcutrain.quant import rng
from tests.helpers.c_harness import build_harness, run_lines

HEADER_DIR = Path(mcutrain.quant.__file__).parent
HARNESS = Path(__file__).with_name("c_parity_harness.c")
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
EXTREMES = np.array([I32_MIN, I32_MIN + 1, -(2**30), -12345, -2, -1, 0, 1, 2, 77777, 2**30, I32_MAX - 1, I32_MAX])


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    return build_harness(tmp_path_factory.mktemp("c_parity"), HARNESS, HEADER_DIR, ("-Wconversion",))


def run_c(exe: Path, lines: list[str]) -> list[str]:
    return run_lines(exe, lines, timeout=60)


def test_header_exists_next_to_the_python_spec():
    text = (HEADER_DIR / "mct_int8.h").read_text()
    for name in ("mct_srdhm", "mct_rdbpot", "mct_mbqm", "mct_mul_round1", "mct_requantize", "mct_add", "mct_avgpool",
                 "mct_hash32", "mct_stream_key", "mct_stream_word", "mct_stochastic_round"):
        assert f" {name}(" in text


def test_integer_primitives_match(harness):
    g = np.random.default_rng(10)
    n = 4000
    a = np.concatenate([g.integers(I32_MIN, I32_MAX, n, endpoint=True), np.repeat(EXTREMES, EXTREMES.size)])
    b = np.concatenate([g.integers(I32_MIN, I32_MAX, n, endpoint=True), np.tile(EXTREMES, EXTREMES.size)])
    e = g.integers(0, 32, a.size)
    m = np.where(g.random(a.size) < 0.05, 0, g.integers(2**30, 2**31, a.size))
    s = g.integers(fp.MIN_SHIFT, fp.MAX_SHIFT + 1, a.size)
    lines = [f"srdhm {x} {y}" for x, y in zip(a, b)]
    lines += [f"rdbpot {x} {k}" for x, k in zip(a, e)]
    lines += [f"mbqm {x} {mm} {ss}" for x, mm, ss in zip(a, m, s)]
    lines += [f"round1 {x} {mm} {ss}" for x, mm, ss in zip(a, m, s)]
    got = np.array(run_c(harness, lines), dtype=np.int64).reshape(4, a.size)
    np.testing.assert_array_equal(got[0], fp.saturating_rounding_doubling_high_mul(a, b))
    np.testing.assert_array_equal(got[1], fp.rounding_divide_by_pot(a, e))
    np.testing.assert_array_equal(got[2], fp.multiply_by_quantized_multiplier(a, m, s))
    np.testing.assert_array_equal(got[3], fp.multiply_by_quantized_multiplier_single_round(a, m, s))


def test_requantize_add_and_pool_match(harness):
    g = np.random.default_rng(11)
    acc = np.concatenate([g.integers(-(2**22), 2**22, 3000), EXTREMES])
    m, s = fp.quantize_multiplier(np.exp(g.uniform(np.log(1e-6), np.log(4.0), acc.size)))
    z = g.integers(-128, 128, acc.size)
    lo = np.where(g.random(acc.size) < 0.5, -128, -100)
    lines, expected = [], []
    for i in range(acc.size):
        yi, ii = fp.requantize_with_mask(acc[i:i + 1], m[i], s[i], int(z[i]), int(lo[i]), 120)
        lines.append(f"req {acc[i]} {m[i]} {s[i]} {z[i]} {lo[i]} 120")
        expected.append(f"{int(yi[0])} {int(ii[0])}")
    assert run_c(harness, lines) == expected

    for case in [(0.05, 3, 0.1, -2, 0.12, 5), (0.0894, 23, 0.1106, -2, 0.13, 1), (0.02, -128, 0.02, -128, 0.04, -128)]:
        p = int8_ops.add_params(*case)
        a = np.arange(-128, 128, 3)
        aa, bb = np.meshgrid(a, a)
        ya, ia = int8_ops.quantized_add_with_mask(aa.ravel(), bb.ravel(), p)
        consts = " ".join(str(v) for v in (p.left_shift, p.a_zero, p.a_multiplier, p.a_shift, p.b_zero, p.b_multiplier,
                                           p.b_shift, p.out_zero, p.out_multiplier, p.out_shift, p.qmin, p.qmax))
        lines = [f"add {x} {y_} {consts}" for x, y_ in zip(aa.ravel(), bb.ravel())]
        assert run_c(harness, lines) == [f"{int(v)} {int(k)}" for v, k in zip(ya, ia)]

    for shape, s_x, z_x, s_y, z_y in [((2, 40, 4, 4), 0.11, -3, 0.147, -1), ((1, 30, 7, 7), 0.2, 5, 0.2, 5),
                                      ((1, 4, 64, 64), 0.05, -128, 0.01, 0)]:
        x = g.integers(-128, 128, shape).astype(np.int8)
        yp, ip = int8_ops.avgpool_int8_with_mask(x, z_x, s_x, s_y, z_y)
        p = int8_ops.avgpool_params(s_x, z_x, s_y, z_y, shape[2] * shape[3])
        lines = []
        for nn in range(shape[0]):
            for c in range(shape[1]):
                vals = " ".join(str(v) for v in x[nn, c].ravel())
                lines.append(f"pool {p.count} {p.x_zero} {p.multiplier} {p.shift} {p.y_zero} {p.qmin} {p.qmax} {vals}")
        assert run_c(harness, lines) == [f"{int(v)} {int(k)}" for v, k in zip(yp.ravel(), ip.ravel())]


def test_rng_and_stochastic_rounding_match(harness):
    g = np.random.default_rng(12)
    edges = np.array([0, 1, 2**31, 2**32 - 1], dtype=np.uint64)
    xs = np.concatenate([g.integers(0, 2**32, 2000, dtype=np.uint64), edges])
    assert run_c(harness, [f"hash {v}" for v in xs]) == [str(v) for v in rng.hash32(xs)]
    for seed, step, tid in [(0, 0, 0), (1, 2, 3), (2**32 - 1, 123456, 42), (99, 2**31, 2**32 - 1)]:
        got = run_c(harness, [f"words {seed} {step} {tid} 500"])[0].split()
        assert got == [str(v) for v in rng.uniform_u32(seed, step, tid, 500)]
    x = np.concatenate([
        g.normal(0, 2, 3000).astype(np.float32),
        (g.integers(-(2**24), 2**24, 1000) * 2.0**-24).astype(np.float32),
        np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 3e9, -3e9, 1e-45, 2147483520.0, 3 * 2.0**-26], np.float32),
    ])
    r = np.concatenate([g.integers(0, 2**32, x.size - 1, dtype=np.uint64), [(2**24 - 1) << 8]]).astype(np.uint32)
    bits = x.view(np.uint32)
    got = run_c(harness, [f"sround {b} {w}" for b, w in zip(bits, r)])
    assert got == [str(v) for v in rng.stochastic_round_from_bits(x, r)]
