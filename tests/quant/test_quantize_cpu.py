"""The same checkpoint and data give the same int8 file whatever vector unit the CPU has.

Each quantization runs in a fresh process with torch's (ATEN_CPU_CAPABILITY), oneDNN's
(ONEDNN_MAX_CPU_ISA) and MKL's (MKL_ENABLE_INSTRUCTIONS) kernels held to one instruction set, as on
an older or a newer x86-64 CPU; the int8 files must be byte-identical. With float32 calibration
(quantizer v1) the bundled backbone gave another file under ONEDNN_MAX_CPU_ISA=SSE41 than natively.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from mcutrain.assets import DEFAULT_BACKBONE
from mcutrain.data import sources

REPO = Path(__file__).resolve().parents[2]
DATA = "fashion-mnist"  # the bundled backbone's own task: the case that failed on another CPU

# name -> (instruction-set flags the CPU needs, environment). "native" sets nothing.
VARIANTS = {
    "native": ((), {}),
    "default": ((), {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                     "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}),
    "avx2": (("avx2", "fma"), {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                               "MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
    "avx512": (("avx512f", "avx512bw", "avx512vl", "avx512dq"),
               {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
                "MKL_ENABLE_INSTRUCTIONS": "AVX512"}),
}

SCRIPT = """
import sys
import torch
from mcutrain.data import load_dataset
from mcutrain.quant.model_file import save_qmodel
from mcutrain.quant.quantize import quantize_model
from mcutrain.train.checkpoint import load_checkpoint

torch.set_num_threads(1)
model, info = load_checkpoint(sys.argv[1])
data = load_dataset(sys.argv[2], seed=0)
save_qmodel(sys.argv[3], quantize_model(model, info, data.train, batches=2, batch_size=32, seed=0,
                                        calibration_data=sys.argv[2]))
print(torch.backends.cpu.get_cpu_capability())
"""


def cpu_flags() -> set[str] | None:
    """The CPU's instruction-set flags (Linux), None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None)
    return None if line is None else set(line.split(":", 1)[1].split())


def quantize_in_subprocess(out: Path, env: dict) -> tuple[str, str]:
    """(sha256 of the int8 file, the capability torch reports) from a fresh process under ``env``."""
    full = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(DEFAULT_BACKBONE), DATA, str(out)],
                          env=full, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return hashlib.sha256(out.read_bytes()).hexdigest(), done.stdout.strip()


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 instruction sets")
@pytest.mark.skipif(not sources.NAMED[DATA].available(), reason=f"{DATA} not installed")
def test_int8_file_is_byte_identical_under_every_instruction_set(tmp_path):
    flags = cpu_flags()
    runs: dict[str, tuple[str, str]] = {}
    for name, (needs, env) in VARIANTS.items():
        if needs and (flags is None or not set(needs) <= flags):
            print(f"skipping {name}: this CPU lacks {', '.join(sorted(set(needs) - (flags or set())))}"
                  if flags is not None else f"skipping {name}: cannot read the CPU's flags")
            continue
        runs[name] = quantize_in_subprocess(tmp_path / f"{name}.safetensors", env)
        print(f"{name}: torch capability {runs[name][1]}, int8 sha256 {runs[name][0][:16]}")
    assert runs["default"][1] == "DEFAULT"  # the environment really held torch to the scalar kernels
    assert len(runs) >= 2
    assert len({sha for sha, _ in runs.values()}) == 1, runs
