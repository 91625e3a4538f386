"""mct_int8_grad.h (gcc, undefined-behaviour sanitizer on) == mcutrain/quant/int8_grad.py, bit for bit.

Random and extreme inputs for every primitive of the integer backward: normalization, the scaled
gradient through a requantization (with masks and factors many orders apart), fan-out sums (with the
sticky bit), the loss gradient from doubles, the update factor and the exact rounding shifts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mcutrain.quant
from mcutrain.quant import int8_grad as ig
from mcutrain.quant.rng import uniform_u32
from tests.helpers.c_harness import build_harness, run_lines

HEADER_DIR = Path(mcutrain.quant.__file__).parent
HARNESS = Path(__file__).with_name("c_parity_int8_grad.c")


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    return build_harness(tmp_path_factory.mktemp("c_parity_g8"), HARNESS, HEADER_DIR, ())


def run_c(exe: Path, lines: list[str]) -> list[list[int]]:
    return [[int(t) for t in line.split()] for line in run_lines(exe, lines)]


def _ints(values) -> str:
    return " ".join(str(int(v)) for v in np.asarray(values).ravel())


def test_normalize_matches(harness):
    g = np.random.default_rng(1)
    cases = [g.integers(-(2**31) + 1, 2**31, g.integers(1, 50)) >> g.integers(0, 31) for _ in range(300)]
    cases += [np.zeros(5, np.int64), np.array([127]), np.array([128]), np.array([-128]), np.array([1, -1]),
              np.array([2**31 - 1, -(2**31) + 1])]
    exps = g.integers(-80, 80, len(cases))
    got = run_c(harness, [f"norm {len(a)} {e} {_ints(a)}" for a, e in zip(cases, exps)])
    for a, e, line in zip(cases, exps, got):
        want_g, want_e = ig.normalize_int(a, int(e))
        assert line == [want_e] + want_g.tolist(), (a, e)


def test_scale_matches(harness):
    g = np.random.default_rng(2)
    lines, wants = [], []
    for k in range(300):
        channels, plane = int(g.integers(1, 6)), int(g.integers(1, 9))
        per = k % 3 != 0
        reals = np.exp(g.uniform(-40, 5, channels if per else 1)) * (g.random(channels if per else 1) > 0.1)
        m, sh = ig.grad_multiplier(reals)
        grad = g.integers(-127, 128, (channels, plane)) * (g.random((channels, plane)) > 0.2)
        mask = g.random((channels, plane)) > 0.3 if k % 2 else None
        e = int(g.integers(-60, 20))
        out, want_e = ig.scale_grad(grad, e, m if per else m[0], sh if per else sh[0], mask)
        wants.append([want_e] + out.ravel().tolist())
        mask_part = f" {_ints(mask)}" if mask is not None else ""
        lines.append(f"scale {channels} {plane} {int(per)} {e} {int(mask is not None)} {_ints(m)} {_ints(sh)}"
                     f"{mask_part} {_ints(grad)}")
    assert run_c(harness, lines) == wants


def test_add_matches(harness):
    g = np.random.default_rng(3)
    lines, wants = [], []
    for _ in range(400):
        n = int(g.integers(1, 12))
        (a, ea), (b, eb) = (ig.normalize_int(g.integers(-127, 128, n) * (g.random(n) > 0.3), int(g.integers(-90, 30)))
                            for _ in range(2))
        out, e = ig.add_grads(a, ea, b, eb)
        wants.append([e] + out.tolist())
        lines.append(f"add {n} {ea} {eb} {_ints(a)} {_ints(b)}")
    assert run_c(harness, lines) == wants


def test_loss_gradient_from_float32_products_matches(harness):
    g = np.random.default_rng(4)
    lines, wants = [], []
    for _ in range(200):
        k = int(g.integers(2, 20))
        a = g.standard_normal(k).astype(np.float32) * (g.random(k) > 0.1)
        b = g.uniform(1e-6, 1e3, k).astype(np.float32)
        out, e = ig.normalize(a.astype(np.float64) * b.astype(np.float64))  # exact: 24 x 24 bits
        wants.append([e] + out.tolist())
        lines.append(f"prod {k} {_ints(a.view(np.uint32))} {_ints(b.view(np.uint32))}")
    assert run_c(harness, lines) == wants


def test_shift_round_and_updates_match(harness):
    g = np.random.default_rng(5)
    n = 3000
    p = g.integers(-(2**61), 2**61, n) >> g.integers(0, 61, n)
    s = g.integers(-40, 70, n)
    r = uniform_u32(7, 1, 2, n)
    p, s, r = _with_ties(g, p, s, r)
    lines = [f"sround {a} {b} {c} {k % 2}" for k, (a, b, c) in enumerate(zip(p, s, r))]
    want = [int(ig.shift_round(np.array([a]), b, np.array([c], np.uint64) if k % 2 else None)[0])
            for k, (a, b, c) in enumerate(zip(p, s, r))]
    assert [line[0] for line in run_c(harness, lines)] == want

    lr = np.float32(g.uniform(1e-4, 1.0))
    qas = np.concatenate([np.exp(g.uniform(-5, 25, 200)), [0.0, 1e-40, 3e-39, 1e-45]]).astype(np.float32)  # + subnormals
    fm, fx = ig.update_factor(lr, qas)
    got = run_c(harness, [f"factor {lr.view(np.uint32)} {q.view(np.uint32)}" for q in qas])
    assert got == [[int(a), int(b)] for a, b in zip(fm, fx)]

    w = g.integers(-127, 128, 200)
    grad = g.integers(-(2**27), 2**27, 200) >> g.integers(0, 27, 200)
    e = g.integers(-40, 10, 200)
    words = uniform_u32(3, 9, 4, 200)
    lines = [f"uw {a} {b} {c} {fm[i]} {fx[i]} {words[i]}" for i, (a, b, c) in enumerate(zip(w, grad, e))]
    lines += [f"ub {a * 10**6} {b} {c} {fm[i]} {fx[i]}" for i, (a, b, c) in enumerate(zip(w, grad, e))]
    want = [int(ig.update_weight(a, b, int(c), fm[i], fx[i], words[i])) for i, (a, b, c) in enumerate(zip(w, grad, e))]
    want += [int(ig.update_bias(a * 10**6, b, int(c), fm[i], fx[i])) for i, (a, b, c) in enumerate(zip(w, grad, e))]
    assert [line[0] for line in run_c(harness, lines)] == want


def _with_ties(g, p, s, r):
    """Append cases where the fraction plus u is exactly one (the carry's boundary), both sides of 24 bits."""
    extra_p, extra_s, extra_r = [], [], []
    for shift in list(range(1, 25)) + [30, 45, 62]:
        need = int(g.integers(1, 2**24))
        rem = need << (24 - shift) if shift <= 24 else need << (shift - 24)
        if shift <= 24:  # rem << (24 - shift) == need: need a multiple of 2**(24 - shift)
            need = need >> (24 - shift) << (24 - shift) or 2 ** (24 - shift)
            rem = need >> (24 - shift)
        q = int(g.integers(-1000, 1000)) if shift < 45 else 0
        for k in range(2):  # an odd and an even index: stochastic and nearest
            extra_p.append((q << shift) + rem)
            extra_s.append(shift)
            extra_r.append((2**24 - need) << 8)
    p = np.concatenate([p, extra_p]).astype(np.int64)
    return p, np.concatenate([s, extra_s]), np.concatenate([r, np.array(extra_r, np.uint32)])
