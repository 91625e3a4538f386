"""A new classifier head on a QGraph: the final fully connected layer replaced, the rest untouched."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from graph_models import SHARED_MODELS, conv_only, mlp_head, plain_cnn, random_input, resnet, shared_model  # noqa: E402
from synthetic_graphs import GraphBuilder  # noqa: E402

from mcutrain.errors import McutrainError  # noqa: E402
from mcutrain.quant.from_tflite import load_tflite_graph  # noqa: E402
from mcutrain.quant.graph_forward import fully_connected_logits, graph_forward  # noqa: E402
from mcutrain.quant.graph_head import (  # noqa: E402
    HEAD_LOGIT_SCALE,
    NoClassifier,
    classifier_node,
    head_for_task,
    new_graph_head,
)
from mcutrain.quant.head import zero_head  # noqa: E402


def _changed_nodes(old, new) -> list[int]:
    from mcutrain.quant.graph import deep_equal

    return [i for i, (a, b) in enumerate(zip(old.nodes, new.nodes)) if not deep_equal(a, b)]


@pytest.mark.parametrize("make", [plain_cnn, resnet, mlp_head])
def test_only_the_classifier_and_its_softmax_change(make):
    graph = make()
    index, old, softmax = classifier_node(graph)
    new = new_graph_head(graph, ["cat", "dog", "bird", "fish", "frog", "ant", "bee"])
    expected = [index] + ([len(graph.nodes) - 1] if softmax is not None else [])
    assert _changed_nodes(graph, new) == expected
    head = new.nodes[index].params
    weight, bias, w_scale = zero_head(7, old.params.weight.shape[1])
    assert head.weight.shape == (7, old.params.weight.shape[1]) and not head.weight.any() and not head.bias.any()
    assert np.array_equal(head.w_scale, w_scale) and head.w_scale.dtype == np.float32  # the QModel head's scales
    assert head.x == old.params.x  # same features, same quantization
    assert (head.y.scale, head.y.zero, head.qmin, head.qmax) == (HEAD_LOGIT_SCALE, 0, -128, 127)
    assert new.tensor[new.output].shape == (1, 7) and new.provenance["head"] == "replaced"
    if softmax is not None:
        assert new.nodes[-1].params.x == head.y and new.nodes[-1].params.y == softmax.params.y


@pytest.mark.parametrize("make", [plain_cnn, resnet, mlp_head])
def test_the_untrained_head_outputs_zero_logits_and_a_uniform_softmax(make):
    graph = new_graph_head(make(), ["a", "b", "c"])
    index, head, softmax = classifier_node(graph)
    values = graph_forward(graph, np.concatenate([random_input(graph, s) for s in range(4)]))
    assert np.all(values[head.output] == 0)
    assert np.all(fully_connected_logits(values[head.inputs[0]], head.params) == 0.0)
    if softmax is not None:  # 1/3 at scale 1/256, zero point -128: round(85.33) - 128
        assert np.all(values[softmax.output] == -43)


def test_logit_scale_covers_plus_minus_16_exactly_in_float32():
    assert np.float32(HEAD_LOGIT_SCALE) == HEAD_LOGIT_SCALE
    assert (-128 * HEAD_LOGIT_SCALE, 127 * HEAD_LOGIT_SCALE) == (-16.0, 15.875)


def test_a_graph_without_a_final_fully_connected_layer_is_refused():
    with pytest.raises(NoClassifier, match=r"ends in mean 'mean_2', not in a fully connected classifier"):
        new_graph_head(conv_only(), ["a", "b"])
    g = GraphBuilder(5, (1, 3, 6, 6))
    x = g.mean(g.conv(g.input, 4, (3, 3), (1, 1), "same", "relu"), keep_dims=False, same_quant=True)
    with pytest.raises(NoClassifier, match="ends in mean"):
        new_graph_head(g.build(g.softmax(x)), ["a", "b"])


def test_a_classifier_read_by_another_layer_is_refused():
    g = GraphBuilder(6, (1, 3, 4, 4))
    fc = g.fc(g.flatten(g.input), 4)
    last = g.fc(fc, 4)
    assert classifier_node(g.build(last))[1].output == last  # the last of two fc layers is the classifier
    g = GraphBuilder(7, (1, 3, 4, 4))
    fc = g.fc(g.flatten(g.input), 4)
    g.fc(fc, 3)  # a second reader of the logits (its output unused)
    with pytest.raises(NoClassifier, match=r"classifier 'fc_2' is also read by fully_connected 'fc_3'"):
        new_graph_head(g.build(g.softmax(fc)), ["a", "b"])


def test_fewer_than_two_classes_are_refused():
    with pytest.raises(McutrainError, match="at least 2 classes"):
        new_graph_head(plain_cnn(), ["only"])


def test_head_for_task_keeps_the_head_when_the_count_matches():
    graph = plain_cnn()  # 4 classes
    kept, names = head_for_task(graph)
    assert kept == graph and names == ("0", "1", "2", "3") and kept.provenance["head"] == "kept"
    kept, names = head_for_task(graph, num_classes=4)
    assert kept == graph and names == ("0", "1", "2", "3")
    kept, names = head_for_task(graph, classes=("a", "b", "c", "d"))
    assert kept == graph and names == ("a", "b", "c", "d")
    new, names = head_for_task(graph, num_classes=4, force_new=True)
    assert new != graph and not classifier_node(new)[1].params.weight.any() and new.provenance["head"] == "replaced"
    new, names = head_for_task(graph, num_classes=6)
    assert names == tuple("012345") and new.tensor[new.output].shape == (1, 6)
    with pytest.raises(McutrainError, match=r"1 classes: a classifier needs 2 to 10000"):
        head_for_task(graph, num_classes=1)
    with pytest.raises(McutrainError, match=r"20000 classes"):
        head_for_task(graph, num_classes=20000)
    with pytest.raises(NoClassifier, match="ends in mean"):
        head_for_task(conv_only(), num_classes=3)


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_shared_models_get_a_new_head_on_their_pooled_features(name):
    graph = load_tflite_graph(shared_model(name))
    index, old, softmax = classifier_node(graph)
    assert old.kind == "fully_connected" and softmax is not None and index == len(graph.nodes) - 2
    new = new_graph_head(graph, [f"c{i}" for i in range(5)])
    assert _changed_nodes(graph, new) == [index, index + 1]
    x = random_input(graph, 0)
    before, after = graph_forward(graph, x), graph_forward(new, x)
    replaced = {old.output, softmax.output}
    assert all(np.array_equal(before[t.name], after[t.name]) for t in graph.tensors if t.name not in replaced)
    assert np.all(after[new.nodes[index].output] == 0) and after[new.output].shape == (1, 5)
