"""The int8 optimizer: QAS makes the int step the fp32 step; stochastic rounding is exact and seeded."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcutrain.errors import McutrainError
from mcutrain.quant.sim_model import Int8Net
from mcutrain.sparse import get_builtin, resolve
from mcutrain.train.int8_optim import Int8Optimizer
from tests.helpers.models import int8_input, quantized

LR = 0.05


def _net(scheme="last-layer", seed=0):
    q, _ = quantized("tiny", 16, seed=seed)
    net = Int8Net(q)
    net.set_trainable(resolve(get_builtin(scheme, "tiny"), q.spec))
    return net


def _batch():
    return torch.from_numpy(int8_input(4, 16).astype(np.float32)), torch.tensor([0, 1, 2, 0])


def _classifier_float_grad(net, x, y):
    """fp32 gradient of the same classifier in real units: W = s_w * W_q, b = s_x * s_w * b_q."""
    with torch.no_grad():
        pooled = net.features(x)
    c = net.classifier
    xr = (pooled - c.x_zero) * c.x_scale
    w = (c.weight.detach() * c.w_scale[:, None]).requires_grad_()
    b = (c.bias.detach() * c.x_scale * c.w_scale.double()).float().requires_grad_()
    F.cross_entropy(F.linear(xr, w, b), y).backward()
    return w.grad, b.grad


def test_int_domain_gradient_is_weight_scale_times_fp32_gradient():
    """G_Wbar = s_w * G_W and G_bbar = s_x * s_w * G_b: without QAS the step is off by s_w^2."""
    net = _net()
    x, y = _batch()
    g_w, g_b = _classifier_float_grad(net, x, y)
    F.cross_entropy(net(x / 128), y).backward()
    c = net.classifier
    assert torch.allclose(c.weight.grad, c.w_scale[:, None] * g_w, rtol=1e-4, atol=1e-12)
    assert torch.allclose(c.bias.grad.float(), (c.x_scale * c.w_scale) * g_b, rtol=1e-4, atol=1e-12)


def test_qas_turns_the_int_step_into_the_fp32_step():
    net = _net()
    x, y = _batch()
    g_w, g_b = _classifier_float_grad(net, x, y)
    opt = Int8Optimizer(net, lr=LR, qas=True, rule="latent")
    w0, b0 = net.classifier.weight.detach().clone(), net.classifier.bias.detach().clone()
    F.cross_entropy(net(x / 128), y).backward()
    opt.step()
    latent_w = next(s for s in opt.slots if s.param is net.classifier.weight).state["latent"]
    latent_b = next(s for s in opt.slots if s.param is net.classifier.bias).state["latent"]
    step_w = (latent_w - w0) * net.classifier.w_scale[:, None]  # in real units
    step_b = (latent_b - b0) * net.classifier.x_scale * net.classifier.w_scale.double()
    assert torch.allclose(step_w, -LR * g_w, rtol=1e-3, atol=1e-7)
    assert torch.allclose(step_b.float(), -LR * g_b, rtol=1e-3, atol=1e-7)
    assert step_w.abs().max() > 1e-4  # the step is not trivially zero


def _train(net, seed, steps=3, rule="sr", lr=LR, **kw):
    opt = Int8Optimizer(net, lr=lr, seed=seed, rule=rule, **kw)
    x, y = _batch()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x / 128), y).backward()
        opt.step()
    return opt


def test_stochastic_rounding_is_reproducible_and_seeded():
    a, b, c = _net("full"), _net("full"), _net("full")
    _train(a, seed=7), _train(b, seed=7), _train(c, seed=8)
    pa, pb, pc = (dict(n.named_parameters()) for n in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)
    for conv in a.convs():
        assert conv.weight.min() >= -127 and conv.weight.max() <= 127
        assert torch.equal(conv.weight, conv.weight.round())


def test_only_kept_channels_and_no_frozen_channel_move():
    net = _net("full")
    conv = net.blocks[1].pointwise1
    conv.kept = 2
    frozen = list(conv.q.frozen_channels) or [0]
    conv.q = dataclasses.replace(conv.q, frozen_channels=tuple(frozen))
    before = conv.weight.detach().clone()
    bias_before = conv.bias.detach().clone()
    _train(net, seed=1, steps=5, lr=20.0)  # a big step so the kept slice surely moves
    assert torch.equal(conv.weight[:, 2:], before[:, 2:])
    assert not torch.equal(conv.weight[:, :2], before[:, :2])
    assert torch.equal(conv.weight[frozen], before[frozen]) and torch.equal(conv.bias[frozen], bias_before[frozen])


def test_momentum_and_adam_keep_state_plain_sgd_does_not():
    assert _train(_net(), seed=0).state_bytes() == 0
    assert _train(_net(), seed=0, momentum=0.9).state_bytes() > 0
    adam = _train(_net(), seed=0, kind="adam")
    assert adam.state_bytes() == 2 * sum(s.param[s.kept_slice].numel() * 4 for s in adam.slots)


def test_unknown_optimizer_or_rule():
    with pytest.raises(McutrainError, match="unknown optimizer 'lars'"):
        Int8Optimizer(_net(), kind="lars")
    with pytest.raises(McutrainError, match="unknown update rule 'float'"):
        Int8Optimizer(_net(), rule="float")


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), 0.0, -0.5, 1e39, None])
def test_learning_rate_must_be_a_finite_positive_float32(lr):
    with pytest.raises(McutrainError, match=r"lr must be (a finite number > 0|a number)"):
        Int8Optimizer(_net(), lr=lr)
