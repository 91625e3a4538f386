"""Channel-by-channel block backward (``mbconv_grad``): the expanded gradients are never whole.

The fused op computes exactly what the unfused ops compute (bit-identical losses and parameters, with
and without reordered updates); no expanded gradient reaches the arena; masks recomputed from a
block input kept whole anyway leave the forward; the last block's head input (the pool's gradient
spread and requantized) is computed as needed; every fused update is still counted and applied.
"""

from functools import lru_cache

import numpy as np
import pytest
import torch

from mcutrain.engine.compile import compile_training
from mcutrain.engine.executor import Executor
from mcutrain.engine.executor.compare import run_engine
from mcutrain.engine.fused_program import program_of
from mcutrain.engine.executor.kernels import channel_sums, pointwise_input_grad, pointwise_weight_grad
from mcutrain.engine.memory import check_plan
from mcutrain.engine.passes import PIPELINE, fuse_backward, fuse_updates, reorder
from mcutrain.engine.passes.fuse_backward import internal_of, update_ops
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve

torch.set_num_threads(1)

LR, SEED, CLASSES = 0.1, 9, 4
PAPER = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
WITHOUT = tuple(p for p in PIPELINE if p is not fuse_backward)


@lru_cache(maxsize=None)
def _qmodel(name: str, res: int):
    return random_qmodel(name, res, CLASSES, seed=4)[0]


@lru_cache(maxsize=None)
def _program(name: str, res: int, scheme: str, passes=PIPELINE):
    q = _qmodel(name, res)
    return compile_training(q, resolve(get_builtin(scheme, name), q.spec), lr=LR, seed=SEED, passes=passes)


def _fused(stage):
    return [(i, op) for i, op in enumerate(stage.graph.ops) if op.kind == "mbconv_grad"]


def _same_training(a, b, res: int) -> None:
    rng = np.random.default_rng(8)
    images, labels = rng.integers(-128, 128, (2, 3, res, res)).astype(np.int8), rng.integers(0, CLASSES, 2)
    ta, tb = run_engine(Executor(a), images, labels), run_engine(Executor(b), images, labels)
    assert ta.losses == tb.losses
    for k in ta.params:
        assert np.array_equal(ta.params[k], tb.params[k]), k


CASES = ([("tiny", 32, s) for s in ("full", "last-k:6", "bias-only")]
         + [(n, 48, s) for n in PAPER for s in ("paper-99kb", "last-k:6", "bias-only")])


@pytest.mark.parametrize("name, res, scheme", CASES)
def test_fusing_the_block_backward_changes_no_bit(name, res, scheme):
    fused, plain = _program(name, res, scheme), _program(name, res, scheme, WITHOUT)
    assert _fused(fused.train) and not _fused(plain.train)
    check_plan(fused.train.plan)
    assert fused.report["trainable_bytes"] == plain.report["trainable_bytes"]  # fused updates still counted
    assert ({op.inputs[0] for op in update_ops(fused.graph)} == {op.inputs[0] for op in update_ops(plain.graph)})
    assert fused.report["arena_bytes"] <= plain.report["arena_bytes"]
    _same_training(fused, plain, res)


@pytest.mark.parametrize("name", ["tiny", "mbv2-w0.35"])
def test_without_reordered_updates_the_gradients_stay_outputs_and_nothing_changes(name):
    res, scheme = (32, "last-k:6") if name == "tiny" else (48, "paper-99kb")
    late = tuple(p for p in PIPELINE if p not in (reorder, fuse_updates))
    fused, plain = _program(name, res, scheme, late), _program(name, res, scheme, tuple(p for p in late
                                                                                       if p is not fuse_backward))
    assert _fused(fused.train)
    assert any(len(op.outputs) > 1 for _, op in _fused(fused.train))  # bias / weight gradients, whole
    assert sum(op.phase == "update" for op in fused.graph.ops) > 1  # the late updates stay where they were
    _same_training(fused, plain, res)


@pytest.mark.parametrize("name", PAPER)
def test_at_128x128_no_expanded_gradient_reaches_the_arena(name):
    program, plain = _program(name, 128, "paper-99kb"), _program(name, 128, "paper-99kb", WITHOUT)
    stage = program.train
    for i, op in _fused(stage):
        internal = internal_of(op)
        assert not set(internal) & set(stage.lifetimes)
        biggest = max(t.nbytes for t in internal.values())
        scratch = next(b for b in stage.buffers if b.name == f"{op.name}.scratch")
        assert scratch.size * 8 <= biggest and scratch.live_at(i) and scratch.first == scratch.last
    assert program.report["arena_bytes"] < 0.6 * plain.report["arena_bytes"]


def test_masks_recomputed_from_a_kept_input_leave_the_forward():
    program, plain = _program("mcunet-5fps", 48, "paper-99kb"), _program("mcunet-5fps", 48, "paper-99kb", WITHOUT)
    recomputed = [program_of(op).recompute for _, op in _fused(program.train) if program_of(op).recompute]
    assert sum(len(r.convs) for r in recomputed) >= 4
    forward = {op.name: op for op in program.graph.ops if op.phase == "forward"}
    for rec in recomputed:
        assert len(rec.forward) == len(rec.convs)
        for fwd, name in zip(rec.convs, rec.forward):
            mask = fwd.outputs[1]
            assert mask not in program.graph.tensors and mask in plain.graph.tensors
            assert name not in forward or len(forward[name].outputs) == 1  # (or fused into pointwise_depthwise)
    assert program.report["mask_bytes"] < plain.report["mask_bytes"]


@pytest.mark.parametrize("name", PAPER)
def test_the_last_blocks_head_input_is_computed_from_the_pooled_gradient(name):
    program = _program(name, 48, "paper-99kb")
    lazy = [program_of(op) for _, op in _fused(program.train) if program_of(op).lazy]
    assert len(lazy) == 1
    (grad,) = lazy
    assert [p.kind for p in grad.lazy] == ["avgpool_grad", "requant_grad"]
    spread = grad.lazy[0].outputs[0]
    assert spread not in program.train.lifetimes and grad.lazy[1].outputs[0] not in program.train.lifetimes
    assert [s.op.kind for s in grad.pre][:1] == ["conv2d_grad_b"]


def test_the_shared_primitives_give_every_channel_the_same_bits_alone_or_together():
    rng = np.random.default_rng(0)
    g = (rng.standard_normal((40, 64)) * 1e-3).astype(np.float32)
    w = rng.integers(-127, 128, (40, 96)).astype(np.int8)
    init = rng.standard_normal((96, 64)).astype(np.float32)
    whole = pointwise_input_grad(g, w, init)
    for c0 in range(0, 96, 7):  # channel groups, as the fused kernel runs them
        part = pointwise_input_grad(g, w[:, c0:c0 + 7], init[c0:c0 + 7])
        assert np.array_equal(part, whole[c0:c0 + 7])
    seq = init.copy()
    for o in range(40):  # the documented order: one float32 term after the other
        seq = seq + w[o].astype(np.float32)[:, None] * g[o][None, :]
    assert np.array_equal(seq, whole)
    a = rng.standard_normal((96, 4, 4)).astype(np.float32)
    assert np.array_equal(channel_sums(a)[10:20], channel_sums(a[10:20]))
    x = rng.standard_normal((24, 64))
    gw = pointwise_weight_grad(x, a.reshape(96, 16)[:, :16].repeat(4, axis=1).astype(np.float64))
    assert np.array_equal(gw[5:9], pointwise_weight_grad(x, a.reshape(96, 16)[5:9].repeat(4, axis=1)
                                                          .astype(np.float64)))
