"""GraphNet (the torch simulation of a QGraph) against graph_forward (the reference = LiteRT), and its gradients.

Every int8 tensor up to the classifier's input must equal graph_forward's, on the synthetic graphs
(every node kind and option), on random hypothesis-drawn classifiers and on both shared MLPerf Tiny
models; the logits are the classifier's int32 accumulators times s_x * s_w; to_graph of an untrained
net is the graph itself; the frozen-prefix cut gives the same logits as the whole forward.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from graph_models import CLASSIFIERS, random_classifier, random_input, shared_model  # noqa: E402

from mcutrain.quant.graph import Pool2d  # noqa: E402
from mcutrain.quant.graph_forward import fully_connected_logits, graph_forward  # noqa: E402
from mcutrain.quant.qmodel import QTensor  # noqa: E402
from mcutrain.quant.sim_graph import GraphNet, Int8Pool2d  # noqa: E402
from mcutrain.sparse.builtin import graph_plan  # noqa: E402


def _check_exact(graph, x_int8: np.ndarray) -> None:
    net = GraphNet(graph)
    ref = graph_forward(graph, x_int8)
    with torch.no_grad():
        got = net.int8_values(torch.from_numpy(x_int8.astype(np.float32)))
        logits = net.classifier(got[net.head_input]).double().numpy()
    for name, value in got.items():
        np.testing.assert_array_equal(value.numpy().astype(np.int64), ref[name].astype(np.int64), err_msg=name)
    head = graph.nodes[net.head_index].params
    np.testing.assert_allclose(logits, fully_connected_logits(ref[net.head_input], head), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_synthetic_graphs_bit_exact(name):
    graph = CLASSIFIERS[name]()
    _check_exact(graph, np.concatenate([random_input(graph, seed=s) for s in range(4)]))


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_random_graphs_bit_exact(data):
    graph = random_classifier(lambda lo, hi: data.draw(st.integers(lo, hi)), lambda: data.draw(st.booleans()),
                              seed=data.draw(st.integers(0, 1000)))
    _check_exact(graph, np.concatenate([random_input(graph, seed=s) for s in range(2)]))


@pytest.mark.parametrize("name", ["vww_96_int8", "pretrainedResnet_quant"])
def test_shared_models_bit_exact(name):
    from mcutrain.quant.from_tflite import load_tflite_graph

    graph = load_tflite_graph(shared_model(name))
    _check_exact(graph, np.concatenate([random_input(graph, seed=s) for s in range(2)]))


def test_to_graph_of_untrained_net_is_the_graph():
    for build in CLASSIFIERS.values():
        graph = build()
        assert GraphNet(graph).to_graph() == graph


def test_quantize_input_is_pixel_minus_128_and_grey_is_rounded_rgb_mean():
    graph = CLASSIFIERS["plain_cnn"]()  # one input channel
    net = GraphNet(graph)
    h, w = net.input_chw[1:]
    pixels = torch.randint(0, 256, (2, 3, h, w)).float()
    q = net.quantize_input((pixels - 128) / 128)
    assert torch.equal(q, torch.round(pixels.sum(1, keepdim=True) / 3) - 128)


def test_frozen_prefix_cut_gives_the_same_logits():
    graph = CLASSIFIERS["resnet"]()
    net = GraphNet(graph)
    plan = graph_plan(graph, "last-k:1")
    cut = net.frozen_split(plan)
    assert cut is not None and len(net.live_after(cut)) == 1
    # the last conv is the 1x1 shortcut, read by the final add; the cut is before it and before
    # the conv of the other branch only if that keeps one live tensor
    h, w = net.input_chw[1:]
    x = (torch.randint(0, 256, (3, 3, h, w)).float() - 128) / 128
    with torch.no_grad():
        assert torch.equal(net.suffix(net.prefix(x, cut), cut), net(x))
    inside_block = [c for c in range(1, len(net.body)) if len(net.live_after(c)) > 1]
    assert inside_block  # a residual block has cuts with two live tensors, which are never chosen
    assert cut not in inside_block


def _pool_layer(kind, kernel, strides, pad):
    q = QTensor(0.05, 3)
    return Int8Pool2d(Pool2d(kernel, strides, pad, q, q), kind)


@pytest.mark.parametrize("kind", ["avgpool", "maxpool"])
def test_pool_gradient_is_the_real_valued_pools(kind):
    layer = _pool_layer(kind, (3, 2), (2, 1), (1, 1, 0, 1))
    # distinct values: no ties in a window, so the maximum's gradient has one destination
    x = (torch.randperm(2 * 3 * 7 * 6) - 126).float().reshape(2, 3, 7, 6).requires_grad_(True)
    y = layer(x)
    g = torch.randn_like(y)
    (g_x,) = torch.autograd.grad(y, x, g)
    xs = x.detach().clone().requires_grad_(True)
    if kind == "avgpool":  # the clipped-window mean, written out position by position
        ref = torch.stack([torch.stack([xs[:, :, max(0, 2 * i - 1):2 * i + 2, j:j + 2].mean((2, 3))
                                        for j in range(y.shape[3])], -1) for i in range(y.shape[2])], -2)
    else:
        ref = torch.stack([torch.stack([xs[:, :, max(0, 2 * i - 1):2 * i + 2, j:j + 2].amax((2, 3))
                                        for j in range(y.shape[3])], -1) for i in range(y.shape[2])], -2)
    if kind == "maxpool":  # integers: the forward is the window maximum itself
        assert torch.equal(ref.detach(), y.detach())
    (g_ref,) = torch.autograd.grad(ref, xs, g)
    torch.testing.assert_close(g_x, g_ref)


def test_gradients_reach_every_trained_conv_through_adds_and_pools():
    """With every conv trained, the straight-through gradient reaches each conv of both residual
    branches (through the classifier, the mean and the adds), and a step against the classifier's
    gradient lowers the loss (the logits are the exact int32 accumulators times s_x * s_w)."""
    from tests.helpers.trainable_graphs import ResNetLike, trainable_graph

    from mcutrain.data import load_dataset

    digits = load_dataset("digits")
    graph = trainable_graph(ResNetLike, digits)
    net = GraphNet(graph)
    net.set_trainable(graph_plan(graph, "full"))
    h, w = net.input_chw[1:]
    x = (torch.randint(0, 256, (16, 3, h, w)).float() - 128) / 128
    y = torch.randint(0, 10, (16,))
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    for conv in net.convs():
        assert torch.isfinite(conv.bias.grad).all() and conv.bias.grad.abs().sum() > 0, conv.name
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0, conv.name
    g = net.classifier.weight.grad
    with torch.no_grad():
        net.classifier.weight -= torch.round(g / g.abs().max() * 8)
        assert torch.nn.functional.cross_entropy(net(x), y) < loss


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_every_single_tensor_cut_splits_the_forward_exactly(data):
    graph = random_classifier(lambda lo, hi: data.draw(st.integers(lo, hi)), lambda: data.draw(st.booleans()),
                              seed=data.draw(st.integers(0, 1000)))
    net = GraphNet(graph)
    h, w = net.input_chw[1:]
    x = (torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 3, h, w))).float() - 128) / 128
    with torch.no_grad():
        whole = net(x)
        for cut in range(1, len(net.body) + 1):
            if len(net.live_after(cut)) == 1:
                assert torch.equal(net.suffix(net.prefix(x, cut), cut), whole)


def test_to_graph_writes_changed_integers_back():
    graph = CLASSIFIERS["resnet"]()
    net = GraphNet(graph)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for conv in net.convs():
            conv.weight.copy_(torch.randint(-127, 128, conv.weight.shape, generator=gen).float())
            conv.bias.add_(torch.randint(-50, 51, conv.bias.shape, generator=gen).double())
        net.classifier.bias.add_(7)
    trained = net.to_graph()
    assert trained != graph and trained.convs()[0].weight.dtype == np.int8
    head = trained.nodes[net.head_index].params
    assert head.bias is not None and (head.bias == 7).all()  # the head had no bias: training gave it one
    x = np.concatenate([random_input(graph, seed=s) for s in range(2)])
    ref = graph_forward(trained, x)
    with torch.no_grad():
        got = GraphNet(trained).int8_values(torch.from_numpy(x.astype(np.float32)))
        ours = net.int8_values(torch.from_numpy(x.astype(np.float32)))
    for name in got:
        np.testing.assert_array_equal(ours[name].numpy(), ref[name].astype(np.float32), err_msg=name)
        np.testing.assert_array_equal(got[name].numpy(), ours[name].numpy(), err_msg=name)


def test_hidden_fully_connected_layers_train_as_convs_of_a_scheme():
    """fc_stack: conv -> flatten -> fc (no bias) -> fc -> head. The hidden layers are convs 1 and 2
    (``Int8FcConv``): a scheme trains them, the frozen prefix ends before the first trained one, and
    ``to_graph`` writes them back as fully connected nodes (a missing bias only once training moved it)."""
    graph = CLASSIFIERS["fc_stack"]()
    net = GraphNet(graph)
    assert [type(c).__name__ for c in net.convs()] == ["Int8Conv", "Int8FcConv", "Int8FcConv"]
    assert [c.index for c in net.convs()] == [0, 1, 2] and len(graph.convs()) == 3
    plan = graph_plan(graph, "last-k:1")
    net.set_trainable(plan)
    first, last = net.convs()[1:]
    assert last.weight.requires_grad and not first.weight.requires_grad and not first.bias.requires_grad
    cut = net.frozen_split(plan)
    assert cut == 3 and graph.nodes[cut].kind == "fully_connected"  # the prefix ends before the trained fc
    h, w = net.input_chw[1:]
    x = (torch.from_numpy(np.random.default_rng(2).integers(0, 256, (8, 3, h, w))).float() - 128) / 128
    loss = torch.nn.functional.cross_entropy(net.suffix(net.prefix(x, cut), cut), torch.arange(8) % 4)
    loss.backward()
    assert last.weight.grad.abs().sum() > 0 and last.bias.grad.abs().sum() > 0
    with torch.no_grad():
        last.weight.copy_(torch.randint(-127, 128, last.weight.shape, generator=torch.Generator().manual_seed(1)))
        first.bias.zero_()
    trained = net.to_graph()
    assert trained.nodes[2].params.bias is None  # the first hidden fc had none and training left it 0
    np.testing.assert_array_equal(trained.nodes[3].params.weight, last.weight.detach().numpy()[:, :, 0, 0])
    xq = np.concatenate([random_input(graph, seed=s) for s in range(2)])
    with torch.no_grad():
        ours = net.int8_values(torch.from_numpy(xq.astype(np.float32)))
    ref = graph_forward(trained, xq)
    for name in ours:
        np.testing.assert_array_equal(ours[name].numpy(), ref[name].astype(np.float32), err_msg=name)
