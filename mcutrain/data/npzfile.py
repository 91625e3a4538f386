"""Reading a user's ``.npz`` without trusting it.

``np.load`` of an archive decompresses a member as soon as it is indexed, and allocates whatever
the member's npy header claims. Here an array is described first, from the zip directory (each
member's declared decompressed size) and the member's npy header (shape x itemsize, read from the
first bytes of the stream without decompressing the rest), so that callers can check every claim
against ``mcutrain.data.limits`` before ``read`` allocates anything. Pickled (object) arrays are
never loaded. Every error is a one-line ``DataError`` naming the file.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcutrain.errors import DataError

NPY_MAGIC = b"\x93NUMPY"
# What a corrupt or exotic member can raise while its stream is read: bad deflate data (zlib.error),
# a truncated or lying header (ValueError, EOFError), an encrypted member (RuntimeError), a
# compression method zipfile cannot read (NotImplementedError).
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError,
               NotImplementedError)


@dataclass(frozen=True)
class ArrayInfo:
    """What an archive member claims to be, read from its headers only."""

    name: str  # the array's name (``x``), not the member's (``x.npy``)
    member: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        """Bytes the array will occupy once read (exact Python ints: no overflow for absurd shapes)."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def declared_bytes(self) -> int:
        """The member's decompressed size as the zip directory declares it (header + data)."""
        return self.member.file_size


def one_line(err: BaseException) -> str:
    """An exception's text on one line (some carry newlines), for messages that must be one line."""
    return " ".join(str(err).split()) or type(err).__name__


def open_archive(path: Path) -> zipfile.ZipFile:
    """The zip directory of ``path``; a single .npy or anything that is not a zip is refused."""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
        if magic == NPY_MAGIC:
            raise DataError(f"{path}: not an .npz archive (a single .npy array?); "
                            f"save with np.savez(path, x=..., y=...)")
        return zipfile.ZipFile(path)
    except READ_ERRORS as err:  # a forged directory can also claim a zip version we cannot read
        raise DataError(f"{path}: not a readable .npz archive ({one_line(err)})") from None


def array_names(archive: zipfile.ZipFile) -> list[str]:
    """The arrays of an archive as ``np.load`` names them (member names without ``.npy``)."""
    return [n[:-4] if n.endswith(".npy") else n for n in archive.namelist()]


def describe(archive: zipfile.ZipFile, name: str, path: Path) -> ArrayInfo | None:
    """The headers of array ``name`` (None when the archive has no such array)."""
    names = set(archive.namelist())
    member = next((m for m in (f"{name}.npy", name) if m in names), None)
    if member is None:
        return None
    info = archive.getinfo(member)
    try:
        with archive.open(info) as stream:
            shape, dtype = _read_header(stream)
    except READ_ERRORS as err:
        raise DataError(f"{path}: array {name!r} has no readable npy header ({one_line(err)})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: array {name!r} holds Python objects ({dtype}); "
                        f"mcutrain never unpickles data: store numbers and strings only")
    return ArrayInfo(name, info, shape, dtype)


def _read_header(stream) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an npy header (versions 1.0 and 2.0, the ones np.savez writes)."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"npy format version {version[0]}.{version[1]} is not supported (1.0 or 2.0)")
    return tuple(int(s) for s in shape), np.dtype(dtype)


def read(archive: zipfile.ZipFile, info: ArrayInfo, path: Path) -> np.ndarray:
    """Decompress one described array (call only after its size has been checked)."""
    try:
        with archive.open(info.member) as stream:
            array = np.lib.format.read_array(stream, allow_pickle=False)
    except READ_ERRORS as err:
        raise DataError(f"{path}: cannot read array {info.name!r} ({one_line(err)})") from None
    if array.shape != info.shape or array.dtype != info.dtype:  # read_array re-reads the header
        raise DataError(f"{path}: array {info.name!r} changed while it was read")
    return array
