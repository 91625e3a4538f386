"""Every Cortex-M core of ``codegen.cores`` builds, runs under its QEMU board and equals the host build.

Equality decision: bit for bit, as for the Cortex-M7 (tests/codegen/test_codegen_cortex_m7.py says
why): losses, logits, the saved parameters and the whole arena after training. The Cortex-M3 has no
FPU, so its float32 is libgcc's soft-float; IEEE rounds it the same way, so the bits are the same.
The DSP cores run the "dsp" forward kernels against the host's portable ones: the same integers.

The Cortex-M55's Helium paths (c/mct_mve.h: 1x1 convs and depthwise interiors, in its dsp kernels) get
their own case: the DSP tests' model whose channel counts, widths, strides and kernels reach every tail,
with frozen and trained blocks (weight rows split between SRAM and Flash), against the host's portable
build, bit for bit; and the build really contains Helium multiply-accumulates.

Also: the linker script puts each section where the core's board needs it (the vector table where
the board reads it, SRAM at the board's SRAM), a part's own memory is what the build checks against,
a folder with kernels the core cannot run is refused with one clear line, and the API's target list
is the core table's.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache

import numpy as np
import pytest

from mcutrain.api.compiling import TARGETS
from mcutrain.codegen import CodegenError, compile_for_codegen, generate
from mcutrain.codegen.cores import CORES, MemoryMap
from mcutrain.codegen.firmware import MemoryOverflowError, build_firmware, run_qemu, tools_available
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve
from tests.helpers.host_run import assert_firmware_equals_host

MISSING = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-readelf", "qemu-system-arm")
if MISSING:
    print(f"skipping the Cortex-M core tests: {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"Cortex-M core tests need the cross tools: {MISSING}")

CLASSES, RES = 4, 32
OTHER_CORES = [name for name in CORES if name != "cortex-m7"]  # the M7 has its own tests


@lru_cache(maxsize=None)
def _program():
    q = random_qmodel("tiny", RES, CLASSES, seed=1)[0]
    return compile_for_codegen(q, resolve(get_builtin("full", "tiny"), q.spec), lr=0.1, seed=11)


@pytest.fixture(scope="module")
def host_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("host")
    generate(_program(), folder, kernels="portable")
    return folder


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.integers(-128, 128, (n, 3, RES, RES)).astype(np.int8), rng.integers(0, CLASSES, n)


@pytest.mark.parametrize("core", OTHER_CORES)
def test_firmware_on_each_core_equals_the_host_build_bit_for_bit(tmp_path, host_folder, core):
    row = CORES[core]
    generate(_program(), tmp_path, kernels=row.kernels[0])
    report = build_firmware(tmp_path, core=core)
    assert (report["core"], report["machine"], report["kernels"]) == (core, row.machine, row.kernels[0])
    images, labels = _data(6)
    run = run_qemu(tmp_path / report["elf"], images[:4], labels[:4], images[4:], labels[4:], classes=CLASSES,
                   core=core)
    print(f"{core} ({row.machine}, {row.kernels[0]}): {run.train_instructions.mean():.0f} instructions per step, "
          f"stack {run.stack_high_water} B")
    assert run.instructions_per_tick == row.instructions_per_tick
    assert run.train_instructions.min() > run.predict_instructions.max() > 0  # the clock really counts
    assert 0 < run.stack_high_water <= run.stack_space
    assert_firmware_equals_host(run, host_folder, images[:4], labels[:4], images[4:])
    _assert_sections_placed(tmp_path / report["elf"], row)


def test_helium_kernels_on_the_m55_equal_the_host_build_bit_for_bit(tmp_path):
    from tests.codegen.test_codegen_dsp import CLASSES as TAILS_CLASSES, TAILS, TAILS_SEED

    q = random_qmodel(TAILS, 55, TAILS_CLASSES, seed=TAILS_SEED)[0]
    program = compile_for_codegen(q, resolve(get_builtin("last-k:2", q.spec), q.spec), lr=0.1, seed=7)
    generate(program, tmp_path / "host", kernels="portable")
    generate(program, tmp_path / "m55", kernels="dsp")
    report = build_firmware(tmp_path / "m55", core="cortex-m55")
    images = np.random.default_rng(3).integers(-128, 128, (5, 3, 55, 55)).astype(np.int8)
    labels = np.arange(5) % TAILS_CLASSES
    run = run_qemu(tmp_path / "m55" / report["elf"], images[:3], labels[:3], images[3:], labels[3:],
                   classes=TAILS_CLASSES, core="cortex-m55")
    assert not np.array_equal(run.logits["before"][0], run.logits["before"][1])  # every layer reaches them
    assert_firmware_equals_host(run, tmp_path / "host", images[:3], labels[:3], images[3:])
    disassembly = subprocess.run(["arm-none-eabi-objdump", "-d", "-m", "armv8.1-m.main",
                                  str(tmp_path / "m55" / "build" / "mct_kernels.o")],
                                 capture_output=True, text=True, check=True).stdout
    assert disassembly.count("vmla.s32") >= 8 and "vldrb.s32" in disassembly and "vrmulh.s32" in disassembly


def _assert_sections_placed(elf, row) -> None:
    """Each section at the board's address for it, inside the part's sizes."""
    out = subprocess.run(["arm-none-eabi-readelf", "-S", "-W", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    address = {}
    for line in out.splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 4 and parts[1].startswith("."):
            address[parts[1]] = (int(parts[3], 16), int(parts[5], 16))
    assert address[".isr_vector"][0] == row.vector_origin
    text_start = address[".text"][0]
    assert row.flash_origin <= text_start < row.flash_origin + row.part.flash_bytes
    bss_start, bss_size = address[".bss"]
    assert row.ram_origin <= bss_start and bss_start + bss_size <= row.ram_origin + row.part.ram_bytes
    assert address[".hostio"][0] == row.hostio_origin


def test_a_part_too_small_fails_before_linking_naming_it(tmp_path):
    generate(_program(), tmp_path, kernels="portable")
    tiny = MemoryMap("toy-part", 1024 * 1024, 16 * 1024)
    with pytest.raises(MemoryOverflowError) as err:
        build_firmware(tmp_path, memory=tiny, core="cortex-m3")
    assert "toy-part" in str(err.value) and "SRAM" in err.value.over and "\n" not in str(err.value)


def test_dsp_kernels_are_refused_on_a_core_without_the_dsp_extension(tmp_path):
    generate(_program(), tmp_path, kernels="dsp")
    with pytest.raises(CodegenError, match="cortex-m3 cannot run") as err:
        build_firmware(tmp_path, core="cortex-m3")
    assert "\n" not in str(err.value)


def test_an_unknown_core_is_named_with_the_choices(tmp_path):
    generate(_program(), tmp_path, kernels="portable")
    with pytest.raises(CodegenError, match="unknown core 'cortex-m0'.*cortex-m55"):
        build_firmware(tmp_path, core="cortex-m0")


def test_the_api_targets_are_the_host_and_the_core_table():
    assert TARGETS == ("host", *CORES)


def test_each_row_is_complete_and_its_clock_is_whole_nanoseconds():
    for name, row in CORES.items():
        assert row.name == name and row.machine and row.arch_flags[0] == f"-mcpu={name}"
        assert row.kernels[-1] == "portable" and ("dsp" in row.kernels) == row.dsp
        assert ("-mfloat-abi=soft" in row.arch_flags) == (not row.fpu)
        assert row.part.ram_bytes >= 128 * 1024 and row.part.flash_bytes >= 1024 * 1024
        assert float(1e9 / row.instructions_per_tick).is_integer()  # the timer's clock in Hz
