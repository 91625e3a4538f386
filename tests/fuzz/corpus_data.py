"""Hostile datasets: npz archives (labels, shapes, dtypes, counts, object arrays, declared zip bombs,
non-zip bytes) and image folders (empty classes, 0-byte and non-image files, huge declared image
sizes), each through ``data show``, ``pretrain`` and ``finetune``."""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from tests.fuzz.assets import CLASSES, RESOLUTION, Assets
from tests.fuzz.corpus_models import _Reduce, _declared_size
from tests.fuzz.harness import Case, fresh_dir


def _argv(command: str, data: str, assets: Assets, out: Path) -> list[str]:
    if command == "data":
        return ["data", "show", data]
    if command == "pretrain":
        return ["pretrain", "--model", "tiny", "--data", data, "--out", str(out / "f.safetensors"), "--epochs", "1",
                "--resolution", str(RESOLUTION), "--batch-size", "8", "--quiet"]
    return ["finetune", str(assets.int8), "--data", data, "--scheme", "last-k:2", "--out", str(out / "m.safetensors"),
            "--epochs", "1", "--quiet"]


def _cases(category: str, index: int, name: str, data: str, d: Path, assets: Assets, names=(),
           sentinel=None) -> list[Case]:
    """``data show`` and, alternating with ``index``, ``pretrain`` or ``finetune``."""
    cases = []
    for command in ("data", ("pretrain", "finetune")[index % 2]):
        out = d / f"out-{command}"
        out.mkdir()
        cases.append(Case(category, f"{name} [{command}]", _argv(command, data, assets, out), out_dir=out,
                          names=tuple(names), sentinel=sentinel))
    return cases


def _images(n: int, side: int = RESOLUTION, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, side, side, channels), dtype=np.uint8)


def _labels(n: int) -> np.ndarray:
    return np.arange(n) % CLASSES


def _npy(shape: tuple, descr: str = "|u1", data: bytes = b"") -> bytes:
    """An .npy file whose header declares ``shape`` (the data that follows may be much shorter)."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


def _zip(path: Path, members: dict[str, bytes], compress: bool = False) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _declared_bomb(path: Path, shape: tuple, declared: int) -> None:
    """x.npy: a header declaring ``shape`` + 1 MB of zeros, deflated (~1 KB), its size field claiming
    ``declared`` bytes (y.npy valid, written after it)."""
    _zip(path, {"x.npy": _npy(shape, "|u1", bytes(1 << 20))}, compress=True)
    _declared_size(path, declared)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("y.npy", _npy((30,), "<i8", _labels(30).astype("<i8").tobytes()))


def npz_edits() -> list[tuple[str, Callable[[Path], None], tuple[str, ...]]]:
    def arrays(**kw):
        return lambda p: np.savez(p, **kw)

    n = 30
    x, y = _images(n), _labels(n)
    return [
        ("labels [0, 2e9]", arrays(x=_images(2), y=np.array([0, 2_000_000_000])), ("label", "class")),
        ("labels negative", arrays(x=x, y=y - 1), ("label", "negative")),
        ("labels float", arrays(x=x, y=y.astype(np.float64)), ("label", "y", "integer")),
        ("labels uint64 2^63", arrays(x=_images(2), y=np.array([0, 2**63], np.uint64)), ("label", "class")),
        ("labels uint64 2^64-1", arrays(x=_images(2), y=np.array([1, 2**64 - 1], np.uint64)), ("label", "class")),
        ("labels int64 max", arrays(x=_images(2), y=np.array([0, 2**63 - 1], np.int64)), ("label", "class")),
        ("labels bool", arrays(x=x, y=(y > 0)), ("label", "y", "integer")),
        ("labels 2-D (n, 1)", arrays(x=x, y=y[:, None]), ("label", "y", "1-d")),
        ("labels strings", arrays(x=x, y=y.astype(str)), ("label", "y", "integer")),
        ("one class only", arrays(x=x, y=np.zeros(n, np.int64)), ("class",)),
        ("class 1 without samples", arrays(x=x, y=(y > 0) * 2), ("class",)),
        ("fewer samples than classes", arrays(x=_images(2), y=np.array([0, 2])), ("class", "sample")),
        ("images (n, 0, 0)", arrays(x=np.zeros((n, 0, 0), np.uint8), y=y), ("image", "x", "size", "shape")),
        ("images (n, 0, 0, 3)", arrays(x=np.zeros((n, 0, 0, 3), np.uint8), y=y), ("image", "x", "size", "shape")),
        ("images (n, 16, 0, 3)", arrays(x=np.zeros((n, 16, 0, 3), np.uint8), y=y), ("image", "x", "size", "shape")),
        ("no images (0, 16, 16, 3)", arrays(x=np.zeros((0, 16, 16, 3), np.uint8), y=np.zeros(0, np.int64)), ("empty",)),
        ("2 channels", arrays(x=_images(n, channels=2), y=y), ("x", "channel")),
        ("4 channels", arrays(x=_images(n, channels=4), y=y), ("x", "channel")),
        ("images float32", arrays(x=x.astype(np.float32), y=y), ("x", "uint8")),
        ("images int16", arrays(x=x.astype(np.int16), y=y), ("x", "uint8")),
        ("images 5-D", arrays(x=x[:, None], y=y), ("x", "shape")),
        ("images 0-D", arrays(x=np.uint8(3), y=y), ("x", "shape")),
        ("images 1 x 100000 pixels", arrays(x=np.zeros((n, 1, 100_000, 3), np.uint8), y=y), ("image", "size", "large", "limit")),
        ("30 images, 29 labels", arrays(x=x, y=y[:-1]), ("label", "sample")),
        ("x an object array", arrays(x=np.array([x[0], "a"], dtype=object), y=y[:2]), ("x", "object", "pickle")),
        ("y an object array", arrays(x=x, y=np.array(list(y), dtype=object)), ("y", "object", "pickle")),
        ("x missing", arrays(y=y), ("x", "missing")),
        ("y missing", arrays(x=x), ("y", "missing")),
        ("classes: wrong count", arrays(x=x, y=y, classes=np.array(["a", "b"])), ("classes",)),
        ("classes: duplicates", arrays(x=x, y=y, classes=np.array(["a", "a", "b"])), ("classes",)),
        ("classes: integers", arrays(x=x, y=y, classes=np.arange(3)), ("classes",)),
        ("x.npy declares 50 GB (header shape, 1 MB of data)",
         lambda p: _zip(p, {"x.npy": _npy((1000, 4096, 4096, 3), data=bytes(1 << 20)), "y.npy": _npy((30,), "<i8", _labels(30).astype("<i8").tobytes())}),
         ("size", "large", "limit", "bytes", "x")),
        ("zip bomb: x.npy member declares 4 GB (deflated, 1 KB)",
         lambda p: _declared_bomb(p, (1000, 1024, 1024, 3), 4_000_000_000), ("size", "large", "limit", "bytes", "x")),
        ("not a zip: random bytes", lambda p: p.write_bytes(np.random.default_rng(2).bytes(5000)), ("npz", "archive", "zip")),
        ("empty file", lambda p: p.write_bytes(b""), ("npz", "archive", "empty")),
        ("a single .npy array", lambda p: np.save(open(p, "wb"), x), ("npz", "archive")),
        ("truncated archive", lambda p: (np.savez(p, x=x, y=y), p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
         ("npz", "archive", "truncated", "corrupt")),
        ("x.npy with a bad magic number", lambda p: _zip(p, {"x.npy": b"NOTNUMPY" + bytes(100), "y.npy": _npy((2,), "<i8", bytes(16))}),
         ("x", "npy", "corrupt", "magic")),
    ]


def npz_cases(assets: Assets, root: Path) -> list[Case]:
    cases = []
    for i, (name, write, names) in enumerate(npz_edits()):
        d = fresh_dir(root, "npz")
        path = d / "data.npz"
        write(path)
        cases += _cases("dataset-npz", i, name, f"npz:{path}", d, assets, names)
    d = fresh_dir(root, "npz-payload")
    sentinel = d / "PAYLOAD_RAN"
    path = d / "data.npz"
    np.savez(path, x=np.array([_Reduce(os.system, (f"touch {sentinel}",))], dtype=object), y=np.array([0]))
    cases += _cases("dataset-npz", 0, "x: an object array holding an os.system payload", f"npz:{path}", d, assets,
                    ("x", "object", "pickle"), sentinel=sentinel)
    d = fresh_dir(root, "npz-dir")
    (d / "data.npz").mkdir()
    cases += _cases("dataset-npz", 1, "path is a directory", f"npz:{d / 'data.npz'}", d, assets, ("file", "directory"))
    return cases


# --------------------------------------------------------------------------------------------- folders


def _png(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (RGB, 8 bit); ``idat`` defaults to a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat or zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def _valid_folder(root: Path, n: int = 9) -> Path:
    from tests.fuzz.assets import write_image_folder

    return write_image_folder(root, _images(n), _labels(n))


def folder_edits() -> list[tuple[str, Callable[[Path], Path], tuple[str, ...]]]:
    def with_file(name: str, data: bytes):
        def make(root: Path) -> Path:
            _valid_folder(root)
            (root / "class0" / name).write_bytes(data)
            return root
        return make

    def empty_class(root: Path) -> Path:
        _valid_folder(root)
        (root / "class3").mkdir()
        return root

    def one_class(root: Path) -> Path:
        _valid_folder(root)
        for name in ("class1", "class2"):
            for f in (root / name).iterdir():
                f.unlink()
            (root / name).rmdir()
        return root

    def no_classes(root: Path) -> Path:
        root.mkdir()
        return root

    def a_file(root: Path) -> Path:
        root.write_bytes(b"not a folder")
        return root

    def newline_name(root: Path) -> Path:
        _valid_folder(root)
        (root / "bad\nname").mkdir()
        return root

    def dir_as_image(root: Path) -> Path:
        one = empty_class(root)
        (one / "class3" / "x.png").mkdir()
        return one

    return [
        ("a class folder without images", empty_class, ("class3", "image")),
        ("one class only", one_class, ("class",)),
        ("no class folders", no_classes, ("class", "folder")),
        ("the path is a file", a_file, ("directory", "folder")),
        ("a 0-byte .png", with_file("zero.png", b""), ("zero.png",)),
        ("a text file named .png", with_file("text.png", b"hello, I am not an image\n" * 10), ("text.png",)),
        ("a truncated .png", with_file("cut.png", _png(16, 16)[:40]), ("cut.png",)),
        ("a .png declaring 100000 x 100000 pixels", with_file("huge.png", _png(100_000, 100_000)),
         ("huge.png",)),
        ("a .png declaring 9000 x 9000 pixels", with_file("big.png", _png(9000, 9000)), ("big.png",)),
        ("a .png declaring 0 x 16 pixels", with_file("zero-width.png", _png(0, 16)), ("zero-width.png",)),
        ("a .jpg of random bytes", with_file("noise.jpg", np.random.default_rng(3).bytes(3000)), ("noise.jpg",)),
        ("a class folder named with a newline, empty", newline_name, ("name", "image", "class")),
        ("a folder named x.png as the only 'image'", dir_as_image, ("class3", "image")),
    ]


def folder_cases(assets: Assets, root: Path) -> list[Case]:
    cases = []
    for i, (name, make, names) in enumerate(folder_edits()):
        d = fresh_dir(root, "folder")
        folder = make(d / "images")
        cases += _cases("dataset-folder", i, name, f"folder:{folder}", d, assets, names)
    d = fresh_dir(root, "folder-missing")
    cases += _cases("dataset-folder", 0, "the folder does not exist", f"folder:{d / 'nothing'}", d, assets,
                    ("no such", "exist"))
    return cases
