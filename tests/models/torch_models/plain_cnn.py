"""A plain CNN written as users write them: functional ReLUs, pools, a view-flatten of a 2x2 map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PlainCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 24, (3, 5), padding=(1, 2))  # non-square kernel, with bias, no BN
        self.conv3 = nn.Conv2d(24, 32, 3, stride=2, padding="valid")
        self.bn3 = nn.BatchNorm2d(32)
        self.pool3 = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.drop = nn.Dropout(0.3)
        self.fc1 = nn.Linear(32 * 2 * 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(F.relu(self.bn1(self.conv1(x))))  # 32 -> 16
        x = torch.relu(self.conv2(x))
        x = F.relu6(self.bn3(self.conv3(x)))  # 16 -> 7
        x = self.pool3(x)  # 7 -> 4
        x = F.max_pool2d(x, 2)  # 4 -> 2
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(self.drop(x)))
        return self.fc2(x)


def build(num_classes: int = 10) -> PlainCNN:
    return PlainCNN(num_classes)
