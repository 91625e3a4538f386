"""The PyTorch int8 simulation: bit-exact forward, correct straight-through gradients."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcutrain.quant.fixedpoint import requantize_with_mask_torch
from mcutrain.quant.int8_ops import avgpool_int8_with_mask_torch, quantized_add_with_mask_torch
from mcutrain.quant.sim_model import Int8Net
from mcutrain.quant.sim_ops import partial_weight_grad
from mcutrain.sparse import get_builtin, resolve
from tests.helpers import int8_numpy
from tests.helpers.models import int8_input, quantized


@pytest.mark.parametrize("name, res", [("tiny", 32), ("tiny", 20), ("mbv2-w0.35", 32)])
def test_forward_is_bit_exact_with_numpy(name, res):
    q, _ = quantized(name, res)
    x = int8_input(2, res)
    ref_logits, ref_acts = int8_numpy.forward(q, x)
    net = Int8Net(q)
    with torch.no_grad():
        t = net.first_conv(torch.from_numpy(x.astype(np.float32)))
        assert np.array_equal(t.numpy().astype(np.int8), ref_acts["first_conv"])
        for i, block in enumerate(net.blocks):
            t = block(t)
            assert np.array_equal(t.numpy().astype(np.int8), ref_acts[f"blocks.{i}"]), f"block {i}"
        logits = net.classifier(net.pool(t))
    np.testing.assert_allclose(logits.numpy(), ref_logits, rtol=1e-6, atol=1e-6)
    # the outputs are not all saturated: the comparison is meaningful
    assert len(np.unique(ref_acts["first_conv"])) > 20


def test_input_quantization_is_p_minus_128():
    q, _ = quantized()
    net = Int8Net(q)
    p = torch.arange(256, dtype=torch.float32)
    assert torch.equal(net.quantize_input((p - 128) / 128), p - 128)


def _ste_reference_logits(net: Int8Net, x_q: torch.Tensor) -> torch.Tensor:
    """The same forward values built from differentiable torch ops with straight-through rounding.

    ``exact + (lin - lin.detach())`` has exactly the integer value of ``exact`` (later integer layers
    need exact inputs) and the gradient of ``lin``, the unrounded linear map.
    """

    def conv(layer, t):
        with torch.no_grad():
            exact = layer(t)
            acc = F.conv2d((t - layer.x_zero).double(), layer.weight.double(), None, layer.stride,
                           layer.weight.shape[-1] // 2, 1, layer.groups) + layer.bias[None, :, None, None]
            _, inside = requantize_with_mask_torch(acc.round().long(), layer.multiplier, layer.shift,
                                                   layer.y_zero, layer.qmin, layer.qmax)
        lin = F.conv2d(t - layer.x_zero, layer.weight, None, layer.stride, layer.weight.shape[-1] // 2, 1,
                       layer.groups) + layer.bias.float()[None, :, None, None]
        lin = lin * layer.real_multiplier[None, :, None, None]
        return torch.where(inside, exact + (lin - lin.detach()), exact)

    t = conv(net.first_conv, x_q)
    for b in net.blocks:
        y = conv(b.pointwise1, t) if b.pointwise1 is not None else t
        y = conv(b.pointwise2, conv(b.depthwise, y))
        if b.add is not None:
            with torch.no_grad():
                exact, inside = quantized_add_with_mask_torch(t, y, b.add.params)
            lin = t * b.add.a_ratio + y * b.add.b_ratio
            t = torch.where(inside, exact.float() + (lin - lin.detach()), exact.float())
        else:
            t = y
    p = net.pool
    with torch.no_grad():
        pooled, inside = avgpool_int8_with_mask_torch(t, p.x.zero, p.x.scale, p.y.scale, p.y.zero)
    lin = t.mean(dim=(2, 3)) * (p.x.scale / p.y.scale)
    pooled = torch.where(inside, pooled.float() + (lin - lin.detach()), pooled.float())
    return net.classifier(pooled)


def test_gradients_equal_straight_through_autograd():
    q, _ = quantized("tiny", 16)
    net = Int8Net(q)
    plan = resolve(get_builtin("full", "tiny"), q.spec)
    net.set_trainable(plan)
    x = torch.from_numpy(int8_input(3, 16).astype(np.float32))
    y = torch.tensor([0, 1, 2])
    F.cross_entropy(net.classifier(net.features(x)), y).backward()
    ours = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    F.cross_entropy(_ste_reference_logits(net, x), y).backward()
    for n, p in net.named_parameters():
        ref = p.grad
        scale = ref.abs().max().clamp_min(1e-12)
        assert torch.allclose(ours[n].double(), ref.double(), atol=1e-4 * scale.item(), rtol=1e-4), n
    assert any(g.abs().sum() > 0 for n, g in ours.items() if "blocks.0" in n)


@pytest.mark.parametrize("groups", [1, 6])
def test_partial_weight_grad_is_the_slice_of_the_full_grad(groups):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 9)
    w = torch.randn(6, 6 // groups, 3, 3)
    g = torch.randn(2, 6, 5, 5)
    full = partial_weight_grad(x, w, g, 2, groups, kept=6)
    part = partial_weight_grad(x, w, g, 2, groups, kept=2)
    if groups == 1:
        assert torch.allclose(part[:, :2], full[:, :2], atol=1e-5) and not part[:, 2:].any()
    else:
        assert torch.allclose(part[:2], full[:2], atol=1e-5) and not part[2:].any()


def test_frozen_layers_save_no_input_and_get_no_gradient():
    q, _ = quantized("tiny", 16)
    net = Int8Net(q)
    net.set_trainable(resolve(get_builtin("last-layer", "tiny"), q.spec))
    x = torch.from_numpy(int8_input(2, 16).astype(np.float32))
    F.cross_entropy(net.classifier(net.features(x)), torch.tensor([0, 1])).backward()
    assert all(c.weight.grad is None and c.bias.grad is None for c in net.convs())
    assert net.classifier.weight.grad is not None
