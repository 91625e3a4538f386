"""Loss and compile-time autodiff: the joint graph's structure and its gradients (vs the simulation)."""

from functools import lru_cache

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcutrain.engine.autodiff import VJP_RULES, differentiate, param_gradients
from mcutrain.engine.compile import plan_stage
from mcutrain.engine.executor import StageRunner
from mcutrain.engine.executor.kernels import softmax_ce
from mcutrain.engine.frontend import graph_from_qmodel
from mcutrain.engine.loss import append_loss, grad_name
from mcutrain.quant.random_model import random_qmodel
from mcutrain.quant.sim_model import Int8Net
from mcutrain.sparse import get_builtin, resolve

torch.set_num_threads(1)


@lru_cache(maxsize=None)
def _qmodel(name: str = "tiny", res: int = 32):
    return random_qmodel(name, res, 4, seed=2)[0]


def _joint(scheme: str, name: str = "tiny", res: int = 32):
    q = _qmodel(name, res)
    plan = resolve(get_builtin(scheme, name), q.spec)
    return q, plan, differentiate(append_loss(graph_from_qmodel(q, plan)), plan)


def _backward(graph):
    return [op for op in graph.ops if op.phase == "backward"]


def test_loss_adds_a_label_input_and_one_fused_softmax_ce():
    q = _qmodel()
    g = append_loss(graph_from_qmodel(q))
    assert g.inputs == ("image", "label") and g.outputs == ("loss",)
    label, loss = g.tensor("label"), g.tensor("loss")
    assert (label.dtype, label.shape, label.role) == ("int32", (1,), "label")
    assert (loss.dtype, loss.shape, loss.role) == ("float32", (1,), "loss")
    (op,) = [op for op in g.ops if op.kind == "softmax_ce"]
    assert op.inputs == ("logits", "label") and op.outputs == ("loss", grad_name("logits"))


def test_softmax_ce_is_cross_entropy_and_softmax_minus_onehot():
    z = torch.tensor([[0.3, -1.2, 2.5, 0.0]], requires_grad=True)
    loss = F.cross_entropy(z, torch.tensor([1]))
    loss.backward()
    (op,) = [op for op in append_loss(graph_from_qmodel(_qmodel())).ops if op.kind == "softmax_ce"]
    ours, grad = softmax_ce(op, [z.detach().numpy(), np.array([1], np.int32)], 0)
    np.testing.assert_allclose(ours, [loss.item()], rtol=1e-6)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad.sum(), 0.0, atol=1e-6)


def test_one_rule_per_forward_op_kind_in_one_table():
    assert set(VJP_RULES) == {"conv2d", "add", "avgpool", "linear",
                              "tfl_avgpool", "tfl_maxpool", "tfl_mean", "reshape"}  # imported graphs (issue 13)
    kinds = {op.kind for op in graph_from_qmodel(_qmodel()).ops}
    assert kinds <= set(VJP_RULES)


def test_residual_fan_out_gradients_are_summed_not_overwritten():
    _, _, g = _joint("full")
    producers = g.producers()
    for add in (op for op in g.ops if op.kind == "add"):
        shortcut = add.inputs[0]
        total = g.ops[producers[grad_name(shortcut)]]
        if total.kind == "conv2d_grad_x":  # the 1x1 conv's input gradient added into the skip branch's
            assert len(total.inputs) == 3, shortcut
            assert g.ops[producers[total.inputs[2]]].kind == "add_grad", shortcut
            continue
        assert total.kind == "grad_sum" and len(total.inputs) == 2, shortcut
        sources = {g.ops[producers[t]].kind for t in total.inputs}
        assert sources == {"add_grad", "conv2d_grad_x"}, (shortcut, sources)


def test_nothing_below_the_lowest_trained_layer_is_differentiated():
    q, plan, g = _joint("last-k:6")
    low = plan.lowest_trained_conv
    convs = {op.name: op for op in g.ops if op.kind == "conv2d"}
    differentiated = {op.name.rsplit(".", 1)[0] for op in _backward(g)}
    for name, op in convs.items():
        assert (name in differentiated) == (op.attr("index") >= low), name
    lowest = next(op for op in convs.values() if op.attr("index") == low)
    assert f"{lowest.name}.conv2d_grad_x" not in {op.name for op in g.ops}
    assert grad_name("image") not in g.tensors


def test_classifier_only_plan_has_no_input_gradient_at_all():
    _, _, g = _joint("last-layer")
    assert sorted(op.kind for op in _backward(g)) == ["linear_grad_b", "linear_grad_w", "softmax_ce"]
    assert not any(len(op.outputs) > 1 for op in g.ops if op.phase == "forward")  # no masks


def test_masks_replace_activations_and_weight_gradients_read_only_the_kept_channels():
    q, plan, g = _joint("paper-99kb", "mcunet-5fps", 48)
    masks = [t for t in g.tensors.values() if t.role == "mask"]
    assert masks and all(t.dtype == "bit" and t.nbytes == (t.numel + 7) // 8 for t in masks)
    backward_reads = {n for op in _backward(g) for n in op.inputs}
    for op in (o for o in g.ops if o.kind == "conv2d_grad_w"):
        kept, (x_kept, _) = op.attr("kept"), op.inputs
        conv = next(c for c in g.ops if c.name == op.name.rsplit(".", 1)[0])
        assert kept == plan.convs[conv.attr("index")].kept_channels
        x = conv.inputs[0]
        if kept < g.tensor(x).shape[1]:
            copy = g.ops[g.producers()[x_kept]]
            assert copy.kind == "slice_channels" and copy.attr("channels") == kept
            assert g.ops.index(copy) == g.producers()[x] + 1  # right after the producer
            assert x not in backward_reads  # the full activation is not kept for the backward
    # a bias-only layer's backward reads its mask, never its input or output activation
    bias_only = [c for c in plan.convs if c.bias and not c.updates_weight]
    assert bias_only
    for c in bias_only:
        conv = next(o for o in g.ops if o.kind == "conv2d" and o.attr("index") == c.index)
        own = {n for op in _backward(g) if op.name.startswith(conv.name + ".") for n in op.inputs}
        assert len(conv.outputs) == 2 and conv.outputs[1] in own
        assert conv.inputs[0] not in own and conv.outputs[0] not in own


def test_real_multiplier_constants_are_the_simulations():
    q, _, g = _joint("full")
    net = Int8Net(q)
    for conv in net.convs():
        assert np.array_equal(g.constants[f"{conv.name}.real_multiplier"], conv.real_multiplier.numpy())


@pytest.mark.parametrize("name, res, scheme", [("tiny", 32, "full"), ("tiny", 32, "last-k:6"),
                                                ("mbv2-w0.35", 32, "paper-99kb")])
def test_joint_graph_gradients_equal_the_simulation(name, res, scheme):
    q, plan, g = _joint(scheme, name, res)
    image = np.random.default_rng(0).integers(-128, 128, (1, 3, res, res)).astype(np.int8)
    runner = StageRunner(plan_stage(g), params={})
    out = runner.run({"image": image, "label": np.array([2], np.int32)})
    net = Int8Net(q)
    net.set_trainable(plan)
    loss = F.cross_entropy(net.classifier(net.features(torch.from_numpy(image.astype(np.float32)))),
                           torch.tensor([2]))
    loss.backward()
    np.testing.assert_allclose(out["loss"], [loss.item()], rtol=1e-6)
    sim = {f"{m.name}.{p}": getattr(m, p).grad for m in net.convs() for p in ("weight", "bias")}
    sim.update({f"classifier.{p}": getattr(net.classifier, p).grad for p in ("weight", "bias")})
    grads = param_gradients(g)
    assert set(grads) == {n for n, t in sim.items() if t is not None}
    for param, grad in grads.items():
        ref = sim[param].numpy()[tuple(slice(0, s) for s in out[grad].shape)]
        scale = max(float(np.abs(ref).max()), 1e-30)
        np.testing.assert_allclose(out[grad], ref, rtol=1e-5, atol=1e-5 * scale, err_msg=param)
    assert any(np.abs(out[grads[p]]).max() > 0 for p in grads if not p.startswith("classifier"))
