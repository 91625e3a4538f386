"""The DSP kernels' generated plans (mcutrain/codegen/dsp_plans.py, ``mct_conv.dsp_plan``): their layouts word by
word against the formulas the C kernels made them with at run time (dw_channel_plan, pw_plan, patch_weights),
which convs get one, and that a DSP folder's row pipelines carry them. That the device computes the same integers
with them is test_codegen_dsp's and test_codegen_depthwise_dsp's rule (the firmware equals the host build bit for
bit on models whose row pipelines have every kind of plan), and bench/m7_kernels' (DSP equals portable on the
paper networks)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mcutrain.codegen import compile_for_codegen, generate
from mcutrain.codegen.dsp_plans import (conv_plan, depthwise_plan, dw_plan_words, halfwords, patch_order, patch_plan,
                                        pointwise_plan)
from mcutrain.engine.compile import ADD_TABLE_BYTES, flash_constant_bytes
from mcutrain.engine.ir import Op, make_attrs
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve
from tests.codegen.test_codegen_dsp import TAILS, TAILS_SEED


def _pair(word: int) -> tuple[int, int]:
    """The (low, high) int16 halves of an int32 word."""
    u = int(word) & 0xFFFFFFFF
    lo, hi = u & 0xFFFF, u >> 16
    return lo - (lo >> 15) * 0x10000, hi - (hi >> 15) * 0x10000


def test_halfwords_put_the_first_value_in_the_low_half():
    words = halfwords([-1, 127, -128], [2, -256, 0])
    assert [_pair(w) for w in words] == [(-1, 2), (127, -256), (-128, 0)]


def _rq(c: int, rng):
    return rng.integers(-2**20, 2**20, c), rng.integers(2**30, 2**31 - 1, c), rng.integers(-12, -1, c)


@pytest.mark.parametrize("k, stride", [(3, 1), (5, 2), (7, 1), (7, 2)])
def test_depthwise_plan_is_dw_channel_plans_words(k, stride):
    rng = np.random.default_rng(k + stride)
    c, x_zero, y_zero = 3, -7, 5
    w = rng.integers(-128, 128, (c, 1, k, k))
    bias, m, shift = _rq(c, rng)
    plan = depthwise_plan(w, bias, m, shift, x_zero, y_zero, -128, 127, stride).reshape(c, dw_plan_words(k))
    for ch in range(c):
        t, d = w[ch, 0].reshape(-1), plan[ch]
        assert list(d[:3]) == [{3: 0, 5: 2, 7: 4}[k] + (stride == 2), k, stride]  # kind (DW_3S1..), k, s
        right = -shift[ch]
        assert list(d[8:12]) == [m[ch], 2 * bias[ch] - x_zero * 2 * t.sum(), (1 << (right - 1)) + y_zero * (1 << right),
                                 right]
        if k == 3:  # a0, a1, a2, b01, b2 (dw_plan3)
            want = [(0, 2), (3, 5), (6, 8), (1, 4), (5, 7)]
            assert [_pair(x) for x in d[3:8]] == [(2 * t[i], 2 * t[j]) for i, j in want]
        else:  # per tap row: w02, w13, w46, w5 (dw_row57)
            rows = d[12:].reshape(k, 4)
            for a in range(k):
                r = 2 * t[a * k:(a + 1) * k]
                assert _pair(rows[a, 0]) == (r[0], r[2]) and _pair(rows[a, 1]) == (r[1], r[3])
                assert _pair(rows[a, 2]) == ((r[4], r[6]) if k == 7 else (r[4], 0))
                assert rows[a, 3] == (r[5] if k == 7 else 0)


def test_pointwise_plan_pairs_channels_within_windows():
    rng = np.random.default_rng(3)
    out_c, in_c, window, y_zero = 7, 6, 3, -3
    w = rng.integers(-128, 128, (out_c, in_c, 1, 1))
    bias, m, shift = _rq(out_c, rng)
    plan = pointwise_plan(w, bias, m, shift, y_zero, -128, 127, window)
    groups = 2  # ceil(6 / 4): the second group's last 2 channels are zeros
    assert plan[0] == window
    rq = plan[1:1 + 4 * out_c].reshape(out_c, 4)  # mct_rq_fast: 2 * bias, multiplier, nudge, right
    assert list(rq[:, 0]) == list(2 * bias) and list(rq[:, 1]) == list(m) and list(rq[:, 3]) == list(-shift)
    assert list(rq[:, 2]) == [(1 << (r - 1)) + y_zero * (1 << r) for r in -shift]
    pairs = [(0, 1), (2, None), (3, 4), (5, None), (6, None)]  # windows [0,3) [3,6) [6,7)
    records = plan[1 + 4 * out_c:].reshape(len(pairs), 2 + 4 * groups)
    for (u, v), rec in zip(pairs, records):
        assert rec[0] == 2 * bias[u] and rec[1] == (2 * bias[v] if v is not None else 0)
        for g in range(groups):
            for channel, at in ((u, 0), (v, 2)):
                x = np.zeros(4 * groups, np.int64)
                if channel is not None:
                    x[:in_c] = 2 * w[channel, :, 0, 0]
                got = [_pair(rec[2 + 4 * g + at]), _pair(rec[3 + 4 * g + at])]
                assert got == [(x[4 * g], x[4 * g + 2]), (x[4 * g + 1], x[4 * g + 3])]


def test_patch_order_and_plan_follow_general_row_dsp():
    # 3x3 on 3 channels: the 9 tap rows' (b=0, b=2) pairs, then their middle taps two a word, padded to 14 words
    order = patch_order(9, 3)
    assert order[:18] == [t for r in range(9) for t in (3 * r, 3 * r + 2)]
    assert order[18:27] == [3 * r + 1 for r in range(9)] and order[27:] == [-1] and len(order) == 28
    assert patch_order(2, 5) == list(range(10)) + [-1, -1]  # natural order, words made even
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 128, (3, 3, 3, 3))  # an odd channel count: the last pair repeats channel 2
    table = patch_plan(w).reshape(2, 14, 2)
    for o in range(4):
        flat = np.append(w[min(o, 2)].reshape(-1), 0)
        want = [(flat[order[2 * t]], flat[order[2 * t + 1]]) for t in range(14)]
        assert [_pair(x) for x in table[o // 2, :, o % 2]] == want
    assert patch_plan(rng.integers(-128, 128, (2, 2, 7, 7))) is None  # 98 taps: more than a patch holds


def _conv(groups: int, k: int) -> tuple[Op, dict]:
    rng = np.random.default_rng(0)
    out_c, in_c = 4, 4 if groups > 1 else 8
    consts = {"w": rng.integers(-128, 128, (out_c, in_c // groups, k, k)).astype(np.int8),
              "b": rng.integers(-100, 100, out_c).astype(np.int32), "m": np.full(out_c, 2**30, np.int32),
              "s": np.full(out_c, -5, np.int32)}
    attrs = make_attrs(stride=1, pad=k // 2, groups=groups, x_zero=1, y_zero=-2, qmin=-128, qmax=127)
    return Op("c", "conv2d", ("x", "w", "b", "m", "s"), ("y",), attrs), consts


def test_conv_plan_only_for_frozen_convs_in_the_fast_case():
    for groups, k, kind in ((1, 1, "1x1"), (4, 3, "depthwise"), (1, 3, "patch")):
        op, consts = _conv(groups, k)
        assert conv_plan(op, consts, lambda name: False)[0] == kind
        assert conv_plan(op, consts, lambda name: name == "w") is None  # a trained weight: its operands change
        assert conv_plan(op, consts, lambda name: name == "b") is None
    op, consts = _conv(4, 3)
    consts["s"] = np.array([-5, 0, -5, -5], np.int32)  # a shift outside [-22, -1]: made at run time
    assert conv_plan(op, consts, lambda name: False) is None


def test_a_folder_defines_each_plan_once_for_its_row_pipelines(tmp_path):
    q = random_qmodel(TAILS, 55, 3, seed=TAILS_SEED)[0]
    program = compile_for_codegen(q, resolve(get_builtin("last-k:2", q.spec), q.spec), lr=0.1, seed=7)
    generate(program, tmp_path)
    text = (tmp_path / "model.c").read_text()
    kinds = {kind: text.count(f": DSP {kind} plan") for kind in ("1x1", "depthwise", "patch")}
    assert all(kinds.values()), kinds  # the pipelines' first conv, expansions, depthwise and projections
    assert text.count("#if MCT_DSP_PLANS") == sum(kinds.values())  # defined only for the DSP kernels
    defined = re.findall(r"static const int32_t (plan_\w+)\[", text)
    used = re.findall(r"MCT_DSP_PLAN\((plan_\w+)\)", text)
    assert len(defined) == len(set(defined)) == sum(kinds.values()) and set(used) == set(defined)
    assert len(used) > len(defined)  # the training and the inference pipelines share them


def test_compile_counts_one_add_table_per_add_the_generator_emits(tmp_path):
    """``mcutrain compile``'s Flash figure (``flash_constant_bytes``) holds the residual adds' operand tables: as
    many as the generated C defines (one per add, shared by the training and inference stages), each the size of
    ``mct_add_table``."""
    q = random_qmodel(TAILS, 55, 3, seed=TAILS_SEED)[0]
    program = compile_for_codegen(q, resolve(get_builtin("last-k:2", q.spec), q.spec), lr=0.1, seed=7)
    generate(program, tmp_path)
    defined = (tmp_path / "model.c").read_text().count("static const mct_add_table ")
    graph = program.train.graph
    assert defined > 0 and ADD_TABLE_BYTES == 4 * (256 + 256 + 1)  # int32_t a[256], b[256], dsp
    assert flash_constant_bytes(graph) == sum(a.nbytes for a in graph.constants.values()) + defined * ADD_TABLE_BYTES
