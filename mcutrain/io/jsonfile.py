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
