/* mct_pointwise.c: the 1x1 convs of the forward (mct_kernels.h: mct_pointwise, mct_pointwise_channel) and
 * the fused expand + depthwise op (mct_pointwise_depthwise). Why a file of its own: the DSP build's widened
 * 1x1 conv (mct_dsp_pointwise.h) took mct_kernels.c past the 500 lines a file may have; the rest of
 * the forward stays there. */
#include "mct_kernels.h"

#include <string.h>

/* The sum of row o's weights over the input channels, times the input zero point:
 * sum_i (x_i - z) w_i = sum_i x_i w_i - z sum_i w_i exactly in int32 (|terms| < 2^31), so the inner
 * loops multiply raw int8 inputs (one multiply-accumulate per MAC). */
static int32_t zero_sum(const mct_conv *p, const mct_weight_row *w) {
#if MCT_DSP
    const int32_t split = mct_imin(w->split, p->in_c);
    return p->x_zero * (mct_dsp_sum_i8(w->lo, split) + mct_dsp_sum_i8(w->hi + split, p->in_c - split));
#else
    int32_t total = 0;
    for (int32_t i = 0; i < p->in_c; ++i) total += mct_row_at(w, i);
    return p->x_zero * total;
#endif
}

/* Where output channel o0 + k of count goes: row k of y (channel stride y_cs), or ``last`` for the last channel
 * where that is not NULL (mct_pointwise_depthwise: its last expanded channel goes to the scratch). */
static int8_t *out_row(int8_t *y, int32_t y_cs, int8_t *last, int32_t k, int32_t count) {
    return last != NULL && k == count - 1 ? last : y + k * y_cs;
}

/* Input channels [i0, i1) of two output channels (weights u, v) at 4 positions into 8 accumulators. */
#define MCT_PW_TWO(u_, v_, i0, i1)                                              \
    for (int32_t i = (i0); i < (i1); ++i, xi += x_cs) {                         \
        const int32_t u = (u_)[i], v = (v_)[i];                                 \
        const int32_t x0 = xi[0], x1 = xi[1], x2 = xi[2], x3 = xi[3];           \
        a0 += x0 * u;                                                           \
        a1 += x1 * u;                                                           \
        a2 += x2 * u;                                                           \
        a3 += x3 * u;                                                           \
        b0 += x0 * v;                                                           \
        b1 += x1 * v;                                                           \
        b2 += x2 * v;                                                           \
        b3 += x3 * v;                                                           \
    }

/* Two output channels (weight rows r0, r1 with the same SRAM/Flash split) of a 1x1 conv, 4 positions at
 * a time: each input value loaded once feeds 2 accumulators, each weight 4. */
static void pointwise_two(const mct_conv *p, int32_t o, const mct_weight_row *r0, const mct_weight_row *r1,
                          const int8_t *x, int32_t x_cs, int32_t n, int8_t *y0, int8_t *y1, uint8_t *mask,
                          int32_t bit0, int32_t bit1) {
    const int32_t in_c = p->in_c, split = mct_imin(r0->split, in_c);
    const int32_t z0 = zero_sum(p, r0), z1 = zero_sum(p, r1);
    const mct_rq q0 = mct_rq_of(p, o), q1 = mct_rq_of(p, o + 1);
    int32_t q = 0;
    for (; q + 4 <= n; q += 4) {
#if MCT_DSP
        int32_t s[8] = {0, 0, 0, 0, 0, 0, 0, 0}; /* a0 a1 b0 b1, then a2 a3 b2 b3 */
        if (split > 0) { /* a trained slice in SRAM (frozen weights: all in Flash, split 0) */
            mct_dsp_pw_two(x + q, x_cs, r0->lo, (int32_t)(r1->lo - r0->lo), split, s);
            mct_dsp_pw_two(x + q + 2, x_cs, r0->lo, (int32_t)(r1->lo - r0->lo), split, s + 4);
        }
        if (split < in_c) {
            mct_dsp_pw_two(x + q + split * x_cs, x_cs, r0->hi + split, (int32_t)(r1->hi - r0->hi), in_c - split, s);
            mct_dsp_pw_two(x + q + 2 + split * x_cs, x_cs, r0->hi + split, (int32_t)(r1->hi - r0->hi), in_c - split,
                           s + 4);
        }
        const int32_t a0 = s[0], a1 = s[1], a2 = s[4], a3 = s[5], b0 = s[2], b1 = s[3], b2 = s[6], b3 = s[7];
#else
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
        const int8_t *xi = x + q;
        MCT_PW_TWO(r0->lo, r1->lo, 0, split)
        MCT_PW_TWO(r0->hi, r1->hi, split, in_c)
#endif
        mct_rq_out(&q0, a0 - z0, y0 + q, mask, bit0 + q);
        mct_rq_out(&q0, a1 - z0, y0 + q + 1, mask, bit0 + q + 1);
        mct_rq_out(&q0, a2 - z0, y0 + q + 2, mask, bit0 + q + 2);
        mct_rq_out(&q0, a3 - z0, y0 + q + 3, mask, bit0 + q + 3);
        mct_rq_out(&q1, b0 - z1, y1 + q, mask, bit1 + q);
        mct_rq_out(&q1, b1 - z1, y1 + q + 1, mask, bit1 + q + 1);
        mct_rq_out(&q1, b2 - z1, y1 + q + 2, mask, bit1 + q + 2);
        mct_rq_out(&q1, b3 - z1, y1 + q + 3, mask, bit1 + q + 3);
    }
    for (; q < n; ++q) {
        int32_t a = 0, b = 0;
        for (int32_t i = 0; i < in_c; ++i) {
            const int32_t xv = x[i * x_cs + q];
            a += xv * mct_row_at(r0, i);
            b += xv * mct_row_at(r1, i);
        }
        mct_rq_out(&q0, a - z0, y0 + q, mask, bit0 + q);
        mct_rq_out(&q1, b - z1, y1 + q, mask, bit1 + q);
    }
}
#undef MCT_PW_TWO

#define MCT_PW_ONE(w_, i0, i1)                                                  \
    for (int32_t i = (i0); i < (i1); ++i, xi += x_cs) {                         \
        const int32_t u = (w_)[i];                                              \
        a0 += xi[0] * u;                                                        \
        a1 += xi[1] * u;                                                        \
        a2 += xi[2] * u;                                                        \
        a3 += xi[3] * u;                                                        \
        a4 += xi[4] * u;                                                        \
        a5 += xi[5] * u;                                                        \
        a6 += xi[6] * u;                                                        \
        a7 += xi[7] * u;                                                        \
    }

/* One output channel, 8 positions at a time. */
static void pointwise_one(const mct_conv *p, int32_t o, const mct_weight_row *r, const int8_t *x, int32_t x_cs,
                          int32_t n, int8_t *y, uint8_t *mask, int32_t bit0) {
    const int32_t in_c = p->in_c, split = mct_imin(r->split, in_c), z = zero_sum(p, r);
    const mct_rq rq = mct_rq_of(p, o);
    int32_t q = 0;
#if MCT_DSP
    for (; q + 4 <= n; q += 4) { /* the 8-wide loop below took 2.5 instructions a MAC here, this 1.9 */
        int32_t s[4] = {-z, -z, -z, -z};
        if (split > 0) mct_dsp_pw_one(x + q, x_cs, r->lo, split, s);
        if (split < in_c) mct_dsp_pw_one(x + q + split * x_cs, x_cs, r->hi + split, in_c - split, s);
        if (mask == NULL || !rq.fast) {
            for (int32_t j = 0; j < 4; ++j) mct_rq_out(&rq, s[j], y + q + j, mask, bit0 + q + j);
            continue;
        }
        uint32_t inside = 0; /* the 4 mask bits at once (the block backward's recomputations want them) */
#pragma GCC unroll 4
        for (int32_t j = 0; j < 4; ++j) {
            const int32_t v = mct_dsp_requantize_pos(s[j], rq.bias2, rq.multiplier, rq.nudge, rq.right);
            y[q + j] = (int8_t)__ssat(v, 8);
            inside |= (uint32_t)((uint32_t)(v + 127) < 254u) << j; /* -128 < v < 127: mct_rq_out's bit */
        }
        mct_dsp_or_bits(mask, bit0 + q, inside, 4);
    }
#endif
    for (; q + 8 <= n; q += 8) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        const int8_t *xi = x + q;
        MCT_PW_ONE(r->lo, 0, split)
        MCT_PW_ONE(r->hi, split, in_c)
        const int32_t sums[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
        for (int32_t j = 0; j < 8; ++j) mct_rq_out(&rq, sums[j] - z, y + q + j, mask, bit0 + q + j);
    }
    for (; q < n; ++q) {
        int32_t a = 0;
        for (int32_t i = 0; i < in_c; ++i) a += x[i * x_cs + q] * mct_row_at(r, i);
        mct_rq_out(&rq, a - z, y + q, mask, bit0 + q);
    }
}
#undef MCT_PW_ONE

#if MCT_DSP
#include "mct_dsp_pointwise.h" /* the widened 1x1 convs: pointwise_planned, pointwise_wide, pointwise_sliced */
#endif

/* mct_pointwise, the last channel's row at ``last`` where that is not NULL (out_row). Inlined in its two
 * callers: no stack frame between theirs and pointwise_wide's. */
static inline __attribute__((always_inline)) void pointwise_into(const mct_conv *p, int32_t o0, int32_t o1,
                                                                 const int8_t *x, int32_t x_cs, int32_t n, int8_t *y,
                                                                 int32_t y_cs, int8_t *last, uint8_t *mask,
                                                                 int32_t bit0, int32_t bit_cs) {
#if MCT_SIMD || MCT_MVE /* never with a ``last`` (mct_pointwise_depthwise) */
#if MCT_SIMD
    const int32_t done = mct_simd_pointwise(p, o0, o1, x, x_cs, n, y, y_cs, mask, bit0, bit_cs);
#else
    const int32_t done = mct_mve_pointwise(p, o0, o1, x, x_cs, n, y, y_cs, mask, bit0, bit_cs);
#endif
    x += done; /* the positions left over (fewer than 16, or 8 on Helium) by the loops below */
    y += done;
    bit0 += done;
    n -= done;
    if (n == 0) return;
#endif
#if MCT_DSP
    int32_t wide = 0;
    if (mask == NULL) wide = pointwise_planned(p, o0, o1, &x, 1, x_cs, n, y, 0, y_cs, last);
    if (wide == 0) wide = pointwise_wide(p, o0, o1, x, x_cs, n, y, y_cs, last, mask, bit0, bit_cs);
    if (wide == 0) wide = pointwise_sliced(p, o0, o1, x, x_cs, n, y, y_cs, last, mask, bit0, bit_cs);
    x += wide; /* the last position of an odd n (or all: not taken) by the loops below */
    y += wide;
    if (last != NULL) last += wide;
    bit0 += wide;
    n -= wide;
    if (n == 0) return;
#endif
    int32_t o = o0;
    while (o < o1) {
        const int32_t bit = bit0 + (o - o0) * bit_cs;
        int8_t *ya = out_row(y, y_cs, last, o - o0, o1 - o0);
        const mct_weight_row r0 = mct_row_of(&p->w, o);
        if (o + 1 < o1) {
            const mct_weight_row r1 = mct_row_of(&p->w, o + 1);
            if (r1.split == r0.split) {
                int8_t *yb = out_row(y, y_cs, last, o + 1 - o0, o1 - o0);
                pointwise_two(p, o, &r0, &r1, x, x_cs, n, ya, yb, mask, bit, bit + bit_cs);
                o += 2;
                continue;
            }
        }
        pointwise_one(p, o, &r0, x, x_cs, n, ya, mask, bit);
        o += 1;
    }
}

void mct_pointwise(const mct_conv *p, int32_t o0, int32_t o1, const int8_t *x, int32_t x_cs, int32_t n, int8_t *y,
                   int32_t y_cs, uint8_t *mask, int32_t bit0, int32_t bit_cs) {
    pointwise_into(p, o0, o1, x, x_cs, n, y, y_cs, NULL, mask, bit0, bit_cs);
}

void mct_pointwise_rows(const mct_conv *p, int32_t o0, int32_t o1, const int8_t *const *x_rows, int32_t rows,
                        int32_t x_cs, int32_t n, int8_t *y, int32_t y_row, int32_t y_cs) {
#if MCT_DSP && !MCT_SIMD && !MCT_MVE
    if (!(n & 1) && pointwise_planned(p, o0, o1, x_rows, rows, x_cs, n, y, y_row, y_cs, NULL) == n) return;
#endif
    for (int32_t a = 0; a < rows; ++a)
        if (x_rows[a] != NULL) mct_pointwise(p, o0, o1, x_rows[a], x_cs, n, y + a * y_row, y_cs, NULL, 0, 0);
}

void mct_pointwise_channel(const mct_conv *p, int32_t o, const int8_t *x, int8_t *y_o, uint8_t *mask,
                           int32_t bit0) {
    const int32_t n = p->in_h * p->in_w;
    mct_pointwise(p, o, o + 1, x, n, n, y_o, 0, mask, bit0, 0);
}

/* Expanded channels into memory no one reads yet, then the depthwise channels from them: the expanded
 * tensor is never whole beyond the op's own bytes. A pass takes channels c .. c + g - 1: the last one's
 * plane (H*W bytes) goes into the scratch, the other g - 1 into the output past channel c (y + (c + 1) *
 * out_n on), as many as fit there. Depthwise channel c + j then reads plane j and writes output channel c + j,
 * whose bytes end at (c + j + 1) * out_n <= (c + 1) * out_n + j * H * W (out_n <= H * W): no plane it or a
 * later channel still reads. So the expand conv makes g channels in one call (the 1x1 conv's paths for many
 * output channels instead of one at a time: the input is read once per pass, not once per channel) with no
 * byte beyond the op's scratch (H*W, lifetimes._expanded_channel) and output. */
void mct_pointwise_depthwise(const mct_conv *expand, const mct_conv *dw, const int8_t *x, int8_t *y,
                             uint8_t *mask, int8_t *scratch) {
    const int32_t in_n = dw->in_h * dw->in_w, out_n = dw->out_h * dw->out_w, out_c = dw->out_c;
    mct_clear_bits(mask, out_c * out_n);
    for (int32_t c = 0; c < out_c;) {
        int32_t g = 1;
        if (out_n <= in_n) /* planes in the output: (out_c - c - 1) * out_n bytes past channel c */
            g = mct_imin(out_c - c, 1 + (int32_t)((int64_t)(out_c - c - 1) * out_n / in_n));
        int8_t *planes = y + (size_t)(c + 1) * (size_t)out_n;
#if MCT_DSP && !MCT_MVE /* one call for the pass: the widened input is read by its last channel too (the
                         * Helium path writes rows at y_cs only) */
        pointwise_into(expand, c, c + g, x, in_n, in_n, planes, in_n, scratch, NULL, 0, 0);
#else
        if (g > 1) mct_pointwise(expand, c, c + g - 1, x, in_n, in_n, planes, in_n, NULL, 0, 0);
        mct_pointwise_channel(expand, c + g - 1, x, scratch, NULL, 0);
#endif
        for (int32_t j = 0; j < g; ++j)
            mct_depthwise_channel(dw, c + j, j < g - 1 ? planes + (size_t)j * (size_t)in_n : scratch,
                                  y + (size_t)(c + j) * (size_t)out_n, mask, (c + j) * out_n);
        c += g;
    }
}
