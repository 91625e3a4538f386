"""The .tflite reader: what it reads from a valid model, and one clean error for every hostile input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "quant"))
from synthetic_graphs import GraphBuilder, random_input  # noqa: E402

from mcutrain.errors import McutrainError  # noqa: E402
from mcutrain.models.tflite.reader import MAX_FILE_BYTES, TfliteError, parse_tflite, read_tflite  # noqa: E402
from mcutrain.models.tflite.writer import graph_to_tflite, write_tflite  # noqa: E402
from mcutrain.quant.from_tflite import graph_from_tflite  # noqa: E402
from mcutrain.quant.graph import QGraph  # noqa: E402
from mcutrain.quant.graph_forward import graph_forward  # noqa: E402


def _small_graph() -> QGraph:
    g = GraphBuilder(0, (1, 3, 6, 5))
    a = g.conv(g.input, 4, (3, 3), (2, 1), "same", "relu6")
    b = g.conv(a, None, (3, 3), (1, 1), "same", "none", depthwise=True)
    x = g.add(a, b, "relu")
    x = g.flatten(g.pool(x, "avgpool", g.shape(x)[2:], (1, 1), "valid"))
    return g.build(g.softmax(g.fc(x, 3)))


VALID = graph_to_tflite(_small_graph())


def test_reads_tensors_operators_and_options():
    model = parse_tflite(VALID)
    ops = [o.op for o in model.operators]
    assert ops == ["CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    conv = model.operators[0]
    assert conv.options["StrideH"] == 2 and conv.options["StrideW"] == 1 and conv.options["Padding"] == 0
    assert conv.options["FusedActivationFunction"] in (1, 3)  # RELU6 is written as RELU where 6.0 > the int8 max
    weight = model.tensors[conv.inputs[1]]
    assert weight.shape == (4, 3, 3, 3) and weight.dtype == "int8" and len(weight.scales) == 4
    assert weight.data is not None and not weight.data.flags.writeable
    bias = model.tensors[conv.inputs[2]]
    assert bias.dtype == "int32" and bias.data.shape == (4,)
    inp = model.tensors[model.inputs[0]]
    assert inp.shape == (1, 6, 5, 3) and inp.data is None and inp.zero_points == (-128,)
    assert model.tensors[model.operators[1].inputs[1]].quantized_dimension == 3


def test_shared_models_are_read():
    shared = Path(__file__).resolve().parents[4] / "shared" / "tinyml-models"
    if not (shared / "vww_96_int8.tflite").exists():
        pytest.skip(f"{shared} absent (the shared MLPerf Tiny models live outside the repository)")
    model = read_tflite(shared / "vww_96_int8.tflite")
    assert len(model.tensors) == 89 and sum(o.op == "DEPTHWISE_CONV_2D" for o in model.operators) == 13


def test_write_is_atomic_and_reads_back(tmp_path):
    path = tmp_path / "m.tflite"
    write_tflite(_small_graph(), path)
    assert path.read_bytes() == VALID
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]  # no temporary left behind


@pytest.mark.parametrize("data, words", [
    (b"", "TFL3"),
    (b"\x00" * 64, "TFL3"),
    (b"PK\x03\x04" + b"\x00" * 60, "TFL3"),
    (VALID[:8] + b"\xff" * 8, "corrupt"),
])
def test_foreign_and_truncated_bytes(data, words):
    with pytest.raises(TfliteError, match=words):
        parse_tflite(data)


def test_size_limit_is_stated(tmp_path):
    big = tmp_path / "big.tflite"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(TfliteError, match="16 MiB"):
        read_tflite(big)


def test_missing_file():
    with pytest.raises(TfliteError, match="cannot read"):
        read_tflite("/nonexistent/model.tflite")


def _forge(mutate) -> bytes:
    """A valid model rebuilt with one field changed (the object API of LiteRT's schema bindings)."""
    import flatbuffers

    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    model = schema.ModelT.InitFromPackedBuf(VALID, 0)
    mutate(model)
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _custom(m):
    m.operatorCodes[0].builtinCode = m.operatorCodes[0].deprecatedBuiltinCode = 32
    m.operatorCodes[0].customCode = "EvilOp"


def _short_buffer(m):
    weight = m.subgraphs[0].tensors[m.subgraphs[0].operators[0].inputs[1]]
    m.buffers[weight.buffer].data = m.buffers[weight.buffer].data[:-5]


@pytest.mark.parametrize("mutate, words", [
    (lambda m: m.subgraphs.append(m.subgraphs[0]), "2 subgraphs"),
    (_custom, "custom operator 'EvilOp'"),
    (_short_buffer, "buffer has"),
    (lambda m: setattr(m.subgraphs[0].operators[0], "opcodeIndex", 99), "opcode 99"),
    (lambda m: setattr(m.subgraphs[0].operators[0], "inputs", [0, 999]), "tensor 999"),
    (lambda m: setattr(m.subgraphs[0].tensors[1], "buffer", 10_000), "buffer 10000"),
    (lambda m: setattr(m.subgraphs[0].tensors[1], "shape", [-1, 3]), "shape"),
])
def test_forged_models_are_refused(mutate, words):
    with pytest.raises(TfliteError, match=words):
        parse_tflite(_forge(mutate))


def _parse_and_map(data: bytes) -> None:
    """Either a valid model and graph that runs, or a McutrainError with a one-line message."""
    try:
        graph = graph_from_tflite(parse_tflite(data))
    except McutrainError as e:
        assert "\n" not in str(e) and str(e)
        return
    out = graph_forward(graph, random_input(graph, 0))
    assert out[graph.output].dtype == np.int8


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.integers(0, len(VALID)))
def test_truncations_end_cleanly(n):
    _parse_and_map(VALID[:n])


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)), min_size=1, max_size=8))
def test_byte_flips_end_cleanly(flips):
    data = bytearray(VALID)
    for pos, mask in flips:
        data[pos] ^= mask
    _parse_and_map(bytes(data))


@FUZZ
@given(st.integers(8, len(VALID) - 4), st.sampled_from([0, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 4, 0xFFFF]))
def test_forged_offsets_end_cleanly(pos, value):
    data = bytearray(VALID)
    data[pos:pos + 4] = int(value).to_bytes(4, "little")
    _parse_and_map(bytes(data))


def test_valid_model_maps_to_the_same_graph():
    assert graph_from_tflite(parse_tflite(VALID)) == _small_graph()
    assert np.array_equal(parse_tflite(VALID).tensors[1].data, parse_tflite(VALID).tensors[1].data)
