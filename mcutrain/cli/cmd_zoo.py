"""`mcutrain zoo`: the networks mcutrain can build, with their sizes and costs (and those of a JSON architecture)."""

from __future__ import annotations

from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit, table
from mcutrain.models import model_names, model_summary, resolve_spec
from mcutrain.cli import argtypes


def register(subparsers) -> None:
    p = subparsers.add_parser("zoo", help=HELP["zoo"],
                              description="List the built-in networks. Counts exclude the classifier: "
                                          "convs, conv weight elements, per-channel biases, and MACs "
                                          "at the given (or default) input resolution.")
    p.add_argument("--resolution", type=argtypes.resolution, default=None, help="input side for MACs (default: each model's)")
    p.add_argument("--model", action="append", default=None, metavar="NAME_OR_JSON",
                   help="show only this model: a zoo name or an architecture .json file (checked; repeatable)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    rows = [model_summary(resolve_spec(m), args.resolution) for m in (args.model or model_names())]
    emit(args, rows, _human)
    return 0


def _human(rows: list[dict]) -> str:
    header = ["name", "convs", "backbone_weights", "biases", "macs", "resolution"]
    return table([[r[h] for h in header] for r in rows], header)
