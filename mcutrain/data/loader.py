"""A fast batched loader: uint8 images in, float [B,3,R,R] batches out, all work batched in torch.

Why not ``torch.utils.data.DataLoader``: the datasets fit in memory as one uint8 tensor, and
per-image Python (Dataset.__getitem__, per-image transforms, collate) would be the bottleneck on a
2-core machine. Here a batch is one gather, one ``interpolate``, one gather for flip + shift and one
affine map.

Pixels are resized to R x R and then rounded back to the 0..255 integer grid: the network sees what
a device camera would deliver (uint8 pixels at R x R), which keeps the int8 input (``p - 128``)
exact. Greyscale becomes 3 channels by repetition so that every model takes 3-channel input.
The side may be one int (R x R, the zoo's) or a (height, width) pair: an imported graph's input may
be non-square (``mcutrain.quant.sim_graph`` turns the 3 channels into the graph's 1 or 3).

Determinism: the shuffle order and the augmentation of epoch e depend only on (seed, e), via a
``torch.Generator`` seeded from both. The loader does not advance the epoch by itself: call
``set_epoch(e)`` before iterating epoch e (as with torch's DistributedSampler); resuming at epoch e
then reproduces it exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mcutrain.data.datasets import ImageSet
from mcutrain.data.preprocessing import Preprocessing
from mcutrain.errors import DataError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator whose stream depends only on (seed, epoch), well mixed for nearby values."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def side_hw(resolution: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a resolution given as one side or as a pair."""
    if isinstance(resolution, (tuple, list)):
        return int(resolution[0]), int(resolution[1])
    return int(resolution), int(resolution)


def resize_pixels(x: torch.Tensor, resolution: int | tuple[int, int]) -> torch.Tensor:
    """Float pixels [B,C,H,W] -> [B,C,R,R] (or [B,C,H',W'] for a pair) on the integer 0..255 grid
    (bilinear; antialiased when shrinking)."""
    h, w = side_hw(resolution)
    if x.shape[-2:] == (h, w):
        return x
    shrink = h < x.shape[-2] or w < x.shape[-1]
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    return x.round_().clamp_(0.0, 255.0)


def flip_and_shift(x: torch.Tensor, gen: torch.Generator, hflip: bool) -> torch.Tensor:
    """Random horizontal flip and translation by up to side/8 pixels, edge pixels repeated.

    One advanced-indexing gather for the whole batch: row/column source indices are shifted per
    image and clamped to the border (which is edge padding), and reversed for flipped images.
    """
    b, _, h, w = x.shape
    max_dy, max_dx = h // 8, w // 8
    dy = torch.randint(-max_dy, max_dy + 1, (b, 1), generator=gen)
    dx = torch.randint(-max_dx, max_dx + 1, (b, 1), generator=gen)
    rows = (torch.arange(h) - dy).clamp_(0, h - 1)  # [B,H]
    cols = (torch.arange(w) - dx).clamp_(0, w - 1)  # [B,W]
    if hflip:
        flip = torch.rand(b, 1, generator=gen) < 0.5
        cols = torch.where(flip, cols.flip(1), cols)
    flat = rows[:, :, None] * w + cols[:, None, :]  # [B,H,W] source index in the flattened image
    src = x.flatten(2)  # [B,C,H*W]
    idx = flat.flatten(1)[:, None, :].expand(b, x.shape[1], h * w)
    return torch.gather(src, 2, idx).view_as(x)


class BatchLoader:
    """Iterate ``(x float32 [B,3,R,R], y int64 [B])`` batches over an ``ImageSet``.

    ``hflip=False`` (an addition to the shared API) keeps the random shifts but never mirrors: use
    it for digits, where a mirror image is a different or no symbol.
    """

    def __init__(self, data: ImageSet, batch_size: int, resolution: int | tuple[int, int], *, shuffle: bool,
                 seed: int = 0,
                 augment: bool = False, drop_last: bool = False,
                 preprocessing: Preprocessing = Preprocessing(), hflip: bool = True):
        if batch_size < 1 or min(side_hw(resolution)) < 1:
            raise DataError(f"batch size and resolution must be positive, got {batch_size} and {resolution}")
        from mcutrain.models.spec_file import MAX_RESOLUTION  # the architectures' limit (imports models lazily)

        if max(side_hw(resolution)) > MAX_RESOLUTION:
            raise DataError(f"resolution {resolution} is over the limit of {MAX_RESOLUTION}")
        if len(data) == 0:
            raise DataError("cannot load batches from an empty split")
        if drop_last and len(data) < batch_size:  # would silently yield no batch at all
            raise DataError(f"the split has {len(data)} samples, fewer than the batch size {batch_size} "
                            f"(with drop_last no batch is left); use a smaller batch size")
        # np.require copies only when needed: cached dataset arrays are read-only, torch wants writable
        self.images = torch.from_numpy(np.require(data.images.transpose(0, 3, 1, 2), requirements=["C", "W"]))
        self.labels = torch.from_numpy(np.ascontiguousarray(data.labels))
        self.batch_size = int(batch_size)
        self.resolution = resolution if isinstance(resolution, (tuple, list)) else int(resolution)
        self.shuffle, self.seed, self.augment, self.drop_last = shuffle, int(seed), augment, drop_last
        self.preprocessing, self.hflip = preprocessing, hflip
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle order and augmentation the next iteration produces."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        gen = epoch_generator(self.seed, self.epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self._batch(idx, gen), self.labels[idx]

    def _batch(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Gather, resize, augment and normalise one batch; channels are repeated last (cheapest)."""
        x = resize_pixels(self.images[idx].float(), self.resolution)
        if self.augment:
            x = flip_and_shift(x, gen, self.hflip)
        x = x.sub_(self.preprocessing.offset).mul_(self.preprocessing.scale)  # x is a fresh tensor here
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        return x
