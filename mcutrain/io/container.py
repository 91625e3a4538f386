"""One safe, self-describing container for every mcutrain artifact (checkpoints, int8 models, state).

Format: a safetensors file (an 8-byte little-endian header length, a JSON header, raw little-endian
arrays; nothing is ever unpickled) whose header metadata holds
  ``mcutrain.kind``      what the file is (e.g. "float-checkpoint"); a reader names the kind it wants,
  ``mcutrain.version``   the kind's format version; readers refuse versions they do not know,
  ``mcutrain.meta``      a JSON document describing the contents (architecture, classes, ...),
  ``mcutrain.checksum``  ``"sha256:<64 hex>"``: the SHA-256 of the WHOLE file (length prefix, header
                         and tensor data) as it reads with these 64 hex digits replaced by 64 ``"0"``s.
So a flipped bit anywhere (kind, version, meta, a tensor's dtype/shape/offsets, the padding, the data)
is refused as corruption instead of being trained on. The checksum is not a signature: whoever can
write the file can recompute it; every reader validates what the meta and tensors say on top of it.

The file is canonical: the JSON header is written with sorted keys, no spaces and space padding to a
multiple of 8 bytes (``_canonical``), so equal contents give byte-identical files (a file's sha256 is
how caches and users recognise a model). Readers require that form too.

Files of the earlier container (their ``mcutrain.sha256`` covered only the tensor data) are refused
with a message saying how to re-save them: ``python -m mcutrain.io.container OLD NEW`` checks the old
data checksum and writes the same kind, version, meta and tensors in this format (``migrate_container``).
Only migrate files you trust: the old format could not tell a changed header from a good one.

Limits: a file may be at most ``MAX_FILE_BYTES``, its JSON header at most ``_HEADER_LIMIT`` bytes and
its meta nested at most ``MAX_META_DEPTH`` levels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import struct
import sys
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from mcutrain.errors import CheckpointError
from mcutrain.io.atomic import atomic_write_bytes

MAX_FILE_BYTES = 1 << 30
"""Largest container read (1 GiB): a microcontroller model is a few MB, its float checkpoint tens."""
MAX_META_DEPTH = 32
"""Deepest nesting of the meta JSON (mcutrain writes at most ~6 levels)."""
_HEADER_LIMIT = 100 * 1024 * 1024

CHECKSUM_KEY = "mcutrain.checksum"
_LEGACY_CHECKSUM_KEY = "mcutrain.sha256"  # the earlier container: a hash of the tensor bytes only
_ZERO_DIGEST = "0" * 64
_CHECKSUM_FIELD = re.compile(rb'"mcutrain\.checksum":"sha256:([0-9a-f]{64})"')
MIGRATE_HINT = "python -m mcutrain.io.container OLD NEW"
# safetensors.numpy raises KeyError for dtypes numpy lacks (F8_E4M3, ...), SafetensorError for the rest
_DECODE_ERRORS = (SafetensorError, ValueError, KeyError, TypeError)
KIND_HINTS = {
    "int8-graph": "an imported int8 graph (TFLite or a quantized PyTorch import); imported graphs can be "
                  "analysed and searched (mcutrain analyze, mcutrain search), trained (mcutrain finetune), "
                  "evaluated (mcutrain eval), compiled for the C engine and run (mcutrain compile, mcutrain run), "
                  "exported (mcutrain export M --format tflite) and taken by mcutrain demo --model; this command "
                  "does not take them",
    "mcutrain-float-graph": "an imported PyTorch float graph; make its int8 graph with "
                            "mcutrain quantize M --data D --out Q",
}
"""What a command that cannot use a file of this kind says instead of "expected another kind": the one
place every loader (int8 model, float checkpoint) and the architecture sniffer (``models.zoo``) ask."""
_TFLITE_ID = b"TFL3"  # a flatbuffer's file identifier, bytes 4..8 of every .tflite


def write_container(path: str | os.PathLike, kind: str, version: int, meta: dict,
                    tensors: dict[str, np.ndarray]) -> None:
    """Serialise ``tensors`` with ``meta`` and write atomically."""
    atomic_write_bytes(path, container_bytes(kind, version, meta, tensors))


def container_bytes(kind: str, version: int, meta: dict, tensors: dict[str, np.ndarray]) -> bytes:
    """The exact bytes ``write_container`` writes (canonical, checksummed)."""
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    header = {
        "mcutrain.kind": kind,
        "mcutrain.version": str(version),
        "mcutrain.meta": json.dumps(meta, sort_keys=True),
        CHECKSUM_KEY: "sha256:" + _ZERO_DIGEST,
    }
    blob = _canonical(st_save(arrays, metadata=header))
    field = _checksum_field(blob)
    return blob[:field.start(1)] + _whole_file_sha256(blob, field).encode() + blob[field.end(1):]


def _canonical(blob: bytes) -> bytes:
    """The same file with its JSON header's keys sorted: safetensors writes the metadata from a hash map
    whose order changes from process to process, and a file's sha256 is how the contribution cache and
    users recognise a model, so equal contents must give equal bytes. The header stays valid
    safetensors (offsets are relative to the data, which is untouched; padded with spaces to 8 bytes)."""
    (n,) = struct.unpack("<Q", blob[:8])
    text = _canonical_header(json.loads(blob[8:8 + n]))
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def _canonical_header(header: dict) -> bytes:
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return text + b" " * (-len(text) % 8)


def _checksum_field(blob: bytes) -> re.Match:
    """Where the checksum's hex digits are in the header (exactly once: the header is canonical, and
    inside the meta string every quote is escaped, so the pattern cannot occur there)."""
    (n,) = struct.unpack("<Q", blob[:8])
    found = list(_CHECKSUM_FIELD.finditer(blob, 8, 8 + n))
    if len(found) != 1:
        raise CheckpointError(f"{len(found)} checksum fields in the header")
    return found[0]


def _whole_file_sha256(blob: bytes, field: re.Match) -> str:
    """SHA-256 of the file with the checksum's digits read as zeros (they cannot cover themselves)."""
    h = hashlib.sha256()
    h.update(blob[:field.start(1)])
    h.update(_ZERO_DIGEST.encode())
    h.update(blob[field.end(1):])
    return h.hexdigest()


def read_container(path: str | os.PathLike, kind: str,
                   versions: tuple[int, ...]) -> tuple[dict, dict[str, np.ndarray]]:
    """Return (meta, tensors) of a file of ``kind``; refuse anything corrupt, foreign or unknown."""
    _, meta, tensors = read_versioned_container(path, kind, versions)
    return meta, tensors


def read_versioned_container(path: str | os.PathLike, kind: str,
                             versions: tuple[int, ...]) -> tuple[int, dict, dict[str, np.ndarray]]:
    """(version, meta, tensors): for readers of a kind with several versions in use."""
    path = Path(path)
    blob = _read_file(path)
    found_kind, version, meta = _checked_header(path, blob)
    if found_kind != kind:
        if found_kind in KIND_HINTS:
            raise CheckpointError(f"{path}: {KIND_HINTS[found_kind]}")
        raise CheckpointError(f"{path}: is a {found_kind!r} file, expected {kind!r}")
    if version not in versions:
        raise CheckpointError(f"{path}: {kind} format version {version} is not supported "
                              f"(this mcutrain reads {', '.join(map(str, versions))})")
    try:
        tensors = st_load(blob)
    except _DECODE_ERRORS as err:
        raise CheckpointError(f"{path}: corrupt {kind} file ({_one_line(err)})") from None
    return version, meta, tensors


def peek_container(path: str | os.PathLike) -> tuple[str, int, dict]:
    """(kind, version, meta) of any mcutrain file, checksum verified, tensors not decoded: for questions
    about a file, such as its architecture, not for using it."""
    path = Path(path)
    return _checked_header(path, _read_file(path))


def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise CheckpointError(f"{path}: {size} bytes, over the {MAX_FILE_BYTES}-byte limit of a model file")
    return path.read_bytes()


def _checked_header(path: Path, blob: bytes) -> tuple[str, int, dict]:
    """(kind, version, meta) once the file is known to be an intact, canonical container of this format."""
    header = _parse_header(path, blob)
    _verify_checksum(path, blob, header)
    found_kind = header.get("mcutrain.kind")
    version = header.get("mcutrain.version")
    if not isinstance(found_kind, str) or not isinstance(version, str) or not re.fullmatch(r"[1-9][0-9]{0,5}", version):
        raise CheckpointError(f"{path}: corrupt header (kind {found_kind!r}, version {version!r})")
    meta_text = header.get("mcutrain.meta")
    try:
        meta = json.loads(meta_text) if isinstance(meta_text, str) else None
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: corrupt {found_kind} metadata ({_one_line(err)})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the {found_kind} metadata must be a JSON object")
    if _depth(meta) > MAX_META_DEPTH:
        raise CheckpointError(f"{path}: metadata nested deeper than {MAX_META_DEPTH} levels")
    return found_kind, int(version), meta


def _parse_header(path: Path, blob: bytes) -> dict:
    """The header's ``__metadata__`` of an mcutrain container (canonical, if of the current format)."""
    foreign = CheckpointError(f"{path}: not an mcutrain file (expected a safetensors container)")
    if blob[4:8] == _TFLITE_ID:
        raise CheckpointError(f"{path}: a TFLite model, not an mcutrain file; import it first "
                              f"(mcutrain import MODEL.tflite --out M)")
    if len(blob) < 8:
        raise foreign
    (n,) = struct.unpack("<Q", blob[:8])
    if n > min(_HEADER_LIMIT, len(blob) - 8):
        raise foreign
    raw = blob[8:8 + n]
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        if b'"mcutrain.' in raw:  # ours, damaged: say so rather than "foreign"
            raise CheckpointError(f"{path}: corrupt mcutrain file (its header is not valid JSON)") from None
        raise foreign from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or "mcutrain.kind" not in meta:
        raise foreign
    if CHECKSUM_KEY in meta and _canonical_header(header) != raw:
        raise CheckpointError(f"{path}: corrupt mcutrain file (its header is not in the canonical form "
                              f"mcutrain writes)")
    return meta


def _verify_checksum(path: Path, blob: bytes, header: dict) -> None:
    if CHECKSUM_KEY not in header:
        if _LEGACY_CHECKSUM_KEY in header:
            raise CheckpointError(f"{path}: written by an earlier mcutrain whose checksum covers only the "
                                  f"tensor data; re-save it in the current format with `{MIGRATE_HINT}` "
                                  f"(only if you trust the file)")
        raise CheckpointError(f"{path}: corrupt mcutrain file (no checksum)")
    try:
        field = _checksum_field(blob)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: corrupt mcutrain file ({err})") from None
    if _whole_file_sha256(blob, field) != field.group(1).decode():
        raise CheckpointError(f"{path}: the file does not match its checksum (corrupt file)")


def _depth(doc) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_META_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


# ---------------------------------------------------------------------------------------------- migration


def migrate_container(src: str | os.PathLike, dst: str | os.PathLike,
                      change_meta=None) -> tuple[str, int]:
    """Re-save ``src`` (this format, or the earlier one whose checksum covered only the tensor data)
    as ``dst`` in the current format: same kind, version, meta and tensors, the old checksum verified
    first. ``change_meta(kind, meta)`` may edit the meta in place (e.g. drop fields). Returns (kind, version)."""
    src = Path(src)
    blob = _read_file(src)
    try:
        kind, version, meta = _checked_header(src, blob)
    except CheckpointError as err:
        if "earlier mcutrain" not in str(err):
            raise
        kind, version, meta = _legacy_header(src, blob)
    try:
        tensors = st_load(blob)
    except _DECODE_ERRORS as err:
        raise CheckpointError(f"{src}: corrupt {kind} file ({_one_line(err)})") from None
    if change_meta is not None:
        change_meta(kind, meta)
    write_container(dst, kind, version, meta, tensors)
    return kind, version


def _legacy_header(path: Path, blob: bytes) -> tuple[str, int, dict]:
    """(kind, version, meta) of an earlier-format file whose tensor-data checksum holds."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])["__metadata__"]
    if hashlib.sha256(blob[8 + n:]).hexdigest() != header.get(_LEGACY_CHECKSUM_KEY):
        raise CheckpointError(f"{path}: tensor data does not match its checksum (corrupt file)")
    version = header.get("mcutrain.version", "")
    try:
        meta = json.loads(header["mcutrain.meta"])
        if not (isinstance(meta, dict) and version.isdigit()):
            raise ValueError("no meta object or version")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path}: corrupt header ({_one_line(err)})") from None
    return str(header["mcutrain.kind"]), int(version), meta


def main(argv: list[str] | None = None) -> int:
    """``python -m mcutrain.io.container OLD NEW``: re-save a container in the current format."""
    parser = argparse.ArgumentParser(prog="python -m mcutrain.io.container",
                                     description="Re-save an mcutrain file (float checkpoint, int8 model, "
                                                 "training state) in the current container format.")
    parser.add_argument("old", help="the file to read (not changed)")
    parser.add_argument("new", help="the file to write (may be OLD itself)")
    args = parser.parse_args(argv)
    try:
        kind, version = migrate_container(args.old, args.new)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.new}: {kind} version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
