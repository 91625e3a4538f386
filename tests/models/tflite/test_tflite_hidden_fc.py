"""A graph with hidden fully connected layers, trained by the simulation, exports as FULLY_CONNECTED
operators (the engine's 1x1-conv view of them is training's, never the file's): export -> import is
the identity on the trained integers (a no-bias layer that training gave a bias keeps it), and
LiteRT's reference kernels compute the graph's own outputs bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "quant"))
import graph_models as gm  # noqa: E402

from mcutrain.models.tflite.reader import parse_tflite  # noqa: E402
from mcutrain.models.tflite.writer import graph_to_tflite  # noqa: E402
from mcutrain.quant.from_tflite import graph_from_tflite  # noqa: E402
from mcutrain.quant.graph_forward import graph_forward  # noqa: E402
from mcutrain.quant.sim_graph import GraphNet  # noqa: E402
from mcutrain.sparse.builtin import graph_plan  # noqa: E402


def _trained():
    """fc_stack after a few SGD steps on every conv and hidden layer (integer weights, straight-through)."""
    graph = gm.fc_stack()
    net = GraphNet(graph)
    net.set_trainable(graph_plan(graph, "full"))
    h, w = net.input_chw[1:]
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = (torch.randint(0, 256, (8, 3, h, w), generator=gen).float() - 128) / 128
        loss = torch.nn.functional.cross_entropy(net(x), torch.arange(8) % 4)
        net.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in net.parameters():
                if p.grad is not None:
                    p -= torch.round(p.grad / p.grad.abs().max().clamp_min(1e-12) * 3).to(p.dtype)
                    if p.dim() > 1:  # int8 weights stay in [-127, 127]
                        p.clamp_(-127, 127)
    return graph, net.to_graph()


def test_trained_hidden_layers_export_as_fully_connected_and_import_back_identically():
    original, trained = _trained()
    assert trained != original
    data = graph_to_tflite(trained)
    ops = [o.op for o in parse_tflite(data).operators]
    assert ops.count("FULLY_CONNECTED") == 3 and ops.count("CONV_2D") == 1  # no layer written as a conv
    first = trained.nodes[2].params  # the hidden layer built without a bias: training gave it one
    assert first.bias is not None and first.bias.any()
    assert graph_from_tflite(parse_tflite(data)) == trained


def test_litert_runs_the_exported_trained_graph_with_our_outputs(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    _, trained = _trained()
    path = tmp_path / "trained.tflite"
    path.write_bytes(graph_to_tflite(trained))
    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    for seed in range(3):
        x = gm.random_input(trained, seed)
        interp.set_tensor(interp.get_input_details()[0]["index"], np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        interp.invoke()
        out = interp.get_tensor(interp.get_output_details()[0]["index"])
        assert np.array_equal(out, graph_forward(trained, x)[trained.output])
