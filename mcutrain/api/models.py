"""Models: load or import one from whatever a user has, print it, list the zoo.

Why: a script should get from "the thing I have" (a zoo name, an architecture .json file, a float
checkpoint, an int8 model file, the paper's tiny-training ``.pkl``, a full-int8 ``.tflite``, an
``nn.Module``) to one object that prints its layers, weights and MACs as ``mcutrain zoo`` does, and
that the other API functions take (they take its file: a model made in memory is `Model.save`\\ d).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mcutrain.api.arguments import PathLike, path_of
from mcutrain.api.results import Table
from mcutrain.errors import McutrainError

__all__ = ["KINDS", "Model", "Zoo", "load_model", "zoo"]

KINDS = ("architecture", "float-checkpoint", "int8-model", "int8-graph", "float-graph")
"""What a `Model` can hold: a bare architecture (no weights), a float checkpoint (``pretrain``), an
int8 model of the zoo's family (``quantize``, ``.pkl`` import), an int8 graph (``.tflite`` import,
PyTorch import quantized), a float graph (PyTorch import, before ``quantize``)."""

_ZOO_COLUMNS = ["name", "convs", "backbone_weights", "biases", "macs", "resolution"]


@dataclass(frozen=True, eq=False)
class Model:
    """A model, loaded: its kind (one of `KINDS`), name, file (None while held only in memory), and
    the internal object (``value``: a ``NetSpec``, a float network, a ``QModel``, a ``GraphModel`` or a
    ``FloatGraph``). ``str(model)`` prints its layers with weights and MACs."""

    kind: str
    name: str
    path: str | None
    resolution: Any
    value: Any = field(repr=False)

    def layers(self) -> list[dict[str, Any]]:
        """One row per layer: ``index``, ``name``, ``kind``, ``output`` shape (C, H, W), ``weights``, ``macs``."""
        from mcutrain.api._layers import layers_of

        return layers_of(self)

    def summary(self) -> dict[str, Any]:
        """The totals `mcutrain zoo` prints: layers, weights, MACs at the model's resolution."""
        rows = self.layers()
        return {"name": self.name, "kind": self.kind, "layers": len(rows), "weights": sum(r["weights"] for r in rows),
                "macs": sum(r["macs"] for r in rows), "resolution": self.resolution}

    def __str__(self) -> str:
        from mcutrain.cli.output import table

        rows = self.layers()
        s = self.summary()
        where = f" ({self.path})" if self.path else ""
        head = (f"{self.name}: {self.kind}{where}, input {_side(self.resolution)}, {s['layers']} layers, "
                f"{s['weights']:,} weights, {s['macs']:,} MACs")
        body = [[r["index"], r["name"], r["kind"], "x".join(map(str, r["output"])), r["weights"], r["macs"]]
                for r in rows]
        return head + "\n" + str(table(body, ["#", "layer", "kind", "output", "weights", "macs"]))

    def save(self, path: PathLike) -> Model:
        """Write the model to ``path`` (its own file format) and return it with that path."""
        from mcutrain.api._files import save_model

        save_model(self, path_of(path))
        return Model(self.kind, self.name, path_of(path), self.resolution, self.value)


def _side(resolution: Any) -> str:
    if isinstance(resolution, int):
        return f"{resolution}x{resolution}"
    return "x".join(str(v) for v in resolution)


def load_model(source: Any, *, resolution: int = 0, example_input: Any = None, num_classes: int | None = None,
               classes: Sequence[str] | None = None) -> Model:
    """A `Model` from ``source``:

    * a zoo name or an architecture ``.json`` file: the architecture (at ``resolution``, 0: its own);
    * a model file of mcutrain (``.safetensors``): a float checkpoint, an int8 model, an int8 graph
      or a float graph, told apart by its header;
    * the paper's tiny-training ``.pkl`` (read without running code) or a full-int8 ``.tflite``:
      imported as ``mcutrain import`` does (``num_classes``/``classes``: a new head for that task);
    * a ``torch.nn.Module`` with ``example_input`` (a float tensor [N, C, H, W]): traced into a float
      graph (``mcutrain quantize`` makes it int8).
    """
    from mcutrain.api._files import load_any

    if resolution:
        from mcutrain.models.spec_file import check_resolution

        check_resolution(resolution, "resolution")
    if hasattr(source, "named_modules"):
        if example_input is None:
            raise McutrainError("an nn.Module needs example_input: a float tensor [N, C, H, W] like its input")
        return _from_module(source, example_input, classes)
    if example_input is not None:
        raise McutrainError("example_input applies to an nn.Module")
    if not isinstance(source, (str, os.PathLike)):
        raise McutrainError(f"cannot load a model from a {type(source).__name__}: give a zoo name, a file or an "
                            f"nn.Module")
    return load_any(os.fspath(source), resolution, num_classes, tuple(classes) if classes else None)


def _from_module(module: Any, example_input: Any, classes: Sequence[str] | None) -> Model:
    from mcutrain.models.torch_import import import_module

    graph = import_module(module, example_input, classes=tuple(classes or ()), source=type(module).__name__)
    return Model("float-graph", type(module).__name__, None, tuple(graph.input_shape[1:]), graph)


@dataclass(frozen=True, eq=False)
class Zoo(Table):
    """The zoo's networks with their sizes (``mcutrain zoo``): rows of ``name``, ``convs``, ``blocks``,
    ``backbone_weights``, ``biases``, ``macs``, ``resolution``, ``feature_channels``."""

    def text(self) -> str:
        from mcutrain.cli.output import table

        return str(table([[r[h] for h in _ZOO_COLUMNS] for r in self.rows], _ZOO_COLUMNS))


def zoo(*, resolution: int | None = None, model: Sequence[PathLike] | None = None) -> Zoo:
    """The built-in networks (or only ``model``: zoo names or architecture .json files), with their
    convs, weights, biases and MACs at ``resolution`` (None: each model's own), classifier excluded."""
    from mcutrain.models import model_names, model_summary, resolve_spec

    if resolution is not None and resolution != 0:
        from mcutrain.models.spec_file import check_resolution

        check_resolution(resolution, "resolution")
    names = [path_of(m) for m in model] if model else model_names()
    return Zoo(tuple(model_summary(resolve_spec(m), resolution) for m in names))
