"""The int8 model: plain frozen data shared by every executor (DESIGN.md section 3).

A QModel is what the quantizer and the paper-model importer produce and what the PyTorch simulation,
the NumPy reference executor and the C generator consume. It holds integers and scales only; the
fixed-point requantization parameters are derived from the scales in one place (``requant``), so no
executor can derive them differently.

Conventions
- Activations are int8, per-tensor asymmetric (scale, zero). The network input is always
  ``q = p - 128`` for a uint8 pixel ``p``; ``input.scale`` says what one step means in the float model.
- Conv weights are int8 symmetric per output channel in [-127, 127]; biases int32 with scale
  ``x.scale * w_scale[c]``; output ``clamp(requant(acc) + y.zero, qmin, qmax)``: ReLU6 is folded
  into (y.zero, qmin, qmax).
- Conv order (``convs()``) is the forward order: the paper's 0-based conv index.
- ``frozen_channels`` lists output channels that must never be updated (degenerate w_scale ~ 0,
  where Quantization-Aware Scaling would divide by ~0).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from mcutrain.models.specs import NetSpec


@dataclass(frozen=True)
class QTensor:
    """Quantization of one activation tensor: real = scale * (q - zero)."""

    scale: float
    zero: int

    def to_dict(self) -> dict:
        return {"scale": float(self.scale), "zero": int(self.zero)}

    @classmethod
    def from_dict(cls, d: dict) -> "QTensor":
        return cls(float(d["scale"]), int(d["zero"]))


@dataclass(frozen=True, eq=False)
class QConv:
    """An int8 convolution (first conv, pointwise or depthwise) with fused BatchNorm and ReLU6."""

    name: str
    stride: int
    groups: int
    weight: np.ndarray  # int8 [O, I/groups, k, k]
    bias: np.ndarray  # int32 [O]
    w_scale: np.ndarray  # float32 [O]
    x: QTensor
    y: QTensor
    qmin: int = -128
    qmax: int = 127
    frozen_channels: tuple[int, ...] = ()
    # General geometry (imported graphs, issue 13). ``stride`` is the stride along the height; the
    # defaults describe the zoo's convs: square stride, ``kernel // 2`` zero-point rows/columns on
    # every side (PyTorch's padding). TFLite's SAME puts an odd extra row/column at the bottom/right.
    stride_w: int | None = None  # stride along the width; None: ``stride``
    pad: tuple[int, int, int, int] | None = None  # (top, bottom, left, right); None: kernel // 2 each

    @property
    def kernel_hw(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def strides(self) -> tuple[int, int]:
        return self.stride, self.stride if self.stride_w is None else self.stride_w

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right): rows/columns of the input zero point around the input."""
        if self.pad is not None:
            return self.pad
        kh, kw = self.kernel_hw
        return kh // 2, kh // 2, kw // 2, kw // 2

    @property
    def general_geometry(self) -> bool:
        """True unless this conv has the zoo's geometry: an odd square kernel, one stride for both
        axes and ``kernel // 2`` rows/columns of padding on every side (what the fused paths support)."""
        return is_general_geometry(self.kernel_hw, self.strides, self.padding)

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        """Output height and width for an h x w input."""
        (kh, kw), (sh, sw), (top, bottom, left, right) = self.kernel_hw, self.strides, self.padding
        return (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1

    @property
    def in_ch(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def out_ch(self) -> int:
        return self.weight.shape[0]

    @property
    def kernel(self) -> int:
        return self.weight.shape[2]

    @property
    def depthwise(self) -> bool:
        return self.groups > 1

    @cached_property
    def real_multiplier(self) -> np.ndarray:
        """s_x * s_w[c] / s_y in float64: the value the fixed-point (multiplier, shift) encodes."""
        return self.x.scale * self.w_scale.astype(np.float64) / self.y.scale

    @cached_property
    def requant(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel fixed-point (multiplier int32, shift int32), the TFLite/CMSIS-NN convention."""
        from mcutrain.quant.fixedpoint import quantize_multiplier

        mult, shift = quantize_multiplier(self.real_multiplier)
        return np.asarray(mult, np.int32), np.asarray(shift, np.int32)


def is_general_geometry(kernel_hw: tuple[int, int], strides: tuple[int, int],
                        padding: tuple[int, int, int, int]) -> bool:
    """Whether a conv's geometry differs from the zoo's (square odd kernel, square stride, k // 2 pads)."""
    kh, kw = kernel_hw
    return kh != kw or kh % 2 == 0 or strides[0] != strides[1] or tuple(padding) != (kh // 2,) * 4


@dataclass(frozen=True)
class QAdd:
    """Residual add: shortcut ``a`` (block input) + branch ``b`` (pointwise2 output) -> ``y``."""

    a: QTensor
    b: QTensor
    y: QTensor
    qmin: int = -128
    qmax: int = 127


@dataclass(frozen=True)
class QBlock:
    pointwise1: QConv | None
    depthwise: QConv
    pointwise2: QConv
    add: QAdd | None

    def convs(self) -> list[QConv]:
        return [c for c in (self.pointwise1, self.depthwise, self.pointwise2) if c is not None]


@dataclass(frozen=True)
class QPool:
    """Global average pool: int32 sum, rescaled to y with rounding, int8 out."""

    x: QTensor
    y: QTensor


@dataclass(frozen=True, eq=False)
class QLinear:
    """Classifier: int8 weights per output channel, int32 bias, fp32 logits = s_x*s_w[k]*acc[k]."""

    weight: np.ndarray  # int8 [K, C]
    bias: np.ndarray  # int32 [K]
    w_scale: np.ndarray  # float32 [K]
    x: QTensor


@dataclass(frozen=True, eq=False)
class QModel:
    spec: NetSpec
    num_classes: int
    resolution: int
    classes: tuple[str, ...]
    preprocessing: dict  # mcutrain.data.Preprocessing.to_dict()
    input: QTensor
    first_conv: QConv
    blocks: tuple[QBlock, ...]
    pool: QPool
    classifier: QLinear
    provenance: dict = field(default_factory=dict)  # how it was made (quantizer settings, import source)
    # An H x W input (imported graphs, issue 13); None: ``resolution`` x ``resolution`` (the zoo's).
    input_hw: tuple[int, int] | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the input image."""
        return tuple(self.input_hw) if self.input_hw is not None else (self.resolution, self.resolution)

    @property
    def input_channels(self) -> int:
        """Channels of the input image (1 or 3): the first conv's input channels."""
        return self.first_conv.in_ch

    def activation_sizes(self) -> list[tuple[int, int]]:
        """(height, width) of every conv's output, forward order (``convs()``)."""
        h, w = self.input_size
        sizes = []
        for conv in self.convs():
            h, w = conv.out_hw(h, w)
            sizes.append((h, w))
        return sizes

    def convs(self) -> list[QConv]:
        """Backbone convs in forward order; index i is the paper's conv index i."""
        return [self.first_conv] + [c for b in self.blocks for c in b.convs()]

    def with_convs(self, convs: list[QConv], classifier: QLinear, **changes) -> "QModel":
        """The same network with other convs (forward order) and classifier, e.g. after training."""
        it = iter(convs)
        first = next(it)
        blocks = []
        for qb in self.blocks:
            pw1 = next(it) if qb.pointwise1 is not None else None
            depthwise, pointwise2 = next(it), next(it)
            blocks.append(replace(qb, pointwise1=pw1, depthwise=depthwise, pointwise2=pointwise2))
        return replace(self, first_conv=first, blocks=tuple(blocks), classifier=classifier, **changes)
