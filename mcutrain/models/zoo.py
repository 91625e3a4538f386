"""The model zoo: build a network by name and count what a microcontroller cares about.

The counts are computed from the spec (analytically), so they need no forward pass; the tests check
them against a forward pass with hooks and against the paper's published figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcutrain.errors import ModelError
from mcutrain.models.mobilenet import MobileNetLike
from mcutrain.models.specs import ALL_SPECS, NetSpec

_BY_NAME = {spec.name: spec for spec in ALL_SPECS}


def model_names() -> list[str]:
    return list(_BY_NAME)


def get_spec(name: str) -> NetSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(_BY_NAME)}") from None


def build_model(name: str, num_classes: int) -> MobileNetLike:
    if num_classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, got {num_classes}")
    return MobileNetLike(get_spec(name), num_classes)


@dataclass(frozen=True)
class ConvShape:
    """One convolution as the engine sees it (input side before the conv)."""

    name: str
    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    groups: int
    in_side: int

    @property
    def out_side(self) -> int:
        return -(-self.in_side // self.stride)  # 'same' padding: ceil(side / stride)

    @property
    def weights(self) -> int:
        return self.out_ch * (self.in_ch // self.groups) * self.kernel * self.kernel

    @property
    def macs(self) -> int:
        return self.out_side * self.out_side * self.weights


def conv_shapes(spec: NetSpec, resolution: int) -> list[ConvShape]:
    """Every backbone convolution in forward order (the paper's 0-based conv index)."""
    side = -(-resolution // spec.stem_stride)
    convs = [ConvShape("first_conv", spec.in_ch, spec.stem_ch, spec.stem_kernel, spec.stem_stride, 1, resolution)]
    for i, b in enumerate(spec.blocks):
        if b.mid_ch is not None:
            convs.append(ConvShape(f"blocks.{i}.pointwise1", b.in_ch, b.mid_ch, 1, 1, 1, side))
        convs.append(ConvShape(f"blocks.{i}.depthwise", b.dw_ch, b.dw_ch, b.kernel, b.stride, b.dw_ch, side))
        side = -(-side // b.stride)
        convs.append(ConvShape(f"blocks.{i}.pointwise2", b.dw_ch, b.out_ch, 1, 1, 1, side))
    return convs


def model_summary(name: str, resolution: int | None = None) -> dict:
    """The numbers `mcutrain zoo` prints: classifier and its bias are excluded from every count."""
    spec = get_spec(name)
    res = resolution or spec.default_resolution
    convs = conv_shapes(spec, res)
    return {
        "name": spec.name,
        "convs": len(convs),
        "blocks": len(spec.blocks),
        "backbone_weights": sum(c.weights for c in convs),
        "biases": sum(c.out_ch for c in convs),
        "macs": sum(c.macs for c in convs),
        "resolution": res,
        "feature_channels": spec.feature_ch,
    }
