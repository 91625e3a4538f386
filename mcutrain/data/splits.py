"""Deterministic, stratified train/val/test splits.

Why stratified per class: the small datasets (faces, digits) have only a few dozen samples per
class, and a plain random split could leave a class out of val or test, which makes their accuracy
meaningless. Each class is split on its own with the same fractions, so every split has every class
and the split sizes depend only on the class counts, not on the seed (the seed picks *which* samples).

Everything is drawn from ``np.random.default_rng(seed)``: same seed, same split; indices are returned
sorted so that a split reads in the dataset's original order.
"""

from __future__ import annotations

import numpy as np

from mcutrain.errors import DataError

TRAIN_VAL_TEST = (0.70, 0.15, 0.15)
VAL_FROM_TRAIN = 0.10  # datasets with an official test split carve val from train


def _count(fraction: float, n: int) -> int:
    """round-half-up(fraction * n), at least 1: every split gets every class."""
    return max(1, int(np.floor(fraction * n + 0.5)))


def _class_members(labels: np.ndarray, num_classes: int, rng: np.random.Generator, need: int,
                   classes: tuple[str, ...] | None) -> list[np.ndarray]:
    """The shuffled indices of each class; DataError if a class has fewer than ``need`` samples."""
    members = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < need:
            name = classes[c] if classes else str(c)
            raise DataError(f"dataset too small to split: class {name!r} has {len(idx)} sample(s), "
                            f"each class needs at least {need} (one per split)")
        members.append(rng.permutation(idx))
    return members


def split_three(labels: np.ndarray, num_classes: int, seed: int,
                classes: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a stratified 70/15/15 train/val/test split (>= 1 sample of every class in each)."""
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for idx in _class_members(labels, num_classes, rng, 3, classes):
        n = len(idx)
        n_val, n_test = _count(TRAIN_VAL_TEST[1], n), _count(TRAIN_VAL_TEST[2], n)
        if n - n_val - n_test < 1:  # tiny classes: 1 each to val and test, the rest to train
            n_val, n_test = 1, 1
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val:n_val + n_test])
        parts[0].append(idx[n_val + n_test:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


def split_val(labels: np.ndarray, num_classes: int, seed: int,
              classes: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/val split taking 10% of each class for validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for idx in _class_members(labels, num_classes, rng, 2, classes):
        n_val = min(_count(VAL_FROM_TRAIN, len(idx)), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
