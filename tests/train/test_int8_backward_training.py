"""Training with ``--backward int8``: one step at batch 1 is a hand-run of the spec, runs repeat bit for
bit (also under ``ATEN_CPU_CAPABILITY=default``), a fresh head learns, bad combinations are refused.

The hand-run walks the tiny network backwards with the NumPy functions of ``quant.int8_grad`` only
(the forward's activations and clamp masks are taken from hooks: the forward is tested elsewhere),
then applies the spec's update; the simulation's weights after ``Int8Optimizer.step`` must be the
same integers. This is what the device (batch 1, plain SGD) computes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mcutrain.cli.main import main
from mcutrain.engine.executor.kernels import softmax_ce
from mcutrain.errors import McutrainError
from mcutrain.quant import int8_grad as ig
from mcutrain.quant.model_file import load_qmodel, save_qmodel
from mcutrain.quant.int8_ops import avgpool_int8_with_mask_torch, quantized_add_with_mask_torch
from mcutrain.quant.rng import uniform_u32
from mcutrain.quant.sim_int8_backward import int8_cross_entropy
from mcutrain.quant.sim_model import Int8Net
from mcutrain.sparse import get_builtin, resolve
from mcutrain.train.finetune import FinetuneConfig, finetune
from mcutrain.train.int8_optim import Int8Optimizer, qas_factors
from tests.helpers.digits_model import make_fresh_head_digits_model
from tests.helpers.models import int8_input, quantized
from tests.quant.test_sim_int8_backward import conv_reference

torch.set_num_threads(1)
LR, SEED = 0.02, 3


def trained_tiny(q=None) -> Int8Net:
    """The tiny net, every conv trained, one weight partly, a random head, int8 backward."""
    q = q if q is not None else quantized("tiny", 32)[0]
    net = Int8Net(q)
    net.set_trainable(resolve(get_builtin("full", "tiny"), q.spec))
    net.convs()[5].kept = net.convs()[5].kept // 2  # one partly kept weight: the slice and its stream
    with torch.no_grad():  # a random head: a zero head passes no gradient back
        net.classifier.weight.copy_(torch.from_numpy(np.random.default_rng(0).integers(-90, 91,
                                                     tuple(net.classifier.weight.shape)).astype(np.float32)))
    net.set_backward("int8")
    return net


def recorded_forward(net: Int8Net, x: torch.Tensor):
    """Logits and each layer's (inputs, output) of one forward."""
    seen = {}
    for module in [*net.convs(), *(b.add for b in net.blocks if b.add is not None), net.pool, net.classifier]:
        module.register_forward_hook(lambda m, args, out: seen.__setitem__(id(m), ([a.detach() for a in args],
                                                                                   out.detach())))
    return net(x), seen


def conv_back(conv, seen, g, e):
    """One conv by the spec (conv_reference); records its parameter gradients, returns g_x."""
    (x,), y = seen[id(conv)]
    mask = ((y[0] > conv.qmin) & (y[0] < conv.qmax)).numpy()
    g_x, g_w, g_b = conv_reference(conv, x[0].numpy(), mask, g, e)
    return g_x, {conv.weight: g_w, conv.bias: g_b}


def hand_run(net: Int8Net, seen: dict, logits: torch.Tensor, label: int) -> dict:
    """The spec's backward of one sample, op by op: {parameter: (integer gradient, exponent)}."""
    head = net.classifier
    _, g_logits = softmax_ce(None, [logits.detach().numpy(), np.array([label])], 0)
    g_acc, e = ig.normalize(g_logits[0].astype(np.float64) * head.logit_scale.numpy().astype(np.float64))
    (x,), _ = seen[id(head)]
    xz = x[0].numpy().astype(np.int64) - head.x_zero
    grads = {head.weight: (np.outer(g_acc, xz), e), head.bias: (g_acc.astype(np.int64), e)}
    g, e = ig.normalize_int(g_acc.astype(np.int64) @ head.weight.detach().numpy().astype(np.int64), e)
    (x,), _ = seen[id(net.pool)]
    _, mask = avgpool_int8_with_mask_torch(x, net.pool.x.zero, net.pool.x.scale, net.pool.y.scale, net.pool.y.zero)
    h, w = x.shape[2:]
    m, sh = ig.grad_multiplier(net.pool.x.scale / (net.pool.y.scale * h * w))
    g, e = ig.scale_grad(g, e, m, sh, mask[0].numpy().reshape(g.shape))
    g = np.broadcast_to(g.reshape(-1, 1, 1), (len(g), h, w))
    for block in reversed(net.blocks):
        skip = None
        if block.add is not None:
            (a, b), _ = seen[id(block.add)]
            _, mask = quantized_add_with_mask_torch(a, b, block.add.params)
            ratios = (block.add.q.a.scale / block.add.q.y.scale, block.add.q.b.scale / block.add.q.y.scale)
            skip, branch = (ig.scale_grad(g, e, *ig.grad_multiplier(r), mask[0].numpy()) for r in ratios)
            g, e = branch
        for conv in [c for c in (block.pointwise2, block.depthwise, block.pointwise1) if c is not None]:
            (g, e), params = conv_back(conv, seen, g, e)
            grads.update(params)
        if skip is not None:
            g, e = ig.add_grads(g, e, *skip)
    grads.update(conv_back(net.first_conv, seen, g, e)[1])
    return grads


def spec_update(net: Int8Net, grads: dict, step: int) -> dict:
    """The parameters after the spec's update: {parameter: new integers (kept slice)}."""
    out = {}
    n = len(net.convs())
    layers = [(c, c.index, c.q.frozen_channels) for c in net.convs()] + [(net.classifier, n, ())]
    for layer, tensor_id, frozen in layers:
        w_qas, b_qas = qas_factors(layer.w_scale.numpy(), layer.x_scale, frozen)
        kept = getattr(layer, "kept", layer.weight.shape[1])
        groups = getattr(layer, "groups", 1)
        sl = (slice(0, kept),) if groups > 1 else (slice(None), slice(0, kept))
        w = layer.weight.detach().numpy()[sl].astype(np.int64)
        G, E = grads[layer.weight]
        qas = w_qas[:kept] if groups > 1 else w_qas
        m_c, x_c = ig.update_factor(LR, qas.reshape((-1,) + (1,) * (w.ndim - 1)))
        r = uniform_u32(SEED, step, tensor_id, w.size).reshape(w.shape)
        out[layer.weight] = ig.update_weight(w, np.asarray(G)[sl], E, m_c, x_c, r)
        G, E = grads[layer.bias]
        m_c, x_c = ig.update_factor(LR, b_qas)
        out[layer.bias] = ig.update_bias(layer.bias.detach().numpy().astype(np.int64), G, E, m_c, x_c)
    return out


def test_one_step_at_batch_one_is_the_spec_by_hand():
    net = trained_tiny()
    x = torch.from_numpy(int8_input(1, 32).astype(np.float32)) / 128
    logits, seen = recorded_forward(net, x)
    want = spec_update(net, hand_run(net, seen, logits, 2), step=1)
    opt = Int8Optimizer(net, lr=LR, momentum=0.0, seed=SEED, backward="int8")
    int8_cross_entropy(logits, torch.tensor([2])).backward()
    opt.step()
    moved = 0
    for param, new in want.items():
        got = param.detach().numpy()
        got = got[:, :new.shape[1]] if new.ndim == 4 and new.shape[1] != got.shape[1] else got[:len(new)]
        assert np.array_equal(got.astype(np.int64), new.astype(np.int64))
        moved += int((new != 0).sum())
    assert len(want) == 2 * (len(net.convs()) + 1) and moved


def test_a_batch_sums_its_samples_and_steps_at_lr_over_b():
    net = trained_tiny()
    x = torch.from_numpy(int8_input(4, 32).astype(np.float32)) / 128
    int8_cross_entropy(net(x), torch.tensor([0, 1, 2, 0])).backward()
    sums = {p: np.ldexp(p.int8_grad.G.astype(np.float64), p.int8_grad.E) for p in net.parameters() if p.requires_grad}
    alone = {p: 0.0 for p in sums}
    for i in range(4):
        for p in sums:
            p.int8_grad = None
        int8_cross_entropy(net(x[i:i + 1]), torch.tensor([[0, 1, 2, 0][i]])).backward()
        for p in sums:
            alone[p] = alone[p] + np.ldexp(p.int8_grad.G.astype(np.float64), p.int8_grad.E)
    for p in sums:
        tol = np.ldexp(1.0, p.int8_grad.E)  # one rounding at the batch's exponent (4 samples: E < theirs)
        assert np.abs(sums[p] - alone[p]).max() <= tol


TRAIN_SCRIPT = """
import hashlib, sys, numpy as np, torch
from tests.train.test_int8_backward_training import trained_tiny
from mcutrain.quant.model_file import load_qmodel
from mcutrain.quant.sim_int8_backward import int8_cross_entropy
from mcutrain.train.int8_optim import Int8Optimizer
from tests.helpers.models import int8_input
torch.set_num_threads(1)
net = trained_tiny(load_qmodel(sys.argv[1]))
opt = Int8Optimizer(net, lr=0.05, momentum=0.0, seed=1, backward="int8")
x = torch.from_numpy(int8_input(6, 32).astype(np.float32)) / 128
for i in range(3):
    opt.zero_grad()
    int8_cross_entropy(net(x[2 * i:2 * i + 2]), torch.tensor([i % 3, 2])).backward()
    opt.step()
h = hashlib.sha256()
for p in net.parameters():
    h.update(p.detach().numpy().tobytes())
print(h.hexdigest())
"""


def _trained_hash(model, capability: str | None) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    out = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(model)], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().splitlines()[-1]


def test_training_repeats_bit_for_bit_whatever_the_cpu_kernels(tmp_path):
    """One model file for all three runs: building a random model calibrates floats, which may differ in
    the last bit of a scale between CPU kernels; training on a given model must not."""
    model = tmp_path / "tiny.safetensors"
    save_qmodel(model, quantized("tiny", 32)[0])
    first = _trained_hash(model, None)
    assert first == _trained_hash(model, None)
    assert first == _trained_hash(model, "default")


@pytest.fixture(scope="module")
def fresh_head(tmp_path_factory):
    return make_fresh_head_digits_model(tmp_path_factory.mktemp("digits"))


def test_a_fresh_head_learns_with_the_int8_backward(fresh_head, tmp_path):
    cfg = FinetuneConfig(model=str(fresh_head), data="digits", scheme="last-k:4", epochs=1, batch_size=1,
                         lr=0.003, momentum=0.0, seed=0, train_subset=400, eval_subset=300, backward="int8")
    r = finetune(cfg, progress=False)
    assert r["accuracy_before"] < 0.2 and r["accuracy"] > 0.8  # 10 classes: chance is 0.1 (measured: 0.91)


def test_the_cli_trains_with_the_int8_backward_and_records_it(fresh_head, tmp_path):
    out = tmp_path / "o.safetensors"
    argv = ["finetune", str(fresh_head), "--data", "digits", "--scheme", "last-k:4", "--out", str(out),
            "--backward", "int8", "--momentum", "0", "--batch-size", "1", "--epochs", "1", "--lr", "0.003",
            "--train-subset", "300", "--eval-subset", "200", "--quiet"]
    assert main(argv) == 0
    assert load_qmodel(out).provenance["finetune"]["backward"] == "int8"


@pytest.mark.parametrize("flags, message", [
    ([], "--momentum 0"),
    (["--momentum", "0", "--optimizer", "adam"], "--optimizer adam"),
    (["--momentum", "0", "--float"], "--float"),
    (["--momentum", "0", "--update-rule", "latent"], "--update-rule latent"),
])
def test_bad_combinations_are_one_line_errors(flags, message, tmp_path, capsys):
    argv = ["finetune", "model.safetensors", "--data", "digits", "--scheme", "last-layer",
            "--out", str(tmp_path / "o.safetensors"), "--backward", "int8", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_the_optimizer_refuses_momentum_in_int8_mode():
    with pytest.raises(McutrainError, match="momentum"):
        Int8Optimizer(trained_tiny(), lr=0.1, momentum=0.9, backward="int8")


def test_a_batch_steps_at_lr_over_b():
    net = trained_tiny()
    x = torch.from_numpy(int8_input(3, 32).astype(np.float32)) / 128
    opt = Int8Optimizer(net, lr=LR, momentum=0.0, seed=SEED, backward="int8")
    int8_cross_entropy(net(x), torch.tensor([0, 1, 2])).backward()
    head = net.classifier
    grad = head.bias.int8_grad
    _, b_qas = qas_factors(head.w_scale.numpy(), head.x_scale)
    want = ig.update_bias(head.bias.detach().numpy().astype(np.int64), grad.G, grad.E, *ig.update_factor(LR / 3, b_qas))
    opt.step()
    assert grad.batch == 3 and np.array_equal(head.bias.detach().numpy().astype(np.int64), want)
    zero = np.zeros(len(want), np.int64)
    at_lr = ig.update_bias(zero, grad.G, grad.E, *ig.update_factor(LR, b_qas))
    assert np.abs(at_lr).max() > 3  # steps big enough that lr vs lr / 3 shows
