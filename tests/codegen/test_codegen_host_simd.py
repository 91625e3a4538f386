"""The host's AVX2 paths (c/mct_simd.h and the #if MCT_SIMD blocks, compiled by the native build on an AVX2
CPU) compute what the portable C computes: the same integers in the forward, the same float32 bits in the
backward.

Two levels: (1) tests/codegen/simd_harness.c runs mct_pointwise and mct_depthwise_row on thousands of
random convs (odd channel counts, widths off the 8/16 blocks, strides 1-3, non-square kernels, padding
rows, mask-only rows, mask bits off byte boundaries, SRAM/Flash split weight rows, shifts > 0) against
the definition written out in plain loops, also under AddressSanitizer (every input malloc'ed at its
exact size, so a vector load past a row fails); (2) whole programs built native and portable train bit
for bit alike: losses, logits, every parameter, and the arena after training, whose float scratch shows
a last-bit difference in the backward that rounds away before any parameter. The nets reach the row
pipelines' first conv (stride 2, 3 channels), depthwise 3x3/5x5/7x7 at strides 1 and 2, trained 1x1
convs with split rows and the backward's eight-channel head and tail passes (last-k:6), the head's lazy
pass, and the general geometry of imported graphs ("mixed"). Mutations checked when the tests were
written: the sign extension of the weight pairs, the high multiply's shift and the padding value fail
(1); a dropped channel term in the head, a doubled tail weight and a fused multiply-add in the tail fail
(2).
"""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from mcutrain.codegen import HostEngine, build_host, compile_for_codegen, generate
from mcutrain.codegen.host import CFLAGS, SANITIZE_FLAGS, compiler, native_simd
from mcutrain.models.specs import NetSpec, _chain
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve
from tests.helpers.geometry import general_qmodel, int8_images
from tests.helpers.host_run import trained_state

C_DIR = Path(__file__).parents[2] / "mcutrain" / "codegen" / "c"
INT8_H = Path(__file__).parents[2] / "mcutrain" / "quant" / "mct_int8.h"
HARNESS = Path(__file__).with_name("simd_harness.c")

SIMD = native_simd()
if SIMD is None:
    print("skipping the host SIMD tests: this machine's compiler does not target AVX2 with -march=native")
needs_avx2 = pytest.mark.skipif(SIMD is None, reason="the native build has no AVX2 paths on this CPU")

# Odd channel counts (5, 13, 9, 11), k 3/5/7, strides 1/2. At 40x40 the maps are 20 -> 10 -> 5 (8/16 blocks
# and their tails); at 32x32 the last block's plane is 4x4 with 9 output channels: the backward head's lazy
# eight-channel pass (head_lazy8_simd: plane % 8 == 0). The two trained blocks (last-k:6) have >= 8 input and
# output channels on planes of >= 8 positions: the head's and the tail's eight-channel vector passes.
SIMD_NET = NetSpec("simd-tails", 5, _chain(5, [
    (None, 3, 3, 1), (8, 9, 5, 1), (13, 10, 7, 2), (9, 11, 3, 2), (7, 9, 5, 1),
]), default_resolution=40)


@lru_cache(maxsize=None)
def _model(name: str):
    if name.startswith("tails"):
        return random_qmodel(SIMD_NET, int(name.split("@")[1]), 3, seed=4)[0]
    return general_qmodel(name)


def _harness(tmp_path, extra: tuple[str, ...]) -> Path:
    for source in [*C_DIR.glob("*.[ch]"), INT8_H, HARNESS]:
        shutil.copy(source, tmp_path / source.name)
    exe = tmp_path / "simd_harness"
    subprocess.run([compiler(), *CFLAGS, "-mavx2", *extra, "-I", str(tmp_path), str(tmp_path / HARNESS.name),
                    str(tmp_path / "mct_kernels.c"), str(tmp_path / "mct_pointwise.c"), "-o", str(exe), "-lm"],
                   check=True, capture_output=True)
    return exe


@needs_avx2
@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "asan"])
def test_simd_kernels_equal_their_definition_on_random_geometry(tmp_path, sanitize):
    exe = _harness(tmp_path, SANITIZE_FLAGS if sanitize else ())
    for seed in (1,) if sanitize else (1, 2, 3):
        out = subprocess.run([str(exe), str(seed), "1500"], capture_output=True, text=True)
        assert out.returncode == 0 and "mismatches 0" in out.stdout, out.stdout + out.stderr


@needs_avx2
@pytest.mark.parametrize("name, scheme", [("tails@40", "last-k:6"), ("tails@32", "last-k:6"), ("mixed", "full")])
def test_native_simd_build_trains_bit_for_bit_like_the_portable_one(tmp_path, name, scheme):
    q = _model(name)
    program = compile_for_codegen(q, resolve(get_builtin(scheme, q.spec), q.spec), lr=0.1, seed=5)
    generate(program, tmp_path)
    images, labels = int8_images(q, 4), np.arange(4) % q.num_classes
    native = trained_state(build_host(tmp_path, flags="native"), images, labels)
    portable = trained_state(build_host(tmp_path, flags="portable"), images, labels)
    assert native.keys() == portable.keys()
    for key in native:
        assert native[key].tobytes() == portable[key].tobytes(), key
    start = HostEngine(build_host(tmp_path, flags="portable")).parameters()
    assert any(native[f"param:{k}"].tobytes() != v.tobytes() for k, v in start.items())  # it trained
