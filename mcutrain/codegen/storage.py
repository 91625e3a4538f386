"""Where every parameter lives on the device, and the byte layout of ``mct_save``.

A frozen parameter is one ``static const`` array (Flash). A trained one is that Flash array (its
initial value, which also serves the elements outside the trained slice) plus an SRAM copy of its
trained slice ``p[:s0, :s1, ...]`` (``s`` = the update op's ``kept_shape``: the kept channels), which
``mct_init`` fills from Flash and the update kernels write in place. Kernels read a weight through
``mct_weight`` (rows, cols, inner = product of the remaining axes; the slice may cut rows and cols
only); biases are trained whole.

``mct_save`` writes format 2 (docs/firmware.md has it byte by byte): a 32-byte header (magic "MCTS",
format version, the model identity, payload bytes, step counter), the SRAM copies in parameter order
(each in native byte order: little-endian on Cortex-M and x86), and a CRC-32 of everything before it.
``mct_restore`` checks the length, the magic and version, the CRC and the identity, in that order, and
changes nothing unless all pass.

The model identity (``model_identity``) is 16 bytes of SHA-256 over every parameter's name, dtype,
shape, trained slice and save offset and its Flash value (the exact bytes compiled into the
firmware): a snapshot restores only into a program of the same model with the same trained slices,
whatever else differs (learning rate, seed, accumulator mode), because only then do its bytes mean
the same parameters. It is computed from the integer parameters the C holds, at generate time.

Why CRC-32 for the checksum: a snapshot sits in Flash or EEPROM, where what goes wrong is a torn
write (the tail still erased, 0xFF), a flipped bit, or stale data: CRC-32 detects every error of one
or two bits and every burst of up to 32 bits, and other damage with probability 1 - 2^-32. It needs
no library (a dozen lines of C with a 64-byte table), costs a few instructions a byte (nothing next
to a training step), and is the CRC zlib and every tool computes, so a host can check a snapshot too. It is not a signature: the identity and the
CRC protect against accidents, not against someone who forges a buffer.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

import numpy as np

from mcutrain.codegen.errors import CodegenError
from mcutrain.codegen.literals import identifier
from mcutrain.engine.passes.fuse_backward import update_ops

SAVE_MAGIC = b"MCTS"  # format 1 had b"MCT1" here and no version field: refused as another format
SAVE_VERSION = 2
MODEL_ID_BYTES = 16
SAVE_HEADER_BYTES = 32  # magic 4, version 4, model identity 16, payload bytes 4, step counter 4
SAVE_CRC_BYTES = 4  # CRC-32 (zlib's / IEEE 802.3) of every byte before it, little-endian
# Where each header field starts (docs/firmware.md).
SAVE_AT = {"magic": 0, "version": 4, "model_id": 8, "payload_bytes": 24, "step": 28}
# mct_restore's return codes (model.h), checked in this order.
# mct_last_step_status's flags (model.h's MCT_STEP_*): what the guard did in the last step.
STEP_FLAGS = {"rolled_back": 1, "from_snapshot": 2, "lr_at_floor": 4, "snapshot_saved": 8, "snapshot_trusted": 16,
              "refused": 32}
RESTORE_CODES = {0: "ok", -1: "wrong length", -2: "not a snapshot of this format (magic or version)",
                 -4: "checksum mismatch (torn, erased or corrupted)", -3: "a snapshot of another model"}


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


def save_bytes(storages) -> int:
    """MCT_SAVE_BYTES: header, the trained copies, the CRC."""
    return SAVE_HEADER_BYTES + trainable_bytes(storages) + SAVE_CRC_BYTES


def model_identity(storages, values) -> bytes:
    """16 bytes of SHA-256 over the parameter layout and the Flash values (``values``: name -> array)."""
    h = hashlib.sha256(b"mcutrain-save-identity/1\n")
    for s in storages:
        kept = ",".join(map(str, s.kept_shape)) if s.trained else "-"
        offset = "-" if s.save_offset is None else str(s.save_offset)
        shape = ",".join(map(str, s.shape))
        h.update(f"{len(s.name)}:{s.name} {s.dtype} [{shape}] [{kept}] {offset}\n".encode())
        value = np.ascontiguousarray(values[s.name], dtype=np.dtype(s.dtype).newbyteorder("<"))
        if value.shape != s.shape:
            raise CodegenError(f"{s.name}: value of shape {value.shape}, the program says {s.shape}")
        h.update(value.tobytes())
    return h.digest()[:MODEL_ID_BYTES]


def save_crc(data: bytes) -> int:
    """The checksum mct_save appends: CRC-32 as zlib computes it (reflected 0xEDB88320, init and final
    xor 0xFFFFFFFF)."""
    return zlib.crc32(data) & 0xFFFFFFFF
