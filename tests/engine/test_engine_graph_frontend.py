"""The engine's frontend for imported graphs: the compiled engine computes what ``GraphNet`` computes.

Forward: every int8 activation of the NumPy executor equals the simulation's (predict and the
training step's forward), logits to float tolerance. Training: steps at batch 1 against GraphNet +
Int8Optimizer(sgd, momentum 0, QAS, rule "sr") with the tolerance of test_engine_equivalence.py.
Graphs: the seeded synthetic classifiers (max pool, depthwise, mean, residual adds, 1x1 stride-2
shortcut, windowed avgpool, channels-last flatten, per-tensor head without bias, hidden fully connected
layers with RELU / RELU6, per-tensor and without bias) and the trainable
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

from mcutrain.engine.compile import ADD_TABLE_BYTES, compile_training  # noqa: E402
from mcutrain.engine.passes.fuse_rows import stages_of  # noqa: E402
from mcutrain.engine.executor import Executor  # noqa: E402
from mcutrain.engine.executor.compare import Trace, differences, run_engine, train_one_by_one  # noqa: E402
from mcutrain.engine.frontend import engine_names, graph_from_qgraph  # noqa: E402
from mcutrain.engine.passes.fuse_backward import update_ops  # noqa: E402
from mcutrain.quant.graph import fc_as_conv, fc_rescale, hidden_fully_connected  # noqa: E402
from mcutrain.quant.graph_head import classifier_node  # noqa: E402
from mcutrain.quant.sim_graph import GraphNet  # noqa: E402
from mcutrain.sparse.builtin import graph_plan  # noqa: E402

torch.set_num_threads(1)
LR, SEED, STEPS = 0.1, 11, 5


@lru_cache(maxsize=None)
def _graph(name: str):
    if name in gm.CLASSIFIERS:
        return gm.CLASSIFIERS[name]()
    from mcutrain.data import load_dataset
    from tests.helpers.trainable_graphs import ResNetLike, VwwLike, trainable_graph

    return trainable_graph({"resnet_like": ResNetLike, "vww_like": VwwLike}[name], load_dataset("digits"))


GRAPHS = ("plain_cnn", "resnet", "mlp_head", "fc_stack", "resnet_like", "vww_like")


def graph_params(g) -> dict[str, np.ndarray]:
    """A graph's trainable integers under the engine's names (a head without bias: zeros)."""
    params, names = {}, engine_names(g)
    hidden = hidden_fully_connected(g)
    for i, node in enumerate(g.nodes):
        if node.kind == "conv2d" or i in hidden:
            name, conv = names[node.output], node.params if i not in hidden else fc_as_conv(node)
            params[f"{name}.weight"], params[f"{name}.bias"] = conv.weight, conv.bias
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
    assert d["moved"] >= min(30, trained // 3)  # the parameters really moved


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


@pytest.mark.parametrize("name", ["mlp_head", "fc_stack"])
def test_hidden_fully_connected_layers_are_rescaled_1x1_convs_between_views(name):
    g = gm.CLASSIFIERS[name]()
    hidden = sorted(hidden_fully_connected(g))
    assert hidden and len(g.convs()) == sum(n.kind == "conv2d" for n in g.nodes) + len(hidden)
    program = compile_training(g, graph_plan(g, "full"), lr=LR, seed=SEED)
    forward, names = graph_from_qgraph(g, graph_plan(g, "full")), engine_names(g)
    ops = {op.name: op for op in forward.ops}
    train = program.train.graph
    adds = [op for op in train.ops if op.kind == "add"] + [
        st for op in train.ops if op.kind == "mbconv_rows" for st in stages_of(op) if st.kind == "add"]
    constants = sum(a.nbytes for a in train.constants.values()) + ADD_TABLE_BYTES * len(adds)
    tables = 8 * sum(g.nodes[i].params.weight.shape[0] for i in hidden)  # one float64 per output
    assert program.report["flash_with_initial_trainables_bytes"] == constants + tables
    for i in hidden:
        node, name = g.nodes[i], names[g.nodes[i].output]
        conv = ops[name]
        assert conv.kind == "conv2d" and conv.attr("pads") == (0, 0, 0, 0)  # general geometry: no fused path
        assert np.array_equal(np.asarray(conv.attr("rescale")), fc_rescale(node.params))
        assert forward.tensors[f"{name}.weight"].shape == node.params.weight.shape + (1, 1)
        assert [ops[f"{name}_in"].kind, ops[f"{name}_out"].kind] == ["reshape", "reshape"]
        assert forward.tensors[name].shape == g.tensor[node.output].shape
        for stage in (program.inference, program.train):  # both reshapes are views: no copy, no buffer
            views = [op for op in stage.graph.ops if op.name in (f"{name}_in", f"{name}_out")]
            assert views and all(op.attr("inplace") == 0 for op in views)
