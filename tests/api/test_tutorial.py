"""examples/tutorial.py runs end to end on CI's small settings and tells the whole story: the model,
int8, three schemes compared under the budget, the C engine trained, the memory timeline drawn."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tutorial_runs_on_small_settings(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MCUTRAIN_TUTORIAL_SMALL": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "tutorial.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for n in range(1, 6):
        assert f"=== {n}. " in text
    assert "mbv2-w0.35: float-checkpoint" in text and "238,688 weights" in text
    assert re.search(r"mbv2-w0.35: float [\d.]+% -> int8 [\d.]+%", text)
    rows = re.findall(r"^(bias-only|paper-49kb|searched) +([\d.]+) +(yes|no) +([\d.]+)%$", text, re.M)
    assert [r[0] for r in rows] == ["bias-only", "paper-49kb", "searched"]
    assert all(r[2] == "yes" for r in rows)  # the searched scheme fits by construction; the others here too
    assert "host build" in text and "health          learned" in text
    png = tmp_path / "memory.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "searched.json").is_file()
