"""Entry point of the ``mcutrain`` command.

Each subcommand lives in its own module ``cmd_<name>.py`` exposing ``register(subparsers)``, which
adds its parser and sets ``func`` (``args -> exit code``). COMMANDS lists them in pipeline order so
``mcutrain --help`` reads like the pipeline.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mcutrain import __version__
from mcutrain.errors import McutrainError

COMMANDS = ["zoo", "data", "pretrain", "eval", "quantize", "import", "scheme", "finetune", "analyze", "compile", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcutrain",
        description="Train int8 neural networks on microcontrollers (MCUNetV3-style).",
    )
    parser.add_argument("--version", action="version", version=f"mcutrain {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mcutrain.cli.cmd_{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except McutrainError as err:
        print(f"mcutrain {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mcutrain {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
