"""The engine's integer backward (``--backward int8``, issue 16): kernels, whole programs, memory, CLI.

(a) each int8 kernel equals the spec (``quant.int8_grad``) on random inputs, computed from exact values
by another route; (b) whole training runs equal an independent re-implementation (``int8_reference``)
step by step; (c) the results are deterministic and do not depend on torch's CPU kernels; (d) the
planner sizes grad8 / grad32 tensors as header + payload; (f) errors users can cause are one line.
The hypothesis properties of the passes in int8 mode are in ``test_engine_properties``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache

import numpy as np
import pytest
import torch

from mcutrain.cli import cmd_compile
from mcutrain.codegen import render
from mcutrain.engine.compile import compile_training
from mcutrain.engine.executor import Executor
from mcutrain.engine.executor.compare import engine_steps, qmodel_params
from mcutrain.engine.executor.int8_kernels import INT8_KERNELS, GradTensor
from mcutrain.engine.ir import GRAD_HEADER_BYTES, Op, make_attrs
from mcutrain.engine.memory import check_plan
from mcutrain.engine.passes import PassOptions
from mcutrain.errors import McutrainError
from mcutrain.models.specs import BlockSpec, NetSpec
from mcutrain.models.zoo import conv_shapes
from mcutrain.quant import int8_grad as ig
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import ConvUpdate, UpdatePlan
from mcutrain.sparse.scheme import conv_kind, kept_channels
from tests.engine.int8_reference import Int8Reference
from tests.helpers.cli import run_command

torch.set_num_threads(1)

RES, CLASSES, LR, SEED, STEPS = 16, 3, 0.5, 7, 3
# A residual depthwise block without expand conv, a residual inverted-residual block, a stride-2 block.
SPEC = NetSpec("int8bw", 8, (BlockSpec(8, None, 8, 3, 1), BlockSpec(8, 16, 8, 3, 1), BlockSpec(8, 16, 12, 5, 2)),
               default_resolution=RES)


def _plan(ratio: float = 1.0) -> UpdatePlan:
    """Every conv's bias and weight (``ratio`` of the input channels of each), and the classifier."""
    convs = tuple(ConvUpdate(i, c.name, conv_kind(c), c.in_ch, True, ratio, kept_channels(c.in_ch, ratio))
                  for i, c in enumerate(conv_shapes(SPEC, RES)))
    return UpdatePlan(model=SPEC.name, scheme="all", convs=convs)


@lru_cache(maxsize=None)
def _model(seed: int = 3):
    return random_qmodel(SPEC, RES, CLASSES, seed=seed)[0]


def _data(n: int = STEPS, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 3, RES, RES)).astype(np.int8), rng.integers(0, CLASSES, n)


# ----------------------------------------------------------------------------------------------
# (a) kernels against the spec


def _grad(rng, shape, e=None) -> GradTensor:
    g, e0 = ig.normalize(rng.normal(size=shape) * 2.0 ** rng.integers(-20, 5))
    return GradTensor(g, e0 if e is None else e)


def _factor(real) -> np.ndarray:
    return np.stack(ig.grad_multiplier(np.asarray(real, np.float64).ravel())).astype(np.int32)


def _op(kind, **attrs) -> Op:
    return Op("t", kind, (), (), make_attrs(**attrs), "backward")


def test_requant_and_add_grads_equal_normalize_of_the_exact_values():
    rng = np.random.default_rng(0)
    g = _grad(rng, (1, 4, 3, 3))
    mask = rng.random(g.shape) < 0.7
    real = rng.uniform(1e-4, 2, 4)
    (out,) = INT8_KERNELS["requant_grad8"](_op("requant_grad8"), [g, mask, _factor(real)], 1)
    m, sh = ig.grad_multiplier(real)
    exact = g.value() * mask * np.ldexp(m.astype(np.float64), sh)[None, :, None, None]
    assert (out.g.tolist(), out.e) == (ig.normalize(exact)[0].tolist(), ig.normalize(exact)[1])
    a, b = INT8_KERNELS["add_grad8"](_op("add_grad8"), [g, mask, _factor([0.3, 1.7])], 1)
    for got, r in ((a, 0.3), (b, 1.7)):
        m, sh = ig.grad_multiplier(r)
        want = ig.normalize(g.value() * mask * np.ldexp(float(m), int(sh)))
        assert (got.g.tolist(), got.e) == (want[0].tolist(), want[1])


def test_contractions_equal_normalize_of_torch_float64_gradients():
    rng = np.random.default_rng(1)
    g = _grad(rng, (1, 6, 4, 4))
    for groups, w_shape in ((1, (6, 5, 3, 3)), (6, (6, 1, 3, 3))):
        w = rng.integers(-127, 128, w_shape).astype(np.int8)
        c = 5 if groups == 1 else 6
        op = _op("conv2d_grad_x8", stride=2, pad=1, groups=groups, input_shape=(1, c, 8, 8))
        (gx,) = INT8_KERNELS["conv2d_grad_x8"](op, [g, w], 1)
        exact = torch.nn.grad.conv2d_input((1, c, 8, 8), torch.from_numpy(w.astype(np.float64)),
                                           torch.from_numpy(g.value()), stride=2, padding=1, groups=groups)
        assert (gx.g.tolist(), gx.e) == tuple(v.tolist() if hasattr(v, "tolist") else v
                                              for v in ig.normalize(exact.numpy()))
        x = rng.integers(-128, 128, (1, c, 8, 8)).astype(np.int8)
        op = _op("conv2d_grad_w8", stride=2, pad=1, groups=groups, kept=c, weight_shape=w_shape, x_zero=-3)
        (gw,) = INT8_KERNELS["conv2d_grad_w8"](op, [x, g], 1)
        want = torch.nn.grad.conv2d_weight(torch.from_numpy(x.astype(np.float64) + 3), w_shape,
                                           torch.from_numpy(g.g.astype(np.float64)), stride=2, padding=1,
                                           groups=groups)
        assert gw.e == g.e and gw.g.dtype == np.int32 and np.array_equal(gw.g, want.numpy())
    (gb,) = INT8_KERNELS["conv2d_grad_b8"](_op("conv2d_grad_b8"), [g], 1)
    assert gb.e == g.e and np.array_equal(gb.g, g.g[0].astype(np.int64).sum((1, 2)))


def test_init_accumulation_and_grad_sum_are_add_grads():
    rng = np.random.default_rng(2)
    g, init = _grad(rng, (1, 4, 5, 5)), _grad(rng, (1, 3, 5, 5))
    w = rng.integers(-127, 128, (4, 3, 1, 1)).astype(np.int8)
    op = _op("conv2d_grad_x8", stride=1, pad=0, groups=1, input_shape=(1, 3, 5, 5))
    (alone,) = INT8_KERNELS["conv2d_grad_x8"](op, [g, w], 1)
    (summed,) = INT8_KERNELS["conv2d_grad_x8"](op, [g, w, init], 1)
    want = ig.add_grads(init.g, init.e, alone.g, alone.e)
    assert (summed.g.tolist(), summed.e) == (want[0].tolist(), want[1])
    (total,) = INT8_KERNELS["grad_sum8"](_op("grad_sum8"), [init, alone, init], 1)
    first = ig.add_grads(init.g, init.e, alone.g, alone.e)
    want = ig.add_grads(*first, init.g, init.e)
    assert (total.g.tolist(), total.e) == (want[0].tolist(), want[1])


def test_loss_and_classifier_gradients():
    rng = np.random.default_rng(3)
    g = (rng.random((1, 5)) - 0.2).astype(np.float32)
    scale = rng.uniform(1e-4, 1e-2, 5).astype(np.float32)
    (g8,) = INT8_KERNELS["loss_grad8"](_op("loss_grad8"), [g, scale], 1)
    want = ig.normalize(g.astype(np.float64) * scale.astype(np.float64))
    assert (g8.g.tolist(), g8.e) == (want[0].tolist(), want[1])
    # The product is exact in float64, not rounded to float32: (1 + 2**-23)(1 - 2**-23) = 1 - 2**-46 lies just
    # below the half-way point 1 = 0.5 * 2**1 (the peak 200 sets E = 1), where its float32 rounding lies.
    g2, scale2 = np.float32([[0.5, 1 + 2**-23]]), np.float32([400, 1 - 2**-23])
    (tie,) = INT8_KERNELS["loss_grad8"](_op("loss_grad8"), [g2, scale2], 1)
    assert tie.e == 1 and tie.g.tolist() == [[100, 0]]
    w = rng.integers(-127, 128, (5, 7)).astype(np.int8)
    x = rng.integers(-128, 128, (1, 7)).astype(np.int8)
    (gx,) = INT8_KERNELS["linear_grad_x8"](_op("linear_grad_x8"), [g8, w], 1)
    assert (gx.g.tolist(), gx.e) == tuple(v.tolist() if hasattr(v, "tolist") else v
                                          for v in ig.normalize(g8.value() @ w.astype(np.float64)))
    (gw,) = INT8_KERNELS["linear_grad_w8"](_op("linear_grad_w8", x_zero=5), [g8, x], 1)
    assert np.array_equal(gw.g, g8.g.astype(np.int64).T @ (x.astype(np.int64) - 5)) and gw.e == g8.e


def test_pool_gradients():
    rng = np.random.default_rng(4)
    g = _grad(rng, (1, 4))
    mask = rng.random((1, 4)) < 0.5
    op = _op("avgpool_grad8", input_shape=(1, 4, 3, 3))
    (gx,) = INT8_KERNELS["avgpool_grad8"](op, [g, mask, _factor([0.37])], 1)
    m, sh = ig.grad_multiplier(0.37)
    want = ig.normalize(g.value() * mask * np.ldexp(float(m), int(sh)))
    assert gx.e == want[1] and all(np.array_equal(gx.g[..., i, j], want[0]) for i in range(3) for j in range(3))
    g4 = _grad(rng, (1, 2, 2, 2))
    x = rng.integers(-128, 128, (1, 2, 4, 4)).astype(np.int8)
    op = _op("tfl_maxpool_grad8", kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0), input_shape=(1, 2, 4, 4))
    (gm,) = INT8_KERNELS["tfl_maxpool_grad8"](op, [g4, np.ones(g4.shape, bool), x], 1)
    assert gm.e == g4.e and np.array_equal(np.sort(gm.g[gm.g != 0]), np.sort(g4.g[g4.g != 0]))


def test_updates_are_the_spec_with_the_float_rules_random_words():
    rng = np.random.default_rng(5)
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    grad = GradTensor(rng.integers(-2**20, 2**20, (4, 2, 3, 3)).astype(np.int32), -30)
    qas = rng.uniform(1, 1e4, 4).astype(np.float32)
    m, x = ig.update_factor(0.05, qas)
    op = _op("update_weight8", seed=9, tensor_id=2, kept_shape=(4, 2, 3, 3), rule="sr", lr=0.05)
    w2 = w.copy()
    INT8_KERNELS["update_weight8"](op, [w2, grad, qas], 3)
    from mcutrain.quant.rng import uniform_u32

    r = uniform_u32(9, 3, 2, grad.g.size).reshape(grad.shape)
    want = ig.update_weight(w[:, :2], grad.g, grad.e, m[:, None, None, None], x[:, None, None, None], r)
    assert np.array_equal(w2[:, :2], want) and np.array_equal(w2[:, 2:], w[:, 2:]) and not np.array_equal(w2, w)


# ----------------------------------------------------------------------------------------------
# (b) whole programs


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_training_equals_the_independent_reimplementation_step_by_step(ratio):
    q, plan = _model(), _plan(ratio)
    images, labels = _data()
    got = engine_steps(q, plan, images, labels, lr=LR, seed=SEED)
    ref = Int8Reference(q, plan, lr=LR, seed=SEED)
    start = qmodel_params(q)
    for step, (image, label) in enumerate(zip(images, labels)):
        want = ref.train_step(image, int(label))
        for name in want:
            assert np.array_equal(got[step][name], want[name]), (step, name)
    moved = [n for n in start if not np.array_equal(got[-1][n], start[n])]
    assert len(moved) >= len(start) - 2  # training moves (almost) every parameter: the check is not vacuous


def test_the_program_uses_int8_kinds_and_fuses_updates_but_not_block_backwards():
    program = compile_training(_model(), _plan(), lr=LR, seed=SEED, backward="int8")
    kinds = {op.kind for op in program.graph.ops}
    assert {"loss_grad8", "requant_grad8", "add_grad8", "conv2d_grad_x8", "conv2d_grad_w_update8",
            "linear_grad_w_update8", "update_bias8"} <= kinds
    assert not kinds & {"requant_grad", "conv2d_grad_x", "mbconv_grad", "update_weight", "grad_sum"}
    assert program.options.backward == "int8" and program.report["block_backwards"] == 0
    grads = [t for t in program.graph.tensors.values() if t.role == "gradient"]
    assert all(t.dtype in ("grad8", "grad32") for t in grads if not t.name.startswith("logits"))


def test_the_float_path_is_unchanged_by_the_option():
    q, plan = _model(), _plan()
    a = compile_training(q, plan, lr=LR, seed=SEED)
    b = compile_training(q, plan, lr=LR, seed=SEED, backward="float32")
    assert [op.kind for op in a.graph.ops] == [op.kind for op in b.graph.ops]
    assert all(t.dtype not in ("grad8", "grad32") for t in a.graph.tensors.values())


# ----------------------------------------------------------------------------------------------
# (c) determinism, and independence of torch's CPU kernels


def _digest(params_after: list[dict]) -> str:
    import hashlib

    h = hashlib.sha256()
    for params in params_after:
        for name in sorted(params):
            h.update(name.encode() + np.ascontiguousarray(params[name]).tobytes())
    return h.hexdigest()


def test_deterministic_and_independent_of_aten_cpu_capability():
    q, plan = _model(), _plan(0.5)
    images, labels = _data()
    first = _digest(engine_steps(q, plan, images, labels, lr=LR, seed=SEED))
    assert first == _digest(engine_steps(q, plan, images, labels, lr=LR, seed=SEED))
    code = ("import sys; sys.path.insert(0, '.'); from tests.engine import test_int8_backward as t; "
            "q, p = t._model(), t._plan(0.5); i, l = t._data(); "
            "print(t._digest(t.engine_steps(q, p, i, l, lr=t.LR, seed=t.SEED)))")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == first


# ----------------------------------------------------------------------------------------------
# (d) memory


def test_grad8_tensors_are_planned_as_header_and_payload():
    program = compile_training(_model(), _plan(), lr=LR, seed=SEED, backward="int8")
    stage = program.train
    check_plan(stage.plan)
    sizes = {b.name: b.size for b in stage.buffers}
    grads = {n: t for n, t in stage.graph.tensors.items() if t.dtype in ("grad8", "grad32")}
    arena = [n for n in grads if n in stage.storage]
    assert arena and any(stage.graph.tensor(n).dtype == "grad8" for n in arena)
    for name in arena:
        t = grads[name]
        assert t.nbytes == GRAD_HEADER_BYTES + t.numel * (1 if t.dtype == "grad8" else 4)
        assert sizes[stage.storage[name]] >= t.nbytes and stage.offset(name) % 4 == 0
    ex = Executor(program)
    record: dict = {}
    image, label = _data(1)
    ex.train_step(image[0], int(label[0]), record)
    header = np.frombuffer(ex._train.arena.memory, np.int32, 1, stage.offset(arena[0]))
    assert isinstance(record[arena[0]], GradTensor) and int(header[0]) == ex._train.arena.read(arena[0]).e
    floats = compile_training(_model(), _plan(), lr=LR, seed=SEED).train
    float_grads = sum(b.size for b in floats.buffers if b.kind == "gradient")
    int8_grads = sum(b.size for b in stage.buffers if b.kind == "gradient")
    assert int8_grads < float_grads


# ----------------------------------------------------------------------------------------------
# (f) errors users can cause


def test_cli_generates_c_for_the_int8_backward_and_refuses_unknown_modes(tmp_path):
    code, out = run_command(cmd_compile, ["compile", "tiny", "--scheme", "last-k:6", "--resolution", "32", "--backward",
                                          "int8", "--target", "host", "--out", str(tmp_path / "c"), "--json"])
    assert code == 0 and json.loads(out)["backward"] == "int8"
    assert "mct_g8_conv2d_grad_x(" in (tmp_path / "c" / "model.c").read_text()
    with pytest.raises(SystemExit) as exc:
        run_command(cmd_compile, ["compile", "tiny", "--scheme", "last-k:6", "--backward", "int4"])
    assert exc.value.code == 2
    with pytest.raises(McutrainError, match="backward must be one of"):
        PassOptions(backward="int4")


def test_cli_compiles_the_int8_backward_and_reports_it(tmp_path):
    code, out = run_command(cmd_compile, ["compile", "tiny", "--scheme", "last-k:6", "--resolution", "32",
                                          "--backward", "int8", "--json"])
    r = json.loads(out)
    assert code == 0 and r["backward"] == "int8" and r["arena_bytes"] > 0
    program = compile_training(_model(), _plan(), lr=LR, seed=SEED, backward="int8")
    assert "mct_g8_update_bias(" in render(program)["model.c"]


# ----------------------------------------------------------------------------------------------
# Imported graphs' ops (TFLite pools, MEAN, reshape) in int8 mode


@pytest.mark.parametrize("variant", ["mean", "mean_keep_dims", "maxpool", "avgpool", "global_avgpool"])
def test_imported_graph_ops_train_in_int8_mode_and_the_passes_change_no_bit(variant):
    from mcutrain.engine.autodiff import differentiate
    from mcutrain.engine.compile import build_program
    from mcutrain.engine.loss import append_loss
    from mcutrain.engine.passes import PIPELINE, insert_updates, int8_backward
    from tests.helpers import tfl_graphs

    forward = tfl_graphs.forward_graph(variant)
    joint = differentiate(append_loss(forward), tfl_graphs.update_plan())
    options = PassOptions(lr=0.5, seed=3, stream_input=False, backward="int8")
    runs = []
    for passes in (PIPELINE, (insert_updates, int8_backward)):
        ex = Executor(build_program(joint, forward, options, passes))
        for image, label in zip(tfl_graphs.images(3), (0, 1, 2)):
            ex.train_step(image, label)
        runs.append(ex.parameters())
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not np.array_equal(runs[0]["conv.weight"], forward.constants["conv.weight"])


def test_tfl_avgpool_grad8_is_normalize_of_the_exact_window_sums():
    rng = np.random.default_rng(6)
    attrs = dict(kernel=(3, 2), strides=(2, 2), pads=(1, 1, 0, 1), input_shape=(1, 2, 9, 7), ratio=0.8)
    g = _grad(rng, (1, 2, 5, 4))
    mask = rng.random(g.shape) < 0.8
    counts = np.zeros((5, 4))
    for r in range(5):
        for c in range(4):
            rows = [i for i in range(2 * r - 1, 2 * r + 2) if 0 <= i < 9]
            cols = [j for j in range(2 * c, 2 * c + 2) if 0 <= j < 7]
            counts[r, c] = len(rows) * len(cols)
    m, sh = ig.grad_multiplier((0.8 / counts).astype(np.float32).astype(np.float64).ravel())
    factor = np.stack([m, sh]).astype(np.int32)
    (gx,) = INT8_KERNELS["tfl_avgpool_grad8"](_op("tfl_avgpool_grad8", **attrs), [g, mask, factor], 1)
    exact = np.zeros((1, 2, 9, 7))
    f = np.ldexp(m.astype(np.float64), sh).reshape(5, 4)
    for r in range(5):
        for c in range(4):
            for i in range(2 * r - 1, 2 * r + 2):
                for j in range(2 * c, 2 * c + 2):
                    if 0 <= i < 9 and 0 <= j < 7:
                        exact[:, :, i, j] += g.value()[:, :, r, c] * mask[:, :, r, c] * f[r, c]
    want = ig.normalize(exact)
    assert (gx.g.tolist(), gx.e) == (want[0].tolist(), want[1])
