"""The simulation's ``--backward int8`` (quant/sim_int8_backward.py) against a hand-run of the spec.

Why: the simulation, the NumPy engine and the C must agree bit for bit on the integer backward; each is
held to the NumPy functions of ``quant.int8_grad``. The references below take one sample at a time
(the device's batch of one) and use only those functions plus plain int64 loops for the integer sums
(conv transpose, correlation), so a wrong factor, a lost mask, a rounding or an exponent off by one
in the simulation shows up as a different integer. A batch of two must equal each sample alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcutrain.quant import int8_grad as ig
from mcutrain.quant.fixedpoint import dequantize_multiplier
from mcutrain.quant.int8_ops import avgpool_int8_with_mask_torch, quantized_add_with_mask_torch
from mcutrain.quant.sim_int8_backward import batch_param_grad, fork
from mcutrain.quant.sim_model import Int8Net
from mcutrain.quant.sim_ops import Int8AddFn, Int8AvgPoolFn, Int8ConvFn, Int8LinearFn
from tests.helpers.geometry import general_qmodel, int8_images
from tests.helpers.models import int8_input, quantized

torch.set_num_threads(1)


def random_grad(shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical gradient tensors per sample: int8 ``g`` (peak 127 or spread) and exponents ``E``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(shape[0]):
        g, e = ig.normalize(rng.standard_normal(shape[1:]) * rng.integers(1, 2**20))
        out.append((g, e))
    return np.stack([g for g, _ in out]), np.array([e for _, e in out])


def values(g: np.ndarray, exps: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([ig.value(gi, e) for gi, e in zip(g, exps)]))


def split(v: torch.Tensor) -> tuple[np.ndarray, int]:
    """A canonical value tensor of one sample back into (int8 g, E), checking it is canonical."""
    e = int(ig.grad_exponent(v.abs().max().item()))
    g = np.ldexp(v.numpy().astype(np.float64), -e)
    assert np.array_equal(g, np.round(g)) and np.abs(g).max() <= 127
    assert v.abs().max() == 0 or np.abs(g).max() >= 64  # canonical: the smallest exponent
    return g.astype(np.int64), e


# ---------------------------------------------------------------------------------------------- integer sums


def padded(x: np.ndarray, pads) -> np.ndarray:
    t, b, left, r = pads
    return np.pad(x, ((0, 0), (t, b), (left, r)))


def conv_t(g: np.ndarray, w: np.ndarray, x_shape, strides, pads, groups: int) -> np.ndarray:
    """Integer transpose conv: each output's gradient times w back to its window (int64 loops)."""
    c_in, h, wd = x_shape
    t, b, left, r = pads
    out = np.zeros((c_in, h + t + b, wd + left + r), np.int64)
    kh, kw = w.shape[2:]
    per_out, per_in = w.shape[0] // groups, c_in // groups
    for o in range(w.shape[0]):
        grp = o // per_out
        for i in range(g.shape[1]):
            for j in range(g.shape[2]):
                y0, x0 = i * strides[0], j * strides[1]
                out[grp * per_in:(grp + 1) * per_in, y0:y0 + kh, x0:x0 + kw] += g[o, i, j] * w[o].astype(np.int64)
    return out[:, t:t + h, left:left + wd]


def correlate(xz: np.ndarray, g: np.ndarray, w_shape, strides, pads, groups: int) -> np.ndarray:
    """Integer weight gradient: sum over outputs of (x - z) windows times the output's gradient."""
    xp = padded(xz.astype(np.int64), pads)
    kh, kw = w_shape[2:]
    out = np.zeros(w_shape, np.int64)
    per_out, per_in = w_shape[0] // groups, xz.shape[0] // groups
    for o in range(w_shape[0]):
        grp = o // per_out
        for i in range(g.shape[1]):
            for j in range(g.shape[2]):
                y0, x0 = i * strides[0], j * strides[1]
                out[o] += g[o, i, j] * xp[grp * per_in:(grp + 1) * per_in, y0:y0 + kh, x0:x0 + kw]
    return out


def geometry(layer):
    kh, kw = layer.weight.shape[2:]
    stride = layer.stride if isinstance(layer.stride, tuple) else (layer.stride, layer.stride)
    pads = layer.padding if layer.padding is not None else (kh // 2, kh // 2, kw // 2, kw // 2)
    return stride, pads


# ---------------------------------------------------------------------------------------------- conv


def conv_reference(layer, x: np.ndarray, mask: np.ndarray, g: np.ndarray, e: int):
    """One sample by the spec: scale_grad, then the contractions; parameter gradients unrounded."""
    stride, pads = geometry(layer)
    w = layer.weight.detach().numpy().astype(np.int64)
    m, sh = ig.grad_multiplier(dequantize_multiplier(layer.multiplier.numpy(), layer.shift.numpy()))
    g_acc, e_acc = ig.scale_grad(g, e, m, sh, mask)
    g_x = ig.normalize_int(conv_t(g_acc.astype(np.int64), w, x.shape, stride, pads, layer.groups), e_acc)
    xz = x.astype(np.int64) - layer.x_zero
    g_w = correlate(xz, g_acc.astype(np.int64), w.shape, stride, pads, layer.groups)
    kept = np.zeros(w.shape, bool)
    kept[:, :layer.kept] = layer.groups == 1
    kept[:layer.kept] |= layer.groups > 1
    return g_x, (np.where(kept, g_w, 0), e_acc), (g_acc.astype(np.int64).sum((1, 2)), e_acc)


def conv_inputs(q, index: int, images: np.ndarray) -> torch.Tensor:
    net = Int8Net(q)
    seen = {}
    net.convs()[index].register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    with torch.no_grad():
        net.features(torch.from_numpy(images.astype(np.float32)))
    return seen["x"], net.convs()[index]


def run_conv(layer, x: torch.Tensor, g_values: torch.Tensor):
    layer.backward_mode = "int8"
    layer.weight.requires_grad_(True)
    layer.bias.requires_grad_(True)
    x = x.clone().requires_grad_(True)
    y = Int8ConvFn.apply(x, layer.weight, layer.bias, layer)
    y.backward(g_values.to(y.dtype))
    mask = ((y > layer.qmin) & (y < layer.qmax)).numpy()  # the inside-the-clamp bit, as the forward's
    return x.grad.double(), layer.weight.int8_grad, layer.bias.int8_grad, mask


def conv_cases():
    q, _ = quantized("tiny", 32)
    images = int8_input(2, 32)
    for index in (0, 1, 2, 3, 5):  # first conv (stride 2), depthwise (stride 1/2), pointwise
        yield q, index, images
    g = general_qmodel("mixed")
    for index in range(len(g.convs())):
        if g.convs()[index].general_geometry:
            yield g, index, int8_images(g, 2)


CASES = list(conv_cases())


@pytest.mark.parametrize("case", range(len(CASES)))
def test_conv_backward_is_the_spec_per_sample(case):
    q, index, images = CASES[case]
    x, layer = conv_inputs(q, index, images)
    layer.kept = max(1, (layer.weight.shape[0] if layer.groups > 1 else layer.weight.shape[1]) // 2)
    out_shape = Int8ConvFn.apply(x, layer.weight, layer.bias, layer).shape
    g, exps = random_grad(out_shape, seed=case)
    g_x, g_w, g_b, mask = run_conv(layer, x, values(g, exps))
    for i in range(2):
        want_x, want_w, want_b = conv_reference(layer, x[i].numpy(), mask[i], g[i], exps[i])
        got_g, got_e = split(g_x[i])
        assert same((got_g, got_e), want_x)
        alone_w = batch_param_grad(torch.from_numpy(want_w[0][None].astype(np.float64)), np.array([want_w[1]]))
        alone_b = batch_param_grad(torch.from_numpy(want_b[0][None].astype(np.float64)), np.array([want_b[1]]))
        # One sample's gradient keeps its exact value (G * 2**E equal, no rounding)
        assert np.array_equal(np.ldexp(alone_w.G.astype(np.float64), alone_w.E), np.ldexp(want_w[0], want_w[1]))
        assert np.array_equal(np.ldexp(alone_b.G.astype(np.float64), alone_b.E), np.ldexp(want_b[0], want_b[1]))
    # the batch's parameter gradient is the exact sum of the two (all here fits the guard bits)
    exact_w = sum(np.ldexp(conv_reference(layer, x[i].numpy(), mask[i], g[i], exps[i])[1][0].astype(np.float64),
                           conv_reference(layer, x[i].numpy(), mask[i], g[i], exps[i])[1][1]) for i in range(2))
    assert np.abs(np.ldexp(g_w.G.astype(np.float64), g_w.E) - exact_w).max() <= 2.0 ** (g_w.E - 1)
    assert g_w.batch == 2 and np.abs(g_w.G).max() <= 2**37


def test_a_batch_of_two_is_each_sample_alone():
    q, _ = quantized("tiny", 32)
    x, layer = conv_inputs(q, 3, int8_input(2, 32))
    layer.kept = layer.weight.shape[1]
    g, exps = random_grad(Int8ConvFn.apply(x, layer.weight, layer.bias, layer).shape, seed=9)
    both = run_conv(layer, x, values(g, exps))[0]
    for i in range(2):
        alone = run_conv(layer, x[i:i + 1], values(g[i:i + 1], exps[i:i + 1]))[0]
        assert torch.equal(both[i:i + 1], alone)


# ---------------------------------------------------------------------------------------------- add, pool, head


def tiny_net() -> Int8Net:
    net = Int8Net(quantized("tiny", 32)[0])
    net.set_backward("int8")
    return net


def int8_tensor(shape, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(-128, 128, shape).astype(np.float32))


def test_add_backward_scales_each_input_by_its_ratio():
    layer = next(b.add for b in tiny_net().blocks if b.add is not None)
    a, b = (int8_tensor((2, 8, 6, 6), s).requires_grad_(True) for s in (1, 2))
    y = Int8AddFn.apply(a, b, layer)
    _, mask = quantized_add_with_mask_torch(a.detach(), b.detach(), layer.params)
    assert 0 < mask.sum() < mask.numel()  # the mask matters here
    g, exps = random_grad(y.shape, seed=3)
    y.backward(values(g, exps).float())
    for got, ratio in ((a.grad, layer.q.a.scale / layer.q.y.scale), (b.grad, layer.q.b.scale / layer.q.y.scale)):
        m, sh = ig.grad_multiplier(np.float64(ratio))
        for i in range(2):
            assert same(split(got[i].double()), ig.scale_grad(g[i], exps[i], m, sh, mask[i].numpy()))


def same(got, want) -> bool:
    """Two gradient tensors (g, E) are the same integers at the same exponent."""
    return got[1] == want[1] and np.array_equal(np.asarray(got[0], np.int64), np.asarray(want[0], np.int64))


def test_avgpool_backward_is_scale_grad_spread():
    net = tiny_net()
    x = int8_tensor((2, 16, 4, 4), 4)
    x[0, :3] = 127  # some outputs clamp: the mask matters
    x.requires_grad_(True)
    y = Int8AvgPoolFn.apply(x, net.pool)
    _, mask = avgpool_int8_with_mask_torch(x.detach(), net.pool.x.zero, net.pool.x.scale, net.pool.y.scale,
                                           net.pool.y.zero)
    g, exps = random_grad(y.shape, seed=5)
    y.backward(values(g, exps).float())
    m, sh = ig.grad_multiplier(net.pool.x.scale / (net.pool.y.scale * 16))
    for i in range(2):
        want, e = ig.scale_grad(g[i], exps[i], m, sh, mask[i].numpy())
        got, got_e = split(x.grad[i].double())
        assert got_e == e and np.array_equal(got, np.broadcast_to(want[:, None, None], got.shape))


def test_classifier_backward_is_the_spec():
    head = tiny_net().classifier
    x = int8_tensor((2, head.weight.shape[1]), 6).requires_grad_(True)
    head.weight.requires_grad_(True)
    head.bias.requires_grad_(True)
    logits = Int8LinearFn.apply(x, head.weight, head.bias, head)
    g_logits = torch.from_numpy(np.random.default_rng(7).standard_normal(logits.shape).astype(np.float32))
    logits.backward(g_logits)
    w = head.weight.detach().numpy().astype(np.int64)
    for i in range(2):
        v = g_logits[i].numpy().astype(np.float64) * head.logit_scale.numpy().astype(np.float64)
        g_acc, e = ig.normalize(v)
        assert same(split(x.grad[i].double()), ig.normalize_int(g_acc.astype(np.int64) @ w, e))
    for i in range(1):  # one sample alone: its exact gradients
        alone = torch.from_numpy(x.detach().numpy()[:1])
        Int8LinearFn.apply(alone, head.weight, head.bias, head).backward(g_logits[:1])
        v = g_logits[0].numpy().astype(np.float64) * head.logit_scale.numpy().astype(np.float64)
        g_acc, e = ig.normalize(v)
        xz = alone[0].numpy().astype(np.int64) - head.x_zero
        gw, gb = head.weight.int8_grad, head.bias.int8_grad
        assert np.array_equal(np.ldexp(gw.G.astype(float), gw.E), np.ldexp(np.outer(g_acc, xz).astype(float), e))
        assert np.array_equal(np.ldexp(gb.G.astype(float), gb.E), ig.value(g_acc, e))


def test_loss_gradient_is_the_engines_kernel_bit_for_bit():
    from mcutrain.engine.executor.kernels import softmax_ce
    from mcutrain.quant.sim_int8_backward import int8_cross_entropy

    z = torch.from_numpy(np.random.default_rng(8).standard_normal((3, 10)).astype(np.float32) * 5)
    z.requires_grad_(True)
    labels = torch.tensor([3, 0, 9])
    loss = int8_cross_entropy(z, labels)
    loss.backward()
    for i in range(3):
        want_loss, want_grad = softmax_ce(None, [z.detach().numpy()[i:i + 1], np.array([int(labels[i])])], 0)
        assert np.array_equal(z.grad[i].numpy(), want_grad[0])  # undivided: the batch mean is lr / B
    want = np.mean([softmax_ce(None, [z.detach().numpy()[i:i + 1], np.array([int(labels[i])])], 0)[0][0]
                    for i in range(3)])
    assert abs(loss.item() - want) < 1e-6


def test_fork_sums_by_add_grads():
    x = int8_tensor((2, 4, 3, 3), 9).requires_grad_(True)
    a, b = fork(x, 2)
    ga, ea = random_grad(a.shape, seed=10)
    gb, eb = random_grad(b.shape, seed=11)
    # Sample 1: an operand 60 orders below the other, positive where the other peaks at 127. Its sign
    # (the sticky bit) lifts the sum above 127 * 2**E: the exponent goes up by one, which an inexact
    # (float) sum would miss.
    eb[1] = ea[1] - 60
    ga[1].flat[0], gb[1].flat[0] = 127, 100
    torch.autograd.backward([a, b], [values(ga, ea).float(), values(gb, eb).float()])
    for i in range(2):
        assert same(split(x.grad[i].double()), ig.add_grads(ga[i], ea[i], gb[i], eb[i]))


def backward_nodes(t: torch.Tensor) -> list[str]:
    seen, todo, names = set(), [t.grad_fn], []
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return names


def test_each_residual_input_goes_through_a_fork_in_int8_mode_only():
    x = torch.from_numpy(int8_input(1, 32).astype(np.float32)).requires_grad_(True) / 128
    net = Int8Net(quantized("tiny", 32)[0])
    assert "ForkFnBackward" not in backward_nodes(net(x))
    net.set_backward("int8")
    adds = sum(b.add is not None for b in net.blocks)
    assert adds and backward_nodes(net(x)).count("ForkFnBackward") == adds


def test_a_batch_gradient_is_the_exact_sum_rounded_once():
    """Samples whose exponents lie far apart: the documented rule in Python integers (E = T + ceil(log2 B)
    - 37; each sample floored 14 bits below E; the sum rounded half up)."""
    rng = np.random.default_rng(12)
    per = rng.integers(-(2**30), 2**30, (3, 40))
    exps = np.array([-20, -70, -45])
    got = batch_param_grad(torch.from_numpy(per.astype(np.float64)), exps)
    top = max(int(e) + int(abs(p).max()).bit_length() for p, e in zip(per, exps))
    e = top + 2 - 37
    sums = [sum((int(per[i, k]) << (int(exps[i]) - e + 14)) if exps[i] - e + 14 >= 0
                else int(per[i, k]) >> (e - 14 - int(exps[i])) for i in range(3)) for k in range(40)]
    assert got.E == e and [int(v) for v in got.G] == [(s + 2**13) >> 14 for s in sums]
    assert np.abs(got.G).max() <= 2**37
