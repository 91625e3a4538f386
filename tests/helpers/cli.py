"""Run one CLI command module in-process, as `mcutrain` would, capturing stdout."""

from __future__ import annotations

import argparse
import contextlib
import io


def run_command(module, argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="mcutrain")
    module.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.func(args)
    return code, out.getvalue()
