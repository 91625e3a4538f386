"""The generated C of hand-made graphs with the TFLite ops of imported models (issue 13 item 1: conv ->
tfl_avgpool -> reshape -> linear, conv -> tfl_mean -> linear, conv -> tfl_maxpool -> reshape -> linear,
a global average pool): the host build trains like the NumPy executor (logits bit for bit before and
after, every op output equal op by op), and the Cortex-M7 build of each compiles and fits; one QEMU run
equals the host build bit for bit (test_codegen_cortex_m7's rule)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from mcutrain.codegen import build_host, generate
from mcutrain.codegen.check import op_by_op, side_by_side
from mcutrain.codegen.firmware import build_firmware, run_qemu, tools_available
from mcutrain.codegen.host import build
from tests.helpers import tfl_graphs
from tests.helpers.host_run import assert_firmware_equals_host

STEPS = 4
MISSING = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")


@lru_cache(maxsize=None)
def _program(variant: str):
    return tfl_graphs.program(variant)


@pytest.mark.parametrize("variant", tfl_graphs.VARIANTS)
def test_training_steps_match_the_numpy_executor(tmp_path, variant):
    program = _program(variant)
    # float64 (audit) accumulators: this test holds the C to the NumPy executor bit for bit (max_lsb 0,
    # bias_error 0); the default float32 mode is held to a tolerance (test_codegen_accumulate*.py).
    generate(program, tmp_path, accumulate="float64")
    images, labels = tfl_graphs.images(STEPS), np.arange(STEPS) % tfl_graphs.CLASSES
    r = side_by_side(program, build_host(tmp_path), images, labels, images[:2])
    d = r.differences
    assert r.logits_equal_before and r.logits_equal_after
    assert d["max_lsb"] == 0 and d["bias_error"] == 0 and d["loss_rel_error"] <= 1e-6
    assert d["moved"] >= 20


@pytest.mark.parametrize("variant", tfl_graphs.VARIANTS)
def test_every_op_output_matches_the_numpy_executor(tmp_path, variant):
    program = _program(variant)
    generate(program, tmp_path)
    assert op_by_op(program, build(tmp_path, trace=True), tfl_graphs.images(1, seed=9)[0], 2) == {}


def test_a_view_reshape_emits_no_copy(tmp_path):
    generate(_program("global_avgpool"), tmp_path)
    model = (tmp_path / "model.c").read_text()
    assert "a view: the output is the input's bytes" in model
    assert "mct_tfl_avgpool(" in model and "mct_avgpool_grad(" in model  # a global pool: the zoo rule
    generate(_program("maxpool"), tmp_path / "m")
    model = (tmp_path / "m" / "model.c").read_text()
    assert "mct_nchw_to_nhwc_i8(" in model and "mct_nhwc_to_nchw_f32(" in model


@pytest.mark.skipif(MISSING is not None, reason=f"Cortex-M7 tests need the cross tools: {MISSING}")
@pytest.mark.parametrize("variant", tfl_graphs.VARIANTS)
def test_cortex_m7_build_compiles(tmp_path, variant):
    generate(_program(variant), tmp_path)
    report = build_firmware(tmp_path)
    assert (tmp_path / report["elf"]).is_file()


@pytest.mark.skipif(MISSING is not None, reason=f"Cortex-M7 tests need the cross tools: {MISSING}")
def test_cortex_m7_firmware_equals_the_host_build_bit_for_bit(tmp_path):
    program = _program("maxpool")
    generate(program, tmp_path)
    report = build_firmware(tmp_path)
    images, labels = tfl_graphs.images(4), np.arange(4) % tfl_graphs.CLASSES
    run = run_qemu(tmp_path / report["elf"], images[:3], labels[:3], images[3:], labels[3:],
                   classes=tfl_graphs.CLASSES)
    print(f"TFLite ops (maxpool graph): {run.train_instructions.mean():.0f} instructions per step")
    assert_firmware_equals_host(run, tmp_path, images[:3], labels[:3], images[3:])


def test_a_fused_block_backward_after_a_global_tfl_avgpool_matches_the_numpy_executor(tmp_path):
    from mcutrain.engine.autodiff import differentiate
    from mcutrain.engine.compile import build_program
    from mcutrain.engine.loss import append_loss
    from mcutrain.engine.passes import PassOptions
    from mcutrain.quant.random_model import random_qmodel
    from mcutrain.sparse import get_builtin, resolve

    q = random_qmodel("mbv2-w0.35", 48, 4, seed=4)[0]
    plan = resolve(get_builtin("paper-99kb", q.spec), q.spec)
    forward = tfl_graphs.zoo_with_tfl_pool(q, plan)
    program = build_program(differentiate(append_loss(forward), plan), forward, PassOptions(lr=0.1, seed=11))
    assert any(op.attr("program").lazy for op in program.train.graph.ops if op.kind == "mbconv_grad")
    generate(program, tmp_path)
    images = np.random.default_rng(3).integers(-128, 128, (3, 3, 48, 48)).astype(np.int8)
    r = side_by_side(program, build_host(tmp_path), images, np.arange(3) % 4, images[:1])
    d = r.differences
    assert r.logits_equal_before and r.logits_equal_after
    assert d["max_lsb"] <= 1 and d["bias_error"] <= 1 and d["differing_fraction"] <= 1e-3 and d["moved"] >= 20
