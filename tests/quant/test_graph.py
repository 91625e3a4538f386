"""QGraph: validation, describe(), equality; the forward's own arithmetic on hand-checked cases."""

from __future__ import annotations

import sys
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_graphs import GraphBuilder, random_input  # noqa: E402

from mcutrain.quant.graph import FullyConnected, GraphError, Node, Pool2d, QGraph  # noqa: E402
from mcutrain.quant.graph_forward import avgpool, fully_connected, graph_forward, maxpool, round_half_away  # noqa: E402
from mcutrain.quant.int8_ops import rounded_divide  # noqa: E402
from mcutrain.quant.qmodel import QTensor  # noqa: E402


def _graph() -> QGraph:
    g = GraphBuilder(3, (1, 3, 9, 8))
    a = g.conv(g.input, 6, (3, 3), (2, 2), "same", "relu")
    b = g.conv(a, None, (5, 3), (1, 1), "same", "none", depthwise=True)
    x = g.add(a, b, "relu6")
    x = g.mean(x, keep_dims=False, same_quant=False)
    return g.build(g.softmax(g.fc(x, 4)))


def test_describe_one_line_per_node():
    g = _graph()
    text = g.describe()
    lines = text.splitlines()
    assert len(lines) == len(g.nodes) + 2
    assert "conv2d" in lines[1] and "k3x3 s2x2 pad(1, 1, 0, 1)" in lines[1]
    assert "[1, 3, 9, 8] -> [1, 6, 5, 4]" in lines[1]
    assert "k5x3" in lines[2] and " dw" in lines[2]
    assert "macs=" in lines[1] and f"macs={5 * 4 * 6 * 27}" in lines[1]
    assert lines[-1].startswith(f"output {g.output}: {len(g.nodes)} nodes")


def test_equality_is_structural():
    assert _graph() == _graph()
    g = _graph()
    conv = g.nodes[0].params
    w = conv.weight.copy()
    w[0, 0, 0, 0] ^= 1
    changed = replace(g, nodes=(replace(g.nodes[0], params=replace(conv, weight=w)),) + g.nodes[1:])
    assert changed != g
    assert replace(g, provenance={"source": "elsewhere"}) == g  # provenance is a note, not the network


def test_validation_names_the_broken_node():
    g = _graph()
    with pytest.raises(GraphError, match="not computed before"):
        QGraph(g.tensors, tuple(reversed(g.nodes)), g.input, g.output).validate()
    bad_shape = tuple(replace(t, shape=(1, 6, 4, 4)) if t.name == g.nodes[0].output else t for t in g.tensors)
    with pytest.raises(GraphError, match=r"node 0 \(conv2d.*output shape"):
        QGraph(bad_shape, g.nodes, g.input, g.output).validate()
    bad_q = tuple(replace(t, q=QTensor(0.5, 3)) if t.name == g.nodes[2].output else t for t in g.tensors)
    with pytest.raises(GraphError, match="node 2 .*quantization"):
        QGraph(bad_q, g.nodes, g.input, g.output).validate()
    with pytest.raises(GraphError, match="unknown kind"):
        QGraph(g.tensors, (replace(g.nodes[0], kind="concat"),) + g.nodes[1:], g.input, g.output).validate()


def test_forward_returns_every_tensor():
    g = _graph()
    out = graph_forward(g, random_input(g, 0))
    assert set(out) == {t.name for t in g.tensors}
    for t in g.tensors:
        assert out[t.name].shape == t.shape and out[t.name].dtype == np.int8
    with pytest.raises(ValueError, match="int8"):
        graph_forward(g, np.zeros((1, 3, 9, 8), np.float32))


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**31), 2**31 - 1), st.integers(1, 2**16))
def test_rounded_divide_is_round_half_away(total, count):
    exact = Fraction(total, count)
    expected = int(abs(exact) + Fraction(1, 2)) * (1 if exact >= 0 else -1)
    assert int(rounded_divide(total, count)) == expected


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e9, 1e9, allow_nan=False))
def test_round_half_away_matches_c_round(v):
    expected = int(abs(Fraction(v)) + Fraction(1, 2)) * (1 if v >= 0 else -1)
    assert int(round_half_away(np.array([v]))[0]) == expected


def test_avgpool_clips_border_windows_and_rounds_raw_values():
    x = np.array([[[[-3, 4, 10], [2, -1, 7]]]], np.int8)  # [1, 1, 2, 3]
    q = QTensor(0.1, 5)
    p = Pool2d((2, 2), (2, 2), (0, 0, 0, 1), q, q)  # SAME on width 3: one padding column on the right
    # windows: {-3, 4, 2, -1} -> 2/4 = 0.5 -> 1; {10, 7} (the padding is not averaged) -> 17/2 -> 9
    assert avgpool(x, p).tolist() == [[[[1, 9]]]]
    assert maxpool(x, p).tolist() == [[[[4, 10]]]]
    relu = replace(p, qmin=5)
    assert avgpool(x, relu).tolist() == [[[[5, 9]]]]


def test_fully_connected_fixed_point_differs_by_at_most_one_step():
    rng = np.random.default_rng(0)
    p = FullyConnected(rng.integers(-127, 128, (50, 300)).astype(np.int8),
                       rng.integers(-5000, 5000, 50).astype(np.int32),
                       np.full(50, 0.0013, np.float32), QTensor(0.05, -3), QTensor(0.9, 4))
    xs = rng.integers(-128, 128, (40, 300)).astype(np.int8)
    a = fully_connected(xs, p).astype(int)
    b = fully_connected(xs, p, fixed_point=True).astype(int)
    assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.9


def test_node_is_plain_data():
    node = _graph().nodes[0]
    assert isinstance(node, Node) and node.kind == "conv2d" and node.inputs == (_graph().input,)


def test_fully_connected_logits_are_the_rescaled_accumulators():
    from mcutrain.quant.graph_forward import fully_connected_logits

    p = FullyConnected(np.array([[1, -2], [3, 4]], np.int8), np.array([10, -7], np.int32),
                       np.array([0.5, 0.25], np.float32), QTensor(0.1, 2), QTensor(0.2, 0))
    x = np.array([[5, -1]], np.int8)  # x - z = [3, -3]
    acc = np.array([[3 * 1 + -3 * -2 + 10, 3 * 3 + -3 * 4 - 7]])
    assert np.allclose(fully_connected_logits(x, p), acc * 0.1 * np.array([0.5, 0.25]))
    assert fully_connected(x, p).tolist() == [[5, -1]]  # 19 * 0.25 = 4.75 -> 5; -10 * 0.125 = -1.25 -> -1
