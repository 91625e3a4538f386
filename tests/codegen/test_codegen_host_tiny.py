"""The host build of the generated C computes what the NumPy reference executor computes (tiny, res 32).

Forward: logits bit for bit, before and after training. Training: N steps at batch 1 with the same
images and labels: int8 weights identical except <= 1 LSB on <= 0.1% of the elements, loss within 1e-5
(relative), and the weights really moved. Op by op: every output of every op of both programs
(int8 activations, packed clamp masks byte for byte, float32 gradients to 1e-5). Plus the C API's own
behaviour: save / restore, bad inputs, one state per library.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import numpy as np
import pytest

from mcutrain.codegen import CodegenError, HostEngine, build_host, compile_for_codegen, generate
from mcutrain.codegen.check import op_by_op, side_by_side
from mcutrain.codegen.host import build
from mcutrain.engine.compile import compile_training
from mcutrain.engine.passes import insert_updates, prune, reorder
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve

LR, SEED, STEPS, CLASSES, RES = 0.1, 11, 5, 4, 32


@lru_cache(maxsize=None)
def _qmodel():
    return random_qmodel("tiny", RES, CLASSES, seed=1)[0]


@lru_cache(maxsize=None)
def _program(scheme: str):
    q = _qmodel()
    return compile_for_codegen(q, resolve(get_builtin(scheme, "tiny"), q.spec), lr=LR, seed=SEED)


def _data(n: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 3, RES, RES)).astype(np.int8), rng.integers(0, CLASSES, n)


def _engine(tmp_path, scheme: str = "full") -> HostEngine:
    generate(_program(scheme), tmp_path)
    return HostEngine(build_host(tmp_path))


@pytest.mark.parametrize("scheme", ["last-k:6", "full", "bias-only"])
def test_training_steps_match_the_numpy_executor(tmp_path, scheme):
    program = _program(scheme)
    generate(program, tmp_path)
    images, labels = _data(STEPS)
    r = side_by_side(program, build_host(tmp_path), images, labels, images[:2])
    d = r.differences
    print(f"tiny {scheme}: {d}; train step C {r.c_train_ms:.3f} ms, NumPy {r.numpy_train_ms:.3f} ms")
    assert r.logits_equal_before and r.logits_equal_after
    assert d["max_lsb"] <= 1 and d["bias_error"] <= 1
    assert d["differing_fraction"] <= 1e-3
    assert d["loss_rel_error"] <= 1e-5
    assert d["moved"] >= 50


@pytest.mark.parametrize("scheme", ["full", "last-k:6"])
def test_every_op_output_matches_the_numpy_executor(tmp_path, scheme):
    generate(_program(scheme), tmp_path)
    images, labels = _data(1, seed=9)
    assert op_by_op(_program(scheme), build(tmp_path, trace=True), images[0], int(labels[0])) == {}


def test_save_and_restore_round_trip(tmp_path):
    engine = _engine(tmp_path)
    images, labels = _data(4)
    engine.train_step(images[0], int(labels[0]))
    saved, params = engine.save(), engine.parameters()
    assert saved[:4] == b"MCTS" and len(saved) == engine.manifest["save_bytes"]
    for x, y in zip(images[1:], labels[1:]):
        engine.train_step(x, int(y))
    assert engine.step == 4
    assert any(not np.array_equal(params[k], v) for k, v in engine.parameters().items())
    engine.restore(saved)
    assert engine.step == 1
    assert all(np.array_equal(params[k], v) for k, v in engine.parameters().items())
    with pytest.raises(CodegenError, match="wrong length"):
        engine.restore(saved[:-1])
    with pytest.raises(CodegenError, match="not a snapshot of this format"):
        engine.restore(b"XXXX" + saved[4:])


def test_bad_inputs_are_refused(tmp_path):
    engine = _engine(tmp_path)
    image = _data(1)[0][0]
    with pytest.raises(ValueError):
        engine.train_step(image.astype(np.int16), 0)
    with pytest.raises(ValueError):
        engine.train_step(image, CLASSES)
    lib = ctypes.CDLL(str(engine.path))  # the C API itself: -1 and nothing done
    lib.mct_train_step.restype, lib.mct_train_step.argtypes = ctypes.c_float, [ctypes.c_void_p, ctypes.c_int]
    lib.mct_predict.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    assert lib.mct_train_step(image.ctypes.data, -1) == -1.0
    assert lib.mct_train_step(None, 0) == -1.0
    assert lib.mct_predict(None, None) == -1
    assert engine.step == 0


def test_a_new_engine_reinitialises_the_library(tmp_path):
    first = _engine(tmp_path)
    images, labels = _data(1)
    first.train_step(images[0], int(labels[0]))
    second = HostEngine(first.path)
    assert second.step == 0
    with pytest.raises(CodegenError, match="another HostEngine"):
        first.predict(images[0])


def test_unfused_kernels_match_too(tmp_path):
    """Without the fusion and in-place passes: separate weight gradients and updates, no in-place ops."""
    q = _qmodel()
    program = compile_training(q, resolve(get_builtin("full", "tiny"), q.spec), lr=LR, seed=SEED,
                               passes=(insert_updates, prune, reorder), stream_input=False, row_fusion="off")
    kinds = {op.kind for op in program.train.graph.ops}
    assert {"conv2d_grad_w", "update_weight", "linear_grad_w"} <= kinds
    generate(program, tmp_path)
    images, labels = _data(3)
    assert op_by_op(program, build(tmp_path, trace=True), images[0], int(labels[0])) == {}
    r = side_by_side(program, build_host(tmp_path), images, labels, images[:1])
    assert r.logits_equal_before and r.logits_equal_after
    assert r.differences["max_lsb"] <= 1 and r.differences["differing_fraction"] <= 1e-3
    assert r.differences["loss_rel_error"] <= 1e-5 and r.differences["moved"] >= 50
