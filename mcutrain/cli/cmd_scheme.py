"""``mcutrain scheme``: the sparse-update schemes, built in or in JSON files.

``scheme list --model M`` shows the built-in schemes of a model with their analytic extra memory;
``scheme show S --model M`` resolves one (a built-in name or a .json file) to the per-conv plan;
``scheme check PATH --model M`` validates a JSON scheme file (exit 0, or an error that says why).
"""

from __future__ import annotations

import argparse

from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit, table
from mcutrain.models import model_names, resolve_spec
from mcutrain.sparse import analytic_extra_bytes, builtin_names, load_scheme, resolve
from mcutrain.sparse.scheme import Scheme, compact_ranges, read_scheme_file
from mcutrain.cli import argtypes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scheme", help=HELP["scheme"],
                                   description=__doc__)
    sub = parser.add_subparsers(dest="scheme_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _usage(parser))

    p_list = sub.add_parser("list", help="built-in schemes of a model with their analytic extra memory")
    _add_model(p_list)
    p_list.add_argument("--resolution", type=argtypes.resolution, default=None, help="input side (default: the model's)")
    add_json_flag(p_list)
    p_list.set_defaults(func=run_list)

    p_show = sub.add_parser("show", help="the resolved per-conv plan of one scheme")
    p_show.add_argument("scheme", help="a built-in name (see 'scheme list') or a path to a .json file")
    _add_model(p_show)
    p_show.add_argument("--resolution", type=argtypes.resolution, default=None, help="input side (default: the model's)")
    add_json_flag(p_show)
    p_show.set_defaults(func=run_show)

    p_check = sub.add_parser("check", help="validate a JSON scheme file against a model")
    p_check.add_argument("path", help="the .json scheme file")
    _add_model(p_check)
    p_check.set_defaults(func=run_check)


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help=f"the model ({', '.join(model_names())}, or an architecture .json file)")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 1


def run_list(args: argparse.Namespace) -> int:
    spec = resolve_spec(args.model)
    rows = [_summary(load_scheme(name, spec), args.resolution, spec) for name in builtin_names(spec)]
    emit(args, rows, _list_text)
    return 0


def _summary(scheme: Scheme, resolution: int | None, spec=None) -> dict:
    spec = spec or resolve_spec(scheme.model)
    res = resolution or spec.default_resolution
    memory = analytic_extra_bytes(resolve(scheme, spec), spec, res)
    return {"name": scheme.name, "model": scheme.model, "n_bias": len(scheme.bias_layers),
            "weight_layers": list(scheme.weight_layers), "ratios": [r for _, r in scheme.weight_ratios],
            "resolution": res, "analytic_bytes": memory["total_bytes"], "analytic_kb": memory["total_kb"]}


def _list_text(rows: list[dict]) -> str:
    body = [[r["name"], r["n_bias"], compact_ranges(r["weight_layers"]) or "-", _ratios(r["ratios"]),
             f"{r['analytic_kb']:.2f}"] for r in rows]
    head = table(body, ["scheme", "n_bias", "weight layers", "ratios", "analytic KB"])
    return head + f"\nAlso: last-k:N, or a .json file. Analytic KB at {rows[0]['resolution']}x{rows[0]['resolution']} " \
                  "(1 KB = 1024 bytes; see 'scheme show' for the breakdown)."


def _ratios(ratios: list[float]) -> str:
    if len(set(ratios)) == 1 and len(ratios) > 2:
        return f"all {ratios[0]:g}"
    return ", ".join(f"{r:g}" for r in ratios) or "-"


def run_show(args: argparse.Namespace) -> int:
    spec = resolve_spec(args.model)
    scheme = load_scheme(args.scheme, spec)
    res = args.resolution or spec.default_resolution
    plan = resolve(scheme, spec)
    memory = analytic_extra_bytes(plan, spec, res)
    payload = {"scheme": scheme.name, "model": scheme.model, "description": scheme.description,
               "resolution": res, "lowest_trained_conv": plan.lowest_trained_conv, "classifier": True,
               "convs": [_conv_row(c) for c in plan.trained_convs],
               "analytic": {k: memory[k] for k in ("total_bytes", "total_kb", "parts")}}
    emit(args, payload, _show_text)
    return 0


def _conv_row(conv) -> dict:
    return {"index": conv.index, "name": conv.name, "kind": conv.kind, "bias": conv.bias,
            "weight_ratio": conv.weight_ratio, "kept_channels": conv.kept_channels, "channels": conv.channels}


def _show_text(p: dict) -> str:
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


def run_check(args: argparse.Namespace) -> int:
    scheme = read_scheme_file(args.path, resolve_spec(args.model))
    print(f"{args.path}: ok: scheme {scheme.name!r} for {scheme.model}, {len(scheme.bias_layers)} bias-updated "
          f"convs, {len(scheme.weight_ratios)} weight-updated convs")
    return 0
