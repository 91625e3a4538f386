"""A random-weight int8 model of any zoo network (or any NetSpec): for memory figures, benchmarks, tests.

Memory and latency do not depend on the weights, so `mcutrain compile mcunet-5fps` needs no
training. BatchNorm statistics are randomised (not the identity init, which zeroes every residual
branch) and activations are calibrated on random images, so every layer carries varied integers.
"""

from __future__ import annotations

import numpy as np
import torch

from mcutrain.data import ImageSet, Preprocessing
from mcutrain.models import build_model
from mcutrain.models.mobilenet import MobileNetLike
from mcutrain.models.specs import NetSpec
from mcutrain.quant.qmodel import QModel
from mcutrain.quant.quantize import quantize_model
from mcutrain.train.checkpoint import CheckpointInfo


def random_images(n: int, side: int, seed: int = 0, classes: int = 3) -> ImageSet:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    return ImageSet(images, rng.integers(0, classes, n).astype(np.int64))


def random_float_model(model: str | NetSpec, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """A zoo network by name, or any architecture given as a NetSpec (e.g. random ones in tests)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if isinstance(model, NetSpec):
            model = MobileNetLike(model, num_classes).eval()
        else:
            model = build_model(model, num_classes).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.6 - 0.3)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
    return model


def random_qmodel(name: str | NetSpec, resolution: int, num_classes: int = 3,
                  seed: int = 0) -> tuple[QModel, torch.nn.Module]:
    """(int8 model, the float model it was quantized from); ``name``: a zoo name or a NetSpec."""
    model = random_float_model(name, num_classes, seed)
    name = model.spec.name
    info = CheckpointInfo(model=name, num_classes=num_classes, resolution=resolution,
                          classes=tuple(str(i) for i in range(num_classes)),
                          preprocessing=Preprocessing().to_dict())
    calib = random_images(64, resolution, seed, num_classes)
    qmodel = quantize_model(model, info, calib, batches=2, batch_size=32, seed=seed)
    return qmodel, model
