"""Row pipelines over TFLite's SAME stride-2 convolutions on even inputs (``ops.row_geometry``): their one
padding row/column sits at the bottom/right only (top = left = k // 2 - 1), which the row kernels read
as windows clipped to the input. The fused program (row fusion "max", streamed image) computes every
int8 tensor and the training step of the unfused one ("off", image whole) bit for bit, and so does its C
host build.
"""

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))
import graph_models as gm  # noqa: E402

from mcutrain.engine.compile import compile_training  # noqa: E402
from mcutrain.engine.executor import Executor  # noqa: E402
from mcutrain.engine.executor.compare import run_engine  # noqa: E402
from mcutrain.engine.frontend import graph_from_qgraph  # noqa: E402
from mcutrain.engine.ops import row_geometry  # noqa: E402
from mcutrain.sparse.builtin import graph_plan  # noqa: E402

SCHEME = "last-k:1"  # the three first convs frozen: the prefix a pipeline may take


@lru_cache(maxsize=None)
def _program(fused: bool):
    """Row fusion "max" with the image streamed, or nothing fused and the image whole (the baseline)."""
    g = gm.same_stride2_even()
    return compile_training(g, graph_plan(g, SCHEME), lr=0.1, seed=3, row_fusion="max" if fused else "off",
                            stream_input=fused)


def _data(n: int):
    g = gm.same_stride2_even()
    return np.concatenate([gm.random_input(g, s) for s in range(n)]), np.arange(n) % 3


def test_same_stride2_convs_on_even_inputs_have_the_row_geometry():
    g = gm.same_stride2_even()
    forward = graph_from_qgraph(g, graph_plan(g, SCHEME))
    convs = [op for op in forward.ops if op.kind == "conv2d"]
    assert [op.attr("pads") for op in convs[:2]] == [(0, 1, 0, 1), (0, 1, 0, 1)]
    assert [row_geometry(forward, op) for op in convs] == [(2, 0), (2, 0), (1, 0), (1, 2)]
    assert all(row_geometry(forward, op) is None for op in forward.ops if op.kind != "conv2d")
    mlp = gm.mlp_head()  # a hidden fully connected layer's conv: never in a pipeline
    forward = graph_from_qgraph(mlp, graph_plan(mlp, SCHEME))
    assert row_geometry(forward, next(op for op in forward.ops if op.attr("rescale"))) is None
    valid = gm.plain_cnn()  # a VALID 3x5 conv: not the row geometry
    forward = graph_from_qgraph(valid, graph_plan(valid, SCHEME))
    assert row_geometry(forward, forward.ops[0]) is None


def test_fused_rows_equal_the_unfused_program_bit_for_bit():
    fused, plain = _program(True), _program(False)
    pipelines = [op for op in fused.train.graph.ops if op.kind == "mbconv_rows"]
    assert pipelines and {"conv2d_0", "conv2d_1"} <= set(pipelines[0].attr("fused"))  # both stride-2 convs
    assert pipelines[0].attr("stream")  # the image is read row by row, never whole
    assert not any(op.kind == "mbconv_rows" for op in plain.train.graph.ops)
    assert fused.report["arena_bytes"] < plain.report["arena_bytes"]
    images, labels = _data(4)
    for image in images:
        seen_fused, seen_plain = {}, {}
        assert np.array_equal(Executor(fused).predict(image, record=seen_fused),
                              Executor(plain).predict(image, record=seen_plain))
        for name in set(seen_fused) & set(seen_plain):
            assert np.array_equal(seen_fused[name], seen_plain[name]), name
    a, b = run_engine(Executor(fused), images, labels), run_engine(Executor(plain), images, labels)
    assert a.losses == b.losses and a.params.keys() == b.params.keys()
    assert all(np.array_equal(a.params[n], b.params[n]) for n in a.params)


def test_host_build_of_the_fused_program_equals_the_executor(tmp_path):
    from mcutrain.codegen import build_host, generate
    from mcutrain.codegen.check import side_by_side

    program = _program(True)
    # float64 (audit) accumulators: max_lsb 0 below holds the C to the NumPy executor bit for bit.
    generate(program, tmp_path, accumulate="float64")
    assert "mct_mbconv_rows(" in (tmp_path / "model.c").read_text()
    images, labels = _data(3)
    r = side_by_side(program, build_host(tmp_path), images, labels, images[:2])
    assert r.logits_equal_before and r.logits_equal_after
    assert r.differences["max_lsb"] == 0 and r.differences["loss_rel_error"] <= 1e-6
