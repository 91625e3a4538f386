"""The public surface passes the pinned mypy (``[tool.mypy]`` in pyproject.toml: strict, on
``mcutrain/__init__.py`` and ``mcutrain/api/`` only, other modules skipped so it takes seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_public_surface_type_checks(tmp_path):
    pytest.importorskip("mypy", reason="mypy is installed by `make` from requirements.lock")
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout


def test_mypy_sees_a_wrong_call(tmp_path):
    """The check has teeth: a call with a wrong keyword type against the API is reported."""
    pytest.importorskip("mypy", reason="mypy is installed by `make` from requirements.lock")
    bad = tmp_path / "bad.py"
    bad.write_text("import mcutrain\nmcutrain.compile('tiny', 'bias-only', seed='zero')\n")
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "--follow-imports",
                          "silent", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 1 and 'Argument "seed" to "compile" has incompatible type "str"' in out.stdout
