"""The Cortex-M7 firmware under QEMU with general conv geometry (issue 13) equals the host build bit for bit:
the general kernels (kh x kw, per-axis strides, asymmetric padding, 1-channel non-square input) compile
for the M7 and compute there what they compute on the host (test_codegen_cortex_m7's equality rule)."""

from __future__ import annotations

import numpy as np
import pytest

from mcutrain.codegen import compile_for_codegen, generate
from mcutrain.codegen.firmware import build_firmware, run_qemu, tools_available
from mcutrain.sparse import get_builtin, resolve
from tests.helpers.geometry import CLASSES, general_qmodel, int8_images
from tests.helpers.host_run import assert_firmware_equals_host

MISSING = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
if MISSING:
    print(f"skipping the Cortex-M7 geometry test: {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"Cortex-M7 tests need the cross tools: {MISSING}")


def test_general_geometry_firmware_equals_the_host_build_bit_for_bit(tmp_path):
    q = general_qmodel("mixed")
    program = compile_for_codegen(q, resolve(get_builtin("full", "tiny"), q.spec), lr=0.1, seed=11)
    generate(program, tmp_path)
    report = build_firmware(tmp_path)
    images, labels = int8_images(q, 4), np.arange(4) % CLASSES
    run = run_qemu(tmp_path / report["elf"], images[:3], labels[:3], images[3:], labels[3:], classes=CLASSES)
    print(f"general geometry (mixed, full): {run.train_instructions.mean():.0f} instructions per step")
    assert_firmware_equals_host(run, tmp_path, images[:3], labels[:3], images[3:])
