"""Hand-made engine graphs (``ir.Graph``) with the TFLite ops of an imported model (issue 13 item 1):
conv -> tfl_avgpool -> reshape -> linear, conv -> tfl_mean -> linear, conv -> tfl_maxpool ->
reshape (channels-last) -> linear. Built directly in the IR (as the frontend will emit them from a
QGraph), with a trainable conv and classifier, so that the executor, the planner and the C generator
can be tested on the new ops before the frontend knows them.
"""

from __future__ import annotations

import numpy as np

from mcutrain.engine.autodiff import differentiate
from mcutrain.engine.compile import build_program
from mcutrain.engine.ir import Graph, Op, TensorInfo, make_attrs
from mcutrain.engine.loss import append_loss
from mcutrain.engine.passes import PIPELINE, PassOptions
from mcutrain.engine.verify import verify
from mcutrain.quant.fixedpoint import quantize_multiplier
from mcutrain.sparse.scheme import ConvUpdate, UpdatePlan

CLASSES = 3
S_IMAGE, S_CONV = 0.02, 0.05  # activation scales (the conv's output scale is the pool's too)
VARIANTS = ("avgpool", "mean", "maxpool", "global_avgpool", "mean_keep_dims")


def _tensor(t: dict, name: str, shape, dtype: str, role: str, scale=None, zero=None, trainable=False) -> str:
    t[name] = TensorInfo(name, tuple(shape), dtype, role, scale, zero, trainable)
    return name


def _const(t: dict, c: dict, params: list, name: str, array: np.ndarray, role="const", trainable=False) -> str:
    c[name] = np.ascontiguousarray(array)
    if role in ("weight", "bias"):
        params.append(name)
    return _tensor(t, name, array.shape, array.dtype.name, role, trainable=trainable)


def forward_graph(variant: str, hw=(9, 7), channels=4, seed=0) -> Graph:
    """image [1, 2, H, W] -> conv 3x3 SAME (trained, ReLU) -> the variant's pool -> [reshape] -> linear."""
    rng = np.random.default_rng(seed)
    t, c, params, ops = {}, {}, [], []
    h, w = hw
    _tensor(t, "image", (1, 2, h, w), "int8", "input", S_IMAGE, -3)
    weight = rng.integers(-90, 91, (channels, 2, 3, 3)).astype(np.int8)
    w_scale = np.full(channels, 0.01, np.float32)
    mult, shift = quantize_multiplier(S_IMAGE * w_scale.astype(np.float64) / S_CONV)
    ins = ("image", _const(t, c, params, "conv.weight", weight, "weight", True),
           _const(t, c, params, "conv.bias", rng.integers(-200, 200, channels).astype(np.int32), "bias", True),
           _const(t, c, params, "conv.multiplier", np.asarray(mult, np.int32)),
           _const(t, c, params, "conv.shift", np.asarray(shift, np.int32)))
    _const(t, c, params, "conv.w_scale", w_scale)
    _tensor(t, "conv", (1, channels, h, w), "int8", "activation", S_CONV, -128)
    ops.append(Op("conv", "conv2d", ins, ("conv",), make_attrs(
        index=0, groups=1, x_zero=-3, y_zero=-128, qmin=-128, qmax=127, frozen=(), x_scale=S_IMAGE,
        strides=(1, 1), pads=(1, 1, 1, 1))))
    x = _pool(variant, t, ops, "conv", (h, w), channels)
    k = t[x].shape[1]
    fc_w_scale = np.full(CLASSES, 0.5 / k, np.float32)  # logits of a few units
    s_x = t[x].scale
    ins = (x, _const(t, c, params, "fc.weight", rng.integers(-60, 61, (CLASSES, k)).astype(np.int8), "weight", True),
           _const(t, c, params, "fc.bias", rng.integers(-50, 50, CLASSES).astype(np.int32), "bias", True),
           _const(t, c, params, "fc.logit_scale", (s_x * fc_w_scale.astype(np.float64)).astype(np.float32)))
    _const(t, c, params, "fc.w_scale", fc_w_scale)
    _tensor(t, "logits", (1, CLASSES), "float32", "activation")
    ops.append(Op("fc", "linear", ins, ("logits",), make_attrs(x_zero=t[x].zero, x_scale=float(s_x))))
    return verify(Graph(t, tuple(ops), ("image",), ("logits",), c, tuple(params)))


def _pool(variant: str, t: dict, ops: list, x: str, hw, channels: int) -> str:
    """The variant's pooling ops after ``x``; returns the [1, K] int8 tensor the classifier reads."""
    h, w = hw
    if variant in ("mean", "mean_keep_dims"):
        keep = variant == "mean_keep_dims"
        _tensor(t, "pool", (1, channels) + (1, 1) * keep, "int8", "activation", S_CONV * 0.5, -20)
        ops.append(Op("pool", "tfl_mean", (x,), ("pool",), make_attrs(
            x_scale=S_CONV, x_zero=-128, y_scale=S_CONV * 0.5, y_zero=-20, keep_dims=keep)))
        if not keep:
            return "pool"
        _tensor(t, "flat", (1, channels), "int8", "activation", S_CONV * 0.5, -20)
        ops.append(Op("flatten", "reshape", ("pool",), ("flat",), make_attrs(channels_last=True)))
        return "flat"
    kind = "tfl_maxpool" if variant == "maxpool" else "tfl_avgpool"
    if variant == "global_avgpool":
        geometry = dict(kernel=(h, w), strides=(1, 1), pads=(0, 0, 0, 0))
    else:  # 3x2 windows, strides (2, 2), TFLite SAME padding of a 9x7 input: extra row/col bottom/right
        geometry = dict(kernel=(3, 2), strides=(2, 2), pads=(1, 1, 0, 1))
    (kh, kw), (sh, sw), (pt, pb, pl, pr) = geometry["kernel"], geometry["strides"], geometry["pads"]
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    _tensor(t, "pool", (1, channels, oh, ow), "int8", "activation", S_CONV, -128)
    attrs = dict(geometry, qmin=-128, qmax=127)
    if kind == "tfl_avgpool":
        attrs.update(x_scale=S_CONV, y_scale=S_CONV)
    ops.append(Op("pool", kind, (x,), ("pool",), make_attrs(**attrs)))
    _tensor(t, "flat", (1, channels * oh * ow), "int8", "activation", S_CONV, -128)
    ops.append(Op("flatten", "reshape", ("pool",), ("flat",), make_attrs(channels_last=True)))
    return "flat"


def update_plan(channels=4) -> UpdatePlan:
    return UpdatePlan("tfl-graph", "full", (ConvUpdate(0, "conv", "normal", 2, True, 1.0, 2),))


def program(variant: str, lr=0.01, seed=3, passes=PIPELINE, **kw):
    forward = forward_graph(variant, **kw)
    joint = differentiate(append_loss(forward), update_plan())
    return build_program(joint, forward, PassOptions(lr=lr, seed=seed, stream_input=False), passes)


def images(n: int, hw=(9, 7), seed=5) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, (n, 2) + tuple(hw)).astype(np.int8)


def backward_of(kind: str, attrs: dict, x: np.ndarray, g: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The input gradient autodiff's rule for a one-op forward ``kind`` gives for output gradient ``g``:
    the rule's backward ops (``VJP_RULES``) run by the executor's kernels, the mask from the forward."""
    from mcutrain.engine.autodiff import VJP_RULES, _Backward  # noqa: PLC0415  (the rule itself, no graph)
    from mcutrain.engine.executor.kernels import KERNELS  # noqa: PLC0415
    from mcutrain.engine.ops import OUTPUT_TYPES  # noqa: PLC0415

    t = {}
    _tensor(t, "x", x.shape, "int8", "activation", attrs.get("x_scale"), attrs.get("x_zero"))
    op = Op("op", kind, ("x",), ("y",), make_attrs(**attrs))
    graph = Graph(t, (), ("x",), ())
    (shape, dtype), *_ = OUTPUT_TYPES[kind](graph, op)
    _tensor(t, "y", shape, dtype, "activation")
    graph = Graph(t, (op,), ("x",), ("y",))
    values = {"x": x, "y.grad": g}
    forward = KERNELS[kind](Op("op", kind, ("x",), ("y", "y.mask"), op.attrs), [x], 0)
    if len(forward) == 2:
        values["y.mask"] = forward[1] if mask is None else mask
    bw = _Backward(graph, None, {"x"}, {"x": 1})
    VJP_RULES[kind].rule(bw, op, "y.grad")
    values.update(bw.constants)
    for back in bw.ops:
        values.update(zip(back.outputs, KERNELS[back.kind](back, [values[n] for n in back.inputs], 0)))
    return values["x.grad"]


def zoo_with_tfl_pool(qmodel, plan: UpdatePlan) -> Graph:
    """The zoo model's traced forward with its global pool replaced by what an imported model has: a global
    ``tfl_avgpool`` ([1, C, 1, 1], the input's quantization) and a ``reshape`` to [1, C] (a view)."""
    from mcutrain.engine.frontend import graph_from_qmodel  # noqa: PLC0415
    return _replace_zoo_pool(graph_from_qmodel(qmodel, plan))


def _replace_zoo_pool(graph: Graph) -> Graph:
    ops, t = [], dict(graph.tensors)
    for op in graph.ops:
        if op.kind != "avgpool":
            ops.append(op)
            continue
        (x,) = op.inputs
        info = t[x]
        n, c, h, w = info.shape
        _tensor(t, "pool4", (n, c, 1, 1), "int8", "activation", info.scale, info.zero)
        _tensor(t, op.outputs[0], (n, c), "int8", "activation", info.scale, info.zero)
        ops.append(Op("pool", "tfl_avgpool", (x,), ("pool4",), make_attrs(
            kernel=(h, w), strides=(1, 1), pads=(0, 0, 0, 0), qmin=-128, qmax=127, x_scale=info.scale,
            y_scale=info.scale)))
        ops.append(Op("flatten", "reshape", ("pool4",), op.outputs, make_attrs(channels_last=True)))
    return verify(graph.with_ops(ops, tensors=t))
