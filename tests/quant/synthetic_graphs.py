"""Test helper: build small random int8 QGraphs (seeded) covering every node kind and option.

Not a test module. Scales are float32 values (what a .tflite stores) chosen so that outputs use the
int8 range without saturating everywhere, so rounding differences would show.
"""

from __future__ import annotations

import numpy as np

from mcutrain.quant.from_tflite import fused_clamp, same_padding
from mcutrain.quant.graph import FullyConnected, GraphTensor, Mean, Node, Pool2d, QGraph, Reshape, Softmax
from mcutrain.quant.qmodel import QAdd, QConv, QTensor

ACTS = {"none": 0, "relu": 1, "relu6": 3}


def f32(v: float) -> float:
    return float(np.float32(v))


class GraphBuilder:
    def __init__(self, seed: int, shape: tuple[int, int, int, int], scale: float = 1 / 255, zero: int = -128):
        self.rng = np.random.default_rng(seed)
        self.tensors: dict[str, GraphTensor] = {}
        self.nodes: list[Node] = []
        self.input = self._tensor("input", shape, QTensor(f32(scale), zero))

    def _tensor(self, name: str, shape, q: QTensor) -> str:
        name = f"{name}_{len(self.tensors)}"
        self.tensors[name] = GraphTensor(name, tuple(int(s) for s in shape), q)
        return name

    def _out_q(self, real_std: float) -> QTensor:
        """An output quantization with the real values' std at about 40 steps, zero point near 0."""
        return QTensor(f32(real_std / 40 * self.rng.uniform(0.7, 1.4)), int(self.rng.integers(-20, 21)))

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape

    def q(self, name: str) -> QTensor:
        return self.tensors[name].q

    def conv(self, x: str, out_ch: int | None, kernel=(3, 3), strides=(1, 1), padding="same", act="relu",
             depthwise=False) -> str:
        n, c, h, w = self.shape(x)
        out_ch = c if depthwise else out_ch
        per_in = 1 if depthwise else c
        weight = self.rng.integers(-127, 128, size=(out_ch, per_in) + tuple(kernel)).astype(np.int8)
        fan_in = per_in * kernel[0] * kernel[1]
        w_scale = (self.rng.uniform(0.5, 1.5, out_ch) / (127 * np.sqrt(fan_in))).astype(np.float32)
        xq = self.q(x)
        acc_std = 74 * 73 * np.sqrt(per_in * kernel[0] * kernel[1])
        bias = self.rng.integers(-int(acc_std), int(acc_std) + 1, out_ch).astype(np.int32)
        pad = tuple(padding) if isinstance(padding, tuple) else (0, 0, 0, 0)  # a tuple: explicit (PyTorch's)
        if padding == "same":
            (_, t, b), (_, left, r) = (same_padding(s, k, st) for s, k, st in zip((h, w), kernel, strides))
            pad = (t, b, left, r)
        yq = self._out_q(acc_std * xq.scale * float(w_scale.mean()))
        qmin, qmax = fused_clamp(ACTS[act], yq, "test")
        probe = QConv("probe", strides[0], c if depthwise else 1, weight, bias, w_scale, xq, yq, qmin, qmax, (),
                      strides[1], pad)
        y = self._tensor("conv", (n, out_ch) + probe.out_hw(h, w), yq)
        conv = QConv(y, strides[0], c if depthwise else 1, weight, bias, w_scale, xq, yq, qmin, qmax, (),
                     strides[1], pad)
        self.nodes.append(Node("conv2d", y, (x,), y, conv))
        return y

    def add(self, a: str, b: str, act="none") -> str:
        qa, qb = self.q(a), self.q(b)
        yq = self._out_q(np.hypot(qa.scale, qb.scale) * 60)
        qmin, qmax = fused_clamp(ACTS[act], yq, "test")
        y = self._tensor("add", self.shape(a), yq)
        self.nodes.append(Node("add", y, (a, b), y, QAdd(qa, qb, yq, qmin, qmax)))
        return y

    def pool(self, x: str, kind: str, kernel, strides, padding="valid", act="none") -> str:
        n, c, h, w = self.shape(x)
        pad = (0, 0, 0, 0)
        if padding == "same":
            (_, t, b), (_, left, r) = (same_padding(s, k, st) for s, k, st in zip((h, w), kernel, strides))
            pad = (t, b, left, r)
        xq = self.q(x)
        qmin, qmax = fused_clamp(ACTS[act], xq, "test")
        p = Pool2d(tuple(kernel), tuple(strides), pad, xq, xq, qmin, qmax)
        y = self._tensor(kind, (n, c) + p.out_hw(h, w), xq)
        self.nodes.append(Node(kind, y, (x,), y, p))
        return y

    def mean(self, x: str, keep_dims: bool, same_quant: bool) -> str:
        n, c = self.shape(x)[:2]
        xq = self.q(x)
        yq = xq if same_quant else self._out_q(xq.scale * 40)
        y = self._tensor("mean", (n, c, 1, 1) if keep_dims else (n, c), yq)
        self.nodes.append(Node("mean", y, (x,), y, Mean(xq, yq, keep_dims)))
        return y

    def flatten(self, x: str) -> str:
        s = self.shape(x)
        y = self._tensor("flatten", (s[0], int(np.prod(s[1:]))), self.q(x))
        channels_last = len(s) == 4 and s[2] * s[3] > 1 and s[1] > 1
        self.nodes.append(Node("reshape", y, (x,), y, Reshape(channels_last)))
        return y

    def fc(self, x: str, k: int, act="none", per_channel=True, bias=True) -> str:
        n, c = self.shape(x)
        weight = self.rng.integers(-127, 128, size=(k, c)).astype(np.int8)
        w_scale = (self.rng.uniform(0.5, 1.5, k if per_channel else 1) / (127 * np.sqrt(c))).astype(np.float32)
        xq = self.q(x)
        acc_std = 74 * 73 * np.sqrt(c)
        b = self.rng.integers(-int(acc_std), int(acc_std) + 1, k).astype(np.int32) if bias else None
        yq = self._out_q(acc_std * xq.scale * float(w_scale.mean()))
        qmin, qmax = fused_clamp(ACTS[act], yq, "test")
        y = self._tensor("fc", (n, k), yq)
        self.nodes.append(Node("fully_connected", y, (x,), y, FullyConnected(weight, b, w_scale, xq, yq, qmin, qmax)))
        return y

    def softmax(self, x: str) -> str:
        yq = QTensor(1 / 256, -128)
        y = self._tensor("softmax", self.shape(x), yq)
        self.nodes.append(Node("softmax", y, (x,), y, Softmax(1.0, self.q(x), yq)))
        return y

    def build(self, output: str) -> QGraph:
        return QGraph(tuple(self.tensors.values()), tuple(self.nodes), self.input, output).validate()


def random_input(graph: QGraph, seed: int) -> np.ndarray:
    shape = (1,) + tuple(graph.tensor[graph.input].shape[1:])
    return np.random.default_rng(seed).integers(-128, 128, size=shape).astype(np.int8)
