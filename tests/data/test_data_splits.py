"""Splits: deterministic from the seed, stratified, disjoint and complete, with errors for tiny data."""

from __future__ import annotations

import numpy as np
import pytest

from mcutrain.data import load_dataset
from mcutrain.data.splits import split_three, split_val
from mcutrain.errors import DataError


def labels_with_counts(counts: list[int]) -> np.ndarray:
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(123).permutation(labels).astype(np.int64)


@pytest.mark.parametrize("counts", [[3, 3], [100, 100], [500, 37, 4, 3], [1000, 999, 1001]])
def test_three_way_split_partitions_and_stratifies(counts):
    labels = labels_with_counts(counts)
    tr, va, te = split_three(labels, len(counts), seed=7)
    everything = np.concatenate([tr, va, te])
    assert np.array_equal(np.sort(everything), np.arange(len(labels)))  # disjoint and complete
    for part in (tr, va, te):
        assert np.all(np.diff(part) > 0)  # sorted indices
        assert np.all(np.bincount(labels[part], minlength=len(counts)) >= 1)  # every class everywhere
    for c, n in enumerate(counts):  # per class close to 70/15/15
        n_val = np.sum(labels[va] == c)
        assert abs(n_val - 0.15 * n) <= 1 or n_val == 1
        assert np.sum(labels[te] == c) == n_val


def test_split_sizes_of_a_balanced_set():
    labels = labels_with_counts([100, 100])
    tr, va, te = split_three(labels, 2, seed=0)
    assert (len(tr), len(va), len(te)) == (140, 30, 30)


def test_same_seed_same_split_different_seed_different():
    labels = labels_with_counts([50, 60, 70])
    a, b, c = split_three(labels, 3, seed=1), split_three(labels, 3, seed=1), split_three(labels, 3, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])
    assert [len(x) for x in a] == [len(x) for x in c]  # sizes depend on class counts only


def test_val_carved_from_train_is_stratified_10_percent():
    labels = labels_with_counts([600, 300, 2])
    tr, va = split_val(labels, 3, seed=0)
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(labels)))
    assert np.bincount(labels[va]).tolist() == [60, 30, 1]
    tr2, va2 = split_val(labels, 3, seed=5)
    assert not np.array_equal(va, va2) and np.array_equal(split_val(labels, 3, seed=0)[1], va)


def test_too_small_to_split_names_the_class():
    labels = labels_with_counts([10, 2])
    with pytest.raises(DataError, match=r"class 'b' has 2 sample\(s\).*at least 3"):
        split_three(labels, 2, seed=0, classes=("a", "b"))
    with pytest.raises(DataError, match=r"class '1' has 1 sample"):
        split_val(labels_with_counts([10, 1]), 2, seed=0)


def test_load_dataset_small_npz_raises(tmp_path):
    path = tmp_path / "tiny.npz"
    np.savez(path, x=np.zeros((5, 4, 4), np.uint8), y=np.array([0, 0, 0, 1, 1]))
    with pytest.raises(DataError, match="too small to split"):
        load_dataset(f"npz:{path}")


def test_load_dataset_seed_changes_membership_only(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 3, 3), dtype=np.uint8)
    x[:, 0, 0] = np.arange(60)  # make every image unique, to identify it
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.arange(60) % 3)
    a, b, c = (load_dataset(f"npz:{path}", seed=s) for s in (4, 4, 5))
    assert np.array_equal(a.val.images, b.val.images) and np.array_equal(a.test.labels, b.test.labels)
    assert not np.array_equal(a.val.images, c.val.images) and len(a.val) == len(c.val)
    ids = lambda part: set(part.images[:, 0, 0, 0].tolist())
    assert ids(a.train) | ids(a.val) | ids(a.test) == set(range(60))
    assert not ids(a.train) & ids(a.test)


def test_negative_seed_is_a_data_error():
    with pytest.raises(DataError, match="non-negative integer"):
        load_dataset("faces", seed=-1)
