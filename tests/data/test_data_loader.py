"""BatchLoader: shapes, dtypes, value range, determinism per (seed, epoch), augmentation; Preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcutrain.data import BatchLoader, ImageSet, Preprocessing
from mcutrain.data.loader import flip_and_shift, resize_pixels
from mcutrain.errors import DataError


def image_set(n=50, h=12, w=12, c=1, seed=0) -> ImageSet:
    rng = np.random.default_rng(seed)
    return ImageSet(rng.integers(0, 256, (n, h, w, c), dtype=np.uint8), np.arange(n, dtype=np.int64) % 5)


def collect(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("channels,resolution", [(1, 16), (3, 16), (1, 8), (3, 12)])
def test_batch_shapes_dtypes_range(channels, resolution):
    data = image_set(c=channels)
    loader = BatchLoader(data, 16, resolution, shuffle=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 4
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    x, y = collect(loader)
    assert x.shape == (50, 3, resolution, resolution) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and torch.equal(y, torch.from_numpy(data.labels))
    assert x.min() >= -1.0 and x.max() <= 127 / 128
    pixels = x * 128 + 128  # default preprocessing inverted: integer pixels (what a camera gives)
    assert torch.allclose(pixels, pixels.round(), atol=1e-4)
    if channels == 1:
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])


def test_native_resolution_is_exact_and_unshuffled():
    data = image_set(c=3)
    x, _ = collect(BatchLoader(data, 7, 12, shuffle=False))
    expected = torch.from_numpy(data.images).permute(0, 3, 1, 2).float()
    assert torch.equal(x, (expected - 128) / 128)


def test_custom_preprocessing_and_roundtrip():
    prep = Preprocessing(offset=0.0, scale=1 / 255)
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    assert Preprocessing().to_dict() == {"offset": 128.0, "scale": 1 / 128}
    x, _ = collect(BatchLoader(image_set(), 10, 12, shuffle=False, preprocessing=prep))
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    with pytest.raises(DataError, match="unknown preprocessing field"):
        Preprocessing.from_dict({"offset": 1.0, "mean": 2.0})
    with pytest.raises(DataError, match="positive scale"):
        Preprocessing(scale=0.0)


def test_drop_last():
    loader = BatchLoader(image_set(n=50), 16, 8, shuffle=True, drop_last=True)
    sizes = [len(y) for _, y in loader]
    assert len(loader) == 3 and sizes == [16, 16, 16]
    assert len(BatchLoader(image_set(n=48), 16, 8, shuffle=True, drop_last=True)) == 3


def test_shuffle_is_a_permutation_and_deterministic_per_epoch():
    data = image_set(n=64)
    a = BatchLoader(data, 8, 12, shuffle=True, seed=3, augment=True)
    b = BatchLoader(data, 8, 12, shuffle=True, seed=3, augment=True)
    a.set_epoch(5)
    b.set_epoch(5)
    xa, ya = collect(a)
    xb, yb = collect(b)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(collect(a)[0], xa)  # iterating again repeats the epoch (no hidden state)
    assert sorted(ya.tolist()) == sorted(data.labels.tolist())
    a.set_epoch(6)
    xc, yc = collect(a)
    assert not torch.equal(yc, ya) and not torch.equal(xc, xa)
    c = BatchLoader(data, 8, 12, shuffle=True, seed=4, augment=True)
    c.set_epoch(5)
    assert not torch.equal(collect(c)[1], ya)


def test_resume_reproduces_epoch_without_replaying_earlier_ones():
    data = image_set(n=40)
    full = BatchLoader(data, 8, 16, shuffle=True, seed=1, augment=True)
    for e in range(3):
        full.set_epoch(e)
        last = collect(full)
    resumed = BatchLoader(data, 8, 16, shuffle=True, seed=1, augment=True)
    resumed.set_epoch(2)
    again = collect(resumed)
    assert torch.equal(last[0], again[0]) and torch.equal(last[1], again[1])


def test_augment_keeps_shape_and_pixels_and_changes_images():
    data = image_set(n=32)
    plain, _ = collect(BatchLoader(data, 8, 16, shuffle=False))
    aug, _ = collect(BatchLoader(data, 8, 16, shuffle=False, augment=True))
    assert aug.shape == plain.shape
    assert not torch.equal(aug, plain)
    # flips and shifts only move pixels: every augmented value exists in the source image
    for i in range(4):
        assert set(aug[i, 0].unique().tolist()) <= set(plain[i, 0].unique().tolist())


def test_flip_and_shift_moves_pixels_as_documented():
    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8).repeat(200, 1, 1, 1)
    out = flip_and_shift(x, torch.Generator().manual_seed(0), hflip=True)
    flipped = x.flip(-1)
    matches = 0
    for img in out[:, 0]:
        # each output is a clamped shift (<= 1 pixel for side 8) of the image or of its mirror
        ok = False
        for src in (x[0, 0], flipped[0, 0]):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    rows = (torch.arange(8) - dy).clamp(0, 7)
                    cols = (torch.arange(8) - dx).clamp(0, 7)
                    ok |= torch.equal(img, src[rows][:, cols])
        matches += ok
    assert matches == 200
    assert (out[:, 0, 4, 4] != x[:, 0, 4, 4]).any()  # something moved
    no_flip = flip_and_shift(x, torch.Generator().manual_seed(0), hflip=False)
    # without flips, the rows' left-to-right order is preserved
    assert torch.all(no_flip[:, 0, :, 1:] >= no_flip[:, 0, :, :-1])


def test_resize_antialiases_when_shrinking():
    stripes = torch.zeros(1, 1, 32, 32)
    stripes[..., ::2] = 255.0  # one-pixel stripes average to mid grey when shrunk
    small = resize_pixels(stripes, 8)
    assert small.shape == (1, 1, 8, 8)
    assert torch.all((small[..., 1:-1] - 127.5).abs() <= 1)  # borders see a truncated filter
    big = resize_pixels(torch.full((1, 3, 4, 4), 9.0), 16)
    assert torch.equal(big, torch.full((1, 3, 16, 16), 9.0))


def test_bad_arguments():
    with pytest.raises(DataError, match="positive"):
        BatchLoader(image_set(), 0, 8, shuffle=False)
    with pytest.raises(DataError, match="fewer than the batch size 64"):
        BatchLoader(image_set(n=50), 64, 8, shuffle=True, drop_last=True)
    assert len(BatchLoader(image_set(n=50), 64, 8, shuffle=True)) == 1
    with pytest.raises(DataError, match="empty split"):
        BatchLoader(ImageSet(np.zeros((0, 4, 4, 1), np.uint8), np.zeros(0, np.int64)), 4, 8, shuffle=False)
    with pytest.raises(DataError, match="uint8"):
        ImageSet(np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, np.int64))
    with pytest.raises(DataError, match="int64"):
        ImageSet(np.zeros((2, 4, 4, 1), np.uint8), np.zeros(3, np.int64))


def test_resolution_and_preprocessing_limits():
    data = ImageSet(np.zeros((4, 8, 8, 1), np.uint8), np.arange(4, dtype=np.int64) % 2)
    with pytest.raises(DataError, match="resolution 100000 is over the limit of 1024"):
        BatchLoader(data, 2, 100_000, shuffle=False)
    for offset, scale in ((1e30, 1 / 128), (-1.0, 1 / 128), (128.0, 2.0)):
        with pytest.raises(DataError, match="offset must be 0 to 255 and scale at most 1"):
            Preprocessing(offset=offset, scale=scale)
    assert Preprocessing(offset=255.0, scale=1.0).scale == 1.0
