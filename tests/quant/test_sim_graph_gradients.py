"""GraphNet's int8 gradients equal float autograd on the dequantized graph (DESIGN.md s. 4).

Why: the simulation's backward is hand-written per node (straight-through conv with the requantize
multiplier, ADD's own rescaling ``s_in / s_y``, avgpool, flatten, head). A defect there (a wrong
ratio at an ADD, a 1x1 stride-2 shortcut, a conv without activation whose output is not clamped at
a zero point) would train the wrong direction on the C engine too, since the engine is held equal
to the simulation. The reference here is independent of those rules: real-valued ops on the
dequantized tensors (``F.conv2d`` with TFLite's padding, ``+``, ``F.avg_pool2d``), each output made
to carry the simulation's int8 value while keeping the real op's gradient inside its clamp (zero
outside); gradients in real units converted to integer units (w_int: times s_w, b_int: times s_x s_w).
Graphs: a calibrated ResNet-like import (``tests.helpers.trainable_graphs``: identity and 1x1
stride-2 conv shortcuts, convs without activation, ADDs, a MEAN) and the shared MLPerf Tiny ResNet-8 when present.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import graph_models as gm  # noqa: E402

from mcutrain.quant.sim_graph import GraphNet, Int8Mean, Int8Pool2d, Reshape  # noqa: E402
from mcutrain.quant.sim_model import Int8Add, Int8Conv  # noqa: E402

torch.set_num_threads(1)


def _carrying(real: torch.Tensor, q: torch.Tensor, t, qmin: int, qmax: int) -> torch.Tensor:
    """``real``'s gradient inside the clamp (``qmin < q < qmax``), zero outside; the value of ``q``."""
    y = real + (t.scale * (q.double() - t.zero) - real).detach()
    return torch.where((q > qmin) & (q < qmax), y, y.detach())


def _conv(leaf: Int8Conv, x: torch.Tensor, leaves: dict) -> torch.Tensor:
    sw = leaf.w_scale.double()
    w = (leaf.weight.detach().double() * sw[:, None, None, None]).requires_grad_(True)
    b = (leaf.bias.detach().double() * sw * leaf.x_scale).requires_grad_(True)
    leaves[leaf.index] = (w, b)
    top, bottom, left, right = leaf.q.padding
    return F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, stride=leaf.q.strides, groups=leaf.groups)


def float_logits(net: GraphNet, x_q: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Logits of the dequantized graph (float64) and each conv's real (weight, bias) leaves."""
    g, q_values = net.graph, net.int8_values(x_q)
    t_in = g.tensor[g.input].q
    real = {g.input: t_in.scale * (x_q.double() - t_in.zero)}
    leaves: dict = {}
    for node, leaf in zip(net.body, net.leaves):
        xs = [real[n] for n in node.inputs]
        t = g.tensor[node.output].q
        if isinstance(leaf, Reshape):
            real[node.output] = leaf(xs[0])
            continue
        if isinstance(leaf, Int8Conv):
            y, bounds = _conv(leaf, xs[0], leaves), (leaf.qmin, leaf.qmax)
        elif isinstance(leaf, Int8Add):
            y, bounds = xs[0] + xs[1], (leaf.q.qmin, leaf.q.qmax)
        elif isinstance(leaf, Int8Pool2d) and leaf.kind == "avgpool" and not any(leaf.p.pad):
            y, bounds = F.avg_pool2d(xs[0], leaf.p.kernel, leaf.p.strides), (leaf.p.qmin, leaf.p.qmax)
        elif isinstance(leaf, Int8Mean):
            y, bounds = xs[0].mean((2, 3)).reshape(q_values[node.output].shape), (-128, 127)
        else:
            raise AssertionError(f"no float reference for {node.kind}")
        real[node.output] = _carrying(y, q_values[node.output].detach(), t, *bounds)
    head = net.classifier
    sw = head.w_scale.double()
    w = head.weight.detach().double() * sw[:, None]
    return real[net.head_input] @ w.t() + head.bias.detach().double() * sw * head.x_scale, leaves


def _check_gradients(graph, seed: int = 0, n: int = 3) -> None:
    net = GraphNet(graph)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a random head: a new zero head passes no gradient to the convs
        net.classifier.weight.copy_(torch.randint(-60, 61, net.classifier.weight.shape, generator=gen).float())
    for conv in net.convs():
        conv.weight.requires_grad_(True)
        conv.bias.requires_grad_(True)
        conv.kept = conv.weight.shape[1]
    x_q = torch.randint(-128, 128, (n,) + net.input_chw, generator=gen).float()
    labels = torch.randint(0, net.classifier.weight.shape[0], (n,), generator=gen)
    F.cross_entropy(net.classifier(net.features(x_q)), labels).backward()
    logits, leaves = float_logits(net, x_q)
    F.cross_entropy(logits, labels).backward()
    for conv in net.convs():
        w, b = leaves[conv.index]
        sw = conv.w_scale.double()
        ref_w = w.grad * sw[:, None, None, None]  # dL/dw_int = dL/dw_real * s_w
        ref_b = b.grad * sw * conv.x_scale  # dL/db_int = dL/db_real * s_x * s_w
        for name, got, ref in (("weight", conv.weight.grad, ref_w), ("bias", conv.bias.grad, ref_b)):
            assert ref.abs().max() > 0, f"conv {conv.index} {name}: no gradient reached it"
            err = float((got.double() - ref).abs().max() / ref.abs().max())
            assert err < 1e-4, f"conv {conv.index} {name}: relative error {err:.2e}"


def _resnet_like():
    """A calibrated ResNet-like import (identity and 1x1 stride-2 conv shortcuts, convs without
    activation before the ADDs, a MEAN): realistic ranges, so gradients reach every conv."""
    from mcutrain.data import load_dataset
    from tests.helpers.trainable_graphs import ResNetLike, trainable_graph

    return trainable_graph(ResNetLike, load_dataset("digits"))


def test_resnet_like_gradients_equal_the_float_reference():
    _check_gradients(_resnet_like())


def test_resnet8_gradients_equal_the_float_reference():
    from mcutrain.quant.from_tflite import load_tflite_graph

    _check_gradients(load_tflite_graph(gm.shared_model("pretrainedResnet_quant")))


def test_reference_detects_a_wrong_add_ratio():
    """The check can fail: an ADD whose gradient forgets its input's scale ratio is caught."""
    graph = _resnet_like()
    net_add = next(leaf for leaf in GraphNet(graph).leaves if isinstance(leaf, Int8Add))
    assert not np.isclose(net_add.a_ratio, 1.0)  # the ratio matters in this graph
    original = Int8Add.__init__

    def broken(self, q):
        original(self, q)
        self.a_ratio = 1.0

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Int8Add, "__init__", broken)
        with pytest.raises(AssertionError, match="relative error"):
            _check_gradients(graph)
