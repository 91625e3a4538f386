"""C99 spellings of names, numbers and arrays: the only place that decides how a value is written.

Every function is pure and deterministic (same value -> same text), which is what makes generated
files byte-stable. Floats are written as the shortest decimal that reads back as the same float32
(``numpy.format_float_scientific(unique=True)`` + ``f``): exact, and readable; non-finite constants
are refused (nothing in a compiled program should be one).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

from mcutrain.codegen.errors import CodegenError

INT32_MIN = -(2**31)
PER_LINE = {"int8": 32, "uint8": 32, "int16": 16, "int32": 12, "float32": 8}
C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t", "float32": "float"}


def identifier(name: str, prefix: str = "") -> str:
    """A C identifier for a graph name: every character outside [A-Za-z0-9_] becomes ``_``."""
    ident = prefix + re.sub(r"[^A-Za-z0-9_]", "_", name)
    return ident if not ident[0].isdigit() else "_" + ident


def comment(text: str) -> str:
    """``/* text */`` (a ``*/`` inside the text cannot end the comment early)."""
    return "/* " + text.replace("*/", "* /") + " */"


def comment_text(text: str, limit: int = 200) -> str:
    """``text`` made safe to stand inside a C comment: printable ASCII on one line, no ``*/``, at most
    ``limit`` characters. User strings (scheme and architecture names) reach the generated files' title
    lines; a name holding ``*/`` would otherwise end the comment and put its own code in the program."""
    safe = re.sub(r"[^\x20-\x7e]", "?", text)[:limit]
    while "*/" in safe:
        safe = safe.replace("*/", "* /")
    return safe


def int_literal(value: int) -> str:
    value = int(value)
    if not INT32_MIN <= value < 2**31:
        raise CodegenError(f"integer constant {value} does not fit int32")
    return "(-2147483647 - 1)" if value == INT32_MIN else str(value)


def uint_literal(value: int) -> str:
    value = int(value)
    if not 0 <= value < 2**32:
        raise CodegenError(f"unsigned constant {value} does not fit uint32")
    return f"{value}u"


def float_literal(value: float) -> str:
    """float32 ``value`` as a C float constant that reads back bit for bit."""
    f = np.float32(value)
    if not np.isfinite(f):
        raise CodegenError(f"non-finite float constant {value!r} cannot be emitted")
    return np.format_float_scientific(f, unique=True, trim="-") + "f"


def literal(value, dtype: str) -> str:
    if dtype == "float32":
        return float_literal(value)
    return int_literal(value)


def array_body(values: np.ndarray, dtype: str, indent: str = "    ") -> str:
    """The comma-separated elements of a flat array, a fixed number per line."""
    flat = np.asarray(values).ravel()
    if dtype in ("int8", "uint8", "int16", "int32"):
        items = [int_literal(v) for v in flat.tolist()]
    else:
        items = [float_literal(v) for v in flat]
    width = PER_LINE[dtype]
    lines = [", ".join(items[i:i + width]) for i in range(0, len(items), width)]
    return ",\n".join(indent + line for line in lines)


def array_definition(symbol: str, values: np.ndarray, dtype: str, *, const: bool, note: str = "") -> str:
    """``static [const] T symbol[N] = {...};`` (with an optional comment line before it)."""
    ctype = C_TYPES[dtype]
    qualifier = "static const" if const else "static"
    head = comment(note) + "\n" if note else ""
    n = int(np.asarray(values).size)
    return f"{head}{qualifier} {ctype} {symbol}[{n}] = {{\n{array_body(values, dtype)}\n}};"


def struct_initializer(fields: Sequence[tuple[str, str]], indent: str = "    ", width: int = 110) -> str:
    """``{ .a = 1, .b = 2, ... }`` (designated initializers, C99), wrapped at ``width`` columns."""
    lines, line = [], ""
    for name, value in fields:
        item = f".{name} = {value}"
        if line and len(indent) + len(line) + len(item) + 2 > width:
            lines.append(line + ",")
            line = ""
        line = f"{line}, {item}" if line else item
    lines.append(line)
    return "{\n" + "\n".join(indent + text for text in lines) + "\n}"


def declare(ctype: str, name: str, op, fields: Sequence[tuple[str, str]]) -> str:
    """``static const ctype name = {...};`` after a comment naming ``op`` (its name and kind)."""
    return f"{comment(f'{op.name} ({op.kind})')}\nstatic const {ctype} {name} = {struct_initializer(fields)};"


def shape_text(shape: Iterable[int]) -> str:
    return "[" + ",".join(str(int(s)) for s in shape) + "]"
