"""Test helper: compile a C wrapper together with the kernel library into a shared object, so a
test can call single kernels through ctypes (the kernels' own tests, over hypothesis-drawn shapes)."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import numpy as np

from mcutrain.codegen.generate import ACC_LINE, HERE, KERNEL_FILES, KERNEL_SOURCES
from mcutrain.codegen.host import CFLAGS, compiler


def kernel_library(folder: Path, wrapper: str, name: str, extra: tuple[str, ...] = (),
                   float32: bool = False) -> ctypes.CDLL:
    """``wrapper`` (C source calling mct_kernels.h) + the kernel sources (c/mct_kernels.c, ...) and the
    ``extra`` ones of c/ (the fused kernels) -> lib<name>.so, loaded. ``float32``: the backward's
    accumulators float32, as the generator writes mct_kernels.h for them (the library copied into
    ``folder`` first, so every source includes that header)."""
    (folder / "wrapper.c").write_text(wrapper)
    source_dir, headers = HERE / "c", sorted({str(path.parent) for path in KERNEL_FILES.values()})
    if float32:
        for file, path in KERNEL_FILES.items():
            (folder / file).write_text(path.read_text())
        header = folder / "mct_kernels.h"
        header.write_text(header.read_text().replace(ACC_LINE, "#define MCT_ACC_T float\n"))
        source_dir, headers = folder, [str(folder)]
    out = folder / f"lib{name}.so"
    cmd = [compiler(), *CFLAGS, "-shared", "-fPIC", *(f"-I{h}" for h in headers), str(folder / "wrapper.c"),
           *(str(source_dir / file) for file in (*KERNEL_SOURCES, *extra)), "-o", str(out), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(out))


def ptr(a: np.ndarray) -> ctypes.c_void_p:
    return a.ctypes.data_as(ctypes.c_void_p)
