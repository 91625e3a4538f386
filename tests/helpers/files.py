"""Rewrite an mcutrain container with a change, to test that loaders refuse what is wrong in it."""

from __future__ import annotations

from typing import Callable

from mcutrain.io.container import read_container, write_container


def tamper(path, kind: str, version: int, change: Callable[[dict, dict], object]) -> None:
    """Read ``path``, apply ``change(meta, tensors)`` in place, write it back (with a valid checksum)."""
    meta, tensors = read_container(path, kind, (version,))
    change(meta, tensors)
    write_container(path, kind, version, meta, tensors)
