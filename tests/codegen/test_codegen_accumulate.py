"""Float32 backward accumulators (the default; ``accumulate="float64"`` is the audit mode): in the folder,
and what they promise.

The mode is the folder's (generate-time, not a build flag): only ``mct_kernels.h``'s ``MCT_ACC_T``
line, ``model.h``'s ``MCT_ACC_BITS`` and ``manifest.json``'s ``accumulate`` differ between the two
modes' folders (the float64 one has the library's kernel header), and a build cannot change it unseen
(a conflicting ``-DMCT_ACC_T`` or the library's header in a float32 folder fails to compile).

Against the NumPy reference executor (which sums in float64):
  * forward: bit-exact (logits before training; every int8 activation and packed mask of a traced
    step byte for byte, ``op_by_op``);
  * one traced step's float32 tensors: float64 accumulators give 0 differing elements; float32 ones
    differ in most elements (so the mode is really in effect) by at most 1e-5 of the tensor's largest
    value. Measured worst: 2.1e-7 (tiny, full; 14,684 of 23,145 elements differ), 5.1e-7
    (mcunet-5fps @48, paper-99kb; 8,739 of 9,889);
  * training (16 steps, lr 0.1, batch 1): the tolerance style of the engine's simulation-vs-NumPy
    tests (tests/engine/test_engine_equivalence.py, ``engine.executor.compare.differences``): int8
    weights within 1 LSB on <= 0.1% of the elements, every int32 bias within 1 LSB (or 1e-5 of its
    move), loss within 1e-5 relative at every step, and the weights really moved. Measured worst
    over tiny (full, last-k:6, bias-only @32) and the three paper nets (paper-99kb, last-k:6 @48):
    max_lsb 0, bias_error 1.0 (a few int32 biases 1 LSB off), differing_fraction 4.3e-6
    (mcunet-5fps, last-k:6), loss_rel_error 0.0 (the losses stayed bit-equal over 16 steps).
The firmware equals the host build of the same mode bit for bit (test_codegen_cortex_m7.py); the
float32 mode under sanitizers: test_codegen_sanitize.py; 1000 steps of a real task, float32 against the
float64 audit build: test_codegen_accumulate_outcome.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import lru_cache

import numpy as np
import pytest

from mcutrain.codegen import (ACCUMULATE, DEFAULT_ACCUMULATE, CodegenError, HostEngine, build_host, compile_for_codegen,
                              generate, render)
from mcutrain.codegen.check import float_outputs, op_by_op, side_by_side
from mcutrain.codegen.generate import FILES, KERNEL_FILES
from mcutrain.codegen.host import CFLAGS, build, compiler
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve

LR, SEED, STEPS, CLASSES = 0.1, 11, 16, 4


@lru_cache(maxsize=None)
def _program(name: str, res: int, scheme: str):
    q = random_qmodel(name, res, CLASSES, seed=1)[0]
    return compile_for_codegen(q, resolve(get_builtin(scheme, name), q.spec), lr=LR, seed=SEED)


def _data(res: int, n: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 3, res, res)).astype(np.int8), rng.integers(0, CLASSES, n)


def test_the_mode_is_written_into_the_folder():
    program = _program("tiny", 32, "last-k:6")
    default, f64, f32 = render(program), render(program, accumulate="float64"), render(program, accumulate="float32")
    assert DEFAULT_ACCUMULATE == "float32" and default == f32 and set(f32) == set(FILES)
    assert {n for n in FILES if f32[n] != f64[n]} == {"mct_kernels.h", "model.h", "manifest.json"}
    assert f64["mct_kernels.h"] == KERNEL_FILES["mct_kernels.h"].read_text()  # the library's, byte for byte
    for files, ctype, bits, mode in ((f64, "double", 64, "float64"), (f32, "float", 32, "float32")):
        defines = [line for line in files["mct_kernels.h"].splitlines() if "define MCT_ACC_T" in line]
        assert defines == [f"#define MCT_ACC_T {ctype}"]
        assert f"#define MCT_ACC_BITS {bits}\n" in files["model.h"]
        assert f'"accumulate": "{mode}"' in files["manifest.json"]
    assert list(ACCUMULATE) == ["float32", "float64"]  # the first is the default


def test_an_unknown_mode_is_refused():
    with pytest.raises(CodegenError, match=r"accumulate='float16' is not a mode; modes: float32, float64"):
        render(_program("tiny", 32, "last-k:6"), accumulate="float16")


def test_a_build_cannot_change_the_folders_accumulator(tmp_path):
    generate(_program("tiny", 32, "last-k:6"), tmp_path, accumulate="float32")
    flags = [compiler(), *CFLAGS, f"-I{tmp_path}", "-c", str(tmp_path / "model.c"), "-o", str(tmp_path / "m.o")]
    plain = subprocess.run(flags, capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    forced = subprocess.run(flags + ["-DMCT_ACC_T=double"], capture_output=True, text=True)
    assert forced.returncode != 0 and "MCT_ACC_T" in forced.stderr and "redefined" in forced.stderr
    shutil.copyfile(KERNEL_FILES["mct_kernels.h"], tmp_path / "mct_kernels.h")  # the library's (double) header
    with pytest.raises(CodegenError, match="host build failed") as err:
        build_host(tmp_path)
    assert "mct_acc_t_is_the_generated_one" in err.value.log  # the compiler's output, printed above the error


@pytest.mark.parametrize("name, res, scheme", [("tiny", 32, "full"), ("mcunet-5fps", 48, "paper-99kb")])
def test_one_step_op_by_op_forward_exact_gradients_within_float32_rounding(tmp_path, name, res, scheme):
    program = _program(name, res, scheme)
    images, labels = _data(res, 1, seed=9)
    seen = {}
    for mode in ACCUMULATE:
        generate(program, tmp_path / mode, accumulate=mode)
        lib = build(tmp_path / mode, trace=True)
        assert op_by_op(program, lib, images[0], int(labels[0])) == {}  # ints and masks exact, floats to 1e-5
        seen[mode] = float_outputs(program, lib, images[0], int(labels[0]))
    print(f"{name} {scheme}: {seen}")
    assert seen["float64"]["differing"] == 0 and seen["float64"]["tensors"] > 10
    assert seen["float32"]["differing"] > seen["float32"]["elements"] // 4  # the mode is in effect
    assert seen["float32"]["worst_relative"] <= 1e-5


@pytest.mark.parametrize("name, res, scheme", [("tiny", 32, "full"), ("mcunet-5fps", 48, "last-k:6"),
                                               ("proxyless-w0.3", 48, "paper-99kb")])
def test_float32_training_stays_within_tolerance_of_the_reference(tmp_path, name, res, scheme):
    program = _program(name, res, scheme)
    generate(program, tmp_path, accumulate="float32")
    images, labels = _data(res, STEPS)
    r = side_by_side(program, build_host(tmp_path), images, labels, images[:2])
    d = r.differences
    print(f"{name} {scheme}, float32 accumulators, {STEPS} steps: {d}")
    assert r.logits_equal_before  # the forward is integer: bit-exact in either mode
    assert d["max_lsb"] <= 1 and d["bias_error"] <= 1
    assert d["differing_fraction"] <= 1e-3
    assert d["loss_rel_error"] <= 1e-5
    assert d["moved"] >= 50


def test_a_snapshot_restores_across_modes(tmp_path):
    """The save layout does not depend on the mode (docs/firmware.md says so): only int8 / int32 parameters."""
    program = _program("tiny", 32, "full")
    images, labels = _data(32, 3)
    engines = {}
    for mode in ACCUMULATE:
        generate(program, tmp_path / mode, accumulate=mode)
        engines[mode] = HostEngine(build_host(tmp_path / mode))
        assert engines[mode].accumulate == mode
    for x, y in zip(images, labels):
        engines["float32"].train_step(x, int(y))
    engines["float64"].restore(engines["float32"].save())
    assert engines["float64"].step == 3
    trained, restored = engines["float32"].parameters(), engines["float64"].parameters()
    assert all(np.array_equal(trained[k], restored[k]) for k in trained)
    assert not np.array_equal(trained["classifier.bias"], program.train.graph.constants["classifier.bias"])


def test_a_folder_from_before_the_option_reads_as_float64(tmp_path):
    """Folders generated before the option (no ``accumulate`` in manifest.json nor target.json) were
    float64, the only mode then: they still read so, though float32 is now the default."""
    from mcutrain.codegen.host import accumulate_of, read_manifest
    from mcutrain.codegen.targets import FORMAT, TARGET_FILE, read_target

    generate(_program("tiny", 32, "last-k:6"), tmp_path, accumulate="float64")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["accumulate"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / TARGET_FILE).write_text(json.dumps({"format": FORMAT, "target": "host"}))
    assert accumulate_of(read_manifest(tmp_path)) == "float64"
    assert read_target(tmp_path)["accumulate"] == "float64"
