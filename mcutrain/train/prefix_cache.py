"""Frozen-prefix cache: compute the frozen front of the int8 network once per image, not per epoch.

Works for the int8 simulation and its fp32 twin alike. Layers below the lowest trained conv neither change nor need gradients, and without augmentation their
int8 outputs depend only on the image, so fine-tuning may start every step at the first block that
holds a trained conv. The cached path is bit-identical to the uncached one: the same batches in the
same order (the loader's (seed, epoch) shuffle stream) reach exactly the same integers. This is what
makes the paper-scale sweeps (ImageNet models at 128x128, many schemes) affordable on two cores.
"""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from mcutrain.data import BatchLoader, ImageSet, Preprocessing
from mcutrain.data.loader import epoch_generator, side_hw
from mcutrain.quant.sim_model import Int8Net
from mcutrain.sparse import UpdatePlan
from mcutrain.train.float_twin import FloatTwin

CACHE_LIMIT_BYTES = 1 << 30


def first_trained_block(net: Int8Net | FloatTwin, plan: UpdatePlan) -> int | None:
    """Index of the first block with a trained conv (len(blocks) for classifier-only); None: no split.
    A graph net (``GraphNet``) answers in nodes: its longest frozen prefix ending at a cut point."""
    if hasattr(net, "frozen_split"):
        return net.frozen_split(plan)
    low = plan.lowest_trained_conv
    if low is None:
        return len(net.blocks)
    if low == 0:
        return None
    convs = net.convs()
    for b, block in enumerate(net.blocks):
        if any(c is convs[low] for c in (block.pointwise1, block.depthwise, block.pointwise2)):
            return b
    return None


@torch.no_grad()
def cache_prefix(net: Int8Net, data: ImageSet, resolution: int, prep: Preprocessing, stop_block: int,
                 batch_size: int = 128, bar: tqdm | None = None) -> torch.Tensor:
    """int8 inputs of block ``stop_block`` for every image of ``data``, in order; ``bar`` (if any)
    advances by the images done."""
    loader = BatchLoader(data, batch_size, resolution, shuffle=False, preprocessing=prep)
    parts = []
    for x, _ in loader:
        parts.append(net.prefix(x, stop_block).to(net.cache_dtype))
        if bar is not None:
            bar.update(len(x))
    return torch.cat(parts)


def cache_splits(net: Int8Net, splits: dict[str, ImageSet], resolution: int, prep: Preprocessing, stop_block: int,
                 progress: bool = False) -> dict[str, torch.Tensor]:
    """``cache_prefix`` of every split, under one progress bar (on stderr) over all their images:
    the preparation before the first training step takes seconds to minutes and should not look
    like a hang."""
    total = sum(len(d) for d in splits.values())
    unit = "nodes" if hasattr(net, "frozen_split") else "blocks"
    with tqdm(total=total, desc=f"caching frozen prefix ({stop_block} {unit})", unit="img", disable=not progress,
              file=sys.stderr) as bar:
        return {name: cache_prefix(net, data, resolution, prep, stop_block, bar=bar) for name, data in splits.items()}


def cached_bytes(net: Int8Net, n: int, resolution: int, stop_block: int) -> int:
    with torch.no_grad():
        probe = net.prefix(torch.zeros((1, 3) + side_hw(resolution)), stop_block)
    return probe.numel() * n * probe.new_empty((), dtype=net.cache_dtype).element_size()


class CachedBatches:
    """Batches of cached prefix outputs in the order a shuffled BatchLoader would give the images."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int):
        self.features, self.labels, self.batch_size, self.seed = features, labels, batch_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.labels), generator=epoch_generator(self.seed, self.epoch))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.features[idx].to(torch.float32), self.labels[idx]
