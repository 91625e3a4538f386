"""Datasets by name: ``load_dataset`` (split, ready to train) and ``dataset_catalog`` (what exists).

A name is one of the named offline datasets (``sources.NAMED``), ``folder:PATH`` or ``npz:PATH``.
Datasets with an official test split keep it and carve a stratified 10% validation set from train;
all others get a stratified 70/15/15 split (``splits.py``). Splits depend only on the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcutrain.data import sources, splits
from mcutrain.errors import DataError


@dataclass(frozen=True, eq=False)
class ImageSet:
    """One split: uint8 images [N,H,W,C] (C in 1, 3) and int64 labels [N]."""

    images: np.ndarray
    labels: np.ndarray

    def subset(self, n: int, seed: int) -> "ImageSet":
        """A seeded random subset of ``n`` samples in their original order (all of them when ``n`` is
        0 or at least the size): sweeps and demos that must fit the machine say so in their results."""
        if not n or n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return ImageSet(self.images[idx], self.labels[idx])

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] not in (1, 3):
            raise DataError(f"ImageSet images must be uint8 [N,H,W,C] with C in (1, 3), "
                            f"got {self.images.dtype} {list(self.images.shape)}")
        if self.labels.dtype != np.int64 or self.labels.shape != (len(self.images),):
            raise DataError(f"ImageSet labels must be int64 [{len(self.images)}], "
                            f"got {self.labels.dtype} {list(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class SplitDataset:
    """A dataset split into train/val/test, with its class names (label i is classes[i])."""

    name: str
    classes: tuple[str, ...]
    train: ImageSet
    val: ImageSet
    test: ImageSet

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """[H, W, C] of the stored images (the loader resizes them to the training resolution)."""
        return tuple(int(s) for s in self.train.images.shape[1:])  # type: ignore[return-value]


def read_source(name: str) -> sources.RawData:
    """Resolve a dataset name to its raw (unsplit) data."""
    if name in sources.NAMED:
        return sources.NAMED[name].load()
    kind, sep, path = name.partition(":")
    if sep and path and kind == "folder":
        return sources.load_folder(Path(path).expanduser())
    if sep and path and kind == "npz":
        return sources.load_npz(Path(path).expanduser())
    known = ", ".join(sources.NAMED)
    raise DataError(f"unknown dataset {name!r}; known datasets: {known}; "
                    f"or your own data as folder:PATH or npz:PATH")


def split_raw(raw: sources.RawData, seed: int) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Split raw data deterministically from ``seed`` (see the module docstring)."""
    k = len(raw.classes)
    if raw.test_images is not None:
        tr, va = splits.split_val(raw.labels, k, seed, raw.classes)
        test = ImageSet(raw.test_images, raw.test_labels)
    else:
        tr, va, te = splits.split_three(raw.labels, k, seed, raw.classes)
        test = ImageSet(raw.images[te], raw.labels[te])
    return ImageSet(raw.images[tr], raw.labels[tr]), ImageSet(raw.images[va], raw.labels[va]), test


def load_dataset(name: str, seed: int = 0) -> SplitDataset:
    """Load a named dataset, ``folder:PATH`` or ``npz:PATH`` and split it from ``seed``."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"the split seed must be a non-negative integer, got {seed!r}")
    raw = read_source(name)
    train, val, test = split_raw(raw, seed)
    return SplitDataset(name, raw.classes, train, val, test)


def split_sizes(raw: sources.RawData) -> dict[str, int]:
    """Split sizes; they depend only on the class counts, so no images are copied."""
    k = len(raw.classes)
    if raw.test_images is not None:
        tr, va = splits.split_val(raw.labels, k, 0)
        return {"train": len(tr), "val": len(va), "test": len(raw.test_labels)}
    tr, va, te = splits.split_three(raw.labels, k, 0)
    return {"train": len(tr), "val": len(va), "test": len(te)}


def dataset_catalog() -> list[dict]:
    """Every named dataset, installed or not, with its shape, sizes and install command.

    For a missing dataset the static facts (classes, image shape) are still given and ``sizes`` is
    None; ``install`` is the command that installs it (None when installed). A dataset that is
    installed but fails to load is reported unavailable with the reason in ``error``.
    """
    rows = []
    for src in sources.NAMED.values():
        row = {"name": src.name, "available": False, "num_classes": len(src.classes),
               "image_shape": list(src.image_shape), "sizes": None, "classes": list(src.classes),
               "install": src.install, "source": src.source, "error": None}
        if src.available():
            try:
                raw = src.load()
                row.update(available=True, install=None, sizes=split_sizes(raw),
                           image_shape=[int(s) for s in raw.images.shape[1:]],
                           num_classes=len(raw.classes), classes=list(raw.classes))
            except DataError as err:
                row["error"] = str(err)
        rows.append(row)
    return rows


def mirror_safe(name: str) -> bool:
    """Whether random horizontal flips are a valid augmentation for this dataset.

    Mirroring a digit makes another symbol, so the digit datasets say no; user data (folder:, npz:)
    is assumed mirror-safe, as for most natural images.
    """
    source = sources.NAMED.get(name)
    return source.mirror_safe if source is not None else True
