"""Map a parsed full-int8 TFLite model onto a QGraph, exactly (no re-quantization, no float rounding).

Why: importing a model must keep every integer TFLite computes with, so that mcutrain's int8 forward
equals TensorFlow Lite's bit for bit. The mapping is a change of layout only: NHWC activations become
NCHW, CONV_2D weights OHWI become OIHW, DEPTHWISE_CONV_2D weights 1HWO become O1HW; per-channel int8
weight scales, int32 biases, padding (TFLite's SAME: the odd extra row/column at the bottom/right),
strides and fused activations are carried over as they are. Anything the graph cannot express exactly
is refused with one line naming the operator, its position and its tensors.
"""

from __future__ import annotations

import numpy as np

from mcutrain.errors import one_line
from mcutrain.models.tflite.reader import TfliteError, TfliteModel, TfliteOperator, TfliteTensor, read_tflite
from mcutrain.quant.graph import FullyConnected, GraphError, GraphTensor, Mean, Node, Pool2d, QGraph, Reshape, Softmax
from mcutrain.quant.qmodel import QAdd, QConv, QTensor

_ACTIVATIONS = {0: "none", 1: "RELU", 3: "RELU6"}
_SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN",
              "FULLY_CONNECTED", "RESHAPE", "SOFTMAX", "PAD")
_PAD_READERS = ("CONV_2D", "DEPTHWISE_CONV_2D")  # a PAD is folded into the convolution it feeds


class UnsupportedOp(TfliteError):
    """An operator or option that mcutrain's int8 graph cannot express exactly."""


def load_tflite_graph(path) -> QGraph:
    """Read ``path`` and map it: the one call an importer needs."""
    return graph_from_tflite(read_tflite(path), source=str(path))


def graph_from_tflite(model: TfliteModel, source: str = "model") -> QGraph:
    mapper = _Mapper(model)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise TfliteError(f"{len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                          "only one input and one output are supported")
    inp = model.tensors[model.inputs[0]]
    if len(inp.shape) != 4:
        raise TfliteError(f"input '{inp.name}' has shape {inp.shape}; expected NHWC [N, H, W, C]")
    mapper.activation(inp.index)
    nodes = tuple(node for op in model.operators if (node := mapper.node(op)) is not None)
    if model.outputs[0] not in mapper.tensors or not nodes:
        raise TfliteError(f"output tensor {model.outputs[0]} is not computed by any operator")
    graph = QGraph(tuple(mapper.tensors.values()), nodes, mapper.name(inp.index),
                   mapper.name(model.outputs[0]), {"source": one_line(source), "format": "tflite"})
    try:
        return graph.validate()
    except GraphError as e:
        raise TfliteError(f"{one_line(source)}: {e}") from None


def fused_clamp(code: int, y: QTensor, where: str) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized: RELU clamps at the zero point, RELU6 at quantize(6)."""
    if code not in _ACTIVATIONS:
        raise UnsupportedOp(f"{where}: fused activation {code}; supported: none, RELU, RELU6")
    qmin, qmax = -128, 127
    if code in (1, 3):
        qmin = max(qmin, y.zero)
    if code == 3:
        six = np.float32(6.0) / np.float32(y.scale)  # float32 division, as TFLite computes it
        qmax = min(qmax, y.zero + int(np.sign(six) * np.floor(np.abs(six) + np.float32(0.5))))
    if qmin > qmax:
        raise UnsupportedOp(f"{where}: activation range [{qmin}, {qmax}] is empty")
    return qmin, qmax


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TFLite SAME: out = ceil(size / stride); the odd extra padding row goes after (bottom/right)."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def check_arithmetic(kind: str, p, where: str) -> None:
    """Derive the fixed-point constants now, so absurd scales are refused here and not in a forward."""
    from mcutrain.quant.fixedpoint import quantize_multiplier
    from mcutrain.quant.int8_ops import add_params

    try:
        if kind in ("conv2d", "fully_connected"):
            p.requant  # noqa: B018 - the property derives (and range-checks) the multipliers
        elif kind == "add":
            add_params(p.a.scale, p.a.zero, p.b.scale, p.b.zero, p.y.scale, p.y.zero, p.qmin, p.qmax)
        elif kind == "mean":
            quantize_multiplier(p.x.scale / p.y.scale)
    except (ValueError, OverflowError, ZeroDivisionError) as e:
        why = one_line(str(e))[:100]
        raise UnsupportedOp(f"{where}: scales outside what int8 arithmetic can rescale ({why})") from None


class _Mapper:
    def __init__(self, model: TfliteModel) -> None:
        self.model = model
        self.tensors: dict[int, GraphTensor] = {}
        self._names: set[str] = set()
        self.pads: dict[int, tuple[int, tuple[int, int, int, int]]] = {}  # PAD output -> (its input, padding)

    # -- tensors --------------------------------------------------------------------------------

    def name(self, index: int) -> str:
        return self.tensors[index].name

    def activation(self, index: int, where: str = "input") -> GraphTensor:
        """The graph tensor of an int8 activation (NHWC -> NCHW), made on first use."""
        if index in self.tensors:
            return self.tensors[index]
        t = self.model.tensors[index]
        if t.dtype != "int8" or t.data is not None:
            raise UnsupportedOp(f"{where}: tensor {index} '{t.name}' is {t.dtype}"
                                f"{' constant' if t.data is not None else ''}; expected an int8 activation")
        if len(t.scales) != 1 or len(t.zero_points) != 1 or not 1e-30 < t.scales[0] < 1e30:
            raise UnsupportedOp(f"{where}: tensor {index} '{t.name}' is not quantized per tensor")
        if not -128 <= t.zero_points[0] <= 127:
            raise TfliteError(f"{where}: tensor {index} '{t.name}' zero point {t.zero_points[0]} outside int8")
        shape = (t.shape[0], t.shape[3], t.shape[1], t.shape[2]) if len(t.shape) == 4 else t.shape
        if len(shape) not in (2, 4):
            raise UnsupportedOp(f"{where}: tensor {index} '{t.name}' of rank {len(shape)}; expected 2 or 4")
        name = t.name if t.name not in self._names else f"{t.name}#{index}"
        self._names.add(name)
        self.tensors[index] = GraphTensor(name, tuple(shape), QTensor(t.scales[0], t.zero_points[0]))
        return self.tensors[index]

    def constant(self, index: int, dtype: str, where: str, role: str) -> TfliteTensor:
        t = self.model.tensors[index] if index >= 0 else None
        if t is None or t.data is None or t.dtype != dtype:
            what = "absent" if t is None else f"{t.dtype}{'' if t.data is not None else ' without data'}"
            raise UnsupportedOp(f"{where}: {role} is {what}; expected a constant {dtype} tensor")
        return t

    # -- operators ------------------------------------------------------------------------------

    def where(self, op: TfliteOperator) -> str:
        names = lambda idx: ", ".join(f"{i} '{self.model.tensors[i].name}'" if i >= 0 else "-" for i in idx)  # noqa
        return f"operator {op.index} ({op.op}; inputs [{names(op.inputs)}], outputs [{names(op.outputs)}])"

    def node(self, op: TfliteOperator) -> Node | None:
        """The graph node of ``op``; None for a PAD, which the convolution it feeds absorbs."""
        where = self.where(op)
        if op.op not in _SUPPORTED:
            raise UnsupportedOp(f"{where}: unsupported operator; supported: {', '.join(_SUPPORTED)}")
        if len(op.outputs) != 1 or not op.inputs:
            raise UnsupportedOp(f"{where}: expected inputs and exactly one output")
        if any(i in self.pads for i in op.inputs) and op.op not in _PAD_READERS:
            raise UnsupportedOp(f"{where}: reads a PAD's output; a PAD may only feed a convolution")
        padded = self.pads.get(op.inputs[0])
        first = padded[0] if padded else op.inputs[0]
        x = self.activation(first, where) if first in self.tensors else None
        if x is None:
            raise TfliteError(f"{where}: input tensor {op.inputs[0]} is not computed by an earlier operator")
        if op.op == "PAD":
            self.pads[op.outputs[0]] = self._pad(op, x, where)
            return None
        reader = getattr(self, "_" + op.op.lower())
        kind, params, extra = reader(op, x, where, padded[1]) if padded else reader(op, x, where)
        y = self.activation(op.outputs[0], where)
        params = params(y)
        check_arithmetic(kind, params, where)
        return Node(kind, y.name, (x.name,) + extra, y.name, params)

    def _pad(self, op, x: GraphTensor, where: str) -> tuple[int, tuple[int, int, int, int]]:
        """PAD (with the zero point) of H and W only, output quantized as its input: (input, padding)."""
        paddings = self.constant(op.inputs[1] if len(op.inputs) == 2 else -1, "int32", where, "the paddings")
        p = np.asarray(paddings.data).reshape(-1)
        out = self.model.tensors[op.outputs[0]]
        if p.size != 8 or len(x.shape) != 4 or p[0] or p[1] or p[6] or p[7] or (p < 0).any() or p.max() > 4096:
            raise UnsupportedOp(f"{where}: PAD of {p.tolist()}; only non-negative padding of H and W (at most 4096)")
        if list(out.scales) != [x.q.scale] or list(out.zero_points) != [x.q.zero]:
            raise UnsupportedOp(f"{where}: PAD changes the quantization")
        return op.inputs[0], (int(p[2]), int(p[3]), int(p[4]), int(p[5]))

    def _conv_2d(self, op, x, where, padded=None):
        return self._conv(op, x, where, depthwise=False, padded=padded)

    def _depthwise_conv_2d(self, op, x, where, padded=None):
        return self._conv(op, x, where, depthwise=True, padded=padded)

    def _conv(self, op, x: GraphTensor, where: str, depthwise: bool, padded=None):
        """``padded``: the (top, bottom, left, right) of a PAD in front, added to the conv's own."""
        o = op.options
        if o.get("DilationHFactor", 1) != 1 or o.get("DilationWFactor", 1) != 1:
            raise UnsupportedOp(f"{where}: dilation {o.get('DilationHFactor')}x{o.get('DilationWFactor')}; only 1")
        if len(op.inputs) < 2:
            raise UnsupportedOp(f"{where}: no weights")
        w = self.constant(op.inputs[1], "int8", where, "the weight")
        if len(w.shape) != 4:
            raise UnsupportedOp(f"{where}: weights of shape {w.shape}")
        c_in = x.shape[1]
        if depthwise:
            if o.get("DepthMultiplier", 1) not in (0, 1) or w.shape[0] != 1 or w.shape[3] != c_in:
                raise UnsupportedOp(f"{where}: depth multiplier != 1 (weights {w.shape}, {c_in} input channels)")
            weight, groups, qdim = np.ascontiguousarray(w.data[0].transpose(2, 0, 1)[:, None]), c_in, 3
        else:
            if w.shape[3] != c_in:
                raise UnsupportedOp(f"{where}: grouped convolution (weights {w.shape}, {c_in} input channels)")
            weight, groups, qdim = np.ascontiguousarray(w.data.transpose(0, 3, 1, 2)), 1, 0
        out_ch = weight.shape[0]
        w_scale = self._weight_scales(w, out_ch, qdim, where)
        bias = self._bias(op, out_ch, where)
        (sh, sw), (kh, kw) = self._strides(o, where), weight.shape[2:]
        extra = padded or (0, 0, 0, 0)
        hw = (x.shape[2] + extra[0] + extra[1], x.shape[3] + extra[2] + extra[3])
        own = self._padding(o["Padding"] if "Padding" in o else 0, hw, (kh, kw), (sh, sw), where)
        pad = tuple(a + b for a, b in zip(own, extra))
        act = int(o.get("FusedActivationFunction", 0))

        def make(y: GraphTensor) -> QConv:
            qmin, qmax = fused_clamp(act, y.q, where)
            return QConv(y.name, sh, groups, weight, bias, w_scale, x.q, y.q, qmin, qmax, (), sw, pad)

        return "conv2d", make, ()

    def _weight_scales(self, w: TfliteTensor, out_ch: int, qdim: int, where: str) -> np.ndarray:
        scales, zeros = w.scales, w.zero_points
        if any(z != 0 for z in zeros):
            raise UnsupportedOp(f"{where}: weight zero points must be 0 (symmetric int8)")
        if len(scales) == 1:
            scales = scales * out_ch
        elif len(scales) != out_ch or w.quantized_dimension != qdim:
            raise UnsupportedOp(f"{where}: {len(scales)} weight scales on dimension {w.quantized_dimension} "
                                f"for {out_ch} output channels")
        arr = np.asarray(scales, np.float32)
        if not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
            raise TfliteError(f"{where}: weight scales must be finite and > 0")
        return arr

    def _bias(self, op, out_ch: int, where: str) -> np.ndarray | None:
        if len(op.inputs) < 3 or op.inputs[2] < 0:
            return np.zeros(out_ch, np.int32)
        b = self.constant(op.inputs[2], "int32", where, "the bias")
        if b.shape != (out_ch,):
            raise UnsupportedOp(f"{where}: bias of shape {b.shape} for {out_ch} output channels")
        return np.array(b.data, np.int32)

    def _strides(self, o: dict, where: str) -> tuple[int, int]:
        sh, sw = int(o.get("StrideH", 1)), int(o.get("StrideW", 1))
        if not (1 <= sh <= 16 and 1 <= sw <= 16):
            raise UnsupportedOp(f"{where}: strides {sh}x{sw} outside [1, 16]")
        return sh, sw

    def _padding(self, mode: int, hw, kernel, strides, where: str) -> tuple[int, int, int, int]:
        if mode == 1:  # VALID
            return 0, 0, 0, 0
        if mode != 0:
            raise UnsupportedOp(f"{where}: padding mode {mode}; supported: SAME, VALID")
        (_, top, bottom), (_, left, right) = (same_padding(s, k, st) for s, k, st in zip(hw, kernel, strides))
        return top, bottom, left, right

    def _add(self, op, a: GraphTensor, where: str):
        if len(op.inputs) != 2 or op.inputs[1] not in self.tensors:
            raise UnsupportedOp(f"{where}: ADD needs two computed activations (constants are not supported)")
        b = self.tensors[op.inputs[1]]
        act = int(op.options.get("FusedActivationFunction", 0))

        def make(y: GraphTensor) -> QAdd:
            qmin, qmax = fused_clamp(act, y.q, where)
            return QAdd(a.q, b.q, y.q, qmin, qmax)

        return "add", make, (b.name,)

    def _average_pool_2d(self, op, x, where):
        return self._pool(op, x, where, "avgpool")

    def _max_pool_2d(self, op, x, where):
        return self._pool(op, x, where, "maxpool")

    def _pool(self, op, x: GraphTensor, where: str, kind: str):
        o = op.options
        kernel = int(o.get("FilterHeight", 0)), int(o.get("FilterWidth", 0))
        if len(x.shape) != 4 or not (1 <= min(kernel) and max(kernel) <= 4096):
            raise UnsupportedOp(f"{where}: window {kernel} on input {x.shape}")
        strides = self._strides(o, where)
        pad = self._padding(o.get("Padding", 0), x.shape[2:], kernel, strides, where)
        act = int(o.get("FusedActivationFunction", 0))

        def make(y: GraphTensor) -> Pool2d:
            if y.q != x.q:  # TFLite's int8 pools do not rescale: they assume one quantization
                raise UnsupportedOp(f"{where}: input and output quantization differ ({x.q} vs {y.q})")
            qmin, qmax = fused_clamp(act, y.q, where)
            return Pool2d(kernel, strides, pad, x.q, y.q, qmin, qmax)

        return kind, make, ()

    def _mean(self, op, x: GraphTensor, where: str):
        axis = self.constant(op.inputs[1], "int32", where, "the axis") if len(op.inputs) == 2 else None
        axes = sorted({int(a) % 4 for a in axis.data.ravel()}) if axis is not None and len(x.shape) == 4 else []
        if axes != [1, 2]:  # NHWC axes 1, 2 are H and W
            raise UnsupportedOp(f"{where}: MEAN only over H and W of a 4-D tensor")
        keep = bool(op.options.get("KeepDims", False))
        return "mean", lambda y: Mean(x.q, y.q, keep), ()

    def _fully_connected(self, op, x: GraphTensor, where: str):
        o = op.options
        if o.get("WeightsFormat", 0) != 0 or o.get("AsymmetricQuantizeInputs", False):
            raise UnsupportedOp(f"{where}: only default-format int8 weights are supported")
        if len(x.shape) != 2:
            raise UnsupportedOp(f"{where}: input of shape {x.shape}; expected [N, C] (add a RESHAPE)")
        w = self.constant(op.inputs[1] if len(op.inputs) > 1 else -1, "int8", where, "the weight")
        if len(w.shape) != 2 or w.shape[1] != x.shape[1]:
            raise UnsupportedOp(f"{where}: weights of shape {w.shape} for input {x.shape}")
        k = w.shape[0]
        w_scale = self._weight_scales(w, k, 0, where)
        if len(w.scales) == 1:
            w_scale = w_scale[:1]
        bias = self._bias(op, k, where) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        weight = np.array(w.data, np.int8)
        act = int(o.get("FusedActivationFunction", 0))

        def make(y: GraphTensor) -> FullyConnected:
            qmin, qmax = fused_clamp(act, y.q, where)
            return FullyConnected(weight, bias, w_scale, x.q, y.q, qmin, qmax)

        return "fully_connected", make, ()

    def _reshape(self, op, x: GraphTensor, where: str):
        out = self.model.tensors[op.outputs[0]]
        if len(out.shape) != 2:
            raise UnsupportedOp(f"{where}: RESHAPE to {out.shape}; only flattening to [N, K] is supported")
        channels_last = len(x.shape) == 4 and x.shape[2] * x.shape[3] > 1 and x.shape[1] > 1
        return "reshape", lambda y: Reshape(channels_last), ()

    def _softmax(self, op, x: GraphTensor, where: str):
        beta = float(op.options.get("Beta", 1.0))
        return "softmax", lambda y: Softmax(beta, x.q, y.q), ()
