"""The generated engine guards itself (model.h's API comment): on the host build.

A planted huge learning rate (1e6: without the guard the digits model ends at chance) is caught, rolled
back to the Flash parameters and halved until training is sane again, and the run ends with useful
accuracy; a normal rate never rolls back; a caller-lent buffer gets trusted snapshots that a rollback
restores instead of Flash (and a pending one is never restored); the guard's SRAM is counted by the
compile report, exactly as the cross-compiled model.o has it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from mcutrain.codegen import HostEngine, build_host, compile_for_codegen, generate
from mcutrain.codegen.generate import GUARD_SNAPSHOT_EVERY, GUARD_TRUST_STEPS
from mcutrain.codegen.runner import run_host
from mcutrain.codegen.samples import int8_samples
from mcutrain.codegen.storage import SAVE_CRC_BYTES, SAVE_HEADER_BYTES, STEP_FLAGS
from mcutrain.codegen.targets import build_target, read_target
from mcutrain.data import load_dataset
from mcutrain.engine.memory import ENGINE_STATE_BYTES
from mcutrain.quant.model_file import load_qmodel
from mcutrain.sparse import get_builtin, resolve
from mcutrain.sparse.permute import prepare_model
from tests.helpers.digits_model import make_digits_models

HUGE_LR, NORMAL_LR, STEPS, HELD_OUT = 1e6, 0.01, 600, 300


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """The digits model (tiny @16, pretrained, int8): ~95% before any on-device step."""
    return load_qmodel(make_digits_models(tmp_path_factory.mktemp("digits"))[1])


def samples(q, steps: int = STEPS, held_out: int = HELD_OUT):
    data = load_dataset("digits", seed=0)
    draw = dict(resolution=q.resolution, preprocessing=q.preprocessing, input_scale=q.input.scale,
                input_zero=q.input.zero)
    return int8_samples(data.train, steps, seed=0, **draw), int8_samples(data.test, held_out, seed=1, **draw)


def host_folder(q, lr: float, out, scheme: str = "full"):
    """``mcutrain compile MODEL --scheme full --lr LR --target host --out OUT``, as the CLI does it."""
    plan = resolve(get_builtin(scheme, q.spec.name), q.spec)
    program = compile_for_codegen(prepare_model(q, plan), plan, lr=lr, seed=0)
    build_target(program, q, plan, "host", out, log=lambda _m: None)
    return program


def run(q, lr: float, out) -> dict:
    host_folder(q, lr, out)
    train, held_out = samples(q)
    return run_host(out, read_target(out), train, held_out)


def test_a_planted_huge_learning_rate_is_rolled_back_to_useful_accuracy(tmp_path, digits_model):
    huge, normal = run(digits_model, HUGE_LR, tmp_path / "huge"), run(digits_model, NORMAL_LR, tmp_path / "normal")
    g, acc = huge["guard"], huge["accuracy"]
    print(f"lr {HUGE_LR:g}: accuracy {acc['before']:.3f} -> {acc['after']:.3f}, {g['rollbacks']} rollbacks, final lr "
          f"{g['lr_final']:.4g}; lr {NORMAL_LR}: {normal['accuracy']['after']:.3f}")
    assert g["rollbacks"] >= 1 and len(g["events"]) == g["rollbacks"]
    assert all(e["restored"] == "flash" for e in g["events"])  # no buffer lent: the initial parameters
    # Halved once per rollback, exactly (float32), from the compiled rate.
    assert np.float32(g["lr_final"]) == np.float32(HUGE_LR) / np.float32(2.0 ** g["rollbacks"])
    assert [e["lr_after"] for e in g["events"]] == [float(np.float32(HUGE_LR) / np.float32(2.0 ** k))
                                                    for k in range(1, g["rollbacks"] + 1)]
    assert g["events"][0]["loss"] > 1000  # what blew up (log 10 = 2.3 is chance)
    assert g["lr_final"] < 0.1
    # Useful accuracy: far above chance (10%), close to the normal rate's (without the guard: chance).
    assert acc["after"] >= 0.6 and acc["after"] >= normal["accuracy"]["after"] - 0.15
    assert normal["guard"] == {"rollbacks": 0, "lr_final": float(np.float32(NORMAL_LR)), "events": []}


def test_a_normal_learning_rate_never_rolls_back(tmp_path, digits_model):
    host_folder(digits_model, NORMAL_LR, tmp_path)
    engine = HostEngine(build_host(tmp_path))
    (images, labels), _ = samples(digits_model, steps=1000, held_out=0)
    statuses = []
    for x, y in zip(images, labels):
        engine.train_step(x, int(y))
        statuses.append(engine.status)
    assert statuses == [0] * len(labels) and engine.rollbacks == 0
    assert engine.learning_rate == float(np.float32(NORMAL_LR))
    assert 0 < engine.loss_average < np.log(10)  # it learns (the estimate starts at log K)


def payload(snapshot: bytes) -> bytes:
    return snapshot[SAVE_HEADER_BYTES:-SAVE_CRC_BYTES]


def train_until(engine: HostEngine, images, labels, start: int, stop) -> int:
    """Train from sample ``start`` until ``stop(status)``; returns the step it stopped at."""
    for i in range(start, len(labels)):
        engine.train_step(images[i], int(labels[i]))
        if stop(engine.status):
            return i + 1
    raise AssertionError("the run ended before the awaited status")


def test_a_rollback_restores_the_trusted_snapshot_of_the_lent_buffer(tmp_path, digits_model):
    host_folder(digits_model, NORMAL_LR, tmp_path)
    engine = HostEngine(build_host(tmp_path))
    initial = payload(engine.save())
    assert engine.lend_guard_buffer(engine.manifest["save_bytes"] - 1) == -1  # too small: nothing lent
    assert engine.lend_guard_buffer() == 0
    (images, labels), _ = samples(digits_model, steps=GUARD_SNAPSHOT_EVERY + GUARD_TRUST_STEPS + 40, held_out=0)
    saved = train_until(engine, images, labels, 0, lambda s: s & STEP_FLAGS["snapshot_saved"])
    assert saved == GUARD_SNAPSHOT_EVERY and engine.guard_snapshot() == engine.save()  # written after the step
    snapshot = engine.guard_snapshot()
    trusted = train_until(engine, images, labels, saved, lambda s: s & STEP_FLAGS["snapshot_trusted"])
    assert trusted == saved + GUARD_TRUST_STEPS and engine.guard_snapshot() == snapshot
    engine.learning_rate = HUGE_LR  # plant a blow-up after the snapshot was trusted
    rolled = train_until(engine, images, labels, trusted, lambda s: s & STEP_FLAGS["rolled_back"])
    assert engine.status & STEP_FLAGS["from_snapshot"] and engine.rollbacks == 1
    assert payload(engine.save()) == payload(snapshot) != initial  # the newer snapshot, not Flash
    assert engine.learning_rate == HUGE_LR / 2 and engine.step == rolled  # a rollback does not rewind steps


def test_a_pending_snapshot_is_never_restored(tmp_path, digits_model):
    """A blow-up before the newest snapshot is trusted: it may hold what blew up, so Flash it is."""
    host_folder(digits_model, NORMAL_LR, tmp_path)
    engine = HostEngine(build_host(tmp_path))
    initial = payload(engine.save())
    assert engine.lend_guard_buffer() == 0
    (images, labels), _ = samples(digits_model, steps=GUARD_SNAPSHOT_EVERY + 40, held_out=0)
    saved = train_until(engine, images, labels, 0, lambda s: s & STEP_FLAGS["snapshot_saved"])
    engine.learning_rate = HUGE_LR
    train_until(engine, images, labels, saved, lambda s: s & STEP_FLAGS["rolled_back"])
    assert not engine.status & STEP_FLAGS["from_snapshot"]
    assert payload(engine.save()) == initial


def test_a_non_finite_or_huge_loss_rolls_back_at_once(tmp_path, digits_model):
    host_folder(digits_model, NORMAL_LR, tmp_path)
    engine = HostEngine(build_host(tmp_path))
    (images, labels), _ = samples(digits_model, steps=4, held_out=0)
    engine.learning_rate = float("inf")  # the update writes saturated biases: the next loss is huge or NaN
    engine.train_step(images[0], int(labels[0]))
    loss = engine.train_step(images[1], int(labels[1]))
    assert not loss <= 50 and engine.status & STEP_FLAGS["rolled_back"] and engine.rollbacks == 1
    assert engine.loss_average == np.float32(np.log(10))  # the estimate restarts at log K
    assert engine.train_step(images[2], int(labels[2])) < 10 and engine.status == 0  # Flash parameters: sane


def test_refused_steps_say_so(tmp_path, digits_model):
    host_folder(digits_model, NORMAL_LR, tmp_path, scheme="last-layer")
    engine = HostEngine(build_host(tmp_path))
    assert engine._lib.mct_train_step(None, 0) == -1.0 and engine.status == STEP_FLAGS["refused"]


def test_the_guard_state_is_counted_in_the_compile_report_and_model_h(tmp_path, digits_model):
    program = host_folder(digits_model, NORMAL_LR, tmp_path)
    r = program.report
    assert r["engine_state_bytes"] == ENGINE_STATE_BYTES > 0
    assert r["total_sram_bytes"] == r["arena_bytes"] + r["trainable_bytes"] + ENGINE_STATE_BYTES
    guard = read_target(tmp_path)["guard"]  # what compile --json shows under "target"
    assert guard["state_bytes"] == ENGINE_STATE_BYTES and guard["window"] == 32
    header = (tmp_path / "model.h").read_text()
    assert re.search(rf"#define MCT_STATE_BYTES {ENGINE_STATE_BYTES}\b", header)
    # model.c refuses to build on a 32-bit device when the struct is not that size (the host is 64-bit:
    # tests/codegen/test_codegen_guard_m7.py cross-compiles it), and states what it counts.
    assert "sizeof(mct_engine_state) == MCT_STATE_BYTES" in (tmp_path / "model.c").read_text()


def test_every_update_reads_the_one_runtime_learning_rate(tmp_path, digits_model):
    plan = resolve(get_builtin("full", "tiny"), digits_model.spec)
    generate(compile_for_codegen(prepare_model(digits_model, plan), plan, lr=NORMAL_LR, seed=0), tmp_path)
    source = (tmp_path / "model.c").read_text()
    updates = re.findall(r"static const mct_update \w+ = \{[^}]*\}", source)
    assert updates and all(".lr = &engine.lr" in u for u in updates)
    assert "#define MCT_LR 1e-02f" in (tmp_path / "model.h").read_text()
