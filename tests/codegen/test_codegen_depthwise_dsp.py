"""The DSP depthwise kernels (c/mct_depthwise.c, kernels="dsp" on a core without Helium) compute what the
portable C computes, on the geometry their paths split on.

mct_depthwise.c takes a whole channel through a padded plane (up to 2048 bytes: one call for the plane when
the output width is even, row by row with an odd last column when it is odd) and a row of the row pipelines
(or of a plane too large) as direct interior columns plus padded copies of its edges, or whole through a
padded copy where a tap row is padding or too few columns are inside. The model below reaches each: odd and
even widths (49 -> 25 -> 13 -> 7 -> 4 -> 2 -> 1: the last a 3x3 row of one output, whose even part is empty),
planes above 2048 bytes (49 x 49 and the 51 x 51 padded one), 3x3, 5x5 and 7x7 at strides 1 and 2, a 7x7 on
4 columns (no interior column), weights split between SRAM and Flash (half the channels of a depthwise conv
trained) and the clamp masks of the trained blocks. A second model (DW_SHIFTS) reaches every loop of the 3x3 asm
row kernels, one per requantization shift, at both strides, and the row pipelines' word copies. Equality rule:
test_codegen_dsp's (the firmware under QEMU equals the host build bit for bit)."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mcutrain.codegen import compile_for_codegen, generate
from mcutrain.codegen.firmware import build_firmware, run_qemu, tools_available
from mcutrain.models.specs import NetSpec, _chain
from mcutrain.quant.fixedpoint import multiply_by_quantized_multiplier
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import resolve
from mcutrain.sparse.scheme import Scheme
from tests.helpers.geometry import int8_images
from tests.helpers.host_run import assert_firmware_equals_host

MISSING = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
needs_tools = pytest.mark.skipif(MISSING is not None, reason=f"the DSP kernels need the cross tools: {MISSING}")

CLASSES = 3
# (mid, out, kernel, stride) per block on a 97 x 97 image (49 x 49 after the stem conv).
DW_GEOMETRY = NetSpec("dw-geometry", 4, _chain(4, [
    (None, 4, 3, 1), (6, 5, 3, 2), (7, 5, 5, 1), (6, 6, 7, 2), (5, 6, 7, 1), (9, 4, 5, 2), (6, 4, 3, 2),
    (5, 4, 7, 1), (6, 4, 3, 2), (5, 4, 3, 2), (5, 4, 3, 1),
]), default_resolution=97)
# convs: 0 stem; block 0: 1 depthwise, 2 project; block b >= 1: 3b expand, 3b + 1 depthwise, 3b + 2 project
SPLIT_DW = ((13, 0.5), (16, 0.5), (19, 0.5))  # half the channels of the depthwise 7x7, 5x5 s2 and 3x3 trained


# 3x3 blocks of 24 channels, strides 1 and 2, even and odd widths (55 x 55 -> 28 -> 28 -> 14 -> 14 -> 7 -> 7; the
# first block in a row pipeline, its 28-byte tap rows copied by 16, 8 and 4 bytes): with _shifts_everywhere,
# every channel's requantization shift one of 1..22, each met at both strides.
DW_SHIFTS = NetSpec("dw-shifts", 8, _chain(8, [
    (None, 8, 3, 1), (24, 12, 3, 2), (24, 12, 3, 1), (24, 12, 3, 2), (24, 12, 3, 1),
]), default_resolution=55)


def _shifts_everywhere(q):
    """q with depthwise channel c of block b requantized by a right shift of 1 + (c + 5b) % 22 (the asm row
    kernels keep one loop per shift, mct_dsp_depthwise.h): its multiplier 0.75 * 2^-shift (a w_scale for it),
    its weights scaled down where the shift is small (the sums times the multiplier about +-16 up to shift 9,
    less above) and a bias worth 20..43 outputs (above ReLU6's zero point, -128: seldom clamped; a wrong shift
    moves it by 10 or more)."""
    blocks = []
    for b, block in enumerate(q.blocks):
        dw = block.depthwise
        c = np.arange(dw.out_ch)
        right = 1 + (c + 5 * b) % 22
        real = 0.75 * 2.0 ** -right.astype(np.float64)
        w_scale = (real * dw.y.scale / dw.x.scale).astype(np.float32)
        small = np.minimum(1.0, 2.0 ** (right - 9.0))[:, None, None, None]
        w = dw.weight.astype(np.float64)
        weight = np.where(w == 0, 0, np.sign(w) * np.maximum(1, np.round(np.abs(w) * small))).astype(np.int8)
        bias = np.round((20 + c) / real).astype(np.int32)
        dw = replace(dw, weight=weight, w_scale=w_scale, bias=bias)
        assert (-dw.requant[1] == right).all() and (np.abs(bias) <= 2**29).all()
        blocks.append(replace(block, depthwise=dw))
    return replace(q, blocks=tuple(blocks))


@lru_cache(maxsize=None)
def _model():
    return random_qmodel(DW_GEOMETRY, 97, CLASSES, seed=3)[0]


@needs_tools
def test_dsp_depthwise_firmware_equals_the_host_build_bit_for_bit(tmp_path):
    q = _model()
    scheme = Scheme(q.spec.name, "split-dw", tuple(i for i, _ in SPLIT_DW), SPLIT_DW)
    program = compile_for_codegen(q, resolve(scheme, q.spec), lr=0.1, seed=5)
    generate(program, tmp_path / "host")
    generate(program, tmp_path / "dsp", kernels="dsp")
    report = build_firmware(tmp_path / "dsp", strict=None)
    images, labels = int8_images(q, 5), np.arange(5) % CLASSES
    run = run_qemu(tmp_path / "dsp" / report["elf"], images[:3], labels[:3], images[3:], labels[3:],
                   classes=CLASSES)
    assert_firmware_equals_host(run, tmp_path / "host", images[:3], labels[:3], images[3:])


@needs_tools
def test_dsp_depthwise_asm_rows_equal_the_host_build_at_every_shift(tmp_path):
    """The 3x3 asm rows (mct_dsp_dw3_s{1,2}_seg: one loop per shift, SSAT shifting) on every shift they keep a
    loop for, at both strides, through the row pipelines and the whole-channel path: the firmware equals the host
    build bit for bit (its depthwise convs on the portable C)."""
    q = _shifts_everywhere(random_qmodel(DW_SHIFTS, 55, CLASSES, seed=4)[0])
    trained = (10, 13)  # the 3x3 stride-2 and stride-1 depthwise convs of the last two blocks
    scheme = Scheme(q.spec.name, "shifts", trained, tuple((i, 1.0) for i in trained))
    program = compile_for_codegen(q, resolve(scheme, q.spec), lr=0.1, seed=5)
    generate(program, tmp_path / "host")
    generate(program, tmp_path / "dsp", kernels="dsp")
    report = build_firmware(tmp_path / "dsp", strict=None)
    images, labels = int8_images(q, 5), np.arange(5) % CLASSES
    run = run_qemu(tmp_path / "dsp" / report["elf"], images[:3], labels[:3], images[3:], labels[3:],
                   classes=CLASSES)
    assert_firmware_equals_host(run, tmp_path / "host", images[:3], labels[:3], images[3:])


def _dw_requant(total: int, multiplier: int, right: int, y_zero: int) -> int:
    """mct_depthwise.c's dw_requant of the doubled sum 2 * ``total``, instruction by instruction, in Python
    integers, checking that no step leaves int32."""
    doubled = 2 * total                                        # the doubled weights' sum
    nudge = 2 ** (right - 1) + y_zero * 2**right
    x = (doubled * multiplier + 2**31 + nudge * 2**32) >> 32   # SMMLAR
    s = x + (doubled >> 31)                                    # ADD with ASR #31
    assert all(-2**31 <= v < 2**31 for v in (doubled, nudge, x, s))
    return s >> right                                          # ASR by register (then SSAT #8)


@settings(max_examples=2000, deadline=None)
@given(total=st.integers(-2**30 + 1, 2**30 - 1), multiplier=st.integers(1, 2**31 - 1),
       right=st.integers(1, 22), y_zero=st.integers(-128, 127))
@example(total=-1, multiplier=1, right=1, y_zero=0)  # x rounds to 0 from below: the sign stand-in differs
@example(total=-3 * 2**7, multiplier=2**30, right=8, y_zero=0)  # a negative tie, rounded away from zero
@example(total=3 * 2**7, multiplier=2**30, right=8, y_zero=0)
@example(total=-2**30 + 1, multiplier=2**31 - 1, right=22, y_zero=-128)
def test_the_depthwise_requantization_is_the_reference_mbqm_clamped(total, multiplier, right, y_zero):
    """dw_requant (mct_rq_of's fast conditions and a multiplier > 0) gives the reference's int8 output, and its
    inside bit (mct_depthwise.c reads it off the int8 output: strictly between -128 and 127)."""
    reference = max(-2**15, min(2**15 - 1, int(multiply_by_quantized_multiplier(
        np.int32(total), np.int32(multiplier), -right)))) + y_zero
    v = max(-128, min(127, _dw_requant(total, multiplier, right, y_zero)))
    assert v == max(-128, min(127, reference))
    assert (-128 < v < 127) == (-128 < reference < 127)
