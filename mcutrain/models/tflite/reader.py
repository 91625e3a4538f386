"""Read a .tflite flatbuffer into plain frozen dataclasses, refusing hostile input with one clean error.

Why: a user brings a full-int8 TFLite model (what TensorFlow Lite Micro runs) and mcutrain must read
it without trusting it. The flatbuffer is parsed with the pinned schema bindings (PyPI ``tflite``);
every number read from it is checked before it is used as a size or an index, so truncated or
corrupted files end in a ``TfliteError`` (one line) and never in a crash, a huge allocation or a hang.
What is read here is only the file's content (tensors, operators, options); mapping it onto mcutrain's
int8 graph, and refusing what that graph cannot express, is ``mcutrain.quant.from_tflite``'s job.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcutrain.errors import CheckpointError, one_line

MAX_FILE_BYTES = 16 * 1024 * 1024
"""Largest .tflite accepted: TinyML models are far below; a bigger file is refused before parsing."""
MAX_ITEMS = 100_000
"""Most tensors, operators or buffers in one model (a bound on the work a forged length can cause)."""
MAX_RANK = 8

_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16",
           9: "int8", 10: "float64", 16: "uint16", 15: "uint32", 12: "uint64"}


class TfliteError(CheckpointError):
    """A .tflite file is corrupt, foreign, or uses something mcutrain cannot import."""


@dataclass(frozen=True, eq=False)
class TfliteTensor:
    """One tensor of the subgraph (NHWC as stored). ``data`` is set for constants (weights, biases)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name ("int8", "int32", ...); "type<N>" for types mcutrain cannot use
    scales: tuple[float, ...]  # float32 values as Python floats; () when not quantized
    zero_points: tuple[int, ...]
    quantized_dimension: int
    data: np.ndarray | None  # read-only, in ``shape``; None for activations


@dataclass(frozen=True)
class TfliteOperator:
    index: int  # position in the subgraph's execution order
    op: str  # builtin operator name, e.g. "CONV_2D"
    inputs: tuple[int, ...]  # tensor indices; -1 marks an omitted optional input
    outputs: tuple[int, ...]
    options: dict  # the builtin options table as {field name: value}, e.g. {"Padding": 0, "StrideW": 2}


@dataclass(frozen=True)
class TfliteModel:
    tensors: tuple[TfliteTensor, ...]
    operators: tuple[TfliteOperator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    version: int
    description: str


def read_tflite(path: str | Path) -> TfliteModel:
    """Read and check ``path`` (a .tflite file of at most 16 MiB)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise TfliteError(f"{one_line(str(path))}: {size} bytes, over the limit of {MAX_FILE_BYTES} (16 MiB)")
        data = path.read_bytes()
    except OSError as e:
        raise TfliteError(f"cannot read {one_line(str(path))}: {one_line(e.strerror or str(e))}") from None
    return parse_tflite(data, source=str(path))


def parse_tflite(data: bytes, source: str = "model") -> TfliteModel:
    """Parse the bytes of a .tflite file; every failure is a one-line ``TfliteError``."""
    where = one_line(source)
    if len(data) > MAX_FILE_BYTES:
        raise TfliteError(f"{where}: {len(data)} bytes, over the limit of {MAX_FILE_BYTES} (16 MiB)")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TfliteError(f"{where}: not a TFLite flatbuffer (no 'TFL3' identifier at byte 4)")
    data = bytes(data)
    try:
        return _parse(data)
    except TfliteError as e:
        raise TfliteError(f"{where}: {e}") from None
    except (struct.error, IndexError, ValueError, TypeError, AttributeError, OverflowError,
            UnicodeDecodeError, RecursionError, MemoryError, KeyError, AssertionError) as e:
        # The flatbuffer library reads offsets as they are: a corrupt file ends in one of these.
        raise TfliteError(f"{where}: corrupt flatbuffer ({type(e).__name__}: {one_line(str(e))[:120]})") from None


def _parse(buf: bytes) -> TfliteModel:
    import tflite

    model = tflite.Model.GetRootAs(buf, 0)
    n_sub = _count(model.SubgraphsLength(), "subgraphs", buf)
    if n_sub != 1:
        raise TfliteError(f"{n_sub} subgraphs; only single-subgraph models are supported")
    sub = model.Subgraphs(0)
    n_buffers = _count(model.BuffersLength(), "buffers", buf)
    opcodes = [_opcode_name(model.OperatorCodes(i)) for i in range(_count(model.OperatorCodesLength(),
                                                                         "operator codes", buf))]
    n_tensors = _count(sub.TensorsLength(), "tensors", buf)
    tensors = tuple(_tensor(model, sub.Tensors(i), i, n_buffers) for i in range(n_tensors))
    operators = tuple(_operator(sub.Operators(i), i, opcodes, n_tensors)
                      for i in range(_count(sub.OperatorsLength(), "operators", buf)))
    inputs = _indices(sub.InputsAsNumpy(), n_tensors, "subgraph input")
    outputs = _indices(sub.OutputsAsNumpy(), n_tensors, "subgraph output")
    desc = model.Description()
    return TfliteModel(tensors, operators, inputs, outputs, int(model.Version()),
                       one_line(desc.decode("utf-8", "replace")) if desc else "")


def _count(n: int, what: str, buf: bytes) -> int:
    # Each element of a vector of tables takes 4 bytes: a longer vector cannot fit in the file.
    if not 0 <= n <= min(MAX_ITEMS, len(buf) // 4):
        raise TfliteError(f"{n} {what}: corrupt (at most {MAX_ITEMS})")
    return n


def _opcode_name(code) -> str:
    import tflite

    value = max(int(code.DeprecatedBuiltinCode()), int(code.BuiltinCode()))
    name = _BUILTIN_NAMES().get(value)
    if name == "CUSTOM":
        custom = code.CustomCode()
        label = one_line(custom.decode("utf-8", "replace"))[:60] if custom else "?"
        raise TfliteError(f"custom operator '{label}': only TFLite builtin operators are supported")
    if name is None:
        raise TfliteError(f"unknown builtin operator code {value} (newer than tflite {tflite.__version__}?)")
    return name


_NAME_CACHE: dict[str, dict[int, str]] = {}


def _BUILTIN_NAMES() -> dict[int, str]:  # noqa: N802 - a cached constant table
    return _enum_names("BuiltinOperator")


def _enum_names(enum: str) -> dict[int, str]:
    if enum not in _NAME_CACHE:
        import tflite

        cls = getattr(tflite, enum)
        _NAME_CACHE[enum] = {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}
    return _NAME_CACHE[enum]


def _indices(values, n_tensors: int, what: str, allow_omitted: bool = False) -> tuple[int, ...]:
    arr = np.asarray(values if not isinstance(values, int) else [], dtype=np.int64).ravel()
    lo = -1 if allow_omitted else 0
    for v in arr:
        if not lo <= v < n_tensors:
            raise TfliteError(f"{what} refers to tensor {int(v)}, outside [0, {n_tensors})")
    return tuple(int(v) for v in arr)


def _tensor(model, t, index: int, n_buffers: int) -> TfliteTensor:
    raw_name = t.Name()
    name = one_line(raw_name.decode("utf-8", "replace")) if raw_name else f"tensor{index}"
    shape_arr = t.ShapeAsNumpy()
    shape = tuple(int(d) for d in (shape_arr if not isinstance(shape_arr, int) else []))
    if len(shape) > MAX_RANK or any(d < 0 for d in shape):
        raise TfliteError(f"tensor {index} '{name}' has shape {shape}: corrupt or dynamic")
    if t.Sparsity() is not None:
        raise TfliteError(f"tensor {index} '{name}' is stored sparse; only dense tensors are supported")
    ttype = int(t.Type())
    dtype = _DTYPES.get(ttype, f"type{ttype}")
    scales, zeros, qdim = _quantization(t.Quantization(), index, name)
    data = _constant_data(model, t.Buffer(), n_buffers, shape, dtype, index, name)
    return TfliteTensor(index, name, shape, dtype, scales, zeros, qdim, data)


def _quantization(q, index: int, name: str) -> tuple[tuple[float, ...], tuple[int, ...], int]:
    if q is None:
        return (), (), 0
    scale_arr, zero_arr = q.ScaleAsNumpy(), q.ZeroPointAsNumpy()
    scales = tuple(float(s) for s in (scale_arr if not isinstance(scale_arr, int) else []))
    zeros = tuple(int(z) for z in (zero_arr if not isinstance(zero_arr, int) else []))
    if scales and zeros and len(scales) != len(zeros):
        raise TfliteError(f"tensor {index} '{name}': {len(scales)} scales but {len(zeros)} zero points")
    return scales, zeros, int(q.QuantizedDimension())


def _constant_data(model, buffer_index: int, n_buffers: int, shape, dtype: str, index: int, name: str):
    if buffer_index == 0:  # buffer 0 is the schema's empty sentinel: an activation
        return None
    if not 0 <= buffer_index < n_buffers:
        raise TfliteError(f"tensor {index} '{name}' uses buffer {buffer_index}, outside [0, {n_buffers})")
    buffer = model.Buffers(buffer_index)
    if int(buffer.Offset()) > 1:
        raise TfliteError(f"tensor {index} '{name}': data outside the flatbuffer (offset buffers) unsupported")
    raw = buffer.DataAsNumpy()
    if isinstance(raw, int) or raw.size == 0:
        return None
    if dtype.startswith("type"):
        raise TfliteError(f"tensor {index} '{name}': constant of unsupported type {dtype}")
    count = int(np.prod(shape, dtype=object)) if shape else 1
    need = count * np.dtype(dtype).itemsize
    if raw.size != need:
        raise TfliteError(f"tensor {index} '{name}': buffer has {raw.size} bytes, shape {shape} "
                          f"of {dtype} needs {need}")
    values = np.frombuffer(raw.tobytes(), dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
    values.flags.writeable = False
    return values


def _operator(op, index: int, opcodes: list[str], n_tensors: int) -> TfliteOperator:
    code = int(op.OpcodeIndex())
    if not 0 <= code < len(opcodes):
        raise TfliteError(f"operator {index} uses opcode {code}, outside [0, {len(opcodes)})")
    name = opcodes[code]
    inputs = _indices(op.InputsAsNumpy(), n_tensors, f"operator {index} ({name}) input", allow_omitted=True)
    outputs = _indices(op.OutputsAsNumpy(), n_tensors, f"operator {index} ({name}) output")
    return TfliteOperator(index, name, inputs, outputs, _options(op, index, name))


_SKIP_SUFFIXES = ("AsNumpy", "IsNone", "Length", "BufferHasIdentifier")


def _options(op, index: int, name: str) -> dict:
    """The builtin options table as a dict of its scalar fields and numeric vectors."""
    import tflite

    kind = int(op.BuiltinOptionsType())
    if kind == 0:
        return {}
    type_name = _enum_names("BuiltinOptions").get(kind)
    cls = getattr(tflite, type_name, None) if type_name else None
    table = op.BuiltinOptions()
    if cls is None or table is None:
        raise TfliteError(f"operator {index} ({name}): unknown options type {kind}")
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    out = {}
    for field in dir(cls):
        if field.startswith(("_", "GetRootAs", "Init")) or field.endswith(_SKIP_SUFFIXES):
            continue
        if hasattr(cls, field + "AsNumpy"):
            arr = getattr(opts, field + "AsNumpy")()
            out[field] = tuple(int(v) for v in (arr if not isinstance(arr, int) else []))
        elif not hasattr(cls, field + "Length"):
            value = getattr(opts, field)()
            if isinstance(value, (int, float, bool)):
                out[field] = value
    return out
