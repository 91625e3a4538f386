"""The convs a scheme addresses, for a zoo network or an imported graph: one small protocol for both.

Why: the contribution analysis, the search and their files address convolutions by index (DESIGN.md
section 5). A zoo model's convs come from its ``NetSpec`` (``sparse.scheme``: names such as
``blocks.3.depthwise``, ``resolve``, the JSON writer that takes the spec); an imported graph's from
its ``QGraph`` (``graph.convs()`` in node order, the ``"model": "graph"`` scheme files of
``sparse.builtin``). ``ConvTable`` is what those callers need of either, so that they stay one code
path: the scheme's ``model`` field, the conv names, a layer reference (index or name) resolved with
an error naming the valid forms, a ``Scheme`` resolved to its ``UpdatePlan``, and the scheme's JSON.

``ZooConvs`` delegates to ``sparse.scheme``; ``GraphConvs`` writes the ``"model": "graph"`` document
and resolves a scheme by reading that very document back (``builtin``'s scheme-file reader), so a
scheme the search writes is exactly one ``finetune --scheme`` and ``compile --scheme`` accept.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Protocol

from mcutrain.io.atomic import atomic_write_text
from mcutrain.models.specs import NetSpec
from mcutrain.sparse import builtin
from mcutrain.sparse.errors import SchemeError
from mcutrain.sparse.scheme import (FORMAT, VERSION, Scheme, UpdatePlan, conv_names, layer_index, resolve,
                                    scheme_to_json)


class ConvTable(Protocol):
    """What schemes, the analysis and the search know of a model's convs (module docstring)."""

    @property
    def model(self) -> str:
        """The ``model`` field of this model's schemes (a zoo architecture's name, or ``graph``)."""

    @property
    def label(self) -> str:
        """The model's name in messages."""

    @property
    def names(self) -> tuple[str, ...]:
        """Conv names in index order."""

    def index(self, ref: Any, where: str) -> int:
        """A conv index or name as an index; ``SchemeError`` naming ``where`` and the valid forms."""

    def resolve(self, scheme: Scheme) -> UpdatePlan:
        """Validate ``scheme`` against these convs and resolve it (``SchemeError`` if it does not fit)."""

    def to_json(self, scheme: Scheme) -> dict:
        """The scheme file's document (``mcutrain-scheme`` version 1)."""


@dataclass(frozen=True)
class ZooConvs:
    """The convs of a zoo architecture (``NetSpec``)."""

    spec: NetSpec

    @property
    def model(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        return self.spec.name

    @property
    def names(self) -> tuple[str, ...]:
        return conv_names(self.spec)

    def index(self, ref: Any, where: str) -> int:
        return layer_index(ref, self.spec, where)

    def resolve(self, scheme: Scheme) -> UpdatePlan:
        return resolve(scheme, self.spec)

    def to_json(self, scheme: Scheme) -> dict:
        return scheme_to_json(scheme, self.spec)


@dataclass(frozen=True, eq=False)
class GraphConvs:
    """The convs of an imported int8 graph (``QGraph``), in node order; kept channels are the first ones."""

    graph: Any  # a QGraph (not imported: sparse stays free of the quant package)

    model = builtin.GRAPH_MODEL
    label = "the imported graph"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.graph.convs())

    def index(self, ref: Any, where: str) -> int:
        return builtin.graph_layer(ref, list(self.names), where)

    def resolve(self, scheme: Scheme) -> UpdatePlan:
        if scheme.model != self.model:
            raise SchemeError(f"scheme {scheme.name!r} is for model {scheme.model!r}; a scheme for an imported "
                              f"graph has \"model\": \"{self.model}\"")
        return builtin.graph_scheme_doc(self.graph, json.loads(json.dumps(self.to_json(scheme))))

    def to_json(self, scheme: Scheme) -> dict:
        n = len(self.names)
        layers = tuple(scheme.bias_layers)
        bias = {"last": len(layers)} if layers == tuple(range(n - len(layers), n)) else {"layers": list(layers)}
        return {"format": FORMAT, "version": VERSION, "model": scheme.model, "name": scheme.name, "bias": bias,
                "weights": [{"layer": i, "ratio": r} for i, r in scheme.weight_ratios],
                "description": scheme.description}


def as_table(convs: ConvTable | NetSpec) -> ConvTable:
    """A table as it is; a ``NetSpec`` as its ``ZooConvs`` (callers that still pass the spec)."""
    return ZooConvs(convs) if isinstance(convs, NetSpec) else convs


def save_table_scheme(path: str | os.PathLike, scheme: Scheme, table: ConvTable) -> None:
    """Validate ``scheme`` against ``table``, then write its JSON document atomically."""
    table.resolve(scheme)
    atomic_write_text(path, json.dumps(table.to_json(scheme), indent=2) + "\n")
