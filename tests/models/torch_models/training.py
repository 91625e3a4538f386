"""The test models trained briefly on ``digits`` (offline, 8x8 grey digits upscaled): weights that make
argmax agreement between the float and the int8 model meaningful (random weights give near-ties)."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from mcutrain.data import load_dataset
from mcutrain.models.float_graph import InputPreprocessing
from mcutrain.quant.quantize_graph import image_pixels
from tests.models.torch_models import mobilenet_v2, plain_cnn, small_resnet

IMAGENET = InputPreprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
MODELS = {"mobilenet_v2": (mobilenet_v2, 32), "plain_cnn": (plain_cnn, 32), "small_resnet": (small_resnet, 16)}
STEPS, BATCH = 100, 32  # ~90% test accuracy on all three (150 x 64 gave 97%, 3x the time)


@functools.cache
def digits():
    return load_dataset("digits", seed=0)


@functools.cache
def trained(name: str, steps: int = STEPS):
    """(module in eval mode, its input side): seeded Adam on digits' training split, ImageNet preprocessing."""
    builder, side = MODELS[name]
    torch.manual_seed(0)
    model = builder.build(10)
    data = digits().train
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(steps):
        idx = rng.integers(0, len(data), BATCH)
        x = IMAGENET.normalize(image_pixels(data.images[idx], 3, side, side).float())
        loss = F.cross_entropy(model(x), torch.from_numpy(data.labels[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), side
