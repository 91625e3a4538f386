"""The Cortex-M7 firmware under QEMU with general conv geometry (issue 13) equals the host build bit for bit:
the general kernels (kh x kw, per-axis strides, asymmetric padding, 1-channel non-square input) compile
for the M7 and compute there what they compute on the host (test_codegen_cortex_m7's equality rule)."""

from __future__ import annotations

import numpy as np
import pytest

from mcutrain.codegen import HostEngine, build_host, compile_for_codegen, generate
from mcutrain.codegen.cortex_m7 import build_cortex_m7, fnv1a, run_qemu, tools_available
from mcutrain.sparse import get_builtin, resolve
from tests.helpers.geometry import CLASSES, general_qmodel, int8_images

MISSING = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
if MISSING:
    print(f"skipping the Cortex-M7 geometry test: {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"Cortex-M7 tests need the cross tools: {MISSING}")


def test_general_geometry_firmware_equals_the_host_build_bit_for_bit(tmp_path):
    q = general_qmodel("mixed")
    program = compile_for_codegen(q, resolve(get_builtin("full", "tiny"), q.spec), lr=0.1, seed=11)
    generate(program, tmp_path)
    report = build_cortex_m7(tmp_path)
    images, labels = int8_images(q, 4), np.arange(4) % CLASSES
    run = run_qemu(tmp_path / report["elf"], images[:3], labels[:3], images[3:], labels[3:], classes=CLASSES)
    engine = HostEngine(build_host(tmp_path))
    before = np.concatenate([engine.predict(x) for x in images[3:]])
    losses = np.array([engine.train_step(x, int(y)) for x, y in zip(images[:3], labels[:3])], np.float32)
    after = np.concatenate([engine.predict(x) for x in images[3:]])
    print(f"general geometry (mixed, full): {run.train_instructions.mean():.0f} instructions per step")
    assert run.losses.tobytes() == losses.tobytes()
    assert run.logits["before"].tobytes() == before.tobytes()
    assert run.logits["after"].tobytes() == after.tobytes()
    assert not np.array_equal(before, after)
    assert run.save_fnv1a == fnv1a(engine.save()) and run.steps == 3
