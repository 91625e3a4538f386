"""The base of every result the API returns: a small frozen object around the CLI's JSON document.

Why one base: each ``mcutrain`` command prints, with ``--json``, one JSON document; the API function
behind it returns the same document wrapped in a frozen dataclass, so a script and a shell pipeline
read the same keys, and ``str(result)`` is the text the command prints without ``--json``. Typed
properties on each subclass name the fields a script usually wants.
"""


import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload


@dataclass(frozen=True, eq=False)
class Result(Mapping[str, Any]):
    """A command's result: ``payload`` is the document ``mcutrain COMMAND --json`` prints.

    It reads like a read-only mapping (``result["key"]``, ``dict(result)``); `to_dict` returns a
    deep copy and `to_json` the exact text of ``--json``. ``str(result)`` is the command's text.
    """

    payload: Mapping[str, Any] = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.payload[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.payload)

    def __len__(self) -> int:
        return len(self.payload)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the JSON document (the caller may change it freely)."""
        return copy.deepcopy(dict(self.payload))

    def to_json(self) -> str:
        """The JSON text ``mcutrain COMMAND --json`` prints (without its final newline)."""
        return json.dumps(self.payload, indent=2, sort_keys=False)

    def __str__(self) -> str:
        return self.text()

    def text(self) -> str:
        """The human-readable text the command prints without ``--json``."""
        return json.dumps(self.payload, indent=2, default=str)



@dataclass(frozen=True, eq=False)
class Table(Sequence[Mapping[str, Any]]):
    """A command's result that is a list of rows (``mcutrain zoo``, ``data list``, ``scheme list``):
    a read-only sequence of mappings; `to_json` is the command's ``--json`` text, ``str`` its table."""

    rows: tuple[Mapping[str, Any], ...] = field(repr=False)

    @overload
    def __getitem__(self, index: int) -> Mapping[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Mapping[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> Mapping[str, Any] | Sequence[Mapping[str, Any]]:
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)

    def to_list(self) -> list[dict[str, Any]]:
        """A deep copy of the rows."""
        return [copy.deepcopy(dict(r)) for r in self.rows]

    def to_json(self) -> str:
        """The JSON text ``--json`` prints (without its final newline)."""
        return json.dumps(self.to_list(), indent=2, sort_keys=False)

    def __str__(self) -> str:
        return self.text()

    def text(self) -> str:
        """The table the command prints without ``--json``."""
        return json.dumps(self.to_list(), indent=2, default=str)
