"""TFLite -> QGraph mapping: TFLite's rules (SAME, fused activations) and one-line refusals."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_graphs import GraphBuilder  # noqa: E402

from mcutrain.models.tflite.reader import TfliteError, parse_tflite  # noqa: E402
from mcutrain.models.tflite.writer import TfliteExportError, graph_to_tflite  # noqa: E402
from mcutrain.quant.from_tflite import UnsupportedOp, fused_clamp, graph_from_tflite, same_padding  # noqa: E402
from mcutrain.quant.qmodel import QTensor  # noqa: E402


def _graph():
    g = GraphBuilder(0, (1, 3, 7, 8))
    x = g.conv(g.input, 4, (3, 3), (2, 2), "same", "relu")
    x = g.mean(x, keep_dims=False, same_quant=True)
    return g.build(g.fc(x, 3))


@pytest.mark.parametrize("size, kernel, stride, expected", [
    (7, 3, 2, (4, 1, 1)), (8, 3, 2, (4, 0, 1)), (8, 3, 1, (8, 1, 1)), (5, 4, 1, (5, 1, 2)),
    (6, 1, 2, (3, 0, 0)), (11, 11, 2, (6, 5, 5)), (3, 11, 1, (3, 5, 5)),
])
def test_same_padding_puts_the_odd_row_at_the_bottom(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_fused_activation_ranges():
    y = QTensor(6 / 127, -128)
    assert fused_clamp(0, y, "x") == (-128, 127)
    assert fused_clamp(1, QTensor(0.1, -5), "x") == (-5, 127)
    assert fused_clamp(3, y, "x") == (-128, -1)  # 6.0 / (6/127) = 127 steps above the zero point
    assert fused_clamp(3, QTensor(0.1, 10), "x") == (10, 70)
    with pytest.raises(UnsupportedOp, match="fused activation 4"):
        fused_clamp(4, y, "operator 3 (CONV_2D)")


def test_layouts_are_mapped_exactly():
    g = _graph()
    model = parse_tflite(graph_to_tflite(g))
    conv_op = model.operators[0]
    w_ohwi = model.tensors[conv_op.inputs[1]].data
    conv = g.nodes[0].params
    assert np.array_equal(w_ohwi.transpose(0, 3, 1, 2), conv.weight)  # OHWI -> OIHW
    assert model.tensors[conv_op.inputs[0]].shape == (1, 7, 8, 3)  # NHWC in the file, NCHW in the graph
    assert g.tensor[g.input].shape == (1, 3, 7, 8)
    assert conv.padding == (1, 1, 0, 1) and conv.strides == (2, 2)


def _forge(mutate) -> bytes:
    import flatbuffers

    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    model = schema.ModelT.InitFromPackedBuf(graph_to_tflite(_graph()), 0)
    mutate(model)
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _op(m, i=0):
    return m.subgraphs[0].operators[i]


def _set_opcode(m, code):
    m.operatorCodes[_op(m).opcodeIndex].builtinCode = code
    m.operatorCodes[_op(m).opcodeIndex].deprecatedBuiltinCode = code


def _two_scales(m):
    m.subgraphs[0].tensors[0].quantization.scale = [0.1, 0.2]
    m.subgraphs[0].tensors[0].quantization.zeroPoint = [0, 0]


@pytest.mark.parametrize("mutate, words", [
    (lambda m: _set_opcode(m, 2),
     r"operator 0 \(CONCATENATION; inputs \[0 'input_0', .*\], outputs .*unsupported operator"),
    (lambda m: setattr(_op(m).builtinOptions, "dilationHFactor", 2), r"operator 0 \(CONV_2D.*dilation 2x1"),
    (lambda m: setattr(_op(m).builtinOptions, "fusedActivationFunction", 4), "fused activation 4"),
    (lambda m: setattr(_op(m).builtinOptions, "padding", 7), "padding mode 7"),
    (lambda m: setattr(m.subgraphs[0].tensors[0], "type", 0), "float32; expected an int8 activation"),
    (_two_scales, "not quantized per tensor"),
])
def test_unsupported_content_is_named(mutate, words):
    with pytest.raises(TfliteError, match=words) as info:
        graph_from_tflite(parse_tflite(_forge(mutate)))
    assert "\n" not in str(info.value)


def test_mean_over_channels_is_refused():
    def mutate(m):
        mean = _op(m, 1)
        axis = m.subgraphs[0].tensors[mean.inputs[1]]
        m.buffers[axis.buffer].data = np.array([3, 3], np.int32).view(np.uint8).tolist()

    with pytest.raises(UnsupportedOp, match=r"operator 1 \(MEAN.*only over H and W"):
        graph_from_tflite(parse_tflite(_forge(mutate)))


def test_writer_refuses_what_tflite_cannot_express():
    """A padding that is neither SAME nor VALID is written as PAD + a VALID conv (test_tflite_pad.py);
    a clamp range that is no fused activation cannot be written at all."""
    g = _graph()
    conv = g.nodes[0].params
    clamp = replace(g, nodes=(replace(g.nodes[0], params=replace(conv, qmin=-50)),) + g.nodes[1:])
    with pytest.raises(TfliteExportError, match="clamp range"):
        graph_to_tflite(clamp)
