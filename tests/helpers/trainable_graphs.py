"""Test helper: small int8 graph classifiers that can learn, made the way a user makes them.

Not a test module. Seeded PyTorch modules (random initialisation) go through the PyTorch import
(``models.torch_import.import_module``) and calibrated quantization (``quant.quantize_graph``) on the
data set they will be trained on, so every activation range is realistic (random QGraphs with random
biases give near-constant features). ``resnet_like``: 3x3 convolutions, an identity and a 1x1
stride-2 convolution shortcut joined by ADDs, a global average pool (a MEAN), a fully connected
head. ``vww_like``: one grey input channel on a non-square 13 x 9 image, a stride-2 stem,
depthwise-separable blocks (3x3 depthwise, 1x1 pointwise, BatchNorm, ReLU6), an average pool, a flatten and a
fully connected head.
"""

from __future__ import annotations

import torch
from torch import nn

from mcutrain.data import SplitDataset
from mcutrain.models.torch_import import import_module
from mcutrain.quant.graph import QGraph
from mcutrain.quant.graph_file import GraphModel
from mcutrain.quant.quantize_graph import image_pixels, quantize_float_graph


class ResNetLike(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.b = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
        self.shortcut = nn.Conv2d(8, 16, 1, stride=2)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.relu(x + self.a(x))
        x = self.relu(self.shortcut(x) + self.b(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class VwwLike(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        layers = [nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6()]
        for c_in, c_out, stride in ((8, 16, 1), (16, 16, 2)):
            layers += [nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in), nn.BatchNorm2d(c_in),
                       nn.ReLU6(), nn.Conv2d(c_in, c_out, 1), nn.BatchNorm2d(c_out), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d((4, 3))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


# Odd sides before every stride-2 convolution: PyTorch's symmetric padding is then TFLite's SAME (exportable).
SHAPES = {ResNetLike: (1, 3, 15, 15), VwwLike: (1, 1, 13, 9)}


def pretrain(module: nn.Module, data: SplitDataset, shape: tuple[int, ...], epochs: int, seed: int) -> None:
    """A few fp32 Adam epochs on ``data`` (what the user's model went through before it was deployed)."""
    x = image_pixels(data.train.images, *shape[1:]).float().sub_(128).div_(128)
    y = torch.from_numpy(data.train.labels)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(32):
            loss = nn.functional.cross_entropy(module(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    module.eval()


def trainable_graph(module_type: type, data: SplitDataset, seed: int = 0, pretrain_epochs: int = 0) -> QGraph:
    """The int8 QGraph of a seeded ``module_type`` for ``data``'s classes (pretrained on it for
    ``pretrain_epochs``), calibrated on its training split."""
    torch.manual_seed(seed)
    module = module_type(len(data.classes))
    if pretrain_epochs:
        pretrain(module, data, SHAPES[module_type], pretrain_epochs, seed)
    float_graph = import_module(module, torch.zeros(SHAPES[module_type]), classes=tuple(data.classes))
    return quantize_float_graph(float_graph, data.train, batches=4, batch_size=64, seed=seed,
                                calibration_data=data.name)


def trainable_model(module_type: type, data: SplitDataset, seed: int = 0, pretrain_epochs: int = 0) -> GraphModel:
    return GraphModel(trainable_graph(module_type, data, seed, pretrain_epochs), tuple(data.classes))
