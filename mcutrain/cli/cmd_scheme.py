"""``mcutrain scheme``: the sparse-update schemes, built in or in JSON files.

``scheme list --model M`` shows the built-in schemes of a model with their analytic extra memory;
``scheme show S --model M`` resolves one (a built-in name or a .json file) to the per-conv plan;
``scheme check PATH --model M`` validates a JSON scheme file (exit 0, or an error that says why).
"""

from __future__ import annotations

import argparse

from mcutrain.api.defaults import defaults
from mcutrain.api.scheme_plans import check_scheme, scheme, schemes
from mcutrain.cli import argtypes
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.models import model_names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scheme", help=HELP["scheme"],
                                   description=__doc__)
    sub = parser.add_subparsers(dest="scheme_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _usage(parser))

    p_list = sub.add_parser("list", help="built-in schemes of a model with their analytic extra memory")
    _add_model(p_list)
    p_list.add_argument("--resolution", type=argtypes.resolution, default=defaults(schemes)["resolution"],
                        help="input side (default: the model's)")
    add_json_flag(p_list)
    p_list.set_defaults(func=run_list)

    p_show = sub.add_parser("show", help="the resolved per-conv plan of one scheme")
    p_show.add_argument("scheme", help="a built-in name (see 'scheme list') or a path to a .json file")
    _add_model(p_show)
    p_show.add_argument("--resolution", type=argtypes.resolution, default=defaults(scheme)["resolution"],
                        help="input side (default: the model's)")
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
    result = schemes(args.model, resolution=args.resolution)
    emit(args, result.to_list(), lambda _: result.text())
    return 0


def run_show(args: argparse.Namespace) -> int:
    result = scheme(args.scheme, args.model, resolution=args.resolution)
    emit(args, result.to_dict(), lambda _: result.text())
    return 0


def run_check(args: argparse.Namespace) -> int:
    print(check_scheme(args.path, args.model))
    return 0
