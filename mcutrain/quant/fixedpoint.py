"""Fixed-point int8 arithmetic: one spec, three executors (PyTorch simulation, NumPy reference, C).

The residual add and the global average pool built on these live in ``int8_ops``.

Every primitive below exists twice: a NumPy function (the reference, plain name) and a PyTorch function
(same name + ``_torch``; batched, vectorised, int64 math, runs on any device). Tests check the pair
bit-equal to each other, to a pure-Python integer model, and to the C99 header ``mct_int8.h`` beside
this file, compiled with gcc. Each docstring quotes the C99 expression that generated C uses.

Conventions (TFLite / gemmlowp / CMSIS-NN):

* A positive real multiplier ``r`` is stored as ``(multiplier, shift)`` with
  ``r ~= multiplier * 2**(shift - 31)``, ``multiplier`` an int32 in ``[2**30, 2**31)`` (0 for r == 0),
  ``shift`` in ``[MIN_SHIFT, MAX_SHIFT] = [-31, 30]``.
* ``multiply_by_quantized_multiplier(x, m, s)`` = ``RDBPOT(SRDHM(sat32(x * 2**max(s,0)), m), max(-s,0))``:
  TFLite ``MultiplyByQuantizedMultiplier`` (double rounding), equal to CMSIS-NN ``arm_nn_requantize``
  (without CMSIS_NN_USE_SINGLE_ROUNDING). The left shift saturates to int32 where TFLite would overflow
  (undefined behaviour there); nothing else differs.
* Requantization output: ``v = MBQM(acc) + z_y`` (int64, no overflow), ``y = clamp(v, qmin, qmax)``;
  the backward mask is ``qmin < v < qmax`` (strict: DESIGN.md section 3).
* Rounding: ``SRDHM`` rounds ``a*b/2**31`` half up (towards +inf), ``RDBPOT`` rounds half away from
  zero, the single-rounding multiply used by the average pool rounds half away from zero.

Integer inputs of the NumPy functions must lie in the int32 range (checked: ``ValueError``), except the
accumulator of ``requantize``, which is first saturated to int32 (the C kernel forms it as
``mct_sat_i32((int64_t)sum + bias)`` so that a bias at the int32 limit cannot wrap). The torch
functions do not check (a check would synchronise the GPU); they accept integer tensors or floating
tensors holding exact integers (converted with ``.to(torch.int64)``).
"""

from __future__ import annotations


import numpy as np
import torch

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT8_MIN = -128
INT8_MAX = 127
MIN_SHIFT = -31
"""Multipliers below about 2**-32 give shift < -31: they are stored as (0, 0), i.e. an exact zero.
For |x| <= 2**31 the true product |x * r| is then < 0.5, so rounding it also gives 0 (TFLite rule)."""
MAX_SHIFT = 30
"""Multipliers >= about 2**30 are refused (ValueError): no scale ratio of a real model comes near."""
ADD_LEFT_SHIFT = 20
"""Headroom bits of the fixed-point residual add (TFLite uses 20 for int8)."""

# ----------------------------------------------------------------------------------------------
# Multiplier encoding
# ----------------------------------------------------------------------------------------------


def quantize_multiplier(real: float | np.ndarray) -> tuple[int, int] | tuple[np.ndarray, np.ndarray]:
    """Encode ``real >= 0`` as ``(multiplier, shift)``, ``real ~= multiplier * 2**(shift - 31)``.

    TFLite ``QuantizeMultiplier``: ``real = q * 2**e`` with ``q`` in [0.5, 1) (``frexp``);
    ``multiplier = round_half_away(q * 2**31)``; if that is ``2**31``, halve it and ``e += 1``;
    ``shift = e``. ``real == 0`` or ``shift < -31`` (real below ~2**-32) gives ``(0, 0)``.
    Relative error of the encoding: ``|multiplier * 2**(shift-31) - real| <= 2**-31 * real``
    (multiplier >= 2**30 and the rounding error is <= 0.5).

    Vectorised: an array ``real`` (per-channel) gives two int32 arrays; a scalar gives two ints.
    Raises ``ValueError`` for negative, non-finite, or too large (shift > 30) reals. The encoding is
    done once in Python; C gets the constants.
    """
    return _quantize_multiplier(real, round_up=False)


def _quantize_multiplier(real, round_up: bool):
    r = np.asarray(real, dtype=np.float64)
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"a quantized multiplier needs finite reals >= 0, got {real!r}")
    q, e = np.frexp(r)  # r = q * 2**e, q in [0.5, 1) (q = 0 for r = 0); q * 2**31 is exact in float64
    scaled = q * 2.0**31
    # q * 2**31 >= 2**30 has spacing <= 2**-22, so adding 0.5 is exact: floor(x + 0.5) = round half up.
    m = (np.ceil(scaled) if round_up else np.floor(scaled + 0.5)).astype(np.int64)
    e = e.astype(np.int64)
    carry = m == 2**31
    m = np.where(carry, m // 2, m)
    e = np.where(carry, e + 1, e)
    zero = (r == 0) | (e < MIN_SHIFT)
    m = np.where(zero, 0, m)
    e = np.where(zero, 0, e)
    if np.any(e > MAX_SHIFT):
        raise ValueError(f"multiplier {real!r} too large: shift must be <= {MAX_SHIFT} (real < ~2**30)")
    if r.ndim == 0:
        return int(m), int(e)
    return m.astype(np.int32), e.astype(np.int32)


def dequantize_multiplier(multiplier, shift) -> np.ndarray | float:
    """The real value ``multiplier * 2**(shift - 31)`` an encoded multiplier stands for (exact, float64)."""
    return np.ldexp(np.asarray(multiplier, dtype=np.float64), np.asarray(shift, dtype=np.int64) - 31)


# ----------------------------------------------------------------------------------------------
# Input handling helpers
# ----------------------------------------------------------------------------------------------


def _int32_values(x, what: str = "value") -> np.ndarray:
    """``x`` as an int64 array, checked to lie in the int32 range."""
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer array, got dtype {a.dtype}")
    if a.size and (a.min() < INT32_MIN or a.max() > INT32_MAX):  # compared before any cast can wrap
        raise ValueError(f"{what} outside the int32 range")
    return a.astype(np.int64)


def _shift_values(shift, lo: int, hi: int, what: str = "shift") -> np.ndarray:
    s = _int32_values(shift, what)
    if s.size and (s.min() < lo or s.max() > hi):
        raise ValueError(f"{what} must lie in [{lo}, {hi}], got range [{s.min()}, {s.max()}]")
    return s


def _along_axis(values: np.ndarray, ndim: int, axis: int, size: int | None = None) -> np.ndarray:
    """Reshape a per-channel 1-D array so that it broadcasts along ``axis`` of an ``ndim`` array."""
    if values.ndim == 0:
        return values
    if values.ndim != 1:
        raise ValueError(f"per-channel values must be 1-D, got shape {values.shape}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"channel axis {axis} out of range for a {ndim}-D tensor")
    if size is not None and values.shape[0] != size:
        raise ValueError(f"{values.shape[0]} per-channel values for {size} channels")
    shape = [1] * ndim
    shape[axis % ndim] = values.shape[0]
    return values.reshape(shape)


def _torch_long(x, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.int64)
    return torch.as_tensor(np.asarray(x, dtype=np.int64), device=device)


def _torch_along_axis(values: torch.Tensor, ndim: int, axis: int, size: int | None = None) -> torch.Tensor:
    if values.dim() == 0:
        return values
    if values.dim() != 1:
        raise ValueError(f"per-channel values must be 1-D, got shape {tuple(values.shape)}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"channel axis {axis} out of range for a {ndim}-D tensor")
    if size is not None and values.shape[0] != size:
        raise ValueError(f"{values.shape[0]} per-channel values for {size} channels")
    shape = [1] * ndim
    shape[axis % ndim] = values.shape[0]
    return values.reshape(shape)


def _owned_int64(x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
    """A fresh contiguous int64 copy of ``x``, broadcast against ``others``: the torch kernels below
    work in place on it (fresh allocations, not arithmetic, dominate their cost on CPU)."""
    shape = torch.broadcast_shapes(x.shape, *(o.shape for o in others))
    return torch.empty(shape, dtype=torch.int64, device=x.device).copy_(x)


def _torch_multiplier(multiplier, shift, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(multiplier, shift) as int64 tensors; NumPy / int inputs are range-checked first (cheap, no GPU sync)."""
    if not isinstance(multiplier, torch.Tensor):
        multiplier = _int32_values(multiplier, "multiplier")
    if not isinstance(shift, torch.Tensor):
        shift = _shift_values(shift, MIN_SHIFT, MAX_SHIFT)
    return _torch_long(multiplier, device), _torch_long(shift, device)


def _device_of(*xs) -> torch.device:
    for x in xs:
        if isinstance(x, torch.Tensor):
            return x.device
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# SaturatingRoundingDoublingHighMul
# ----------------------------------------------------------------------------------------------


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul``: ``round(a * b / 2**31)``, ties towards +inf.

    ``ab = a * b`` in int64; ``nudge = ab >= 0 ? 2**30 : 1 - 2**30``; result
    ``(ab + nudge) / 2**31`` with C division (truncating towards zero), which equals
    ``floor((ab + 2**30) / 2**31)`` = CMSIS-NN ``arm_nn_doubling_high_mult_no_sat`` (an SMLAL and a
    shift on the M7). The one overflowing case ``a == b == INT32_MIN`` saturates to ``INT32_MAX``.

    C99 (``mct_srdhm``)::

        if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
        int64_t ab = (int64_t)a * (int64_t)b;
        int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
        return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
    """
    a = _int32_values(a, "a")
    b = _int32_values(b, "b")
    return _srdhm_np(a, b).astype(np.int32)


def _srdhm_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = a * b  # |ab| <= 2**62: exact in int64
    q = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(q >= 0, q >> 31, -((-q) >> 31))  # C99 division by 2**31 (towards zero)
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def saturating_rounding_doubling_high_mul_torch(a, b) -> torch.Tensor:
    """Torch twin of :func:`saturating_rounding_doubling_high_mul` (int32 result)."""
    dev = _device_of(a, b)
    a, b = _torch_long(a, dev), _torch_long(b, dev)
    return _srdhm_torch_(_owned_int64(a, b), b).to(torch.int32)


def _srdhm_torch_(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """In place on ``x``: ``min(floor((x*b + 2**30) / 2**31), INT32_MAX)``.

    The same function as the gemmlowp form of the NumPy twin (``floor(ab/2**31 + 1/2)`` either way; the
    only value above INT32_MAX comes from INT32_MIN * INT32_MIN), written as an SMLAL-style shift:
    the two forms are checked equal by the tests.
    """
    return x.mul_(b).add_(1 << 30).bitwise_right_shift_(31).clamp_(max=INT32_MAX)


# ----------------------------------------------------------------------------------------------
# RoundingDivideByPOT
# ----------------------------------------------------------------------------------------------


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero.

    ``exponent`` in [0, 31] (scalar or broadcastable array). Equals CMSIS-NN
    ``arm_nn_divide_by_power_of_two``.

    C99 (``mct_rdbpot``; ``>>`` of a negative int32 is arithmetic on gcc/clang/armcc)::

        int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
        int32_t remainder = x & mask;
        int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
        return (x >> exponent) + (remainder > threshold ? 1 : 0);
    """
    x = _int32_values(x, "x")
    e = _shift_values(exponent, 0, 31, "exponent")
    return _rdbpot_np(x, e).astype(np.int32)


def _rdbpot_np(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    mask = (np.int64(1) << e) - 1
    remainder = x & mask  # low bits of the two's complement: the same in int64 as in int32
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def rounding_divide_by_pot_torch(x, exponent) -> torch.Tensor:
    """Torch twin of :func:`rounding_divide_by_pot` (int32 result)."""
    dev = _device_of(x, exponent)
    x, e = _torch_long(x, dev), _torch_long(exponent, dev)
    return _rdbpot_torch_(_owned_int64(x, e), e).to(torch.int32)


def _rdbpot_torch_(x: torch.Tensor, e: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """In place on ``x``: ``(x + 2**(e-1) - [x < 0]) >> e`` for e >= 1, ``x`` for e == 0.

    Round half away from zero written as one biased floor shift (ties of negatives go down because of
    the -1); the NumPy twin uses gemmlowp's mask / remainder / threshold form; tests check them equal.
    ``scratch``: optional int64 buffer of x's shape, spares an allocation.
    """
    half = (torch.ones_like(e) << e) >> 1
    minus_one_if_negative = torch.bitwise_right_shift(x, 63, out=scratch) if scratch is not None else x >> 63
    if not bool((e > 0).all()):  # checked on the (per-channel) exponents: skips a full pass when all shift
        minus_one_if_negative.mul_((e > 0).to(torch.int64))
    return x.add_(half).add_(minus_one_if_negative).bitwise_right_shift_(e)


# ----------------------------------------------------------------------------------------------
# MultiplyByQuantizedMultiplier (double rounding, the conv requantization)
# ----------------------------------------------------------------------------------------------


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """``round(x * multiplier * 2**(shift - 31))`` the TFLite / CMSIS-NN way (two roundings).

    ``RDBPOT(SRDHM(sat32(x * 2**left), multiplier), right)`` with ``left = max(shift, 0)``,
    ``right = max(-shift, 0)``; ``shift`` in [-31, 30]; arguments broadcast against each other.

    Accuracy (tested): for ``r = multiplier * 2**(shift-31)`` and no saturation,
    ``|result - x*r| <= 0.5 + 0.5 * 2**-right`` (<= 0.75 when right >= 1, <= 0.5 when right == 0),
    so with the encoding error of :func:`quantize_multiplier`, for the original real ``r0``:
    ``|result - x*r0| <= 0.75 + |x*r0| * 2**-31``; hence ``result`` is within 1 of
    ``round(x*r0)`` whenever ``|x*r0| < 2**29``. It is NOT always equal to it (double rounding).

    C99 (``mct_mbqm``)::

        int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
        return mct_rdbpot(mct_srdhm(mct_sat_i32((int64_t)x * ((int64_t)1 << left)), multiplier), right);
    """
    x = _int32_values(x, "x")
    m = _int32_values(multiplier, "multiplier")
    s = _shift_values(shift, MIN_SHIFT, MAX_SHIFT)
    return _mbqm_np(x, m, s).astype(np.int32)


def _mbqm_np(x: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    shifted = np.clip(x * (np.int64(1) << left), INT32_MIN, INT32_MAX)
    return _rdbpot_np(_srdhm_np(shifted, m), right)


def multiply_by_quantized_multiplier_torch(x, multiplier, shift) -> torch.Tensor:
    """Torch twin of :func:`multiply_by_quantized_multiplier` (int32 result)."""
    dev = _device_of(x, multiplier, shift)
    x = _torch_long(x, dev)
    m, s = _torch_multiplier(multiplier, shift, dev)
    return _mbqm_torch_(_owned_int64(x, m, s), m, s).to(torch.int32)


def _mbqm_torch_(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor,
                 scratch: torch.Tensor | None = None) -> torch.Tensor:
    """In place on ``x`` (int64, values in int32): MultiplyByQuantizedMultiplier."""
    left = s.clamp(min=0)
    right = (-s).clamp(min=0)
    if bool((left > 0).any()):  # multipliers >= 1 only: real models almost never need the left shift
        x.mul_(torch.ones_like(left) << left).clamp_(INT32_MIN, INT32_MAX)
    return _rdbpot_torch_(_srdhm_torch_(x, m), right, scratch)


# ----------------------------------------------------------------------------------------------
# Single-rounding multiply (used by the average pool)
# ----------------------------------------------------------------------------------------------


def multiply_by_quantized_multiplier_single_round(x, multiplier, shift) -> np.ndarray:
    """``round_half_away(x * multiplier / 2**(31 - shift))`` in one rounding, saturated to int32.

    The product is exact in int64 (``|x|, multiplier < 2**31``); ``shift`` in [-31, 30] so the total
    right shift ``31 - shift`` lies in [1, 62]. Used by :func:`avgpool_int8`, where one rounding
    makes "same scale in and out" an exact rounded division by H*W (see there).

    C99 (``mct_mul_round1``)::

        int64_t p = (int64_t)x * multiplier;
        int total = 31 - shift;
        int64_t half = (int64_t)1 << (total - 1);
        int64_t q = p >= 0 ? (p + half) >> total : -((-p + half) >> total);
        return mct_sat_i32(q);
    """
    x = _int32_values(x, "x")
    m = _int32_values(multiplier, "multiplier")
    s = _shift_values(shift, MIN_SHIFT, MAX_SHIFT)
    return _mul_round1_np(x, m, s).astype(np.int32)


def _mul_round1_np(x: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    p = x * m
    total = 31 - s
    half = np.int64(1) << (total - 1)
    q = np.where(p >= 0, (p + half) >> total, -((-p + half) >> total))
    return np.clip(q, INT32_MIN, INT32_MAX)


def multiply_by_quantized_multiplier_single_round_torch(x, multiplier, shift) -> torch.Tensor:
    """Torch twin of :func:`multiply_by_quantized_multiplier_single_round` (int32 result)."""
    dev = _device_of(x, multiplier, shift)
    x = _torch_long(x, dev)
    m, s = _torch_multiplier(multiplier, shift, dev)
    return _mul_round1_torch_(_owned_int64(x, m, s), m, s).to(torch.int32)


def _mul_round1_torch_(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """In place on ``x``: sign-magnitude round-half-away shift of ``x * m`` by ``31 - s``, saturated."""
    total = 31 - s
    half = torch.ones_like(total) << (total - 1)
    x.mul_(m)
    sign = x >> 63  # 0 or -1
    x.bitwise_xor_(sign).sub_(sign)  # |x|
    x.add_(half).bitwise_right_shift_(total)
    x.bitwise_xor_(sign).sub_(sign)  # sign restored
    return x.clamp_(INT32_MIN, INT32_MAX)


# ----------------------------------------------------------------------------------------------
# Requantization of conv accumulators
# ----------------------------------------------------------------------------------------------


def requantize(acc, multiplier, shift, zero_point: int, qmin: int = INT8_MIN, qmax: int = INT8_MAX,
               channel_axis: int = 1) -> np.ndarray:
    """int32 accumulator -> int8: ``clamp(MBQM(sat32(acc), multiplier[c], shift[c]) + zero_point, qmin, qmax)``.

    ``multiplier`` / ``shift`` are scalars (per-tensor) or 1-D arrays indexed by the channel axis
    ``channel_axis`` of ``acc`` (default 1: NCHW or [N, C]). ReLU6 is the clamp range.
    ``acc`` may be any integer array; it is saturated to int32 first.

    C99 (``mct_requantize``)::

        int64_t v = (int64_t)mct_mbqm(acc, multiplier, shift) + zero_point;
        return (int8_t)(v < qmin ? qmin : (v > qmax ? qmax : v));
    """
    return requantize_with_mask(acc, multiplier, shift, zero_point, qmin, qmax, channel_axis)[0]


def requantize_with_mask(acc, multiplier, shift, zero_point: int, qmin: int = INT8_MIN, qmax: int = INT8_MAX,
                         channel_axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """:func:`requantize` plus the backward mask ``qmin < v < qmax`` (bool; v before the clamp).

    C99: ``inside = (v > qmin) && (v < qmax);`` (stored as 1 bit per element).
    """
    _check_clamp(zero_point, qmin, qmax)
    a = np.asarray(acc)
    if a.dtype.kind not in "iu":
        raise ValueError(f"accumulator must be an integer array, got dtype {a.dtype}")
    a = np.clip(a.astype(np.int64), INT32_MIN, INT32_MAX)
    size = a.shape[channel_axis] if a.ndim and -a.ndim <= channel_axis < a.ndim else None
    m = _along_axis(_int32_values(multiplier, "multiplier"), a.ndim, channel_axis, size)
    s = _along_axis(_shift_values(shift, MIN_SHIFT, MAX_SHIFT), a.ndim, channel_axis, size)
    v = _mbqm_np(a, m, s) + zero_point
    return _clamp_and_mask_np(v, qmin, qmax)


def requantize_torch(acc: torch.Tensor, multiplier, shift, zero_point: int, qmin: int = INT8_MIN,
                     qmax: int = INT8_MAX, channel_axis: int = 1) -> torch.Tensor:
    """Torch twin of :func:`requantize` (int8 tensor on ``acc``'s device)."""
    return requantize_with_mask_torch(acc, multiplier, shift, zero_point, qmin, qmax, channel_axis)[0]


def requantize_with_mask_torch(acc: torch.Tensor, multiplier, shift, zero_point: int, qmin: int = INT8_MIN,
                               qmax: int = INT8_MAX, channel_axis: int = 1,
                               out_dtype: torch.dtype = torch.int8) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch twin of :func:`requantize_with_mask` (bool mask; values as ``out_dtype``, default int8).

    The simulation asks for float32 (its carrier type for integers): one conversion instead of two.
    """
    _check_clamp(zero_point, qmin, qmax)
    a = _owned_int64(acc).clamp_(INT32_MIN, INT32_MAX)
    size = a.shape[channel_axis] if a.dim() and -a.dim() <= channel_axis < a.dim() else None
    m, s = _torch_multiplier(multiplier, shift, a.device)
    m = _torch_along_axis(m, a.dim(), channel_axis, size)
    s = _torch_along_axis(s, a.dim(), channel_axis, size)
    v = _mbqm_torch_(a, m, s).add_(zero_point)
    return _clamp_and_mask_torch(v, qmin, qmax, out_dtype)


def _check_clamp(zero_point: int, qmin: int, qmax: int) -> None:
    if not INT8_MIN <= qmin <= qmax <= INT8_MAX:
        raise ValueError(f"clamp range [{qmin}, {qmax}] must lie inside [-128, 127]")
    if not INT8_MIN <= zero_point <= INT8_MAX:
        raise ValueError(f"zero point {zero_point} outside [-128, 127]")


def _clamp_and_mask_np(v: np.ndarray, qmin: int, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    return np.clip(v, qmin, qmax).astype(np.int8), (v > qmin) & (v < qmax)


def _clamp_and_mask_torch(v: torch.Tensor, qmin: int, qmax: int,
                          out_dtype: torch.dtype = torch.int8) -> tuple[torch.Tensor, torch.Tensor]:
    inside = (v > qmin).logical_and_(v < qmax)
    return v.clamp_(qmin, qmax).to(out_dtype), inside
