"""The int8 simulation and its fp32 twin with general conv geometry (issue 13): per-axis strides,
asymmetric padding with the input zero point, non-square kernels and inputs, 1-channel images."""

import numpy as np
import pytest
import torch

from mcutrain.quant.sim_model import Int8Net
from mcutrain.sparse import get_builtin, resolve
from mcutrain.quant.sim_ops import exact_conv, input_grad, partial_weight_grad
from mcutrain.train.float_twin import FloatTwin
from tests.helpers.geometry import general_qmodel, int8_images, same_padding

GEOMETRIES = [((5, 3), (2, 1), (1, 2, 1, 1)), ((1, 7), (1, 1), (0, 0, 3, 3)), ((3, 3), (1, 1), (0, 0, 0, 0)),
              ((4, 2), (2, 2), (1, 2, 0, 1)), ((11, 11), (2, 1), (5, 5, 5, 5))]


def _reference_conv(x: np.ndarray, w: np.ndarray, strides, pads, x_zero: int, groups: int) -> np.ndarray:
    """Loops over output positions: the input padded with its zero point, then shifted."""
    top, bottom, left, right = pads
    xp = np.pad(x.astype(np.int64), ((0, 0), (top, bottom), (left, right)), constant_values=x_zero) - x_zero
    kh, kw = w.shape[2:]
    ho, wo = (xp.shape[1] - kh) // strides[0] + 1, (xp.shape[2] - kw) // strides[1] + 1
    out = np.zeros((w.shape[0], ho, wo), np.int64)
    per = x.shape[0] // groups
    for o in range(w.shape[0]):
        g = o // (w.shape[0] // groups)
        for i in range(ho):
            for j in range(wo):
                win = xp[g * per:(g + 1) * per, i * strides[0]:i * strides[0] + kh, j * strides[1]:j * strides[1] + kw]
                out[o, i, j] = (win * w[o].astype(np.int64)).sum()
    return out


@pytest.mark.parametrize("kernel, strides, pads", GEOMETRIES)
@pytest.mark.parametrize("groups", [1, 4])
def test_exact_conv_pads_with_the_zero_point_per_side(kernel, strides, pads, groups):
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (4, 9, 8))
    w = rng.integers(-127, 128, (4, 4 // groups) + kernel)
    got = exact_conv(torch.from_numpy(x[None] - 7.0), torch.from_numpy(w.astype(np.float32)), strides, groups, pads)
    np.testing.assert_array_equal(got[0].numpy(), _reference_conv(x, w, strides, pads, 7, groups))


@pytest.mark.parametrize("kernel, strides, pads", GEOMETRIES)
@pytest.mark.parametrize("groups", [1, 4])
def test_input_and_weight_gradients_are_autograds_of_the_padded_conv(kernel, strides, pads, groups):
    torch.manual_seed(0)
    x = torch.randn(1, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn((4, 4 // groups) + kernel, dtype=torch.float64, requires_grad=True)
    top, bottom, left, right = pads
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (left, right, top, bottom)), w, None, strides,
                                   0, 1, groups)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    torch.testing.assert_close(input_grad(x.shape, w.detach(), g, strides, groups, pads), gx)
    torch.testing.assert_close(partial_weight_grad(x.detach(), w.detach(), g, strides, groups, 4, pads), gw)


def test_same_padding_puts_the_odd_row_at_the_bottom():
    assert same_padding((20, 28), (5, 3), (2, 1)) == (1, 2, 1, 1)
    assert same_padding((10, 10), (4, 4), (1, 1)) == (1, 2, 1, 2)
    assert same_padding((7, 7), (1, 1), (2, 2)) == (0, 0, 0, 0)


@pytest.mark.parametrize("variant", ["mixed", "wide"])
def test_general_models_run_forward_and_backward_with_the_planned_shapes(variant):
    q = general_qmodel(variant)
    assert any(c.general_geometry for c in q.convs())
    net = Int8Net(q)
    shapes = []
    hooks = [c.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape[2:]))) for c in net.convs()]
    net.set_trainable(resolve(get_builtin("full", "tiny"), q.spec))
    logits = net(torch.from_numpy(int8_images(q, 2).astype(np.float32)) * q.input.scale)
    for h in hooks:
        h.remove()
    assert shapes == q.activation_sizes()
    logits.sum().backward()
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in net.convs())


@pytest.mark.parametrize("variant", ["mixed", "wide"])
def test_the_float_twin_pads_and_strides_as_the_int8_network(variant):
    """Conv by conv on the same (dequantized) input, the fp32 twin's output is the int8 one before its
    rounding: within half a step plus the weights' rounding wherever the int8 output is not clamped."""
    q = general_qmodel(variant)
    x = torch.from_numpy(int8_images(q, 2).astype(np.float32))
    net, twin = Int8Net(q), FloatTwin(q)
    inputs = {}
    for c in net.convs():
        c.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m.name, a[0]))
    with torch.no_grad():
        net.features(x)
        for int8, fp32 in zip(net.convs(), twin.convs(), strict=True):
            x_q = inputs[int8.name]
            y_q = int8(x_q)
            y = fp32((x_q - int8.x_zero) * int8.x_scale) / int8.q.y.scale + int8.y_zero
            inside = (y_q > int8.qmin) & (y_q < int8.qmax)
            assert y.shape == y_q.shape and inside.float().mean() > 0.2, int8.name
            assert (y - y_q)[inside].abs().max() < 0.6, int8.name  # a padding error is many steps
