"""Look inside mcutrain containers: their format version and meta, and rewriting one with a change (to
test that loaders refuse what is wrong in it)."""

from __future__ import annotations

from typing import Callable

from mcutrain.io.container import read_versioned_container, write_container

_ANY_VERSION = tuple(range(1, 100))


def tamper(path, kind: str, change: Callable[[dict, dict], object]) -> None:
    """Read ``path``, apply ``change(meta, tensors)`` in place, write it back under the version it had
    (with a valid checksum)."""
    version, meta, tensors = read_versioned_container(path, kind, _ANY_VERSION)
    change(meta, tensors)
    write_container(path, kind, version, meta, tensors)


def version_and_meta(path, kind: str) -> tuple[int, dict]:
    """The format version a file was written with, and its meta."""
    version, meta, _ = read_versioned_container(path, kind, _ANY_VERSION)
    return version, meta
