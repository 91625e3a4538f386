"""The Cortex-M targets: a generated folder -> firmware ELF for one core's typical part, and its runs under QEMU.

    report = build_firmware("out/", core="cortex-m7")  # board files + arm-none-eabi-gcc -> out/firmware.elf
    result = run_qemu("out/firmware.elf", images, labels, eval_images, eval_labels, core="cortex-m7")

The cores (Cortex-M7, M4, M33, M55, M3), their parts' memory and their QEMU boards are rows of
``mcutrain.codegen.cores.CORES``; everything below is the same for all of them. What follows says
"the M7" where the numbers are the M7's: the paper's core and the default target.

Why a target of its own: the host build proves the arithmetic, but only a real cross build says what
the program costs on the microcontroller (Flash and SRAM from the ELF, the stack the kernels really
use, instructions per step). The build (DESIGN.md section 7) uses the host's C flags (IEEE float32,
no contraction, no strict aliasing) plus the core's (-mcpu=cortex-m7 -mthumb -mfloat-abi=hard
-mfpu=fpv5-sp-d16 for the M7; -mfloat-abi=soft on the M3, which has no FPU: its float32 is libgcc's,
IEEE-rounded like the FPU's), and links against the part's map (the M7: STM32F746, 1 MB Flash, 320 KB
SRAM) placed at the addresses the core's QEMU board runs, and, for a part with more than 256 KB of
SRAM, separately against a strict 256 KB SRAM map to say whether the paper's "under 256 KB" holds.

Memory is checked before linking: the object files' section sizes plus the stack reserve against each
region, with an error that names the region and the numbers (``MemoryOverflowError``); a linker that
still overflows (the C library's few KB) is turned into the same error, never shown raw.

The harness (``board/harness.c``) reads samples from the host through semihosting and prints JSON
lines; the runner here writes the input file (``INPUT_FORMAT``), starts QEMU with
``-icount shift=0,align=off,sleep=off`` (one instruction = 1 ns of virtual time, so timer ticks count
instructions: 40 per tick on the mps2 boards' 25 MHz timer, the core's ``instructions_per_tick``; checked
on every run against a loop of known length) and parses the lines.
A run equals the host build of the same folder bit for bit (losses, logits, trained parameters), in
either accumulator mode (``generate(..., accumulate=)``): the forward is integer, the loss uses the
kernels' own exp/log (not newlib's or glibc's libm), float32 is IEEE with no contraction on both, and
float64 accumulators are soft-float here, rounded as IEEE requires. The mode is in the folder's
sources (``mct_kernels.h``); the build reports it (``accumulate``) and needs no flag for it.

Profiles (opt-in, ``build_firmware(..., profile=True)``): a second ELF, ``firmware-profile.elf``,
built with -DMCT_TRACE, whose harness reads the timer after every op (``board/harness.c``); the
default ``firmware.elf`` and its numbers are untouched (its objects are compiled without the flag).
``op_profile`` turns a profile run into per-op instructions: ticks x 40 (the M7) between consecutive ops, minus
the hook's own cost measured in the same run (``hook_cost``). Per op the resolution is one tick (40
instructions); the sum over a step telescopes, so it is exact to a tick plus what each hook site costs
beyond the probed hook (the NULL test, the arguments, registers kept around the call), which stays in
the ops' counts: measured 8 (tiny model) to 24 (paper networks) instructions per op.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

import numpy as np

from mcutrain.codegen.cores import CORES, STACK_RESERVE, Core, MemoryMap, core_of
from mcutrain.codegen.errors import CodegenError
from mcutrain.codegen.host import CFLAGS, accumulate_of, kernels_of, read_manifest
from mcutrain.io.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["BOARD_FILES", "DEFAULT_CORE", "M7_CFLAGS", "MemoryMap", "MemoryOverflowError", "QemuRun", "STM32F746",
           "ToolMissingError", "build_firmware", "cflags_of", "elf_footprint", "object_footprint",
           "op_profile", "run_qemu",
           "schedule_ops", "tools_available"]

BOARD = Path(__file__).parent / "board"
BOARD_FILES = ("startup.c", "board.c", "harness.c", "mct_board.h")
BOARD_SOURCES = ("startup.c", "board.c", "harness.c")
DEFAULT_CORE = "cortex-m7"


def cflags_of(core: Core) -> tuple[str, ...]:
    """The C flags of a firmware for ``core``: the host's (IEEE float32, no contraction) plus its own."""
    return CFLAGS + core.arch_flags + ("-ffunction-sections", "-fdata-sections")


M7_CFLAGS = cflags_of(CORES[DEFAULT_CORE])
# No C start-up files and no semihosting library: the harness calls semihosting itself (no heap, no
# stdio buffers). libc: memcpy/memset; libm: floorf; libgcc: the soft double of the fp32-only FPU.
LINK_FLAGS = ("--specs=nano.specs", "-nostartfiles", "-Wl,--gc-sections")
LIBS = ("-lm", "-lc", "-lgcc")
SETUP_HINT = "install them with `make system` (scripts/setup_system.sh)"

INSTRUCTIONS_PER_TICK = CORES[DEFAULT_CORE].instructions_per_tick  # the M7's board: 40 (25 MHz timer, cores.py)
INPUT_NAME = "mct_input.bin"
INPUT_MAGIC, INPUT_VERSION = 0x4954434D, 1  # "MCTI"
FLAG_EVAL_BEFORE, FLAG_EVAL_AFTER = 1, 2
INPUT_FORMAT = """little-endian: 8 uint32 (magic "MCTI", version 1, image bytes, classes, n_train,
n_eval, flags: 1 = evaluate before training, 2 = after, 0); then n_train + n_eval records of
(int32 label, int8 image [C][H][W]): the training samples first, then the held-out ones."""

FLASH_SECTIONS = (".isr_vector", ".text", ".rodata", ".ARM.exidx", ".data")
SRAM_SECTIONS = (".data", ".bss")


STM32F746 = CORES[DEFAULT_CORE].part


def strict_map(core: Core) -> MemoryMap | None:
    """The paper's budget, 256 KB of SRAM with the part's Flash, for a part that has more; else None."""
    part = core.part
    return MemoryMap("256kb-sram", part.flash_bytes, 256 * 1024) if part.ram_bytes > 256 * 1024 else None


class ToolMissingError(CodegenError):
    """The cross compiler or QEMU is not installed."""


class MemoryOverflowError(CodegenError):
    """The program does not fit the memory map: ``over`` is {region: (needed, available)}."""

    def __init__(self, memory: MemoryMap, needed: dict[str, int], where: str):
        self.memory, self.needed = memory, needed
        available = {"Flash": memory.flash_bytes, "SRAM": memory.ram_bytes}
        self.over = {r: (needed[r], available[r]) for r in available if needed[r] > available[r]}
        parts = [f"{r}: needs {n:,} bytes, {a:,} available (over by {n - a:,})" for r, (n, a) in self.over.items()]
        super().__init__(f"the program does not fit {memory.name} ({where}): " + "; ".join(parts)
                         + f". SRAM counts .data + .bss (arena, trained parameter copies) + a {memory.stack_bytes:,}"
                         f"-byte stack reserve; Flash counts code, constants and .data's initial values. Choose a "
                         f"sparser scheme, a lower resolution or a larger memory map.")


def tools_available(*names: str) -> str | None:
    """None when every tool is on PATH, else a sentence naming the missing ones and how to install them."""
    missing = [n for n in names if shutil.which(n) is None]
    return f"{', '.join(missing)} not found: {SETUP_HINT}" if missing else None


def _require(*names: str) -> None:
    why = tools_available(*names)
    if why:
        raise ToolMissingError(why)


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        raise CodegenError(f"{what} failed ({' '.join(map(str, cmd))}); its output is above", log=result.stderr[-4000:])
    return result


# ----------------------------------------------------------------------------------------------
# Build


def build_firmware(folder, memory: MemoryMap | None = None, strict: MemoryMap | None | str = "auto",
                   profile: bool = False, core: str = DEFAULT_CORE, extra_cflags: tuple[str, ...] = ()) -> dict:
    """Copy the board files into the generated ``folder``, compile for ``core`` (a row of
    ``cores.CORES``), check and link ``firmware.elf`` for ``memory`` (None: the core's part; raises
    ``MemoryOverflowError`` when it does not fit) and, with ``strict``, try the strict map too
    (``firmware-<name>.elf``; reported, never raised; "auto": 256 KB of SRAM when the part has more). The
    accumulator is the folder's,
    fixed when it was generated (``generate(..., accumulate="float32")``; a -DMCT_ACC_T fails the build).
    ``profile`` also builds ``firmware-profile.elf`` (-DMCT_TRACE: the timer after every op; module
    docstring), reported as ``profile``. ``extra_cflags``: added to the default build's (a bench's -g for
    line tables; the report's ``cflags`` lists them). Returns the build report (``accumulate``: the folder's mode)."""
    _require("arm-none-eabi-gcc", "arm-none-eabi-size")
    folder, row = Path(folder), core_of(core)
    memory = row.part if memory is None else memory
    strict = strict_map(row) if strict == "auto" else strict
    manifest = read_manifest(folder)
    check_kernels_run(row, kernels_of(manifest))
    for name in BOARD_FILES:
        atomic_write_bytes(folder / name, (BOARD / name).read_bytes())
    sources = list(manifest["sources"]) + list(BOARD_SOURCES)
    objects = _compile(folder, row, sources, list(extra_cflags))
    needed = object_footprint(objects, memory.stack_bytes)
    elf = _link_checked(folder, row, objects, memory, needed, folder / "firmware.elf")
    report = {"core": row.name, "machine": row.machine, "memory_map": asdict(memory), "elf": elf.name,
              "accumulate": accumulate_of(manifest), "kernels": kernels_of(manifest), "objects_footprint": needed,
              "footprint": elf_footprint(elf), "cflags": list(cflags_of(row)) + list(extra_cflags)}
    if strict is not None:
        report["strict"] = _strict(folder, row, objects, strict)
    if profile:
        report["profile"] = _profile_build(folder, row, sources, memory)
    return report


def check_kernels_run(core: Core, kernels: str) -> None:
    """A folder generated with kernels the core cannot run (the DSP set on a Cortex-M3) is refused
    before the compiler's own #error."""
    if kernels not in core.kernels:
        raise CodegenError(f"this folder was generated with kernels={kernels!r}, which {core.name} cannot run "
                           f"(it runs: {', '.join(core.kernels)}); generate it with kernels='portable'")


def _profile_build(folder: Path, core: Core, sources: list[str], memory: MemoryMap) -> dict:
    """``firmware-profile.elf``: every source again with -DMCT_TRACE, in a build folder of its own."""
    objects = _compile(folder, core, sources, ["-DMCT_TRACE"], build="build-profile")
    elf = _link_checked(folder, core, objects, memory, object_footprint(objects, memory.stack_bytes),
                        folder / "firmware-profile.elf")
    return {"elf": elf.name, "cflags": list(cflags_of(core)) + ["-DMCT_TRACE"], "footprint": elf_footprint(elf)}


def _strict(folder: Path, core: Core, objects: list[Path], memory: MemoryMap) -> dict:
    out = {"memory_map": asdict(memory)}
    try:
        elf = _link_checked(folder, core, objects, memory, object_footprint(objects, memory.stack_bytes),
                            folder / f"firmware-{memory.name}.elf")
    except MemoryOverflowError as err:
        return {**out, "fits": False, "elf": None, "why": str(err),
                "over": {r: {"needed": n, "available": a} for r, (n, a) in err.over.items()}}
    return {**out, "fits": True, "elf": elf.name}


def _compile(folder: Path, core: Core, sources: list[str], extra: list[str], build: str = "build") -> list[Path]:
    # Run in the folder with relative names: the objects (their file symbols) and the linker map do not
    # depend on where the folder is, so a folder built beside its destination and renamed into place
    # (codegen.staging) is the one built in place, byte for byte.
    (folder / build).mkdir(exist_ok=True)
    objects = []
    for source in sources:
        obj = f"{build}/{Path(source).stem}.o"
        _run(["arm-none-eabi-gcc", *cflags_of(core), *core.board_defines(), *extra, "-I.", "-c", source, "-o", obj],
             f"cross-compiling {source}", cwd=folder)
        objects.append(folder / obj)
    return objects


def section_sizes(path: Path) -> dict[str, int]:
    """{section name: bytes} of an object file or ELF (``arm-none-eabi-size -A -d``)."""
    out = _run(["arm-none-eabi-size", "-A", "-d", str(path)], "arm-none-eabi-size").stdout
    sizes: dict[str, int] = {}
    for row in out.splitlines():
        parts = row.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = sizes.get(parts[0], 0) + int(parts[1])
    return sizes


def _region(section: str) -> str | None:
    """Where an object file's section ends up: 'flash', 'data' (both), 'bss', or None (not loaded)."""
    if section.startswith((".text", ".rodata", ".isr_vector", ".ARM.exidx", ".ARM.extab")):
        return "flash"
    if section.startswith(".data"):
        return "data"
    if section.startswith(".bss") or section == "COMMON":
        return "bss"
    return None  # .hostio (the harness's host link), debug info, comments, attributes


def object_footprint(objects: list[Path], stack_bytes: int) -> dict[str, int]:
    """Flash and SRAM the objects need before linking (sections kept whole: --gc-sections can only
    make the linked program smaller; the C library's few KB come on top)."""
    totals = {"flash": 0, "data": 0, "bss": 0}
    for obj in objects:
        for section, size in section_sizes(obj).items():
            region = _region(section)
            if region is not None:
                totals[region] += size
    return {"Flash": totals["flash"] + totals["data"], "SRAM": totals["data"] + totals["bss"] + stack_bytes,
            "data": totals["data"], "bss": totals["bss"], "stack_reserve": stack_bytes}


OVERFLOW = re.compile(r"region `(\w+)' overflowed by (\d+) bytes?")  # ld says "1 byte"


def _link_checked(folder: Path, core: Core, objects: list[Path], memory: MemoryMap, needed: dict,
                  elf: Path) -> Path:
    if needed["Flash"] > memory.flash_bytes or needed["SRAM"] > memory.ram_bytes:
        raise MemoryOverflowError(memory, needed, "object files before linking")
    script = folder / f"board-{memory.name}.ld"
    atomic_write_text(script, linker_script(core, memory))
    cmd = ["arm-none-eabi-gcc", *core.arch_flags, *LINK_FLAGS, "-T", script.name,
           *(str(o.relative_to(folder)) for o in objects), *LIBS, "-Wl,-Map=" + elf.with_suffix(".map").name,
           "-o", elf.name]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=folder)  # relative names: see _compile
    if result.returncode != 0:
        overflows = {region: int(n) for region, n in OVERFLOW.findall(result.stderr)}
        if overflows:  # the libraries tipped it over: the same error as before linking
            linked = dict(needed)
            if "FLASH" in overflows:
                linked["Flash"] = memory.flash_bytes + overflows["FLASH"]
            if "RAM" in overflows:
                linked["SRAM"] = memory.ram_bytes + overflows["RAM"]
            raise MemoryOverflowError(memory, linked, "after linking the C library")
        raise CodegenError(f"linking {elf.name} failed ({' '.join(cmd)}); its output is above", log=result.stderr[-4000:])
    return elf


VECTOR_BYTES = 0x400  # a board that reads the vector table outside code memory gets a region this big for it


def linker_script(core: Core, memory: MemoryMap) -> str:
    """board.ld for ``memory`` at ``core``'s board addresses. Where the board reads its vector table
    outside code memory (the M55's ITCM), the table gets a region of its own, counted in Flash."""
    apart = core.vector_origin != core.flash_origin
    region = f"    VECTORS (rx) : ORIGIN = 0x{core.vector_origin:08X}, LENGTH = 0x{VECTOR_BYTES:X}\n" if apart else ""
    return Template((BOARD / "board.ld.in").read_text()).substitute(
        part=memory.name, machine=core.machine, flash_bytes=memory.flash_bytes, ram_bytes=memory.ram_bytes,
        stack_bytes=memory.stack_bytes, flash_origin=f"0x{core.flash_origin:08X}",
        ram_origin=f"0x{core.ram_origin:08X}",
        vector_origin=f"0x{core.vector_origin:08X}", hostio_origin=f"0x{core.hostio_origin:08X}",
        vector_region=region, vector_memory="VECTORS" if apart else "FLASH",
        flash_left=memory.flash_bytes - (VECTOR_BYTES if apart else 0))


def elf_footprint(elf) -> dict[str, int]:
    """Flash (.isr_vector + .text + .rodata + .ARM.exidx + .data) and static SRAM (.data + .bss) of a
    linked firmware, from its section headers; the stack comes from a run (``QemuRun``)."""
    sizes = section_sizes(Path(elf))
    return {"flash_bytes": sum(sizes.get(s, 0) for s in FLASH_SECTIONS),
            "static_sram_bytes": sum(sizes.get(s, 0) for s in SRAM_SECTIONS),
            "text": sizes.get(".text", 0), "rodata": sizes.get(".rodata", 0), "data": sizes.get(".data", 0),
            "bss": sizes.get(".bss", 0), "stack_reserve": sizes.get(".stack", 0),
            "harness_io": sizes.get(".hostio", 0)}


# ----------------------------------------------------------------------------------------------
# Runs under QEMU


@dataclass
class QemuRun:
    """What the firmware printed, decoded: floats from their bits, ticks as instructions."""

    losses: np.ndarray               # [n_train] float32
    train_instructions: np.ndarray    # [n_train]
    logits: dict[str, np.ndarray]     # phase ("before" / "after") -> [n_eval, K] float32
    classes: dict[str, np.ndarray]    # phase -> [n_eval] predicted class
    predict_instructions: np.ndarray  # every prediction's instructions
    stack_high_water: int
    stack_space: int
    save_fnv1a: int
    steps: int
    calibration: dict
    seconds: float
    profiles: list | None = None  # profile builds: [{"stage": "train" | "inference", "ops", "ticks": op ends}]
    hook_cost: dict | None = None  # profile builds: the probe's ticks with and without the hook
    statuses: np.ndarray | None = None  # [n_train] the guard's MCT_STEP_* flags after each step
    learning_rates: np.ndarray | None = None  # [n_train] float32, the learning rate after each step
    rollbacks: int = 0  # the guard's rollbacks over the run
    arena_fnv1a: int | None = None  # FNV-1a of the arena right after training (mct_arena_view)
    lr_final: float | None = None  # the learning rate at the end
    instructions_per_tick: float = INSTRUCTIONS_PER_TICK  # the core's board timer (cores.Core)


def qemu_command(elf, core: str = DEFAULT_CORE) -> list[str]:
    return ["qemu-system-arm", "-M", core_of(core).machine, "-nographic", "-monitor", "none", "-serial", "none",
            "-semihosting-config", "enable=on,target=native", "-icount", "shift=0,align=off,sleep=off",
            "-kernel", str(Path(elf).resolve())]


def write_input(path, images: np.ndarray, labels, eval_images: np.ndarray, eval_labels, classes: int,
                flags: int) -> None:
    """The harness's input file (``INPUT_FORMAT``)."""
    images, eval_images = np.asarray(images, np.int8), np.asarray(eval_images, np.int8)
    image_bytes = int(np.prod(images.shape[1:] if len(images) else eval_images.shape[1:]))
    with open(path, "wb") as f:
        f.write(struct.pack("<8I", INPUT_MAGIC, INPUT_VERSION, image_bytes, classes, len(images),
                            len(eval_images), flags, 0))
        for x, y in list(zip(images, labels)) + list(zip(eval_images, eval_labels)):
            f.write(struct.pack("<i", int(y)) + np.ascontiguousarray(x).tobytes())


def run_qemu(elf, images, labels, eval_images=None, eval_labels=None, *, classes: int, before: bool = True,
             after: bool = True, timeout: float = 600, progress=None, core: str = DEFAULT_CORE) -> QemuRun:
    """Train on (images, labels) under QEMU on ``core``'s board (the core the ELF was built for),
    evaluating (eval_images, eval_labels) before and/or after; ``progress(event)`` is called with each
    decoded line as it arrives."""
    _require("qemu-system-arm")
    eval_images = np.zeros((0,) + np.shape(images)[1:], np.int8) if eval_images is None else eval_images
    eval_labels = np.zeros(0, np.int64) if eval_labels is None else eval_labels
    flags = (FLAG_EVAL_BEFORE if before else 0) | (FLAG_EVAL_AFTER if after else 0)
    with tempfile.TemporaryDirectory(prefix="mct-qemu-") as tmp:
        write_input(Path(tmp) / INPUT_NAME, images, labels, eval_images, eval_labels, classes, flags)
        t0 = time.perf_counter()
        events, stderr, code = _stream(qemu_command(elf, core), Path(tmp), timeout, progress)
        seconds = time.perf_counter() - t0
    errors = [e for e in events if e.get("event") in ("error", "fault")]
    if code != 0 or errors or not events or events[-1].get("event") != "done":
        raise CodegenError(f"the firmware run failed (exit {code}; {errors or 'no done line'}); its output is above", log=stderr[-2000:])
    return _decode(events, seconds, core_of(core).instructions_per_tick)


def _stream(cmd: list[str], cwd: Path, timeout: float, progress) -> tuple[list[dict], str, int]:
    """Run QEMU, decoding JSON lines as they come; a watchdog kills it after ``timeout`` seconds (a
    firmware that hangs prints nothing, so the reading loop alone could not notice)."""
    events, lines = [], []
    # QEMU writes the semihosting console (the JSON lines) to stderr, beside its own messages.
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            proc.kill()

        watchdog = threading.Timer(timeout, kill)
        watchdog.start()
        try:
            for raw in proc.stdout:
                lines.append(raw)
                if raw.startswith("{"):
                    events.append(json.loads(raw))
                    if progress is not None:
                        progress(events[-1])
            code = proc.wait()
        finally:
            watchdog.cancel()
    if killed.is_set():
        raise CodegenError(f"the firmware run took more than {timeout:.0f} s and was killed")
    return events, "".join(lines), code


def _bits(hex_words) -> np.ndarray:
    return np.array([int(h, 16) for h in hex_words], np.uint32).view(np.float32)


def _decode(events: list[dict], seconds: float, per_tick_expected: float) -> QemuRun:
    calibration = next(e for e in events if e["event"] == "calibration")
    per_tick = calibration["loop_instructions"] / calibration["ticks"]
    if abs(per_tick - per_tick_expected) > 0.01 * per_tick_expected:
        raise CodegenError(f"timer calibration: {per_tick:.3f} instructions per tick, expected "
                           f"{per_tick_expected:g} (is QEMU running with -icount shift=0, on the core's board?)")

    def instructions(ticks) -> np.ndarray:  # exact on 40 and 50; to the nearest on the M55's 31.25
        return np.round(np.asarray(ticks, np.float64) * per_tick_expected).astype(np.int64)

    train = [e for e in events if e["event"] == "train"]
    predicts = [e for e in events if e["event"] == "predict"]
    done = events[-1]
    phases = sorted({e["phase"] for e in predicts})
    return QemuRun(
        losses=_bits([e["loss"] for e in train]),
        train_instructions=instructions([e["ticks"] for e in train]),
        logits={p: np.stack([_bits(e["logits"]) for e in predicts if e["phase"] == p]) for p in phases},
        classes={p: np.array([e["class"] for e in predicts if e["phase"] == p]) for p in phases},
        predict_instructions=instructions([e["ticks"] for e in predicts]),
        stack_high_water=done["stack_high_water"], stack_space=done["stack_space"],
        save_fnv1a=int(done["save_fnv1a"], 16), arena_fnv1a=int(done["arena_fnv1a"], 16), steps=done["steps"],
        calibration=calibration, seconds=seconds,
        profiles=[{"stage": e["stage"], "ticks": e["ticks"], "ops": e["ops"]} for e in events
                  if e["event"] == "profile"],
        hook_cost=next((e for e in events if e["event"] == "hook_cost"), None),
        statuses=np.array([e.get("status", 0) for e in train], np.int64),
        learning_rates=_bits([e["lr"] for e in train]) if all("lr" in e for e in train) else None,
        rollbacks=done.get("rollbacks", 0), lr_final=float(_bits([done["lr"]])[0]) if "lr" in done else None,
        instructions_per_tick=per_tick_expected)


def op_profile(run: QemuRun, ops: list[dict], index: int = 0, stage: str = "train") -> dict:
    """Per-op instructions of the ``index``-th ``stage`` ("train" or "inference") of a profile run.

    ``ops``: the stage's ops in schedule order ({"op", "kind", "phase"}, ``schedule_ops``). Each op's
    count is (its end - the previous op's end) x 40 - the hook's measured cost per call (rounded to
    an instruction); the first op starts where the step starts, so it also holds the step's entry (the
    image copy, the label). ``total_instructions``: the step as the harness timed it, hooks included;
    ``hook_instructions``: the hooks' share of it, which a default build does not spend."""
    if run.hook_cost is None:
        raise CodegenError("this run has no per-op profile: run firmware-profile.elf (build_firmware(profile=True))")
    runs = [p for p in run.profiles if p["stage"] == stage]
    if index >= len(runs):
        raise CodegenError(f"the profile run has {len(runs)} {stage} profile(s), asked for number {index + 1}")
    ticks = runs[index]["ticks"]
    if runs[index]["ops"] != len(ops) or len(ticks) != len(ops):
        raise CodegenError(f"the firmware traced {runs[index]['ops']} {stage} ops, the schedule has {len(ops)} "
                           f"(is the folder regenerated since it was built?)")
    per_call = hook_instructions_per_call(run.hook_cost, run.instructions_per_tick)
    ends = np.round(np.array([0] + list(ticks), np.float64) * run.instructions_per_tick).astype(np.int64)
    rows = [{**op, "instructions": int(round(d - per_call))} for op, d in zip(ops, np.diff(ends))]
    total = int((run.train_instructions if stage == "train" else run.predict_instructions)[index])
    return {"stage": stage, "ops": rows, "total_instructions": total,
            "hook_instructions_per_op": round(per_call, 2), "hook_instructions": int(round(per_call * len(ops))),
            "after_last_op": int(total - ends[-1]), "instructions_per_tick": run.instructions_per_tick}


def hook_instructions_per_call(cost: dict, per_tick: float = INSTRUCTIONS_PER_TICK) -> float:
    """The hook's instructions per op: the probe's n hook sites with the hook set minus with it cleared
    (the call, the timer read and the store; not the site's NULL test), per site."""
    return (cost["ticks_with_hook"] - cost["ticks_without_hook"]) * per_tick / cost["calls"]


def schedule_ops(program) -> dict[str, list[dict]]:
    """{"train" | "inference": [{"op", "kind", "phase"}]}: the program's ops in schedule order, the
    order in which model.c runs them (and the profile harness times them)."""
    return {stage: [{"op": op.name, "kind": op.kind, "phase": op.phase} for op in getattr(program, stage).graph.ops]
            for stage in ("train", "inference")}


def fnv1a(data: bytes) -> int:
    """The harness's checksum of ``mct_save`` (FNV-1a, 32 bit), to compare a host engine's save with."""
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h
