"""The engine's frontend for imported graphs: the compiled engine computes what ``GraphNet`` computes.

Forward: every int8 activation of the NumPy executor equals the simulation's (predict and the
training step's forward), logits to float tolerance. Training: steps at batch 1 against GraphNet +
Int8Optimizer(sgd, momentum 0, QAS, rule "sr") with the tolerance of test_engine_equivalence.py.
Graphs: the seeded synthetic classifiers (max pool, depthwise, mean, residual adds, 1x1 stride-2
shortcut, windowed avgpool, channels-last flatten, per-tensor head without bias) and the trainable
ResNet-like / VWW-like imports (a grey non-square input).
"""

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))
import graph_models as gm  # noqa: E402

from mcutrain.engine.compile import compile_training  # noqa: E402
from mcutrain.engine.executor import Executor  # noqa: E402
from mcutrain.engine.executor.compare import Trace, differences, run_engine, train_one_by_one  # noqa: E402
from mcutrain.engine.frontend import UnsupportedError, engine_names, graph_from_qgraph  # noqa: E402
from mcutrain.engine.passes.fuse_backward import update_ops  # noqa: E402
from mcutrain.quant.graph_head import classifier_node  # noqa: E402
from mcutrain.quant.sim_graph import GraphNet  # noqa: E402
from mcutrain.sparse.builtin import graph_plan  # noqa: E402

torch.set_num_threads(1)
LR, SEED, STEPS = 0.1, 11, 5


@lru_cache(maxsize=None)
def _graph(name: str):
    if name in ("plain_cnn", "resnet"):
        return getattr(gm, name)()
    from mcutrain.data import load_dataset
    from tests.helpers.trainable_graphs import ResNetLike, VwwLike, trainable_graph

    return trainable_graph({"resnet_like": ResNetLike, "vww_like": VwwLike}[name], load_dataset("digits"))


GRAPHS = ("plain_cnn", "resnet", "resnet_like", "vww_like")


def graph_params(g) -> dict[str, np.ndarray]:
    """A graph's trainable integers under the engine's names (a head without bias: zeros)."""
    params, names = {}, engine_names(g)
    for node in g.nodes:
        if node.kind == "conv2d":
            name = names[node.output]
            params[f"{name}.weight"], params[f"{name}.bias"] = node.params.weight, node.params.bias
    head = g.nodes[classifier_node(g)[0]].params
    params["classifier.weight"] = head.weight
    params["classifier.bias"] = head.bias if head.bias is not None else np.zeros(head.weight.shape[0], np.int32)
    return params


def _images(g, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    shape = g.tensor[g.input].shape[1:]
    k = g.tensor[g.nodes[classifier_node(g)[0]].output].shape[1]
    return rng.integers(-128, 128, (n,) + shape).astype(np.int8), rng.integers(0, k, n)


def _materialised(graph) -> set[str]:
    return {t for op in graph.ops for t in op.outputs}


def simulate_graph(g, plan, images, labels) -> Trace:
    net = GraphNet(g)
    losses = train_one_by_one(net, plan, images, labels, lr=LR, seed=SEED)
    return Trace(losses, graph_params(net.to_graph()))


@pytest.mark.parametrize("name", GRAPHS)
def test_int8_activations_equal_the_simulation(name):
    g = _graph(name)
    ex = Executor(compile_training(g, graph_plan(g, "full"), lr=LR, seed=SEED))
    net, names = GraphNet(g), engine_names(g)
    images, labels = _images(g, 2)
    for image, label in zip(images, labels):
        with torch.no_grad():
            ref = {names[k]: v.numpy().astype(np.int8) for k, v in
                   net.int8_values(torch.from_numpy(image[None].astype(np.float32))).items() if k != g.input}
            ref_logits = net.classifier(torch.from_numpy(ref[names[net.head_input]].astype(np.float32))).numpy()
        predicted, trained = {}, {}
        np.testing.assert_allclose(ex.predict(image, record=predicted), ref_logits, rtol=1e-6, atol=1e-6)
        ex.train_step(image, int(label), record=trained)
        for record, stage in ((predicted, ex.program.inference), (trained, ex.program.train)):
            assert set(ref) - set(record) == set(ref) - _materialised(stage.graph)  # fused ops hide the rest
            for tensor in set(ref) & set(record):
                assert np.array_equal(record[tensor].reshape(ref[tensor].shape), ref[tensor]), tensor
        ex = Executor(ex.program)
    assert len(np.unique(ref["conv2d_0"])) > 5  # the comparison is not trivial


@pytest.mark.parametrize("name, scheme", [(n, s) for n in GRAPHS for s in ("full", "bias-only", "last-k:2")])
def test_training_steps_match_the_simulation(name, scheme):
    g = _graph(name)
    plan = graph_plan(g, scheme)
    images, labels = _images(g, STEPS)
    program = compile_training(g, plan, lr=LR, seed=SEED)
    engine = run_engine(Executor(program), images, labels)
    reference = simulate_graph(g, plan, images, labels)
    d = differences(engine, reference, graph_params(g))
    trained = sum(int(np.prod(op.attr("kept_shape"))) for op in update_ops(program.graph))
    print(f"{name} {scheme}: {d}, trained elements {trained}")
    assert d["max_lsb"] <= 1 and d["bias_error"] <= 1
    assert d["differing_fraction"] <= 1e-3
    assert d["loss_rel_error"] <= 1e-5
    assert d["moved"] >= min(30, trained)  # the parameters really moved


def test_ops_and_head_constants():
    g = gm.resnet()  # per-tensor head without bias
    forward = graph_from_qgraph(g, graph_plan(g, "full"))
    assert [op.name for op in forward.ops][:3] == ["conv2d_0", "conv2d_1", "add_2"]
    assert [op.kind for op in forward.ops] == ["conv2d", "conv2d", "add", "conv2d", "conv2d", "add", "tfl_avgpool",
                                                "reshape", "linear"]
    head = g.nodes[classifier_node(g)[0]].params
    k = head.weight.shape[0]
    assert forward.constants["classifier.w_scale"].shape == (k,)
    assert not forward.constants["classifier.bias"].any()
    expected = np.float32(head.x.scale * np.float64(np.float32(head.w_scale[0])))
    assert np.all(forward.constants["classifier.logit_scale"] == expected)
    assert forward.outputs == ("logits",) and forward.tensors["logits"].shape == (1, k)
    image = forward.tensors["image"]
    assert (image.shape, image.scale, image.zero) == ((1, 3, 11, 13), g.tensor[g.input].q.scale,
                                                      g.tensor[g.input].q.zero)


def test_a_fully_connected_layer_before_the_head_is_refused_by_name():
    g = gm.mlp_head()
    with pytest.raises(UnsupportedError, match=r"node 3 'fc_4' \(fully_connected"):
        graph_from_qgraph(g, graph_plan(g, "full"))
