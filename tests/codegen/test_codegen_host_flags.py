"""The host target's two builds (mcutrain.codegen.host ``flags``): ``native`` (-O3 -march=native, the
default) trains bit for bit like ``portable`` (the reference flags, the firmware's), in both accumulator
modes, on a paper network (mbv2-w0.35, random int8 weights, res 32, ``paper-99kb``): the losses of
several steps, the logits after them, every parameter and the arena after training (its float scratch),
byte for byte; the two libraries are kept apart by their file names; an unknown flag set is refused in
one line."""

from __future__ import annotations

import numpy as np
import pytest

from mcutrain.codegen import CodegenError, HostEngine, build_host, compile_for_codegen, generate
from mcutrain.codegen.host import CFLAGS, FLAG_SETS, default_flags, host_cflags
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve
from tests.helpers.host_run import trained_state

NAME, RES, CLASSES, STEPS, LR, SEED = "mbv2-w0.35", 32, 4, 5, 0.1, 3


@pytest.mark.parametrize("accumulate", ["float32", "float64"])
def test_native_build_trains_bit_for_bit_like_the_portable_one(tmp_path, accumulate):
    q = random_qmodel(NAME, RES, CLASSES, seed=1)[0]
    program = compile_for_codegen(q, resolve(get_builtin("paper-99kb", NAME), q.spec), lr=LR, seed=SEED)
    generate(program, tmp_path, accumulate=accumulate)
    rng = np.random.default_rng(7)
    images = rng.integers(-128, 128, (STEPS, 3, RES, RES)).astype(np.int8)
    labels = rng.integers(0, CLASSES, STEPS)
    native, portable = build_host(tmp_path, flags="native"), build_host(tmp_path, flags="portable")
    assert native != portable and native.is_file() and portable.is_file()
    assert build_host(tmp_path, flags="native") == native  # reused, not rebuilt
    a, b = trained_state(native, images, labels), trained_state(portable, images, labels)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
    start = {k: v for k, v in program_parameters(tmp_path).items()}
    moved = sum(int(np.count_nonzero(a[f"param:{k}"] != v)) for k, v in start.items())
    assert moved > 0  # the steps really trained something
    assert len(set(np.round(a["losses"], 6))) > 1


def program_parameters(folder) -> dict:
    """The parameters of a fresh engine (before any step), from a portable build."""
    return HostEngine(build_host(folder, flags="portable")).parameters()


def test_flag_sets():
    assert FLAG_SETS[0] == "native"
    assert host_cflags("portable") == CFLAGS
    native = host_cflags("native")
    assert native[:len(CFLAGS)] == CFLAGS and "-O3" in native
    assert "-ffp-contract=off" in native and not any("fast-math" in f or "associative" in f for f in native)
    with pytest.raises(CodegenError, match="unknown host build flags 'fast'"):
        host_cflags("fast")


def test_the_default_build_is_native_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("MCUTRAIN_HOST_FLAGS", raising=False)
    assert default_flags() == "native"
    monkeypatch.setenv("MCUTRAIN_HOST_FLAGS", "portable")  # what tests/conftest.py sets for the suite
    assert default_flags() == "portable"
    monkeypatch.setenv("MCUTRAIN_HOST_FLAGS", "fast")
    with pytest.raises(CodegenError, match="MCUTRAIN_HOST_FLAGS='fast' is not a host build; use one of native"):
        default_flags()
