"""Counter-based hash RNG for stochastic rounding, bit-identical in NumPy, PyTorch and C (uint32 only).

There is no generator state: the random word of element ``index`` of tensor ``tensor_id`` at training
step ``step`` under ``seed`` is a pure function of those four uint32 numbers, so every executor (the
batched simulation, the NumPy reference, the C program on the microcontroller) draws the same bits in
any order, and the C side needs no state beyond the step counter.

Definition (all arithmetic modulo 2**32)::

    hash32(x):  x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16
                (Chris Wellons' "lowbias32"; a bijection of uint32)
    key       = hash32(seed ^ hash32(step ^ hash32(tensor_id)))
    r[index]  = hash32(key + index * 0x9E3779B9)
    u[index]  = (float)(r >> 8) * 2**-24            (float32, exact: 24 bits)
    round(x)  = (int32) floorf(x + u)               (one float32 addition, then floor)

Properties, by construction: ``key`` is a bijection of each of seed, step and tensor_id when the other
two are fixed (a composition of bijections), so changing exactly one of them always changes the key;
within one stream, ``index -> r`` is a bijection (0x9E3779B9 is odd), so the 2**32 indices of a stream
never repeat a word. Different streams are windows of the one sequence ``hash32(c * 0x9E3779B9)`` at
hashed offsets: two streams of n words overlap with probability about 2n / 2**32, which only correlates
rounding noise of two unrelated updates and is harmless here.

C99 (``mct_int8.h``)::

    static inline uint32_t mct_hash32(uint32_t x) {
        x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16; return x; }
    uint32_t key = mct_hash32(seed ^ mct_hash32(step ^ mct_hash32(tensor_id)));
    uint32_t r = mct_hash32(key + index * 0x9E3779B9U);
    int32_t q = mct_stochastic_round(x, r);   /* see stochastic_round_from_bits */

Seeds, steps, tensor ids and indices are uint32: ints outside [0, 2**32) are refused (ValueError).
"""

from __future__ import annotations

import numpy as np
import torch

MASK32 = 0xFFFFFFFF
HASH_MUL_1 = 0x7FEB352D
HASH_MUL_2 = 0x846CA68B
INDEX_STRIDE = 0x9E3779B9  # 2**32 / golden ratio, odd
U_BITS = 24
U_SCALE = np.float32(2.0**-U_BITS)
INT32_MIN_F = np.float32(-(2.0**31))
INT32_MAX_F = np.float32(2.0**31 - 128)  # the largest float32 below 2**31


def _check_u32(value: int, what: str) -> int:
    v = int(value)
    if v != value or not 0 <= v <= MASK32:
        raise ValueError(f"{what}={value!r} must be an integer in [0, 2**32)")
    return v


# ----------------------------------------------------------------------------------------------
# hash32
# ----------------------------------------------------------------------------------------------


def hash32(x) -> np.ndarray:
    """lowbias32 on a uint32 array (NumPy's uint32 arithmetic wraps modulo 2**32)."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise ValueError(f"hash32 needs integers, got dtype {x.dtype}")
    if x.size and (x.min() < 0 or x.max() > MASK32):
        raise ValueError("hash32 input outside [0, 2**32)")
    x = x.astype(np.uint32)
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(HASH_MUL_1)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(HASH_MUL_2)
    x = x ^ (x >> np.uint32(16))
    return x


def hash32_int(x: int) -> int:
    """lowbias32 on one Python int (used for stream keys; also the spec in its plainest form)."""
    x = _check_u32(x, "x")
    x ^= x >> 16
    x = (x * HASH_MUL_1) & MASK32
    x ^= x >> 15
    x = (x * HASH_MUL_2) & MASK32
    x ^= x >> 16
    return x


def _signed_residue(c: int) -> int:
    """The representative of ``c mod 2**32`` in ``[-2**31, 2**31)``."""
    c &= MASK32
    return c - 2**32 if c >= 2**31 else c


def _mul_u32_(x: torch.Tensor, c: int) -> torch.Tensor:
    """In place: ``x = x * c mod 2**32`` for an int64 tensor holding uint32 values.

    With ``c`` replaced by its residue in ``[-2**31, 2**31)``, ``|x * c| < 2**32 * 2**31 = 2**63``
    fits int64 (no overflow), and ``& 0xFFFFFFFF`` keeps the residue mod 2**32 whatever the sign.
    """
    return x.mul_(_signed_residue(c)).bitwise_and_(MASK32)


def _xorshift_(x: torch.Tensor, k: int, tmp: torch.Tensor) -> torch.Tensor:
    """In place: ``x ^= x >> k`` (``tmp``: scratch of x's shape; in-place ops avoid allocations)."""
    torch.bitwise_right_shift(x, k, out=tmp)
    return x.bitwise_xor_(tmp)


def _hash32_(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 in place on an int64 tensor of uint32 values."""
    tmp = torch.empty_like(x)
    _xorshift_(x, 16, tmp)
    _mul_u32_(x, HASH_MUL_1)
    _xorshift_(x, 15, tmp)
    _mul_u32_(x, HASH_MUL_2)
    _xorshift_(x, 16, tmp)
    return x


def hash32_torch(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on an int64 tensor of values in [0, 2**32) (torch has no wrapping uint32 multiply:
    the arithmetic is done in int64 with masking). Returns a new int64 tensor."""
    return _hash32_(x.to(torch.int64, copy=True).bitwise_and_(MASK32))


# ----------------------------------------------------------------------------------------------
# Streams
# ----------------------------------------------------------------------------------------------


def stream_key(seed: int, step: int, tensor_id: int) -> int:
    """``hash32(seed ^ hash32(step ^ hash32(tensor_id)))``: the key of one (seed, step, tensor) stream."""
    seed = _check_u32(seed, "seed")
    step = _check_u32(step, "step")
    tensor_id = _check_u32(tensor_id, "tensor_id")
    return hash32_int(seed ^ hash32_int(step ^ hash32_int(tensor_id)))


def uniform_u32(seed: int, step: int, tensor_id: int, n: int) -> np.ndarray:
    """The first ``n`` words of a stream: ``r[i] = hash32(key + i * 0x9E3779B9)``, uint32 [n]."""
    if not 0 <= n <= 2**32:
        raise ValueError(f"a stream has at most 2**32 words, asked for {n}")
    key = np.uint32(stream_key(seed, step, tensor_id))
    index = np.arange(n, dtype=np.uint32)
    return hash32(key + index * np.uint32(INDEX_STRIDE))


def uniform_u32_torch(seed: int, step: int, tensor_id: int, n: int,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Torch twin of :func:`uniform_u32`: int64 tensor [n] holding the uint32 words."""
    if not 0 <= n <= 2**32:
        raise ValueError(f"a stream has at most 2**32 words, asked for {n}")
    key = stream_key(seed, step, tensor_id)
    words = torch.arange(n, dtype=torch.int64, device=device)
    _mul_u32_(words, INDEX_STRIDE).add_(key).bitwise_and_(MASK32)
    return _hash32_(words)


# ----------------------------------------------------------------------------------------------
# Stochastic rounding
# ----------------------------------------------------------------------------------------------


def stochastic_round_from_bits(x, r) -> np.ndarray:
    """``floor(x + u)`` with ``u = (r >> 8) * 2**-24``, all in float32; int32 result.

    Exact float32 operations (round-to-nearest-even, no float64 anywhere): ``u`` is exact (24 bits);
    ``s = fl32(x + u)``; ``y = floorf(s)``; then NaN -> 0 and ``y`` clamped to
    ``[-2**31, 2**31 - 128]`` (the float32 range of int32) before the conversion.
    Unbiased: for ``x`` in [-1, 1) a multiple of 2**-24 the probability of rounding up is exactly
    ``x - floor(x)`` (tested by enumerating all 2**24 values of u). Elsewhere the float32 addition
    rounds ``u`` to the ulp of the sum: ``|E[result] - x| <= ulp32(|x| + 1) / 2`` (tested; 2**-24
    for |x| < 1, 1.2e-7 at |x| ~ 2, 3.1e-5 at |x| ~ 1000).

    C99 (``mct_stochastic_round``; FLT_EVAL_METHOD == 0, no -ffast-math)::

        float y = floorf(x + (float)(r >> 8) * 0x1p-24f);
        if (y != y) return 0;
        if (y < -2147483648.0f) return INT32_MIN;
        if (y > 2147483520.0f) return 2147483520;
        return (int32_t)y;
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise ValueError(f"stochastic rounding works on float32 (for C parity), got {x.dtype}")
    r = np.asarray(r)
    if r.dtype.kind not in "iu" or (r.size and (r.min() < 0 or r.max() > MASK32)):
        raise ValueError("random words must be integers in [0, 2**32)")
    u = (r.astype(np.uint32) >> np.uint32(8)).astype(np.float32) * U_SCALE
    y = np.floor(x + u)  # float32 + float32 -> float32 in NumPy: no float64 anywhere
    y = np.nan_to_num(y, nan=np.float32(0), posinf=INT32_MAX_F, neginf=INT32_MIN_F)
    return np.clip(y, INT32_MIN_F, INT32_MAX_F).astype(np.int32)


def stochastic_round_from_bits_torch(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`stochastic_round_from_bits` (int32 tensor)."""
    if x.dtype != torch.float32:
        raise ValueError(f"stochastic rounding works on float32 (for C parity), got {x.dtype}")
    u = (r.to(device=x.device, dtype=torch.int64) >> 8).to(torch.float32).mul_(float(U_SCALE))  # exact
    y = u.add_(x).floor_()  # fl32(u + x) == fl32(x + u); in place to spare allocations
    y = y.nan_to_num_(nan=0.0, posinf=float(INT32_MAX_F), neginf=float(INT32_MIN_F))
    return y.clamp_(float(INT32_MIN_F), float(INT32_MAX_F)).to(torch.int32)


def stochastic_round(x, seed: int, step: int, tensor_id: int) -> np.ndarray:
    """Round a float32 array stochastically: element ``i`` (C order) uses word ``r[i]`` of the stream.

    Returns int32 with ``x``'s shape; ``E[result] = x`` (see :func:`stochastic_round_from_bits`).
    """
    x = np.asarray(x)
    r = uniform_u32(seed, step, tensor_id, x.size).reshape(x.shape)
    return stochastic_round_from_bits(x, r)


def stochastic_round_torch(x: torch.Tensor, seed: int, step: int, tensor_id: int) -> torch.Tensor:
    """Torch twin of :func:`stochastic_round`: element index = position in ``x.flatten()`` (C order)."""
    r = uniform_u32_torch(seed, step, tensor_id, x.numel(), device=x.device).reshape(x.shape)
    return stochastic_round_from_bits_torch(x, r)
