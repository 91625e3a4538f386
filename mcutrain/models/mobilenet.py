"""Float PyTorch modules for a NetSpec: conv + BatchNorm (+ ReLU6), inverted-residual blocks.

Module names mirror the paper's model files (first_conv, blocks.i.pointwise1 / depthwise /
pointwise2, classifier) so that imports and exports line up by name. Convs have no bias: BatchNorm
supplies it and is folded into an int32 bias by the quantizer.
"""

from __future__ import annotations

import torch
from torch import nn

from mcutrain.models.specs import BlockSpec, NetSpec


class ConvBN(nn.Module):
    """Conv2d (no bias, 'same' padding = kernel//2) -> BatchNorm2d -> optional ReLU6."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, *, depthwise: bool, relu6: bool):
        super().__init__()
        groups = in_ch if depthwise else 1
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU6() if relu6 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """Pointwise expand (ReLU6) -> depthwise (ReLU6) -> pointwise project (linear) [+ identity]."""

    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.spec = spec
        self.pointwise1 = (
            None if spec.mid_ch is None
            else ConvBN(spec.in_ch, spec.mid_ch, 1, 1, depthwise=False, relu6=True)
        )
        self.depthwise = ConvBN(spec.dw_ch, spec.dw_ch, spec.kernel, spec.stride, depthwise=True, relu6=True)
        self.pointwise2 = ConvBN(spec.dw_ch, spec.out_ch, 1, 1, depthwise=False, relu6=False)
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.pointwise1 is None else self.pointwise1(x)
        y = self.pointwise2(self.depthwise(y))
        return x + y if self.residual else y


class MobileNetLike(nn.Module):
    """first_conv -> blocks -> global average pool -> classifier (Linear)."""

    def __init__(self, spec: NetSpec, num_classes: int):
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.first_conv = ConvBN(spec.in_ch, spec.stem_ch, spec.stem_kernel, spec.stem_stride,
                                 depthwise=False, relu6=True)
        self.blocks = nn.ModuleList(InvertedResidual(b) for b in spec.blocks)
        self.classifier = nn.Linear(spec.feature_ch, num_classes)
        self._init_weights()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def _init_weights(self) -> None:
        # MobileNetV2's init; the last BN of each residual block starts at zero so every block
        # begins as the identity, which makes the deep narrow nets train from scratch reliably.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            if block.residual:
                nn.init.zeros_(block.pointwise2.bn.weight)
