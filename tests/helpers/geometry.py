"""Small int8 models whose convs have general geometry (issue 13): for the geometry tests of every layer.

A random ``tiny`` QModel gets some convs swapped for convs of other kernels (non-square, even, up to
11x11), per-axis strides and explicit padding (TFLite SAME: the odd extra row/column at the
bottom/right; VALID: none), on a non-square input of 1 or 3 channels. Only non-residual blocks (1 and
3 of ``tiny``) change their output size, so every residual add still joins equal shapes. Each new
conv's weight scales are calibrated on random images so that its outputs use the int8 range.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from mcutrain.quant.qmodel import QConv, QModel
from mcutrain.quant.random_model import random_qmodel
from mcutrain.quant.sim_model import Int8Net
from mcutrain.quant.sim_ops import exact_conv

CLASSES = 4


def same_padding(size: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int]):
    """TFLite SAME: output ceil(size / stride); the odd extra row/column goes to the bottom/right."""
    pads = []
    for n, k, s in zip(size, kernel, strides):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


# name -> (input channels, input (h, w), {conv name: (kernel (kh, kw), strides, "same" | "valid")})
VARIANTS = {
    # 5x3 first conv, strides (2, 1); a 1x7 / 7x1 pair around a depthwise 5x5 with strides (1, 2);
    # a VALID 3x3 regular conv; a depthwise 11x11.
    "mixed": (1, (20, 28), {
        "first_conv": ((5, 3), (2, 1), "same"),
        "blocks.1.pointwise1": ((1, 7), (1, 1), "same"),
        "blocks.1.depthwise": ((5, 5), (1, 2), "same"),
        "blocks.1.pointwise2": ((7, 1), (1, 1), "same"),
        "blocks.3.pointwise1": ((3, 3), (1, 1), "valid"),
        "blocks.3.depthwise": ((11, 11), (2, 2), "same"),
    }),
    # an 11x11 first conv with asymmetric SAME padding; even kernels; stride 2 on one axis.
    "wide": (3, (26, 18), {
        "first_conv": ((11, 11), (2, 2), "same"),
        "blocks.1.depthwise": ((4, 4), (2, 2), "same"),
        "blocks.1.pointwise2": ((2, 2), (1, 1), "same"),
        "blocks.3.pointwise1": ((1, 1), (2, 1), "valid"),
        "blocks.3.depthwise": ((3, 3), (1, 2), "valid"),
    }),
    # the zoo's geometry everywhere ("zoo": k // 2 padding, no geometry fields) on a 1-channel
    # non-square input: every fused path (streamed image, row pipelines, block backwards) applies.
    "zoo_hw": (1, (18, 30), {
        "first_conv": ((3, 3), (2, 2), "zoo"),
    }),
}


def general_qmodel(variant: str = "mixed", seed: int = 1) -> QModel:
    """A ``tiny`` int8 model with the convs of ``VARIANTS[variant]`` swapped in."""
    in_ch, (h, w), swaps = VARIANTS[variant]
    q = random_qmodel("tiny", 32, CLASSES, seed=seed)[0]
    q = replace(q, resolution=h, input_hw=(h, w))
    rng = np.random.default_rng(seed)
    convs = q.convs()
    for i, conv in enumerate(convs):
        if conv.name not in swaps:
            continue
        kernel, strides, padding = swaps[conv.name]
        size = _input_size(q, i)
        pad = {"same": same_padding(size, kernel, strides), "valid": (0, 0, 0, 0), "zoo": None}[padding]
        cin = in_ch if i == 0 else conv.in_ch
        shape = (conv.out_ch, 1 if conv.groups > 1 else cin) + kernel
        weight = rng.integers(-127, 128, shape).astype(np.int8)
        bias = rng.integers(-500, 500, conv.out_ch).astype(np.int32)
        stride_w = None if padding == "zoo" else strides[1]
        new = replace(conv, stride=strides[0], stride_w=stride_w, pad=pad, weight=weight, bias=bias)
        convs[i] = _calibrated(q, i, new)
        q = q.with_convs(convs, q.classifier)
    return q


def int8_images(q: QModel, n: int, seed: int = 5) -> np.ndarray:
    h, w = q.input_size
    return np.random.default_rng(seed).integers(-128, 128, (n, q.input_channels, h, w)).astype(np.int8)


def _input_size(q: QModel, index: int) -> tuple[int, int]:
    return q.input_size if index == 0 else q.activation_sizes()[index - 1]


def _conv_input(q: QModel, index: int, images: np.ndarray) -> torch.Tensor:
    """The int8 input of conv ``index`` on ``images`` (the simulation, hooked)."""
    net = Int8Net(q)
    seen = {}
    hook = net.convs()[index].register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    with torch.no_grad():
        net.features(torch.from_numpy(images.astype(np.float32)))
    hook.remove()
    return seen["x"]


def _calibrated(q: QModel, index: int, conv: QConv) -> QConv:
    """``conv`` with weight scales that map its accumulators' spread to about 100 output steps."""
    probe = q.with_convs([conv if i == index else c for i, c in enumerate(q.convs())], q.classifier)
    x = _conv_input(probe, index, int8_images(probe, 8, seed=99))
    stride = conv.strides
    acc = exact_conv(x - conv.x.zero, torch.from_numpy(conv.weight.astype(np.float32)), stride, conv.groups,
                     conv.padding).double() + torch.from_numpy(conv.bias.astype(np.float64))[None, :, None, None]
    spread = acc.transpose(0, 1).flatten(1).abs().quantile(0.98, dim=1).clamp_min(1.0).numpy()
    w_scale = (100.0 / spread) * conv.y.scale / conv.x.scale
    return replace(conv, w_scale=w_scale.astype(np.float32))
