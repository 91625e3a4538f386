"""Sparse-update schemes: the built-in ones of a model, one resolved to its per-conv plan, a file checked
(``mcutrain scheme list|show|check``). A scheme prints as the table of the convs it trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcutrain.api.arguments import PathLike, path_of
from mcutrain.api.results import Result, Table

__all__ = ["SchemePlan", "Schemes", "check_scheme", "scheme", "schemes"]


def _ratios(ratios: list[float]) -> str:
    if len(set(ratios)) == 1 and len(ratios) > 2:
        return f"all {ratios[0]:g}"
    return ", ".join(f"{r:g}" for r in ratios) or "-"


@dataclass(frozen=True, eq=False)
class Schemes(Table):
    """The built-in schemes of a model: rows of ``name``, ``n_bias``, ``weight_layers``, ``ratios``,
    ``resolution`` and the analytic extra memory (``analytic_bytes``, ``analytic_kb``)."""

    def text(self) -> str:
        from mcutrain.cli.output import table
        from mcutrain.sparse.scheme import compact_ranges

        rows = self.rows
        body = [[r["name"], r["n_bias"], compact_ranges(r["weight_layers"]) or "-", _ratios(r["ratios"]),
                 f"{r['analytic_kb']:.2f}"] for r in rows]
        head = table(body, ["scheme", "n_bias", "weight layers", "ratios", "analytic KB"])
        return str(head) + f"\nAlso: last-k:N, or a .json file. Analytic KB at {rows[0]['resolution']}x" \
                      f"{rows[0]['resolution']} (1 KB = 1024 bytes; see 'scheme show' for the breakdown)."


def schemes(model: PathLike, *, resolution: int | None = None) -> Schemes:
    """The built-in schemes of ``model`` (a zoo name, an architecture .json file or a model file) with
    their analytic extra memory at ``resolution`` (None: the model's own)."""
    from mcutrain.models import resolve_spec
    from mcutrain.sparse import analytic_extra_bytes, builtin_names, load_scheme, resolve

    spec = resolve_spec(path_of(model))
    res = resolution or spec.default_resolution
    rows = []
    for name in builtin_names(spec):
        s = load_scheme(name, spec)
        memory = analytic_extra_bytes(resolve(s, spec), spec, res)
        rows.append({"name": s.name, "model": s.model, "n_bias": len(s.bias_layers),
                     "weight_layers": list(s.weight_layers), "ratios": [r for _, r in s.weight_ratios],
                     "resolution": res, "analytic_bytes": memory["total_bytes"], "analytic_kb": memory["total_kb"]})
    return Schemes(tuple(rows))


@dataclass(frozen=True, eq=False)
class SchemePlan(Result):
    """A scheme resolved for a model: the convs it trains (bias, weight ratio, kept channels) and its
    analytic extra memory; prints as a table (``mcutrain scheme show``)."""

    def text(self) -> str:
        from mcutrain.cli.output import table

        p = dict(self.payload)
        body = [[c["index"], c["name"], c["kind"], "yes" if c["bias"] else "no",
                 f"{c['weight_ratio']:g}" if c["weight_ratio"] else "-",
                 f"{c['kept_channels']}/{c['channels']}" if c["weight_ratio"] else "-"] for c in p["convs"]]
        lines = [f"{p['scheme']} for {p['model']}: {p['description']}".rstrip(": "),
                 f"trained convs: {len(p['convs'])} (lowest: {p['lowest_trained_conv']}), classifier: always", ""]
        if body:
            lines += [table(body, ["conv", "name", "kind", "bias", "ratio", "kept channels"]), ""]
        parts = ", ".join(f"{k} {v:,}" for k, v in p["analytic"]["parts"].items())
        lines.append(f"analytic extra memory at {p['resolution']}x{p['resolution']}: "
                     f"{p['analytic']['total_bytes']:,} bytes = {p['analytic']['total_kb']:.2f} KB ({parts})")
        return "\n".join(lines)

    @property
    def name(self) -> str:
        """The scheme's name."""
        return str(self.payload["scheme"])

    @property
    def analytic_bytes(self) -> int:
        """The analytic extra memory of training with it, in bytes."""
        return int(self.payload["analytic"]["total_bytes"])


def scheme(scheme: PathLike, model: PathLike, *, resolution: int | None = None) -> SchemePlan:
    """``scheme`` (a built-in name, ``last-k:N`` or a scheme .json file) resolved for ``model``."""
    from mcutrain.models import resolve_spec
    from mcutrain.sparse import analytic_extra_bytes, load_scheme, resolve

    spec = resolve_spec(path_of(model))
    s = load_scheme(path_of(scheme), spec)
    res = resolution or spec.default_resolution
    plan = resolve(s, spec)
    memory = analytic_extra_bytes(plan, spec, res)
    return SchemePlan({"scheme": s.name, "model": s.model, "description": s.description,
                       "resolution": res, "lowest_trained_conv": plan.lowest_trained_conv, "classifier": True,
                       "convs": [_conv_row(c) for c in plan.trained_convs],
                       "analytic": {k: memory[k] for k in ("total_bytes", "total_kb", "parts")}})


def _conv_row(conv: Any) -> dict[str, Any]:
    return {"index": conv.index, "name": conv.name, "kind": conv.kind, "bias": conv.bias,
            "weight_ratio": conv.weight_ratio, "kept_channels": conv.kept_channels, "channels": conv.channels}


def check_scheme(path: PathLike, model: PathLike) -> str:
    """Validate the scheme file ``path`` against ``model``; returns the line ``scheme check`` prints (a
    `mcutrain.errors.McutrainError` says what is wrong)."""
    from mcutrain.models import resolve_spec
    from mcutrain.sparse.scheme import read_scheme_file

    s = read_scheme_file(path_of(path), resolve_spec(path_of(model)))
    return (f"{path_of(path)}: ok: scheme {s.name!r} for {s.model}, {len(s.bias_layers)} bias-updated "
            f"convs, {len(s.weight_ratios)} weight-updated convs")
