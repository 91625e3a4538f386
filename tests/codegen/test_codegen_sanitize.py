"""The generated C under AddressSanitizer + UndefinedBehaviorSanitizer (no recovery): the same training
steps, predictions and save / restore as the plain build, zero findings, the same numbers.

The sanitized library runs in a fresh Python with the ASan runtime preloaded (``run_sanitized``);
tiny's full update covers every kernel the paper network does not (a 3x3 first conv trained, summed
fan-out gradients), mbv2-w0.35's 99 KB scheme partly trained weights (Flash + SRAM slices), and with
proxyless-w0.3 fused as far as it goes the fused kernels' variants (the streamed image, row pipelines
with folded expand convs, residual adds and in place, block backwards with the lazy pool gradient and
recomputed masks), all three in the float64 audit mode (``generate(..., accumulate="float64")``). The
float32 accumulators (the default) run under the sanitizers too: on tiny's full update and on the fused
proxyless program, the two that reach every kernel with an accumulator."""

from __future__ import annotations

import shutil
from functools import lru_cache

import numpy as np
import pytest

from mcutrain.codegen import CodegenError, HostEngine, build_host, compile_for_codegen, generate, run_sanitized
from mcutrain.codegen.host import asan_runtime, run_steps
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve

LR, SEED, STEPS, CLASSES = 0.1, 11, 3, 4


@lru_cache(maxsize=None)
def _qmodel(name: str, res: int):
    return random_qmodel(name, res, CLASSES, seed=1)[0]


def _asan_available() -> bool:
    try:
        return shutil.which("cc") is not None and bool(asan_runtime())
    except CodegenError:
        return False


@pytest.mark.skipif(not _asan_available(), reason="no C compiler with AddressSanitizer here")
@pytest.mark.parametrize("name, res, scheme, fusion, accumulate", [
    ("tiny", 32, "full", "auto", "float64"), ("mbv2-w0.35", 48, "paper-99kb", "auto", "float64"),
    ("proxyless-w0.3", 64, "paper-99kb", "max", "float64"),
    ("tiny", 32, "full", "auto", "float32"), ("proxyless-w0.3", 64, "paper-99kb", "max", "float32")])
def test_sanitized_run_has_no_findings_and_the_same_numbers(tmp_path, name, res, scheme, fusion, accumulate):
    q = _qmodel(name, res)
    program = compile_for_codegen(q, resolve(get_builtin(scheme, name), q.spec), lr=LR, seed=SEED, row_fusion=fusion)
    generate(program, tmp_path, accumulate=accumulate)
    rng = np.random.default_rng(3)
    images, labels = rng.integers(-128, 128, (STEPS, 3, res, res)).astype(np.int8), rng.integers(0, CLASSES, STEPS)
    sanitized = run_sanitized(tmp_path, images, labels, probe=images[:2])
    assert "runtime error" not in sanitized["stderr"] and "Sanitizer" not in sanitized["stderr"]
    plain = run_steps(HostEngine(build_host(tmp_path)), images, labels, images[:2])
    assert set(plain) == set(sanitized) - {"stderr"}
    for key, value in plain.items():
        assert np.array_equal(value, sanitized[key]), key
    assert np.all(np.isfinite(plain["losses"]))
    assert len(plain["refused"]) >= 20 and np.all(plain["refused"] < 0)  # damaged snapshots, sanitized too


BUGS = {  # code slipped into mct_train_step after the program ran -> what must be reported
    "signed overflow": ("{ volatile int32_t v = INT32_MAX; v = v + (int32_t)step_count; }", "signed integer overflow"),
    "read past the image": ("{ volatile int8_t v = image[MCT_IMAGE_BYTES + step_count + 7]; (void)v; }",
                            "heap-buffer-overflow"),
}


@pytest.mark.skipif(not _asan_available(), reason="no C compiler with AddressSanitizer here")
@pytest.mark.parametrize("bug", list(BUGS))
def test_a_planted_bug_is_reported(tmp_path, bug):
    code, report = BUGS[bug]
    q = _qmodel("tiny", 32)
    generate(compile_for_codegen(q, resolve(get_builtin("bias-only", "tiny"), q.spec), lr=LR, seed=SEED), tmp_path)
    source = (tmp_path / "model.c").read_text()
    anchor = "    run_train(step_count, image);\n"
    assert anchor in source
    (tmp_path / "model.c").write_text(source.replace(anchor, anchor + f"    {code}\n"))
    with pytest.raises(CodegenError, match="sanitized run failed") as err:
        run_sanitized(tmp_path, np.zeros((1, 3, 32, 32), np.int8), np.array([1]))
    assert report in err.value.log  # the sanitizer's report travels beside the one-line message
