"""Write a QModel in the paper's tiny-training model-file format (for tests that need no real file).

The layout follows ../shared/upstream/README.md ("Format"): a ``torch.save`` zip of a plain dict of
numpy arrays and Python numbers. Only what the importer and the reference forward read is written.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mcutrain.quant.qmodel import QConv, QModel


def _conv(c: QConv, in_side: int) -> dict:
    k = c.kernel
    return {
        "in_channel": c.in_ch, "out_channel": c.out_ch, "in_shape": in_side, "out_shape": -(-in_side // c.stride),
        "kernel_size": (k, k), "stride": c.stride, "groups": c.groups, "depthwise": c.groups > 1, "act": None,
        "params": {"weight": c.weight.copy(), "bias": c.bias.copy(), "w_scales": c.w_scale.copy(),
                   "x_scale": float(c.x.scale), "x_zero": int(c.x.zero),
                   "y_scale": float(c.y.scale), "y_zero": int(c.y.zero)},
    }


def to_tiny_training_dict(model: QModel) -> dict:
    side = model.resolution
    first = _conv(model.first_conv, side)
    side = first["out_shape"]
    blocks = []
    for b in model.blocks:
        d = {"pointwise1": None, "se": None, "residual": None}
        if b.pointwise1 is not None:
            d["pointwise1"] = _conv(b.pointwise1, side)
        d["depthwise"] = _conv(b.depthwise, side)
        side = d["depthwise"]["out_shape"]
        d["pointwise2"] = _conv(b.pointwise2, side)
        if b.add is not None:
            d["residual"] = {"in_channel": b.pointwise2.out_ch, "in_shape": side,
                             "params": {"x_scale": float(b.add.a.scale), "x_zero": int(b.add.a.zero),
                                        "y_scale": float(b.add.y.scale), "y_zero": int(b.add.y.zero)}}
        blocks.append(d)
    c = model.classifier
    classifier = {"in_channel": c.weight.shape[1], "out_channel": c.weight.shape[0], "kernel_size": (1, 1),
                  "stride": 1, "groups": 1,
                  "params": {"weight": c.weight.reshape(c.weight.shape + (1, 1)).copy(), "bias": c.bias.copy(),
                             "w_scales": c.w_scale.copy(), "x_scale": float(c.x.scale), "x_zero": int(c.x.zero),
                             "y_scale": 0.1, "y_zero": 0}}
    return {"first_conv": first, "blocks": blocks, "feature_mix": None, "classifier": classifier}


def write_tiny_training(path: str | Path, raw: dict) -> Path:
    torch.save(raw, path)
    return Path(path)
