"""The demo's device stage on a core other than the M7 (``mcutrain demo --core``): the firmware is built
for that core's part and run on its QEMU board, with the host's losses; a program larger than the part
is reported as a skipped stage naming the part, not a crash (the search's budget is the user's, the
part is the core's)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mcutrain.codegen import compile_for_codegen
from mcutrain.codegen.cores import CORES, MemoryMap
from mcutrain.codegen.firmware import tools_available
from mcutrain.codegen.runner import run_host
from mcutrain.codegen.targets import build_target
from mcutrain.demo import DemoConfig, Progress, _device
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve

MISSING = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
if MISSING:
    print(f"skipping the demo device-stage tests: {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"needs the cross tools: {MISSING}")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A tiny program, its samples and the host build's run of them (what the demo has at that stage)."""
    q = random_qmodel("tiny", 32, 4, seed=1)[0]
    plan = resolve(get_builtin("last-k:6", "tiny"), q.spec)
    program = compile_for_codegen(q, plan, lr=0.05, seed=3)
    rng = np.random.default_rng(4)
    images, labels = rng.integers(-128, 128, (12, 3, 32, 32)).astype(np.int8), rng.integers(0, 4, 12)
    samples = ((images[:4], labels[:4]), (images[4:], labels[4:]))
    host_dir = tmp_path_factory.mktemp("host")
    host = run_host(host_dir, build_target(program, q, plan, "host", host_dir, log=lambda *_: None), *samples)
    return program, q, plan, samples, host


def test_the_device_stage_runs_the_chosen_core(job, tmp_path):
    program, q, plan, samples, host = job
    result: dict = {}
    _device(program, q, plan, samples, host, DemoConfig(device_steps=3, core="cortex-m33"), Progress(1), result,
            tmp_path)
    d = result["device"]
    assert d["core"] == "cortex-m33" and d["losses_equal_host"] and d["steps"] == 3
    assert d["memory_map"] == "nrf5340-app" and "mps2-an505" in d["instructions_note"]
    assert (tmp_path / "cortex-m33" / "firmware.elf").is_file()


def test_a_part_too_small_for_the_searched_program_is_a_skipped_stage(job, tmp_path, monkeypatch):
    program, q, plan, samples, host = job
    small = replace(CORES["cortex-m3"], part=MemoryMap("toy-6kb", 1024 * 1024, 6 * 1024))
    monkeypatch.setitem(CORES, "cortex-m3", small)
    result: dict = {}
    _device(program, q, plan, samples, host, DemoConfig(device_steps=3, core="cortex-m3"), Progress(1), result,
            tmp_path)
    d = result["device"]
    assert d["core"] == "cortex-m3" and "toy-6kb" in d["skipped"] and "SRAM" in d["skipped"]
