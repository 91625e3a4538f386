"""Test helper: a stdin/stdout C harness around a header-only C99 spec (mct_int8.h, mct_int8_grad.h), built
with gcc and the undefined-behaviour sanitizer where the machine has it, and run on lines of operations."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def build_harness(folder: Path, source: Path, include: Path, warnings: tuple[str, ...] = ()) -> Path:
    """``source`` compiled against the headers in ``include`` into ``folder/harness`` (skips without gcc)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: cannot check the C header")
    exe = folder / "harness"
    base = [gcc, "-std=c99", "-O2", "-Wall", "-Wextra", *warnings, "-Werror", "-pedantic", f"-I{include}",
            str(source), "-o", str(exe), "-lm"]
    ubsan = ["-fsanitize=undefined", "-fno-sanitize-recover=all"]
    result = subprocess.run(base[:2] + ubsan + base[2:], capture_output=True, text=True)
    if result.returncode != 0:  # no libubsan here: compile without the sanitizer
        result = subprocess.run(base, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return exe


def run_lines(exe: Path, lines: list[str], timeout: float = 120) -> list[str]:
    """Feed ``lines`` to the harness: its output lines (a sanitizer report on stderr fails)."""
    out = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # the sanitizer reports undefined behaviour on stderr
    return out.stdout.splitlines()
