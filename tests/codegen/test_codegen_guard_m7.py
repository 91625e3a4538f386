"""The engine's guard on the Cortex-M7 firmware under QEMU: it recovers a planted huge learning rate as
the host build does, bit for bit (losses, the guard's status and learning rate after every step,
the trained parameters), and its state is the SRAM that ``mcutrain compile`` counts: the
cross-compiled model.o holds exactly arena + trained copies + ``ENGINE_STATE_BYTES`` of .data/.bss.
Skipped, with the reason printed, where the cross compiler or QEMU is missing.
"""

from __future__ import annotations

import numpy as np
import pytest

from mcutrain.codegen import HostEngine, build_host
from mcutrain.codegen.firmware import STM32F746, build_firmware, fnv1a, object_footprint, tools_available
from mcutrain.codegen.runner import run_firmware, run_host
from mcutrain.codegen.storage import STEP_FLAGS
from mcutrain.codegen.targets import build_target, read_target
from mcutrain.engine.memory import ENGINE_STATE_BYTES
from mcutrain.quant.model_file import load_qmodel
from mcutrain.sparse import get_builtin, resolve
from mcutrain.sparse.permute import prepare_model
from tests.codegen.test_codegen_guard import HUGE_LR, host_folder, samples
from tests.helpers.digits_model import make_digits_models

MISSING = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
if MISSING:
    print(f"skipping the Cortex-M7 guard tests: {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"Cortex-M7 tests need the cross tools: {MISSING}")


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    return load_qmodel(make_digits_models(tmp_path_factory.mktemp("digits"))[1])


def test_a_planted_huge_learning_rate_recovers_under_qemu_as_on_the_host(tmp_path, digits_model):
    q = digits_model
    plan = resolve(get_builtin("full", q.spec.name), q.spec)
    from mcutrain.codegen import compile_for_codegen

    program = compile_for_codegen(prepare_model(q, plan), plan, lr=HUGE_LR, seed=0)
    build_target(program, q, plan, "cortex-m7", tmp_path / "m7", memory=STM32F746, log=lambda _m: None)
    train, held_out = samples(q)
    m7 = run_firmware(tmp_path / "m7", read_target(tmp_path / "m7"), train, held_out)
    host_folder(q, HUGE_LR, tmp_path / "host")
    host = run_host(tmp_path / "host", read_target(tmp_path / "host"), train, held_out)
    g, acc = m7["guard"], m7["accuracy"]
    print(f"QEMU, lr {HUGE_LR:g}: accuracy {acc['before']:.3f} -> {acc['after']:.3f}, {g['rollbacks']} rollbacks, "
          f"final lr {g['lr_final']:.4g}")
    assert g["rollbacks"] >= 1 and acc["after"] >= 0.6 and g["lr_final"] < 0.1
    assert g == host["guard"]  # every event: step, loss, learning rate after, where from
    assert np.asarray(m7["losses"], np.float32).tobytes() == np.asarray(host["losses"], np.float32).tobytes()
    assert acc == host["accuracy"]
    engine = HostEngine(build_host(tmp_path / "host"))  # the host's parameters after the same steps
    for x, y in zip(*train):
        engine.train_step(x, int(y))
    assert m7["save_fnv1a"] == f"{fnv1a(engine.save()):08x}"


def test_the_firmware_reports_each_steps_status_and_rate(tmp_path, digits_model):
    from mcutrain.codegen.firmware import run_qemu

    host_folder(digits_model, HUGE_LR, tmp_path)  # host folder: generate; then the firmware beside it
    report = build_firmware(tmp_path, strict=None)
    (images, labels), _ = samples(digits_model, steps=8, held_out=0)
    run = run_qemu(tmp_path / report["elf"], images, labels, classes=10, before=False, after=False)
    engine = HostEngine(build_host(tmp_path))
    statuses, rates = [], []
    for x, y in zip(images, labels):
        engine.train_step(x, int(y))
        statuses.append(engine.status)
        rates.append(engine.learning_rate)
    assert run.statuses.tolist() == statuses and any(s & STEP_FLAGS["rolled_back"] for s in statuses)
    assert run.learning_rates.tolist() == rates and run.lr_final == rates[-1]
    assert run.rollbacks == engine.rollbacks >= 1


def test_the_guard_state_is_the_sram_compile_counts(tmp_path, digits_model):
    """model.o's .data + .bss = arena + trained copies + engine state, to the byte: what the compile
    report adds up (and model.c's static check ties the struct to MCT_STATE_BYTES on the device)."""
    program = host_folder(digits_model, 0.01, tmp_path)
    build_firmware(tmp_path, strict=None)
    r = program.report
    model_o = object_footprint([tmp_path / "build" / "model.o"], 0)
    assert model_o["data"] + model_o["bss"] == r["arena_bytes"] + r["trainable_bytes"] + ENGINE_STATE_BYTES
    assert model_o["data"] + model_o["bss"] == r["total_sram_bytes"]
