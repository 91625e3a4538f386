"""Reading a user's JSON file (a scheme, an architecture, a contribution analysis) into a validated object.

One behaviour for all of them: a missing file, bytes that are not JSON, and every validation error
name the file, and each kind of file keeps its own error class (so callers and tests can tell them
apart).

``loads_limited`` is the one safe parser: a user's file is refused, with the limit in the message,
when it is larger than ``MAX_FILE_BYTES`` or nested deeper than ``MAX_DEPTH`` (measured on the text
before parsing, so the parser's recursion can never overflow), and when it holds non-finite numbers
(``NaN``, ``Infinity``, ``1e999``: not JSON, and never a valid value in our files) or a key twice
(one of the two would be silently ignored). Limits: the largest file mcutrain writes is a
contribution analysis (11 KB for the bundled one; a few hundred KB for the largest network), and the
deepest document is 4 levels; 16 MiB and 64 levels leave room for anything legitimate.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)  # a JSON string literal (its brackets do not nest)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class JsonLimitError(ValueError):
    """The text is not acceptable JSON for mcutrain (too deep, non-finite number, duplicate key)."""


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in ``text`` (0 for a scalar), without parsing it."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def loads_limited(text: str, max_depth: int = MAX_DEPTH):
    """``json.loads`` that refuses what no mcutrain file holds (see the module docstring)."""
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JsonLimitError(f"JSON nested {depth} levels deep, over the limit of {max_depth} levels")
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float,
                      object_pairs_hook=_unique_keys)


def _no_constant(name: str):
    raise JsonLimitError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonLimitError(f"number {brief(text)} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise JsonLimitError(f"key {brief(twice)} appears twice in one object")
    return doc


def brief(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about values of any size."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_json_file(path: str | os.PathLike, parse: Callable[[object], T], error: type[Exception],
                   missing: str = "no such file", max_bytes: int | None = None) -> T:
    """``parse(loads_limited(path))``; errors of class ``error`` come back prefixed with the path.

    ``max_bytes`` (default ``MAX_FILE_BYTES``) is checked before the file is read."""
    path = Path(path)
    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
    if not path.is_file():
        raise error(f"{path}: {missing}")
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)  # never more than the limit, even if the file grows meanwhile
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror or err})") from None
    if len(raw) > limit:
        raise error(f"{path}: larger than the limit of {limit:,} bytes for a JSON file")
    try:
        doc = loads_limited(raw.decode("utf-8"))
    except JsonLimitError as err:
        raise error(f"{path}: {err}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise error(f"{path}: not a JSON file ({' '.join(str(err).split())})") from None
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
        raise error(f"not an mcutrain {what}: 'format' must be {format!r}, got {brief(doc.get('format'))}")
    found = doc.get("version")
    if found != version or isinstance(found, bool):
        raise error(f"{what} format version {brief(found)} is not supported (this mcutrain reads version {version})")
    check_keys(doc, keys, f"a {what}", error)


def check_keys(doc: dict, known: tuple[str, ...], what: str, error: type[Exception], where: str = "") -> None:
    unknown = sorted(set(doc) - set(known))
    if unknown:
        shown = ", ".join(map(brief, unknown[:5])) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise error(f"{where}unknown key(s) {shown}; {what} has the keys {', '.join(known)}")
