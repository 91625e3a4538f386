/* mct_kernels.c: see mct_kernels.h (what, in which order, with which rounding). */
#include "mct_kernels.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------------
 * Parameters */

const int8_t *mct_weight_at(const mct_weight *w, int32_t row, int32_t col) {
    if (w->sram != NULL && row < w->kept_rows && col < w->kept_cols)
        return w->sram + ((size_t)row * (size_t)w->kept_cols + (size_t)col) * (size_t)w->inner;
    return w->flash + ((size_t)row * (size_t)w->cols + (size_t)col) * (size_t)w->inner;
}

mct_weight_row mct_row_of(const mct_weight *w, int32_t row) {
    mct_weight_row r;
    r.hi = w->flash + (size_t)row * (size_t)w->cols * (size_t)w->inner;
    r.lo = r.hi;
    r.split = 0;
    if (w->sram != NULL && row < w->kept_rows) {
        r.lo = w->sram + (size_t)row * (size_t)w->kept_cols * (size_t)w->inner;
        r.split = w->kept_cols;
    }
    return r;
}

static inline int8_t row_at(const mct_weight_row *r, int32_t col) { return col < r->split ? r->lo[col] : r->hi[col]; }

void mct_copy_slice_i8(int8_t *dst, const int8_t *src, int32_t cols, int32_t inner, int32_t kept_rows,
                       int32_t kept_cols) {
    const size_t run = (size_t)kept_cols * (size_t)inner;
    for (int32_t r = 0; r < kept_rows; ++r)
        memcpy(dst + (size_t)r * run, src + (size_t)r * (size_t)cols * (size_t)inner, run);
}

/* ------------------------------------------------------------------------------------------------
 * Forward */

static void clear_bits(uint8_t *mask, int32_t n) {
    if (mask != NULL) memset(mask, 0, ((size_t)n + 7) / 8);
}


/* The sum of row o's weights over the input channels, times the input zero point:
 * sum_i (x_i - z) w_i = sum_i x_i w_i - z sum_i w_i exactly in int32 (|terms| < 2^31), so the inner
 * loops multiply raw int8 inputs (one multiply-accumulate per MAC). */
static int32_t zero_sum(const mct_conv *p, const mct_weight_row *w) {
#if MCT_DSP
    const int32_t split = mct_imin(w->split, p->in_c);
    return p->x_zero * (mct_dsp_sum_i8(w->lo, split) + mct_dsp_sum_i8(w->hi + split, p->in_c - split));
#else
    int32_t total = 0;
    for (int32_t i = 0; i < p->in_c; ++i) total += row_at(w, i);
    return p->x_zero * total;
#endif
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
            a += xv * row_at(r0, i);
            b += xv * row_at(r1, i);
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
        for (int32_t i = 0; i < in_c; ++i) a += x[i * x_cs + q] * row_at(r, i);
        mct_rq_out(&rq, a - z, y + q, mask, bit0 + q);
    }
}
#undef MCT_PW_ONE

void mct_pointwise(const mct_conv *p, int32_t o0, int32_t o1, const int8_t *x, int32_t x_cs, int32_t n, int8_t *y,
                   int32_t y_cs, uint8_t *mask, int32_t bit0, int32_t bit_cs) {
#if MCT_SIMD
    const int32_t done = mct_simd_pointwise(p, o0, o1, x, x_cs, n, y, y_cs, mask, bit0, bit_cs);
    x += done; /* the positions left over (fewer than 16) by the scalar loops below */
    y += done;
    bit0 += done;
    n -= done;
    if (n == 0) return;
#endif
    int32_t o = o0;
    while (o < o1) {
        const int32_t at = (o - o0) * y_cs, bit = bit0 + (o - o0) * bit_cs;
        const mct_weight_row r0 = mct_row_of(&p->w, o);
        if (o + 1 < o1) {
            const mct_weight_row r1 = mct_row_of(&p->w, o + 1);
            if (r1.split == r0.split) {
                pointwise_two(p, o, &r0, &r1, x, x_cs, n, y + at, y + at + y_cs, mask, bit, bit + bit_cs);
                o += 2;
                continue;
            }
        }
        pointwise_one(p, o, &r0, x, x_cs, n, y + at, mask, bit);
        o += 1;
    }
}

void mct_pointwise_channel(const mct_conv *p, int32_t o, const int8_t *x, int8_t *y_o, uint8_t *mask,
                           int32_t bit0) {
    const int32_t n = p->in_h * p->in_w;
    mct_pointwise(p, o, o + 1, x, n, n, y_o, 0, mask, bit0, 0);
}


/* The window at column ix of the kh tap rows inside the input (rows[a] NULL: a padding row, skipped). */
static int32_t window_inside(const int8_t *const *rows, int32_t ix, const int8_t *w, int32_t kh, int32_t kw) {
    int32_t sum = 0;
    for (int32_t a = 0; a < kh; ++a)
        if (rows[a] != NULL) sum += mct_taps(rows[a] + ix, w + a * kw, kw);
    return sum;
}

/* Output column ox of a depthwise row whose window crosses the input's edge: bounded taps. */
static int32_t depthwise_edge(const mct_conv *p, const int8_t *const *rows, const int8_t *w, int32_t ox) {
    const int32_t kw = p->kw, ix = ox * p->stride_w - p->pad_left;
    const int32_t b0 = mct_imax(0, -ix), b1 = mct_imin(kw, p->in_w - ix);
    int32_t sum = 0;
    for (int32_t a = 0; a < p->k; ++a) {
        if (rows[a] == NULL) continue;
        for (int32_t b = b0; b < b1; ++b) sum += ((int32_t)rows[a][ix + b] - p->x_zero) * w[a * kw + b];
    }
    return sum;
}

/* Interior columns [lo, hi) of a 3x3 depthwise row: the 9 weights held in locals (the compiler cannot
 * keep them in registers itself: the int8 stores to y may alias them as far as it knows). */
static void depthwise3_inside(const mct_conv *p, int32_t c, const int8_t *const *rows, const int8_t *w, int32_t zsum,
                              int32_t lo, int32_t hi, int8_t *y, uint8_t *mask, int32_t bit0) {
    const int32_t w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
    const mct_rq q = mct_rq_of(p, c);
    int32_t ox = lo;
#if MCT_DSP
    if (p->stride_w == 1) { /* two outputs per step */
        const mct_dsp_dw3 k = mct_dsp_dw3_of(w);
        for (; ox + 2 <= hi; ox += 2) {
            const int32_t ix = ox - p->pad_left;
            int32_t s0 = -zsum, s1 = -zsum;
            mct_dsp_dw3_two(rows[0] + ix, rows[1] + ix, rows[2] + ix, &k, &s0, &s1);
            mct_rq_out(&q, s0, y != NULL ? y + ox : NULL, mask, bit0 + ox);
            mct_rq_out(&q, s1, y != NULL ? y + ox + 1 : NULL, mask, bit0 + ox + 1);
        }
    } else if (p->stride_w == 2) { /* four outputs per step */
        const mct_dsp_dw3 k = mct_dsp_dw3_of(w);
        for (; ox + 4 <= hi; ox += 4) {
            const int32_t ix = 2 * ox - p->pad_left;
            int32_t s[4] = {-zsum, -zsum, -zsum, -zsum};
            mct_dsp_s2_row4(rows[0] + ix, k.w02[0], k.w1[0], s);
            mct_dsp_s2_row4(rows[1] + ix, k.w02[1], k.w1[1], s);
            mct_dsp_s2_row4(rows[2] + ix, k.w02[2], k.w1[2], s);
            for (int32_t j = 0; j < 4; ++j) mct_rq_out(&q, s[j], y != NULL ? y + ox + j : NULL, mask, bit0 + ox + j);
        }
    }
#endif
    for (; ox < hi; ++ox) {
        const int32_t ix = ox * p->stride_w - p->pad_left;
        const int8_t *r0 = rows[0] + ix, *r1 = rows[1] + ix, *r2 = rows[2] + ix;
        const int32_t sum = r0[0] * w0 + r0[1] * w1 + r0[2] * w2 + r1[0] * w3 + r1[1] * w4 + r1[2] * w5 + r2[0] * w6
                            + r2[1] * w7 + r2[2] * w8;
        mct_rq_out(&q, sum - zsum, y != NULL ? y + ox : NULL, mask, bit0 + ox);
    }
}

#if MCT_DSP
/* Interior columns of a stride-1 or stride-2 5x5 or 7x7 (k rows of 5 or 7 taps, k <= 7) depthwise row, two
 * at a time from lo on (mct_dsp_row5_two / row7_two, or their _s2, per tap row inside the input); returns
 * the first column left. */
static int32_t depthwise_wide_dsp(const mct_conv *p, const mct_rq *q, const int8_t *const *rows, const int8_t *w,
                                  int32_t zsum, int32_t lo, int32_t hi, int8_t *y, uint8_t *mask, int32_t bit0) {
    const int32_t kh = p->k, kw = p->kw, s = p->stride_w;
    if ((s != 1 && s != 2) || (kw != 5 && kw != 7) || kh > 7) return lo;
    mct_dsp_row57 k[7];
    const int8_t *r[7];
    int32_t n = 0;
    for (int32_t a = 0; a < kh; ++a)
        if (rows[a] != NULL) {
            k[n] = mct_dsp_row57_of(w + a * kw, kw);
            r[n++] = rows[a] - p->pad_left;
        }
    int32_t ox = lo;
    for (; ox + 2 <= hi; ox += 2) {
        int32_t s0 = -zsum, s1 = -zsum;
        if (s == 2 && kw == 7)
            for (int32_t j = 0; j < n; ++j) mct_dsp_row7_two_s2(r[j] + 2 * ox, &k[j], &s0, &s1);
        else if (s == 2)
            for (int32_t j = 0; j < n; ++j) mct_dsp_row5_two_s2(r[j] + 2 * ox, &k[j], &s0, &s1);
        else if (kw == 7)
            for (int32_t j = 0; j < n; ++j) mct_dsp_row7_two(r[j] + ox, &k[j], &s0, &s1);
        else
            for (int32_t j = 0; j < n; ++j) mct_dsp_row5_two(r[j] + ox, &k[j], &s0, &s1);
        mct_rq_out(q, s0, y != NULL ? y + ox : NULL, mask, bit0 + ox);
        mct_rq_out(q, s1, y != NULL ? y + ox + 1 : NULL, mask, bit0 + ox + 1);
    }
    return ox;
}
#endif

/* Output row of depthwise channel c from its k tap rows (rows[a] = input row of tap a, NULL: padding).
 * Columns whose window lies inside the input take the unrolled path with raw inputs (the zero point
 * folded into the weight sum), the edges the bounded one. */
void mct_depthwise_row(const mct_conv *p, int32_t c, const int8_t *const *rows, int8_t *y, uint8_t *mask,
                       int32_t bit0) {
    const int8_t *w = mct_weight_at(&p->w, c, 0);
#if MCT_SIMD
    if (mct_simd_depthwise_row(p, c, rows, w, y, mask, bit0)) return;
#endif
    const int32_t kh = p->k, kw = p->kw, s = p->stride_w, pad = p->pad_left;
    int32_t full = 1, wsum = 0; /* wsum: the weights of the rows inside the input */
    for (int32_t a = 0; a < kh; ++a) {
        full &= rows[a] != NULL;
        if (rows[a] != NULL)
            for (int32_t b = 0; b < kw; ++b) wsum += w[a * kw + b];
    }
    const int32_t zsum = p->x_zero * wsum;
    int32_t lo = p->out_w, hi = p->out_w; /* columns whose window is inside the input in x: [lo, hi) */
    if (p->in_w >= kw) {
        lo = mct_imin((pad + s - 1) / s, p->out_w);
        hi = mct_imax(lo, mct_imin((p->in_w - kw + pad) / s + 1, p->out_w));
    }
    const mct_rq q = mct_rq_of(p, c); /* once a row: the edges too */
    for (int32_t ox = 0; ox < lo; ++ox)
        mct_rq_out(&q, depthwise_edge(p, rows, w, ox), y != NULL ? y + ox : NULL, mask, bit0 + ox);
    if (kh == 3 && kw == 3 && full) {
        depthwise3_inside(p, c, rows, w, zsum, lo, hi, y, mask, bit0);
    } else {
        int32_t ox = lo;
#if MCT_DSP
        ox = depthwise_wide_dsp(p, &q, rows, w, zsum, lo, hi, y, mask, bit0);
#endif
        for (; ox < hi; ++ox)
            mct_rq_out(&q, window_inside(rows, ox * s - pad, w, kh, kw) - zsum, y != NULL ? y + ox : NULL, mask,
                       bit0 + ox);
    }
    for (int32_t ox = hi; ox < p->out_w; ++ox)
        mct_rq_out(&q, depthwise_edge(p, rows, w, ox), y != NULL ? y + ox : NULL, mask, bit0 + ox);
}

void mct_depthwise_channel(const mct_conv *p, int32_t c, const int8_t *x_c, int8_t *y_c, uint8_t *mask,
                           int32_t bit0) {
    const int8_t *rows[MCT_MAX_K];
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy = oy * p->stride - p->pad;
        for (int32_t a = 0; a < p->k; ++a)
            rows[a] = iy + a >= 0 && iy + a < p->in_h ? x_c + (iy + a) * p->in_w : NULL;
        mct_depthwise_row(p, c, rows, y_c != NULL ? y_c + oy * p->out_w : NULL, mask, bit0 + oy * p->out_w);
    }
}

/* Any groups == 1 conv (kh x kw, strides (sh, sw)), MCT_BLOCK output positions of a row at a time. */
static void conv_general(const mct_conv *p, const int8_t *x, int8_t *y, uint8_t *mask) {
    const int32_t k = p->k, kw = p->kw, in_n = p->in_h * p->in_w, out_n = p->out_h * p->out_w;
    for (int32_t o = 0; o < p->out_c; ++o) {
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy = oy * p->stride - p->pad;
            const int32_t a0 = mct_imax(0, -iy), a1 = mct_imin(k, p->in_h - iy);
            for (int32_t ox0 = 0; ox0 < p->out_w; ox0 += MCT_BLOCK) {
                const int32_t m = mct_imin(MCT_BLOCK, p->out_w - ox0);
                int32_t sum[MCT_BLOCK] = {0};
                for (int32_t i = 0; i < p->in_c; ++i) {
                    const int8_t *w = mct_weight_at(&p->w, o, i);
                    for (int32_t a = a0; a < a1; ++a) {
                        const int8_t *row = x + i * in_n + (iy + a) * p->in_w;
                        for (int32_t b = 0; b < kw; ++b) {
                            /* the positions j whose column base + j * sw is inside the input: [j0, j1) */
                            const int32_t wv = w[a * kw + b], sw = p->stride_w, base = ox0 * sw - p->pad_left + b;
                            const int32_t j0 = base >= 0 ? 0 : (sw - 1 - base) / sw;
                            const int32_t j1 = base < p->in_w ? mct_imin(m, (p->in_w - 1 - base) / sw + 1) : 0;
                            for (int32_t j = j0, ix = base + j0 * sw; j < j1; ++j, ix += sw)
                                sum[j] += ((int32_t)row[ix] - p->x_zero) * wv;
                        }
                    }
                }
                for (int32_t j = 0; j < m; ++j) {
                    const int32_t at = o * out_n + oy * p->out_w + ox0 + j;
                    mct_conv_out(p, o, sum[j], y + at, mask, at);
                }
            }
        }
    }
}

/* In place (scratch != NULL, y == x): each output channel is made in the scratch, then copied over
 * the input bytes, all of them read already (channel c lands on input channels <= c). */
void mct_conv2d(const mct_conv *p, const int8_t *x, int8_t *y, uint8_t *mask, int8_t *scratch) {
    const int32_t in_n = p->in_h * p->in_w, out_n = p->out_h * p->out_w;
    clear_bits(mask, p->out_c * out_n);
    if (p->groups > 1) {
        for (int32_t c = 0; c < p->out_c; ++c) {
            if (scratch == NULL) {
                mct_depthwise_channel(p, c, x + c * in_n, y + c * out_n, mask, c * out_n);
            } else {
                mct_depthwise_channel(p, c, x + c * in_n, scratch, mask, c * out_n);
                memcpy(y + c * out_n, scratch, (size_t)out_n);
            }
        }
    } else if (mct_is_pointwise(p)) {
        mct_pointwise(p, 0, p->out_c, x, in_n, in_n, y, out_n, mask, 0, out_n);
    } else {
        conv_general(p, x, y, mask);
    }
}

/* Expanded channel c into the scratch (H*W bytes), then depthwise channel c from it: the expanded
 * tensor is never whole. */
void mct_pointwise_depthwise(const mct_conv *expand, const mct_conv *dw, const int8_t *x, int8_t *y,
                             uint8_t *mask, int8_t *scratch) {
    const int32_t out_n = dw->out_h * dw->out_w;
    clear_bits(mask, dw->out_c * out_n);
    for (int32_t c = 0; c < dw->out_c; ++c) {
        mct_pointwise_channel(expand, c, x, scratch, NULL, 0);
        mct_depthwise_channel(dw, c, scratch, y + c * out_n, mask, c * out_n);
    }
}

void mct_add_tensors(const mct_add_params *p, const int8_t *a, const int8_t *b, int8_t *y, uint8_t *mask,
                     int32_t n) {
    clear_bits(mask, n);
    for (int32_t i = 0; i < n; ++i) {
        uint8_t inside;
        y[i] = mct_add(a[i], b[i], p, &inside);
        mct_put_bit(mask, i, inside);
    }
}

void mct_global_avgpool(const mct_pool *p, const int8_t *x, int8_t *y, uint8_t *mask) {
    clear_bits(mask, p->channels);
    for (int32_t c = 0; c < p->channels; ++c) {
        uint8_t inside;
        y[c] = mct_avgpool(x + c * p->count, p->count, p->x_zero, p->multiplier, p->shift, p->y_zero, p->qmin,
                           p->qmax, &inside);
        mct_put_bit(mask, c, inside);
    }
}

void mct_linear_forward(const mct_linear *p, const int8_t *x, float *logits) {
    for (int32_t k = 0; k < p->out_features; ++k) {
        const mct_weight_row w = mct_row_of(&p->w, k);
        int64_t acc = p->bias[k];
        for (int32_t c = 0; c < p->in_features; ++c) acc += (int64_t)((int32_t)x[c] - p->x_zero) * row_at(&w, c);
        logits[k] = (float)((double)acc * (double)p->scale[k]);
    }
}

/* A hidden fully connected layer as its 1x1 conv over [in_c][1][1] (mcutrain.quant.graph.FcConv):
 * LiteRT's FULLY_CONNECTED rescale in double, v = round_half_away(sat32(bias + sum (x - z) w) * rescale[o])
 * + y_zero (graph_forward.fc_values: the same IEEE product; the rounding reads v - trunc(v), exact). */
void mct_fc_forward(const mct_conv *p, const double *rescale, const int8_t *x, int8_t *y, uint8_t *mask) {
    clear_bits(mask, p->out_c);
    for (int32_t o = 0; o < p->out_c; ++o) {
        const mct_weight_row w = mct_row_of(&p->w, o);
        int64_t acc = p->bias[o];
        for (int32_t c = 0; c < p->in_c; ++c) acc += (int64_t)((int32_t)x[c] - p->x_zero) * row_at(&w, c);
        acc = acc < INT32_MIN ? INT32_MIN : (acc > INT32_MAX ? INT32_MAX : acc);
        double v = (double)acc * rescale[o];
        v = v > 1e15 ? 1e15 : (v < -1e15 ? -1e15 : v); /* beyond the clamp either way; keeps the cast defined */
        const double t = (double)(int64_t)v;
        const int64_t r = (int64_t)t + (v - t >= 0.5 ? 1 : (v - t <= -0.5 ? -1 : 0)) + p->y_zero;
        y[o] = (int8_t)(r < p->qmin ? p->qmin : (r > p->qmax ? p->qmax : r));
        mct_put_bit(mask, o, (uint8_t)(r > p->qmin && r < p->qmax));
    }
}

int32_t mct_argmax(const float *v, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; ++i)
        if (v[i] > v[best]) best = i;
    return best;
}

/* ------------------------------------------------------------------------------------------------
 * Loss: float64 like the reference, with exp and log of our own (libm only gives expf/logf here). */

static double pow2(int32_t e) { /* 2^e for -1022 <= e <= 1023, from its bits */
    const uint64_t bits = (uint64_t)(e + 1023) << 52;
    double f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static double scale2(double x, int32_t e) { /* x * 2^e */
    while (e > 1023) {
        x *= pow2(1023);
        e -= 1023;
    }
    while (e < -1022) {
        x *= pow2(-1022);
        e += 1022;
    }
    return x * pow2(e);
}

double mct_exp(double x) {
    static const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    static const double log2e = 1.44269504088896338700e+00;
    if (x != x) return x;
    if (x > 709.782712893384) return INFINITY;
    if (x < -745.2) return 0.0;
    const double t = x * log2e;
    const int32_t n = (int32_t)(t < 0 ? t - 0.5 : t + 0.5); /* nearest integer */
    const double r = (x - n * ln2_hi) - n * ln2_lo;         /* |r| <= ln2 / 2 */
    double p = 1.0;                                          /* Taylor series to r^17/17!: < 1e-19 left */
    for (int32_t i = 17; i >= 1; --i) p = 1.0 + p * r / i;
    return scale2(p, n);
}

double mct_log(double x) {
    static const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    if (x != x || x < 0) return NAN;
    if (x == 0) return -INFINITY;
    if (x > 1.7976931348623157e308) return x;
    int32_t e = 0;
    if (x < 2.2250738585072014e-308) { /* subnormal */
        x *= 18014398509481984.0;      /* 2^54 */
        e = -54;
    }
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    e += (int32_t)((bits >> 52) & 0x7ff) - 1023;
    bits = (bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL; /* m in [1, 2) */
    double m;
    memcpy(&m, &bits, sizeof m);
    if (m > 1.4142135623730951) {
        m *= 0.5;
        e += 1;
    }
    const double s = (m - 1.0) / (m + 1.0), s2 = s * s; /* |s| <= 0.1716 */
    double series = 0.0;                                 /* atanh series to s^29: < 1e-24 left */
    for (int32_t i = 29; i >= 3; i -= 2) series = (series + 1.0 / i) * s2;
    const double log_m = 2.0 * s + 2.0 * s * series;
    return e * ln2_hi + (e * ln2_lo + log_m);
}

/* loss = logsumexp(z) - z[label]; grad = softmax(z) - onehot(label) (float64, stored float32). */
void mct_softmax_ce(const float *logits, int32_t k, int32_t label, float *loss, float *grad) {
    double top = logits[0], sum = 0.0;
    for (int32_t i = 1; i < k; ++i)
        if (logits[i] > top) top = logits[i];
    for (int32_t i = 0; i < k; ++i) sum += mct_exp((double)logits[i] - top);
    const double log_sum = mct_log(sum);
    *loss = (float)(log_sum - ((double)logits[label] - top));
    for (int32_t i = 0; i < k; ++i)
        grad[i] = (float)(mct_exp(((double)logits[i] - top) - log_sum) - (i == label ? 1.0 : 0.0));
}

/* ------------------------------------------------------------------------------------------------
 * Backward: elementwise ops (in place: out == g allowed) */

void mct_requant_grad(const float *g, const uint8_t *mask, const float *m, int32_t per_channel, int32_t channels,
                      int32_t plane, float *out) {
    for (int32_t c = 0; c < channels; ++c) {
        const float mc = m[per_channel ? c : 0];
        for (int32_t q = 0; q < plane; ++q) {
            const int32_t i = c * plane + q;
            out[i] = (g[i] * (float)mct_get_bit(mask, i)) * mc;
        }
    }
}

/* out_a may be g (in place); out_b never is. */
void mct_add_grad(const float *g, const uint8_t *mask, const float *ratios, int32_t n, float *out_a, float *out_b) {
    for (int32_t i = 0; i < n; ++i) {
        const float gm = g[i] * (float)mct_get_bit(mask, i);
        out_b[i] = gm * ratios[1];
        out_a[i] = gm * ratios[0];
    }
}

void mct_avgpool_grad(const float *g, const uint8_t *mask, const float *factor, int32_t channels, int32_t plane,
                      float *out) {
    for (int32_t c = 0; c < channels; ++c) {
        const float spread = (g[c] * (float)mct_get_bit(mask, c)) * factor[0];
        for (int32_t q = 0; q < plane; ++q) out[c * plane + q] = spread;
    }
}

/* float32 additions in reading order; out may be any of the terms. */
void mct_grad_sum(const float *const *terms, int32_t n_terms, int32_t n, float *out) {
    for (int32_t i = 0; i < n; ++i) {
        float total = terms[0][i];
        for (int32_t t = 1; t < n_terms; ++t) total = total + terms[t][i];
        out[i] = total;
    }
}

/* ------------------------------------------------------------------------------------------------
 * Backward: conv gradients */

/* 1x1 stride-1 conv: out[i] = [init[i] +] sum_o w[o][i] * g[o], float32, o ascending (init may be out). */
static void pointwise_grad_x(const mct_conv *p, const float *g, const float *init, float *out) {
    const int32_t n = p->in_h * p->in_w;
    int32_t first = 0;
    if (init != NULL) {
        if (init != out) memcpy(out, init, (size_t)p->in_c * (size_t)n * sizeof *out);
    } else {
        const mct_weight_row w = mct_row_of(&p->w, 0);
        for (int32_t i = 0; i < p->in_c; ++i) {
            const float wi = (float)row_at(&w, i);
            for (int32_t q = 0; q < n; ++q) out[i * n + q] = wi * g[q];
        }
        first = 1;
    }
    for (int32_t o = first; o < p->out_c; ++o) {
        const mct_weight_row w = mct_row_of(&p->w, o);
        const float *g_o = g + o * n;
        for (int32_t i = 0; i < p->in_c; ++i) {
            const float wi = (float)row_at(&w, i);
            float *out_i = out + i * n;
            for (int32_t q = 0; q < n; ++q) out_i[q] = out_i[q] + wi * g_o[q];
        }
    }
}

mct_acc_t mct_transpose_tap_sum(const mct_conv *p, const int8_t *w, const float *g_o, int32_t y, int32_t x) {
    /* The taps whose source (y + pad - a) / stride is an output position, as ranges: the same taps in the
     * same ascending order (the same sum), no test per tap. */
    const int32_t ow = p->out_w;
    const mct_tap_range ra = mct_tap_range_of(y + p->pad, p->stride, p->out_h, p->k);
    const mct_tap_range rb = mct_tap_range_of(x + p->pad_left, p->stride_w, ow, p->kw);
    return mct_tap_range_sum(w, p->kw, p->stride, p->stride_w, g_o, ow, &ra, &rb);
}

/* Depthwise: channel c of the input gradient from channel c of g (into the scratch when in place). */
static void depthwise_grad_x(const mct_conv *p, const float *g, float *out, float *scratch) {
    const int32_t in_n = p->in_h * p->in_w, out_n = p->out_h * p->out_w;
    for (int32_t c = 0; c < p->in_c; ++c) {
        const int8_t *w = mct_weight_at(&p->w, c, 0);
        float *dst = scratch != NULL ? scratch : out + c * in_n;
        for (int32_t y = 0; y < p->in_h; ++y)
            for (int32_t x = 0; x < p->in_w; ++x)
                dst[y * p->in_w + x] = (float)mct_transpose_tap_sum(p, w, g + c * out_n, y, x);
        if (scratch != NULL) memcpy(out + c * in_n, scratch, (size_t)in_n * sizeof *out);
    }
}

static void general_grad_x(const mct_conv *p, const float *g, float *out) {
    const int32_t in_n = p->in_h * p->in_w, out_n = p->out_h * p->out_w;
    for (int32_t i = 0; i < p->in_c; ++i)
        for (int32_t y = 0; y < p->in_h; ++y)
            for (int32_t x = 0; x < p->in_w; ++x) {
                mct_acc_t acc = 0;
                for (int32_t o = 0; o < p->out_c; ++o)
                    acc += mct_transpose_tap_sum(p, mct_weight_at(&p->w, o, i), g + o * out_n, y, x);
                out[i * in_n + y * p->in_w + x] = (float)acc;
            }
}

void mct_conv2d_grad_x(const mct_conv *p, const float *g, const float *init, float *out, float *scratch) {
    if (p->groups > 1)
        depthwise_grad_x(p, g, out, scratch);
    else if (mct_is_pointwise(p))
        pointwise_grad_x(p, g, init, out);
    else
        general_grad_x(p, g, out);
}

void mct_conv2d_grad_b(const float *g, int32_t channels, int32_t plane, float *out) {
    for (int32_t c = 0; c < channels; ++c) {
        mct_acc_t acc = 0;
        for (int32_t q = 0; q < plane; ++q) acc += (mct_acc_t)g[c * plane + q];
        out[c] = (float)acc;
    }
}

float mct_grad_w_element(const mct_conv *p, const int8_t *x_i, const float *g_o, int32_t a, int32_t b) {
    /* The output positions whose input (oy * s - pad + a, ox * s - pad + b) is inside, as ranges (same
     * positions, ascending: same sum). */
    const int32_t sh = p->stride, sw = p->stride_w, in_w = p->in_w, out_w = p->out_w, x_zero = p->x_zero;
    const int32_t oy0 = mct_first_inside(p->pad - a, sh);
    const int32_t oy1 = mct_imin(p->out_h, mct_end_inside(p->in_h, p->pad - a, sh));
    const int32_t ox0 = mct_first_inside(p->pad_left - b, sw);
    const int32_t ox1 = mct_imin(out_w, mct_end_inside(in_w, p->pad_left - b, sw));
    mct_acc_t acc = 0;
    for (int32_t oy = oy0; oy < oy1; ++oy) {
        const float *g_row = g_o + oy * out_w;
        const int8_t *x_row = x_i + (oy * sh - p->pad + a) * in_w;
        for (int32_t ox = ox0, ix = ox0 * sw - p->pad_left + b; ox < ox1; ++ox, ix += sw)
            acc = mct_mac_exact(acc, g_row[ox], (int32_t)x_row[ix] - x_zero);
    }
    return (float)acc;
}

/* The element (row r, column c, tap t) of the weight gradient over the kept slice; x holds the kept
 * input channels (or all of them). Depthwise: row r is channel r (one column). */
static float conv_grad_w_at(const mct_conv *p, const int8_t *x, const float *g, int32_t r, int32_t c, int32_t t) {
    const int32_t in_n = p->in_h * p->in_w, out_n = p->out_h * p->out_w;
    const int32_t channel = p->groups > 1 ? r : c;
    return mct_grad_w_element(p, x + channel * in_n, g + r * out_n, t / p->kw, t % p->kw);
}

void mct_conv2d_grad_w(const mct_conv *p, const int8_t *x, const float *g, int32_t rows, int32_t cols, float *out) {
    const int32_t taps = p->k * p->kw;
    for (int32_t r = 0; r < rows; ++r)
        for (int32_t c = 0; c < cols; ++c)
            for (int32_t t = 0; t < taps; ++t) out[(r * cols + c) * taps + t] = conv_grad_w_at(p, x, g, r, c, t);
}

void mct_linear_grad_x(const mct_linear *p, const float *g, float *out) {
    for (int32_t c = 0; c < p->in_features; ++c) {
        mct_acc_t acc = 0;
        for (int32_t k = 0; k < p->out_features; ++k)
            acc += (mct_acc_t)(g[k] * p->scale[k]) * (mct_acc_t)*mct_weight_at(&p->w, k, c);
        out[c] = (float)acc;
    }
}

static float linear_grad_w_at(const mct_linear *p, const float *g, const int8_t *x, int32_t k, int32_t c) {
    return (float)((double)(g[k] * p->scale[k]) * (double)((int32_t)x[c] - p->x_zero));
}

void mct_linear_grad_w(const mct_linear *p, const float *g, const int8_t *x, float *out) {
    for (int32_t k = 0; k < p->out_features; ++k)
        for (int32_t c = 0; c < p->in_features; ++c) out[k * p->in_features + c] = linear_grad_w_at(p, g, x, k, c);
}

void mct_linear_grad_b(const mct_linear *p, const float *g, float *out) {
    for (int32_t k = 0; k < p->out_features; ++k) out[k] = g[k] * p->scale[k];
}

/* ------------------------------------------------------------------------------------------------
 * Updates */

/* w <- clamp(sr(w - lr * (g * qas)), -127, 127): float32, in this order (the reference's). */
int8_t mct_sgd_int8(int8_t w, float g, float qas, float lr, uint32_t key, uint32_t index) {
    const float x = (float)w - lr * (g * qas);
    const int32_t q = mct_stochastic_round(x, mct_stream_word(key, index));
    return (int8_t)(q < -127 ? -127 : (q > 127 ? 127 : q));
}

void mct_update_weight(const mct_update *u, const float *g, uint32_t step) {
    const uint32_t key = mct_stream_key(u->seed, step, u->tensor_id);
    const float lr = *u->lr;
    const int32_t per_row = u->cols * u->inner;
    for (int32_t r = 0; r < u->rows; ++r)
        for (int32_t j = 0; j < per_row; ++j) {
            const int32_t i = r * per_row + j;
            u->w[i] = mct_sgd_int8(u->w[i], g[i], u->qas[r], lr, key, (uint32_t)i);
        }
}

/* b <- sat32(b + floor(0.5 - lr * (g * qas))) (float32 delta, float64 sum as the reference). */
void mct_update_bias(const mct_update *u, const float *g) {
    const float lr = *u->lr;
    for (int32_t r = 0; r < u->rows; ++r) {
        const float delta = floorf(0.5f - lr * (g[r] * u->qas[r]));
        const double v = (double)u->b[r] + (double)delta;
        if (v != v)
            u->b[r] = INT32_MIN; /* what NumPy's float -> int32 cast gives for NaN on x86 */
        else
            u->b[r] = v <= -2147483648.0 ? INT32_MIN : (v >= 2147483647.0 ? INT32_MAX : (int32_t)v);
    }
}

/* Each weight-gradient element is applied as soon as it is computed: no gradient buffer. */
void mct_conv2d_grad_w_update(const mct_conv *p, const mct_update *u, const int8_t *x, const float *g,
                              uint32_t step) {
    const uint32_t key = mct_stream_key(u->seed, step, u->tensor_id);
    const float lr = *u->lr;
    for (int32_t r = 0; r < u->rows; ++r)
        for (int32_t c = 0; c < u->cols; ++c)
            for (int32_t t = 0; t < u->inner; ++t) {
                const int32_t i = (r * u->cols + c) * u->inner + t;
                u->w[i] = mct_sgd_int8(u->w[i], conv_grad_w_at(p, x, g, r, c, t), u->qas[r], lr, key, (uint32_t)i);
            }
}

void mct_linear_grad_w_update(const mct_linear *p, const mct_update *u, const float *g, const int8_t *x,
                              uint32_t step) {
    const uint32_t key = mct_stream_key(u->seed, step, u->tensor_id);
    const float lr = *u->lr;
    for (int32_t k = 0; k < u->rows; ++k)
        for (int32_t c = 0; c < u->cols; ++c) {
            const int32_t i = k * u->cols + c;
            u->w[i] = mct_sgd_int8(u->w[i], linear_grad_w_at(p, g, x, k, c), u->qas[k], lr, key, (uint32_t)i);
        }
}

/* ------------------------------------------------------------------------------------------------
 * TFLite ops of imported graphs (issue 13): pools clipped at the border, MEAN, channels-last flatten.
 * Forward bit-exact with mcutrain.quant.graph_forward (the NumPy executor calls it). */

/* The rows (or columns) [*lo, *hi) of the input that output position ``o``'s window covers. */
static void window_span(int32_t o, int32_t stride, int32_t pad, int32_t k, int32_t n, int32_t *lo, int32_t *hi) {
    const int32_t start = o * stride - pad;
    *lo = mct_imax(start, 0);
    *hi = mct_imin(start + k, n);
}

static int32_t rounded_divide(int32_t total, int32_t count) { /* round half away from zero */
    return total > 0 ? (total + count / 2) / count : (total - count / 2) / count;
}

static void pool_out(const mct_tfl_pool *p, int32_t v, int8_t *y, uint8_t *mask, int32_t i) {
    y[i] = (int8_t)(v < p->qmin ? p->qmin : (v > p->qmax ? p->qmax : v));
    if (mask != NULL) mct_put_bit(mask, i, (uint8_t)(v > p->qmin && v < p->qmax));
}

void mct_tfl_avgpool(const mct_tfl_pool *p, const int8_t *x, int8_t *y, uint8_t *mask) {
    const int32_t plane = p->in_h * p->in_w, out_plane = p->out_h * p->out_w;
    clear_bits(mask, p->channels * out_plane);
    for (int32_t c = 0; c < p->channels; ++c)
        for (int32_t oh = 0; oh < p->out_h; ++oh) {
            int32_t r0, r1;
            window_span(oh, p->sh, p->pad_top, p->kh, p->in_h, &r0, &r1);
            for (int32_t ow = 0; ow < p->out_w; ++ow) {
                int32_t c0, c1, sum = 0;
                window_span(ow, p->sw, p->pad_left, p->kw, p->in_w, &c0, &c1);
                for (int32_t r = r0; r < r1; ++r)
                    for (int32_t s = c0; s < c1; ++s) sum += x[c * plane + r * p->in_w + s];
                pool_out(p, rounded_divide(sum, (r1 - r0) * (c1 - c0)), y, mask, (c * p->out_h + oh) * p->out_w + ow);
            }
        }
}

/* Flat index in its [in_h][in_w] plane of the first maximum of output (oh, ow)'s clipped window. */
static int32_t window_argmax(const mct_tfl_pool *p, const int8_t *x_c, int32_t oh, int32_t ow) {
    int32_t r0, r1, c0, c1;
    window_span(oh, p->sh, p->pad_top, p->kh, p->in_h, &r0, &r1);
    window_span(ow, p->sw, p->pad_left, p->kw, p->in_w, &c0, &c1);
    int32_t best = r0 * p->in_w + c0;
    for (int32_t r = r0; r < r1; ++r)
        for (int32_t s = c0; s < c1; ++s)
            if (x_c[r * p->in_w + s] > x_c[best]) best = r * p->in_w + s;
    return best;
}

void mct_tfl_maxpool(const mct_tfl_pool *p, const int8_t *x, int8_t *y, uint8_t *mask) {
    const int32_t plane = p->in_h * p->in_w;
    clear_bits(mask, p->channels * p->out_h * p->out_w);
    for (int32_t c = 0; c < p->channels; ++c)
        for (int32_t oh = 0; oh < p->out_h; ++oh)
            for (int32_t ow = 0; ow < p->out_w; ++ow)
                pool_out(p, x[c * plane + window_argmax(p, x + c * plane, oh, ow)], y, mask,
                         (c * p->out_h + oh) * p->out_w + ow);
}

void mct_tfl_mean(const mct_tfl_mean_params *p, const int8_t *x, int8_t *y, uint8_t *mask) {
    clear_bits(mask, p->channels);
    for (int32_t c = 0; c < p->channels; ++c) {
        int32_t sum = 0;
        for (int32_t i = 0; i < p->count; ++i) sum += x[c * p->count + i];
        const int32_t v = mct_mbqm(sum - p->x_zero * p->count, p->multiplier, p->shift) + p->y_zero;
        y[c] = (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
        if (mask != NULL) mct_put_bit(mask, c, (uint8_t)(v > -128 && v < 127));
    }
}

void mct_nchw_to_nhwc_i8(const int8_t *x, int32_t channels, int32_t plane, int8_t *y) {
    for (int32_t c = 0; c < channels; ++c)
        for (int32_t q = 0; q < plane; ++q) y[q * channels + c] = x[c * plane + q];
}

void mct_nhwc_to_nchw_f32(const float *g, int32_t channels, int32_t plane, float *out) {
    for (int32_t c = 0; c < channels; ++c)
        for (int32_t q = 0; q < plane; ++q) out[c * plane + q] = g[q * channels + c];
}

/* Outputs [*lo, *hi) whose windows (stride s, padding pad, side k) contain input position i. */
static void windows_over(int32_t i, int32_t s, int32_t pad, int32_t k, int32_t out_n, int32_t *lo, int32_t *hi) {
    *lo = mct_first_inside(i + pad - k + 1, s);
    *hi = mct_imin((i + pad) / s + 1, out_n);
}

void mct_tfl_avgpool_grad(const mct_tfl_pool *p, const float *g, const uint8_t *mask, float *out) {
    for (int32_t c = 0; c < p->channels; ++c)
        for (int32_t i = 0; i < p->in_h; ++i) {
            int32_t oh0, oh1;
            windows_over(i, p->sh, p->pad_top, p->kh, p->out_h, &oh0, &oh1);
            for (int32_t j = 0; j < p->in_w; ++j) {
                int32_t ow0, ow1;
                windows_over(j, p->sw, p->pad_left, p->kw, p->out_w, &ow0, &ow1);
                mct_acc_t acc = 0;
                for (int32_t oh = oh0; oh < oh1; ++oh) {
                    int32_t r0, r1;
                    window_span(oh, p->sh, p->pad_top, p->kh, p->in_h, &r0, &r1);
                    for (int32_t ow = ow0; ow < ow1; ++ow) {
                        int32_t c0, c1;
                        window_span(ow, p->sw, p->pad_left, p->kw, p->in_w, &c0, &c1);
                        const int32_t o = (c * p->out_h + oh) * p->out_w + ow;
                        const float factor = (float)(p->ratio / (double)((r1 - r0) * (c1 - c0)));
                        acc += (mct_acc_t)((g[o] * (float)mct_get_bit(mask, o)) * factor);
                    }
                }
                out[(c * p->in_h + i) * p->in_w + j] = (float)acc;
            }
        }
}

void mct_tfl_maxpool_grad(const mct_tfl_pool *p, const float *g, const uint8_t *mask, const int8_t *x, float *out) {
    const int32_t plane = p->in_h * p->in_w;
    for (int32_t i = 0; i < p->channels * plane; ++i) out[i] = 0.0f;
    for (int32_t c = 0; c < p->channels; ++c)
        for (int32_t oh = 0; oh < p->out_h; ++oh)
            for (int32_t ow = 0; ow < p->out_w; ++ow) {
                const int32_t o = (c * p->out_h + oh) * p->out_w + ow;
                out[c * plane + window_argmax(p, x + c * plane, oh, ow)] += g[o] * (float)mct_get_bit(mask, o);
            }
}
