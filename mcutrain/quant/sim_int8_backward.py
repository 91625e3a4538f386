"""The simulation's integer backward (``--backward int8``): the autograd side of ``quant.int8_grad``.

Why a module of its own: the float32 backward of ``sim_ops`` / ``sim_graph`` stays as it is; a layer
whose ``backward_mode`` is "int8" (set for a whole net by ``sim_model.set_backward``) routes its
``backward`` here instead. Every function below follows the spec of ``int8_grad`` per sample (dim 0)
on float64 tensors holding the exact values ``g * 2**E``:

- incoming gradients are normalized on entry (``normalize_torch``; idempotent on canonical values);
- a requantization (conv, add, pool, mean) scales by its real factor through ``grad_multiplier`` and
  ``scale_grad_torch``; a contraction (conv transpose, ``g_acc @ w``) sums exactly and normalizes;
- parameter gradients are exact per sample (integers at the sample's ``E``) and are brought to one
  integer tensor per parameter by ``batch_param_grad`` (stored as ``param.int8_grad``, read by the
  optimizer's int8 update);
- a tensor read twice goes through ``ForkFn``, whose backward is ``add_grads_torch`` (autograd's own
  float sum is not the spec);
- the loss gradient is the engine's ``softmax_ce`` kernel itself, sample by sample (``Int8LossFn``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.grad import conv2d_input

from mcutrain.quant.fixedpoint import dequantize_multiplier
from mcutrain.quant.int8_grad import (BACKWARDS, add_grads_torch, exponent_torch, grad_multiplier,
                                      normalize_torch, scale_grad_torch)

BATCH_GRAD_BITS = 37  # |G| <= 2**37 for a batch's parameter gradient: m_c * G stays below 2**61
GUARD_BITS = 14  # a batch sum keeps 14 bits below its exponent before the one rounding


@dataclass(frozen=True)
class Int8Grad:
    """A parameter gradient for the int8 update: the value ``G * 2**E`` summed over ``batch`` samples."""

    G: np.ndarray  # int64, the parameter's shape
    E: int
    batch: int


def conv_factor(multiplier, shift) -> tuple[np.ndarray, np.ndarray]:
    """(m, sh) of a conv's real multipliers ``M[c]``: the value its fixed point encodes rounded once to
    float32, the float backward's factor (``Int8Conv.real_multiplier``; the engine's constant)."""
    real = dequantize_multiplier(np.asarray(multiplier), np.asarray(shift))
    return grad_multiplier(np.asarray(real, np.float32).astype(np.float64))


def scalar_factor(real: float) -> tuple[np.ndarray, np.ndarray]:
    """(m, sh) of one real factor (an add's ratio, a pool's ``s_x / (s_y * h * w)``): the float64 value
    rounded once to float32 (the float backward's factor; the engine's constant), shape (1,)."""
    return grad_multiplier(np.array([real], dtype=np.float32).astype(np.float64))  # the float path's float32


def as_input_dtype(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Gradient values in the activations' dtype (float32), checked exact: a canonical tensor has 8
    significant bits, so only an exponent below float32's subnormal range (2**-142) could lose bits."""
    out = v.to(dtype)
    if not torch.equal(out.to(torch.float64), v):
        raise ArithmeticError("an int8 gradient's exponent left float32's range (below 2**-142)")
    return out


def integers_at(values: torch.Tensor, exps: np.ndarray) -> torch.Tensor:
    """``values * 2**-E`` per sample: the integers of normalized (or integer-summed) values."""
    e = torch.from_numpy(exps).view((-1,) + (1,) * (values.dim() - 1))
    return torch.ldexp(values, -e)


# ---------------------------------------------------------------------------------------------- params


def batch_param_grad(per_sample: torch.Tensor, exps: np.ndarray) -> Int8Grad:
    """One integer gradient from per-sample exact integer gradients ``per_sample[i] * 2**exps[i]``.

    The sum's exponent is ``E = T + ceil(log2 B) - BATCH_GRAD_BITS`` with ``2**T`` above every
    addend, so ``|G| <= 2**37`` and ``m_c * G`` (``m_c < 2**24``) fits the update's int64. Each sample
    enters floored to ``2**(E - GUARD_BITS)`` (exact unless it lies more than 51 orders below the
    batch's largest), the sum is exact in float64 (< 2**52) and rounded half up once. For a batch of
    one nothing is floored or rounded (``E`` is below the sample's own: ``|G_1| < 2**31``), so ``G *
    2**E`` is the device's int32 gradient at its exponent, exactly.
    """
    batch = per_sample.shape[0]
    flat = per_sample.to(torch.float64).reshape(batch, -1)
    peaks = flat.abs().amax(1).numpy() if flat.shape[1] else np.zeros(batch)
    live = peaks > 0
    shape = tuple(per_sample.shape[1:])
    if not live.any():
        return Int8Grad(np.zeros(shape, np.int64), 0, batch)
    tops = np.frexp(peaks[live])[1] + np.asarray(exps)[live]  # peak < 2**frexp_exponent
    exponent = int(tops.max()) + math.ceil(math.log2(batch)) - BATCH_GRAD_BITS
    low = exponent - GUARD_BITS
    shifts = torch.from_numpy(np.asarray(exps, np.int64) - low).view(-1, 1)
    total = torch.floor(torch.ldexp(flat, shifts)).sum(0)  # each term < 2**(51 - log2 B): exact
    G = torch.floor(torch.ldexp(total, torch.tensor(-GUARD_BITS)) + 0.5)
    return Int8Grad(G.to(torch.int64).numpy().reshape(shape), exponent, batch)


def stash(param: torch.Tensor, grad: Int8Grad) -> torch.Tensor:
    """Keep the exact gradient on the parameter for the int8 update; autograd gets its float value
    (only for ``param.grad`` to exist: the int8 update reads ``param.int8_grad``)."""
    param.int8_grad = grad
    return torch.from_numpy(np.ldexp(grad.G.astype(np.float64), grad.E)).to(param.dtype)


# ---------------------------------------------------------------------------------------------- ops


def conv_backward(ctx, g_y: torch.Tensor, input_grad, kept_weight_grad):
    """Int8ConvFn's int8 backward: ``g_acc = scale_grad(g_y, M, mask)``, then the contractions."""
    layer = ctx.layer
    xz, weight, mask = ctx.saved_tensors
    g_acc = scale_grad_torch(normalize_torch(g_y), *layer.grad_factor, mask.to(torch.float64))
    exps = exponent_torch(g_acc)
    g_x = g_w = g_b = None
    if ctx.needs_input_grad[0]:
        g_x = normalize_torch(input_grad(ctx.x_shape, weight.to(torch.float64), g_acc, layer.stride,
                                         layer.groups, layer.padding))
        g_x = as_input_dtype(g_x, g_y.dtype)
    ints = integers_at(g_acc, exps)  # per sample integers: the correlations below are exact
    if ctx.needs_input_grad[1]:
        xz64 = xz.to(torch.float64)
        per_sample = torch.stack([kept_weight_grad(xz64[i:i + 1], weight.to(torch.float64), ints[i:i + 1],
                                                   layer.stride, layer.groups, layer.kept, layer.padding)
                                  for i in range(len(ints))])
        g_w = stash(layer.weight, batch_param_grad(per_sample, exps))
    if ctx.needs_input_grad[2]:
        g_b = stash(layer.bias, batch_param_grad(ints.sum(dim=(2, 3)), exps))
    return g_x, g_w, g_b, None


def add_backward(ctx, g_y: torch.Tensor):
    """Int8AddFn's: each input's gradient is ``scale_grad(g_y, s_in / s_y, mask)``."""
    (mask,) = ctx.saved_tensors
    g, m = normalize_torch(g_y), mask.to(torch.float64)
    layer = ctx.layer
    return (as_input_dtype(scale_grad_torch(g, *layer.grad_factor_a, m), g_y.dtype),
            as_input_dtype(scale_grad_torch(g, *layer.grad_factor_b, m), g_y.dtype), None)


def mean_backward(g_y: torch.Tensor, mask: torch.Tensor, real: float, hw: tuple[int, int]) -> torch.Tensor:
    """A global average's (zoo pool, graph mean): ``scale_grad(g_y, s_x / (s_y*h*w), mask)`` over H x W."""
    g = scale_grad_torch(normalize_torch(g_y), *scalar_factor(real), mask.to(torch.float64))
    g = g.reshape(g.shape[0], g.shape[1], 1, 1)
    return g.expand(-1, -1, *hw).contiguous()


def linear_backward(ctx, g_logits: torch.Tensor):
    """Int8LinearFn's: ``g_acc = normalize(float64(g_logits) * float64(logit_scale))``; ``g_x =
    normalize(g_acc @ w)``; ``g_w = g_acc^T (x - z)``, ``g_b = g_acc`` per sample."""
    xz, weight = ctx.saved_tensors
    layer = ctx.layer
    g_acc = normalize_torch(g_logits.to(torch.float64) * layer.logit_scale.to(torch.float64))
    exps = exponent_torch(g_acc)
    ints = integers_at(g_acc, exps)
    g_x = g_w = g_b = None
    if ctx.needs_input_grad[0]:
        g_x = as_input_dtype(normalize_torch(g_acc @ weight.to(torch.float64)), g_logits.dtype)
    if ctx.needs_input_grad[1]:
        g_w = stash(layer.weight, batch_param_grad(ints[:, :, None] * xz.to(torch.float64)[:, None, :], exps))
    if ctx.needs_input_grad[2]:
        g_b = stash(layer.bias, batch_param_grad(ints, exps))
    return g_x, g_w, g_b, None


# ---------------------------------------------------------------------------------------------- graph pools


def pool2d_backward(pool, x: torch.Tensor, g_y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A TFLite pool's (``sim_graph.Int8Pool2d``): the routed sums, normalized once.

    Average: each output's gradient times its window's real factor ``ratio / count`` (clipped windows
    count only inside positions; one ``grad_multiplier`` per distinct count), routed to the window's
    inputs with exact float64 sums. Maximum: times ``ratio`` (1 for TFLite; through grad_multiplier
    otherwise) and routed to each window's maximum as the float backward does. Where windows do not
    overlap, this is ``scale_grad`` then a copy.
    """
    (kh, kw), strides, (t, b, left, r) = pool.p.kernel, pool.p.strides, pool.p.pad
    g = normalize_torch(g_y) * mask.to(torch.float64)
    n, c, h, w = x.shape
    if pool.kind == "avgpool":
        ones = torch.nn.functional.pad(torch.ones(1, 1, h, w, dtype=torch.float64), (left, r, t, b))
        counts = torch.nn.functional.conv2d(ones, torch.ones(1, 1, kh, kw, dtype=torch.float64), stride=strides)
        g = g * _factor_map(counts, pool.ratio)
        routed = conv2d_input((n, c, h + t + b, w + left + r), torch.ones(c, 1, kh, kw, dtype=torch.float64),
                              g, strides, 0, 1, c)
        return normalize_torch(routed[:, :, t:t + h, left:left + w])
    if pool.ratio != 1:
        m, sh = scalar_factor(pool.ratio)
        g = g * float(np.ldexp(float(m[0]), int(sh[0])))
    with torch.enable_grad():
        xs = x.detach().to(torch.float64).requires_grad_(True)
        padded = torch.nn.functional.pad(xs, (left, r, t, b), value=-float("inf"))
        (routed,) = torch.autograd.grad(torch.nn.functional.max_pool2d(padded, (kh, kw), strides), xs, g)
    return normalize_torch(routed)


def _factor_map(counts: torch.Tensor, ratio: float) -> torch.Tensor:
    """``m * 2**sh`` of ``ratio / count`` at each output position (exact float64)."""
    out = torch.empty_like(counts)
    for count in torch.unique(counts).tolist():
        m, sh = scalar_factor(ratio / count)
        out[counts == count] = float(np.ldexp(float(m[0]), int(sh[0])))
    return out


# ---------------------------------------------------------------------------------------------- fan-out, loss


class ForkFn(torch.autograd.Function):
    """``n`` reads of one tensor; backward: the fan-out sum ``add_grads_torch``, left to right."""

    @staticmethod
    def forward(ctx, x, n: int):
        return tuple(x.clone() for _ in range(n))

    @staticmethod
    def backward(ctx, *grads):
        total = normalize_torch(grads[0])
        for g in grads[1:]:
            total = add_grads_torch(total, normalize_torch(g))
        return as_input_dtype(total, grads[0].dtype), None


def fork(x: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """``n`` copies of ``x`` whose gradients meet in ``add_grads`` (fan-out of the int8 backward)."""
    return ForkFn.apply(x, n)


class Int8LossFn(torch.autograd.Function):
    """Softmax cross-entropy as the engine computes it: its ``softmax_ce`` kernel, one sample at a time.

    Forward: the mean of the per-sample float32 losses (reported, not differentiated further).
    Backward: each sample's float32 ``softmax - onehot``, undivided: the batch mean of int8 mode is the
    sum of the per-sample integer gradients with the rate ``lr / B`` (``Int8Optimizer``), so a batch of
    one is the device's step. The incoming gradient must be 1 (``loss.backward()``).
    """

    @staticmethod
    def forward(ctx, logits, labels):
        from mcutrain.engine.executor.kernels import softmax_ce  # here: the engine imports the optimizer

        z = logits.detach().to(torch.float32).numpy()
        losses, grads = zip(*(softmax_ce(None, [z[i:i + 1], np.array([int(labels[i])])], 0) for i in range(len(z))))
        ctx.save_for_backward(torch.from_numpy(np.concatenate(grads)))
        return torch.tensor(float(np.mean(np.concatenate(losses).astype(np.float64))), dtype=logits.dtype)

    @staticmethod
    def backward(ctx, g_loss):
        if float(g_loss) != 1.0:
            raise ValueError("the int8 backward's loss takes no outer factor (call loss.backward())")
        (grads,) = ctx.saved_tensors
        return grads, None


def int8_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return Int8LossFn.apply(logits, labels)


def check_mode(mode: str) -> str:
    if mode not in BACKWARDS:
        raise ValueError(f"backward mode {mode!r}: choose one of {', '.join(BACKWARDS)}")
    return mode
