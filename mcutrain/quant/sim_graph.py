"""The int8 simulation of an imported QGraph as an nn.Module: train any TinyML int8 graph in PyTorch.

Why: ``Int8Net`` runs the zoo's block structure only; an imported model (a TFLite ResNet, a
depthwise-separable VWW net, a quantized PyTorch import) is a general DAG. ``GraphNet`` walks the
graph's nodes in their topological order with the same exact int8 arithmetic as
``graph_forward`` (the reference, itself equal to LiteRT) and a straight-through fp32 backward:

- conv2d: ``Int8Conv`` leaves (shared with the zoo: QAS factors, kept channels, frozen channels);
  the i-th conv node (counting hidden fully connected nodes, ``QGraph.convs``) is conv i of a scheme.
- add: ``Int8Add`` (TFLite's ADD; gradient ``s_in / s_y`` inside the clamp).
- fully connected layers before the head: ``Int8FcConv``, the 1x1 conv they are (``graph.FcConv``):
  conv i of a scheme in node order with the conv2d nodes, trainable, LiteRT's double rescale forward.
- avgpool / maxpool / mean: forward by the reference functions (exact integers), backward the
  gradient of the real-valued op times the clamp mask (a clipped-window average, the window maximum,
  the spatial mean): the straight-through rule of the zoo's ``Int8AvgPoolFn``.
- reshape: a view, flattened in TFLite's H, W, C order where the node says so.
- the classifier (the fully connected node producing the output, ``graph_head.classifier_node``):
  trainable, fp32 logits ``acc * s_x * s_w`` (``Int8LinearFn``, as the zoo's classifier); a final
  softmax is dropped (training keeps the logits) and stays in the graph ``to_graph`` returns.

The input: the loader's floats ``(p - 128) / 128`` become ``q = p - 128``, the project's int8 input
convention for graphs (``quant.quantize_graph``; both shared TFLite models follow it). A graph with
one input channel gets the rounded mean of R, G and B (grey images arrive as three equal channels,
so their grey value is exact).

A frozen prefix (``frozen_split``) ends at a cut point: after it exactly one tensor is still read,
so the cache stores that one tensor per image (``prefix`` / ``suffix``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from mcutrain.quant import graph_forward as gf
from mcutrain.quant.graph import FcConv, FullyConnected, Mean, Node, Pool2d, QGraph, fc_as_conv
from mcutrain.quant.graph_head import classifier_node
from mcutrain.quant.qmodel import QLinear
from mcutrain.quant.sim_int8_backward import as_input_dtype, fork, mean_backward, pool2d_backward
from mcutrain.quant.sim_model import Int8Add, Int8Conv, Int8Linear, set_backward, set_trainable
from mcutrain.quant.sim_ops import Int8ConvFn, exact_conv
from mcutrain.sparse import UpdatePlan

CONV_KINDS = ("conv2d", "fully_connected")  # the nodes before the classifier a scheme addresses as convs
LOADER_SCALE = 128.0  # the loader's default preprocessing: x = (p - 128) / 128


# ---------------------------------------------------------------------------------------------- leaves


class _ExactFn(torch.autograd.Function):
    """Forward: the leaf's exact integer op (NumPy); backward: the leaf's straight-through rule."""

    @staticmethod
    def forward(ctx, x, leaf):
        y, mask = leaf.exact(x.detach().numpy().astype(np.int64))
        ctx.leaf = leaf
        ctx.save_for_backward(x, torch.from_numpy(mask))
        return torch.from_numpy(y).to(x.dtype)

    @staticmethod
    def backward(ctx, g_y):
        x, mask = ctx.saved_tensors
        if ctx.leaf.backward_mode == "int8":
            return as_input_dtype(ctx.leaf.grad_int8(x, g_y, mask), g_y.dtype), None
        return ctx.leaf.grad(x, g_y * mask.to(g_y.dtype)), None


def _clamped(v: np.ndarray, qmin: int, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(clamped int8 values, inside-the-clamp mask) of unclamped integers; a value at a bound counts as
    clamped (``qmin < v < qmax``), the convention of the zoo's ops and of the engine's kernels."""
    return np.clip(v, qmin, qmax).astype(np.float32), ((v > qmin) & (v < qmax)).astype(np.float32)


class Int8Pool2d(nn.Module):
    """TFLite's AVERAGE_POOL_2D / MAX_POOL_2D: windows clipped at the border, no rescale."""

    backward_mode = "float32"  # sim_model.set_backward

    def __init__(self, p: Pool2d, kind: str):
        super().__init__()
        self.p, self.kind = p, kind
        self.ratio = p.x.scale / p.y.scale  # 1 for TFLite's int8 pools (input and output quantization equal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ExactFn.apply(x, self)

    def exact(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _clamped(gf.pool_values(x, self.p, self.kind), self.p.qmin, self.p.qmax)

    def grad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Gradient of the real-valued clipped-window average (or maximum) at ``x``."""
        (kh, kw), strides, (t, b, left, r) = self.p.kernel, self.p.strides, self.p.pad
        with torch.enable_grad():
            xs = x.detach().to(torch.float32).requires_grad_(True)
            if self.kind == "avgpool":
                padded = nn.functional.pad(xs, (left, r, t, b))
                ones = nn.functional.pad(torch.ones_like(xs[:1, :1]), (left, r, t, b))
                y = (nn.functional.avg_pool2d(padded, (kh, kw), strides) /
                     nn.functional.avg_pool2d(ones, (kh, kw), strides))  # the mean of the inside positions
            else:
                padded = nn.functional.pad(xs, (left, r, t, b), value=-float("inf"))
                y = nn.functional.max_pool2d(padded, (kh, kw), strides)
            (g_x,) = torch.autograd.grad(y, xs, g.to(torch.float32) * self.ratio)
        return g_x

    def grad_int8(self, x: torch.Tensor, g_y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return pool2d_backward(self, x, g_y, mask)


class Int8Mean(nn.Module):
    """TFLite's MEAN over H and W (LiteRT's integer kernel, ``graph_forward.mean``)."""

    backward_mode = "float32"  # sim_model.set_backward

    def __init__(self, p: Mean):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ExactFn.apply(x, self)

    def exact(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = gf.mean(x, self.p).astype(np.float32)
        # The mean's clamp is the int8 range: a value at a bound is taken as clamped (a step off).
        return y, ((y > -128) & (y < 127)).astype(np.float32)

    def grad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        g = g.reshape(g.shape[0], g.shape[1], 1, 1) * (self.p.x.scale / (self.p.y.scale * h * w))
        return g.expand(-1, -1, h, w).to(torch.float32).contiguous()

    def grad_int8(self, x: torch.Tensor, g_y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        return mean_backward(g_y, mask, self.p.x.scale / (self.p.y.scale * h * w), (h, w))


class _FcConvFn(torch.autograd.Function):
    """A hidden fully connected layer as its 1x1 conv: exact integer sums, LiteRT's double rescale
    (``graph_forward.fc_values``, here in torch float64: the same IEEE products and rounding), and the
    conv's straight-through backward (``Int8ConvFn.backward``: ``g_acc = g_y * mask * M``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer):
        xz = x - layer.x_zero
        acc = exact_conv(xz, weight, 1, 1) + bias.to(torch.int64)[None, :, None, None]
        v = acc.clamp(-(2**31), 2**31 - 1).to(torch.float64) * layer.rescale[None, :, None, None]
        t = torch.trunc(v)
        v = (t + torch.where((v - t).abs() >= 0.5, torch.sign(v), torch.zeros_like(v))) + layer.y_zero
        mask = (v > layer.qmin) & (v < layer.qmax)
        ctx.layer, ctx.x_shape = layer, x.shape
        ctx.save_for_backward(xz if weight.requires_grad else None, weight, mask)
        return v.clamp(layer.qmin, layer.qmax).to(x.dtype)

    backward = Int8ConvFn.backward


class Int8FcConv(Int8Conv):
    """A fully connected layer before the classifier: conv i of a scheme (``graph.FcConv``), trainable
    like any conv; takes and returns [N, C] / [N, K] as the graph's node does."""

    def __init__(self, q: FcConv, index: int):
        super().__init__(q, index)
        self.register_buffer("rescale", torch.from_numpy(q.rescale), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _FcConvFn.apply(x.reshape(x.shape[0], -1, 1, 1), self.weight, self.bias, self)
        return y.reshape(y.shape[0], -1)


class GraphHead(Int8Linear):
    """The classifier: the zoo's ``Int8Linear`` (trainable int8 weights and int32 biases, fp32 logits)
    on the graph's last fully connected node, whose int8 output quantization it keeps for export."""

    def __init__(self, p: FullyConnected):
        bias = p.bias if p.bias is not None else np.zeros(p.weight.shape[0], np.int32)
        super().__init__(QLinear(p.weight, bias, p.w_scale, p.x))
        self.fc = p

    def to_fully_connected(self) -> FullyConnected:
        """The trained integers; a head without a bias gets one only when training moved it."""
        bias = self.bias.detach().numpy().astype(np.int32)
        keep_none = self.fc.bias is None and not bias.any()
        return replace(self.fc, weight=self.weight.detach().numpy().astype(np.int8), bias=None if keep_none else bias)


class Reshape(nn.Module):
    def __init__(self, channels_last: bool):
        super().__init__()
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        return x.reshape(x.shape[0], -1)


# ---------------------------------------------------------------------------------------------- the net


def _leaf(node: Node, conv_index: int) -> nn.Module:
    """The simulation of one node before the classifier (every fully connected one there is hidden)."""
    k, p = node.kind, node.params
    if k == "conv2d":
        return Int8Conv(p, conv_index)
    if k == "add":
        return Int8Add(p)
    if k in ("avgpool", "maxpool"):
        return Int8Pool2d(p, k)
    if k == "mean":
        return Int8Mean(p)
    if k == "fully_connected":
        return Int8FcConv(fc_as_conv(node), conv_index)
    if k == "reshape":
        return Reshape(p.channels_last)
    raise ValueError(f"node kind {k!r} has no simulation leaf")


class GraphNet(nn.Module):
    """A QGraph classifier; takes the loader's float input, returns fp32 logits."""

    cache_dtype = torch.int8  # a frozen-prefix cache stores the int8 activation at the cut
    backward_mode = "float32"  # set_backward

    def __init__(self, graph: QGraph):
        super().__init__()
        self.graph = graph
        self.head_index, head, self.softmax = classifier_node(graph)
        self.body = graph.nodes[:self.head_index]  # every node before the classifier (topological order)
        leaves, index = [], 0
        for node in self.body:
            leaves.append(_leaf(node, index))
            index += node.kind in CONV_KINDS
        self.leaves = nn.ModuleList(leaves)
        self.classifier = GraphHead(head.params)
        self.head_input = head.inputs[0]
        t = graph.tensor[graph.input]
        self.input_chw = tuple(int(d) for d in t.shape[1:])
        self._convs = [leaf for leaf in self.leaves if isinstance(leaf, Int8Conv)]

    # -- structure

    def convs(self) -> list[Int8Conv]:
        """Conv leaves in the graph's node order (conv i of a scheme)."""
        return list(self._convs)

    def set_trainable(self, plan: UpdatePlan) -> None:
        set_trainable(self, plan)

    def set_backward(self, mode: str) -> None:
        """"float32" or "int8" for every leaf; int8 also routes each tensor read twice through a fork."""
        set_backward(self, mode)

    # -- running

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Loader floats ``(p - 128) / 128`` [N, 3, H, W] -> the graph's int8 input ``p - 128`` (exact)."""
        q = torch.round(x * LOADER_SCALE).clamp_(-128, 127)
        if self.input_chw[0] == 1 and q.shape[1] == 3:
            q = torch.round((q + 128).sum(1, keepdim=True) / 3) - 128  # grey: the rounded mean of R, G, B
        if tuple(q.shape[1:]) != self.input_chw:
            raise ValueError(f"input batch {list(q.shape[1:])} does not match the graph input {list(self.input_chw)}")
        return q

    def run(self, values: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
        int8 = self.backward_mode == "int8" and torch.is_grad_enabled()  # forks only where a backward follows
        readers = self._readers(start, stop) if int8 else {}
        forks: dict[str, list[torch.Tensor]] = {}

        def read(name: str) -> torch.Tensor:
            if readers.get(name, 0) < 2:
                return values[name]
            copies = forks.setdefault(name, list(fork(values[name], readers[name])))
            return copies.pop(0) if len(copies) > 1 else copies[0]  # the last copy serves what is left

        for node, leaf in zip(self.body[start:stop], self.leaves[start:stop]):
            values[node.output] = leaf(*[read(n) for n in node.inputs])
        for name in list(forks):  # a fork's last copy is what later readers (the classifier) get
            values[name] = forks[name][0]
        return values

    def _readers(self, start: int, stop: int) -> dict[str, int]:
        """How often each tensor is read by nodes ``start:stop`` (and the classifier, when it follows)."""
        names = [n for node in self.body[start:stop] for n in node.inputs]
        if stop == len(self.body):
            names.append(self.head_input)
        counts: dict[str, int] = {}
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        return counts

    def features(self, x_q: torch.Tensor) -> torch.Tensor:
        """The int8 input of the classifier."""
        return self.run({self.graph.input: x_q}, 0, len(self.body))[self.head_input]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.quantize_input(x)))

    def int8_values(self, x_q: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every int8 tensor up to the classifier's input (for comparisons with ``graph_forward``)."""
        return self.run({self.graph.input: x_q}, 0, len(self.body))

    # -- the frozen prefix

    def live_after(self, cut: int) -> set[str]:
        """Tensors computed by the first ``cut`` nodes (or the input) that later nodes still read."""
        known = {self.graph.input} | {n.output for n in self.body[:cut]}
        later = {name for n in self.body[cut:] for name in n.inputs} | {self.head_input}
        return known & later

    def frozen_split(self, plan: UpdatePlan) -> int | None:
        """The longest frozen prefix (in nodes) that ends at a cut point; None when there is none."""
        low = plan.lowest_trained_conv
        limit = len(self.body)
        if low is not None:
            lowest = [n for n in self.body if n.kind in CONV_KINDS][low]
            limit = next(i for i, n in enumerate(self.body) if n is lowest)
        for cut in range(limit, 0, -1):
            if len(self.live_after(cut)) == 1:
                return cut
        return None

    def prefix(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        """Loader floats -> the one live int8 tensor after the first ``cut`` nodes."""
        (name,) = self.live_after(cut)
        return self.run({self.graph.input: self.quantize_input(x)}, 0, cut)[name]

    def suffix(self, t: torch.Tensor, cut: int) -> torch.Tensor:
        """The live tensor after ``cut`` nodes -> logits."""
        (name,) = self.live_after(cut)
        return self.classifier(self.run({name: t}, cut, len(self.body))[self.head_input])

    # -- back to integers

    def to_graph(self) -> QGraph:
        """The (trained) integers back in the graph: convs and classifier replaced, all else unchanged."""
        trained = {id(n): replace(n, params=_trained_params(leaf))
                   for n, leaf in zip(self.body, self.leaves) if isinstance(leaf, Int8Conv)}
        head = self.graph.nodes[self.head_index]
        trained[id(head)] = replace(head, params=self.classifier.to_fully_connected())
        nodes = tuple(trained.get(id(n), n) for n in self.graph.nodes)
        g = self.graph
        return QGraph(g.tensors, nodes, g.input, g.output, dict(g.provenance)).validate()


def _trained_params(leaf: Int8Conv):
    """A conv leaf's integers as its node's parameters (a hidden fully connected layer's back as one)."""
    q = leaf.to_qconv()
    return q.to_fully_connected() if isinstance(q, FcConv) else q
