"""Entry point of the ``mcutrain`` command.

Each subcommand lives in its own module ``cmd_<name>.py`` exposing ``register(subparsers)``, which
adds its parser and sets ``func`` (``args -> exit code``). ``commands.HELP`` lists them in pipeline
order so ``mcutrain --help`` reads like the pipeline. Exit status: 0 success, 1 no command, 2 bad
input (a ``McutrainError``), 3 training ran but failed to learn (``TrainingFailed``: see
``mcutrain.errors`` and ``mcutrain.train.health``), 130 interrupted. Only the chosen command's module is imported
(the others would pull in torch and the engine for nothing): the rest get help-only parsers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from mcutrain import __version__
from mcutrain.cli import threads
from mcutrain.cli.commands import HELP
from mcutrain.errors import McutrainError, one_line

COMMANDS = list(HELP)
THREADS_HELP = (f"torch threads, 1..{threads.MAX_THREADS} (default: the physical cores this process may use, "
                f"at most {threads.THREADS_CAP}, or OMP_NUM_THREADS when set)")


def chosen_command(argv: list[str] | None) -> str | None:
    """The subcommand named on the command line, if any (the first argument that is one)."""
    args = sys.argv[1:] if argv is None else argv
    return next((a for a in args if a in HELP), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcutrain",
        description="Train int8 neural networks on microcontrollers (MCUNetV3-style).",
    )
    parser.add_argument("--version", action="version", version=f"mcutrain {__version__}")
    parser.add_argument("--threads", type=threads.thread_count, default=None, metavar="N", help=THREADS_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = chosen_command(argv)
    for name, text in HELP.items():
        if name == chosen:
            importlib.import_module(f"mcutrain.cli.cmd_{name}").register(subparsers)
            _add_threads_option(subparsers.choices[name])
        else:
            subparsers.add_parser(name, help=text)
    return parser


def _add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads`` after the command too (``mcutrain finetune ... --threads 2``), and after a
    sub-command (``scheme list``). SUPPRESS keeps a value given before the command when none follows."""
    parser.add_argument("--threads", type=threads.thread_count, default=argparse.SUPPRESS, metavar="N",
                        help=THREADS_HELP)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_threads_option(sub)


def main(argv: list[str] | None = None) -> int:
    if not sys.stderr.isatty():
        # In a log (CI, a pipe, `make demo | tee`) a bar redrawn ten times a second is megabytes of
        # carriage returns; there it is redrawn every 10 s (tqdm reads its defaults from TQDM_*).
        os.environ.setdefault("TQDM_MININTERVAL", "10")
    threads.prepare_environment()  # before any command module imports torch
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    threads.apply_threads(getattr(args, "threads", None))
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except McutrainError as err:
        if getattr(err, "log", ""):
            print(err.log.rstrip("\n"), file=sys.stderr)
        print(f"mcutrain {args.command}: error: {one_line(str(err))}", file=sys.stderr)
        return err.exit_code  # 2: bad input; 3: training ran but failed to learn (mcutrain.errors)
    except KeyboardInterrupt:
        print(f"mcutrain {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
