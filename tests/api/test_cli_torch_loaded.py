"""The thin commands still load torch when they are chosen, before ``--threads`` is applied.

Why: ``cli/threads.py`` sets the count with ``torch.set_num_threads`` when torch is already loaded,
else through ``OMP_NUM_THREADS``, which torch caps at the cores; the work moved into ``mcutrain.api``,
which imports torch only when a function runs, so each command module that loaded torch before the
API existed must still do so (``tests/cli/test_threads.py`` checks ``zoo --threads 3`` end to end).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOADED_TORCH_BEFORE = ["zoo", "eval", "quantize", "pretrain", "compile", "scheme", "finetune", "import"]


@pytest.mark.parametrize("command", LOADED_TORCH_BEFORE)
def test_the_command_module_loads_torch(command):
    code = f"import sys, mcutrain.cli.cmd_{command}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.stdout.strip() == "True"
