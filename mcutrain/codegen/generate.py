"""Compiled ``Program`` -> a folder of dependency-free C: ``model.h``, ``model.c``, the kernels.

``render(program)`` is a pure function from the program to ``{file name: text}``: the per-op C comes
from the emitter table (``emitters.EMITTERS``), the files from the templates in ``templates/``; the
kernel library (``c/mct_kernels.{h,c}``, ``c/mct_fused.{h,c}``) and the fixed-point header
(``mcutrain/quant/mct_int8.h``) are copied as they are. Same program -> same bytes (no dates, no
paths, no dict-order accidents).
``generate(program, folder)`` writes the files (and only then touches the disk).

What ends where (DESIGN.md section 7): frozen parameters, the initial values of trained ones and all
constants are ``static const`` (Flash); ONE ``static uint8_t arena[N]`` (N = the larger of the
training and inference plans) holds every tensor at its planned offset (``Stage.offset``), scratch
buffers included; the trained slices of parameters are ``static`` arrays (SRAM) that ``mct_init``
fills from Flash. ``manifest.json`` describes the result for tools (shapes, sizes, the save layout).

The backward's accumulators (``accumulate``): "float32" (the default) sums the backward's
contractions in ``float``, on the FPU of a single-precision core (the Cortex-M7, where ``double`` is
soft-float: a third of every training step); the host build and the firmware stay equal bit for bit,
the NumPy reference executor (which sums in float64) within float32 rounding: forward still
bit-exact, losses and trained parameters within the tolerance that ``tests/codegen/test_codegen_accumulate.py``
states, the training outcome of 1000 steps as ``tests/codegen/test_codegen_accumulate_outcome.py``
measures it (its docstring: when a run drifts onto another stochastic-rounding trajectory) (DESIGN.md
section 3, decision of 2026-12). "float64" is the audit mode: it sums them in
``double`` like the reference's float64 sums, so the host build equals the NumPy reference executor
to its float rounding, bit for bit. Decision: a GENERATE-TIME option, not
a build define. The generated folder is what goes into a firmware project, so it must carry its
arithmetic: the mode is written into the folder's ``mct_kernels.h`` (``#define MCT_ACC_T float``),
``model.h`` (``MCT_ACC_BITS``, checked by ``model.c`` at compile time against the kernel header it is
built with) and ``manifest.json`` (``"accumulate"``); the host build, the Cortex-M7 build,
``target.json`` and ``mcutrain run`` all read it from there, and no one has to remember a -D flag (a
conflicting -DMCT_ACC_T is a macro redefinition, an error under the builds' -Werror). The float64
mode's kernel header is the library's, byte for byte (``c/mct_kernels.h`` says ``double``: folders
generated before the option, whose manifest has no ``accumulate``, are float64).

The forward's int8 kernels (``kernels``), chosen the same way (a generate-time option, written into
the folder's ``mct_kernels.h`` as ``#define MCT_DSP 0|1`` and into ``manifest.json``): "portable" (the
default here; plain C99, any core, the only set the host builds) or "dsp" (``c/mct_dsp.h``: Arm ACLE
intrinsics of the Cortex-M DSP extension, SMLAD on int16 pairs; the default of the cortex-m7 target,
``targets.TARGET_KERNELS``). Both compute the same int32 sums and roundings: the forward is bit-exact
either way (tests/codegen/test_codegen_dsp.py).

The learning rate is a runtime float in ``model.c`` (``mct_init`` sets it to the compiled lr, every
update's Flash struct points at it) so that the engine's guard can halve it: after every step
``mct_train_step`` checks a running loss estimate and, on a blow-up, restores good parameters (Flash,
or a trusted snapshot in a buffer the caller lent) and halves the rate (model.h's API comment; the
settings are ``GUARD_*`` and ``guard_thresholds`` here, in ``manifest.json``'s ``guard``). A step at an
unchanged rate computes what it computed before the guard, bit for bit. The guard's state and the step
counter are ``MCT_STATE_BYTES`` of SRAM, counted by the compile report (``engine/memory/engine_state``).

Only programs made of op kinds with a C kernel can be generated (``unsupported_kinds``): since the
fused kernels of ``c/mct_fused.{h,c}`` that is every kind of the default pipeline (``CODEGEN_PASSES``,
``compile_for_codegen``), with the image streamed: the caller's image pointer (RAM or Flash) is the
stream source, the row pipeline copies its rows into the ring the plan reserves.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from string import Template
from typing import Mapping

import numpy as np

from mcutrain.codegen.emitters import EMITTERS, OpContext, Symbols, emit
from mcutrain.codegen.errors import CodegenError
from mcutrain.codegen.host import read_manifest
from mcutrain.codegen.literals import array_definition, comment, comment_text, float_literal, identifier
from mcutrain.codegen.storage import (MODEL_ID_BYTES, SAVE_CRC_BYTES, SAVE_HEADER_BYTES, SAVE_VERSION, ParamStorage,
                                      model_identity, parameter_storage, save_bytes, trainable_bytes)
from mcutrain.engine.compile import compile_training
from mcutrain.engine.memory.engine_state import ENGINE_STATE_BYTES
from mcutrain.engine.passes import PIPELINE
from mcutrain.io.atomic import atomic_write_text
from mcutrain.train.learning_rate import check_learning_rate

__all__ = ["ACCUMULATE", "CODEGEN_PASSES", "DEFAULT_ACCUMULATE", "FILES", "KERNELS", "compile_for_codegen", "generate",
           "render",
           "unsupported_kinds"]

HERE = Path(__file__).parent
KERNEL_SOURCES = ("mct_kernels.c", "mct_pointwise.c", "mct_depthwise.c", "mct_backward.c", "mct_backward8.c",
                  "mct_graph_ops.c")  # single-op kernels
KERNEL_FILES = {"mct_kernels.h": HERE / "c" / "mct_kernels.h", **{name: HERE / "c" / name for name in KERNEL_SOURCES},
                "mct_fused.h": HERE / "c" / "mct_fused.h", "mct_fused.c": HERE / "c" / "mct_fused.c",
                "mct_dsp.h": HERE / "c" / "mct_dsp.h", "mct_dsp_depthwise.h": HERE / "c" / "mct_dsp_depthwise.h",
                "mct_dsp_pointwise.h": HERE / "c" / "mct_dsp_pointwise.h",
                "mct_requant.h": HERE / "c" / "mct_requant.h",
                "mct_simd.h": HERE / "c" / "mct_simd.h",
                "mct_mve.h": HERE / "c" / "mct_mve.h",
                "mct_fused_grad.c": HERE / "c" / "mct_fused_grad.c",
                "mct_fused_pair.c": HERE / "c" / "mct_fused_pair.c",
                "mct_fused_depthwise.c": HERE / "c" / "mct_fused_depthwise.c",
                "mct_backward8.h": HERE / "c" / "mct_backward8.h",
                "mct_int8.h": HERE.parent / "quant" / "mct_int8.h",
                "mct_int8_grad.h": HERE.parent / "quant" / "mct_int8_grad.h"}
FILES = ("model.h", "model.c", "manifest.json") + tuple(KERNEL_FILES)
SOURCES = ("model.c", *KERNEL_SOURCES, "mct_fused.c", "mct_fused_grad.c", "mct_fused_pair.c",
           "mct_fused_depthwise.c")  # what a build compiles
STAGES = (("train", "T", 0), ("inference", "I", 1))  # (Program attribute, struct prefix, trace id)
# Backward accumulator modes: name -> (C type of mct_acc_t, its bits); the first is the default (the
# FPU's float32), float64 the audit mode (bit-equal to the NumPy reference executor).
ACCUMULATE = {"float32": ("float", 32), "float64": ("double", 64)}
DEFAULT_ACCUMULATE = next(iter(ACCUMULATE))
ACC_LINE = "#define MCT_ACC_T double\n"  # the line of c/mct_kernels.h that fixes the accumulator
# Forward kernel sets: name -> the value of MCT_DSP (c/mct_kernels.h); the first is the library's text.
KERNELS = {"portable": 0, "dsp": 1}
DSP_LINE = "#define MCT_DSP 0\n"  # the line of c/mct_kernels.h that picks the forward's kernels

# The passes whose op kinds have C kernels: all of the default pipeline (the fused row pipelines and
# channel-by-channel block backwards included, ``c/mct_fused.h``).
CODEGEN_PASSES = PIPELINE


def compile_for_codegen(qmodel, plan, *, lr: float, seed: int, stream_input: bool = True, row_fusion: str = "auto",
                        backward: str = "float32"):
    """``compile_training`` with the passes the C target supports: the same program (and memory plan)
    that ``mcutrain compile`` reports, streamed input and row pipelines included (the C program's
    arena is the reported arena). ``stream_input`` / ``row_fusion`` as in ``compile_training``."""
    check_learning_rate(lr, "lr")  # compiled into the C as a float32 literal: NaN/inf would train NaN weights
    return compile_training(qmodel, plan, lr=lr, seed=seed, passes=CODEGEN_PASSES, stream_input=stream_input,
                            row_fusion=row_fusion, backward=backward)


def unsupported_kinds(program) -> dict[str, int]:
    """Op kinds of the program without a C kernel -> how many ops of that kind (empty: all supported)."""
    missing: dict[str, int] = {}
    for attr, _, _ in STAGES:
        for op in getattr(program, attr).graph.ops:
            if op.kind not in EMITTERS:
                missing[op.kind] = missing.get(op.kind, 0) + 1
    return dict(sorted(missing.items()))


def check_supported(program) -> None:
    missing = unsupported_kinds(program)
    if missing:
        kinds = ", ".join(f"{k} ({n} ops)" for k, n in missing.items())
        raise CodegenError(f"no C kernel for op kind(s): {kinds}. Compile for C with "
                           f"mcutrain.codegen.compile_for_codegen (passes=CODEGEN_PASSES)")
    for attr, _, _ in STAGES:
        graph = getattr(program, attr).graph
        if len(graph.streams) > 1 or (graph.streams and graph.streams[0] != graph.inputs[0]):
            raise CodegenError(f"the {attr} program streams {list(graph.streams)}; the C target streams the image "
                               f"({graph.inputs[0]!r}) only")
        for op in graph.ops:
            streamed = [n for n in op.inputs if n in graph.streams]
            if streamed and (op.kind != "mbconv_rows" or op.inputs[0] not in streamed or not op.attr("stream")):
                raise CodegenError(f"the {attr} program's op {op.name} ({op.kind}) reads the streamed input(s) "
                                   f"{streamed} whole; only a row pipeline (mbconv_rows) reads a streamed image")


# ----------------------------------------------------------------------------------------------


def check_accumulate(accumulate: str) -> tuple[str, int]:
    """(C type, bits) of an accumulator mode; a clear error for any other name."""
    if accumulate not in ACCUMULATE:
        raise CodegenError(f"accumulate={accumulate!r} is not a mode; modes: {', '.join(ACCUMULATE)} "
                           f"(float32, the default: faster on a single-precision FPU; float64: bit-equal to the "
                           f"reference)")
    return ACCUMULATE[accumulate]


def check_kernels(kernels: str) -> int:
    """The MCT_DSP value of a forward kernel set; a clear error for any other name."""
    if kernels not in KERNELS:
        raise CodegenError(f"kernels={kernels!r} is not a kernel set; sets: {', '.join(KERNELS)} "
                           f"(portable: plain C for any core, dsp: the Cortex-M DSP extension's SMLAD)")
    return KERNELS[kernels]


def render(program, title: str = "mcutrain training program", *,
           accumulate: str = DEFAULT_ACCUMULATE, kernels: str = "portable") -> dict[str, str]:
    """Every file of the generated folder, as text (pure: no file is written); ``accumulate``: the
    backward's accumulators, "float32" (default) or "float64" (audit mode); ``kernels``: the forward's,
    "portable" or "dsp" (module docstring)."""
    check_accumulate(accumulate)
    check_kernels(kernels)
    check_supported(program)
    storages = parameter_storage(program)
    params = {s.name: s for s in storages}
    symbols = Symbols(_all_constants(program), params, lr=program.options.lr)
    stages = {attr: _stage_code(getattr(program, attr), tag, trace, symbols) for attr, tag, trace in STAGES}
    values = _values(program, storages, symbols, stages, title, accumulate)
    values["kernels"] = kernels
    files = {"model.h": _template("model.h.in").substitute(values),
             "model.c": _template("model.c.in").substitute(values)}
    files.update({name: path.read_text() for name, path in KERNEL_FILES.items()})
    files["mct_kernels.h"] = _with_options(files["mct_kernels.h"], accumulate, kernels)
    files["manifest.json"] = _manifest(program, storages, values, files)
    return files


def _with_line(header: str, library_line: str, line: str, what: str) -> str:
    """The kernel header with its one ``library_line`` replaced by ``line`` (a generate-time option)."""
    if header.count(library_line) != 1:
        raise CodegenError(f"c/mct_kernels.h must {what} on exactly one line {library_line.strip()!r}")
    return header.replace(library_line, line)


def _with_options(header: str, accumulate: str, kernels: str) -> str:
    """The kernel header with ``MCT_ACC_T`` the mode's C type and ``MCT_DSP`` the kernel set's value (the
    library's text for float64 and portable)."""
    header = _with_line(header, ACC_LINE, f"#define MCT_ACC_T {ACCUMULATE[accumulate][0]}\n", "define the accumulator")
    return _with_line(header, DSP_LINE, f"#define MCT_DSP {KERNELS[kernels]}\n", "pick the kernels")


def generate(program, folder, title: str = "mcutrain training program", *,
             accumulate: str = DEFAULT_ACCUMULATE, kernels: str = "portable") -> list[Path]:
    """Render the program and write its files into ``folder`` (created); returns their paths.
    ``accumulate``: the backward's accumulators, "float32" (default) or "float64" (audit mode, bit-equal
    to the NumPy reference executor); ``kernels``: the forward's, "portable" (default) or "dsp" (module
    docstring)."""
    files = render(program, title, accumulate=accumulate, kernels=kernels)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in FILES:  # each file whole (a folder whole: ``staging.staged_folder``, as build_target does)
        path = folder / name
        atomic_write_text(path, files[name])
        paths.append(path)
    return paths


def _template(name: str) -> Template:
    return Template((HERE / "templates" / name).read_text())


def _all_constants(program) -> dict[str, np.ndarray]:
    constants = dict(program.train.graph.constants)
    for name, array in program.inference.graph.constants.items():
        if name in constants and not np.array_equal(constants[name], array):
            raise CodegenError(f"constant {name!r} differs between the training and inference programs")
        constants.setdefault(name, array)
    return constants


def _stage_code(stage, tag: str, trace: int, symbols: Symbols) -> tuple[str, tuple[str, ...]]:
    """(the stage function's body, the operand structs of its ops)."""
    body, decls = [], []
    for index, op in enumerate(stage.graph.ops):
        emitted = emit(OpContext(op, index, stage, tag, symbols))
        decls.extend(emitted.decls)
        body.append(f"    {comment(f'{index}: {op.name} ({op.kind})')}\n    {emitted.code}\n    AFTER({trace}, {index});")
    return "\n".join(body), tuple(decls)


def _flash_arrays(storages: tuple[ParamStorage, ...], symbols: Symbols) -> str:
    """Definitions of the Flash arrays emitted code uses: parameters (model order), constants, then the tables the
    generator computed (Symbols.table)."""
    params = {s.name for s in storages}
    defs = []
    for s in storages:
        kind = f"trained slice {s.kept_shape} copied to SRAM" if s.trained else "frozen"
        defs.append(array_definition(s.flash, symbols.constants[s.name], s.dtype, const=True,
                                     note=f"{s.name} {list(s.shape)} {s.dtype}, {kind}"))
    for name in symbols.used:
        if name not in params:
            array = symbols.constants[name]
            defs.append(array_definition(identifier(name, "c_"), array, _dtype(name, array), const=True,
                                         note=f"{name} {list(array.shape)}"))
    return "\n\n".join(defs + list(symbols.tables.values()))


def _dtype(name: str, array: np.ndarray) -> str:
    dtype = np.asarray(array).dtype.name
    if dtype not in ("int8", "int32", "float32"):
        raise CodegenError(f"constant {name!r} has dtype {dtype}; C constants are int8, int32 or float32")
    return dtype


def _sram_arrays(storages) -> str:
    lines = []
    for s in storages:
        if s.trained:
            ctype = "int8_t" if s.dtype == "int8" else "int32_t"
            n = int(np.prod(s.kept_shape))
            lines.append(f"static {ctype} {s.sram}[{n}]; {comment(f'{s.name}{list(s.kept_shape)} of {list(s.shape)}')}")
    return "\n".join(lines)


def _init_body(storages) -> str:
    lines = []
    for s in storages:
        if not s.trained:
            continue
        if s.kept_shape == s.shape:
            lines.append(f"    memcpy({s.sram}, {s.flash}, sizeof {s.sram});")
        else:
            _, cols, inner = s.matrix()
            rows, kept_cols = s.kept_matrix()
            lines.append(f"    mct_copy_slice_i8({s.sram}, {s.flash}, {cols}, {inner}, {rows}, {kept_cols});")
    return "\n".join(lines)


def _save_bodies(storages) -> tuple[str, str]:
    save, restore = [], []
    for s in storages:
        if s.trained:
            at = SAVE_HEADER_BYTES + s.save_offset
            save.append(f"    memcpy(buf + {at}, {s.sram}, sizeof {s.sram});")
            restore.append(f"    memcpy({s.sram}, buf + {at}, sizeof {s.sram});")
    return "\n".join(save), "\n".join(restore)


def _summary(program, storages) -> str:
    r = program.report
    trained = [s for s in storages if s.trained]
    lines = [f"arena {max(program.train.plan.arena_bytes, program.inference.plan.arena_bytes)} bytes "
             f"(training {program.train.plan.arena_bytes}, inference {program.inference.plan.arena_bytes}); "
             f"trained parameter copies {trainable_bytes(storages)} bytes ({len(trained)} parameters); engine "
             f"state (step counter, guard) {ENGINE_STATE_BYTES} bytes",
             f"Flash (parameters and constants, incl. initial values of trained ones): "
             f"{r.get('flash_with_initial_trainables_bytes', 'n/a')} bytes",
             f"SGD at batch 1: lr {program.options.lr}, seed {program.options.seed}, update rule "
             f"{program.options.rule}, QAS {program.options.qas}"]
    return "\n".join(f" * {line}" for line in lines)


# The guard's fixed settings (model.h's API comment says why each is what it is).
GUARD_WINDOW = 32  # losses in the running estimate: single losses at batch 1 are heavy-tailed, 32 average them
GUARD_PRIOR = 4  # losses of log K the estimate starts with: the first real losses do not stand alone
GUARD_PROBATION_STEPS = 64  # steps after a rollback under the halved rise limit: the new rate proves itself
# Healthy steps between snapshots: long against the trust delay (the newest snapshot is pending a
# quarter of the time: a rollback then goes to Flash), short against a run (a rollback loses at most
# this much); a CRC'd copy costs about one step's update pass, nothing at 1 in 256.
GUARD_SNAPSHOT_EVERY = 256
GUARD_TRUST_STEPS = 64  # two windows of the estimate: a drift it finds late is found by then


def guard_thresholds(classes: int) -> dict[str, np.float32]:
    """The guard's loss thresholds for ``classes`` = K classes, as the C compares them (float32), with
    M = max(log K, 1): log K (where the running estimate starts), the estimate's allowed rise above its
    lowest value M (M / 2 on probation after a rollback), the clip of each loss in the estimate 3 M,
    and the per-sample ceiling max(50, 10 log K). Why these: model.h's API comment."""
    log_k = float(np.log(classes))
    m = max(log_k, 1.0)
    return {"log_classes": np.float32(log_k), "rise_limit": np.float32(m), "probation_rise_limit": np.float32(0.5 * m),
            "loss_clip": np.float32(3.0 * m),
            "loss_ceiling": np.float32(max(50.0, 10.0 * log_k))}


def _guard_values(program, classes: int) -> dict[str, object]:
    values = {name: float_literal(v) for name, v in guard_thresholds(classes).items()}
    return {**values, "lr": float_literal(np.float32(program.options.lr)), "state_bytes": ENGINE_STATE_BYTES,
            "snapshot_every": f"{GUARD_SNAPSHOT_EVERY}u", "trust_steps": f"{GUARD_TRUST_STEPS}u",
            "window": f"{GUARD_WINDOW}u", "prior": f"{GUARD_PRIOR}u", "probation_steps": f"{GUARD_PROBATION_STEPS}u"}


def _values(program, storages, symbols: Symbols, stages: Mapping, title: str, accumulate: str) -> dict[str, object]:
    train, infer = program.train, program.inference
    (_, channels, height, width) = train.graph.tensor("image").shape
    classes = infer.graph.tensor(infer.graph.outputs[0]).shape[1]
    structs = "\n\n".join(stages["train"][1] + stages["inference"][1])
    save, restore = _save_bodies(storages)
    trainable = trainable_bytes(storages)
    model_id = model_identity(storages, symbols.constants)
    ctype, bits = ACCUMULATE[accumulate]
    return {
        "title": comment_text(title), "summary": _summary(program, storages),
        "accumulate": accumulate, "acc_bits": bits, "acc_type": ctype,
        "image_streamed": int("image" in train.graph.streams and "image" in infer.graph.streams),
        "image_channels": channels, "image_height": height, "image_width": width,
        "image_bytes": channels * height * width, "num_classes": classes,
        "arena_bytes": max(train.plan.arena_bytes, infer.plan.arena_bytes),
        "train_arena_bytes": train.plan.arena_bytes, "inference_arena_bytes": infer.plan.arena_bytes,
        "trainable_bytes": trainable, "save_bytes": save_bytes(storages),
        "model_id": model_id.hex(), "model_id_bytes": MODEL_ID_BYTES,
        "model_id_bytes_c": ", ".join(f"0x{b:02x}u" for b in model_id),
        "save_version": SAVE_VERSION, "save_header_bytes": SAVE_HEADER_BYTES,
        "flash": _flash_arrays(storages, symbols), "sram": _sram_arrays(storages), "structs": structs,
        "train_ops": len(train.graph.ops), "inference_ops": len(infer.graph.ops),
        "train_body": stages["train"][0], "inference_body": stages["inference"][0],
        "init_body": _init_body(storages), "save_body": save, "restore_body": restore,
        "host_params": ",\n".join(f"        {s.flash}" for s in storages),
        "train_image": _image_copy(train), "train_label": train.offset("label"),
        "train_loss": train.offset(train.graph.outputs[0]),
        "inference_image": _image_copy(infer), "inference_logits": infer.offset(infer.graph.outputs[0]),
        **_guard_values(program, classes),
    }


def _image_copy(stage) -> str:
    """The statement that hands the caller's image to a stage: a copy into the arena, or nothing when
    the stage streams it (its row pipeline reads the caller's buffer row by row)."""
    if "image" in stage.graph.streams:
        return "/* the image is streamed: its row pipeline copies rows of the caller's buffer into a ring */"
    return f"memcpy(A8({stage.offset('image')}), image, MCT_IMAGE_BYTES);"


def check_sources(folder) -> None:
    """Every generated file of ``folder`` as generated (``manifest.json``'s ``sha256``), or a
    ``CodegenError`` naming the first that is missing or differs: a folder edited, half-copied or
    mixed with another program's files is refused by name instead of failing in the C compiler.
    Folders generated before the hashes were recorded pass unchecked."""
    folder = Path(folder)
    for name, digest in sorted(read_manifest(folder).get("sha256", {}).items()):
        path = folder / name
        if not path.is_file():
            raise CodegenError(f"{folder}: {name} is missing; generate the folder again (mcutrain compile ... --out)")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise CodegenError(f"{folder}: {name} is not the file that was generated with this manifest.json "
                               f"(edited, or half-written?); generate the folder again (mcutrain compile ... --out)")


def _manifest(program, storages, values: Mapping[str, object], files: Mapping[str, str]) -> str:
    keys = ("image_channels", "image_height", "image_width", "num_classes", "arena_bytes", "train_arena_bytes",
            "inference_arena_bytes", "trainable_bytes", "save_bytes", "state_bytes")
    manifest = {
        "format": "mcutrain-codegen/1",
        "title": values["title"],
        **{k: values[k] for k in keys},
        "model_id": values["model_id"],
        "save": {"format": SAVE_VERSION, "header_bytes": SAVE_HEADER_BYTES, "crc_bytes": SAVE_CRC_BYTES},
        "accumulate": values["accumulate"], "kernels": values["kernels"],
        "backward": program.options.backward,  # "int8": the integer backward (c/mct_backward8.c)
        "lr": program.options.lr, "seed": program.options.seed,
        "guard": {"window": GUARD_WINDOW, "prior": GUARD_PRIOR, "probation_steps": GUARD_PROBATION_STEPS,
                  "snapshot_every": GUARD_SNAPSHOT_EVERY, "trust_steps": GUARD_TRUST_STEPS,
                  **{k: float(v) for k, v in guard_thresholds(values["num_classes"]).items()}},
        "sources": list(SOURCES),
        "sha256": {name: hashlib.sha256(text.encode()).hexdigest() for name, text in sorted(files.items())},
        "params": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape),
                    "kept_shape": list(s.kept_shape) if s.trained else None, "save_offset": s.save_offset}
                   for s in storages],
    }
    return json.dumps(manifest, indent=1, sort_keys=True) + "\n"
