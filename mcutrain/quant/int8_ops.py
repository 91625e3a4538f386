"""Layer-level int8 ops built on the fixed-point primitives: the residual add and the global average pool.

Same conventions as ``fixedpoint`` (NumPy reference with a plain name, a ``_torch`` twin, the C99
expression in each docstring; tests check them bit-equal to each other and to ``mct_int8.h``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mcutrain.quant.fixedpoint import (
    ADD_LEFT_SHIFT,
    INT8_MAX,
    INT8_MIN,
    _check_clamp,
    _clamp_and_mask_np,
    _clamp_and_mask_torch,
    _int32_values,
    _mbqm_np,
    _mbqm_torch_,
    _mul_round1_np,
    _mul_round1_torch_,
    _owned_int64,
    _quantize_multiplier,
    quantize_multiplier,
)

# ----------------------------------------------------------------------------------------------
# Residual add
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddParams:
    """Constants of the fixed-point residual add ``y = a + b`` (TFLite int8 ADD).

    With ``twice_max = 2 * max(s_a, s_b)``:
    ``a_multiplier, a_shift = quantize_multiplier(s_a / twice_max)`` (<= 0.5),
    ``b_multiplier, b_shift = quantize_multiplier(s_b / twice_max)``,
    ``out_multiplier, out_shift = quantize_multiplier(twice_max / (2**left_shift * s_y))``.
    """

    left_shift: int
    a_zero: int
    a_multiplier: int
    a_shift: int
    b_zero: int
    b_multiplier: int
    b_shift: int
    out_zero: int
    out_multiplier: int
    out_shift: int
    qmin: int
    qmax: int


def add_params(s_a: float, z_a: int, s_b: float, z_b: int, s_y: float, z_y: int,
               qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> AddParams:
    """Build :class:`AddParams` from the scales / zero points of the two inputs and the output."""
    for name, s in (("s_a", s_a), ("s_b", s_b), ("s_y", s_y)):
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"residual add: scale {name}={s!r} must be finite and > 0")
    for z in (z_a, z_b):
        if not INT8_MIN <= z <= INT8_MAX:
            raise ValueError(f"residual add: zero point {z} outside [-128, 127]")
    _check_clamp(z_y, qmin, qmax)
    twice_max = 2.0 * max(s_a, s_b)
    a_m, a_s = quantize_multiplier(s_a / twice_max)
    b_m, b_s = quantize_multiplier(s_b / twice_max)
    o_m, o_s = quantize_multiplier(twice_max / (2.0**ADD_LEFT_SHIFT * s_y))
    return AddParams(ADD_LEFT_SHIFT, int(z_a), a_m, a_s, int(z_b), b_m, b_s, int(z_y), o_m, o_s, int(qmin), int(qmax))


def quantized_add(a_q, b_q, params: AddParams) -> np.ndarray:
    """Fixed-point residual add of two int8 tensors (same shape, or broadcastable) -> int8.

    ``sa = MBQM((a - z_a) * 2**20, a_multiplier, a_shift)``, ``sb`` likewise,
    ``v = MBQM(sa + sb, out_multiplier, out_shift) + z_y``, ``y = clamp(v, qmin, qmax)``.
    This approximates ``round((s_a*(a - z_a) + s_b*(b - z_b)) / s_y) + z_y`` to within 1 (tested).
    No intermediate overflows: ``|a - z_a| <= 255``, ``255 * 2**20 < 2**28``, ``|sa|, |sb| <= 2**27``.

    C99 (``mct_add``)::

        int32_t sa = mct_mbqm(((int32_t)a - a_zero) * (1 << 20), a_multiplier, a_shift);
        int32_t sb = mct_mbqm(((int32_t)b - b_zero) * (1 << 20), b_multiplier, b_shift);
        int64_t v = (int64_t)mct_mbqm(sa + sb, out_multiplier, out_shift) + out_zero;
        return (int8_t)(v < qmin ? qmin : (v > qmax ? qmax : v));
    """
    return quantized_add_with_mask(a_q, b_q, params)[0]


def quantized_add_with_mask(a_q, b_q, params: AddParams) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantized_add` plus the backward mask ``qmin < v < qmax``."""
    a = _int8_values(a_q, "a_q")
    b = _int8_values(b_q, "b_q")
    p = params
    table_a, table_b = add_operand_tables(p)
    sa, sb = table_a[a + 128], table_b[b + 128]
    v = _mbqm_np(sa + sb, np.int64(p.out_multiplier), np.int64(p.out_shift)) + p.out_zero
    return _clamp_and_mask_np(v, p.qmin, p.qmax)


def add_operand_tables(params: AddParams) -> np.ndarray:
    """[2, 256] int64: the rescaled operands ``sa``, ``sb`` of :func:`quantized_add` for the int8 values -128..127
    (row 0: a, row 1: b; index v + 128). Each depends on one int8 only, so the generated C takes them from these
    tables (``mct_add_table``, in Flash) instead of three MBQM an element; the NumPy add reads them too.

    C99 (``mct_add``'s first two lines for each v)."""
    p = params
    v = np.arange(-128, 128, dtype=np.int64)
    sa = _mbqm_np((v - p.a_zero) * (1 << p.left_shift), np.int64(p.a_multiplier), np.int64(p.a_shift))
    sb = _mbqm_np((v - p.b_zero) * (1 << p.left_shift), np.int64(p.b_multiplier), np.int64(p.b_shift))
    return np.stack([sa, sb]).astype(np.int64)


def quantized_add_torch(a_q: torch.Tensor, b_q: torch.Tensor, params: AddParams) -> torch.Tensor:
    """Torch twin of :func:`quantized_add` (int8 tensor)."""
    return quantized_add_with_mask_torch(a_q, b_q, params)[0]


def quantized_add_with_mask_torch(a_q: torch.Tensor, b_q: torch.Tensor,
                                  params: AddParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch twin of :func:`quantized_add_with_mask`."""
    p = params
    b_q = b_q.to(a_q.device)
    sa = _owned_int64(a_q, b_q).sub_(p.a_zero).mul_(1 << p.left_shift)
    sb = _owned_int64(b_q, a_q).sub_(p.b_zero).mul_(1 << p.left_shift)

    def const(v: int) -> torch.Tensor:
        return torch.tensor(v, dtype=torch.int64, device=sa.device)

    scratch = torch.empty_like(sa)
    _mbqm_torch_(sa, const(p.a_multiplier), const(p.a_shift), scratch)
    _mbqm_torch_(sb, const(p.b_multiplier), const(p.b_shift), scratch)
    v = _mbqm_torch_(sa.add_(sb), const(p.out_multiplier), const(p.out_shift), scratch).add_(p.out_zero)
    return _clamp_and_mask_torch(v, p.qmin, p.qmax)


def _int8_values(x, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer array, got dtype {a.dtype}")
    if a.size and (a.min() < INT8_MIN or a.max() > INT8_MAX):
        raise ValueError(f"{what} outside the int8 range")
    return a.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Global average pool
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AvgPoolParams:
    """Constants of the int8 global average pool over ``count = H*W`` positions.

    ``multiplier, shift`` encode ``s_x / (s_y * count)`` rounded UP (smallest encodable value >= the
    real), so that with ``s_y == s_x`` the single-rounding rescale is exactly the rounded division
    ``round_half_away(sum / count)`` for every count <= 2**16 (tested exhaustively for several counts).
    """

    count: int
    x_zero: int
    multiplier: int
    shift: int
    y_zero: int
    qmin: int
    qmax: int


MAX_POOL_COUNT = 2**16


def avgpool_params(s_x: float, z_x: int, s_y: float, z_y: int, count: int,
                   qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> AvgPoolParams:
    """Build :class:`AvgPoolParams` for pooling ``count`` positions from scale s_x to scale s_y."""
    if not (math.isfinite(s_x) and s_x > 0 and math.isfinite(s_y) and s_y > 0):
        raise ValueError(f"average pool: scales must be finite and > 0, got s_x={s_x!r}, s_y={s_y!r}")
    if not 1 <= count <= MAX_POOL_COUNT:
        raise ValueError(f"average pool over {count} positions: must be in [1, {MAX_POOL_COUNT}]")
    if not INT8_MIN <= z_x <= INT8_MAX:
        raise ValueError(f"average pool: zero point {z_x} outside [-128, 127]")
    _check_clamp(z_y, qmin, qmax)
    m, s = _quantize_multiplier(s_x / (s_y * count), round_up=True)
    return AvgPoolParams(int(count), int(z_x), m, s, int(z_y), int(qmin), int(qmax))


def avgpool_int8(x_q, z_x: int, s_x: float, s_y: float, z_y: int,
                 qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> np.ndarray:
    """Global average pool, int8 [N, C, H, W] -> int8 [N, C] with its own (s_y, z_y).

    ``sum = sum_{h,w} (x - z_x)`` (int32, ``|sum| <= 255*H*W``);
    ``v = round_half_away(sum * multiplier / 2**(31 - shift)) + z_y`` (one rounding, see
    :func:`multiply_by_quantized_multiplier_single_round` and :class:`AvgPoolParams`);
    ``y = clamp(v, qmin, qmax)``. With ``s_y == s_x`` this is the rounded division of TFLite's
    int8 AVERAGE_POOL_2D, ``(sum +- count/2) / count``.

    C99 (``mct_avgpool``, one output channel)::

        int32_t sum = 0;
        for (int i = 0; i < count; ++i) sum += (int32_t)x[i] - x_zero;
        int64_t v = (int64_t)mct_mul_round1(sum, multiplier, shift) + y_zero;
        return (int8_t)(v < qmin ? qmin : (v > qmax ? qmax : v));
    """
    return avgpool_int8_with_mask(x_q, z_x, s_x, s_y, z_y, qmin, qmax)[0]


def avgpool_int8_with_mask(x_q, z_x: int, s_x: float, s_y: float, z_y: int,
                           qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> tuple[np.ndarray, np.ndarray]:
    """:func:`avgpool_int8` plus the backward mask ``qmin < v < qmax`` ([N, C] bool)."""
    x = _int8_values(x_q, "x_q")
    if x.ndim != 4:
        raise ValueError(f"average pool expects [N, C, H, W], got shape {x.shape}")
    p = avgpool_params(s_x, z_x, s_y, z_y, x.shape[2] * x.shape[3], qmin, qmax)
    return avgpool_sum_rescale(_pool_sum_np(x, p.x_zero), p)


def _pool_sum_np(x: np.ndarray, z_x: int) -> np.ndarray:
    return (x - z_x).sum(axis=(2, 3))


def avgpool_sum_rescale(pool_sum, params: AvgPoolParams) -> tuple[np.ndarray, np.ndarray]:
    """The rescale step of the pool on given int32 sums: (int8 output, mask)."""
    s = _int32_values(pool_sum, "pool sum")
    p = params
    v = _mul_round1_np(s, np.int64(p.multiplier), np.int64(p.shift)) + p.y_zero
    return _clamp_and_mask_np(v, p.qmin, p.qmax)


def avgpool_int8_torch(x_q: torch.Tensor, z_x: int, s_x: float, s_y: float, z_y: int,
                       qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> torch.Tensor:
    """Torch twin of :func:`avgpool_int8` (int8 [N, C])."""
    return avgpool_int8_with_mask_torch(x_q, z_x, s_x, s_y, z_y, qmin, qmax)[0]


def avgpool_int8_with_mask_torch(x_q: torch.Tensor, z_x: int, s_x: float, s_y: float, z_y: int,
                                 qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch twin of :func:`avgpool_int8_with_mask`."""
    if x_q.dim() != 4:
        raise ValueError(f"average pool expects [N, C, H, W], got shape {tuple(x_q.shape)}")
    p = avgpool_params(s_x, z_x, s_y, z_y, x_q.shape[2] * x_q.shape[3], qmin, qmax)
    pool_sum = (x_q.to(torch.int64) - p.x_zero).sum(dim=(2, 3))
    return avgpool_sum_rescale_torch(pool_sum, p)


def avgpool_sum_rescale_torch(pool_sum: torch.Tensor, params: AvgPoolParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch twin of :func:`avgpool_sum_rescale`."""
    p = params
    s = _owned_int64(pool_sum)
    m = torch.tensor(p.multiplier, dtype=torch.int64, device=s.device)
    sh = torch.tensor(p.shift, dtype=torch.int64, device=s.device)
    v = _mul_round1_torch_(s, m, sh).add_(p.y_zero)
    return _clamp_and_mask_torch(v, p.qmin, p.qmax)


# ----------------------------------------------------------------------------------------------
# Rounded integer division (TFLite's int8 AVERAGE_POOL_2D and MEAN)
# ----------------------------------------------------------------------------------------------


def rounded_divide(total, count) -> np.ndarray:
    """``round_half_away(total / count)`` in integers, as TFLite's int8 average pool and MEAN round.

    ``count >= 1`` (broadcast against ``total``). C99, with C's truncating division::

        int32_t q = total > 0 ? (total + count / 2) / count : (total - count / 2) / count;

    For an even ``count`` a remainder of exactly half rounds away from zero; for an odd one
    ``count / 2`` is below half, so this is the nearest integer in every case.
    """
    t = np.asarray(total, dtype=np.int64)
    n = np.asarray(count, dtype=np.int64)
    if n.size and n.min() < 1:
        raise ValueError("rounded_divide: count must be >= 1")
    half = n // 2
    # NumPy's // floors; dividing magnitudes and restoring the sign gives C's truncation.
    return np.where(t > 0, (t + half) // n, -((-t + half) // n))
