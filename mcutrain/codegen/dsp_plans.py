"""The DSP kernels' per-channel operands of a frozen conv, made once here into Flash (``mct_conv.dsp_plan``).

Why: the row pipelines call their 1x1 and depthwise kernels once a row (and once a channel window of a
folded stage), and each call made its channels' operands again on the device: a depthwise channel's doubled
weight pairs and constants (``dw_channel_plan``, ~200 instructions a channel a row) and a 1x1 conv's unpacked
weights and requantization constants (``pw_plan``). For a conv whose weights and biases never change (every
conv of a row pipeline is frozen) they are constants: the generator writes them, the kernels read them.

Layouts, int32 words (the C side reads them as documented in ``c/mct_kernels.h`` at ``dsp_plan``):

- **1x1 conv**: the channel window W its calls take (a folded expand conv's window group, else out_c); per
  output channel the C ``mct_rq_fast``: ``2 * bias``, the multiplier, the nudge (``2^(right-1) + y_zero *
  2^right``), ``right = -shift``; then one record per channel pair (u, v) of each window (from a multiple of W;
  a window's odd last channel alone, v's words 0): ``2 * bias`` of u and of v, then per group g of input
  channels 4g..4g+3 the doubled weights as the halfword pairs SMLAD reads against the widened input:
  ``(2 u[4g], 2 u[4g+2])``, ``(2 u[4g+1], 2 u[4g+3])``, the same of v (0 past in_c). The sums start at
  ``2 * bias``, so each is ``2 * (acc + bias)``, the requantization's operand, with no add.
- **depthwise k x k** (3, 5, 7), the C ``dw_plan`` of each channel up to its last tap row (``dw_plan_words``:
  12, 32 or 40 words): kind, k, stride, the 3x3 operands ``(2w0, 2w2), (2w3, 2w5), (2w6, 2w8), (2w1, 2w4),
  (2w5, 2w7)``, the multiplier, the sum's start ``2 * bias - x_zero * 2 * sum w``, the nudge, right; then per
  tap row r of a 5x5 / 7x7 kernel ``(2r0, 2r2), (2r1, 2r3), (2r4, 2r6), 2r5`` (5 taps: ``(2r4, 0), 0``).
- **other groups-1 convs** (a row pipeline's first conv, im2col in ``general_row_dsp``): the weight table
  ``patch_weights`` makes, for all output channels (``patch_plan``); the requantization is the conv's own.

A conv gets no plan (None: the kernels make the operands at run time, as for a trained conv) where a channel
is outside the DSP requantization's fast case (``mct_rq_channel_fast``: a shift in [-22, -1], a positive
multiplier, |bias| <= 2^29) or the conv is not one the kernels take (``mct_rq_conv_fast``, ``dw_layer_fits``).
"""

from __future__ import annotations

import numpy as np

from mcutrain.codegen.literals import array_definition, identifier
from mcutrain.engine.ir import Op
from mcutrain.engine.ops import conv_geometry, is_pointwise_conv

DW_KINDS = {3: 0, 5: 2, 7: 4}  # DW_3S1, DW_5S1, DW_7S1 of mct_depthwise.c; + 1 for stride 2


def dw_plan_words(k: int) -> int:
    """The words of a k x k channel's record: dw_plan's head and 3x3 operands (12), a 5x5 / 7x7 kernel's tap rows
    (4 words each) after them; dw_plan's rows past k are never read (mct_depthwise.c's dw_generated, whose
    _Static_assert checks the struct's layout: 40 words, the rows from word 12)."""
    return 12 + (0 if k == 3 else 4 * k)


def halfwords(lo, hi) -> np.ndarray:
    """int32 words of the int16 pairs (lo, hi), lo in the low half (SMLAD's first product)."""
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    word = (lo & 0xFFFF) | ((hi & 0xFFFF) << 16)
    return np.where(word >= 2**31, word - 2**32, word).astype(np.int64)


def _channels_fast(bias, multiplier, shift) -> bool:
    """``mct_rq_channel_fast`` for every channel."""
    bias, multiplier, shift = (np.asarray(a, np.int64) for a in (bias, multiplier, shift))
    return bool(np.all((shift >= -22) & (shift <= -1) & (multiplier > 0) & (np.abs(bias) <= 2**29)))


def _conv_fast(taps: int, y_zero: int, qmin: int, qmax: int) -> bool:
    """``mct_rq_conv_fast``."""
    return taps <= 16384 and qmin == -128 and qmax == 127 and -128 <= y_zero <= 127


def _nudge(right, y_zero: int) -> np.ndarray:
    right = np.asarray(right, np.int64)
    return (np.int64(1) << (right - 1)) + y_zero * (np.int64(1) << right)


def _int32(words: np.ndarray) -> np.ndarray:
    if words.size and (words.min() < -2**31 or words.max() >= 2**31):
        raise ValueError("a DSP plan word outside int32")
    return words.astype(np.int32)


def pointwise_plan(weight, bias, multiplier, shift, y_zero: int, qmin: int, qmax: int,
                   window: int) -> np.ndarray | None:
    """The 1x1 conv's plan (``weight`` [out_c, in_c, 1, 1] int8; its calls take channel windows of ``window``
    channels from a multiple of it), flat int32, or None (no fast case)."""
    w = np.asarray(weight, np.int64).reshape(weight.shape[0], -1)
    out_c, in_c = w.shape
    if not (_conv_fast(in_c, y_zero, qmin, qmax) and _channels_fast(bias, multiplier, shift)):
        return None
    groups = (in_c + 3) // 4
    padded = np.zeros((out_c, 4 * groups), np.int64)
    padded[:, :in_c] = 2 * w
    g = padded.reshape(out_c, groups, 4)
    words = np.stack([halfwords(g[..., 0], g[..., 2]), halfwords(g[..., 1], g[..., 3])], axis=-1)  # [o, groups, 2]
    bias2, right = 2 * np.asarray(bias, np.int64), -np.asarray(shift, np.int64)
    constants = np.stack([bias2, np.asarray(multiplier, np.int64), _nudge(right, y_zero), right], axis=-1)
    records = []
    for c0 in range(0, out_c, window):
        for u in range(c0, min(c0 + window, out_c), 2):
            v = u + 1 < min(c0 + window, out_c)
            record = np.zeros((groups, 4), np.int64)
            record[:, :2] = words[u]
            if v:
                record[:, 2:] = words[u + 1]
            records.append(np.concatenate([[bias2[u], bias2[u + 1] if v else 0], record.reshape(-1)]))
    return _int32(np.concatenate([[window], constants.reshape(-1), *records]))


def _dw3_operands(w: np.ndarray) -> np.ndarray:
    """[c, 5]: a0, a1, a2, b01, b2 of each channel's doubled 3x3 weights (w [c, 9])."""
    d = 2 * w
    return np.stack([halfwords(d[:, 0], d[:, 2]), halfwords(d[:, 3], d[:, 5]), halfwords(d[:, 6], d[:, 8]),
                     halfwords(d[:, 1], d[:, 4]), halfwords(d[:, 5], d[:, 7])], axis=-1)


def _dw57_rows(w: np.ndarray, k: int) -> np.ndarray:
    """[c, 4k]: per tap row (w02, w13, w46, w5) of each channel's doubled 5x5 / 7x7 weights (w [c, k * k])."""
    r = 2 * w.reshape(w.shape[0], k, k)
    w46 = halfwords(r[..., 4], r[..., 6]) if k == 7 else halfwords(r[..., 4], 0)
    w5 = r[..., 5] if k == 7 else np.zeros_like(r[..., 0])
    return np.stack([halfwords(r[..., 0], r[..., 2]), halfwords(r[..., 1], r[..., 3]), w46, w5], axis=-1).reshape(
        w.shape[0], 4 * k)


def depthwise_plan(weight, bias, multiplier, shift, x_zero: int, y_zero: int, qmin: int, qmax: int,
                   stride: int) -> np.ndarray | None:
    """Each channel's ``dw_plan`` (``weight`` [c, 1, k, k] int8, square stride ``stride``), flat, or None."""
    c, _, k, kw = weight.shape
    if k != kw or k not in DW_KINDS or stride not in (1, 2):
        return None
    if not (_conv_fast(k * k, y_zero, qmin, qmax) and _channels_fast(bias, multiplier, shift)):
        return None
    w = np.asarray(weight, np.int64).reshape(c, k * k)
    plan = np.zeros((c, dw_plan_words(k)), np.int64)
    plan[:, 0], plan[:, 1], plan[:, 2] = DW_KINDS[k] + (stride == 2), k, stride
    if k == 3:
        plan[:, 3:8] = _dw3_operands(w)
    else:
        plan[:, 12:] = _dw57_rows(w, k)
    right = -np.asarray(shift, np.int64)
    plan[:, 8] = multiplier
    plan[:, 9] = 2 * np.asarray(bias, np.int64) - x_zero * 2 * w.sum(axis=1)
    plan[:, 10] = _nudge(right, y_zero)
    plan[:, 11] = right
    return _int32(plan.reshape(-1))


def patch_order(tap_rows: int, k: int) -> list[int]:
    """``patch_order`` of mct_fused.c: the tap indices (i * k + a) * k + b of a column's patch in SMLAD's pairs,
    -1 for a zero past the taps; 2 * words of them (words even)."""
    if k == 3:
        taps = [t for r in range(tap_rows) for t in (3 * r, 3 * r + 2)] + [3 * r + 1 for r in range(tap_rows)]
    else:
        taps = list(range(tap_rows * k))
    words = (((len(taps) + 1) >> 1) + 1) & ~1
    return taps + [-1] * (2 * words - len(taps))


def patch_plan(weight) -> np.ndarray | None:
    """A groups-1 k x k conv's weights in ``general_row_dsp``'s table layout (``patch_weights`` of all its
    output channels): per channel pair (an odd last channel paired with itself) and patch word t, the two
    channels' halfword pairs of taps patch_order[2t], [2t + 1]; None past the patch's limit (80 taps)."""
    out_c, in_c, k, kw = weight.shape
    if k != kw or in_c * k * k > 80:
        return None
    taps = np.array(patch_order(in_c * k, k))
    flat = np.concatenate([np.asarray(weight, np.int64).reshape(out_c, -1), np.zeros((out_c, 1), np.int64)], axis=1)
    picked = flat[:, np.where(taps >= 0, taps, flat.shape[1] - 1)].reshape(out_c, -1, 2)  # [o, word, 2]
    words = halfwords(picked[..., 0], picked[..., 1])
    if out_c % 2:
        words = np.concatenate([words, words[-1:]])
    return _int32(words.reshape(-1, 2, words.shape[1]).transpose(0, 2, 1).reshape(-1))


def conv_plan(op: Op, constants, trained, window: int | None = None) -> tuple[str, np.ndarray] | None:
    """(layout: "1x1", "depthwise" or "patch"; the plan) of a conv2d op (``constants``: name -> value;
    ``trained(name)``: whether a parameter changes on the device; ``window``: a 1x1 conv's channel window, default
    all its channels), or None: a trained weight or bias (its operands change), a kernel the plans do not cover."""
    _, w, b, m, s = op.inputs
    if trained(w) or trained(b):
        return None
    weight, rq = constants[w], (constants[b], constants[m], constants[s])
    qmin, qmax, y_zero, x_zero = (int(op.attr(key, 0)) for key in ("qmin", "qmax", "y_zero", "x_zero"))
    (sh, sw), _ = conv_geometry(op, tuple(weight.shape[2:]))
    if is_pointwise_conv(op, weight.shape):
        plan = "1x1", pointwise_plan(weight, *rq, y_zero, qmin, qmax, window or weight.shape[0])
    elif op.attr("groups") > 1:
        fits = op.attr("groups") == weight.shape[0] and sh == sw
        plan = "depthwise", depthwise_plan(weight, *rq, x_zero, y_zero, qmin, qmax, int(sh)) if fits else None
    else:
        plan = "patch", patch_plan(weight)
    return plan if plan[1] is not None else None


def dsp_plan(symbols, op: Op, window: int | None = None) -> str:
    """The value of ``op``'s ``mct_conv.dsp_plan`` field: its plan (``conv_plan``) registered with ``symbols`` (one
    for the conv however many stages run it; defined only where ``MCT_DSP_PLANS`` holds), or "NULL"."""
    made = conv_plan(op, symbols.constants, lambda p: p in symbols.params and symbols.params[p].trained, window)
    if made is None:
        return "NULL"
    kind, plan = made

    def define(name: str) -> str:
        array = array_definition(name, plan, "int32", const=True, note=f"{op.name}: DSP {kind} plan")
        return f"#if MCT_DSP_PLANS\n{array}\n#endif"

    return f"MCT_DSP_PLAN({symbols.table(identifier(op.name, 'plan_'), define)})"
