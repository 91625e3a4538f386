"""The generated C of ``--backward int8`` (c/mct_backward8.c) equals the NumPy reference bit for bit.

Every sum of the integer backward is exact and every rounding is defined on exact values
(quant/int8_grad.py), so unlike the float32 backward there is no tolerance anywhere: the host build
must give the NumPy executor's losses, logits and parameters after N steps, and every op output
(gradient exponents and payloads included) after one; the firmware on the Cortex-M3 (no FPU, no DSP:
the core this mode is for) and on the Cortex-M7 must give the host build's, bit for bit.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from mcutrain.codegen import CODEGEN_PASSES, build_host, compile_for_codegen, generate
from mcutrain.codegen.check import op_by_op, side_by_side
from mcutrain.codegen.firmware import build_firmware, run_qemu, tools_available
from mcutrain.codegen.host import build
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve
from tests.helpers.host_run import assert_firmware_equals_host

LR, SEED, STEPS, CLASSES, RES = 0.1, 11, 5, 4, 32
MISSING = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-readelf", "qemu-system-arm")


@lru_cache(maxsize=None)
def _program(scheme: str):
    q = random_qmodel("tiny", RES, CLASSES, seed=1)[0]
    return compile_for_codegen(q, resolve(get_builtin(scheme, "tiny"), q.spec), lr=LR, seed=SEED, backward="int8")


def _data(n: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 3, RES, RES)).astype(np.int8), rng.integers(0, CLASSES, n)


def test_the_program_is_integer_after_the_loss():
    kinds = {op.kind for op in _program("full").train.graph.ops if op.phase != "forward"}
    assert "loss_grad8" in kinds and "conv2d_grad_x8" in kinds
    assert not kinds & {"requant_grad", "conv2d_grad_x", "update_weight", "mbconv_grad"}  # no float backward left
    gradients = [t for t in _program("full").train.graph.tensors.values() if t.role == "gradient"]
    assert {t.dtype for t in gradients} <= {"grad8", "grad32", "float32"}
    assert [t.name for t in gradients if t.dtype == "float32"] == ["logits.grad"]  # the K softmax values only


@pytest.mark.parametrize("scheme", ["last-k:6", "full", "bias-only"])
def test_training_steps_equal_the_numpy_executor_bit_for_bit(tmp_path, scheme):
    program = _program(scheme)
    generate(program, tmp_path)
    images, labels = _data(STEPS)
    r = side_by_side(program, build_host(tmp_path), images, labels, images[:2])
    d = r.differences
    print(f"tiny {scheme} int8: {d}")
    assert r.logits_equal_before and r.logits_equal_after
    assert d["max_lsb"] == 0 and d["bias_error"] == 0 and d["differing_fraction"] == 0 and d["loss_rel_error"] == 0
    assert d["moved"] >= 50  # it trained


@pytest.mark.parametrize("scheme", ["full", "last-k:6"])
def test_every_op_output_equals_the_numpy_executor(tmp_path, scheme):
    generate(_program(scheme), tmp_path)
    images, labels = _data(1, seed=9)
    assert op_by_op(_program(scheme), build(tmp_path, trace=True), images[0], int(labels[0])) == {}


@pytest.mark.skipif(MISSING is not None, reason=f"the firmware needs the cross tools: {MISSING}")
@pytest.mark.parametrize("core", ["cortex-m3", "cortex-m7"])
def test_firmware_equals_the_host_build_bit_for_bit(tmp_path_factory, core):
    host = tmp_path_factory.mktemp("host")
    generate(_program("full"), host)
    folder = tmp_path_factory.mktemp(core)
    generate(_program("full"), folder, kernels="portable")
    report = build_firmware(folder, core=core)
    images, labels = _data(6)
    run = run_qemu(folder / report["elf"], images[:4], labels[:4], images[4:], labels[4:], classes=CLASSES, core=core)
    print(f"{core} int8 backward: {run.train_instructions.mean():.0f} instructions per step")
    assert_firmware_equals_host(run, host, images[:4], labels[:4], images[4:])


@pytest.mark.parametrize("variant", ["mean", "mean_keep_dims", "maxpool", "avgpool", "global_avgpool"])
def test_imported_graph_ops_equal_the_numpy_executor_op_by_op(tmp_path, variant):
    """The TFLite pools, MEAN and the channels-last flatten of imported graphs, in int8 mode: every op output."""
    from mcutrain.engine.autodiff import differentiate
    from mcutrain.engine.compile import build_program
    from mcutrain.engine.loss import append_loss
    from mcutrain.engine.passes import PassOptions
    from tests.helpers import tfl_graphs

    forward = tfl_graphs.forward_graph(variant)
    joint = differentiate(append_loss(forward), tfl_graphs.update_plan())
    program = build_program(joint, forward, PassOptions(lr=0.5, seed=3, stream_input=False, backward="int8"),
                            CODEGEN_PASSES)
    assert {"tfl_maxpool_grad8", "tfl_avgpool_grad8", "avgpool_grad8"} & {op.kind for op in program.train.graph.ops}
    generate(program, tmp_path)
    lib = build(tmp_path, trace=True)
    for label, image in enumerate(tfl_graphs.images(2)):
        assert op_by_op(program, lib, image, label) == {}


def test_the_folder_says_its_backward(tmp_path):
    from mcutrain.codegen.host import read_manifest

    generate(_program("bias-only"), tmp_path)
    assert read_manifest(tmp_path)["backward"] == "int8"
