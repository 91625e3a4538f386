"""The Cortex-M7 per-op profile build (``build_firmware(..., profile=True)``) times every op without
changing what the firmware computes or what the default firmware costs.

What must hold: the profile firmware's losses, logits and trained parameters equal the default
firmware's bit for bit (the hook only reads the timer); the default ``firmware.elf`` built beside it
costs exactly what a build without ``profile`` costs; the per-op counts (hook cost subtracted) sum to
the DEFAULT build's measured step and inference within the stated unmeasured overhead (the hook
sites' NULL test and argument set-up, at most ``SITE_INSTRUCTIONS`` per op, plus one tick at each
end); and every op of the schedule is there, in order, with the instructions it took.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from mcutrain.codegen import CodegenError, compile_for_codegen, generate
from mcutrain.codegen.firmware import (INSTRUCTIONS_PER_TICK, build_firmware, op_profile, run_qemu, schedule_ops,
                                        tools_available)
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve

MISSING = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"Cortex-M7 tests need the cross tools: {MISSING}")

CLASSES, RES = 4, 32
SITE_INSTRUCTIONS = 12  # per op: what the probe cannot see (measured: about 8 on the tiny model)


@lru_cache(maxsize=None)
def _program():
    q = random_qmodel("tiny", RES, CLASSES, seed=1)[0]
    return compile_for_codegen(q, resolve(get_builtin("last-k:6", "tiny"), q.spec), lr=0.1, seed=11)


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.integers(-128, 128, (n, 3, RES, RES)).astype(np.int8), rng.integers(0, CLASSES, n)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(default run, profile run, build report) on 3 training and 2 held-out samples."""
    folder = tmp_path_factory.mktemp("profile")
    generate(_program(), folder)
    report = build_firmware(folder, strict=None, profile=True)
    images, labels = _data(5)
    samples = (images[:3], labels[:3], images[3:], labels[3:])
    default = run_qemu(folder / report["elf"], *samples, classes=CLASSES)
    profile = run_qemu(folder / report["profile"]["elf"], *samples, classes=CLASSES)
    return default, profile, report


def test_the_profile_build_computes_what_the_default_build_computes(runs):
    default, profile, _ = runs
    assert profile.losses.tobytes() == default.losses.tobytes()
    for phase in ("before", "after"):
        assert profile.logits[phase].tobytes() == default.logits[phase].tobytes()
    assert profile.save_fnv1a == default.save_fnv1a
    # ... and it did time something: the hooks cost instructions the default build does not spend
    assert np.all(profile.train_instructions > default.train_instructions)


def test_per_op_counts_sum_to_the_default_step_within_the_stated_overhead(runs):
    default, profile, _ = runs
    ops = schedule_ops(_program())
    for stage, totals in (("train", default.train_instructions), ("inference", default.predict_instructions)):
        for index in range(2):  # the first two steps / predictions: each has its own profile line
            p = op_profile(profile, ops[stage], index=index, stage=stage)
            attributed = sum(r["instructions"] for r in p["ops"])
            bound = SITE_INSTRUCTIONS * len(ops[stage]) + 2 * INSTRUCTIONS_PER_TICK
            print(f"{stage} {index}: ops sum {attributed}, default build {totals[index]}, bound {bound}, hook "
                  f"{p['hook_instructions_per_op']} per op")
            assert abs(attributed - int(totals[index])) <= bound
            # the profile build's own total is the default's plus the hooks (measured) and the sites
            extra = p["total_instructions"] - int(totals[index]) - p["hook_instructions"]
            assert 0 <= extra <= bound


def test_every_op_of_the_schedule_is_timed_in_order(runs):
    _, profile, _ = runs
    ops = schedule_ops(_program())
    p = op_profile(profile, ops["train"], stage="train")
    assert [r["op"] for r in p["ops"]] == [op.name for op in _program().train.graph.ops]
    assert {r["phase"] for r in p["ops"]} == {"forward", "backward", "update"}
    assert all(r["instructions"] > 0 for r in p["ops"])
    assert 5 < p["hook_instructions_per_op"] < 60  # a call, a timer read and a store
    # the training step's forward repeats the inference's first ops: the same kernels, the same counts
    first = op_profile(profile, ops["inference"], stage="inference")["ops"][0]
    assert abs(p["ops"][0]["instructions"] - first["instructions"]) <= 2 * INSTRUCTIONS_PER_TICK
    with pytest.raises(CodegenError, match="traced 35 train ops, the schedule has 34"):
        op_profile(profile, ops["train"][:-1], stage="train")
    with pytest.raises(CodegenError, match="has 3 train profile"):
        op_profile(profile, ops["train"], index=3, stage="train")


def test_the_default_firmware_costs_the_same_with_or_without_a_profile_build(runs, tmp_path):
    default, _, _ = runs
    generate(_program(), tmp_path)
    report = build_firmware(tmp_path, strict=None)
    assert "profile" not in report and not (tmp_path / "firmware-profile.elf").exists()
    images, labels = _data(5)
    plain = run_qemu(tmp_path / report["elf"], images[:3], labels[:3], images[3:], labels[3:], classes=CLASSES)
    assert np.array_equal(plain.train_instructions, default.train_instructions)
    assert np.array_equal(plain.predict_instructions, default.predict_instructions)
    assert plain.hook_cost is None and plain.profiles == []
    with pytest.raises(CodegenError, match="no per-op profile"):
        op_profile(plain, schedule_ops(_program())["train"])
