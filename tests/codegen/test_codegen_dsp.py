"""The DSP forward kernels (``generate(..., kernels="dsp")``, c/mct_dsp.h) compute what the portable C computes.

Equality rule (test_codegen_cortex_m7's): the Cortex-M7 firmware of a dsp folder under QEMU equals the
host build of the same program (portable kernels) bit for bit: losses, logits before and after training,
the trained parameters (checksum of mct_save). The integers of the forward are the same sums and
roundings, so nothing may differ. The models exercise every tail of the DSP loops: channel counts 1, 2,
3, 5, 8, 13 (not multiples of 2 or 4), odd and even widths (55 -> 28 -> 14 -> 7 -> 4), strides 1 and 2,
depthwise 3x3, 5x5 and 7x7, the first conv on 3 channels, and the general geometry of imported models
(non-square kernels, SAME/VALID padding, a 1-channel input). Also: the portable firmware stays
selectable and equal, the dsp build really uses SMLAD, and the host refuses a dsp folder.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mcutrain.codegen import CodegenError, build_host, compile_for_codegen, generate
from mcutrain.codegen.firmware import build_firmware, run_qemu, tools_available
from mcutrain.codegen.host import read_manifest
from mcutrain.codegen.targets import check_target_kernels
from mcutrain.models.specs import NetSpec, _chain
from mcutrain.quant.fixedpoint import multiply_by_quantized_multiplier
from mcutrain.quant.qmodel import QTensor
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve
from mcutrain.sparse.scheme import Scheme
from tests.helpers.geometry import general_qmodel, int8_images
from tests.helpers.host_run import assert_firmware_equals_host

MISSING = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-objdump", "qemu-system-arm")
if MISSING:
    print(f"skipping the DSP kernel tests: {MISSING}")
needs_tools = pytest.mark.skipif(MISSING is not None, reason=f"the DSP kernels need the cross tools: {MISSING}")

CLASSES = 3
# Odd channel counts everywhere (first conv 3 -> 5; expansions to 1, 3, 8, 13), kernels 3/5/7, strides 1/2.
# The DSP loops' groups and tails are all reached (55 -> 28 -> 14 -> 7 -> 4 columns): the first conv's 26
# interior columns (groups of 4 and 2 left), a 7x7 on 28 (pairs), a stride-2 3x3 depthwise on 28 (13
# interior: groups of 4 and 1 left), a stride-2 7x7 on 14 (2 pairs), a 5x5 on 7 (a pair and 1 left), a
# stride-2 5x5 on 7 (a pair). Seed 6: the eval images' logits differ, so every layer reaches them (a
# 1-channel expansion saturated whole hides everything before it: a broken kernel there would pass).
TAILS = NetSpec("dsp-tails", 5, _chain(5, [
    (None, 3, 3, 1), (8, 3, 7, 1), (13, 6, 3, 2), (10, 4, 7, 2), (3, 2, 5, 1), (9, 5, 5, 2), (1, 3, 3, 1),
]), default_resolution=55)
TAILS_SEED = 6


# First convs of the DSP row path (mct_fused.c general_row_dsp, im2col): "first-odd" a 3x3 stride-2 conv on 3
# channels (the unrolled 14-word patches) to 7 channels (an odd last channel paired with itself) over 15
# columns (an odd last column; both edges bounded), then 1x1 convs to 1 and 3 channels (one output channel
# on mct_dsp_pw_one: rows of 15 positions, a tail of 3); "first-5x5" a 5x5 stride-1 conv (75 taps: the
# natural tap order, 38 words, chunks of 4 columns and groups of 4 channels over 21 columns); "first-7x7"
# a 7x7 stride-2 conv (147 taps: more than a patch holds, the portable row).
FIRST_CONV_X_ZERO = 9
FIRST_CONVS = {
    "first-odd": (NetSpec("dsp-first-odd", 7, _chain(7, [(None, 4, 3, 1), (6, 5, 3, 2), (1, 3, 3, 1)]),
                          default_resolution=29), 29, 6),
    "first-5x5": (NetSpec("dsp-first-5x5", 6, _chain(6, [(None, 5, 3, 1), (9, 4, 3, 2)]), default_resolution=21,
                          stem_kernel=5, stem_stride=1), 21, 2),
    "first-7x7": (NetSpec("dsp-first-7x7", 5, _chain(5, [(None, 6, 3, 1), (7, 4, 3, 1)]), default_resolution=16,
                          stem_kernel=7), 16, 2),
}


# The widened 1x1 convs of many channels (mct_dsp_pointwise.h), at 4x4 (8 position pairs) as the late blocks
# of the paper networks: 580 -> 131 has more input channels than the buffer holds for one position pair
# (pointwise_sliced: 2 slices, the sums of 131 output channels in 2 passes, an odd last channel alone); 131 -> 150
# and 150 -> 28 have 128 or more input channels, not a multiple of 4 (pointwise_wide's gathered groups, blocks of
# 3 position pairs); 160 -> 28 a multiple of 4 (the runs from the weight's layout, no unpacking).
WIDE = NetSpec("dsp-wide-1x1", 8, _chain(8, [
    (None, 8, 3, 2), (48, 20, 3, 2), (580, 131, 3, 1), (150, 28, 3, 1), (160, 28, 3, 1),
]), default_resolution=32)
# Trained 1x1 convs of WIDE (weights in SRAM up to a split): 580 -> 131 keeps 72 input channels (a split at a
# group boundary inside pointwise_sliced's first slice), 131 -> 150 keeps 65 (inside a group: pw_runs_of),
# 160 -> 28 keeps 80 (a split from the weight's layout); their training forwards write clamp masks.
SPLIT_WIDE = ((8, 0.125), (9, 0.5), (14, 0.5))


@lru_cache(maxsize=None)
def _model(name: str):
    if name == "tails":
        return random_qmodel(TAILS, 55, CLASSES, seed=TAILS_SEED)[0]
    if name == "wide":
        return random_qmodel(WIDE, 32, CLASSES, seed=1)[0]
    if name in FIRST_CONVS:  # an input zero point other than 0: the im2col subtracts it
        spec, resolution, seed = FIRST_CONVS[name]
        q = random_qmodel(spec, resolution, CLASSES, seed=seed)[0]
        x = QTensor(q.input.scale, FIRST_CONV_X_ZERO)
        return replace(q, input=x, first_conv=replace(q.first_conv, x=x))
    return general_qmodel(name)


# Half the input channels of two 1x1 convs trained (weights in SRAM up to a split, Flash after it): 13 -> 6
# keeps 6 columns (a group of 4 from SRAM, one group straddling the split, one from Flash, the 13th channel
# alone), 6 -> 10 keeps 3 (the split inside the first group, the last group half full). The widened 1x1
# conv (mct_kernels.c pointwise_wide) reads every kind of group there, before and after the update.
SPLIT_1X1 = ((8, 0.5), (9, 0.5))


@lru_cache(maxsize=None)
def _program(name: str, scheme: str):
    q = _model(name)
    if scheme in ("split-1x1", "split-wide"):
        ratios = SPLIT_1X1 if scheme == "split-1x1" else SPLIT_WIDE
        chosen = Scheme(q.spec.name, scheme, tuple(i for i, _ in ratios), ratios)
    else:
        chosen = get_builtin(scheme, q.spec)
    return compile_for_codegen(q, resolve(chosen, q.spec), lr=0.1, seed=7)



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(name, scheme, kernels) -> (its firmware run, its folder), each built and checked once."""
    done = {}

    def run(name: str, scheme: str, kernels: str):
        if (name, scheme, kernels) not in done:
            folder = tmp_path_factory.mktemp(f"{name}-{kernels}")
            done[name, scheme, kernels] = (_firmware_equals_host(folder, name, scheme, kernels), folder / kernels)
        return done[name, scheme, kernels]

    return run


def _firmware_equals_host(tmp_path, name: str, scheme: str, kernels: str):
    program = _program(name, scheme)
    generate(program, tmp_path / "host")
    generate(program, tmp_path / kernels, kernels=kernels)
    report = build_firmware(tmp_path / kernels, strict=None)
    assert report["kernels"] == kernels
    classes = _model(name).num_classes
    images, labels = int8_images(_model(name), 5), np.arange(5) % classes
    run = run_qemu(tmp_path / kernels / report["elf"], images[:3], labels[:3], images[3:], labels[3:], classes=classes)
    assert_firmware_equals_host(run, tmp_path / "host", images[:3], labels[:3], images[3:])
    return run


def _instructions(folder) -> dict[str, int]:
    """Instruction mnemonics of the folder's cross-compiled kernels -> how often they occur."""
    text = subprocess.run(["arm-none-eabi-objdump", "-d", str(folder / "build" / "mct_kernels.o")],
                          capture_output=True, text=True, check=True).stdout
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            counts[parts[2].strip()] = counts.get(parts[2].strip(), 0) + 1
    return counts


# last-k:2: frozen blocks in row pipelines (weights in Flash) and trained ones (weights in SRAM, the
# 1x1 convs' SRAM/Flash split); split-1x1: splits inside the widened 1x1 convs' channel groups (SPLIT_1X1);
# "mixed": the general geometry of imported graphs; "wide": 1x1 convs of 128 to 580 input channels (WIDE,
# SPLIT_WIDE).
@needs_tools
@pytest.mark.parametrize("name, scheme", [("tails", "last-k:2"), ("tails", "split-1x1"), ("mixed", "full"),
                                          ("wide", "last-k:2"), ("wide", "split-wide")])
def test_dsp_firmware_equals_the_host_build_bit_for_bit(runs, name, scheme):
    run, folder = runs(name, scheme, "dsp")
    print(f"{name} {scheme} (dsp): {run.predict_instructions.mean():.0f} instructions per inference")
    used = _instructions(folder)
    assert used.get("smlad", 0) > 0 and used.get("sxtb16", 0) > 0 and used.get("smmulr", 0) > 0


@needs_tools
@pytest.mark.parametrize("name", sorted(FIRST_CONVS))
def test_dsp_first_convs_and_one_channel_1x1s_equal_the_host_build(runs, name):
    run, _ = runs(name, "last-k:2", "dsp")
    print(f"{name} (dsp): {run.predict_instructions.mean():.0f} instructions per inference")


@needs_tools
def test_portable_firmware_stays_selectable_equal_and_slower(runs):
    portable, folder = runs("tails", "last-k:2", "portable")
    assert _instructions(folder).get("smlad", 0) == 0
    dsp, _ = runs("tails", "last-k:2", "dsp")
    assert dsp.predict_instructions[0] < portable.predict_instructions[0]


def test_the_folder_says_its_kernels_and_the_host_refuses_dsp(tmp_path):
    program = _program("tails", "full")
    generate(program, tmp_path / "p")
    generate(program, tmp_path / "d", kernels="dsp")
    assert read_manifest(tmp_path / "p")["kernels"] == "portable"
    assert read_manifest(tmp_path / "d")["kernels"] == "dsp"
    assert "#define MCT_DSP 0\n" in (tmp_path / "p" / "mct_kernels.h").read_text()
    assert "#define MCT_DSP 1\n" in (tmp_path / "d" / "mct_kernels.h").read_text()
    with pytest.raises(CodegenError, match="host cannot run"):
        build_host(tmp_path / "d")
    with pytest.raises(CodegenError, match="not a kernel set"):
        generate(program, tmp_path / "x", kernels="neon")


def test_each_target_has_its_default_kernels_and_refuses_what_it_cannot_run():
    assert check_target_kernels("cortex-m7", None) == "dsp"
    assert check_target_kernels("cortex-m7", "portable") == "portable"
    assert check_target_kernels("host", None) == "portable"
    with pytest.raises(CodegenError, match="does not run on the host target"):
        check_target_kernels("host", "dsp")




def _dsp_requantize(total: int, multiplier: int, right: int, y_zero: int) -> int:
    """mct_dsp.h's mct_dsp_requantize (sum + bias = ``total``), instruction by instruction, in Python integers,
    checking that no step leaves int32."""
    doubled = 2 * total                                        # ADD with LSL #1: bias2 + 2 * sum
    x = (doubled * multiplier + 2**31) >> 32                   # SMMULR
    nudge = 2 ** (right - 1) + y_zero * 2**right
    s = x + nudge + (x >> 31)                                  # ADD, ADD with ASR #31
    assert all(-2**31 <= v < 2**31 for v in (doubled, x, nudge, x + nudge, s))
    return s >> right                                          # ASR by register


@settings(max_examples=1000, deadline=None)
@given(total=st.integers(-2**30 + 1, 2**30 - 1), multiplier=st.integers(-2**31 + 1, 2**31 - 1),
       right=st.integers(1, 22), y_zero=st.integers(-128, 127))
@example(total=2**30 - 1, multiplier=2**31 - 1, right=1, y_zero=127)
@example(total=-2**30 + 1, multiplier=2**31 - 1, right=22, y_zero=-128)
@example(total=-2**30 + 1, multiplier=-2**31 + 1, right=22, y_zero=127)
@example(total=3 * 2**7, multiplier=2**30, right=8, y_zero=0)  # a tie: x = 3 * 2^6, rounded away from zero
@example(total=-3 * 2**7, multiplier=2**30, right=8, y_zero=0)
def test_the_dsp_requantization_is_the_reference_mbqm_clamped(total, multiplier, right, y_zero):
    """The DSP requantization (mct_rq_of's fast conditions: |sum + bias| < 2^30, shift in [-22, -1], the int8
    range) gives the reference's int8 output and inside bit: MBQM (mcutrain.quant.fixedpoint), clamped to
    int16 as mct_requantize_fast clamps it, plus y_zero, clamped to [-128, 127]; its value skips the int16
    clamp, which changes nothing in int8."""
    reference = max(-2**15, min(2**15 - 1, int(multiply_by_quantized_multiplier(
        np.int32(total), np.int32(multiplier), -right)))) + y_zero
    v = _dsp_requantize(total, multiplier, right, y_zero)
    assert max(-128, min(127, v)) == max(-128, min(127, reference))
    assert (-128 < v < 127) == (-128 < reference < 127)


def _dsp_requantize_pos(total: int, multiplier: int, right: int, y_zero: int) -> int:
    """mct_dsp.h's mct_dsp_requantize_pos, instruction by instruction: the sign term of the rounding taken
    from 2a (known before the multiply) and added with the nudge inside SMMLAR's rounding."""
    doubled = 2 * total                                        # ADD with LSL #1
    nudge = 2 ** (right - 1) + y_zero * 2**right + (doubled >> 31)  # ADD with ASR #31
    s = (nudge * 2**32 + doubled * multiplier + 2**31) >> 32   # SMMLAR
    assert all(-2**31 <= v < 2**31 for v in (doubled, nudge, s))
    return s >> right                                          # ASR by register


@settings(max_examples=1000, deadline=None)
@given(total=st.integers(-2**30 + 1, 2**30 - 1), multiplier=st.integers(1, 2**31 - 1),
       right=st.integers(1, 22), y_zero=st.integers(-128, 127))
@example(total=-1, multiplier=1, right=1, y_zero=0)  # a < 0 but x = 0: the sign term must change nothing
@example(total=-2**30 + 1, multiplier=2**31 - 1, right=22, y_zero=127)
@example(total=-3 * 2**7, multiplier=2**30, right=8, y_zero=0)  # a negative tie, rounded away from zero
@example(total=-2**23, multiplier=2**30, right=1, y_zero=-128)
def test_the_positive_multiplier_requantization_is_the_general_one(total, multiplier, right, y_zero):
    """mct_rq_out's requantization (a positive multiplier: mct_rq_of's fast conditions) gives exactly the value
    of mct_dsp_requantize, so the same int8 output and inside bit as the reference."""
    assert _dsp_requantize_pos(total, multiplier, right, y_zero) == _dsp_requantize(total, multiplier, right, y_zero)
