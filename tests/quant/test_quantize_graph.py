"""FloatGraph -> int8 QGraph: agreement with the float model, exact folds, the border effect of a
per-channel input normalisation, fused and unfused ReLUs, and the same integers on another CPU path."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mcutrain.data import ImageSet, sources
from mcutrain.models.float_graph import InputPreprocessing, run_float
from mcutrain.models.torch_import import import_module
from mcutrain.quant.graph_forward import graph_forward
from mcutrain.quant.quantize_graph import (GraphQuantizeError, clamp_of, float32_scale, fold_graph, image_pixels,
                                           quantize_float_graph)
from mcutrain.quant.qmodel import QTensor

REPO = Path(__file__).resolve().parents[2]
needs_digits = pytest.mark.skipif(not sources.NAMED["digits"].available(), reason="digits (scikit-learn) not installed")


def _quantized(name: str):
    from tests.models.torch_models.training import IMAGENET, digits, trained

    model, side = trained(name)
    graph = import_module(model, torch.zeros(1, 3, side, side), preprocessing=IMAGENET)
    return graph, quantize_float_graph(graph, digits().train, batches=4, batch_size=64, seed=0), side


def _compare(graph, qgraph, images: np.ndarray, side: int):
    """(float logits, dequantized int8 logits) on uint8 images."""
    pixels = image_pixels(images, 3, side, side)
    with torch.no_grad():
        fl = run_float(graph, graph.preprocessing.normalize(pixels.float())).numpy().astype(np.float64)
    out = graph_forward(qgraph, (pixels.numpy() - 128).astype(np.int8))[qgraph.output]
    y = qgraph.tensor[qgraph.output].q
    return fl, y.scale * (out.astype(np.float64) - y.zero)


@needs_digits
@pytest.mark.parametrize("name", ["mobilenet_v2", "plain_cnn", "small_resnet"])
def test_int8_graph_agrees_with_the_float_model(name):
    from tests.models.torch_models.training import digits

    graph, qgraph, side = _quantized(name)
    test = digits().test
    fl, deq = _compare(graph, qgraph, test.images, side)
    agreement = float((fl.argmax(1) == deq.argmax(1)).mean())
    float_acc = float((fl.argmax(1) == test.labels).mean())
    spread = fl.max() - fl.min()
    print(f"{name}: float {float_acc:.4f} int8 {(deq.argmax(1) == test.labels).mean():.4f} agreement {agreement:.4f}"
          f" mean|diff|/spread {np.abs(deq - fl).mean() / spread:.4f} max {np.abs(deq - fl).max() / spread:.4f}")
    assert float_acc > 0.5  # trained: a meaningful agreement
    assert agreement >= 0.95
    assert np.abs(deq - fl).mean() < 0.02 * spread  # close on average (measured: 0.003)
    assert np.abs(deq - fl).max() < 0.2 * spread  # and nowhere far off (measured: <= 0.09)
    kinds = {n.kind for n in qgraph.nodes}
    assert "fully_connected" in kinds and graph.nodes[-1].kind == "linear"
    assert qgraph.nodes[-1].kind == "fully_connected" and qgraph.nodes[-1].output == qgraph.output
    reshapes = [n.params for n in qgraph.nodes if n.kind == "reshape"]
    # the plain CNN flattens a 2x2 map: in (H, W, C) order, its first linear layer's columns permuted
    assert [r.channels_last for r in reshapes] == ([True] if name == "plain_cnn" else [False])


@needs_digits
def test_quantization_is_deterministic():
    from tests.models.torch_models.training import digits

    graph, first, _ = _quantized("plain_cnn")
    again = quantize_float_graph(graph, digits().train, batches=4, batch_size=64, seed=0)
    assert first == again
    other = quantize_float_graph(graph, digits().train, batches=4, batch_size=64, seed=1)
    assert first != other  # the check can fail: other calibration images give other ranges


def _bn_cnn(pad: int = 1, depthwise_first: bool = False) -> nn.Module:
    torch.manual_seed(3)
    first = nn.Conv2d(3, 3, 3, padding=pad, groups=3) if depthwise_first else nn.Conv2d(3, 8, 3, padding=pad)
    c = first.out_channels
    m = nn.Sequential(first, nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8),
                      nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    for b in m.modules():
        if isinstance(b, nn.BatchNorm2d):
            b.running_mean.uniform_(-1, 1)
            b.running_var.uniform_(0.5, 2)
            b.weight.data.uniform_(0.5, 1.5)
            b.bias.data.uniform_(-0.5, 0.5)
    return m.eval()


def _pixels(n: int = 3, side: int = 12) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 3, side, side))).double()


def test_exact_preprocessing_folds_nothing_and_batchnorm_folds_exactly():
    prep = InputPreprocessing(offset=128.0, scale=1 / 128)
    graph = import_module(_bn_cnn(), torch.zeros(1, 3, 12, 12), preprocessing=prep)
    folded, q_in = fold_graph(graph)
    assert q_in == QTensor(1 / 128, 0)
    assert [n.kind for n in folded.nodes].count("batchnorm") == 0
    p = _pixels()
    with torch.no_grad():
        ref = run_float(graph, prep.normalize(p))
        got = run_float(folded, (p - 128.0 - q_in.zero) * q_in.scale)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_integer_offset_sets_the_input_zero_point():
    prep = InputPreprocessing(offset=100.0, scale=0.01)
    graph = import_module(_bn_cnn(), torch.zeros(1, 3, 12, 12), preprocessing=prep)
    folded, q_in = fold_graph(graph)
    # padding with z_in is padding with pixel 100, i.e. x = 0: exact; the scale is float32, as a .tflite says
    assert q_in == QTensor(float32_scale(0.01), -28)
    p = _pixels()
    with torch.no_grad():
        torch.testing.assert_close(run_float(folded, (p - 128.0 + 28) * 0.01),
                                   run_float(graph, graph.preprocessing.normalize(p)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("depthwise_first", [False, True])
def test_per_channel_normalisation_differs_exactly_as_documented_at_the_border(depthwise_first):
    """Folded graph == the user's model on the image padded with pixel z_in + 128 (instead of x = 0)."""
    prep = InputPreprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    graph = import_module(_bn_cnn(1, depthwise_first), torch.zeros(1, 3, 12, 12), preprocessing=prep)
    folded, q_in = fold_graph(graph)
    assert q_in.zero == round(255 * np.mean(prep.mean)) - 128
    p = _pixels()
    first = graph.nodes[0]
    unpadded = replace(graph, nodes=(replace(first, params=replace(first.params, padding=(0, 0, 0, 0))),)
                       + graph.nodes[1:], input_shape=(3, 14, 14))
    padded = torch.nn.functional.pad(p, (1, 1, 1, 1), value=128.0 + q_in.zero)
    with torch.no_grad():
        got = run_float(folded, (p - 128.0 - q_in.zero) * q_in.scale)
        documented = run_float(unpadded, prep.normalize(padded))
        torch_zero_padding = run_float(graph, prep.normalize(p))
    torch.testing.assert_close(got, documented, rtol=1e-5, atol=1e-5)
    assert (got - torch_zero_padding).abs().max() > 1e-3  # the effect exists (this check can fail)


@pytest.mark.parametrize("depthwise_first", [False, True])
def test_per_channel_normalisation_without_padding_folds_exactly(depthwise_first):
    prep = InputPreprocessing(mean=(0.5, 0.45, 0.4), std=(0.25, 0.2, 0.3))
    graph = import_module(_bn_cnn(0, depthwise_first), torch.zeros(1, 3, 12, 12), preprocessing=prep)
    folded, q_in = fold_graph(graph)
    assert q_in == QTensor(float32_scale(1 / (255 * 0.2)), round(255 * 0.45) - 128)
    p = _pixels()
    with torch.no_grad():
        torch.testing.assert_close(run_float(folded, (p - 128.0 - q_in.zero) * q_in.scale),
                                   run_float(graph, prep.normalize(p)), rtol=1e-5, atol=1e-5)


def test_per_channel_normalisation_needs_convolutions_at_the_input():
    m = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 3)).eval()
    graph = import_module(m, torch.zeros(1, 3, 8, 8), preprocessing=InputPreprocessing(mean=(.5, .5, .4),
                                                                                        std=(.2, .2, .2)))
    with pytest.raises(GraphQuantizeError, match="maxpool"):
        fold_graph(graph)
    fold_graph(replace(graph, preprocessing=InputPreprocessing(offset=127.0, scale=0.02)))  # exact: nothing to fold


class _PreActivation(nn.Module):
    """A ReLU whose input is also the shortcut: it cannot be fused into the add before it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        y = self.conv1(x)
        z = y + self.conv2(torch.relu(y))
        return self.fc(nn.functional.relu6(z).mean((2, 3)))


def test_unfusable_relu_becomes_a_clamping_max_pool():
    torch.manual_seed(0)
    graph = import_module(_PreActivation().eval(), torch.zeros(1, 3, 8, 8))
    images = np.random.default_rng(1).integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    qgraph = quantize_float_graph(graph, ImageSet(images, np.zeros(64, np.int64)), batches=2, batch_size=32)
    kinds = [n.kind for n in qgraph.nodes]
    assert kinds == ["conv2d", "maxpool", "conv2d", "add", "mean", "fully_connected"]
    relu = qgraph.nodes[1].params
    assert relu.kernel == (1, 1) and relu.qmin == relu.x.zero and relu.x == relu.y
    add = qgraph.nodes[3].params
    assert (add.qmin, add.qmax) == clamp_of("relu6", add.y) and add.y.zero == -128
    fl, deq = _compare(graph, qgraph, images[:16], 8)
    assert np.abs(deq - fl).max() < 0.1 * (fl.max() - fl.min())


def test_clamp_of():
    assert clamp_of(None, QTensor(0.1, 3)) == (-128, 127)
    assert clamp_of("relu", QTensor(0.1, -20)) == (-20, 127)
    assert clamp_of("relu6", QTensor(0.01, -128)) == (-128, 127)  # 6 lies beyond the range
    assert clamp_of("relu6", QTensor(0.05, -128)) == (-128, -8)


def test_batchnorm_without_a_convolution_before_it_is_refused():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 2)).eval()
    graph = import_module(m, torch.zeros(1, 3, 6, 6))
    with pytest.raises(GraphQuantizeError, match="batchnorm '2'"):
        fold_graph(graph)


SCRIPT = """
import hashlib, sys
import numpy as np
import torch
from mcutrain.data import load_dataset
from mcutrain.models.float_graph import load_float_graph
from mcutrain.quant.quantize_graph import quantize_float_graph
torch.set_num_threads(1)
q = quantize_float_graph(load_float_graph(sys.argv[1]), load_dataset("digits", seed=0).train, batches=4,
                         batch_size=64, seed=0)
print(__import__("tests.quant.test_quantize_graph", fromlist=["x"]).digest(q))
print(torch.backends.cpu.get_cpu_capability())
"""


def digest(qgraph) -> str:
    """A hash of every integer and scale of a QGraph (scales by their exact repr)."""
    h = hashlib.sha256()
    for t in qgraph.tensors:
        h.update(f"{t.name} {t.shape} {t.q.scale!r} {t.q.zero}\n".encode())
    for n in qgraph.nodes:
        p = n.params
        h.update(f"{n.kind} {n.name} {n.inputs} {n.output}\n".encode())
        for key in ("weight", "bias", "w_scale"):
            if getattr(p, key, None) is not None:
                h.update(np.ascontiguousarray(getattr(p, key)).tobytes())
        h.update(repr([getattr(p, k, None) for k in ("qmin", "qmax", "frozen_channels")]).encode())
    return h.hexdigest()


@needs_digits
def test_same_integers_under_the_scalar_cpu_path(tmp_path):
    from mcutrain.models.float_graph import save_float_graph
    from tests.models.torch_models.training import IMAGENET, digits, trained

    model, side = trained("mobilenet_v2")
    graph = import_module(model, torch.zeros(1, 3, side, side), preprocessing=IMAGENET)
    save_float_graph(tmp_path / "g.mcf", graph)
    native = digest(quantize_float_graph(graph, digits().train, batches=4, batch_size=64, seed=0))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default",
           "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "g.mcf")], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    got, capability = done.stdout.split()
    assert capability == "DEFAULT"
    assert got == native


def test_an_all_zero_channel_keeps_its_bias():
    """BatchNorm gamma = 0 makes a channel's weights 0 and its output the constant beta: the int8 graph
    keeps that constant (a zero weight scale would have turned it into 0) and freezes the channel."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(4, 3)).eval()
    m[1].weight.data[0] = 0.0
    m[1].bias.data[0] = 0.7
    graph = import_module(m, torch.zeros(1, 3, 8, 8))
    images = np.random.default_rng(2).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    qgraph = quantize_float_graph(graph, ImageSet(images, np.zeros(32, np.int64)), batches=1, batch_size=32)
    conv = qgraph.nodes[0].params
    assert not conv.weight[0].any() and conv.w_scale[0] == conv.w_scale.max() > 0
    assert 0 in conv.frozen_channels
    values = graph_forward(qgraph, (image_pixels(images[:2], 3, 8, 8).numpy() - 128).astype(np.int8))
    out = conv.y.scale * (values[qgraph.nodes[0].output][:, 0].astype(np.float64) - conv.y.zero)
    np.testing.assert_allclose(out, 0.7, atol=conv.y.scale)


def test_a_pytorch_mlp_head_quantizes_to_hidden_fully_connected_layers_the_engine_trains():
    """conv -> flatten -> Linear -> ReLU -> Linear -> ReLU6 -> Linear (a DS-CNN / KWS-style head): the
    hidden Linear layers become fully connected nodes with their activation fused (RELU and RELU6 clamp
    at the output zero point, RELU6 at 6 at most), convs 1 and 2 of a scheme; simulation and NumPy engine run them as
    the reference does."""
    from mcutrain.engine.compile import compile_training
    from mcutrain.engine.executor import Executor
    from mcutrain.quant.sim_graph import GraphNet
    from mcutrain.sparse.builtin import graph_plan

    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 16), nn.ReLU(),
                          nn.Linear(16, 12), nn.ReLU6(), nn.Linear(12, 3)).eval()
    prep = InputPreprocessing(offset=128.0, scale=1 / 128)
    graph = import_module(model, torch.zeros(1, 3, 12, 12), preprocessing=prep)
    rng = np.random.default_rng(0)
    calib = ImageSet(rng.integers(0, 256, (64, 12, 12, 3)).astype(np.uint8), rng.integers(0, 3, 64))
    q = quantize_float_graph(graph, calib, batches=1, batch_size=64, seed=0)
    fcs = [n.params for n in q.nodes if n.kind == "fully_connected"]
    assert len(fcs) == 3 and len(q.convs()) == 3
    assert fcs[0].qmin == fcs[0].y.zero and fcs[0].qmax == 127  # RELU
    top = fcs[1].y.scale * (fcs[1].qmax - fcs[1].y.zero)
    assert fcs[1].qmin == fcs[1].y.zero and top <= 6 + 1e-6  # RELU6 (here the calibrated range ends below 6)
    x = (image_pixels(calib.images[:4], 3, 12, 12).numpy() - 128).astype(np.int8)
    ref = graph_forward(q, x)
    with torch.no_grad():
        got = GraphNet(q).int8_values(torch.from_numpy(x.astype(np.float32)))
    for name, value in got.items():
        np.testing.assert_array_equal(value.numpy(), ref[name].astype(np.float32), err_msg=name)
    executor = Executor(compile_training(q, graph_plan(q, "full"), lr=0.05, seed=1))
    assert np.isfinite(executor.train_step(x[0], 1))
