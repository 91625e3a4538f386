"""The integer backward (``--backward int8``, issue 16): one arithmetic for every executor.

Why: the float32 backward needs an FPU (a Cortex-M3 has none) and its executors agree only to a
tolerance. Here every gradient is an integer tensor with a power-of-two scale, every contraction an
integer sum, every rounding defined on exact values, so the PyTorch simulation, the NumPy reference
and the C agree bit for bit by construction, and a core without FPU runs the same integer MACs as its
forward. It follows fully quantized training on Cortex-M (Deutel et al., IEEE TCAD 2024) and NITI
(Wang et al., 2022): int8 errors with a dynamic per-tensor power-of-two scale, int32 accumulation.

The definition (gradients are taken w.r.t. the integer-domain values, as DESIGN.md section 3):

* A **gradient tensor** is int8 ``g`` and an exponent ``E``: its value is ``g * 2**E``. ``E`` is per
  tensor on the device (batch 1) and per sample in the simulation, so a batch of one is the device.
* **normalize(v)** turns exact values ``v`` (an int32/int64 sum at a known exponent) into a gradient
  tensor: ``E`` is the smallest integer with ``max|v| <= 127 * 2**E`` (0 when ``v`` is all zero) and
  ``g = floor(v / 2**E + 1/2)`` (round half up; ``|g| <= 127``). Defined on values, not on how an
  executor holds them: a sum that already fits gets ``E`` below its own exponent and ``g`` is the
  same integers shifted left. Every op of the backward ends with it, so every gradient tensor is in
  this canonical form.
* **A real factor** ``f`` (a requantization multiplier ``M[c] = s_x * s_w[c] / s_y``, an add's
  ``s_in / s_y``, a pool's ``s_x / (s_y * h * w)``) enters as ``m * 2**sh`` with ``m`` a 15-bit
  integer (``grad_multiplier``), so ``g * m`` fits int32 (``127 * 2**15 < 2**22``). The real is the
  float32 value the float backward multiplies by (rounded once from float64), widened: every executor
  starts from the same float32 constant.
  ``scale_grad``: ``normalize(g * mask * m[c] * 2**(E + sh[c]))``.
* **Contractions** (a conv's or the classifier's input gradient) sum ``w_q * g`` in int32 at ``E``
  (``|w_q| <= 127``: exact up to 2**17 terms) and normalize. **Parameter gradients** stay int32 at
  ``E`` (``sum (x_q - z_x) * g``, ``sum g``) and go straight to the update, unrounded.
* **Fan-out sums** (a tensor read twice) add exactly in int64 at the smaller exponent; an operand more
  than ``ALIGN_LIMIT`` binary orders below the other enters as its signs at ``2**(E_big - ALIGN_LIMIT)``
  (which changes no result: ``add_grads``).
* **The loss gradient**: ``softmax(z) - onehot`` in float64 as today (K values; soft-float without an
  FPU), times the classifier's float32 logit scale ``s_x * s_w[k]`` (a float32 product is exact in
  float64), normalized. From there on everything is integer.
* **The update** (QAS in fixed point): per output channel ``c = fl32(lr * qas[k])`` (one float32
  multiply per channel; ``qas`` as in ``train.int8_optim.qas_factors``) is exactly ``m_c * 2**x_c``
  with ``m_c`` an integer below 2**24. With the parameter gradient ``G * 2**E`` the step is
  ``P * 2**-s``, ``P = m_c * G`` (int64), ``s = -(x_c + E)``. Weights:
  ``w <- clamp(w + sround(-P, s, r), -127, 127)`` with ``sround(p, s, r) = floor(p * 2**-s + u)``,
  ``u = (r >> 8) * 2**-24`` (the random word ``r`` of ``quant.rng``'s stream, as the float32 rule);
  biases: ``b <- sat32(b + floor(-P * 2**-s + 1/2))``. Both computed exactly in integers
  (``shift_round``); ``s`` below 0 saturates the step at ``2**STEP_LIMIT_BITS``; ``s`` above 62 first
  floors ``P`` to ``s = 62``.

Rounding, decided: gradients round half up, updates stochastically. A gradient tensor is rescaled to
its own peak at every op, so what rounding to 127 levels loses is noise far below the peak, and a
deterministic rounding costs no random words in the backward; an update is where a small step must
still move an int8 weight on average, so it keeps the float rule's stochastic rounding (the float32
backward's own choice). The accuracy of the whole is measured against the float32 backward in
docs/results/int8_backward.md.

NumPy functions here take one tensor (the device's batch of one); the ``_torch`` twins take a batch
and work per sample along dim 0.
"""

from __future__ import annotations

import numpy as np
import torch

BACKWARDS = ("float32", "int8")  # the backward's arithmetic: float32 gradients, or this module's integers
GRAD_MAX = 127  # |g| of a gradient tensor
MULT_BITS = 15  # a real factor's integer mantissa is below 2**MULT_BITS (inclusive)
ALIGN_LIMIT = 40  # fan-out sums: an operand this many orders below the other is floored first
STEP_LIMIT_BITS = 33  # an update step saturates at 2**33 (beyond any int8 weight or int32 bias)
FRACTION_BITS = 24  # the stochastic rounding's uniform fraction: (r >> 8) * 2**-24
ZERO_EXPONENT = 0  # the exponent of an all-zero gradient tensor


# ----------------------------------------------------------------------------------------------
# Exponents and normalization


def grad_exponent(max_abs) -> np.ndarray:
    """Smallest integer ``E`` with ``max_abs <= 127 * 2**E`` (``ZERO_EXPONENT`` where ``max_abs`` is 0).

    ``max_abs``: exact non-negative float64 values (dyadic). ``frexp`` gives a first guess; the exact
    comparison against ``127 * 2**E`` (exact in float64) fixes it by one either way.
    """
    m = np.asarray(max_abs, dtype=np.float64)
    _, e = np.frexp(m / GRAD_MAX)
    e = e.astype(np.int64)
    e = np.where(m <= GRAD_MAX * np.ldexp(1.0, e - 1), e - 1, e)  # frexp's exponent is one above
    e = np.where(m > GRAD_MAX * np.ldexp(1.0, e), e + 1, e)
    return np.where(m == 0, ZERO_EXPONENT, e)


def round_half_up_shift(p, s) -> np.ndarray:
    """``floor(p * 2**-s + 1/2)`` for int64 ``p`` and ``s`` >= 0 (exact; ``p`` below 2**62 in magnitude)."""
    p = np.asarray(p, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    return np.right_shift(p + half, s)


def normalize_int(acc, exponent: int) -> tuple[np.ndarray, int]:
    """``normalize`` of the exact values ``acc * 2**exponent`` (``acc`` integers below 2**62)."""
    acc = np.asarray(acc, dtype=np.int64)
    peak = int(np.abs(acc).max()) if acc.size else 0
    if peak == 0:
        return np.zeros(acc.shape, np.int8), ZERO_EXPONENT
    shift = _exact_shift(peak)
    if shift <= 0:
        return (acc << -shift).astype(np.int8), exponent + shift
    return round_half_up_shift(acc, shift).astype(np.int8), exponent + shift


def _exact_shift(peak: int) -> int:
    """The smallest ``s`` with ``peak <= 127 * 2**s`` (``peak`` > 0), exactly: with ``2**(b-1) <= peak <
    2**b``, ``127 * 2**(b-8) < peak <= 127 * 2**(b-6)``, so it is ``b - 7`` or ``b - 6``."""
    s = peak.bit_length() - 7
    return s if _fits(peak, s) else s + 1


def _fits(peak: int, s: int) -> bool:
    return peak <= GRAD_MAX << s if s >= 0 else peak << -s <= GRAD_MAX


def normalize(values) -> tuple[np.ndarray, int]:
    """``(g, E)`` of exact dyadic float64 ``values`` (see the module's definition)."""
    v = np.asarray(values, dtype=np.float64)
    if not v.size or not np.any(v):
        return np.zeros(v.shape, np.int8), ZERO_EXPONENT
    e = int(grad_exponent(np.abs(v).max()))
    return np.floor(np.ldexp(v, -e) + 0.5).astype(np.int8), e  # |v| * 2**-e <= 127: +0.5 is exact


def value(g, exponent) -> np.ndarray:
    """The float64 values ``g * 2**exponent`` of a gradient tensor (exact)."""
    return np.ldexp(np.asarray(g, dtype=np.float64), int(exponent))


# ----------------------------------------------------------------------------------------------
# Real factors


def grad_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """``real >= 0`` as ``(m, sh)`` int64 with ``real ~= m * 2**sh``, ``2**14 <= m <= 2**15`` (0 for 0).

    Rounded half up from float64 (relative error <= 2**-15). One function for every executor: the
    engine's passes store its result as op attributes, the simulation calls it on its layer scales.
    """
    r = np.asarray(real, dtype=np.float64)
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"a gradient factor must be finite and >= 0, got {real!r}")
    q, e = np.frexp(r)  # r = q * 2**e, q in [0.5, 1)
    m = np.floor(q * 2.0**MULT_BITS + 0.5).astype(np.int64)
    sh = e.astype(np.int64) - MULT_BITS
    return np.where(r == 0, 0, m), np.where(r == 0, 0, sh)


def scale_grad(g, exponent: int, m, sh, mask=None, channel_axis: int = 0) -> tuple[np.ndarray, int]:
    """``normalize(g * mask * m[c] * 2**(exponent + sh[c]))``: the gradient through a requantization.

    ``m``/``sh``: one factor (scalars) or one per channel along ``channel_axis``. Exact for any spread
    of the factors: each channel's products ``g * m`` (integers below 2**22) are shifted by their own
    amount to the common exponent, the one the largest value needs; what lies more than 2**-8 below
    it rounds to zero either way.
    """
    g = np.asarray(g, dtype=np.int64)
    if mask is not None:
        g = np.where(mask, g, 0)
    m, sh = np.asarray(m, np.int64), np.asarray(sh, np.int64)
    if m.ndim == 0:
        return normalize_int(g * m, exponent + int(sh))
    g = np.moveaxis(g, channel_axis, 0)
    acc = g * m.reshape((-1,) + (1,) * (g.ndim - 1))
    peaks = np.abs(acc).reshape(len(m), -1).max(1) if acc.size else np.zeros(len(m), np.int64)
    live = [c for c in range(len(m)) if peaks[c]]
    if not live:
        return np.zeros(np.moveaxis(g, 0, channel_axis).shape, np.int8), ZERO_EXPONENT
    top = max(exponent + int(sh[c]) + _exact_shift(int(peaks[c])) for c in live)
    out = np.zeros(acc.shape, np.int8)
    for c in live:
        shift = top - exponent - int(sh[c])
        out[c] = acc[c] << -shift if shift < 0 else round_half_up_shift(acc[c], min(shift, 62))
    return np.moveaxis(out, 0, channel_axis), top


def add_grads(g_a, e_a: int, g_b, e_b: int) -> tuple[np.ndarray, int]:
    """``normalize(a + b)`` of two canonical gradient tensors of one shape (a fan-out sum).

    An operand more than ALIGN_LIMIT orders below the other is replaced by its signs at 2**(E_big -
    ALIGN_LIMIT) (a sticky bit), which changes no result: the sum's exponent is E_big or E_big + 1 (a
    canonical tensor's peak is >= 64), so each element of the bigger one lies on a grid of half units
    and the small one can only decide, by its sign, a tie or the peak's side of 127. An all-zero
    operand is left out.
    """
    a, b = np.asarray(g_a, np.int64), np.asarray(g_b, np.int64)
    if not b.any() or not a.any():
        return normalize_int(a if a.any() else b, e_a if a.any() else e_b)
    if e_a < e_b:
        a, b, e_a, e_b = b, a, e_b, e_a
    if e_a - e_b > ALIGN_LIMIT:  # the sticky bit
        b, e_b = np.sign(b), e_a - ALIGN_LIMIT
    return normalize_int((a << (e_a - e_b)) + b, e_b)


# ----------------------------------------------------------------------------------------------
# The update


def update_factor(lr: float, qas) -> tuple[np.ndarray, np.ndarray]:
    """``c = fl32(lr * qas[k])`` as exact ``(m_c, x_c)`` int64, ``c = m_c * 2**x_c``, ``|m_c| < 2**24``."""
    c = np.float32(lr) * np.asarray(qas, dtype=np.float32)  # one IEEE float32 multiply per channel
    q, e = np.frexp(c.astype(np.float64))
    return (q * 2.0**FRACTION_BITS).astype(np.int64), np.where(c == 0, 0, e.astype(np.int64) - FRACTION_BITS)


def shift_round(p, s, r=None) -> np.ndarray:
    """``floor(p * 2**-s + u)``: ``u = (r >> 8) * 2**-24`` (stochastic) or 1/2 (``r`` None), exactly.

    ``p`` int64 below 2**62 in magnitude. ``s`` < 0 saturates at ``+-2**STEP_LIMIT_BITS``; ``s`` > 62
    first floors ``p`` by ``s - 62``.
    """
    p = np.asarray(p, dtype=np.int64)
    s = np.broadcast_to(np.asarray(s, dtype=np.int64), p.shape)
    p = np.where(s > 62, np.right_shift(p, np.clip(s - 62, 0, 63)), p)
    s = np.minimum(s, 62)
    out = _left_saturated(p, np.maximum(-s, 0))
    pos = np.maximum(s, 0)
    q = np.right_shift(p, pos)
    rem = (p - np.left_shift(q, pos)).astype(np.uint64)  # in [0, 2**s)
    if r is None:
        carry = (pos > 0) & (rem >= np.left_shift(np.uint64(1), np.maximum(pos - 1, 0).astype(np.uint64)))
    else:
        need = np.uint64(2**FRACTION_BITS) - (np.asarray(r, dtype=np.uint64) >> np.uint64(8))  # 2**24 - u24
        carry = np.where(pos <= FRACTION_BITS,
                         np.left_shift(rem, np.maximum(FRACTION_BITS - pos, 0).astype(np.uint64)) >= need,
                         rem >= np.left_shift(need, np.maximum(pos - FRACTION_BITS, 0).astype(np.uint64)))
    return np.where(s < 0, out, q + carry.astype(np.int64))


def _left_saturated(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``p * 2**n`` saturated at ``+-2**STEP_LIMIT_BITS``."""
    limit = np.int64(1) << STEP_LIMIT_BITS
    n = np.minimum(n, STEP_LIMIT_BITS + 1)
    big = np.abs(p) >= np.right_shift(limit, n)
    return np.where(big, np.sign(p) * limit, np.left_shift(p, n))


def update_weight(w, grad, exponent: int, m_c, x_c, r) -> np.ndarray:
    """int8 ``w`` after one step: ``clamp(w + sround(-m_c * grad, -(x_c + exponent), r), -127, 127)``.

    ``grad``: the int32 parameter gradient (same shape as ``w``, or broadcast); ``m_c``, ``x_c``
    broadcastable (per output channel); ``r`` the random words, one per element in C order.
    """
    step = shift_round(-np.asarray(m_c, np.int64) * np.asarray(grad, np.int64), -(np.asarray(x_c) + exponent), r)
    return np.clip(np.asarray(w, np.int64) + step, -127, 127).astype(np.int8)


def update_bias(b, grad, exponent: int, m_c, x_c) -> np.ndarray:
    """int32 ``b`` after one step: ``sat32(b + floor(-m_c * grad * 2**(x_c + exponent) + 1/2))``."""
    step = shift_round(-np.asarray(m_c, np.int64) * np.asarray(grad, np.int64), -(np.asarray(x_c) + exponent))
    return np.clip(np.asarray(b, np.int64) + step, -(2**31), 2**31 - 1).astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Torch twins: a batch, per sample along dim 0, on float64 tensors holding exact values


def normalize_torch(v: torch.Tensor) -> torch.Tensor:
    """Per sample ``normalize`` of exact float64 values; returns the values ``g * 2**E`` (float64)."""
    v = v.to(torch.float64)
    peak = v.abs().flatten(1).amax(1).numpy()
    e = torch.from_numpy(grad_exponent(peak)).view((-1,) + (1,) * (v.dim() - 1))
    return torch.ldexp(torch.floor(torch.ldexp(v, -e) + 0.5), e)


def exponent_torch(v: torch.Tensor) -> np.ndarray:
    """Per sample canonical exponent of normalized values (``grad_exponent`` of each sample's peak)."""
    return grad_exponent(v.to(torch.float64).abs().flatten(1).amax(1).numpy())


def scale_grad_torch(v: torch.Tensor, m, sh, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample ``scale_grad`` on normalized values ``v`` [N, C, ...] (per channel along dim 1, or scalar).

    Exact in float64: ``g * m`` has at most 23 bits; the channel factors' spread is what the NumPy
    form lifts to int64, here kept by float64's exponent.
    """
    m, sh = np.asarray(m, np.int64), np.asarray(sh, np.int64)
    factor = torch.as_tensor(np.ldexp(m.astype(np.float64), sh))  # exact: m has 16 bits (0-d for one factor)
    if m.ndim:
        factor = factor.view((1, -1) + (1,) * (v.dim() - 2))
    x = v.to(torch.float64) if mask is None else v.to(torch.float64) * mask
    return normalize_torch(x * factor)


def add_grads_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per sample ``add_grads`` of two canonical gradient values (float64 [N, ...]).

    After the sticky-bit rule the two operands span at most ALIGN_LIMIT + 8 bits: their float64 sum
    is exact.
    """
    a, b = a.to(torch.float64), b.to(torch.float64)
    e_a, e_b = (torch.from_numpy(exponent_torch(t)).view((-1,) + (1,) * (a.dim() - 1)) for t in (a, b))
    zero_a, zero_b = (t.flatten(1).abs().amax(1).eq(0).view(e_a.shape) for t in (a, b))
    b = torch.where((e_a - e_b > ALIGN_LIMIT) & ~zero_a & ~zero_b, torch.ldexp(b.sign(), e_a - ALIGN_LIMIT), b)
    a = torch.where((e_b - e_a > ALIGN_LIMIT) & ~zero_a & ~zero_b, torch.ldexp(a.sign(), e_b - ALIGN_LIMIT), a)
    return normalize_torch(a + b)
