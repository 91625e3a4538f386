"""Post-training quantization: float checkpoint -> int8 QModel (DESIGN.md section 3).

Steps, each a small function: fold BatchNorm into conv weights and biases; calibrate per-tensor
activation ranges on a few training batches (the float model with folded BN, observing every conv
output, every residual sum and the pooled features); quantize weights per output channel
(symmetric, [-127, 127]) and biases to int32 at scale s_x * s_w[c].

Ranges are the mean over calibration batches of each batch's min and max (TFLite's moving-average
observer): one outlier image does not stretch a range for all. ReLU6 outputs get min = 0, so their
zero point is -128 and the clamp to [-128, 127] *is* the ReLU (plus a clip at 6 if 6 is inside the
range).

The same int8 file on every CPU
    torch's float convolutions take another vector path on another x86-64 CPU (AVX-512, AVX2, SSE,
    oneDNN's and MKL's own dispatch), which sums in another order: outputs differ in the last bits,
    so float32 calibration ranges, and with them a scale or a zero point, differed from machine to
    machine, and so did the int8 file. What decides a scale or a zero point is therefore computed
    so that it does not depend on the vector unit:
      - the calibration forward runs in float64: the order-dependent error of a conv output is then
        ~1e-16..1e-13 relative instead of ~1e-7..1e-5;
      - each batch's min and max are exact (a min/max does not round), their mean over batches is
        ``math.fsum`` (correctly rounded, order-free) divided by the count;
      - each range endpoint is then snapped to RANGE_BITS significant bits (``snap``): a difference
        of d (relative) moves a value across a snapping boundary only when the value lies within d
        of a midpoint between two grid values, probability ~ d / 2^-12, i.e. ~4e-10 per endpoint at
        d = 1e-13 and ~5e-8 for the ~100 endpoints of a network. That is the residual risk: a value
        (almost) exactly on a boundary; the file then differs in one scale/zero point. Measured on
        the bundled backbone: 29 of its 124 endpoints differ between the scalar and the AVX2 path
        before snapping, by at most 2.4e-16; the endpoint nearest a boundary is 1.6e-6 from it. The
        snap moves a range by at most 2^-12 of itself (0.024%), far below what calibrating on other
        batches moves it (the bundled backbone's int8 accuracy: 91.73% before, 91.89% after).
    Everything else that feeds the file is elementwise IEEE arithmetic (BatchNorm folding in float64,
    weight scales and rounding, bias rounding), correctly rounded on every CPU; max|w| is exact.
    Residual dependence outside this module: the calibration images themselves (resizing in
    ``data.loader`` is exact for integer upscaling factors such as 28 -> 64, the bundled case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mcutrain.data import BatchLoader, ImageSet, Preprocessing
from mcutrain.errors import McutrainError
from mcutrain.io.identity import tensors_sha256
from mcutrain.models.mobilenet import ConvBN, MobileNetLike
from mcutrain.quant.qmodel import QAdd, QBlock, QConv, QLinear, QModel, QPool, QTensor
from mcutrain.train.checkpoint import state_to_numpy

DEGENERATE_W_SCALE = 1e-8  # below this a channel is frozen: QAS divides by w_scale^2
RANGE_BITS = 12  # significant bits kept of each calibrated range endpoint (module docstring)
# The quantizer's name in a model's provenance: a new name whenever the same inputs give another file.
# v2: float64 calibration, ranges snapped to RANGE_BITS bits (v1's float32 ranges varied with the CPU).
QUANTIZER = "mcutrain-ptq-minmax-v2"


@dataclass(frozen=True)
class FoldedConv:
    weight: np.ndarray  # float32 OIHW, BatchNorm folded in
    bias: np.ndarray  # float32 [O]
    stride: int
    groups: int
    relu6: bool


def fold_batchnorm(cb: ConvBN) -> FoldedConv:
    """w' = w * gamma / sqrt(var + eps) per output channel; b' = beta - mean * gamma / sqrt(var + eps).

    Elementwise in float64 (then rounded once to float32): every operation is correctly rounded IEEE
    arithmetic, so the folded weights are the same bits on every CPU."""
    bn = cb.bn

    def f64(t: torch.Tensor) -> np.ndarray:
        return t.detach().numpy().astype(np.float64)

    factor = f64(bn.weight) / np.sqrt(f64(bn.running_var) + float(bn.eps))
    weight = f64(cb.conv.weight) * factor[:, None, None, None]
    bias = f64(bn.bias) - f64(bn.running_mean) * factor
    return FoldedConv(weight.astype(np.float32), bias.astype(np.float32),
                      cb.conv.stride[0], cb.conv.groups, isinstance(cb.act, nn.ReLU6))


def snap(value: float, bits: int = RANGE_BITS) -> float:
    """``value`` rounded to ``bits`` significant bits (ties to even): a value a few ULPs away from
    another lands on the same grid point unless a grid midpoint lies between them."""
    if value == 0.0 or not math.isfinite(value):
        return value
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2**exponent, 0.5 <= |mantissa| < 1
    return math.ldexp(round(mantissa * 2.0**bits), exponent - bits)  # every step exact in float64


def exact_mean(values: list[float]) -> float:
    """Mean with a correctly rounded sum (``math.fsum``): the same bits whatever the summation order."""
    return math.fsum(values) / len(values)


class RangeObserver:
    """Mean over batches of per-batch (min, max), each endpoint snapped (module docstring)."""

    def __init__(self) -> None:
        self.mins: list[float] = []
        self.maxs: list[float] = []

    def observe(self, t: torch.Tensor) -> torch.Tensor:
        self.mins.append(float(t.min()))
        self.maxs.append(float(t.max()))
        return t

    def range(self) -> tuple[float, float]:
        """(lo, hi) of the calibrated range, snapped: independent of the CPU's vector unit."""
        return snap(exact_mean(self.mins)), snap(exact_mean(self.maxs))

    def qtensor(self, relu: bool = False) -> QTensor:
        lo, hi = self.range()
        lo = 0.0 if relu else min(0.0, lo)
        hi = max(0.0, hi)
        return range_to_qtensor(lo, min(hi, 6.0) if relu else hi)


def range_to_qtensor(lo: float, hi: float) -> QTensor:
    """Asymmetric int8 over [lo, hi] (which must contain 0, so that 0 is exact)."""
    hi = max(hi, lo + 1e-6)
    scale = (hi - lo) / 255.0
    zero = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return QTensor(scale, zero)


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel symmetric: s_w = max|w_c| / 127, w_q = round(w / s_w) in [-127, 127]."""
    flat = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    w_scale = (flat / 127.0).astype(np.float32)
    safe = np.where(w_scale > 0, w_scale, 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (w.ndim - 1)
    w_q = np.clip(np.round(w / safe.reshape(shape)), -127, 127).astype(np.int8)
    return w_q, w_scale


def quantize_bias(b: np.ndarray, x_scale: float, w_scale: np.ndarray) -> np.ndarray:
    bias_scale = np.maximum(x_scale * w_scale.astype(np.float64), 1e-30)
    return np.clip(np.round(b / bias_scale), -2**31, 2**31 - 1).astype(np.int32)


def make_qconv(name: str, folded: FoldedConv, x: QTensor, y: QTensor) -> QConv:
    w_q, w_scale = quantize_weights(folded.weight)
    qmax = 127
    if folded.relu6:  # clip at 6 when 6 is representable inside the range
        qmax = int(min(127, y.zero + np.round(6.0 / y.scale)))
    frozen = tuple(int(c) for c in np.flatnonzero(w_scale < DEGENERATE_W_SCALE))
    return QConv(name, folded.stride, folded.groups, w_q, quantize_bias(folded.bias, x.scale, w_scale),
                 w_scale, x, y, qmin=y.zero if folded.relu6 else -128, qmax=qmax, frozen_channels=frozen)


def _float_forward(model: MobileNetLike, folded: dict[str, FoldedConv], x: torch.Tensor,
                   observe) -> None:
    """The float network with folded BN, in float64 (module docstring), reporting every tensor the
    int8 model will quantize."""

    def conv(name: str, t: torch.Tensor) -> torch.Tensor:
        f = folded[name]
        out = nn.functional.conv2d(t, torch.from_numpy(f.weight.astype(np.float64)),
                                   torch.from_numpy(f.bias.astype(np.float64)),
                                   f.stride, f.weight.shape[-1] // 2, 1, f.groups)
        return observe(name, out.clamp(0.0, 6.0) if f.relu6 else out)

    t = conv("first_conv", x)
    for i, block in enumerate(model.blocks):
        y = conv(f"blocks.{i}.pointwise1", t) if block.pointwise1 is not None else t
        y = conv(f"blocks.{i}.pointwise2", conv(f"blocks.{i}.depthwise", y))
        t = observe(f"blocks.{i}.add", t + y) if block.residual else y
    observe("pool", t.mean(dim=(2, 3)))


def calibrate(model: MobileNetLike, folded: dict[str, FoldedConv], data: ImageSet, resolution: int,
              preprocessing: Preprocessing, batches: int, batch_size: int, seed: int) -> dict[str, RangeObserver]:
    observers: dict[str, RangeObserver] = {}

    def observe(name: str, t: torch.Tensor) -> torch.Tensor:
        return observers.setdefault(name, RangeObserver()).observe(t)

    loader = BatchLoader(data, batch_size, resolution, shuffle=True, seed=seed, preprocessing=preprocessing)
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            _float_forward(model, folded, x.double(), observe)
    return observers


def quantize_model(model: MobileNetLike, info, calib: ImageSet, *, batches: int = 16,
                   batch_size: int = 64, seed: int = 0, calibration_data: str = "") -> QModel:
    """Float model + its CheckpointInfo + calibration images -> QModel.

    ``calibration_data`` names the images (a dataset name) for the provenance, which records the
    recipe that made the model (``io.identity.RECIPE_KEYS``): this quantizer, the source
    checkpoint's tensor identity and the calibration settings."""
    if batches < 1 or batch_size < 1:
        raise McutrainError(f"calibration needs at least 1 batch of at least 1 image, got {batches} batch(es) "
                            f"of {batch_size}")
    model.eval()
    prep = Preprocessing.from_dict(info.preprocessing)
    folded = {name: fold_batchnorm(m) for name, m in model.named_modules() if isinstance(m, ConvBN)}
    obs = calibrate(model, folded, calib, info.resolution, prep, batches, batch_size, seed)
    q_in = QTensor(prep.scale, 0)  # the int8 input is p - 128 exactly (offset 128)

    def qconv(name: str, x: QTensor) -> QConv:
        return make_qconv(name, folded[name], x, obs[name].qtensor(relu=folded[name].relu6))

    first = qconv("first_conv", q_in)
    blocks, t = [], first.y
    for i, b in enumerate(model.blocks):
        pw1 = qconv(f"blocks.{i}.pointwise1", t) if b.pointwise1 is not None else None
        dw = qconv(f"blocks.{i}.depthwise", pw1.y if pw1 else t)
        pw2 = qconv(f"blocks.{i}.pointwise2", dw.y)
        add = QAdd(t, pw2.y, obs[f"blocks.{i}.add"].qtensor()) if b.residual else None
        blocks.append(QBlock(pw1, dw, pw2, add))
        t = add.y if add else pw2.y
    pool_y = obs["pool"].qtensor()
    w = model.classifier.weight.detach().numpy()
    w_q, w_scale = quantize_weights(w)
    classifier = QLinear(w_q, quantize_bias(model.classifier.bias.detach().numpy(), pool_y.scale, w_scale),
                         w_scale, pool_y)
    return QModel(spec=model.spec, num_classes=model.num_classes, resolution=info.resolution,
                  classes=tuple(info.classes), preprocessing=dict(info.preprocessing), input=q_in,
                  first_conv=first, blocks=tuple(blocks), pool=QPool(t, pool_y), classifier=classifier,
                  provenance=quantizer_provenance(model, calibration_data, batches, batch_size, seed))


def quantizer_provenance(model: MobileNetLike, calibration_data: str, batches: int, batch_size: int,
                         seed: int) -> dict:
    """How the int8 model was made: the recipe a fresh machine reproduces (``io.identity``). The
    source is identified by its tensors (the checkpoint's stored state), not by its file's bytes,
    so a checkpoint whose header is rewritten stays the same source."""
    return {"quantizer": QUANTIZER, "source_tensors_sha256": tensors_sha256(state_to_numpy(model)),
            "calibration_data": str(calibration_data), "calibration_batches": int(batches),
            "calibration_batch_size": int(batch_size), "seed": int(seed), "range_bits": RANGE_BITS}
