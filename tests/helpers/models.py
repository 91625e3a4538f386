"""Small int8 models for tests (thin wrappers over mcutrain.quant.random_model)."""

from __future__ import annotations

import numpy as np

from mcutrain.quant.random_model import random_images, random_qmodel

__all__ = ["int8_input", "quantized", "random_images"]


def quantized(name: str = "tiny", resolution: int = 32, classes: int = 3, seed: int = 0):
    return random_qmodel(name, resolution, classes, seed)


def int8_input(n: int, side: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, (n, 3, side, side)).astype(np.int8)
