"""Test helper: small seeded classifier QGraphs (every node kind and option) and the shared TFLite models.

Not a test module. A graph model file holds a classifier (output [N, K]), so every graph here ends in
one: the graph-file, head, import and export tests and the fuzz corpus all start from these.
``random_classifier`` draws one from hypothesis choices for property tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from synthetic_graphs import GraphBuilder, random_input  # noqa: E402,F401 - random_input re-exported

SHARED = Path(__file__).resolve().parents[3] / "shared" / "tinyml-models"
SHARED_MODELS = ("vww_96_int8", "pretrainedResnet_quant")


def shared_model(name: str) -> Path:
    """The path of a shared MLPerf Tiny model; skips the calling test (with the reason) when absent."""
    import pytest

    path = SHARED / f"{name}.tflite"
    if not path.exists():
        pytest.skip(f"{path} absent (the shared MLPerf Tiny models live outside the repository)")
    return path


def plain_cnn(seed: int = 0):
    """conv (VALID, RELU6) -> max pool -> depthwise (SAME) -> mean -> fc per channel -> softmax."""
    g = GraphBuilder(seed, (1, 1, 12, 10))
    x = g.conv(g.input, 6, (3, 5), (2, 1), "valid", "relu6")
    x = g.pool(x, "maxpool", (2, 2), (1, 1), "same", "relu")
    x = g.conv(x, None, (3, 3), (1, 2), "same", "none", depthwise=True)
    x = g.mean(x, keep_dims=False, same_quant=False)
    return g.build(g.softmax(g.fc(x, 4, "none")))


def resnet(seed: int = 1):
    """Identity and 1x1 stride-2 convolution shortcuts, avgpool, flatten, per-tensor fc without bias."""
    g = GraphBuilder(seed, (1, 3, 11, 13), scale=1.0)
    a = g.conv(g.input, 8, (3, 3), (1, 1), "same", "relu")
    b = g.conv(a, 8, (3, 3), (1, 1), "same", "none")
    a = g.add(a, b, "relu")
    b = g.conv(a, 12, (3, 3), (2, 2), "same", "relu")
    short = g.conv(a, 12, (1, 1), (2, 2), "valid", "none")
    y = g.add(short, b, "relu6")
    y = g.pool(y, "avgpool", (2, 2), (2, 2), "valid")
    y = g.flatten(y)  # H*W > 1: flattened in H, W, C order
    return g.build(g.fc(y, 3, "none", per_channel=False, bias=False))


def mlp_head(seed: int = 2):
    """Two fully connected layers (the first with RELU) after a kept-dims mean; no softmax."""
    g = GraphBuilder(seed, (1, 3, 6, 7))
    x = g.conv(g.input, 16, (1, 1), (1, 1), "valid", "relu")
    x = g.mean(x, keep_dims=True, same_quant=True)
    x = g.fc(g.flatten(x), 12, "relu")
    return g.build(g.fc(x, 5, "none"))


def fc_stack(seed: int = 4):
    """Hidden fully connected layers after a channels-last flatten (MLPerf Tiny DS-CNN / small CNN style):
    conv -> flatten (H, W, C order) -> fc RELU6 per-tensor without bias -> fc RELU per channel -> fc
    head -> softmax."""
    g = GraphBuilder(seed, (1, 3, 7, 6))
    x = g.conv(g.input, 5, (3, 3), (2, 2), "same", "relu")
    x = g.fc(g.flatten(x), 10, "relu6", per_channel=False, bias=False)
    x = g.fc(x, 7, "relu")
    return g.build(g.softmax(g.fc(x, 4, "none")))


def same_stride2_even(seed: int = 5):
    """TFLite SAME stride-2 convolutions on even inputs (the padding row/column at the bottom/right only,
    as VWW's MobileNetV1 has them): conv 3x3 s2 on 12x12, depthwise 3x3 s2 on 6x6, pointwise, depthwise
    5x5 s1, then a mean and the head."""
    g = GraphBuilder(seed, (1, 3, 12, 12))
    x = g.conv(g.input, 6, (3, 3), (2, 2), "same", "relu6")
    x = g.conv(x, None, (3, 3), (2, 2), "same", "relu", depthwise=True)
    x = g.conv(x, 8, (1, 1), (1, 1), "same", "relu")
    x = g.conv(x, None, (5, 5), (1, 1), "same", "relu", depthwise=True)
    return g.build(g.fc(g.mean(x, keep_dims=False, same_quant=False), 3, "none"))


def conv_only(seed: int = 3):
    """Ends in a convolution and a mean: no fully connected classifier to replace."""
    g = GraphBuilder(seed, (1, 3, 8, 8))
    x = g.conv(g.input, 4, (3, 3), (1, 1), "same", "relu")
    return g.build(g.mean(x, keep_dims=False, same_quant=False))


CLASSIFIERS = {"plain_cnn": plain_cnn, "resnet": resnet, "mlp_head": mlp_head, "fc_stack": fc_stack}


def classes_of(graph) -> tuple[str, ...]:
    return tuple(f"class{i}" for i in range(graph.tensor[graph.output].shape[1]))


def random_classifier(draw_int, draw_bool, seed: int):
    """A random small classifier: ``draw_int(lo, hi)`` and ``draw_bool()`` pick the structure."""
    c_in = 1 if draw_bool() else 3
    g = GraphBuilder(seed, (1, c_in, draw_int(4, 12), draw_int(4, 12)), zero=draw_int(-128, 127))
    x = g.input
    for _ in range(draw_int(1, 4)):
        n, c, h, w = g.shape(x)
        op = draw_int(0, 3)
        kh, kw = draw_int(1, min(h, 5)), draw_int(1, min(w, 5))
        stride = (draw_int(1, 2), draw_int(1, 2))
        padding = "same" if draw_bool() else "valid"
        act = ("none", "relu", "relu6")[draw_int(0, 2)]
        if op == 0:
            x = g.conv(x, draw_int(1, 8), (kh, kw), stride, padding, act)
        elif op == 1:
            x = g.conv(x, None, (kh, kw), stride, padding, act, depthwise=True)
        elif op == 2:
            x = g.pool(x, "avgpool" if draw_bool() else "maxpool", (kh, kw), stride, padding, act)
        else:
            x = g.add(x, g.conv(x, c, (kh, kw), (1, 1), "same", "none"), act)
    x = g.mean(x, keep_dims=False, same_quant=draw_bool()) if draw_bool() else g.flatten(x)
    if draw_bool():  # a hidden fully connected layer
        x = g.fc(x, draw_int(2, 8), ("none", "relu", "relu6")[draw_int(0, 2)], per_channel=draw_bool(),
                 bias=draw_bool())
    x = g.fc(x, draw_int(2, 6), "none", per_channel=draw_bool(), bias=draw_bool())
    return g.build(g.softmax(x) if draw_bool() else x)
