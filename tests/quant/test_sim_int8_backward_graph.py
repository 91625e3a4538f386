"""``--backward int8`` on imported graphs: TFLite pools (clipped, overlapping windows), MEAN, fan-out.

The references loop over windows in plain Python with the spec's ``grad_multiplier`` and
``normalize``: an average window's real factor ``ratio / count`` (count: its inside positions),
the routed contributions summed exactly, normalized once; a max window routes to its maximum.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcutrain.quant import int8_grad as ig
from mcutrain.quant.graph import Mean, Pool2d
from mcutrain.quant.qmodel import QTensor
from mcutrain.quant.sim_graph import GraphNet, Int8Mean, Int8Pool2d
from mcutrain.quant.sim_int8_backward import int8_cross_entropy
from tests.quant.test_sim_int8_backward import backward_nodes, random_grad, same, split, values

torch.set_num_threads(1)
POOLS = [((3, 3), (2, 2), (1, 1, 1, 1)), ((2, 2), (1, 1), (0, 1, 0, 1)), ((3, 2), (2, 1), (1, 1, 0, 1))]


def distinct_input(shape, seed: int) -> torch.Tensor:
    """Distinct int8 values per channel: a max window has one maximum (no tie to break)."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    x = np.stack([[rng.permutation(256)[:h * w].reshape(h, w) - 128 for _ in range(c)] for _ in range(n)])
    return torch.from_numpy(x.astype(np.float32))


def pool_reference(kind, p: Pool2d, x: np.ndarray, mask: np.ndarray, g: np.ndarray, e: int):
    (kh, kw), (sy, sx), (t, _, left, _) = p.kernel, p.strides, p.pad
    c, h, w = x.shape
    acc = np.zeros(x.shape, np.float64)  # exact: a few dyadic terms per input
    for ch in range(c):
        for i in range(g.shape[1]):
            for j in range(g.shape[2]):
                ys = [y for y in range(i * sy - t, i * sy - t + kh) if 0 <= y < h]
                xs = [u for u in range(j * sx - left, j * sx - left + kw) if 0 <= u < w]
                v = float(g[ch, i, j]) * mask[ch, i, j]
                if kind == "avgpool":
                    m, sh = ig.grad_multiplier(p.x.scale / p.y.scale / (len(ys) * len(xs)))
                    for y in ys:
                        for u in xs:
                            acc[ch, y, u] += np.ldexp(v * float(m), int(sh) + e)
                else:
                    y, u = max(((y, u) for y in ys for u in xs), key=lambda yu: x[ch, yu[0], yu[1]])
                    acc[ch, y, u] += np.ldexp(v, e)
    return ig.normalize(acc)


@pytest.mark.parametrize("kind", ["avgpool", "maxpool"])
@pytest.mark.parametrize("kernel, strides, pad", POOLS)
def test_pool_backward_normalizes_the_routed_sums(kind, kernel, strides, pad):
    q = QTensor(0.05, -3)
    p = Pool2d(kernel, strides, pad, q, q, -30, 30)  # a narrow clamp: the mask matters
    leaf = Int8Pool2d(p, kind)
    leaf.backward_mode = "int8"
    x = distinct_input((2, 3, 7, 6), seed=1).requires_grad_(True)
    y = leaf(x)
    mask = ((y > p.qmin) & (y < p.qmax)).numpy()
    assert mask.any() and not mask.all()
    g, exps = random_grad(y.shape, seed=2)
    y.backward(values(g, exps).float())
    for i in range(2):
        want = pool_reference(kind, p, x.detach().numpy()[i], mask[i], g[i], exps[i])
        assert same(split(x.grad[i].double()), want)


def test_mean_backward_is_scale_grad_spread():
    p = Mean(QTensor(0.05, 2), QTensor(0.02, -1), keep_dims=False)
    leaf = Int8Mean(p)
    leaf.backward_mode = "int8"
    x = distinct_input((2, 4, 5, 3), seed=3).requires_grad_(True)
    y = leaf(x)
    mask = ((y > -128) & (y < 127)).numpy()
    g, exps = random_grad(y.shape, seed=4)
    y.backward(values(g, exps).float())
    m, sh = ig.grad_multiplier(0.05 / (0.02 * 15))
    for i in range(2):
        want, e = ig.scale_grad(g[i], exps[i], m, sh, mask[i])
        got = split(x.grad[i].double())
        assert same(got, (np.broadcast_to(want[:, None, None], (4, 5, 3)), e))


def trained_graph_net(mode: str) -> GraphNet:
    """The calibrated ResNet-like import with a random head (a zero head passes no gradient back)."""
    from mcutrain.data import load_dataset
    from tests.helpers.trainable_graphs import ResNetLike, trainable_graph

    net = GraphNet(trainable_graph(ResNetLike, load_dataset("digits")))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        net.classifier.weight.copy_(torch.randint(-60, 61, net.classifier.weight.shape, generator=gen).float())
    for leaf in net.convs():
        leaf.weight.requires_grad_(True)
        leaf.bias.requires_grad_(True)
        leaf.kept = leaf.weight.shape[0 if leaf.groups > 1 else 1]
    net.set_backward(mode)
    return net


def test_a_resnet_graph_in_int8_follows_the_float_gradient_through_its_forks():
    """Every conv gets a canonical integer gradient pointing where the float32 one points."""
    nets = {mode: trained_graph_net(mode) for mode in ("float32", "int8")}
    shape = (3,) + nets["int8"].input_chw
    x = torch.from_numpy(np.random.default_rng(5).integers(-128, 128, shape).astype(np.float32))
    labels = torch.tensor([0, 2, 1])
    shared = sum(n >= 2 for n in nets["int8"]._readers(0, len(nets["int8"].body)).values())
    assert shared  # it has fan-out
    for mode, net in nets.items():
        loss = net.classifier(net.features(x))
        assert backward_nodes(loss).count("ForkFnBackward") == (shared if mode == "int8" else 0)
        (int8_cross_entropy if mode == "int8" else torch.nn.functional.cross_entropy)(loss, labels).backward()
    for f_leaf, i_leaf in zip(nets["float32"].convs(), nets["int8"].convs()):
        G = i_leaf.weight.int8_grad
        assert np.abs(G.G).max() <= 2**37 and G.batch == 3
        got = torch.from_numpy(np.ldexp(G.G.astype(np.float64), G.E)).flatten()
        want = f_leaf.weight.grad.double().flatten()
        cosine = float(got @ want / (got.norm() * want.norm()))
        assert cosine > 0.99, f"{i_leaf.name}: cosine {cosine:.3f}"
