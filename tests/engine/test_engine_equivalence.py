"""The compiled engine computes what the int8 simulation computes.

Forward: every int8 activation identical, logits equal to float tolerance. Training: N steps at batch 1
against Int8Net + Int8Optimizer(sgd, momentum 0, QAS, rule "sr") fed the same images and labels: int8
weights identical except at most 1 LSB on at most 0.1% of the elements, loss within 1e-5 (relative)
at every step, and the weights really moved. Networks: tiny (res 32) and the paper's three (res 48).
"""

from functools import lru_cache

import numpy as np
import pytest
import torch

from mcutrain.engine.compile import compile_training
from mcutrain.engine.executor import Executor
from mcutrain.engine.executor.compare import differences, qmodel_params, run_engine, simulate
from mcutrain.engine.passes.fuse_backward import update_ops
from mcutrain.engine.passes.fuse_rows import stages_of
from mcutrain.quant.random_model import random_qmodel
from mcutrain.quant.sim_model import Int8Add, Int8Conv, Int8Net, Int8Pool
from mcutrain.sparse import get_builtin, resolve

torch.set_num_threads(1)

LR, SEED, STEPS, CLASSES = 0.1, 11, 5, 4
PAPER = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
NETS = [("tiny", 32)] + [(name, 48) for name in PAPER]
CASES = ([("tiny", 32, s) for s in ("last-k:6", "full", "bias-only")]
         + [(n, 48, s) for n in PAPER for s in ("paper-99kb", "last-k:6", "bias-only")])


@lru_cache(maxsize=None)
def _qmodel(name: str, res: int):
    return random_qmodel(name, res, CLASSES, seed=1)[0]


def _data(res: int, n: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 3, res, res)).astype(np.int8), rng.integers(0, CLASSES, n)


def _simulated_activations(q, image: np.ndarray) -> tuple[dict, np.ndarray]:
    """Every int8 layer output of the simulation, by the engine's tensor names, and the logits."""
    net = Int8Net(q)
    acts, hooks = {}, []
    for path, module in net.named_modules():
        if isinstance(module, (Int8Conv, Int8Add, Int8Pool)):
            name = module.q.name if isinstance(module, Int8Conv) else ("pool" if path == "pool" else f"{path}_out")
            hooks.append(module.register_forward_hook(
                lambda m, args, out, name=name: acts.__setitem__(name, out.detach().numpy().astype(np.int8))))
    with torch.no_grad():
        logits = net.classifier(net.features(torch.from_numpy(image[None].astype(np.float32)))).numpy()
    for h in hooks:
        h.remove()
    return acts, logits


def _fused_away(graph) -> set[str]:
    """Tensors that fused ops never materialise (checked through the outputs computed from them):
    expanded tensors of pointwise-depthwise ops, intermediate tensors of row pipelines."""
    away = {op.name.replace(".depthwise", ".pointwise1") for op in graph.ops if op.kind == "pointwise_depthwise"}
    for op in graph.ops:
        if op.kind == "mbconv_rows":
            away |= {st.outputs[0].replace(".depthwise.expanded", ".pointwise1") for st in stages_of(op)[:-1]}
    return away


@pytest.mark.parametrize("name, res", NETS)
def test_forward_is_bit_exact_in_predict_and_in_the_training_step(name, res):
    q = _qmodel(name, res)
    scheme = "last-k:6" if name == "tiny" else "paper-99kb"
    ex = Executor(compile_training(q, resolve(get_builtin(scheme, name), q.spec), lr=LR, seed=SEED))
    images, labels = _data(res, 2)
    for image, label in zip(images, labels):
        ref, ref_logits = _simulated_activations(q, image)
        predicted, trained = {}, {}
        logits = ex.predict(image, record=predicted)
        assert len(ref) == len(q.convs()) + sum(b.add is not None for b in q.blocks) + 1
        assert set(ref) - set(predicted) == _fused_away(ex.program.inference.graph)
        for tensor in set(ref) & set(predicted):
            assert np.array_equal(predicted[tensor], ref[tensor]), tensor
        np.testing.assert_allclose(logits, ref_logits, rtol=1e-6, atol=1e-6)
        ex.train_step(image, int(label), record=trained)  # its forward ran before its own update
        assert set(ref) - set(trained) == _fused_away(ex.program.train.graph)
        for tensor in set(ref) & set(trained):
            assert np.array_equal(trained[tensor], ref[tensor]), tensor
        ex = Executor(ex.program)  # back to the untrained weights for the next image
    first = next(c.name for c in q.convs() if c.name in predicted)  # the first conv output a fused op shows
    assert len(np.unique(predicted[first])) > 20  # the comparison is not trivial


@pytest.mark.parametrize("name, res, scheme", CASES)
def test_training_steps_match_the_simulation(name, res, scheme):
    q = _qmodel(name, res)
    plan = resolve(get_builtin(scheme, name), q.spec)
    images, labels = _data(res, STEPS)
    program = compile_training(q, plan, lr=LR, seed=SEED)
    engine = run_engine(Executor(program), images, labels)
    reference = simulate(q, plan, images, labels, lr=LR, seed=SEED)
    d = differences(engine, reference, qmodel_params(q))
    trained = sum(int(np.prod(op.attr("kept_shape"))) for op in update_ops(program.graph))
    print(f"{name} {scheme}: {d}, trained elements {trained}")
    assert d["max_lsb"] <= 1 and d["bias_error"] <= 1
    assert d["differing_fraction"] <= 1e-3
    assert d["loss_rel_error"] <= 1e-5
    assert d["moved"] >= max(50, 0.01 * trained)  # the weights really moved


def test_predict_after_training_uses_the_trained_parameters():
    q = _qmodel("tiny", 32)
    plan = resolve(get_builtin("full", "tiny"), q.spec)
    images, labels = _data(32, STEPS)
    ex = Executor(compile_training(q, plan, lr=LR, seed=SEED))
    before = ex.predict(images[0])
    run_engine(ex, images, labels)
    net = Int8Net(q)
    trained = net.to_qmodel()
    for conv in trained.convs():  # load the engine's integers into a fresh simulation
        conv.weight[...] = ex.parameters()[f"{conv.name}.weight"]
        conv.bias[...] = ex.parameters()[f"{conv.name}.bias"]
    trained.classifier.weight[...] = ex.parameters()["classifier.weight"]
    trained.classifier.bias[...] = ex.parameters()["classifier.bias"]
    _, ref_logits = _simulated_activations(trained, images[0])
    after = ex.predict(images[0])
    np.testing.assert_allclose(after, ref_logits, rtol=1e-6, atol=1e-6)
    assert not np.array_equal(before, after)
