"""Streamed input: the image is read row by row from outside the arena (a camera / DMA / host buffer).

The first conv of a frozen prefix needs only k rows of the image at a time, so the arena holds a ring
of rows instead of the image; the numbers do not change, the report says plainly that the image is
streamed and how big it would be whole, and an image the backward needs stays in the arena.
"""

from functools import lru_cache

import numpy as np
import pytest
import torch

from mcutrain.engine.compile import compile_training, format_report
from mcutrain.engine.executor import Executor
from mcutrain.engine.executor.compare import run_engine
from mcutrain.engine.memory import check_plan
from mcutrain.engine.passes.fuse_rows import STREAM, program_of, rings_of
from mcutrain.engine.verify import VerifyError, verify
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve

torch.set_num_threads(1)

LR, SEED = 0.1, 5


@lru_cache(maxsize=None)
def _qmodel(name: str, res: int):
    return random_qmodel(name, res, 4, seed=3)[0]


@lru_cache(maxsize=None)
def _program(name: str, res: int, scheme: str, stream: bool = True, row_fusion: str = "auto"):
    q = _qmodel(name, res)
    return compile_training(q, resolve(get_builtin(scheme, name), q.spec), lr=LR, seed=SEED, stream_input=stream,
                            row_fusion=row_fusion)


def _data(res: int, n: int = 2):
    rng = np.random.default_rng(11)
    return rng.integers(-128, 128, (n, 3, res, res)).astype(np.int8), rng.integers(0, 4, n)


def test_a_streamed_image_is_not_in_the_arena_and_each_row_is_fetched_once():
    program = _program("tiny", 32, "last-k:6")
    for stage in (program.train, program.inference):
        g = stage.graph
        assert g.streams == ("image",)
        assert "image" not in stage.lifetimes and "image" not in {b.name for b in stage.buffers}
        (reader,) = [op for op in g.ops if "image" in op.inputs]
        assert reader.kind == "mbconv_rows" and reader.attr("stream") and reader.inputs[0] == "image"
        fetched = [r for s, r in program_of(reader).schedule if s == STREAM]
        assert fetched == list(range(32))  # every row once, in order
        c, rows, w, _ = rings_of(reader)["image"]
        assert (c, w) == (3, 32) and rows == 3  # a 3x3 stride-2 first conv needs 3 rows
    ex = Executor(program)
    images, labels = _data(32, 1)
    ex.train_step(images[0], int(labels[0]))
    assert ex._train.sources["image"].rows_read == 32
    r = program.report
    assert r["input_streamed"] and r["input_in_arena_bytes"] == 0
    assert r["input_bytes"] == 3 * 32 * 32 and r["input_ring_bytes"] == 3 * 3 * 32


@pytest.mark.parametrize("name, res, scheme", [("tiny", 32, "last-k:6"), ("tiny", 32, "bias-only"),
                                               ("mcunet-5fps", 48, "paper-99kb"), ("mbv2-w0.35", 48, "bias-only"),
                                               ("proxyless-w0.3", 48, "last-k:6")])
def test_streaming_changes_no_number(name, res, scheme):
    streamed, whole = _program(name, res, scheme, True), _program(name, res, scheme, False)
    assert streamed.graph.streams == ("image",) and whole.graph.streams == ()
    for p in (streamed, whole):
        check_plan(p.train.plan)
        check_plan(p.inference.plan)
    images, labels = _data(res)
    a, b = run_engine(Executor(streamed), images, labels), run_engine(Executor(whole), images, labels)
    assert a.losses == b.losses and all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    np.testing.assert_array_equal(Executor(streamed).predict(images[0]), Executor(whole).predict(images[0]))


@pytest.mark.parametrize("name", ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"])
def test_at_128x128_streaming_keeps_the_48kb_image_out_of_the_arena(name):
    streamed = _program(name, 128, "paper-99kb", True).report
    whole = _program(name, 128, "paper-99kb", False).report
    assert streamed["input_bytes"] == whole["input_bytes"] == 48 * 1024
    assert whole["input_in_arena_bytes"] == 48 * 1024 and not whole["input_streamed"]
    assert streamed["input_in_arena_bytes"] == 0 and streamed["input_ring_bytes"] <= 3 * 3 * 128
    assert streamed["inference_arena_bytes"] < whole["inference_arena_bytes"]
    assert streamed["arena_bytes"] <= whole["arena_bytes"]


def test_the_report_says_plainly_where_the_image_is():
    text = format_report(_program("mcunet-5fps", 128, "paper-99kb", True).report)
    assert "STREAMED" in text and "image buffer if kept whole: 48.0 KB" in text
    text = format_report(_program("mcunet-5fps", 128, "paper-99kb", False).report)
    assert "whole in the arena (48.0 KB" in text and "STREAMED" not in text


def test_an_image_the_backward_needs_stays_whole_in_the_arena():
    program = _program("tiny", 32, "full")  # the first conv's weight gradient reads the image
    assert program.graph.streams == () and program.report["input_in_arena_bytes"] == 3 * 32 * 32
    assert any(op.kind == "conv2d_grad_w_update" and "image" in op.inputs for op in program.graph.ops)
    assert program.inference.graph.streams == ("image",)  # the forward alone can stream it


def test_streaming_off_is_the_old_layout():
    program = _program("tiny", 32, "last-k:6", False, "off")
    assert program.graph.streams == () and not any(op.kind == "mbconv_rows" for op in program.graph.ops)
    assert program.train.lifetimes["image"][0] == 0


def test_only_a_row_pipeline_may_read_a_streamed_input():
    g = _program("tiny", 32, "last-k:6").inference.graph
    reader = next(op for op in g.ops if op.kind == "mbconv_rows")
    conv = reader.attr("stages")[0]  # the plain conv the pipeline runs: reading the stream whole is refused
    bad = g.with_ops((conv,) + g.ops[1:], tensors={**g.tensors})
    with pytest.raises(VerifyError, match="streamed"):
        verify(bad)
    with pytest.raises(VerifyError, match="not a graph input"):
        verify(g.with_ops(g.ops, streams=("first_conv",)))
