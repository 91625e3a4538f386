"""Hostile and absurd datasets: every claim a file makes is checked before anything is allocated from it.

Each case is refused with a one-line ``DataError`` naming the file and, where there is one, the limit.
Archives are forged with the headers they claim (npy header + a few bytes), so the tests never build
the gigabytes a loader without the checks would have allocated.
"""

from __future__ import annotations

import random
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcutrain.data import limits, load_dataset, sources
from mcutrain.errors import DataError


def npy(shape: tuple[int, ...], dtype, data: bytes = b"", version=(1, 0)) -> bytes:
    """An npy stream whose header claims ``shape``/``dtype``, followed by ``data`` (maybe truncated)."""
    header = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                   "shape": tuple(shape)}).encode("latin1")
    size_bytes = 2 if version == (1, 0) else 4
    pad = -(len(header) + 1 + 8 + size_bytes) % 64
    header += b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes(version) + len(header).to_bytes(size_bytes, "little") + header + data


def forge(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> str:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return f"npz:{path}"


def refused(name: str, pattern: str) -> str:
    """Load ``name``, expect a one-line DataError matching ``pattern`` that names the file."""
    with pytest.raises(DataError, match=pattern) as err:
        load_dataset(name)
    message = str(err.value)
    assert "\n" not in message
    assert name.split(":", 1)[1] in message
    return message


def small_xy(n: int = 6) -> dict[str, np.ndarray]:
    return {"x": np.zeros((n, 4, 4), np.uint8), "y": np.arange(n) % 2}


# ----------------------------------------------------------------------------- labels


def test_huge_label_is_refused_before_any_class_is_built(tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 2_000_000_000]))
    tracemalloc.start()
    try:
        message = refused(f"npz:{path}", "label 2000000000 is out of range")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"{limits.MAX_CLASSES}" in message
    assert peak < 20 * 1024 ** 2  # no 2e9 class names, no 16 GB bincount


def test_uint64_label_above_2_63_does_not_wrap(tmp_path):
    path = tmp_path / "u64.npz"
    np.savez(path, x=np.zeros((3, 4, 4), np.uint8), y=np.array([0, 1, 2 ** 63], np.uint64))
    refused(f"npz:{path}", f"label {2 ** 63} is out of range")


def test_negative_label_in_every_signed_dtype(tmp_path):
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        path = tmp_path / f"neg-{np.dtype(dtype).name}.npz"
        np.savez(path, x=np.zeros((3, 4, 4), np.uint8), y=np.array([0, 1, -1], dtype))
        refused(f"npz:{path}", "label -1 is negative")


@pytest.mark.parametrize("y", [np.array([0.0, 1.0]), np.array([True, False]), np.array(["0", "1"])])
def test_labels_must_be_integers(tmp_path, y):
    path = tmp_path / "dtype.npz"
    np.savez(path, x=np.zeros((2, 4, 4), np.uint8), y=y)
    refused(f"npz:{path}", "y must be a 1-D integer array")


def test_label_count_must_match_before_anything_is_read(tmp_path):
    # the header of x claims 10 images and carries none: refused from the headers alone
    name = forge(tmp_path / "count.npz", {"x.npy": npy((10, 4, 4), np.uint8), "y.npy": npy((3,), np.int64)})
    refused(name, "x has 10 samples but y has 3")


def test_too_many_classes_in_a_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_CLASSES", 2)
    root = tmp_path / "ds"
    for c in "abc":
        for i in range(3):
            save(root / c / f"{i}.png", np.full((4, 4), i * 50, np.uint8))
    with pytest.raises(DataError, match=r"3 classes, over the limit of 2") as err:
        sources.load_folder(root)
    assert str(root) in str(err.value)


def test_too_many_samples(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_SAMPLES", 5)
    path = tmp_path / "n.npz"
    np.savez(path, **small_xy(6))
    refused(f"npz:{path}", "6 samples, over the limit of 5")


# ----------------------------------------------------------------------------- sizes


def test_decompression_bomb_is_refused_from_the_headers(tmp_path):
    # 8.4 GB claimed by a few hundred bytes: the header is read, nothing is decompressed
    name = forge(tmp_path / "bomb.npz", {"x.npy": npy((90_000, 300, 310), np.uint8, b"\0" * 64),
                                          "y.npy": npy((90_000,), np.int64)})
    message = refused(name, "decompress to .* over the limit of 2.00 GiB")
    assert "7.80 GiB" in message


def test_compressed_npz_over_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_DATASET_BYTES", 1024 ** 2)
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, x=np.zeros((2000, 32, 32), np.uint8), y=np.arange(2000) % 2)
    assert path.stat().st_size < 100_000  # small on disk, 2 MB decompressed
    refused(f"npz:{path}", "over the limit of 0.00 GiB")


def test_declared_member_size_counts_even_when_the_header_is_small(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_DATASET_BYTES", 1024 ** 2)
    padded = npy((4, 2, 2), np.uint8, bytes(16) + bytes(2 * 1024 ** 2))  # 2 MB of trailing zeros
    name = forge(tmp_path / "pad.npz", {"x.npy": padded, "y.npy": npy((4,), np.int64, bytes(32))})
    refused(name, "over the limit")


@pytest.mark.parametrize("shape", [(60, 0, 0), (4, 0, 5), (4, 5, 0), (2, 5000, 4), (2, 4, 5000)])
def test_zero_size_and_huge_images_are_refused(tmp_path, shape):
    name = forge(tmp_path / "shape.npz", {"x.npy": npy(shape, np.uint8), "y.npy": npy((shape[0],), np.int64)})
    message = refused(name, rf"images of {shape[1]}x{shape[2]} pixels")
    assert f"1 to {limits.MAX_IMAGE_SIDE} pixels" in message


def test_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "pickle.npz"
    np.savez(path, x=np.array([object(), 1], dtype=object), y=np.array([0, 1]))
    refused(f"npz:{path}", "holds Python objects")


def test_classes_must_be_strings_and_match_k(tmp_path):
    path = tmp_path / "names.npz"
    np.savez(path, **small_xy(), classes=np.array([1, 2]))
    refused(f"npz:{path}", "classes must be a 1-D string array")
    np.savez(path, **small_xy(), classes=np.array(["a", "a"]))
    refused(f"npz:{path}", "classes must be 2 distinct strings")


def test_unsupported_npy_version_and_corrupt_stream(tmp_path):
    name = forge(tmp_path / "v3.npz", {"x.npy": npy((2, 4, 4), np.uint8, bytes(32), version=(3, 0)),
                                        "y.npy": npy((2,), np.int64, bytes(16))})
    refused(name, "array 'x' has no readable npy header .*version 3.0")
    good = tmp_path / "good.npz"
    np.savez_compressed(good, x=np.random.default_rng(0).integers(0, 256, (64, 8, 8), np.uint8),
                        y=np.arange(64) % 2)
    blob = bytearray(good.read_bytes())
    start = blob.index(b"x.npy") + 200  # inside x's deflate stream
    blob[start:start + 64] = bytes(64)
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(bytes(blob))
    refused(f"npz:{bad}", "cannot read array 'x'|no readable npy header|not a readable .npz")


def test_random_corruption_gives_a_data_error_or_a_dataset(tmp_path):
    """Seeded fuzz: flip, zero or truncate bytes of a valid archive; the loader must either load it or
    refuse it with a one-line DataError, never another exception."""
    good = tmp_path / "good.npz"
    rng_np = np.random.default_rng(1)
    np.savez(good, x=rng_np.integers(0, 256, (12, 5, 5), np.uint8), y=np.arange(12) % 3,
             classes=np.array(["a", "b", "c"]))
    blob = good.read_bytes()
    rng = random.Random(11)
    outcomes = {"loaded": 0, "refused": 0}
    for trial in range(150):
        mutated = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(mutated))
            mutated[i] = rng.choice([0, 0xFF, mutated[i] ^ (1 << rng.randrange(8))])
        if trial % 10 == 0:
            mutated = mutated[:rng.randrange(len(mutated))]
        path = tmp_path / f"m{trial}.npz"
        path.write_bytes(bytes(mutated))
        try:
            sources.load_npz(path)
            outcomes["loaded"] += 1
        except DataError as err:
            assert "\n" not in str(err) and str(path) in str(err)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 20 and sum(outcomes.values()) == 150


# ----------------------------------------------------------------------------- folder images


def save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_folder_image_over_the_side_limit_is_named(tmp_path):
    root = tmp_path / "ds"
    for c in "ab":
        for i in range(3):
            save(root / c / f"{i}.png", np.full((4, 4), i, np.uint8))
    save(root / "b" / "wide.png", np.zeros((2, 5000), np.uint8))
    with pytest.raises(DataError, match=r"wide.png: images of 2x5000 pixels \(HxW\); each side must be 1 to 4096"):
        sources.load_folder(root)


def test_folder_decoded_size_is_checked_from_the_headers(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    for c in "ab":
        for i in range(3):
            save(root / c / f"{i}.png", np.full((16, 16, 3), (i * 40, 0, 9), np.uint8))  # colour
    monkeypatch.setattr(limits, "MAX_DATASET_BYTES", 6 * 16 * 16 * 3 - 1)
    with pytest.raises(DataError, match=r"decode to .* \(6 images, most of them 16x16\), over the limit"):
        sources.load_folder(root)
    monkeypatch.setattr(limits, "MAX_DATASET_BYTES", 6 * 16 * 16 * 3)
    assert sources.load_folder(root).images.shape == (6, 16, 16, 3)


def test_folder_stacked_size_counts_the_common_size(tmp_path, monkeypatch):
    # one large image first, the rest all different small sizes: the most common size is the large
    # one (ties go to the first seen), so stacking would resize every image up to it
    root = tmp_path / "ds"
    save(root / "a" / "0.png", np.zeros((64, 64), np.uint8))
    for i in range(1, 6):
        save(root / ("a" if i < 3 else "b") / f"{i}.png", np.zeros((i, i), np.uint8))
    monkeypatch.setattr(limits, "MAX_DATASET_BYTES", 64 * 64 * 6 - 1)  # the images alone fit
    with pytest.raises(DataError, match="most of them 64x64"):
        sources.load_folder(root)


def test_folder_pillow_bomb_guard_is_one_line(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    for c in "ab":
        for i in range(3):
            save(root / c / f"{i}.png", np.full((40, 40), i, np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels > 2 x 100: Pillow refuses
    with pytest.raises(DataError, match=r"0.png: unreadable or corrupt image \(.*decompression bomb") as err:
        sources.load_folder(root)
    assert "\n" not in str(err.value)
