"""Convolutions whose padding TFLite cannot say (PyTorch's symmetric padding at stride 2, say) are
written as PAD + a VALID conv and read back as one conv: LiteRT runs them with our outputs."""

from __future__ import annotations

import numpy as np
import pytest

from mcutrain.models.tflite.reader import TfliteError, read_tflite
from mcutrain.models.tflite.writer import write_tflite
from mcutrain.quant.from_tflite import graph_from_tflite
from mcutrain.quant.graph import QGraph
from mcutrain.quant.graph_forward import graph_forward
from tests.cli.test_export import _litert_output
from tests.quant.synthetic_graphs import GraphBuilder, random_input


def _padded_graph(seed: int) -> QGraph:
    g = GraphBuilder(seed, (1, 3, 12, 10))
    x = g.conv(g.input, 8, (3, 3), (2, 2), padding=(1, 1, 1, 1))  # PyTorch's padding=1 at stride 2
    x = g.conv(x, None, (5, 3), (1, 2), padding=(1, 3, 1, 1), depthwise=True, act="relu6")  # SAME is (2, 2, 1, 1)
    x = g.conv(x, 6, (1, 1), (1, 1), padding="valid", act="none")  # SAME/VALID convs stay single ops
    return g.build(g.fc(g.flatten(x), 4))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pad_and_valid_conv_round_trip_and_run_in_litert_bit_for_bit(tmp_path, seed):
    pytest.importorskip("ai_edge_litert")
    graph = _padded_graph(seed)
    path = tmp_path / "padded.tflite"
    write_tflite(graph, path)
    ops = [op.op for op in read_tflite(path).operators]
    assert ops.count("PAD") == 2 and ops.count("CONV_2D") == 2 and ops.count("DEPTHWISE_CONV_2D") == 1
    assert graph_from_tflite(read_tflite(path)) == graph
    for s in range(3):
        x = random_input(graph, s)
        assert np.array_equal(_litert_output(path, x), graph_forward(graph, x)[graph.output])


def test_a_pad_that_feeds_anything_but_a_convolution_is_refused(tmp_path):
    """Rewire the written model so the PAD's output feeds the FC's flatten: one clear line."""
    graph = _padded_graph(0)
    path = tmp_path / "padded.tflite"
    write_tflite(graph, path)
    model = read_tflite(path)
    pad_out = next(op for op in model.operators if op.op == "PAD").outputs[0]
    reshape = next(i for i, op in enumerate(model.operators) if op.op == "RESHAPE")
    ops = list(model.operators)
    ops[reshape] = type(ops[reshape])(**{**ops[reshape].__dict__, "inputs": (pad_out,) + tuple(ops[reshape].inputs[1:])})
    with pytest.raises(TfliteError, match="a PAD may only feed a convolution"):
        graph_from_tflite(type(model)(**{**model.__dict__, "operators": tuple(ops)}))
