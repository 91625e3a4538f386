"""``mcutrain data``: which datasets exist offline, and what a dataset's splits look like.

``data list`` shows every named dataset, installed or not (with the command that installs a missing
one); ``data show NAME`` loads one (also ``folder:PATH`` / ``npz:PATH``) and prints its split sizes
and per-class counts, so a user can check their own data before training on it.
"""

from __future__ import annotations

import argparse

from mcutrain.api.data import dataset, datasets
from mcutrain.api.defaults import defaults
from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help=HELP["data"],
                                   description=__doc__)
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _usage(parser))

    p_list = sub.add_parser("list", help="named datasets: installed or not, sizes, classes, image shape")
    add_json_flag(p_list)
    p_list.set_defaults(func=run_list)

    p_show = sub.add_parser("show", help="split sizes and per-class counts of one dataset")
    p_show.add_argument("name", help="a named dataset (see 'data list'), folder:PATH or npz:PATH")
    p_show.add_argument("--seed", type=int, default=defaults(dataset)["seed"], help="split seed (default 0)")
    add_json_flag(p_show)
    p_show.set_defaults(func=run_show)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 1


def run_list(args: argparse.Namespace) -> int:
    result = datasets()
    emit(args, result.to_list(), lambda _: result.text())
    return 0


def run_show(args: argparse.Namespace) -> int:
    result = dataset(args.name, seed=args.seed)
    emit(args, result.to_dict(), lambda _: result.text())
    return 0
