"""Write a QGraph as a full-int8 .tflite flatbuffer that LiteRT and TensorFlow Lite Micro run.

Why: the tests need synthetic TFLite models covering every operator and option (no converter is
installed, and a converter would choose the quantization itself), and export (issue 13 item 3) needs
the same writer. The mapping is the inverse of ``mcutrain.quant.from_tflite``: NCHW -> NHWC, conv
weights OIHW -> OHWI, depthwise O1HW -> 1HWO, explicit padding -> SAME or VALID (whichever gives it;
any other padding, PyTorch's symmetric padding at stride 2 say, -> a PAD operator (it pads with the
zero point, as the graph does) and a VALID conv), the clamp range -> a fused activation.
So ``graph_from_tflite(parse_tflite(graph_to_tflite(g))) == g`` for every graph TFLite can express
(``from_tflite`` folds a PAD back into the conv it feeds).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from mcutrain.errors import one_line
from mcutrain.io.atomic import atomic_write_bytes
from mcutrain.models.tflite.reader import TfliteError
from mcutrain.quant.graph import GraphTensor, Node, QGraph
from mcutrain.quant.qmodel import QTensor

_OPS = {"conv2d": "CONV_2D", "add": "ADD", "avgpool": "AVERAGE_POOL_2D", "maxpool": "MAX_POOL_2D",
        "mean": "MEAN", "fully_connected": "FULLY_CONNECTED", "reshape": "RESHAPE", "softmax": "SOFTMAX"}
_INT8, _INT32 = 9, 2


class TfliteExportError(TfliteError):
    """A graph that TFLite cannot express (a padding that is neither SAME nor VALID, say)."""


def write_tflite(graph: QGraph, path: str | Path, description: str = "mcutrain") -> None:
    """Write ``graph`` to ``path`` atomically."""
    atomic_write_bytes(path, graph_to_tflite(graph, description))


def graph_to_tflite(graph: QGraph, description: str = "mcutrain") -> bytes:
    """The bytes of a .tflite file holding ``graph`` (validated first)."""
    graph.validate()
    return _Writer(graph).build(description)


def _nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


def activation_code(qmin: int, qmax: int, y: QTensor, where: str) -> int:
    """The fused activation whose TFLite clamp range is exactly (qmin, qmax)."""
    from mcutrain.quant.from_tflite import fused_clamp

    for code in (0, 1, 3):
        if fused_clamp(code, y, where) == (qmin, qmax):
            return code
    raise TfliteExportError(f"{where}: clamp range [{qmin}, {qmax}] is none of no activation, RELU, RELU6")


def _says_padding(p, x: GraphTensor) -> bool:
    """Whether SAME or VALID gives the conv's padding."""
    try:
        padding_code(p.padding, x.shape[2:], p.kernel_hw, p.strides, "")
    except TfliteExportError:
        return False
    return True


def padding_code(pad, hw, kernel, strides, where: str) -> int:
    """0 (SAME) or 1 (VALID): the TFLite padding mode that gives exactly ``pad``."""
    from mcutrain.quant.from_tflite import same_padding

    if tuple(pad) == (0, 0, 0, 0):
        return 1
    same = tuple(x for s, k, st in zip(hw, kernel, strides) for x in same_padding(s, k, st)[1:])
    if tuple(pad) == same:
        return 0
    raise TfliteExportError(f"{where}: padding {tuple(pad)} is neither SAME {same} nor VALID")


class _Writer:
    def __init__(self, graph: QGraph) -> None:
        import flatbuffers

        self.g = graph
        self.b = flatbuffers.Builder(1 << 16)
        self.buffers: list[bytes] = [b""]  # buffer 0: the schema's empty sentinel
        self.tensors: list[int] = []  # offsets of Tensor tables
        self.index: dict[str, int] = {}
        self.opcodes: list[str] = []

    # -- tensors --------------------------------------------------------------------------------

    def _quant(self, scales, zeros, qdim: int = 0) -> int:
        import tflite

        b = self.b
        scale_vec = b.CreateNumpyVector(np.asarray(scales, np.float32))
        zero_vec = b.CreateNumpyVector(np.asarray(zeros, np.int64))
        tflite.QuantizationParametersStart(b)
        tflite.QuantizationParametersAddScale(b, scale_vec)
        tflite.QuantizationParametersAddZeroPoint(b, zero_vec)
        tflite.QuantizationParametersAddQuantizedDimension(b, qdim)
        return tflite.QuantizationParametersEnd(b)

    def _tensor(self, name: str, shape, ttype: int, quant: int | None, data: bytes | None) -> int:
        import tflite

        b = self.b
        buffer = 0
        if data is not None:
            buffer = len(self.buffers)
            self.buffers.append(data)
        name_off = b.CreateString(name)
        shape_vec = b.CreateNumpyVector(np.asarray(shape, np.int32))
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape_vec)
        tflite.TensorAddType(b, ttype)
        tflite.TensorAddBuffer(b, buffer)
        tflite.TensorAddName(b, name_off)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        self.tensors.append(tflite.TensorEnd(b))
        return len(self.tensors) - 1

    def activation(self, t: GraphTensor) -> int:
        self.index[t.name] = self._tensor(t.name, _nhwc(t.shape), _INT8, self._quant([t.q.scale], [t.q.zero]), None)
        return self.index[t.name]

    def constant(self, name: str, values: np.ndarray, scales=None, qdim: int = 0) -> int:
        ttype = _INT8 if values.dtype == np.int8 else _INT32
        quant = None if scales is None else self._quant(scales, [0] * len(scales), qdim)
        little_endian = np.ascontiguousarray(values).astype("<" + values.dtype.str[1:])
        return self._tensor(name, values.shape, ttype, quant, little_endian.tobytes())

    # -- operators ------------------------------------------------------------------------------

    def _options(self, cls: str, fields: dict, vectors: dict | None = None) -> int:
        import tflite

        b = self.b
        vecs = {k: b.CreateNumpyVector(np.asarray(v, np.int32)) for k, v in (vectors or {}).items()}
        getattr(tflite, cls + "Start")(b)
        for key, value in fields.items():
            getattr(tflite, f"{cls}Add{key}")(b, value)
        for key, off in vecs.items():
            getattr(tflite, f"{cls}Add{key}")(b, off)
        return getattr(tflite, cls + "End")(b)

    def operators(self, i: int, node: Node) -> list[int]:
        """The operator(s) of one node: a conv whose padding is neither SAME nor VALID (PyTorch's
        symmetric padding at stride 2, say) becomes PAD (which pads with the zero point, as the graph
        does) then a VALID conv."""
        where, x = f"node {i} ({node.kind} '{node.name}')", self.g.tensor[node.inputs[0]]
        if node.kind == "conv2d" and not _says_padding(node.params, x):
            x, pad_op = self._pad(node)
            node = Node(node.kind, node.name, (x.name,) + node.inputs[1:], node.output,
                        replace(node.params, pad=(0, 0, 0, 0)))
            return [pad_op, self._operator(node, *self._op_inputs(node, x, where))]
        return [self._operator(node, *self._op_inputs(node, x, where))]

    def _pad(self, node: Node) -> tuple[GraphTensor, int]:
        """A PAD operator from the conv's input to a new tensor of the padded shape: (that tensor, the op)."""
        import tflite

        x, (top, bottom, left, right) = self.g.tensor[node.inputs[0]], node.params.padding
        n, c, h, w = x.shape
        padded = GraphTensor(f"{node.name}/padded", (n, c, h + top + bottom, w + left + right), x.q)
        self.activation(padded)
        paddings = self.constant(f"{node.name}/paddings", np.array([[0, 0], [top, bottom], [left, right], [0, 0]],
                                                                    np.int32))
        options = (tflite.BuiltinOptions.PadOptions, self._options("PadOptions", {}))
        return padded, self._operator(Node("pad", padded.name, (x.name,), padded.name),
                                           "PAD", [self.index[x.name], paddings], options)

    def _operator(self, node: Node, op: str, inputs: list[int], opts) -> int:
        import tflite

        otype, options = opts
        if op not in self.opcodes:
            self.opcodes.append(op)
        b = self.b
        in_vec = b.CreateNumpyVector(np.asarray(inputs, np.int32))
        out_vec = b.CreateNumpyVector(np.asarray([self.index[node.output]], np.int32))
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, self.opcodes.index(op))
        tflite.OperatorAddInputs(b, in_vec)
        tflite.OperatorAddOutputs(b, out_vec)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, otype)
            tflite.OperatorAddBuiltinOptions(b, options)
        return tflite.OperatorEnd(b)

    def _op_inputs(self, node: Node, x: GraphTensor, where: str):
        """(TFLite op name, input tensor indices, options) of ``node``, whose first input is ``x``."""
        import tflite

        p, ins = node.params, [self.index[n] for n in node.inputs]
        kinds = tflite.BuiltinOptions
        if node.kind == "conv2d":
            return self._conv(node, p, ins, x, where)
        if node.kind == "add":
            act = activation_code(p.qmin, p.qmax, p.y, where)
            return "ADD", ins, (kinds.AddOptions, self._options("AddOptions", {"FusedActivationFunction": act}))
        if node.kind in ("avgpool", "maxpool"):
            fields = {"Padding": padding_code(p.pad, x.shape[2:], p.kernel, p.strides, where),
                      "StrideH": p.strides[0], "StrideW": p.strides[1], "FilterHeight": p.kernel[0],
                      "FilterWidth": p.kernel[1],
                      "FusedActivationFunction": activation_code(p.qmin, p.qmax, p.y, where)}
            return _OPS[node.kind], ins, (kinds.Pool2DOptions, self._options("Pool2DOptions", fields))
        if node.kind == "mean":
            axis = self.constant(f"{node.name}/axis", np.array([1, 2], np.int32))
            options = self._options("ReducerOptions", {"KeepDims": p.keep_dims})
            return "MEAN", ins + [axis], (kinds.ReducerOptions, options)
        if node.kind == "fully_connected":
            return self._fully_connected(node, p, ins, where)
        if node.kind == "reshape":
            return self._reshape(node, p, ins, x, where)
        return "SOFTMAX", ins, (kinds.SoftmaxOptions, self._options("SoftmaxOptions", {"Beta": p.beta}))

    def _conv(self, node: Node, p, ins: list[int], x: GraphTensor, where: str):
        import tflite

        if p.depthwise:
            weight, qdim = p.weight[:, 0].transpose(1, 2, 0)[None], 3  # O1HW -> 1HWO
            op, cls = "DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions"
        else:
            weight, qdim = p.weight.transpose(0, 2, 3, 1), 0  # OIHW -> OHWI
            op, cls = "CONV_2D", "Conv2DOptions"
        w = self.constant(f"{node.name}/weight", np.ascontiguousarray(weight), p.w_scale, qdim)
        bias_scales = (np.float64(p.x.scale) * p.w_scale.astype(np.float64)).astype(np.float32)
        bias = self.constant(f"{node.name}/bias", np.asarray(p.bias, np.int32), bias_scales, 0)
        fields = {"Padding": padding_code(p.padding, x.shape[2:], p.kernel_hw, p.strides, where),
                  "StrideH": p.strides[0], "StrideW": p.strides[1], "DilationHFactor": 1, "DilationWFactor": 1,
                  "FusedActivationFunction": activation_code(p.qmin, p.qmax, p.y, where)}
        if p.depthwise:
            fields["DepthMultiplier"] = 1
        return op, ins + [w, bias], (getattr(tflite.BuiltinOptions, cls), self._options(cls, fields))

    def _fully_connected(self, node: Node, p, ins: list[int], where: str):
        import tflite

        w = self.constant(f"{node.name}/weight", np.asarray(p.weight, np.int8), p.w_scale, 0)
        inputs = ins + [w]
        if p.bias is not None:
            bias_scales = (np.float64(p.x.scale) * p.w_scale.astype(np.float64)).astype(np.float32)
            inputs.append(self.constant(f"{node.name}/bias", np.asarray(p.bias, np.int32), bias_scales, 0))
        fields = {"FusedActivationFunction": activation_code(p.qmin, p.qmax, p.y, where), "KeepNumDims": False}
        return "FULLY_CONNECTED", inputs, (tflite.BuiltinOptions.FullyConnectedOptions,
                                           self._options("FullyConnectedOptions", fields))

    def _reshape(self, node: Node, p, ins: list[int], x: GraphTensor, where: str):
        import tflite

        out = self.g.tensor[node.output]
        if len(out.shape) != 2:
            raise TfliteExportError(f"{where}: reshape to {out.shape}; only flattening to [N, K] is written")
        order_matters = len(x.shape) == 4 and x.shape[2] * x.shape[3] > 1 and x.shape[1] > 1
        if order_matters and not p.channels_last:
            raise TfliteExportError(f"{where}: a channels-first flatten needs a TRANSPOSE, not supported")
        shape = self.constant(f"{node.name}/shape", np.asarray(out.shape, np.int32))
        return "RESHAPE", ins + [shape], (tflite.BuiltinOptions.ReshapeOptions,
                                          self._options("ReshapeOptions", {}, {"NewShape": list(out.shape)}))

    # -- model ----------------------------------------------------------------------------------

    def _vector(self, start, offsets: list[int]) -> int:
        start(self.b, len(offsets))
        for off in reversed(offsets):
            self.b.PrependUOffsetTRelative(off)
        return self.b.EndVector()

    def build(self, description: str) -> bytes:
        import tflite

        from mcutrain.models.tflite.reader import _BUILTIN_NAMES

        b, g = self.b, self.g
        for t in g.tensors:
            self.activation(t)
        ops = [op for i, n in enumerate(g.nodes) for op in self.operators(i, n)]
        codes_by_name = {v: k for k, v in _BUILTIN_NAMES().items()}
        opcode_offs = []
        for name in self.opcodes:
            code = codes_by_name[name]
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, 1)
            opcode_offs.append(tflite.OperatorCodeEnd(b))
        buffer_offs = []
        for data in self.buffers:
            vec = b.CreateByteVector(data) if data else None
            tflite.BufferStart(b)
            if vec is not None:
                tflite.BufferAddData(b, vec)
            buffer_offs.append(tflite.BufferEnd(b))
        tensors = self._vector(tflite.SubGraphStartTensorsVector, self.tensors)
        operators = self._vector(tflite.SubGraphStartOperatorsVector, ops)
        inputs = b.CreateNumpyVector(np.asarray([self.index[g.input]], np.int32))
        outputs = b.CreateNumpyVector(np.asarray([self.index[g.output]], np.int32))
        sub_name = b.CreateString("main")
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensors)
        tflite.SubGraphAddInputs(b, inputs)
        tflite.SubGraphAddOutputs(b, outputs)
        tflite.SubGraphAddOperators(b, operators)
        tflite.SubGraphAddName(b, sub_name)
        subgraph = tflite.SubGraphEnd(b)
        subgraphs = self._vector(tflite.ModelStartSubgraphsVector, [subgraph])
        codes = self._vector(tflite.ModelStartOperatorCodesVector, opcode_offs)
        buffers = self._vector(tflite.ModelStartBuffersVector, buffer_offs)
        desc = b.CreateString(one_line(description))
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, codes)
        tflite.ModelAddSubgraphs(b, subgraphs)
        tflite.ModelAddBuffers(b, buffers)
        tflite.ModelAddDescription(b, desc)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())
