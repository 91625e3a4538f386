"""Synthetic contribution analyses for search tests: hand-made gains, so the best scheme is known."""

from __future__ import annotations

from mcutrain.search.contrib import contrib_from_doc


def synthetic_contrib(arch: str, n_convs: int, weight: dict[int, dict[float, float]], bias: dict[int, float] | None = None,
                      resolution: int = 32, num_classes: int = 10):
    """A validated Contrib with the given dAcc tables (bias runs the weight layers need default to 0)."""
    bias = dict(bias or {})
    for i in weight:
        bias.setdefault(n_convs - i, 0.0)
    doc = {"format": "mcutrain-contrib", "version": 1,
           "model": {"arch": arch, "n_convs": n_convs, "resolution": resolution},
           "data": {"num_classes": num_classes, "new_head": True},
           "baseline": 0.5,
           "bias": {str(k): v for k, v in bias.items()},
           "weight": {str(i): {str(r): v for r, v in row.items()} for i, row in weight.items()}}
    return contrib_from_doc(doc)
