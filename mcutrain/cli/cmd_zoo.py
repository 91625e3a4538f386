"""`mcutrain zoo`: the networks mcutrain can build, with their sizes and costs (and those of a JSON architecture)."""

from __future__ import annotations

from mcutrain.api.defaults import defaults
from mcutrain.api.models import zoo
from mcutrain.cli import argtypes
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit


def register(subparsers) -> None:
    d = defaults(zoo)
    p = subparsers.add_parser("zoo", help=HELP["zoo"],
                              description="List the built-in networks. Counts exclude the classifier: "
                                          "convs, conv weight elements, per-channel biases, and MACs "
                                          "at the given (or default) input resolution.")
    p.add_argument("--resolution", type=argtypes.resolution, default=d["resolution"],
                   help="input side for MACs (default: each model's)")
    p.add_argument("--model", action="append", default=d["model"], metavar="NAME_OR_JSON",
                   help="show only this model: a zoo name or an architecture .json file (checked; repeatable)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    result = zoo(resolution=args.resolution, model=args.model)
    emit(args, result.to_list(), lambda _: result.text())
    return 0
