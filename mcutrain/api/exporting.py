"""``export``: an imported int8 graph written back as a ``.tflite`` flatbuffer that TFLite (Micro) and
LiteRT run (``mcutrain export``), optionally with the parameters a device trained and saved."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from mcutrain.api.arguments import PathLike, optional_path, path_of
from mcutrain.api.results import Result

__all__ = ["ExportResult", "export"]


@dataclass(frozen=True, eq=False)
class ExportResult(Result):
    """The file written (``out``, ``sha256``), the graph's operators, input and classes."""

    def text(self) -> str:
        from mcutrain.cli.cmd_export import _human

        return str(_human(dict(self.payload)))

    @property
    def out(self) -> str:
        """The .tflite file written."""
        return str(self.payload["out"])


def export(model: PathLike, out: PathLike, *, format: str = "tflite", params: PathLike | None = None,
           program: PathLike | None = None) -> ExportResult:
    """Write ``model`` (an int8 graph file of `mcutrain.import_model` from a .tflite) as ``out`` in
    ``format``: the same integers and quantization. ``params`` (a device's ``mct_save`` snapshot) with
    ``program`` (the folder `mcutrain.generate_c` wrote, which the device ran): the trained parameters
    are written into the graph first."""
    from mcutrain.cli.cmd_export import export_payload

    args = SimpleNamespace(model=path_of(model), out=path_of(out), format=format, params=optional_path(params),
                           program=optional_path(program))
    return ExportResult(export_payload(args))
