"""Dataset images -> the int8 inputs a generated program takes (what a device's camera path would give).

The same path as training in simulation (``mcutrain.train.finetune``): ``BatchLoader`` resizes the
uint8 pixels to the model's resolution on the integer grid and applies the model's preprocessing,
then the input quantization of the int8 model (``mcutrain.quant.sim_model.Int8Net.quantize_input``:
``round(x / input.scale) + input.zero``) makes the int8 image, which is exactly ``p - 128`` for the
default preprocessing. No augmentation: a run on the device sees the images as they are.
"""

from __future__ import annotations

import numpy as np
import torch

from mcutrain.data import BatchLoader, ImageSet, Preprocessing
from mcutrain.errors import DataError

__all__ = ["int8_samples"]


def int8_samples(data: ImageSet, n: int, *, resolution: int, preprocessing: dict, input_scale: float,
                 input_zero: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of ``data`` in a seeded random order (repeated when ``n`` exceeds the split):
    (int8 images [n, 3, R, R], int64 labels [n])."""
    if n <= 0:
        return np.zeros((0, 3, resolution, resolution), np.int8), np.zeros(0, np.int64)
    if len(data) == 0:
        raise DataError("cannot draw samples from an empty split")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(data)) for _ in range(-(-n // len(data)))])[:n]
    chosen = ImageSet(data.images[order], data.labels[order])
    loader = BatchLoader(chosen, min(n, 256), resolution, shuffle=False, preprocessing=Preprocessing.from_dict(
        preprocessing))
    images = [torch.round(x / input_scale).clamp_(-128, 127) + input_zero for x, _ in loader]
    return torch.cat(images).to(torch.int8).numpy(), chosen.labels.astype(np.int64)
