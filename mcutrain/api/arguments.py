"""How the API's arguments become what the internals take: paths, class lists, lists of numbers.

Why: an API call accepts what a Python user has at hand (a ``pathlib.Path``, a `mcutrain.Model`, a
list of class names) where the CLI has strings; the conversions live here once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from mcutrain.errors import McutrainError

PathLike = str | os.PathLike[str]
"""A file or folder: a ``str`` or a ``pathlib.Path``."""


def path_of(value: Any) -> str:
    """A path argument (``str``, ``os.PathLike``, or a `mcutrain.Model` with a file) as a string; a
    model held only in memory is refused with what to do (save it first)."""
    path = getattr(value, "path", value)
    if path is None and getattr(value, "kind", "") == "architecture":
        return str(value.name)  # a zoo architecture is named, not stored
    if path is None:
        raise McutrainError(f"{getattr(value, 'name', 'the model')} is held in memory only: save it first "
                            f"(model = model.save(PATH))")
    return str(os.fspath(path))


def optional_path(value: Any) -> str | None:
    """`path_of`, or None for None."""
    return None if value is None else path_of(value)


def comma_text(values: str | Sequence[Any] | None) -> str | None:
    """``"A,B,C"`` from a list (the CLI's form of ``--classes``, ``--mean`` ...); a string stays."""
    if values is None or isinstance(values, str):
        return values
    return ",".join(str(v) for v in values)
