"""The loader at a (height, width) resolution: what imported graphs with a non-square input need."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcutrain.data import BatchLoader, ImageSet
from mcutrain.data.loader import resize_pixels, side_hw
from mcutrain.errors import DataError


def _images(n: int = 5) -> ImageSet:
    rng = np.random.default_rng(0)
    return ImageSet(rng.integers(0, 256, (n, 20, 20, 3), dtype=np.uint8), np.arange(n) % 2)


def test_a_pair_gives_height_by_width_batches_on_the_pixel_grid():
    x, y = next(iter(BatchLoader(_images(), 4, (13, 9), shuffle=False)))
    assert x.shape == (4, 3, 13, 9) and y.tolist() == [0, 1, 0, 1]
    pixels = x * 128 + 128
    assert torch.equal(pixels, torch.round(pixels))  # integers 0..255: the int8 input p - 128 stays exact
    assert pixels.min() >= 0 and pixels.max() <= 255


def test_a_square_pair_equals_the_single_side():
    data = _images()
    a = next(iter(BatchLoader(data, 5, (12, 12), shuffle=False)))[0]
    b = next(iter(BatchLoader(data, 5, 12, shuffle=False)))[0]
    assert torch.equal(a, b)
    assert side_hw(7) == (7, 7) and side_hw((3, 4)) == (3, 4)
    assert resize_pixels(torch.zeros(1, 1, 6, 4), (6, 4)).shape == (1, 1, 6, 4)


@pytest.mark.parametrize("bad", [(0, 5), (5, 0), (100000, 4)])
def test_bad_pairs_are_refused(bad):
    with pytest.raises(DataError):
        BatchLoader(_images(), 2, bad, shuffle=False)
