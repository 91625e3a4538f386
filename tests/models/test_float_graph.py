"""FloatGraph: shapes, the torch forward, and the file (round trip; hostile files refused in one line)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mcutrain.errors import CheckpointError
from mcutrain.io.container import write_container
from mcutrain.models.float_graph import (KIND, VERSION, Conv2d, FloatGraph, FloatGraphError, InputPreprocessing,
                                         Node, Pool2d, graph_meta, graph_tensors, load_float_graph, run_float,
                                         save_float_graph)
from mcutrain.models.torch_import import import_module


def small_graph() -> FloatGraph:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(16, 3)).eval()
    m[1].running_var.uniform_(0.5, 2.0)
    return import_module(m, torch.zeros(1, 3, 4, 4), InputPreprocessing(mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25)),
                         classes=("a", "b", "c"))


def test_round_trip(tmp_path):
    g = small_graph()
    save_float_graph(tmp_path / "g", g)
    back = load_float_graph(tmp_path / "g")
    assert graph_meta(back) == graph_meta(g)
    assert graph_tensors(back).keys() == graph_tensors(g).keys()
    assert all(np.array_equal(graph_tensors(back)[k], v) for k, v in graph_tensors(g).items())
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(run_float(back, x), run_float(g, x))
    assert back.shapes[back.output] == (3,) and back.classes == ("a", "b", "c")


def test_normalize_is_imagenet_style():
    prep = InputPreprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    p = torch.arange(0, 255, 5, dtype=torch.float64).repeat(3, 1).view(1, 3, 1, -1)
    want = (p / 255 - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(prep.std).view(1, 3, 1, 1)
    torch.testing.assert_close(prep.normalize(p), want)
    flat = InputPreprocessing(offset=127.5, scale=1 / 127.5)
    torch.testing.assert_close(flat.normalize(p), (p - 127.5) / 127.5)


def _forged(tmp_path, change_meta=None, change_tensors=None):
    g = small_graph()
    meta, tensors = graph_meta(g), graph_tensors(g)
    if change_meta:
        change_meta(meta)
    if change_tensors:
        change_tensors(tensors)
    write_container(tmp_path / "f", KIND, VERSION, meta, tensors)
    with pytest.raises(CheckpointError) as err:
        load_float_graph(tmp_path / "f")
    message = str(err.value)
    assert "\n" not in message
    return message


def _set(path, value):
    def change(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


@pytest.mark.parametrize("path,value,needle", [
    (("nodes", 0, "kind"), "gelu", "is not one of"),
    (("nodes", 0, "stride"), [0, 1], "stride[0]"),
    (("nodes", 0, "padding"), [1, 1, 1], "expected 4"),
    (("nodes", 0, "groups"), 2, "groups=2"),
    (("nodes", 1, "eps"), float("nan"), "eps"),
    (("nodes", 0, "inputs"), ["nowhere"], "not computed before"),
    (("nodes", 2, "output"), "_0", "computed twice"),
    (("input_shape",), [3, 6, 6], "does not take"),
    (("input_shape",), [3, 4, 10**9], "input_shape[2]"),
    (("preprocessing",), {"mean": [0.5, 2.0, 0.3], "std": [1, 1, 1]}, "preprocessing.mean[1]"),
    (("preprocessing",), {"offset": 3, "scale": 0.1, "evil": 1}, "unknown field"),
    (("classes",), ["a", "a", "b"], "classes"),
    (("nodes", 0, "name"), "x\ny", "printable"),
    (("output",), "_0", "one per output"),
])
def test_forged_meta_is_refused(tmp_path, path, value, needle):
    assert needle in _forged(tmp_path, _set(path, value))


def test_forged_tensors_are_refused(tmp_path):
    def nan(t):
        t[next(k for k in t if k.endswith("weight"))][0] = np.nan

    assert "non-finite" in _forged(tmp_path, change_tensors=nan)
    assert "negative variances" in _forged(tmp_path, change_tensors=lambda t: t.__setitem__(
        next(k for k in t if k.endswith("running_var")), -np.ones(4, np.float32)))
    assert "float32" in _forged(tmp_path, change_tensors=lambda t: t.update(
        {k: v.astype(np.float64) for k, v in t.items() if k.endswith(".bias")}))
    assert "belongs to no node" in _forged(tmp_path, change_tensors=lambda t: t.update(extra=np.zeros(1, np.float32)))
    assert "'0.weight' is missing" in _forged(tmp_path, change_tensors=lambda t: t.pop("0.weight"))
    assert "does not take" in _forged(tmp_path, change_tensors=lambda t: t.update(
        {"5.weight": np.zeros((3, 17), np.float32)}))


def test_foreign_and_pickled_files_are_refused_in_one_line(tmp_path):
    bad = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="not an mcutrain file"):
        load_float_graph(bad)
    other = tmp_path / "other"
    write_container(other, "float-checkpoint", 2, {}, {})
    with pytest.raises(CheckpointError, match="expected 'mcutrain-float-graph'"):
        load_float_graph(other)
    meta = json.dumps(graph_meta(small_graph()))
    assert "nodes" in meta


def test_save_refuses_what_load_would_refuse(tmp_path):
    g = small_graph()
    p = g.nodes[0].params
    broken = replace(g, nodes=(replace(g.nodes[0], params=replace(p, weight=p.weight * np.inf)),) + g.nodes[1:])
    with pytest.raises(CheckpointError, match="refusing to write"):
        save_float_graph(tmp_path / "x", broken)
    assert not (tmp_path / "x").exists()


def test_shapes_must_chain():
    conv = Conv2d(np.zeros((4, 3, 3, 3), np.float32), None, (1, 1), (0, 0, 0, 0))
    g = FloatGraph((Node("conv2d", "c", ("x",), "y", conv),), "x", "y", (3, 2, 2))
    with pytest.raises(FloatGraphError, match="does not fit"):
        _ = g.shapes
    pool = Pool2d((2, 2), (2, 2), (0, 0, 0, 0))
    g = FloatGraph((Node("maxpool", "p", ("x",), "y", pool), Node("add", "a", ("x", "y"), "z")), "x", "z", (3, 4, 4))
    with pytest.raises(FloatGraphError, match="adds shapes"):
        _ = g.shapes


@settings(max_examples=25, deadline=None)
@given(kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)), stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pad=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
       kind=st.sampled_from(["avgpool", "maxpool"]), side=st.integers(4, 7))
def test_pools_clip_windows_at_the_border(kernel, stride, pad, kind, side):
    """The graph's pools average/maximise over the window's part inside the input (TFLite's rule)."""
    x = torch.randn(1, 2, side, side + 1, dtype=torch.float64)
    g = FloatGraph((Node(kind, "p", ("x",), "y", Pool2d(kernel, stride, pad)),), "x", "y", (2, side, side + 1))
    try:
        oh, ow = g.shapes["y"][1:]
    except FloatGraphError:
        fits = side + pad[0] + pad[1] >= kernel[0] and side + 1 + pad[2] + pad[3] >= kernel[1]
        assert max(pad[:2]) >= kernel[0] or max(pad[2:]) >= kernel[1] or not fits
        return  # refused: nothing to compare
    got = run_float(g, x)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * stride[0] - pad[0], j * stride[1] - pad[2]
            win = x[:, :, max(r0, 0):max(r0 + kernel[0], 0), max(c0, 0):max(c0 + kernel[1], 0)]
            assert win.numel() > 0  # padding smaller than the window: every window holds input
            want = win.amax(dim=(2, 3)) if kind == "maxpool" else win.mean(dim=(2, 3))
            torch.testing.assert_close(got[:, :, i, j], want)
