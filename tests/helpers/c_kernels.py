"""Test helper: compile a C wrapper together with the kernel library into a shared object, so a
test can call single kernels through ctypes (the kernels' own tests, over hypothesis-drawn shapes)."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import numpy as np

from mcutrain.codegen.generate import HERE, KERNEL_FILES, KERNEL_SOURCES
from mcutrain.codegen.host import CFLAGS, compiler


def kernel_library(folder: Path, wrapper: str, name: str) -> ctypes.CDLL:
    """``wrapper`` (C source calling mct_kernels.h) + the kernel sources (c/mct_kernels.c, ...) ->
    lib<name>.so, loaded."""
    (folder / "wrapper.c").write_text(wrapper)
    headers = sorted({str(path.parent) for path in KERNEL_FILES.values()})
    out = folder / f"lib{name}.so"
    cmd = [compiler(), *CFLAGS, "-shared", "-fPIC", *(f"-I{h}" for h in headers), str(folder / "wrapper.c"),
           *(str(HERE / "c" / name) for name in KERNEL_SOURCES), "-o", str(out), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(out))


def ptr(a: np.ndarray) -> ctypes.c_void_p:
    return a.ctypes.data_as(ctypes.c_void_p)
