"""Reading a user's JSON file (a scheme, an architecture, a contribution analysis) into a validated object.

One behaviour for all of them: a missing file, bytes that are not JSON, and every validation error
name the file, and each kind of file keeps its own error class (so callers and tests can tell them
apart)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def read_json_file(path: str | os.PathLike, parse: Callable[[object], T], error: type[Exception],
                   missing: str = "no such file") -> T:
    """``parse(json.load(path))``; errors of class ``error`` come back prefixed with the path."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {missing}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise error(f"{path}: not a JSON file ({err})") from None
    try:
        return parse(doc)
    except error as err:
        raise error(f"{path}: {err}") from None


def check_header(doc, *, format: str, version: int, keys: tuple[str, ...], what: str, error: type[Exception]) -> None:
    """The top of every mcutrain JSON document: an object whose ``format`` and ``version`` are this
    mcutrain's, with no key it does not know (a typo must not be silently ignored)."""
    if not isinstance(doc, dict):
        raise error(f"{what} must be a JSON object, got {type(doc).__name__}")
    if doc.get("format") != format:
        raise error(f"not an mcutrain {what}: 'format' must be {format!r}, got {doc.get('format')!r}")
    found = doc.get("version")
    if found != version or isinstance(found, bool):
        raise error(f"{what} format version {found!r} is not supported (this mcutrain reads version {version})")
    check_keys(doc, keys, f"a {what}", error)


def check_keys(doc: dict, known: tuple[str, ...], what: str, error: type[Exception], where: str = "") -> None:
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise error(f"{where}unknown key(s) {', '.join(map(repr, unknown))}; {what} has the keys {', '.join(known)}")
