"""Small int8 models for tests: a random-weight quantized `tiny` (and paper nets at small resolution)."""

from __future__ import annotations

import numpy as np
import torch

from mcutrain.data import ImageSet
from mcutrain.models import build_model
from mcutrain.quant.quantize import quantize_model
from mcutrain.train.checkpoint import CheckpointInfo


def random_images(n: int, side: int, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    return ImageSet(images, rng.integers(0, 3, n).astype(np.int64))


def quantized(name: str = "tiny", resolution: int = 32, classes: int = 3, seed: int = 0):
    """A float model with randomised BatchNorm statistics, quantized on random images."""
    torch.manual_seed(seed)
    model = build_model(name, classes).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    info = CheckpointInfo(model=name, num_classes=classes, resolution=resolution,
                          classes=tuple(str(i) for i in range(classes)),
                          preprocessing={"offset": 128.0, "scale": 1 / 128})
    return quantize_model(model, info, random_images(64, resolution, seed), batches=2, batch_size=32), model


def int8_input(n: int, side: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, (n, 3, side, side)).astype(np.int8)
