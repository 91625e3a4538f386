"""The engine's TFLite ops of imported graphs (issue 13 item 1): tfl_avgpool, tfl_maxpool, tfl_mean,
reshape. Forward kernels equal ``quant.graph_forward`` (the LiteRT-exact reference) with their clamp
masks; each VJP rule equals torch autograd of the real-valued op in the integer domain on random
shapes; hand-made graphs (conv -> pool -> [reshape] -> linear) train in the NumPy executor, and the
memory planner accounts for the new tensors (a reshape that keeps the order is a view in place)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.engine.executor import Executor
from mcutrain.engine.executor.kernels import KERNELS
from mcutrain.engine.ir import Op, make_attrs
from mcutrain.quant import graph_forward
from mcutrain.quant.graph import Mean, Pool2d
from mcutrain.quant.int8_ops import rounded_divide
from mcutrain.quant.qmodel import QTensor
from tests.helpers import tfl_graphs
from tests.helpers.windows import draw_window


@st.composite
def pools(draw):
    """A random pool geometry (padding below the window, as TFLite SAME makes) and an int8 input."""
    (kh, kw), (sh, sw), pads, (h, w) = draw_window(draw, 5, 3, 9)
    qmin, qmax = draw(st.sampled_from([(-128, 127), (-20, 127), (-128, 40)]))
    x = np.random.default_rng(draw(st.integers(0, 2**16))).integers(-128, 128, (1, 3, h, w)).astype(np.int8)
    return dict(kernel=(kh, kw), strides=(sh, sw), pads=pads, qmin=qmin, qmax=qmax), x


def _op(kind: str, outputs=("y", "mask"), **attrs) -> Op:
    return Op("p", kind, ("x",), outputs, make_attrs(**attrs))


def _windows_sum_count(x: np.ndarray, a: dict):
    """Independent sums and counts of the clipped windows (a plain loop)."""
    (kh, kw), (sh, sw), (t, b, left, r) = a["kernel"], a["strides"], a["pads"]
    h, w = x.shape[2:]
    oh, ow = (h + t + b - kh) // sh + 1, (w + left + r - kw) // sw + 1
    sums, counts, maxima = (np.zeros((1, 3, oh, ow), np.int64) for _ in range(3))
    for i in range(oh):
        for j in range(ow):
            r0, r1 = max(i * sh - t, 0), min(i * sh - t + kh, h)
            c0, c1 = max(j * sw - left, 0), min(j * sw - left + kw, w)
            patch = x[:, :, r0:r1, c0:c1].astype(np.int64)
            sums[:, :, i, j], counts[:, :, i, j] = patch.sum(axis=(2, 3)), patch[0, 0].size
            maxima[:, :, i, j] = patch.max(axis=(2, 3))
    return sums, counts, maxima


@settings(max_examples=60, deadline=None)
@given(pools())
def test_pool_kernels_equal_graph_forward_and_mask_the_clamp(case):
    a, x = case
    sums, counts, maxima = _windows_sum_count(x, a)
    for kind, v in (("tfl_avgpool", rounded_divide(sums, counts)), ("tfl_maxpool", maxima)):
        y, mask = KERNELS[kind](_op(kind, **a, x_scale=0.1, y_scale=0.1), [x], 0)
        pool = Pool2d(a["kernel"], a["strides"], a["pads"], QTensor(0.1, 0), QTensor(0.1, 0), a["qmin"], a["qmax"])
        reference = getattr(graph_forward, kind[4:])(x, pool)
        assert y.dtype == np.int8 and np.array_equal(y, reference)
        assert np.array_equal(y, np.clip(v, a["qmin"], a["qmax"]))
        assert np.array_equal(mask, (v > a["qmin"]) & (v < a["qmax"]))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.booleans(), st.floats(0.2, 4.0), st.integers(0, 2**16))
def test_mean_kernel_equals_graph_forward(h, w, keep_dims, ratio, seed):
    x = np.random.default_rng(seed).integers(-128, 128, (1, 5, h, w)).astype(np.int8)
    attrs = dict(x_scale=0.05, x_zero=-7, y_scale=0.05 / ratio, y_zero=11, keep_dims=keep_dims)
    y, mask = KERNELS["tfl_mean"](_op("tfl_mean", **attrs), [x], 0)
    reference = graph_forward.mean(x, Mean(QTensor(0.05, -7), QTensor(0.05 / ratio, 11), keep_dims))
    assert np.array_equal(y, reference) and y.shape == ((1, 5, 1, 1) if keep_dims else (1, 5))
    # independent of the kernel: within one step of the real mean, wherever the output is not clamped
    y1 = y.reshape(5).astype(np.float64)
    real = ratio * (x.astype(np.float64).sum(axis=(2, 3)).reshape(5) + 7 * h * w) / (h * w) + 11
    inside = (y1 > -128) & (y1 < 127)
    assert np.all(np.abs(y1 - real)[inside] <= 1.0)
    assert np.array_equal(mask.reshape(5), (y.reshape(5) > -128) & (y.reshape(5) < 127))


# ----------------------------------------------------------------------------------------------
# VJP rules against torch autograd of the real-valued ops (integer domain: gradients w.r.t. q)


def _vjp(forward_graph_kind: str, attrs: dict, x: np.ndarray, g: np.ndarray, mask: np.ndarray | None = None):
    """The backward op the rule emits for a 1-op forward, run by its kernel."""
    from tests.helpers.tfl_graphs import backward_of  # noqa: PLC0415
    return backward_of(forward_graph_kind, attrs, x, g, mask)


def _mask(kind: str, attrs: dict, x: np.ndarray) -> np.ndarray:
    """The forward's clamp mask as float: torch's real-valued op has no clamp, so its gradient is masked."""
    return KERNELS[kind](_op(kind, **attrs), [x], 0)[1].astype(np.float32)


def _torch_grad(fn, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    fn(xt).backward(torch.tensor(g.astype(np.float64)))
    return xt.grad.numpy()


@settings(max_examples=40, deadline=None)
@given(pools(), st.integers(0, 2**16))
def test_pool_vjps_equal_torch_autograd(case, seed):
    a, x = case
    (kh, kw), (t, b, left, r) = a["kernel"], a["pads"]
    _, counts, _ = _windows_sum_count(x, a)
    oh, ow = counts.shape[2:]
    g = np.random.default_rng(seed).standard_normal((1, 3, oh, ow)).astype(np.float32)
    ratio = 0.75

    def average(xt):  # the real-valued mean over each clipped window, times s_x / s_y
        summed = F.avg_pool2d(F.pad(xt, (left, r, t, b)), (kh, kw), a["strides"], divisor_override=1)
        return summed / torch.tensor(counts, dtype=torch.float64) * ratio

    attrs = dict(a, x_scale=0.3 * ratio, y_scale=0.3)
    got = _vjp("tfl_avgpool", attrs, x, g)
    np.testing.assert_allclose(got, _torch_grad(average, x, g * _mask("tfl_avgpool", attrs, x)), rtol=1e-5, atol=1e-6)
    # max: x made of distinct values, so that torch's choice among ties cannot matter
    distinct = np.random.default_rng(seed).permutation(x.size).reshape(x.shape).astype(np.float64)
    maximum = lambda xt: F.max_pool2d(F.pad(xt, (left, r, t, b), value=-1e9), (kh, kw), a["strides"])  # noqa: E731
    x_int = (distinct - distinct.size // 2).astype(np.int8)  # at most 3 * 9 * 9 values: distinct in int8
    got = _vjp("tfl_maxpool", a, x_int, g)
    g_masked = g * _mask("tfl_maxpool", a, x_int)
    # overlapping windows sum several float32 gradients in another order than torch: a few ulps of |g| ~ 1
    np.testing.assert_allclose(got, _torch_grad(maximum, x_int, g_masked), rtol=1e-6, atol=1e-6)


def test_maxpool_vjp_picks_the_first_maximum_in_window_order():
    x = np.array([[[[5, 9, 9], [9, 2, 9]]]], np.int8)  # one 2x3 window: maxima at (0,1), (0,2), (1,0), (1,2)
    a = dict(kernel=(2, 3), strides=(1, 1), pads=(0, 0, 0, 0), qmin=-128, qmax=127)
    got = _vjp("tfl_maxpool", a, x, np.array([[[[2.5]]]], np.float32))
    assert got.tolist() == [[[[0.0, 2.5, 0.0], [0.0, 0.0, 0.0]]]]


def test_masked_outputs_pass_no_gradient():
    x = np.full((1, 1, 2, 2), 127, np.int8)  # clamped at qmax: the mask is 0
    a = dict(kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0), qmin=-128, qmax=127)
    for kind in ("tfl_avgpool", "tfl_maxpool"):
        extra = dict(x_scale=1.0, y_scale=1.0) if kind == "tfl_avgpool" else {}
        assert not _vjp(kind, dict(a, **extra), x, np.ones((1, 1, 1, 1), np.float32)).any()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.booleans(), st.integers(0, 2**16))
def test_mean_and_reshape_vjps_equal_torch_autograd(h, w, keep_dims, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-100, 100, (1, 4, h, w)).astype(np.int8)
    s_x, s_y = 0.05, 0.02
    attrs = dict(x_scale=s_x, x_zero=0, y_scale=s_y, y_zero=0, keep_dims=keep_dims)
    g = rng.standard_normal((1, 4, 1, 1) if keep_dims else (1, 4)).astype(np.float32)
    mean = lambda xt: xt.mean(dim=(2, 3), keepdim=keep_dims) * (s_x / s_y)  # noqa: E731
    g_masked = g * _mask("tfl_mean", attrs, x)
    np.testing.assert_allclose(_vjp("tfl_mean", attrs, x, g), _torch_grad(mean, x, g_masked), rtol=1e-5, atol=1e-7)
    for channels_last in (True, False):
        g = rng.standard_normal((1, x.size)).astype(np.float32)
        flat = (lambda xt: xt.permute(0, 2, 3, 1).reshape(1, -1)) if channels_last else (lambda xt: xt.reshape(1, -1))
        (y,) = KERNELS["reshape"](_op("reshape", ("y",), channels_last=channels_last), [x], 0)
        assert np.array_equal(y, flat(torch.tensor(x)).numpy())
        got = _vjp("reshape", dict(channels_last=channels_last), x, g)
        assert np.array_equal(got, _torch_grad(flat, x, g).astype(np.float32))


# ----------------------------------------------------------------------------------------------
# Hand-made graphs through the whole engine


@pytest.mark.parametrize("variant", tfl_graphs.VARIANTS)
def test_hand_made_graphs_train_on_a_repeated_sample(variant):
    program = tfl_graphs.program(variant, lr=0.01)
    kinds = {op.kind for op in program.train.graph.ops}
    expected = {"avgpool": "tfl_avgpool_grad", "global_avgpool": "avgpool_grad", "maxpool": "tfl_maxpool_grad",
                "mean": "avgpool_grad", "mean_keep_dims": "avgpool_grad"}[variant]
    assert expected in kinds
    executor = Executor(program)
    image = tfl_graphs.images(1)[0]
    before = executor.predict(image)
    losses = [executor.train_step(image, 1) for _ in range(25)]
    print(f"{variant}: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert losses[-1] < 0.5 * losses[0]
    assert not np.array_equal(before, executor.predict(image))


@pytest.mark.parametrize("variant", tfl_graphs.VARIANTS)
def test_the_memory_plan_accounts_for_the_new_tensors(variant):
    program = tfl_graphs.program(variant)
    stage, report = program.train, program.report
    for name in ("pool", "pool.mask", "conv.grad"):
        assert name in stage.storage, name
    buffers = {b.name: b.size for b in stage.buffers}
    assert buffers[stage.storage["pool.mask"]] == -(-stage.graph.tensor("pool").numel // 8)
    assert report["arena_bytes"] >= report["arena_lower_bound_bytes"] > 0
    assert report["mask_bytes"] >= stage.graph.tensor("pool.mask").nbytes
    if variant in ("global_avgpool", "mean_keep_dims"):  # [1, C, 1, 1] -> [1, C] keeps the order: a view
        flatten = next(op for op in stage.graph.ops if op.kind == "reshape")
        assert flatten.attr("inplace") == 0 and stage.offset("flat") == stage.offset("pool")
    if variant in ("avgpool", "maxpool"):  # the channels-last flatten of 5x4 positions permutes: a copy
        flatten = next(op for op in stage.graph.ops if op.kind == "reshape")
        assert flatten.attr("inplace") is None
    inference = program.inference.graph
    assert all(len(op.outputs) == 1 for op in inference.ops if op.kind.startswith("tfl_"))  # masks pruned


def test_a_global_tfl_avgpool_keeps_the_fused_block_backward():
    """An imported model's global pool + flatten in place of the zoo's pool: the last block's backward is
    still fused with its input computed lazily from the pooled gradient, and equals the unfused program."""
    from mcutrain.engine.autodiff import differentiate
    from mcutrain.engine.compile import build_program
    from mcutrain.engine.loss import append_loss
    from mcutrain.engine.passes import PIPELINE, PassOptions
    from mcutrain.engine.passes.fuse_backward import fuse_backward
    from mcutrain.quant.random_model import random_qmodel
    from mcutrain.sparse import get_builtin, resolve

    q = random_qmodel("mbv2-w0.35", 48, 4, seed=4)[0]
    plan = resolve(get_builtin("paper-99kb", q.spec), q.spec)
    forward = tfl_graphs.zoo_with_tfl_pool(q, plan)
    joint = differentiate(append_loss(forward), plan)
    options = PassOptions(lr=0.1, seed=11)
    fused = build_program(joint, forward, options)
    plain = build_program(joint, forward, options, tuple(p for p in PIPELINE if p is not fuse_backward))
    lazy = [op.attr("program").lazy for op in fused.train.graph.ops if op.kind == "mbconv_grad"]
    assert [[p.kind for p in ops] for ops in lazy if ops] == [["avgpool_grad", "requant_grad"]]
    assert fused.report["arena_bytes"] < plain.report["arena_bytes"]
    a, b = Executor(fused), Executor(plain)
    rng = np.random.default_rng(0)
    for step in range(2):
        x = rng.integers(-128, 128, (3, 48, 48)).astype(np.int8)
        assert a.train_step(x, step) == b.train_step(x, step)
    pa, pb = a.parameters(), b.parameters()
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
