/* mct_mve.h: 1x1 convs and depthwise rows on the Helium vector extension (MVE) of a Cortex-M55, in the "dsp" set.
 *
 * Why: a 1x1 conv is most of a forward's multiply-accumulates (MCUNet: 18.6 of 22.5 M per inference).
 * The DSP kernel (mct_dsp.h, mct_dsp_pw_two) does 16 of them in about 26 instructions, unpacking every
 * input again for each pair of output channels; with Helium one VMLA.S32 (vector by scalar) does four
 * int32 multiply-accumulates and one VLDRB.S32 loads and widens four int8 inputs, so with activations in
 * NCHW (a channel's positions contiguous) two output channels at 8 positions take 2 loads + 4 VMLA + 2
 * weight loads per input channel: 16 multiply-accumulates in about 8 instructions, no unpacking.
 * The requantization of four outputs is one vector version of mct_dsp_requantize (VRMULH is SMMULR
 * lane by lane; the rounding shift and the zero point as there), under the same conditions (mct_rq's
 * ``fast``); a channel outside them takes the scalar mct_rq_out per lane.
 *
 * The integers are those of the portable C, by construction: int32 sums of int8 x int8 products (exact
 * in any order; |sum| < 2^31 as the portable loops assume) minus the zero point's term, and the same
 * requantization integers. Chosen by the compiler's own __ARM_FEATURE_MVE (-mcpu=cortex-m55) in a folder
 * generated with the dsp kernels (MCT_DSP 1); with the portable kernels, or on a core without Helium,
 * MCT_MVE is 0 and this header defines nothing. tests/codegen/test_codegen_cores.py runs the M55 firmware
 * against the host's portable build, bit for bit.
 *
 * The depthwise edges stay scalar: whole rows in predicated blocks (a gather per tap with the lanes inside the
 * input, the zero point subtracted per lane) measured 74.3 M instructions per MCUNet inference against 72.6 M
 * with vector interiors and scalar edges: on small maps the edge blocks' predicate work outweighs the loads.
 *
 * No Helium in the float backward, by decision: Helium's floating-point instructions flush denormals to
 * zero (measured under QEMU 7.2's mps3-an547: 1e-20f * 3e-20f is 0 in a VMUL.F32 lane, 0x00034447 from the
 * scalar FPU's VMUL.F32), so a vector backward would no longer equal the host's IEEE float32 bit for bit.
 *
 * Counts under QEMU are instructions; a Cortex-M55 executes a 128-bit Helium instruction in two beats
 * (docs/results/cores.md says so beside the numbers).
 */
#ifndef MCT_MVE_H
#define MCT_MVE_H

#if defined(__ARM_FEATURE_MVE) && MCT_DSP
#define MCT_MVE 1
#include <arm_mve.h>

/* Four inside bits (lanes 0..3 of a 32-bit-lane predicate: its bits 0, 4, 8, 12) OR-ed into the mask at
 * ``bit``, as mct_put_bit does (the kernels clear their masks first). */
static inline void mct_mve_put4(uint8_t *mask, int32_t bit, mve_pred16_t inside) {
    uint32_t b = (uint32_t)inside & 0x1111u;
    b = b | (b >> 3);
    b = (b | (b >> 6)) & 0xFu;
    const uint32_t at = b << (bit & 7);
    mask[bit >> 3] |= (uint8_t)at;
    if (at > 0xFFu) mask[(bit >> 3) + 1] |= (uint8_t)(at >> 8);
}

/* Four outputs of channel q from their int32 sums (mct_rq_out lane by lane): int8 values at dst (NULL: mask
 * bits only), mask bits from ``bit``. */
static inline __attribute__((always_inline)) void mct_mve_out4(const mct_rq *q, int32x4_t sum, int8_t *dst,
                                                               uint8_t *mask, int32_t bit) {
    if (!q->fast) {
        int32_t s[4];
        vst1q_s32(s, sum);
        for (int32_t j = 0; j < 4; ++j) mct_rq_out(q, s[j], dst != NULL ? dst + j : NULL, mask, bit + j);
        return;
    }
    /* mct_dsp_requantize: SMMULR(2 * sum + 2 * bias, m), then (x + nudge + (x >> 31)) >> right */
    const int32x4_t x = vrmulhq_s32(vaddq_n_s32(vaddq_s32(sum, sum), q->bias2), vdupq_n_s32(q->multiplier));
    const int32x4_t t = vaddq_s32(vaddq_n_s32(x, q->nudge), vshrq_n_s32(x, 31));
    const int32x4_t v = vshlq_s32(t, vdupq_n_s32(-q->right));
    if (dst != NULL) vstrbq_s32(dst, vmaxq_s32(vminq_s32(v, vdupq_n_s32(127)), vdupq_n_s32(-128)));
    if (mask != NULL) /* inside: -128 < v < 127, i.e. (unsigned)(v + 127) < 254 */
        mct_mve_put4(mask, bit, vcmphiq_u32(vdupq_n_u32(254u), vreinterpretq_u32_s32(vaddq_n_s32(v, 127))));
}

/* sum of w[i0 .. i1): sixteen weights per VADDVA, the last load predicated to the weights left. */
static inline int32_t mct_mve_sum_i8(const int8_t *w, int32_t i0, int32_t i1) {
    int32_t total = 0;
    for (int32_t i = i0; i < i1; i += 16) {
        const mve_pred16_t left = vctp8q((uint32_t)(i1 - i));
        total = vaddvaq_p_s8(total, vldrbq_z_s8(w + i, left), left);
    }
    return total;
}

/* The zero point's term of a weight row: x_zero * sum of its first in_c columns. */
static inline int32_t mct_mve_zero_sum(const mct_conv *p, const mct_weight_row *r) {
    const int32_t split = mct_imin(r->split, p->in_c);
    return p->x_zero * (mct_mve_sum_i8(r->lo, 0, split) + mct_mve_sum_i8(r->hi, split, p->in_c));
}

/* Two output channels (weight runs u, v) at 8 positions: acc a (u) and b (v), two vectors each. */
#define MCT_MVE_PW2(u_, v_, i0, i1)                                                  \
    for (int32_t i = (i0); i < (i1); ++i, xi += x_cs) {                              \
        const int32_t u = (u_)[i], v = (v_)[i];                                      \
        const int32x4_t x0 = vldrbq_s32(xi), x1 = vldrbq_s32(xi + 4);                \
        a0 = vmlaq_n_s32(a0, x0, u);                                                 \
        a1 = vmlaq_n_s32(a1, x1, u);                                                 \
        b0 = vmlaq_n_s32(b0, x0, v);                                                 \
        b1 = vmlaq_n_s32(b1, x1, v);                                                 \
    }

/* Output channels o, o + 1 (rows r0, r1 with the same SRAM/Flash split) at positions [0, n8). */
static void mct_mve_pw_two(const mct_conv *p, int32_t o, const mct_weight_row *r0, const mct_weight_row *r1,
                           const int8_t *x, int32_t x_cs, int32_t n8, int8_t *y, int32_t y_cs, uint8_t *mask,
                           int32_t bit, int32_t bit_cs) {
    const int32_t in_c = p->in_c, split = mct_imin(r0->split, in_c);
    const mct_rq q0 = mct_rq_of(p, o), q1 = mct_rq_of(p, o + 1);
    const int32_t z0 = mct_mve_zero_sum(p, r0), z1 = mct_mve_zero_sum(p, r1);
    for (int32_t at = 0; at < n8; at += 8) {
        int32x4_t a0 = vdupq_n_s32(-z0), a1 = a0, b0 = vdupq_n_s32(-z1), b1 = b0;
        const int8_t *xi = x + at;
        MCT_MVE_PW2(r0->lo, r1->lo, 0, split)
        MCT_MVE_PW2(r0->hi, r1->hi, split, in_c)
        mct_mve_out4(&q0, a0, y + at, mask, bit + at);
        mct_mve_out4(&q0, a1, y + at + 4, mask, bit + at + 4);
        mct_mve_out4(&q1, b0, y + y_cs + at, mask, bit + bit_cs + at);
        mct_mve_out4(&q1, b1, y + y_cs + at + 4, mask, bit + bit_cs + at + 4);
    }
}
#undef MCT_MVE_PW2

/* One output channel (weight run u) at 16 positions (V = 4 vectors) or 8 (V = 2). */
#define MCT_MVE_PW1(u_, i0, i1, V)                                                   \
    for (int32_t i = (i0); i < (i1); ++i, xi += x_cs) {                              \
        const int32_t u = (u_)[i];                                                   \
        a0 = vmlaq_n_s32(a0, vldrbq_s32(xi), u);                                     \
        a1 = vmlaq_n_s32(a1, vldrbq_s32(xi + 4), u);                                 \
        if ((V) == 4) {                                                              \
            a2 = vmlaq_n_s32(a2, vldrbq_s32(xi + 8), u);                             \
            a3 = vmlaq_n_s32(a3, vldrbq_s32(xi + 12), u);                            \
        }                                                                            \
    }

/* Output channel o (row r) at positions [0, n8), 16 at a time and a last 8: the expand conv of
 * pointwise_depthwise (one channel at a time over a plane) and the odd channel of a pair loop. */
static void mct_mve_pw_one(const mct_conv *p, int32_t o, const mct_weight_row *r, const int8_t *x, int32_t x_cs,
                           int32_t n8, int8_t *y, uint8_t *mask, int32_t bit) {
    const int32_t in_c = p->in_c, split = mct_imin(r->split, in_c);
    const mct_rq q = mct_rq_of(p, o);
    const int32_t z = mct_mve_zero_sum(p, r);
    int32_t at = 0;
    for (; at + 16 <= n8; at += 16) {
        int32x4_t a0 = vdupq_n_s32(-z), a1 = a0, a2 = a0, a3 = a0;
        const int8_t *xi = x + at;
        MCT_MVE_PW1(r->lo, 0, split, 4)
        MCT_MVE_PW1(r->hi, split, in_c, 4)
        mct_mve_out4(&q, a0, y + at, mask, bit + at);
        mct_mve_out4(&q, a1, y + at + 4, mask, bit + at + 4);
        mct_mve_out4(&q, a2, y + at + 8, mask, bit + at + 8);
        mct_mve_out4(&q, a3, y + at + 12, mask, bit + at + 12);
    }
    if (at < n8) {
        int32x4_t a0 = vdupq_n_s32(-z), a1 = a0, a2 = a0, a3 = a0;
        const int8_t *xi = x + at;
        MCT_MVE_PW1(r->lo, 0, split, 2)
        MCT_MVE_PW1(r->hi, split, in_c, 2)
        (void)a2;
        (void)a3;
        mct_mve_out4(&q, a0, y + at, mask, bit + at);
        mct_mve_out4(&q, a1, y + at + 4, mask, bit + at + 4);
    }
}
#undef MCT_MVE_PW1

/* Output channels [o0, o1) of a 1x1 conv at positions [0, n8), n8 = n rounded down to 8 (mct_pointwise's
 * arguments): pairs of channels where their rows split alike, else one at a time; returns n8, the positions
 * done (the rest: the DSP and portable loops). */
static inline int32_t mct_mve_pointwise(const mct_conv *p, int32_t o0, int32_t o1, const int8_t *x, int32_t x_cs,
                                        int32_t n, int8_t *y, int32_t y_cs, uint8_t *mask, int32_t bit0,
                                        int32_t bit_cs) {
    const int32_t n8 = n & ~7;
    if (n8 == 0) return 0;
    for (int32_t o = o0; o < o1;) {
        const mct_weight_row r0 = mct_row_of(&p->w, o);
        const mct_weight_row r1 = o + 1 < o1 ? mct_row_of(&p->w, o + 1) : r0;
        int8_t *yo = y + (o - o0) * y_cs;
        const int32_t bit = bit0 + (o - o0) * bit_cs;
        if (o + 1 < o1 && r1.split == r0.split) {
            mct_mve_pw_two(p, o, &r0, &r1, x, x_cs, n8, yo, y_cs, mask, bit, bit_cs);
            o += 2;
        } else {
            mct_mve_pw_one(p, o, &r0, x, x_cs, n8, yo, mask, bit);
            o += 1;
        }
    }
    return n8;
}

/* One tap: acc + (the inputs of 4 output columns at r: r[j] at stride 1, r[2j] at stride 2) * w. */
static inline __attribute__((always_inline)) int32x4_t mct_mve_tap4(int32x4_t acc, const int8_t *r, int32_t s,
                                                                    uint32x4_t offsets, int32_t w) {
    return vmlaq_n_s32(acc, s == 1 ? vldrbq_s32(r) : vldrbq_gather_offset_s32(r, offsets), w);
}

/* Interior columns [lo, hi) of a 3x3 depthwise row with its three tap rows inside the input: the nine
 * weights in locals (the int8 stores could alias them as far as the compiler knows). */
static inline __attribute__((always_inline)) int32_t mct_mve_dw3(const mct_conv *p, const mct_rq *q,
                                                                 const int8_t *const *rows, const int8_t *w,
                                                                 int32_t zsum, int32_t lo, int32_t hi, int8_t *y,
                                                                 uint8_t *mask, int32_t bit0, int32_t s,
                                                                 uint32x4_t offsets) {
    const int32_t w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
    const int8_t *r0 = rows[0] - p->pad_left, *r1 = rows[1] - p->pad_left, *r2 = rows[2] - p->pad_left;
    int32_t ox = lo;
    for (; ox + 4 <= hi; ox += 4) {
        const int32_t ix = ox * s;
        int32x4_t acc = vdupq_n_s32(-zsum);
        acc = mct_mve_tap4(acc, r0 + ix, s, offsets, w0);
        acc = mct_mve_tap4(acc, r0 + ix + 1, s, offsets, w1);
        acc = mct_mve_tap4(acc, r0 + ix + 2, s, offsets, w2);
        acc = mct_mve_tap4(acc, r1 + ix, s, offsets, w3);
        acc = mct_mve_tap4(acc, r1 + ix + 1, s, offsets, w4);
        acc = mct_mve_tap4(acc, r1 + ix + 2, s, offsets, w5);
        acc = mct_mve_tap4(acc, r2 + ix, s, offsets, w6);
        acc = mct_mve_tap4(acc, r2 + ix + 1, s, offsets, w7);
        acc = mct_mve_tap4(acc, r2 + ix + 2, s, offsets, w8);
        mct_mve_out4(q, acc, y != NULL ? y + ox : NULL, mask, bit0 + ox);
    }
    return ox;
}

/* Interior columns [lo, hi) of a depthwise row (mct_depthwise_row's: every tap of them inside the input
 * in x; zsum the zero point's term of the rows inside), stride 1 or 2: 4 columns per block, one VLDRB (a
 * gathering one at stride 2) and one VMLA per tap. Returns the first column left. */
static inline int32_t mct_mve_depthwise_inside(const mct_conv *p, const mct_rq *q, const int8_t *const *rows,
                                               const int8_t *w, int32_t zsum, int32_t lo, int32_t hi, int8_t *y,
                                               uint8_t *mask, int32_t bit0) {
    const int32_t kh = p->k, kw = p->kw, s = p->stride_w;
    if ((s != 1 && s != 2) || hi - lo < 4) return lo;
    const uint32x4_t offsets = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)s); /* {0, s, 2s, 3s} */
    if (kh == 3 && kw == 3 && rows[0] != NULL && rows[1] != NULL && rows[2] != NULL)
        return s == 1 ? mct_mve_dw3(p, q, rows, w, zsum, lo, hi, y, mask, bit0, 1, offsets)
                      : mct_mve_dw3(p, q, rows, w, zsum, lo, hi, y, mask, bit0, 2, offsets);
    int32_t ox = lo;
    for (; ox + 4 <= hi; ox += 4) {
        int32x4_t acc = vdupq_n_s32(-zsum);
        const int32_t ix = ox * s - p->pad_left;
        for (int32_t a = 0; a < kh; ++a)
            if (rows[a] != NULL)
                for (int32_t b = 0; b < kw; ++b) acc = mct_mve_tap4(acc, rows[a] + ix + b, s, offsets, w[a * kw + b]);
        mct_mve_out4(q, acc, y != NULL ? y + ox : NULL, mask, bit0 + ox);
    }
    return ox;
}

#else
#define MCT_MVE 0
#endif

#endif /* MCT_MVE_H */
