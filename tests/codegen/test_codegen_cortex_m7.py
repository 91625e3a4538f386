"""The Cortex-M7 firmware under QEMU computes what the host build computes, and its costs are measured.

Equality decision: bit for bit, everything, in both accumulator modes (the firmware against the host
build of the same folder). The forward pass is integer (bit-exact by construction); the loss uses the
kernels' own exp/log (mct_exp / mct_log in mct_kernels.c, not newlib's or glibc's libm), float32
arithmetic is IEEE on both (-ffp-contract=off on both builds), and float64 accumulators are
soft-float on the fp32-only FPU, which rounds IEEE-correctly like x86-64's SSE2; float32 accumulators
are the FPU's IEEE single precision, like SSE2's. So losses, logits and the trained parameters
(checksum of mct_save) must be identical; no tolerance. The float32 mode also takes fewer
instructions per step (the soft-float double is gone from the contractions; QEMU's counts are exact).

Also: the loss falls on an easy task (the digits model with a fresh head), a program too large for
the memory map fails before linking with needed vs available per region (or after linking, when the
C library tips it over: the same error, never the linker's text), and the stack is really measured.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from mcutrain.codegen import CodegenError, compile_for_codegen, generate
from mcutrain.codegen.cores import CORES
from mcutrain.codegen.firmware import (BOARD_SOURCES, STACK_RESERVE, STM32F746, MemoryMap, MemoryOverflowError,
                                        build_firmware, _link_checked, object_footprint, run_qemu, tools_available)
from mcutrain.codegen.samples import int8_samples
from mcutrain.data import load_dataset
from mcutrain.quant.head import new_head
from mcutrain.quant.model_file import load_qmodel
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve
from tests.helpers.digits_model import make_digits_models
from tests.helpers.host_run import assert_firmware_equals_host

MISSING = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
if MISSING:
    print(f"skipping the Cortex-M7 tests: {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"Cortex-M7 tests need the cross tools: {MISSING}")

LR, SEED, CLASSES, RES = 0.1, 11, 4, 32


@lru_cache(maxsize=None)
def _program(scheme: str):
    q = random_qmodel("tiny", RES, CLASSES, seed=1)[0]
    return compile_for_codegen(q, resolve(get_builtin(scheme, "tiny"), q.spec), lr=LR, seed=SEED)


def _data(n: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 3, RES, RES)).astype(np.int8), rng.integers(0, CLASSES, n)



@pytest.mark.parametrize("accumulate", ["float64", "float32"])
@pytest.mark.parametrize("scheme", ["full", "last-k:6"])
def test_firmware_under_qemu_equals_the_host_build_bit_for_bit(tmp_path, scheme, accumulate):
    generate(_program(scheme), tmp_path, accumulate=accumulate)
    report = build_firmware(tmp_path)
    assert report["accumulate"] == accumulate
    images, labels = _data(6)
    run = run_qemu(tmp_path / report["elf"], images[:4], labels[:4], images[4:], labels[4:], classes=CLASSES)
    print(f"tiny {scheme} ({accumulate}): losses {run.losses}, {run.train_instructions.mean():.0f} instructions "
          f"per step")
    assert_firmware_equals_host(run, tmp_path, images[:4], labels[:4], images[4:])


def test_float32_accumulators_take_fewer_instructions_per_step(tmp_path):
    images, labels = _data(1)
    per_step = {}
    for mode in ("float64", "float32"):
        generate(_program("full"), tmp_path / mode, accumulate=mode)
        report = build_firmware(tmp_path / mode, strict=None)
        run = run_qemu(tmp_path / mode / report["elf"], images, labels, classes=CLASSES, before=False, after=False)
        per_step[mode] = int(run.train_instructions[0])
    print(f"tiny full, instructions per step: {per_step}")
    assert per_step["float32"] < per_step["float64"]


def test_costs_are_measured_and_repeat_exactly(tmp_path):
    generate(_program("last-k:6"), tmp_path)
    report = build_firmware(tmp_path)
    images, labels = _data(3)
    runs = [run_qemu(tmp_path / report["elf"], images[:2], labels[:2], images[2:], labels[2:], classes=CLASSES)
            for _ in range(2)]
    first, second = runs
    # calibration: 2^21 loop instructions at 40 per tick
    assert first.calibration["ticks"] in (52428, 52429, 52430)
    assert np.array_equal(first.train_instructions, second.train_instructions)
    assert np.array_equal(first.predict_instructions, second.predict_instructions)
    assert first.train_instructions.min() > first.predict_instructions.max() > 0
    # the stack: measured (> the frames of main and the kernels), inside its reserve
    assert 128 < first.stack_high_water <= STACK_RESERVE
    footprint = report["footprint"]
    assert footprint["bss"] >= _program("last-k:6").train.plan.arena_bytes
    assert footprint["stack_reserve"] == STACK_RESERVE and footprint["harness_io"] >= 3 * RES * RES
    assert report["strict"]["fits"] and (tmp_path / report["strict"]["elf"]).is_file()


def test_a_program_too_large_fails_before_linking_with_the_numbers(tmp_path):
    generate(_program("full"), tmp_path)
    tiny_ram = MemoryMap("tiny-ram", STM32F746.flash_bytes, 16 * 1024)
    with pytest.raises(MemoryOverflowError, match=r"before linking\): SRAM: needs [\d,]+ bytes, 16,384 available "
                                                  r"\(over by [\d,]+\)") as err:
        build_firmware(tmp_path, memory=tiny_ram)
    needed, available = err.value.over["SRAM"]
    assert available == 16384 and needed > _program("full").train.plan.arena_bytes
    assert "Flash" not in err.value.over
    assert not (tmp_path / "firmware.elf").exists()  # never linked


def test_the_c_library_tipping_flash_over_gives_the_same_error(tmp_path):
    """An overflow found by the linker (the C library's code on top of objects that fit) is reported
    as the pre-link check reports one. The budget is one byte under the linked program; the pre-link
    estimate is given as fitting, since kernels the program never calls (dropped by --gc-sections) can
    make the objects larger than the linked image."""
    generate(_program("full"), tmp_path)
    linked = build_firmware(tmp_path, strict=None)["footprint"]["flash_bytes"]
    sources = json.loads((tmp_path / "manifest.json").read_text())["sources"] + list(BOARD_SOURCES)
    objects = [tmp_path / "build" / f"{Path(s).stem}.o" for s in sources]  # build_firmware's order: its layout
    budget = MemoryMap("exact-flash", linked - 1, STM32F746.ram_bytes)
    fits = {"Flash": 0, "SRAM": 0, "data": 0, "bss": 0, "stack_reserve": STACK_RESERVE}
    with pytest.raises(MemoryOverflowError, match=r"after linking the C library\): Flash: needs") as err:
        _link_checked(tmp_path, CORES["cortex-m7"], objects, budget, fits, tmp_path / "tipped.elf")
    needed, available = err.value.over["Flash"]
    assert available == linked - 1 and needed == linked  # the linker says by how much: "1 byte"


def test_the_strict_map_reports_rather_than_fails(tmp_path):
    generate(_program("full"), tmp_path)
    strict = MemoryMap("strict-16k", STM32F746.flash_bytes, 16 * 1024)
    report = build_firmware(tmp_path, strict=strict)
    assert report["strict"]["fits"] is False and report["strict"]["over"]["SRAM"]["available"] == 16384
    assert (tmp_path / "firmware.elf").is_file()


@pytest.fixture(scope="module")
def digits_new_head(tmp_path_factory):
    """The digits model (pretrained, int8) with a zero-initialised head: an easy task with room to learn."""
    model = load_qmodel(make_digits_models(tmp_path_factory.mktemp("digits"))[1])
    return new_head(model, model.classes)


def test_the_loss_falls_on_digits_under_qemu(tmp_path, digits_new_head):
    q = digits_new_head
    plan = resolve(get_builtin("last-layer", "tiny"), q.spec)
    generate(compile_for_codegen(q, plan, lr=0.05, seed=0), tmp_path)
    report = build_firmware(tmp_path, strict=None)
    data = load_dataset("digits", seed=0)
    draw = dict(resolution=q.resolution, preprocessing=q.preprocessing, input_scale=q.input.scale,
                input_zero=q.input.zero)
    images, labels = int8_samples(data.train, 48, seed=0, **draw)
    held_images, held_labels = int8_samples(data.test, 40, seed=1, **draw)
    run = run_qemu(tmp_path / report["elf"], images, labels, held_images, held_labels, classes=len(q.classes))
    first, last = run.losses[:12].mean(), run.losses[-12:].mean()
    before = np.mean(run.classes["before"] == held_labels)
    after = np.mean(run.classes["after"] == held_labels)
    print(f"digits, last layer, 48 steps under QEMU: loss {first:.3f} -> {last:.3f}, accuracy {before} -> {after}")
    assert last < 0.8 * first
    assert after > before + 0.2


def test_the_firmware_refuses_foreign_input_and_a_hung_run_is_killed(tmp_path):
    generate(_program("last-k:6"), tmp_path)
    elf = tmp_path / build_firmware(tmp_path, strict=None)["elf"]
    images, labels = _data(1)
    with pytest.raises(CodegenError, match="input file made for another model"):
        run_qemu(elf, images, labels, classes=CLASSES + 1)
    with pytest.raises(CodegenError, match="took more than 0 s and was killed"):
        run_qemu(elf, images, labels, classes=CLASSES, timeout=0.01)
