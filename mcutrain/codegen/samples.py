"""Dataset images -> the int8 inputs a generated program takes (what a device's camera path would give).

The same path as training in simulation (``mcutrain.train.finetune``): ``BatchLoader`` resizes the
uint8 pixels to the model's resolution on the integer grid and applies the model's preprocessing,
then the input quantization of the int8 model (``mcutrain.quant.sim_model.Int8Net.quantize_input``:
``round(x / input.scale) + input.zero``) makes the int8 image, which is exactly ``p - 128`` for the
default preprocessing. No augmentation: a run on the device sees the images as they are.

An imported graph (``preprocessing["kind"] == "int8-graph"``, ``train.model_kind.target_facts``) takes
``p - 128`` at its own height x width, and one grey channel (the rounded mean of R, G, B) where it has
one: what ``GraphNet.quantize_input`` makes of the loader's default preprocessing.
"""

from __future__ import annotations

import numpy as np
import torch

from mcutrain.data import BatchLoader, ImageSet, Preprocessing
from mcutrain.errors import DataError
from mcutrain.quant.sim_graph import LOADER_SCALE

GRAPH_INPUT = "int8-graph"  # train.model_kind.GRAPH_INPUT (not imported: the runner stays light)

__all__ = ["int8_samples"]


def int8_samples(data: ImageSet, n: int, *, resolution, preprocessing: dict, input_scale: float,
                 input_zero: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of ``data`` in a seeded random order (repeated when ``n`` exceeds the split):
    (int8 images [n, C, H, W], int64 labels [n]); ``resolution``: a side, or [H, W] for a graph."""
    graph = preprocessing.get("kind") == GRAPH_INPUT
    if n <= 0:
        h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
        return np.zeros((0, preprocessing.get("channels", 3) if graph else 3, h, w), np.int8), np.zeros(0, np.int64)
    if len(data) == 0:
        raise DataError("cannot draw samples from an empty split")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(data)) for _ in range(-(-n // len(data)))])[:n]
    chosen = ImageSet(data.images[order], data.labels[order])
    if graph:
        loader = BatchLoader(chosen, min(n, 256), tuple(resolution), shuffle=False, preprocessing=Preprocessing())
        images = [graph_input(x, preprocessing["channels"]) for x, _ in loader]
    else:
        loader = BatchLoader(chosen, min(n, 256), resolution, shuffle=False,
                             preprocessing=Preprocessing.from_dict(preprocessing))
        images = [torch.round(x / input_scale).clamp_(-128, 127) + input_zero for x, _ in loader]
    return torch.cat(images).to(torch.int8).numpy(), chosen.labels.astype(np.int64)


def graph_input(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Loader floats ``(p - 128) / 128`` [N, 3, H, W] -> an imported graph's int8 input, as
    ``GraphNet.quantize_input`` (a test holds them equal): ``p - 128``, grey as the rounded mean."""
    q = torch.round(x * LOADER_SCALE).clamp_(-128, 127)
    if channels == 1 and q.shape[1] == 3:
        q = torch.round((q + 128).sum(1, keepdim=True) / 3) - 128
    return q
