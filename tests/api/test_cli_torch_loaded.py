"""``--threads N`` reaches torch whichever command runs, including those whose API loads torch late.

Why: torch caps ``OMP_NUM_THREADS`` at the cores and only ``torch.set_num_threads`` goes above; the
commands' work moved into ``mcutrain.api``, which imports torch only when a function runs, after
``cli/threads.py`` has applied the count. ``apply_threads`` therefore imports torch itself for an
explicit count (``tests/cli/test_threads.py`` checks ``zoo --threads 3`` end to end).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["search", "zoo"]  # one that does not load torch on import, one that does


@pytest.mark.parametrize("command", COMMANDS)
def test_an_explicit_thread_count_reaches_torch(command):
    code = (f"import sys, mcutrain.cli.cmd_{command}\n"
            "from mcutrain.cli.threads import apply_threads\n"
            "apply_threads(5)\n"
            "import torch\n"
            "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.stdout.strip() == "5"  # above this 2-core machine's cores: set_num_threads, not the env
