"""The host target: build a generated folder with the system C compiler and drive it from Python.

``build(folder, sanitize=False, trace=False, flags="native") -> path`` compiles the manifest's sources into
a shared library (``-std=c99 -O2 -Wall -Wextra -Werror``, plus ``-ffp-contract=off`` for the float32
rounding the reference does, and ``-fno-strict-aliasing`` for the typed views of the byte arena), with
the host-only API (``MCT_HOST_API``: the arena, the Flash parameters) and, with ``trace``, a hook
after every op. ``sanitize`` adds AddressSanitizer + UndefinedBehaviorSanitizer (no recovery).
``HostEngine(lib_path)`` runs it through ``ctypes`` with the NumPy executor's interface: ``predict``,
``train_step``, ``parameters`` (and ``save`` / ``restore`` of the C API). The backward's accumulator
type is the folder's (fixed when generated, ``manifest.json``'s ``accumulate``; ``HostEngine.accumulate``):
the build adds no flag for it.

Two builds of the same sources (``flags``, ``FLAG_SETS``): ``"portable"`` is the flags above alone, the
reference build (and the firmware's, firmware.M7_CFLAGS); ``"native"`` (the default: ``mcutrain run
--target host``, the demo, the benches) adds ``-O3 -march=native``: vectorised for this machine's
instruction set with the same float results, bit for bit, because what could change them stays off:
no contraction into fused multiply-adds (``-ffp-contract=off``), no ``-ffast-math`` and hence no
``-fassociative-math``, without which GCC and Clang never reorder a float sum to vectorise it (they
vectorise across independent outputs only). tests/codegen/test_codegen_host_flags.py trains both builds
side by side and compares losses, logits and parameters bit for bit. The library's file name hashes the
flags and, for ``native``, the instruction-set macros the compiler defines for this machine, so a folder
built on another CPU is rebuilt, never loaded with instructions this one lacks.

A sanitized library needs the ASan runtime loaded first in the process: ``run_sanitized`` builds one,
runs the steps in a fresh Python (``python -m mcutrain.codegen.host``) with ``LD_PRELOAD`` set, and
fails on any finding.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

import numpy as np

from mcutrain.codegen.errors import CodegenError
from mcutrain.io.jsonfile import read_json_file
from mcutrain.codegen.storage import RESTORE_CODES

__all__ = ["CFLAGS", "FLAG_SETS", "HostEngine", "OPTIONS_BEFORE", "RestoreError", "SANITIZE_FLAGS", "accumulate_of",
           "build", "build_host", "folder_option", "host_cflags", "kernels_of", "native_simd", "run_sanitized"]

CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-fno-strict-aliasing")
FLAG_SETS = ("native", "portable")  # build flavours of the host target; the first is the default
NATIVE_EXTRA = ("-O3", "-march=native")  # after CFLAGS: -O3 overrides -O2
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")
HOST_FLAGS = ("-fPIC", "-shared", "-DMCT_HOST_API")
DTYPES = {"int8": (np.int8, ctypes.c_int8), "int32": (np.int32, ctypes.c_int32)}
TRACE_HOOK = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32)


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise CodegenError("no C compiler found (cc / gcc); install gcc or set CC")
    return cc


@functools.lru_cache(maxsize=None)
def _native_supported(cc: str) -> bool:
    """Whether ``cc`` takes -march=native (GCC and Clang on x86 and recent Arm do; others get -O3 alone)."""
    probe = subprocess.run([cc, "-march=native", "-E", "-x", "c", "-", "-o", os.devnull], input="",
                           capture_output=True, text=True)
    return probe.returncode == 0


@functools.lru_cache(maxsize=None)
def _native_identity(cc: str) -> str:
    """The macros ``cc -march=native`` predefines (__AVX2__, __ARM_NEON, ...): what the native build's
    instructions depend on, hashed into its file name."""
    out = subprocess.run([cc, *host_cflags("native"), "-dM", "-E", "-x", "c", "-", "-o", "-"], input="",
                         capture_output=True, text=True)
    return out.stdout


def native_simd() -> str | None:
    """The vector paths the native build compiles: "avx2" (c/mct_simd.h, where ``cc -march=native``
    defines __AVX2__), or None (the native build is the portable C at -O3 for this CPU)."""
    return "avx2" if "#define __AVX2__ 1" in _native_identity(compiler()) else None


def host_cflags(flags: str = "native") -> tuple[str, ...]:
    """The compiler flags of a host build: ``"portable"`` (CFLAGS, the reference) or ``"native"``
    (CFLAGS + -O3 -march=native, where the compiler takes -march=native)."""
    if flags not in FLAG_SETS:
        raise CodegenError(f"unknown host build flags {flags!r}; use one of {', '.join(FLAG_SETS)}")
    if flags == "portable":
        return CFLAGS
    return CFLAGS + (NATIVE_EXTRA if _native_supported(compiler()) else NATIVE_EXTRA[:1])


def default_flags() -> str:
    """The host build's flags when none are asked for: ``MCUTRAIN_HOST_FLAGS`` if set, else "native".
    The test suite sets it to "portable" (tests/conftest.py): -O3 -march=native compiles about 1.5x
    slower, and the two builds' bit-equality is a test of its own (test_codegen_host_flags.py)."""
    flags = os.environ.get("MCUTRAIN_HOST_FLAGS", FLAG_SETS[0])
    if flags not in FLAG_SETS:
        raise CodegenError(f"MCUTRAIN_HOST_FLAGS={flags!r} is not a host build; use one of {', '.join(FLAG_SETS)}")
    return flags


def build(folder, *, sanitize: bool = False, trace: bool = False, flags: str | None = None) -> Path:
    """Compile the generated ``folder`` into a shared library next to its sources; returns its path.

    ``flags``: ``"native"`` (vectorised for this machine) or ``"portable"`` (the reference flags); both
    give the same bits (module docstring); None: ``default_flags()`` (native unless MCUTRAIN_HOST_FLAGS).
    The file name carries a hash of the sources and flags (``libmodel[-portable][-asan][-trace]-<hash>.so``):
    a process can load a rebuilt program beside an older one (the dynamic loader reuses a library by its
    path), and an up-to-date library is reused instead of rebuilt. It is written under a temporary name
    and then renamed, so a loaded library is never overwritten in place."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    flags = flags or default_flags()
    if kernels_of(manifest) != "portable":
        raise CodegenError(f"{folder}: generated with kernels={kernels_of(manifest)!r} (Arm ACLE intrinsics of the "
                           f"Cortex-M DSP extension), which the host cannot run; generate it with kernels=\"portable\"")
    cflags = list(host_cflags(flags)) + list(HOST_FLAGS) + (["-DMCT_TRACE"] if trace else []) + (
        list(SANITIZE_FLAGS) if sanitize else [])
    stem = "libmodel" + ("-portable" if flags == "portable" else "") + ("-asan" if sanitize else "") + (
        "-trace" if trace else "")
    identity = _native_identity(compiler()) if flags == "native" else ""
    out = folder / f"{stem}-{_digest(folder, cflags, identity)}.so"
    if out.is_file():
        return out
    for old in folder.glob(f"{stem}-{'?' * 12}.so"):
        old.unlink()
    fd, tmp = tempfile.mkstemp(prefix=".libmodel", suffix=".so", dir=folder)
    os.close(fd)
    # Relative names, run in the folder: the library does not record where the folder was built.
    cmd = [compiler(), *cflags, "-I.", *manifest["sources"], "-o", tmp, "-lm"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=folder)
    if result.returncode != 0:
        os.unlink(tmp)
        raise CodegenError(f"host build failed in {folder} ({' '.join(cmd)}); its output is above", log=result.stderr)
    os.replace(tmp, out)
    return out


def _digest(folder: Path, flags: list[str], identity: str = "") -> str:
    """Hash of every source and header of the folder, the compiler flags and what the native flags
    resolve to on this machine (``identity``)."""
    h = hashlib.sha256(" ".join([compiler()] + flags).encode() + b"\0" + identity.encode())
    for path in sorted(folder.glob("*.[ch]")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


build_host = build


def read_manifest(folder) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise CodegenError(f"{folder}: no manifest.json (not a folder made by mcutrain.codegen.generate)")
    return read_json_object(path)


def read_json_object(path: Path) -> dict:
    """A JSON object that mcutrain wrote into a generated folder (manifest.json, target.json), read
    with the limits of every user JSON file: the folder may have been edited or torn since."""
    def an_object(doc):
        if not isinstance(doc, dict):
            raise CodegenError(f"holds a JSON {type(doc).__name__}, not an object; generate the folder again")
        return doc

    return read_json_file(path, an_object, CodegenError, "no such file; generate the folder again")


# The generate-time options a folder records (manifest.json, target.json), each with what a folder
# generated before the option existed was built with.
OPTIONS_BEFORE = {"accumulate": "float64", "kernels": "portable"}


def folder_option(manifest: dict, name: str) -> str:
    """The value of generate-time option ``name`` (``OPTIONS_BEFORE``) a folder was generated with."""
    return manifest.get(name, OPTIONS_BEFORE[name])


def accumulate_of(manifest: dict) -> str:
    """The backward accumulator mode a folder was generated with."""
    return folder_option(manifest, "accumulate")


def kernels_of(manifest: dict) -> str:
    """The forward kernel set a folder was generated with."""
    return folder_option(manifest, "kernels")


class RestoreError(CodegenError):
    """``mct_restore`` refused a snapshot; ``code`` says why (``storage.RESTORE_CODES``)."""

    def __init__(self, code: int):
        self.code = code
        super().__init__(f"mct_restore refused the snapshot (code {code}: {RESTORE_CODES.get(code, 'unknown')}); "
                         f"nothing was changed")


# ----------------------------------------------------------------------------------------------

_OWNER: "weakref.WeakValueDictionary[str, HostEngine]" = weakref.WeakValueDictionary()  # path -> last engine


class HostEngine:
    """A host build of a generated program, driven through ctypes.

    The library's state (arena, parameter copies, step counter) is global, like the device's: a new
    ``HostEngine`` on the same file re-initialises it (``mct_init``), and an older engine on that file
    refuses to run from then on."""

    def __init__(self, lib_path, manifest: dict | None = None):
        self.path = Path(lib_path).resolve()
        self.manifest = manifest if manifest is not None else read_manifest(self.path.parent)
        m = self.manifest
        self.image_shape = (m["image_channels"], m["image_height"], m["image_width"])
        self.classes = m["num_classes"]
        self.accumulate = accumulate_of(m)  # "float64" or "float32": the backward's accumulators
        self._lib = ctypes.CDLL(str(self.path))
        self._declare()
        self._hook = None
        self._guard_buf = None
        _OWNER[str(self.path)] = self
        if self.has_guard:  # an older engine's buffer must not stay lent to the library it shares
            self._lib.mct_guard_buffer(None, 0)
        self._lib.mct_init()

    def _declare(self) -> None:
        lib = self._lib
        signatures = {
            "mct_init": (None, []),
            "mct_predict": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p]),
            "mct_train_step": (ctypes.c_float, [ctypes.c_void_p, ctypes.c_int]),
            "mct_steps": (ctypes.c_uint32, []),
            "mct_save": (ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_size_t]),
            "mct_restore": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t]),
            "mct_host_arena": (ctypes.c_void_p, []),
            "mct_host_param": (ctypes.c_void_p, [ctypes.c_int32]),
        }
        guard = {  # the guard's API (folders generated before it have none: ``has_guard``)
            "mct_last_step_status": (ctypes.c_int, []),
            "mct_learning_rate": (ctypes.c_float, []),
            "mct_rollbacks": (ctypes.c_uint32, []),
            "mct_loss_average": (ctypes.c_float, []),
            "mct_guard_buffer": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t]),
            "mct_host_set_learning_rate": (None, [ctypes.c_float]),
        }
        self.has_guard = all(hasattr(lib, name) for name in guard)
        for name, (restype, argtypes) in {**signatures, **(guard if self.has_guard else {})}.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes

    def _check(self) -> None:
        if _OWNER.get(str(self.path)) is not self:
            raise CodegenError(f"{self.path}: another HostEngine re-initialised this library; use that one")

    def _image(self, image) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.int8:
            raise ValueError(f"the engine takes int8 images, got {image.dtype}")
        if image.shape not in (self.image_shape, (1,) + self.image_shape):
            raise ValueError(f"image of shape {image.shape}, expected {self.image_shape}")
        return np.ascontiguousarray(image.reshape(self.image_shape))

    def predict(self, image) -> np.ndarray:
        """int8 image [3, R, R] or [1, 3, R, R] -> float32 logits [1, K]."""
        self._check()
        x = self._image(image)
        logits = np.zeros((1, self.classes), np.float32)
        self._lib.mct_predict(x.ctypes.data, logits.ctypes.data)
        return logits

    def predict_classes(self, images) -> np.ndarray:
        """int8 images [N, 3, R, R] -> the predicted class of each (int64 [N])."""
        return np.array([int(self.predict(x).argmax()) for x in images], np.int64)

    def train_step(self, image, label: int) -> float:
        """One SGD step (forward, backward, in-place updates); returns the loss."""
        self._check()
        if not 0 <= int(label) < self.classes:
            raise ValueError(f"label {label} outside [0, {self.classes})")
        x = self._image(image)
        return float(self._lib.mct_train_step(x.ctypes.data, int(label)))

    @property
    def step(self) -> int:
        return int(self._lib.mct_steps())

    # -- the guard (model.h): rollbacks of a blown-up run, the runtime learning rate
    @property
    def status(self) -> int:
        """``mct_last_step_status``: the MCT_STEP_* flags of the last step (``storage.STEP_FLAGS``)."""
        return int(self._lib.mct_last_step_status())

    @property
    def learning_rate(self) -> float:
        return float(self._lib.mct_learning_rate())

    @learning_rate.setter
    def learning_rate(self, lr: float) -> None:
        """Set by hand (host builds only): tests plant a blow-up with it."""
        self._check()
        self._lib.mct_host_set_learning_rate(lr)

    @property
    def rollbacks(self) -> int:
        return int(self._lib.mct_rollbacks())

    @property
    def loss_average(self) -> float:
        return float(self._lib.mct_loss_average())

    def lend_guard_buffer(self, size: int | None = None) -> int:
        """``mct_guard_buffer`` with a buffer of ``size`` bytes (default MCT_SAVE_BYTES) that this
        engine keeps alive; returns its code (0, or -1 when too small: then nothing is lent)."""
        self._check()
        buf = (ctypes.c_uint8 * (self.manifest["save_bytes"] if size is None else size))()
        code = int(self._lib.mct_guard_buffer(buf, len(buf)))
        if code == 0:
            self._guard_buf = buf
        return code

    def guard_snapshot(self) -> bytes:
        """The bytes of the lent buffer (what the guard last wrote there)."""
        return bytes(self._guard_buf)

    def save(self) -> bytes:
        """``mct_save``: a snapshot (header, the trained parameter copies, CRC-32; docs/firmware.md)."""
        self._check()
        buf = (ctypes.c_uint8 * self.manifest["save_bytes"])()
        n = self._lib.mct_save(buf, len(buf))
        if n != len(buf):
            raise CodegenError(f"mct_save wrote {n} bytes, expected {len(buf)}")
        return bytes(buf)

    def restore(self, data: bytes) -> None:
        """``mct_restore``; a refused snapshot raises ``RestoreError`` (its ``code``: model.h's
        MCT_RESTORE_E*) and leaves the parameters and the step counter as they were."""
        self._check()
        code = self.restore_code(data)
        if code != 0:
            raise RestoreError(code)

    def restore_code(self, data: bytes) -> int:
        """``mct_restore``'s return code for ``data`` (0: restored)."""
        self._check()
        buf = (ctypes.c_uint8 * max(len(data), 1)).from_buffer_copy(bytes(data) or b"\0")
        return int(self._lib.mct_restore(buf, len(data)))

    def parameters(self) -> dict[str, np.ndarray]:
        """Every parameter (copies): Flash values with the trained slices from ``mct_save`` over them."""
        payload = self.save()[self.manifest.get("save", {}).get("header_bytes", 16):]
        out = {}
        for index, p in enumerate(self.manifest["params"]):
            dtype, ctype = DTYPES[p["dtype"]]
            n = int(np.prod(p["shape"]))
            address = self._lib.mct_host_param(index)
            value = np.ctypeslib.as_array((ctype * n).from_address(address)).copy().reshape(p["shape"])
            if p["kept_shape"] is not None:
                kept = tuple(p["kept_shape"])
                size = int(np.prod(kept)) * np.dtype(dtype).itemsize
                chunk = payload[p["save_offset"]:p["save_offset"] + size]
                value[tuple(slice(0, k) for k in kept)] = np.frombuffer(chunk, dtype).reshape(kept)
            out[p["name"]] = value
        return out

    def arena(self) -> np.ndarray:
        """The arena's bytes (a live uint8 view: valid while the library is loaded)."""
        address = self._lib.mct_host_arena()
        return np.ctypeslib.as_array((ctypes.c_uint8 * self.manifest["arena_bytes"]).from_address(address))

    def set_trace(self, callback) -> None:
        """``callback(stage, op_index)`` after every op (stage 0: training, 1: inference); a library
        built with ``trace=True`` only. None removes it."""
        if not hasattr(self._lib, "mct_host_set_trace"):
            raise CodegenError(f"{self.path.name} was built without trace=True")
        self._hook = TRACE_HOOK(callback) if callback is not None else None
        fn = self._lib.mct_host_set_trace
        fn.restype, fn.argtypes = None, [TRACE_HOOK]
        fn(self._hook if self._hook is not None else TRACE_HOOK())


# ----------------------------------------------------------------------------------------------
# Sanitized runs (in a fresh process with the ASan runtime preloaded)


def asan_runtime() -> str:
    out = subprocess.run([compiler(), "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = out.stdout.strip()
    if out.returncode != 0 or not os.path.isabs(path):
        raise CodegenError("the C compiler has no AddressSanitizer runtime (libasan)")
    return path


def run_steps(engine: HostEngine, images: np.ndarray, labels: np.ndarray, probe: np.ndarray) -> dict:
    """Train on each (image, label), then predict ``probe`` images: losses, logits, parameters, save."""
    losses = np.array([engine.train_step(x, int(y)) for x, y in zip(images, labels)], np.float64)
    logits = np.concatenate([engine.predict(x) for x in probe]) if len(probe) else np.zeros((0, engine.classes))
    saved = engine.save()
    engine.restore(saved)
    refused = np.array([engine.restore_code(bad) for bad in damaged_snapshots(saved)], np.int32)
    if engine.save() != saved:
        raise CodegenError("a refused snapshot changed the live parameters")
    return {"losses": losses, "logits": logits, "saved": np.frombuffer(saved, np.uint8), "refused": refused,
            **{f"param:{k}": v for k, v in engine.parameters().items()}}


def damaged_snapshots(saved: bytes) -> list[bytes]:
    """Snapshots ``mct_restore`` must refuse (run under the sanitizers by ``run_sanitized``): truncated
    at every 1/8, padded, one bit flipped in each region, the second half erased, all erased, and a
    header claiming a payload of 4 GB."""
    n = len(saved)
    cases = [saved[:n * k // 8] for k in range(8)] + [saved + b"\0", saved + b"\xff" * 64]
    for at in (0, 5, 9, 25, 30, 32, n // 2, n - 5, n - 1):
        flipped = bytearray(saved)
        flipped[at] ^= 0x10
        cases.append(bytes(flipped))
    huge = bytearray(saved)
    huge[24:28] = b"\xf0\xff\xff\xff"
    return cases + [saved[:n // 2] + b"\xff" * (n - n // 2), b"\xff" * n, bytes(huge)]


def run_sanitized(folder, images: np.ndarray, labels: np.ndarray, probe: np.ndarray | None = None,
                  timeout: float = 600) -> dict:
    """Build ``folder`` with ASan + UBSan and run ``run_steps`` in a fresh process; returns its results
    plus ``stderr``. Raises ``CodegenError`` on a failed run or any sanitizer report."""
    lib = build(folder, sanitize=True)
    probe = np.zeros((0,) + images.shape[1:], np.int8) if probe is None else probe
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inputs, images=images, labels=labels, probe=probe)
        env = dict(os.environ, LD_PRELOAD=asan_runtime(), ASAN_OPTIONS="detect_leaks=0:halt_on_error=1",
                   UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
        cmd = [sys.executable, "-m", "mcutrain.codegen.host", str(lib), str(inputs), str(outputs)]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        findings = [line for line in result.stderr.splitlines()
                    if "runtime error" in line or "Sanitizer" in line]
        if result.returncode != 0 or findings:
            raise CodegenError(f"sanitized run failed (exit {result.returncode}); its output is above", log=result.stderr[-4000:])
        with np.load(outputs) as data:
            out = {k: data[k] for k in data.files}
    out["stderr"] = result.stderr
    return out


def _main(argv: list[str]) -> int:
    lib, inputs, outputs = argv
    with np.load(inputs) as data:
        images, labels, probe = data["images"], data["labels"], data["probe"]
    np.savez(outputs, **run_steps(HostEngine(lib), images, labels, probe))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
