"""The engine's one intermediate representation: a frozen graph of typed tensors and ops.

Everything the Tiny Training Engine does is a pure function Graph -> Graph over these types; nothing
mutates a graph. A tensor is declared once (``TensorInfo``) with its shape, dtype, role and
quantization; an op names its input and output tensors and carries small attributes; constants
(frozen int8 weights, multipliers, QAS factors) live beside the graph as read-only arrays.

Roles say what a tensor is for, so passes and the memory report can reason without guessing:
input, label, activation, weight, bias (trainable or frozen parameters), gradient, mask (1 bit per
element), state (optimizer state), loss, const.

A graph input named in ``Graph.streams`` is *streamed*: on the device it arrives from a sensor / DMA /
host row by row, and the op that reads it (an ``mbconv_rows`` op, see ``ops``) copies the rows it needs
into a small ring buffer of its own scratch; the input itself never occupies the arena.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import numpy as np

ROLES = ("input", "label", "activation", "weight", "bias", "gradient", "mask", "state", "loss", "const")
DTYPES = {"int8": 1, "uint8": 1, "int32": 4, "float32": 4, "int64": 8, "bit": 0,  # bytes per element; bit: packed
          "grad8": 1, "grad32": 4}  # integer gradients (``--backward int8``): + a GRAD_HEADER_BYTES header
# An integer gradient tensor (quant.int8_grad) is its exponent E (int32, little endian) followed by the
# payload: numel int8 (grad8: the value is g * 2**E) or int32 (grad32: a parameter gradient, unrounded);
# the header first keeps an int32 payload 4-byte aligned at any 4-aligned offset.
GRAD_DTYPES = {"grad8": "int8", "grad32": "int32"}  # payload element type
GRAD_HEADER_BYTES = 4


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    role: str
    scale: float | None = None  # int8 activations: real = scale * (q - zero)
    zero: int | None = None
    trainable: bool = False  # weights/biases updated on the device (they live in SRAM)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        if self.dtype == "bit":
            return (self.numel + 7) // 8
        header = GRAD_HEADER_BYTES if self.dtype in GRAD_DTYPES else 0
        return header + self.numel * DTYPES[self.dtype]

    def type_str(self) -> str:
        q = f" q(s={self.scale:.4g},z={self.zero})" if self.scale is not None else ""
        return f"{self.dtype}[{','.join(map(str, self.shape))}]{q}"


@dataclass(frozen=True)
class Op:
    name: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: tuple[tuple[str, Any], ...] = ()
    phase: str = "forward"  # forward | backward | update

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default


def make_attrs(**kw: Any) -> tuple[tuple[str, Any], ...]:
    """Attributes as a sorted tuple: hashable, printable, order-independent."""
    return tuple(sorted(kw.items()))


@dataclass(frozen=True, eq=False)
class Graph:
    tensors: Mapping[str, TensorInfo]
    ops: tuple[Op, ...]
    inputs: tuple[str, ...]  # fed by the caller each step (image, label)
    outputs: tuple[str, ...]  # read by the caller (logits, loss)
    constants: Mapping[str, np.ndarray] = field(default_factory=dict)  # frozen data (Flash)
    params: tuple[str, ...] = ()  # persistent parameters (initial values in `constants`)
    streams: tuple[str, ...] = ()  # graph inputs read row by row from a provider, never whole in the arena

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))
        object.__setattr__(self, "constants", MappingProxyType(dict(self.constants)))

    def tensor(self, name: str) -> TensorInfo:
        return self.tensors[name]

    def producers(self) -> dict[str, int]:
        """Tensor name -> index of the op that defines it."""
        return {out: i for i, op in enumerate(self.ops) for out in op.outputs}

    def consumers(self) -> dict[str, list[int]]:
        uses: dict[str, list[int]] = {name: [] for name in self.tensors}
        for i, op in enumerate(self.ops):
            for name in op.inputs:
                uses[name].append(i)
        return uses

    def with_ops(self, ops: Iterable[Op], **changes: Any) -> "Graph":
        """A new graph with other ops (and optionally other tensors/outputs/...): graphs never mutate."""
        return replace(self, ops=tuple(ops), **changes)


def format_graph(graph: Graph) -> str:
    """A printed form that reads like code: one line per op, with types and use counts."""
    uses = graph.consumers()
    lines = ["graph("]
    for name in graph.inputs:
        streamed = ", streamed row by row" if name in graph.streams else ""
        lines.append(f"    %{name}: {graph.tensor(name).type_str()}  # {graph.tensor(name).role}{streamed}")
    lines.append("):")
    phase = None
    for op in graph.ops:
        if op.phase != phase:
            phase = op.phase
            lines.append(f"  # --- {phase} ---")
        outs = ", ".join(f"%{o}: {graph.tensor(o).type_str()}" for o in op.outputs)
        args = ", ".join(f"%{i}" for i in op.inputs)
        attrs = " {" + ", ".join(f"{k}={_short(v)}" for k, v in op.attrs) + "}" if op.attrs else ""
        counts = ", ".join(str(len(uses[o])) for o in op.outputs)
        lines.append(f"  {outs} = {op.kind}({args}){attrs}  # {op.name}, uses: {counts}")
    lines.append("  return " + ", ".join(f"%{o}" for o in graph.outputs))
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Op):  # the parts of a fused op: by kind and name (``format_op`` prints them whole)
        return f"{value.kind}:{value.name}"
    if isinstance(value, TensorInfo):
        return f"{value.name}:{value.type_str()}"
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, (Op, TensorInfo)) for v in value):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    if isinstance(value, (tuple, list)) and len(value) > 6:
        return f"[{len(value)} items]"
    return str(value)
