"""Hostile model files: pickles (payloads, huge / deep / shared structures, broken archives, bad
values), int8 model files and float checkpoints (flipped bits in header and data, truncations, header
fields and tensors forged with a valid checksum).

Every generator is deterministic (fixed seeds, fixed lists), so the number of cases is stable.
Forged files are written through ``mcutrain.io.container``'s writer (``tests.helpers.files.tamper``),
so they carry whatever checksum the current format has: only validation can refuse them.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from tests.fuzz.assets import Assets
from tests.fuzz.harness import Case, fresh_dir
from tests.helpers.files import tamper

# ------------------------------------------------------------------------------------------ pickles


def _zip_pickle(path: Path, data: bytes, *, name: str = "archive/data.pkl", compress: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        zf.writestr(name, data)
    return path


def _payloads(sentinel: Path) -> list[tuple[str, bytes]]:
    """Pickles that would create ``sentinel`` if any of their code ran."""
    s = str(sentinel)
    touch = f"touch {s}"
    py = f"open({s!r}, 'w').close()"
    text = [
        ("os.system (protocol 0)", f"cos\nsystem\n(S'{touch}'\ntR.".encode()),
        ("posix.system", f"cposix\nsystem\n(S'{touch}'\ntR.".encode()),
        ("builtins.eval", f"cbuiltins\neval\n(S\"{py}\"\ntR.".encode()),
        ("__builtin__.eval (python 2 name)", f"c__builtin__\neval\n(S\"{py}\"\ntR.".encode()),
        ("builtins.exec", f"cbuiltins\nexec\n(S\"{py}\"\ntR.".encode()),
        ("subprocess.check_call", f"csubprocess\ncheck_call\n((S'touch'\nS'{s}'\nltR.".encode()),
        ("getattr(__import__('os'), 'system')",
         f"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'{touch}'\ntR.".encode()),
        ("INST opcode os.system", f"(S'{touch}'\nios\nsystem\n.".encode()),
        ("OBJ opcode os.system", f"(cos\nsystem\nS'{touch}'\no.".encode()),
        ("numpy.testing runstring", f"cnumpy.testing._private.utils\nrunstring\n(S\"{py}\"\n(dtR.".encode()),
        ("nested pickle.loads", _nested_loads(pickle.dumps(_Reduce(os.system, (touch,)), 0))),
        ("functools.partial(os.system)", f"cfunctools\npartial\n(cos\nsystem\nS'{touch}'\ntR)R.".encode()),
        ("copyreg._reconstructor(os._wrap_close)", f"ccopyreg\n_reconstructor\n(cos\n_wrap_close\ncbuiltins\nobject\nNtR.".encode()),
        ("torch._utils._rebuild_tensor_v2", b"ctorch._utils\n_rebuild_tensor_v2\n(tR."),
        ("numpy.load(allow_pickle) gadget", f"cnumpy\nload\n(S'{s}'\nI01\ntR.".encode()),
        ("_codecs.encode with another codec", b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR."),
        ("builtins.bytes with an argument", b"cbuiltins\nbytes\n(I1000000000\ntR."),
        ("numpy.dtype object", b"cnumpy\ndtype\n(S'O8'\ntR."),
        ("numpy.dtype built from a list", b"cnumpy\ndtype\n((lS'O'\natR."),
        ("_reconstruct of another class", b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\ndtype\n(I0\ntbI0\nS'b'\ntR."),
        ("persistent id (torch storage)", b"(S'storage'\nS'x'\ntP."),
        ("payload inside a valid-looking dict",
         f"(dp0\nS'first_conv'\np1\ncos\nsystem\n(S'{touch}'\ntRp2\ns.".encode()),
    ]
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        text.append((f"__reduce__ os.system, protocol {protocol}", pickle.dumps(_Reduce(os.system, (touch,)), protocol)))
    text.append(("__reduce__ eval, protocol 4", pickle.dumps(_Reduce(eval, (py,)), 4)))
    return text


class _Reduce:
    """Pickles as ``func(*args)``: the classic payload."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _nested_loads(inner: bytes) -> bytes:
    """``pickle.loads(inner)``: BINBYTES argument, protocol 3."""
    return b"\x80\x03cpickle\nloads\nB" + struct.pack("<I", len(inner)) + inner + b"\x85R."


def _deep_list(depth: int) -> bytes:
    """``[[[...]]]`` ``depth`` levels deep, built without recursion (EMPTY_LIST x depth, APPEND x depth-1)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def _deep_dict(depth: int) -> bytes:
    """``{'k': {'k': ...}}`` ``depth`` levels deep (EMPTY_DICT, then (key, EMPTY_DICT) pairs set bottom-up)."""
    return b"\x80\x02" + b"}" + b"X\x01\x00\x00\x00k}" * (depth - 1) + b"s" * (depth - 1) + b"."


def _shared(levels: int, make) -> dict:
    node = [0]
    for _ in range(levels):
        node = make(node)
    return {"first_conv": node, "blocks": [], "feature_mix": None, "classifier": {}}


def _memo_list(n: int) -> bytes:
    """A list of ``n`` references to one memoised object (2 bytes each, compresses ~1000:1): the list,
    a MARK, the string (memoised), n - 1 more references to it, APPENDS into the list."""
    return b"\x80\x02]q\x00(X\x01\x00\x00\x00xq\x01" + b"h\x01" * (n - 1) + b"e" + b"."


def _valid_raw(assets: Assets) -> dict:
    from mcutrain.quant.safe_pickle import load_tiny_training_pickle

    return load_tiny_training_pickle(assets.pkl)


def _semantic_edits() -> list[tuple[str, Callable[[dict], None], tuple[str, ...]]]:
    """Well-formed tiny-training dicts with hostile values."""
    def conv(raw, i=0):
        return raw["first_conv"] if i == 0 else raw["blocks"][i - 1]["pointwise2"]

    def set_(path_fn, key, value):
        def edit(raw):
            path_fn(raw)[key] = value
        return edit

    p = lambda i: (lambda raw: conv(raw, i)["params"])  # noqa: E731
    c = lambda i: (lambda raw: conv(raw, i))  # noqa: E731
    return [
        ("stride 0", set_(c(0), "stride", 0), ("stride",)),
        ("stride 3", set_(c(2), "stride", 3), ("stride", "architecture")),
        ("groups 0", set_(c(0), "groups", 0), ("groups",)),
        ("kernel size 100000", set_(c(0), "kernel_size", (100000, 100000)), ("kernel",)),
        ("first conv in_shape 100000 (resolution)", set_(c(0), "in_shape", 100000), ("in_shape", "resolution")),
        ("first conv in_shape 0", set_(c(0), "in_shape", 0), ("in_shape", "resolution")),
        ("first conv in_shape -1", set_(c(0), "in_shape", -1), ("in_shape", "resolution")),
        ("first conv in_shape True", set_(c(0), "in_shape", True), ("in_shape", "resolution")),
        ("weight float64", set_(p(0), "weight", np.zeros((8, 3, 3, 3))), ("weight", "dtype", "int8")),
        ("w_scales NaN", set_(p(1), "w_scales", np.full(8, np.nan, np.float32)), ("scale",)),
        ("x_scale inf", set_(p(1), "x_scale", math.inf), ("scale",)),
        ("x_scale 1e30", set_(p(1), "x_scale", 1e30), ("scale",)),
        ("y_scale 0", set_(p(1), "y_scale", 0.0), ("scale",)),
        ("x_zero 1000", set_(p(1), "x_zero", 1000), ("zero",)),
        ("y_zero 1.5", set_(p(1), "y_zero", 1.5), ("zero",)),
        ("bias int64 2^40", set_(p(0), "bias", np.full(8, 2**40, np.int64)), ("bias",)),
        ("params missing", lambda raw: conv(raw, 0).pop("params"), ("params",)),
        ("out_channel 99999", set_(c(0), "out_channel", 99999), ("out_channel", "architecture", "shape")),
        ("blocks: 1000 copies", lambda raw: raw.__setitem__("blocks", raw["blocks"] * 200), ("architecture", "blocks")),
        ("classifier weight 2-D", lambda raw: raw["classifier"]["params"].__setitem__(
            "weight", raw["classifier"]["params"]["weight"][:, :, 0, 0]), ("classifier", "weight")),
        ("classifier 10^6 classes declared", set_(lambda raw: raw["classifier"], "out_channel", 10**6), ("classifier", "class")),
        ("blocks is a dict", lambda raw: raw.__setitem__("blocks", {"0": raw["blocks"][0]}), ("blocks",)),
    ]


def pickle_cases(assets: Assets, root: Path) -> list[Case]:
    cases = []

    def add(name: str, write: Callable[[Path], object], names=(), sentinel=None, extra=()):
        d = fresh_dir(root, "pkl-" + name)
        path = d / "model.pkl"
        write(path)
        out = d / "out"
        out.mkdir()
        cases.append(Case("model-pickle", name, ["import", str(path), "--format", "tiny-training",
                                                 "--out", str(out / "m.safetensors"), *extra],
                          out_dir=out, names=tuple(names), sentinel=sentinel))

    for i, (name, _) in enumerate(_payloads(Path("/nonexistent"))):
        d = fresh_dir(root, "payload")
        sentinel = d / "PAYLOAD_RAN"
        data = _payloads(sentinel)[i][1]
        add("payload: " + name, lambda p, data=data: _zip_pickle(p, data), sentinel=sentinel)
    # a payload in a raw pickle file (not a zip) and in a zip under another member name
    d = fresh_dir(root, "payload-raw")
    raw_sentinel = d / "PAYLOAD_RAN"
    add("payload: raw pickle, not a zip", lambda p: p.write_bytes(_payloads(raw_sentinel)[0][1]), sentinel=raw_sentinel)

    add("deep list, 100000 levels", lambda p: _zip_pickle(p, _deep_list(100_000)), ("deep", "nest"))
    add("deep dict, 100000 levels", lambda p: _zip_pickle(p, _deep_dict(100_000)), ("deep", "nest"))
    add("list containing itself", lambda p: _zip_pickle(p, b"\x80\x02]q\x00h\x00a."), ("deep", "nest", "recurs", "cycle"))
    add("dict containing itself", lambda p: _zip_pickle(p, b"\x80\x02}q\x00X\x01\x00\x00\x00kh\x00s."),
        ("deep", "nest", "recurs", "cycle"))
    add("shared children, 40 levels of lists",
        lambda p: _zip_pickle(p, pickle.dumps(_shared(40, lambda n: [n, n]), 2)),
        ("node", "size", "large", "limit", "deeper"))
    add("shared children, 30 levels of dicts",
        lambda p: _zip_pickle(p, pickle.dumps(_shared(30, lambda n: {"a": n, "b": n, "c": n}), 2)),
        ("node", "size", "large", "limit", "first_conv"))  # within the depth limit: refused by its content
    add("flat list of 20M references (compressed)", lambda p: _zip_pickle(p, _memo_list(20_000_000), compress=True),
        ("node", "size", "large", "limit"))
    add("int of 20 MB (LONG4)", lambda p: _zip_pickle(p, b"\x80\x02\x8b" + struct.pack("<i", 20 << 20) + b"\x01" * (20 << 20) + b"."),
        ("tiny-training", "dict"))
    add("not a zip: random bytes", lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096)), ("zip", "archive"))
    add("empty file", lambda p: p.write_bytes(b""), ("zip", "archive", "empty"))
    add("zip without data.pkl", lambda p: _zip_pickle(p, b"\x80\x02}.", name="archive/other.pkl"), ("data.pkl",))
    add("zip with data.pkl at the top level", lambda p: _zip_pickle(p, b"\x80\x02}.", name="data.pkl"), ("data.pkl",))
    add("zip with two data.pkl", lambda p: _two_members(p), ("data.pkl",))
    add("zip declaring a 300 MB data.pkl", lambda p: _declared_size(_zip_pickle(p, b"\x80\x02}."), 300 << 20),
        ("data.pkl", "limit", "bytes"))
    add("zip declaring a 4 GB data.pkl (compressed)", lambda p: _declared_size(
        _zip_pickle(p, b"\x80\x02}." + b"\0" * 100_000, compress=True), 4_000_000_000), ("data.pkl", "limit", "bytes"))
    add("zip member with a bad CRC", lambda p: _bad_crc(_zip_pickle(p, b"\x80\x02}.")), ("zip", "crc", "corrupt"))
    add("zip member compressed with an unknown method", lambda p: _method(_zip_pickle(p, b"\x80\x02}."), 99),
        ("zip", "compress", "method"))
    add("zip member flagged encrypted", lambda p: _encrypted(_zip_pickle(p, b"\x80\x02}.")), ("zip", "encrypt"))
    valid = pickle.dumps({"first_conv": {}, "blocks": [], "feature_mix": None, "classifier": {}}, 2)
    add("truncated pickle", lambda p: _zip_pickle(p, valid[: len(valid) // 2]), ("truncated", "corrupt", "pickle"))
    add("pickle without STOP", lambda p: _zip_pickle(p, valid[:-1]), ("truncated", "corrupt", "pickle"))
    add("pickle protocol 99", lambda p: _zip_pickle(p, b"\x80\x63}."), ("pickle", "protocol", "corrupt"))
    add("top level is a list", lambda p: _zip_pickle(p, pickle.dumps([1, 2], 2)), ("tiny-training", "dict"))
    add("top level dict without the keys", lambda p: _zip_pickle(p, pickle.dumps({"a": 1}, 2)), ("tiny-training", "keys"))
    add("array of shape (10^12,) declared", lambda p: _zip_pickle(p, _declared_array()), ("array", "shape", "corrupt"))

    for name, edit, names in _semantic_edits():
        raw = copy.deepcopy(_valid_raw(assets))
        edit(raw)
        add("value: " + name, lambda p, raw=raw: _torch_save(p, raw), names)
    # the valid file with a hostile head request
    for n in (0, -1, 10**7):
        add(f"--num-classes {n}", lambda p: shutil.copy(assets.pkl, p), ("num-classes", "classes"),
            extra=("--num-classes", str(n)))
    add("--classes with 10^5 names, one twice", lambda p: shutil.copy(assets.pkl, p), ("class",),
        extra=("--classes", ",".join(str(i) for i in range(100_000)) + ",0"))
    return cases


def _torch_save(path: Path, raw: dict) -> None:
    from tests.helpers.tiny_training_format import write_tiny_training

    write_tiny_training(path, raw)


def _declared_array() -> bytes:
    """ndarray reconstruct + BUILD whose state declares 10^12 int8 elements over 0 bytes of data."""
    head = pickle.dumps(np.zeros(1, np.int8), 2)
    return head.replace(b"K\x01\x85", b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85", 1)


def _two_members(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/data.pkl", b"\x80\x02}.")
        zf.writestr("b/data.pkl", b"\x80\x02}.")


def _patch_zip(path: Path, patch: Callable[[bytearray, int, int], None]) -> Path:
    """``patch(blob, local_header_offset, central_header_offset)`` for the archive's only member."""
    blob = bytearray(path.read_bytes())
    local = blob.find(b"PK\x03\x04")
    central = blob.find(b"PK\x01\x02")
    patch(blob, local, central)
    path.write_bytes(bytes(blob))
    return path


def _declared_size(path: Path, size: int) -> Path:
    def patch(blob, local, central):
        struct.pack_into("<I", blob, local + 22, size)
        struct.pack_into("<I", blob, central + 24, size)
    return _patch_zip(path, patch)


def _bad_crc(path: Path) -> Path:
    def patch(blob, local, central):
        for offset in (local + 14, central + 16):
            struct.pack_into("<I", blob, offset, struct.unpack_from("<I", blob, offset)[0] ^ 0xDEADBEEF)
    return _patch_zip(path, patch)


def _method(path: Path, method: int) -> Path:
    def patch(blob, local, central):
        struct.pack_into("<H", blob, local + 8, method)
        struct.pack_into("<H", blob, central + 10, method)
    return _patch_zip(path, patch)


def _encrypted(path: Path) -> Path:
    def patch(blob, local, central):
        for offset in (local + 6, central + 8):
            struct.pack_into("<H", blob, offset, struct.unpack_from("<H", blob, offset)[0] | 1)
    return _patch_zip(path, patch)


# ---------------------------------------------------------------------- int8 models and checkpoints


def _header_length(path: Path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def _flip(src: Path, dst: Path, bit: int) -> None:
    blob = bytearray(src.read_bytes())
    blob[bit // 8] ^= 1 << (bit % 8)
    dst.write_bytes(bytes(blob))


def _model_argv(command: str, path: Path, assets: Assets, out: Path) -> list[str]:
    data = f"npz:{assets.npz}"
    if command == "compile":
        return ["compile", str(path), "--scheme", "full"]
    if command == "finetune":
        return ["finetune", str(path), "--data", data, "--scheme", "last-k:2", "--out", str(out / "m.safetensors"),
                "--epochs", "1", "--quiet"]
    if command == "eval":
        return ["eval", str(path), "--data", data]
    if command == "quantize":
        return ["quantize", str(path), "--data", data, "--out", str(out / "m.safetensors"), "--calibration-batches", "1"]
    raise ValueError(command)


def _file_cases(category: str, src: Path, assets: Assets, root: Path, commands: tuple[str, str],
                seed: int, header_flips: int, data_flips: int) -> list[Case]:
    """Flipped bits (seeded positions, header and data) and truncations of ``src``, alternating commands."""
    cases = []
    size, header = src.stat().st_size, _header_length(src)
    rng = np.random.default_rng(seed)
    bits = [int(b) for b in rng.integers(0, header * 8, header_flips)]
    bits += [int(b) for b in rng.integers(header * 8, size * 8, data_flips)]
    for i, bit in enumerate(bits):
        d = fresh_dir(root, f"{category}-flip")
        path = d / "model.safetensors"
        _flip(src, path, bit)
        out = d / "out"
        out.mkdir()
        where = "header" if bit < header * 8 else "data"
        command = commands[i % 2]
        cases.append(Case(category, f"bit {bit} flipped ({where}, byte {bit // 8} of {size}) [{command}]",
                          _model_argv(command, path, assets, out), out_dir=out))
    cuts = sorted({0, 1, 7, 8, 9, header // 2, header - 1, header, header + 1, (header + size) // 2, size - 1})
    for i, cut in enumerate(cuts):
        d = fresh_dir(root, f"{category}-cut")
        path = d / "model.safetensors"
        path.write_bytes(src.read_bytes()[:cut])
        out = d / "out"
        out.mkdir()
        command = commands[i % 2]
        cases.append(Case(category, f"truncated to {cut} of {size} bytes [{command}]",
                          _model_argv(command, path, assets, out), out_dir=out))
    return cases


def _forged_cases(category: str, kind: str, src: Path, assets: Assets, root: Path, commands: tuple[str, ...],
                  edits: list[tuple[str, Callable[[dict, dict], None], tuple[str, ...]]]) -> list[Case]:
    cases = []
    for name, edit, names in edits:
        d = fresh_dir(root, f"{category}-forged")
        path = d / "model.safetensors"
        shutil.copy(src, path)
        tamper(path, kind, edit)
        for command in commands:
            out = d / f"out-{command}"
            out.mkdir()
            cases.append(Case(category, f"forged {name} [{command}]", _model_argv(command, path, assets, out),
                              out_dir=out, names=names))
    return cases


def _set(*path, value):
    """An edit setting ``meta[path...] = value``."""
    def edit(meta, tensors):
        node = meta
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = copy.deepcopy(value)
    return edit


def _both(*edits):
    def edit(meta, tensors):
        for e in edits:
            e(meta, tensors)
    return edit


def _tensor(name: str, value: Callable[[np.ndarray], np.ndarray]):
    def edit(meta, tensors):
        tensors[name] = value(tensors[name])
    return edit


SCALES = [("0", 0.0), ("-1", -1.0), ("nan", math.nan), ("inf", math.inf), ("1e30", 1e30), ("1e-30", 1e-30),
          ("'0.1' (a string)", "0.1"), ("true", True)]
ZEROS = [("128", 128), ("-129", -129), ("1000000", 1_000_000), ("1.5", 1.5), ("'0' (a string)", "0")]
RESOLUTIONS = [("true", True), ("0", 0), ("-1", -1), ("100000", 100000), ("'32' (a string)", "32"), ("1.5", 1.5),
               ("null", None), ("2^63", 2**63)]


def int8_edits(assets: Assets) -> list[tuple[str, Callable, tuple[str, ...]]]:
    last = assets.n_convs - 1
    edits = [(f"resolution {n}", _set("resolution", value=v), ("resolution",)) for n, v in RESOLUTIONS]
    edits += [
        ("num_classes 2 (tensors have 3)", _set("num_classes", value=2), ("num_classes", "classes", "classifier")),
        ("num_classes 4 (tensors have 3)", _set("num_classes", value=4), ("num_classes", "classes", "classifier")),
        ("num_classes 0", _set("num_classes", value=0), ("num_classes", "classes")),
        ("num_classes true", _set("num_classes", value=True), ("num_classes", "classes")),
        ("classes: 2 names for 3 classes", _set("classes", value=["a", "b"]), ("classes",)),
        ("classes: duplicate names", _set("classes", value=["a", "a", "a"]), ("classes",)),
        ("classes: integers", _set("classes", value=[0, 1, 2]), ("classes",)),
        ("classes: a name with a newline", _set("classes", value=["a\nb", "c", "d"]), ("classes",)),
        ("preprocessing offset 1e30", _set("preprocessing", "offset", value=1e30), ("preprocessing", "offset")),
        ("preprocessing offset -1e30", _set("preprocessing", "offset", value=-1e30), ("preprocessing", "offset")),
        ("preprocessing scale 0", _set("preprocessing", "scale", value=0.0), ("preprocessing", "scale")),
        ("preprocessing scale 1e30", _set("preprocessing", "scale", value=1e30), ("preprocessing", "scale")),
        ("preprocessing scale nan", _set("preprocessing", "scale", value=math.nan), ("preprocessing", "scale")),
        ("preprocessing: a string", _set("preprocessing", value="default"), ("preprocessing",)),
        ("arch: unknown name", _set("arch", value="no-such-net"), ("arch", "no-such-net")),
        ("arch: another zoo net", _set("arch", value="mcunet-5fps"), ("arch", "mcunet-5fps", "conv")),
        ("arch: a number", _set("arch", value=7), ("arch",)),
        ("adds: missing", lambda m, t: m.pop("adds"), ("adds",)),
        ("unknown key", _set("surprise", value=1), ("surprise", "unknown")),
        ("convs: one too many", lambda m, t: m["convs"].append(m["convs"][-1]), ("conv",)),
    ]
    for n, v in SCALES:
        edits.append((f"input scale {n}", _set("input", "scale", value=v), ("input", "scale")))
    for n, v in ZEROS:
        edits.append((f"input zero point {n}", _set("input", "zero", value=v), ("input", "zero")))
    for n, v in SCALES[:5]:
        edits.append((f"convs[3].y scale {n}", _set("convs", 3, "y", "scale", value=v), ("blocks.1", "scale")))
        edits.append((f"classifier x scale {n}", _set("classifier", "x", "scale", value=v), ("classifier", "scale")))
    for n, v in ZEROS[:3]:
        edits.append((f"pool y zero point {n}", _set("pool", "y", "zero", value=v), ("pool", "zero")))
    edits += [
        ("convs[1] qmin -129", _set("convs", 1, "qmin", value=-129), ("qmin", "clamp")),
        ("convs[1] qmax 128", _set("convs", 1, "qmax", value=128), ("qmax", "clamp")),
        ("convs[1] qmin 100 > qmax 50", _both(_set("convs", 1, "qmin", value=100), _set("convs", 1, "qmax", value=50)),
         ("qmin", "clamp")),
        ("convs[1] qmin 1.5", _set("convs", 1, "qmin", value=1.5), ("qmin", "clamp")),
        ("adds[0] qmin -1000", _set("adds", 0, "qmin", value=-1000), ("add", "qmin", "clamp")),
        ("adds[0] qmax 1000", _set("adds", 0, "qmax", value=1000), ("add", "qmax", "clamp")),
        ("adds[0] a scale 1e30 (ratio above 2^30)", _set("adds", 0, "a", "scale", value=1e30), ("add", "scale")),
        ("adds[0] y scale 1e-30", _set("adds", 0, "y", "scale", value=1e-30), ("add", "scale")),
        ("adds[0] on a block without a residual", _set("adds", 1, value={"a": {"scale": 0.1, "zero": 0},
         "b": {"scale": 0.1, "zero": 0}, "y": {"scale": 0.1, "zero": 0}, "qmin": -128, "qmax": 127}), ("add", "residual")),
        ("convs[2] frozen_channels [99999]", _set("convs", 2, "frozen_channels", value=[99999]), ("frozen",)),
        ("convs[2] frozen_channels [-1]", _set("convs", 2, "frozen_channels", value=[-1]), ("frozen",)),
        ("convs[2] frozen_channels [0, 0]", _set("convs", 2, "frozen_channels", value=[0, 0]), ("frozen",)),
        ("convs[2] frozen_channels 'x'", _set("convs", 2, "frozen_channels", value="x"), ("frozen",)),
        ("convs[0] stride 3", _set("convs", 0, "stride", value=3), ("stride",)),
        ("convs[0] stride 0", _set("convs", 0, "stride", value=0), ("stride",)),
        ("convs[1] groups 0", _set("convs", 1, "groups", value=0), ("groups",)),
        ("convs[1] groups 1 (depthwise)", _set("convs", 1, "groups", value=1), ("groups",)),
        ("convs[0] name swapped", _set("convs", 0, "name", value="blocks.0.depthwise"), ("first_conv", "name")),
        (f"convs[{last}].w_scale nan", _tensor(f"blocks.4.pointwise2.w_scale", lambda t: np.full_like(t, np.nan)), ("w_scale",)),
        ("first_conv.w_scale 1e30", _tensor("first_conv.w_scale", lambda t: np.full_like(t, 1e30)), ("w_scale", "scale")),
        ("first_conv.w_scale -1", _tensor("first_conv.w_scale", lambda t: -np.ones_like(t)), ("w_scale",)),
        ("classifier.w_scale 0", _tensor("classifier.w_scale", np.zeros_like), ("w_scale",)),
        ("classifier.w_scale inf", _tensor("classifier.w_scale", lambda t: np.full_like(t, np.inf)), ("w_scale",)),
        ("first_conv.weight -128", _tensor("first_conv.weight", lambda t: np.full_like(t, -128)), ("weight",)),
        ("first_conv.weight float32", _tensor("first_conv.weight", lambda t: t.astype(np.float32)), ("weight",)),
        ("classifier.weight 4 rows", _tensor("classifier.weight", lambda t: np.concatenate([t, t[:1]])), ("classifier",)),
        ("extra tensor", lambda m, t: t.__setitem__("evil", np.zeros(10, np.int8)), ("evil", "unexpected")),
        ("tensor missing", lambda m, t: t.pop("blocks.2.depthwise.bias"), ("blocks.2.depthwise.bias", "missing")),
    ]
    return edits


def float_edits() -> list[tuple[str, Callable, tuple[str, ...]]]:
    edits = [(f"resolution {n}", _set("resolution", value=v), ("resolution",)) for n, v in RESOLUTIONS]
    edits += [
        ("num_classes 4 (tensors have 3)", _set("num_classes", value=4), ("num_classes", "classes", "classifier", "shape")),
        ("num_classes 0", _set("num_classes", value=0), ("num_classes", "classes")),
        ("classes: 2 names for 3 classes", _set("classes", value=["a", "b"]), ("classes",)),
        ("classes: a string", _set("classes", value="abc"), ("classes",)),
        ("preprocessing offset 1e30", _set("preprocessing", "offset", value=1e30), ("preprocessing", "offset")),
        ("preprocessing scale 0", _set("preprocessing", "scale", value=0.0), ("preprocessing", "scale")),
        ("preprocessing scale -1", _set("preprocessing", "scale", value=-1.0), ("preprocessing", "scale")),
        ("preprocessing scale inf", _set("preprocessing", "scale", value=math.inf), ("preprocessing", "scale")),
        ("preprocessing: unknown key", _set("preprocessing", "mean", value=0.5), ("preprocessing", "mean")),
        ("model: unknown name", _set("model", value="no-such-net"), ("no-such-net", "model")),
        ("model: another zoo net", _set("model", value="mcunet-5fps"), ("mcunet-5fps", "model", "weights", "shape")),
        ("training: a list", _set("training", value=[1, 2]), ("training",)),
        ("training seed -1", _set("training", "config", "seed", value=-1), ("seed",)),
        ("training seed 'x'", _set("training", "config", "seed", value="x"), ("seed",)),
        ("weights NaN (stem conv)", _tensor("first_conv.conv.weight", lambda t: np.full_like(t, np.nan)), ("finite", "nan")),
        ("weights inf (classifier)", _tensor("classifier.weight", lambda t: np.full_like(t, np.inf)), ("finite", "inf")),
        ("BatchNorm running_var -1", _tensor("first_conv.bn.running_var", lambda t: -np.ones_like(t)), ("running_var", "variance")),
        ("BatchNorm running_var NaN", _tensor("first_conv.bn.running_var", lambda t: np.full_like(t, np.nan)), ("finite", "nan")),
        ("weights 1e38", _tensor("classifier.weight", lambda t: np.full_like(t, 1e38)), ("finite", "large", "weight")),
        ("weights float16", _tensor("classifier.weight", lambda t: t.astype(np.float16)), ("dtype", "float16", "classifier")),
        ("weights int8", _tensor("classifier.weight", lambda t: t.astype(np.int8)), ("dtype", "int8", "classifier")),
        ("extra tensor", lambda m, t: t.__setitem__("evil", np.zeros(10, np.float32)), ("evil", "unexpected")),
    ]
    return edits


def int8_cases(assets: Assets, root: Path) -> list[Case]:
    cases = _file_cases("int8-model", assets.int8, assets, root, ("compile", "finetune"), seed=8,
                        header_flips=28, data_flips=12)
    return cases + _forged_cases("int8-model", "int8-model", assets.int8, assets, root, ("compile", "finetune"),
                                 int8_edits(assets))


def float_cases(assets: Assets, root: Path) -> list[Case]:
    cases = _file_cases("float-checkpoint", assets.float, assets, root, ("eval", "quantize"), seed=32,
                        header_flips=20, data_flips=10)
    return cases + _forged_cases("float-checkpoint", "float-checkpoint", assets.float, assets, root,
                                 ("eval", "quantize"), float_edits())
