"""One safe, self-describing container for every mcutrain artifact (checkpoints, int8 models, state).

Format: a safetensors file (a JSON header + raw little-endian arrays; nothing is ever unpickled)
whose header metadata holds
  ``mcutrain.kind``     what the file is (e.g. "float-checkpoint"); a reader names the kind it wants,
  ``mcutrain.version``  the kind's format version; readers refuse versions they do not know,
  ``mcutrain.meta``     a JSON document describing the contents (architecture, classes, ...),
  ``mcutrain.sha256``   a hash of the tensor bytes, so silent corruption is refused, not trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from mcutrain.errors import CheckpointError
from mcutrain.io.atomic import atomic_write_bytes

_HEADER_LIMIT = 100 * 1024 * 1024


def write_container(path: str | os.PathLike, kind: str, version: int, meta: dict,
                    tensors: dict[str, np.ndarray]) -> None:
    """Serialise ``tensors`` with ``meta`` and write atomically."""
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    digest = _data_sha256(st_save(arrays))
    header = {
        "mcutrain.kind": kind,
        "mcutrain.version": str(version),
        "mcutrain.meta": json.dumps(meta, sort_keys=True),
        "mcutrain.sha256": digest,
    }
    atomic_write_bytes(path, _canonical(st_save(arrays, metadata=header)))


def _canonical(blob: bytes) -> bytes:
    """The same file with its JSON header's keys sorted: safetensors writes the metadata from a hash map
    whose order changes from process to process, and a file's sha256 is how the contribution cache and
    users recognise a model, so equal contents must give equal bytes. The header stays valid
    safetensors (offsets are relative to the data, which is untouched; padded with spaces to 8 bytes)."""
    (n,) = struct.unpack("<Q", blob[:8])
    text = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def read_container(path: str | os.PathLike, kind: str,
                   versions: tuple[int, ...]) -> tuple[dict, dict[str, np.ndarray]]:
    """Return (meta, tensors) of a file of ``kind``; refuse anything corrupt, foreign or unknown."""
    _, meta, tensors = read_versioned_container(path, kind, versions)
    return meta, tensors


def read_versioned_container(path: str | os.PathLike, kind: str,
                             versions: tuple[int, ...]) -> tuple[int, dict, dict[str, np.ndarray]]:
    """(version, meta, tensors): for readers of a kind with several versions in use."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    blob = path.read_bytes()
    header = _parse_metadata(path, blob)
    found_kind = header.get("mcutrain.kind")
    if found_kind != kind:
        raise CheckpointError(f"{path}: is a {found_kind!r} file, expected {kind!r}")
    version = header.get("mcutrain.version", "")
    if not version.isdigit() or int(version) not in versions:
        raise CheckpointError(f"{path}: {kind} format version {version!r} is not supported "
                              f"(this mcutrain reads {', '.join(map(str, versions))})")
    if _data_sha256(blob) != header.get("mcutrain.sha256"):
        raise CheckpointError(f"{path}: tensor data does not match its checksum (corrupt file)")
    try:
        tensors = st_load(blob)
        meta = json.loads(header["mcutrain.meta"])
    except (SafetensorError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: corrupt {kind} file ({err})") from None
    return int(version), meta, tensors


def peek_container(path: str | os.PathLike) -> tuple[str, int, dict]:
    """(kind, version, meta) of any mcutrain file, from its header alone (the tensors are neither
    read nor checked): for questions about a file, such as its architecture, not for using it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with path.open("rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        blob = head + f.read(min(n, _HEADER_LIMIT))  # _parse_metadata refuses what is short or foreign
    header = _parse_metadata(path, blob)
    version = header.get("mcutrain.version", "")
    try:
        return header["mcutrain.kind"], int(version), json.loads(header["mcutrain.meta"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt header ({err})") from None


def _parse_metadata(path: Path, blob: bytes) -> dict:
    foreign = CheckpointError(f"{path}: not an mcutrain file (expected a safetensors container)")
    if len(blob) < 8:
        raise foreign
    (n,) = struct.unpack("<Q", blob[:8])
    if n > min(_HEADER_LIMIT, len(blob) - 8):
        raise foreign
    try:
        header = json.loads(blob[8:8 + n])
    except (UnicodeDecodeError, ValueError):
        raise foreign from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or "mcutrain.kind" not in meta:
        raise foreign
    return meta


def _data_sha256(blob: bytes) -> str:
    """Hash of the tensor bytes only (they do not depend on the header, which holds the hash)."""
    (n,) = struct.unpack("<Q", blob[:8])
    return hashlib.sha256(blob[8 + n:]).hexdigest()
