"""Where every parameter lives on the device, and the byte layout of ``mct_save``.

A frozen parameter is one ``static const`` array (Flash). A trained one is that Flash array (its
initial value, which also serves the elements outside the trained slice) plus an SRAM copy of its
trained slice ``p[:s0, :s1, ...]`` (``s`` = the update op's ``kept_shape``: the kept channels), which
``mct_init`` fills from Flash and the update kernels write in place. Kernels read a weight through
``mct_weight`` (rows, cols, inner = product of the remaining axes; the slice may cut rows and cols
only); biases are trained whole.

``mct_save`` writes a 16-byte header (magic "MCT1", layout id, step counter, payload bytes; uint32
little-endian) and then the SRAM copies in parameter order, each in native byte order (little-endian
on Cortex-M and x86). The layout id is FNV-1a over the names, dtypes and kept shapes, so a buffer from
another program is refused by ``mct_restore``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcutrain.codegen.errors import CodegenError
from mcutrain.codegen.literals import identifier
from mcutrain.engine.passes.fuse_backward import update_ops

SAVE_HEADER_BYTES = 16
SAVE_MAGIC = 0x3154434D  # b"MCT1" read as a little-endian uint32


@dataclass(frozen=True)
class ParamStorage:
    name: str
    dtype: str
    shape: tuple[int, ...]
    flash: str  # symbol of the whole (initial) value in Flash
    sram: str | None  # symbol of the SRAM copy of the trained slice (None: frozen)
    kept_shape: tuple[int, ...] | None
    save_offset: int | None  # where the SRAM copy starts in mct_save's payload

    @property
    def trained(self) -> bool:
        return self.sram is not None

    @property
    def sram_bytes(self) -> int:
        return int(np.prod(self.kept_shape)) * np.dtype(self.dtype).itemsize if self.kept_shape else 0

    def matrix(self) -> tuple[int, int, int]:
        """(rows, cols, inner) of the parameter seen as [rows][cols][inner]."""
        shape = self.shape + (1,) * max(0, 2 - len(self.shape))
        return shape[0], shape[1], int(np.prod(shape[2:], dtype=np.int64))

    def kept_matrix(self) -> tuple[int, int]:
        if self.kept_shape is None:
            return 0, 0
        kept = self.kept_shape + (1,) * max(0, 2 - len(self.kept_shape))
        return kept[0], kept[1]


def trained_slices(graph) -> dict[str, tuple[int, ...]]:
    """Parameter -> kept shape, for every parameter an update of ``graph`` writes (update ops and the
    updates inside channel-by-channel block backwards)."""
    kept: dict[str, tuple[int, ...]] = {}
    for op in update_ops(graph):
        shape = tuple(int(s) for s in op.attr("kept_shape"))
        if kept.setdefault(op.inputs[0], shape) != shape:
            raise CodegenError(f"parameter {op.inputs[0]!r} is updated with two different kept shapes")
    return kept


def parameter_storage(program) -> tuple[ParamStorage, ...]:
    """Every parameter of the model (inference graph order), with its Flash and SRAM symbols."""
    graph = program.train.graph
    kept = trained_slices(graph)
    params = list(program.inference.graph.params) + [p for p in graph.params if p not in program.inference.graph.params]
    out, offset = [], 0
    for name in params:
        info = graph.tensor(name) if name in graph.tensors else program.inference.graph.tensor(name)
        k = kept.get(name)
        if k is not None:
            _check_slice(name, info.shape, k, info.dtype)
        storage = ParamStorage(name, info.dtype, tuple(info.shape), identifier(name, "c_"),
                               identifier(name, "s_") if k is not None else None, k,
                               offset if k is not None else None)
        offset += storage.sram_bytes
        out.append(storage)
    _check_unique_symbols(out)
    return tuple(out)


def _check_slice(name: str, shape: tuple[int, ...], kept: tuple[int, ...], dtype: str) -> None:
    if len(kept) != len(shape) or any(k > s or k < 1 for k, s in zip(kept, shape)):
        raise CodegenError(f"{name}: kept shape {kept} is not a leading slice of {shape}")
    if tuple(kept[2:]) != tuple(shape[2:]):
        raise CodegenError(f"{name}: a trained slice may cut the first two axes only, got {kept} of {shape}")
    if dtype == "int32" and tuple(kept) != tuple(shape):
        raise CodegenError(f"{name}: int32 biases are trained whole, got the slice {kept} of {shape}")
    if dtype not in ("int8", "int32"):
        raise CodegenError(f"{name}: trained parameters are int8 weights or int32 biases, got {dtype}")


def _check_unique_symbols(storages: list[ParamStorage]) -> None:
    seen: dict[str, str] = {}
    for s in storages:
        for symbol in (s.flash, s.sram):
            if symbol is not None and seen.setdefault(symbol, s.name) != s.name:
                raise CodegenError(f"parameters {seen[symbol]!r} and {s.name!r} both map to the C name {symbol}")


def trainable_bytes(storages) -> int:
    return sum(s.sram_bytes for s in storages)


def layout_id(storages) -> int:
    """FNV-1a (32 bit) over ``name:dtype:kept_shape;`` of every trained parameter, in order."""
    text = "".join(f"{s.name}:{s.dtype}:{','.join(map(str, s.kept_shape))};" for s in storages if s.trained)
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h
