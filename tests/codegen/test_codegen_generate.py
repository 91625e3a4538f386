"""The generated C as text and as objects: byte-stable, one arena of exactly the planned size with every
tensor at its planned offset, frozen data in Flash (const), trained slices in SRAM, the documented
API, nothing from the C library beyond memcpy / memset / floorf / expf / logf (also for a Cortex-M7),
and programs the C target cannot run refused with the op kind named."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest

from mcutrain.codegen import CodegenError, compile_for_codegen, generate, render, unsupported_kinds
from mcutrain.codegen.generate import FILES, SOURCES
from mcutrain.codegen.host import CFLAGS, compiler
from mcutrain.codegen.storage import parameter_storage
from mcutrain.engine.compile import compile_training
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve

LR, SEED, CLASSES = 0.1, 11, 4
ALLOWED_CALLS = {"memcpy", "memset", "floorf", "expf", "logf"}
ARM_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16", "-ffunction-sections",
             "-fdata-sections"]


@lru_cache(maxsize=None)
def _qmodel():
    return random_qmodel("tiny", 32, CLASSES, seed=1)[0]


@lru_cache(maxsize=None)
def _program(scheme: str = "last-k:6"):
    q = _qmodel()
    return compile_for_codegen(q, resolve(get_builtin(scheme, "tiny"), q.spec), lr=LR, seed=SEED)


@lru_cache(maxsize=None)
def _files(scheme: str = "last-k:6") -> dict[str, str]:
    return render(_program(scheme))


def test_same_program_gives_the_same_bytes(tmp_path):
    generate(_program(), tmp_path / "a")
    generate(_program(), tmp_path / "b")
    q = _qmodel()  # a second compile of the same model and plan
    generate(compile_for_codegen(q, resolve(get_builtin("last-k:6", "tiny"), q.spec), lr=LR, seed=SEED), tmp_path / "c")
    for name in FILES:
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes() == (tmp_path / "c" / name).read_bytes(), name
    assert render(_program()) == _files()
    assert _files("full")["model.c"] != _files()["model.c"]


def test_one_static_arena_of_the_planned_size_with_tensors_at_planned_offsets():
    program, files = _program(), _files()
    c, h = files["model.c"], files["model.h"]
    size = max(program.train.plan.arena_bytes, program.inference.plan.arena_bytes)
    assert f"#define MCT_ARENA_BYTES {size} " in h
    assert c.count("static uint8_t arena[MCT_ARENA_BYTES] __attribute__((aligned(8)));") == 1
    stages = {"T": program.train, "I": program.inference}
    for body, tag in ((_function(c, "run_train"), "T"), (_function(c, "run_inference"), "I")):
        stage = stages[tag]
        calls = re.findall(r"/\* (\d+): (\S+) \((\w+)\) \*/\n(.*?)\n\s*AFTER", body, re.S)
        assert len(calls) == len(stage.graph.ops)
        for (index, name, kind, call), op in zip(calls, stage.graph.ops):
            assert (name, kind) == (op.name, op.kind)
            used = {int(o) for o in re.findall(r"\b(?:A8|A32|AF|AB)\((\d+)\)", call)}
            planned = {stage.offset(t) for t in op.inputs + op.outputs if t in stage.storage}
            scratch = f"{op.name}.scratch"
            planned |= {stage.plan.offsets[k] for k in stage.plan.offsets if k == scratch}
            if kind in ("mbconv_rows", "mbconv_grad"):  # also addresses inside the scratch / in their tables
                used |= _table_offsets(c, f"{tag}{index}")
                start = stage.plan.offsets.get(scratch)
                size = next((b.size for b in stage.buffers if b.name == scratch), 0)
                inside = {u for u in used if start is not None and start < u < start + size}
                assert used - inside == planned, (name, used - inside, planned)
            else:
                assert used == planned, (name, used, planned)


def test_frozen_data_is_const_and_trained_slices_are_sram():
    program, c, h = _program(), _files()["model.c"], _files()["model.h"]
    storages = parameter_storage(program)
    trained = [s for s in storages if s.trained]
    assert trained and len(trained) < len(storages)
    for s in storages:
        assert f"static const {_ctype(s.dtype)} {s.flash}[{int(np.prod(s.shape))}] = {{" in c
        if s.trained:
            assert f"static {_ctype(s.dtype)} {s.sram}[{int(np.prod(s.kept_shape))}];" in c
    writable = re.findall(r"^static (?!const)[\w ]+?(\w+)\[", c, re.M)
    assert sorted(writable) == sorted(["arena"] + [s.sram for s in trained])
    assert f"#define MCT_TRAINABLE_BYTES {program.report['trainable_bytes']} " in h
    manifest = json.loads(_files()["manifest.json"])
    assert [p["name"] for p in manifest["params"]] == [s.name for s in storages]
    assert manifest["save_bytes"] == 32 + program.report["trainable_bytes"] + 4  # header, copies, CRC-32


def test_the_header_documents_the_api():
    h = _files()["model.h"]
    for decl in ("void mct_init(void);", "int mct_predict(const int8_t *image, float *logits);",
                 "float mct_train_step(const int8_t *image, int label);",
                 "size_t mct_save(uint8_t *buf, size_t cap);", "int mct_restore(const uint8_t *buf, size_t len);"):
        assert decl in h
        name = decl.split("(")[0].split()[-1].lstrip("*")
        assert h.count(name) >= 2, f"{name} is declared but not documented"
    code = [re.sub(r"/\*.*?\*/", "", text, flags=re.S) for name, text in _files().items() if name[-2:] in (".c", ".h")]
    for forbidden in ("malloc", "free(", "printf", "<stdio.h>", "<stdlib.h>"):
        assert all(forbidden not in text for text in code), forbidden


@pytest.mark.parametrize("cc", ["host", "arm"])
def test_objects_need_nothing_but_memcpy_memset_floorf_expf_logf(tmp_path, cc):
    if cc == "arm":
        if shutil.which("arm-none-eabi-gcc") is None:
            pytest.skip("arm-none-eabi-gcc not installed (scripts/setup_system.sh)")
        tools, flags = ("arm-none-eabi-gcc", "arm-none-eabi-nm"), [*CFLAGS, *ARM_FLAGS]
    else:
        tools, flags = (compiler(), shutil.which("nm") or "nm"), list(CFLAGS)
    generate(_program("full"), tmp_path)
    undefined, defined = set(), set()
    for source in SOURCES:
        obj = tmp_path / (source + ".o")
        result = subprocess.run([tools[0], *flags, "-c", str(tmp_path / source), "-o", str(obj)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        symbols = subprocess.run([tools[1], str(obj)], capture_output=True, text=True, check=True).stdout
        for line in symbols.splitlines():
            parts = line.split()
            (undefined if parts[-2] == "U" else defined).add(parts[-1])
    external = {s for s in undefined - defined if not s.startswith("__aeabi_")}  # libgcc soft-double helpers
    assert external <= ALLOWED_CALLS, external - ALLOWED_CALLS


def test_op_kinds_without_a_c_kernel_are_refused_by_name():
    q = _qmodel()
    default = compile_training(q, resolve(get_builtin("last-k:6", "tiny"), q.spec), lr=LR, seed=SEED)
    assert unsupported_kinds(default) == {}  # the default pipeline's fused kinds have C kernels
    assert {"mbconv_rows", "mbconv_grad"} <= {op.kind for op in default.train.graph.ops}
    program = _program()
    ops = list(program.train.graph.ops)
    ops[3] = replace(ops[3], kind="frobnicate")
    odd = replace(program, train=replace(program.train, graph=program.train.graph.with_ops(ops)))
    assert unsupported_kinds(odd) == {"frobnicate": 1}
    with pytest.raises(CodegenError, match=r"frobnicate \(1 ops\)"):
        render(odd)


def test_the_image_is_streamed_and_a_whole_read_of_a_streamed_input_is_refused():
    program, c = _program(), _files()["model.c"]
    assert program.train.graph.streams == ("image",) and "image" not in program.train.storage
    assert "mct_mbconv_rows(&T0, arena, image);" in c  # the caller's buffer is the stream source
    assert "memcpy(A8(" not in _function(c, "mct_train_step") and "memcpy(A8(" not in _function(c, "mct_predict")
    q = _qmodel()
    whole = compile_for_codegen(q, resolve(get_builtin("last-k:6", "tiny"), q.spec), lr=LR, seed=SEED,
                                stream_input=False, row_fusion="off")
    assert not whole.train.graph.streams and "image" in whole.train.storage
    streamed = replace(whole, train=replace(whole.train, graph=replace(whole.train.graph, streams=("image",))))
    reader = whole.train.graph.ops[0]
    with pytest.raises(CodegenError, match=rf"op {re.escape(reader.name)} \({reader.kind}\) reads the streamed"):
        render(streamed)


def _table_offsets(c: str, prefix: str) -> set[int]:
    """Arena offsets in the operand tables of a fused op (structs named ``prefix`` + a lower-case suffix)."""
    found = set()
    for body in re.findall(rf"static const \w+ {prefix}(?:[a-z_]\w*)?(?:\[\d*\])? = (.*?);\n", c, re.S):
        found |= {int(v) for v in re.findall(r"\.(?:offset|window|mask_offset) = (\d+)", body)}
    return found


def _function(c: str, name: str) -> str:
    """The text of the C function ``name`` (a definition at the start of a line) up to its closing brace."""
    start = re.search(rf"^[\w ]+[ *]{name}\(", c, re.M).start()
    return c[start:c.index("\n}\n", start)]


def _ctype(dtype: str) -> str:
    return {"int8": "int8_t", "int32": "int32_t"}[dtype]


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), 0.0, -0.1, 1e39])
def test_a_learning_rate_that_is_not_a_finite_positive_float32_is_refused(lr):
    """It is compiled into the C as a float32 literal: NaN, inf or 1e39 (inf as float32) would train NaN."""
    from mcutrain.quant.random_model import random_qmodel
    from mcutrain.sparse import get_builtin, resolve
    from mcutrain.train.learning_rate import LearningRateError

    q = random_qmodel("tiny", 32, 4, seed=1)[0]
    with pytest.raises(LearningRateError, match="lr must be a finite number > 0"):
        compile_for_codegen(q, resolve(get_builtin("full", "tiny"), q.spec), lr=lr, seed=0)


def test_a_hostile_title_stays_inside_its_comment():
    """A scheme or architecture name reaches the files' title line: one holding ``*/`` and code
    (found by the fuzz suite) must not end the comment and put its code into the program."""
    hostile = 'x */ __attribute__((constructor)) static void own(void) { } /*\nline two\x00'
    files = render(_program(), title=hostile)
    for name in ("model.c", "model.h"):
        first_line = files[name].split("\n", 1)[0]
        first_comment = files[name].split("*/", 1)[0]
        assert "__attribute__" in first_comment  # kept as text, inside the comment
        assert "line two" in first_line  # the newline did not start a line of code
