/* mct_kernels.c: see mct_kernels.h (what, in which order, with which rounding): the parameters and the
 * forward; the 1x1 convs are in mct_pointwise.c, the DSP build's depthwise in mct_depthwise.c, the loss,
 * backward and updates in mct_backward.c, the TFLite graph ops in mct_graph_ops.c. */
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


void mct_copy_slice_i8(int8_t *dst, const int8_t *src, int32_t cols, int32_t inner, int32_t kept_rows,
                       int32_t kept_cols) {
    const size_t run = (size_t)kept_cols * (size_t)inner;
    for (int32_t r = 0; r < kept_rows; ++r)
        memcpy(dst + (size_t)r * run, src + (size_t)r * (size_t)cols * (size_t)inner, run);
}

/* ------------------------------------------------------------------------------------------------
 * Forward */

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

#if MCT_DSP
/* Depthwise outputs whose sums are held at once: the multiply-accumulate loops store the sums of up to this
 * many columns, requant_run requantizes them in a loop of its own (the two together ran out of registers:
 * the weights and the requantization constants were reloaded from the stack for every output pair).
 * 64 bytes of stack (16: the 26 interior columns of a 28-wide row, in the tests, take two runs). */
#define MCT_DW_SUMS 16

/* count outputs from their sums s[0..count): the constants in registers when y is given, no mask and the
 * fast conditions hold; else mct_rq_out (y NULL: mask bits only). */
static void requant_run(const mct_rq *q, const int32_t *s, int32_t count, int8_t *y, uint8_t *mask, int32_t bit) {
    if (y == NULL || mask != NULL || !q->fast) {
        for (int32_t j = 0; j < count; ++j) mct_rq_out(q, s[j], y != NULL ? y + j : NULL, mask, bit + j);
        return;
    }
    const int32_t bias2 = q->bias2, m = q->multiplier, nudge = q->nudge, right = q->right;
    for (int32_t j = 0; j < count; ++j) y[j] = (int8_t)__ssat(mct_dsp_requantize(s[j], bias2, m, nudge, right), 8);
}
#endif

/* Interior columns [lo, hi) of a 3x3 depthwise row: the 9 weights held in locals (the compiler cannot
 * keep them in registers itself: the int8 stores to y may alias them as far as it knows). */
static void depthwise3_inside(const mct_conv *p, int32_t c, const int8_t *const *rows, const int8_t *w, int32_t zsum,
                              int32_t lo, int32_t hi, int8_t *y, uint8_t *mask, int32_t bit0) {
    const int32_t w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
    const mct_rq q = mct_rq_of(p, c);
    int32_t ox = lo;
#if MCT_DSP
    int32_t sums[MCT_DW_SUMS];
    if (p->stride_w == 1) { /* two outputs per step */
        const mct_dsp_dw3 k = mct_dsp_dw3_of(w);
        const int8_t *r0 = rows[0] - p->pad_left, *r1 = rows[1] - p->pad_left, *r2 = rows[2] - p->pad_left;
        while (ox + 2 <= hi) {
            const int32_t m = mct_imin(MCT_DW_SUMS, (hi - ox) & ~1);
            for (int32_t j = 0; j < m; j += 2) {
                int32_t s0 = -zsum, s1 = -zsum;
                mct_dsp_dw3_two(r0 + ox + j, r1 + ox + j, r2 + ox + j, &k, &s0, &s1);
                sums[j] = s0, sums[j + 1] = s1;
            }
            requant_run(&q, sums, m, y != NULL ? y + ox : NULL, mask, bit0 + ox);
            ox += m;
        }
    } else if (p->stride_w == 2) { /* four outputs per step */
        const mct_dsp_dw3 k = mct_dsp_dw3_of(w);
        const int8_t *r0 = rows[0] - p->pad_left, *r1 = rows[1] - p->pad_left, *r2 = rows[2] - p->pad_left;
        while (ox + 4 <= hi) {
            const int32_t m = mct_imin(MCT_DW_SUMS / 2, (hi - ox) & ~3); /* the input span of s1's runs */
            for (int32_t j = 0; j < m; j += 4) {
                int32_t *s4 = sums + j;
                s4[0] = s4[1] = s4[2] = s4[3] = -zsum;
                mct_dsp_s2_row4(r0 + 2 * (ox + j), k.w02[0], k.w1[0], s4);
                mct_dsp_s2_row4(r1 + 2 * (ox + j), k.w02[1], k.w1[1], s4);
                mct_dsp_s2_row4(r2 + 2 * (ox + j), k.w02[2], k.w1[2], s4);
            }
            requant_run(&q, sums, m, y != NULL ? y + ox : NULL, mask, bit0 + ox);
            ox += m;
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
    int32_t sums[MCT_DW_SUMS];
    while (ox + 2 <= hi) {
        const int32_t m = mct_imin(MCT_DW_SUMS, (hi - ox) & ~1);
        for (int32_t i = 0; i < m; i += 2) {
            const int32_t at = ox + i;
            int32_t s0 = -zsum, s1 = -zsum;
            if (s == 2 && kw == 7)
                for (int32_t j = 0; j < n; ++j) mct_dsp_row7_two_s2(r[j] + 2 * at, &k[j], &s0, &s1);
            else if (s == 2)
                for (int32_t j = 0; j < n; ++j) mct_dsp_row5_two_s2(r[j] + 2 * at, &k[j], &s0, &s1);
            else if (kw == 7)
                for (int32_t j = 0; j < n; ++j) mct_dsp_row7_two(r[j] + at, &k[j], &s0, &s1);
            else
                for (int32_t j = 0; j < n; ++j) mct_dsp_row5_two(r[j] + at, &k[j], &s0, &s1);
            sums[i] = s0, sums[i + 1] = s1;
        }
        requant_run(q, sums, m, y != NULL ? y + ox : NULL, mask, bit0 + ox);
        ox += m;
    }
    return ox;
}
#endif

/* Output row of depthwise channel c from its k tap rows (rows[a] = input row of tap a, NULL: padding).
 * Columns whose window lies inside the input take the unrolled path with raw inputs (the zero point
 * folded into the weight sum), the edges the bounded one. */
void mct_depthwise_row(const mct_conv *p, int32_t c, const int8_t *const *rows, int8_t *y, uint8_t *mask,
                       int32_t bit0) {
#if MCT_DSP && !MCT_MVE
    if (mct_dw_dsp_row(p, c, rows, y, mask, bit0)) return; /* mct_depthwise.c */
#endif
    const int8_t *w = mct_weight_at(&p->w, c, 0);
#if MCT_SIMD
    if (mct_simd_depthwise_row(p, c, rows, w, y, mask, bit0)) return;
#endif
    const int32_t kh = p->k, kw = p->kw, s = p->stride_w, pad = p->pad_left;
    int32_t full = 1, wsum = 0; /* wsum: the weights of the rows inside the input */
    for (int32_t a = 0; a < kh; ++a) full &= rows[a] != NULL;
#if MCT_DSP
    if (full) /* every row: the kernel's kh * kw weights in one run, four a load (a byte loop cost ~2 M of MCUNet) */
        wsum = mct_dsp_sum_i8(w, kh * kw);
    else
#endif
        for (int32_t a = 0; a < kh; ++a)
            if (rows[a] != NULL)
                for (int32_t b = 0; b < kw; ++b) wsum += w[a * kw + b];
    const int32_t zsum = p->x_zero * wsum;
    int32_t lo = p->out_w, hi = p->out_w; /* columns whose window is inside the input in x: [lo, hi) */
    if (p->in_w >= kw) {
        lo = mct_imin((pad + s - 1) / s, p->out_w);
        hi = mct_imax(lo, mct_imin((p->in_w - kw + pad) / s + 1, p->out_w));
    }
    const mct_rq q = mct_rq_of(p, c); /* once a row: the edges too */
    for (int32_t ox = 0; ox < lo; ++ox)
        mct_rq_out(&q, depthwise_edge(p, rows, w, ox), y != NULL ? y + ox : NULL, mask, bit0 + ox);
#if MCT_MVE
    lo = mct_mve_depthwise_inside(p, &q, rows, w, zsum, lo, hi, y, mask, bit0); /* the columns left: below */
#endif
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

void mct_depthwise_rows(const mct_conv *p, int32_t c0, int32_t c1, const int8_t *const *rows, int32_t x_cs, int8_t *y,
                        int32_t y_cs, uint8_t *mask, int32_t bit0, int32_t bit_cs) {
#if MCT_DSP && !MCT_MVE
    if (mct_dw_dsp_rows(p, c0, c1, rows, x_cs, y, y_cs, mask, bit0, bit_cs)) return; /* mct_depthwise.c */
#endif
    const int8_t *r[MCT_MAX_K];
    for (int32_t c = c0; c < c1; ++c) {
        for (int32_t a = 0; a < p->k; ++a) r[a] = rows[a] != NULL ? rows[a] + (c - c0) * x_cs : NULL;
        mct_depthwise_row(p, c, r, y + (c - c0) * y_cs, mask, bit0 + (c - c0) * bit_cs);
    }
}

#if MCT_DSP && MCT_MVE
/* A depthwise channel whose plane, padded with x_zero on every side its windows reach past, fits this many
 * bytes is copied so padded (a stack array: its frame is never nested in pointwise_wide's larger one, so
 * the stack high-water mark does not grow) and run as all interior columns of full rows: the padding's
 * terms (x_zero - x_zero) * w are 0, so the sums are the bounded ones exactly, on the DSP row paths
 * instead of depthwise_edge's bounded loop (a 7x7 on 8 columns has 6 edge columns of 8). */
#define MCT_DW_PADDED 2048

static int32_t depthwise_channel_padded(const mct_conv *p, int32_t c, const int8_t *x_c, int8_t *y_c,
                                        uint8_t *mask, int32_t bit0) {
    const int32_t top = p->pad, left = p->pad_left;
    const int32_t h = mct_imax(p->in_h + top, (p->out_h - 1) * p->stride + p->k);
    const int32_t w = mct_imax(p->in_w + left, (p->out_w - 1) * p->stride_w + p->kw);
    if (top < 0 || left < 0 || p->k > MCT_MAX_K || h * w > MCT_DW_PADDED) return 0;
    int8_t plane[MCT_DW_PADDED];
    memset(plane, p->x_zero, (size_t)(h * w));
    for (int32_t r = 0; r < p->in_h; ++r)
        memcpy(plane + (top + r) * w + left, x_c + r * p->in_w, (size_t)p->in_w);
    mct_conv q = *p; /* the same conv on the padded plane: no padding, every window inside */
    q.in_h = h, q.in_w = w, q.pad = 0, q.pad_left = 0;
    const int8_t *rows[MCT_MAX_K];
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        for (int32_t a = 0; a < p->k; ++a) rows[a] = plane + (oy * p->stride + a) * w;
        mct_depthwise_row(&q, c, rows, y_c != NULL ? y_c + oy * p->out_w : NULL, mask, bit0 + oy * p->out_w);
    }
    return 1;
}
#endif

void mct_depthwise_channel(const mct_conv *p, int32_t c, const int8_t *x_c, int8_t *y_c, uint8_t *mask,
                           int32_t bit0) {
#if MCT_DSP && !MCT_MVE
    if (mct_dw_dsp_channel(p, c, x_c, y_c, mask, bit0)) return; /* mct_depthwise.c */
#endif
#if MCT_DSP && MCT_MVE /* on a core without Helium mct_dw_dsp_channel pads the plane; where it declines, the
                       * rows below pad their own rows (mct_dw_dsp_row): a padded plane here would nest that
                       * row's 1.5 KB frame in this one's 2.3 KB (the demo's stack high-water mark: 4.5 KB) */
    if (depthwise_channel_padded(p, c, x_c, y_c, mask, bit0)) return;
#endif
#if MCT_SIMD
    if (mct_simd_depthwise_channel(p, c, x_c, y_c, mask, bit0)) return;
#endif
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
    mct_clear_bits(mask, p->out_c * out_n);
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

/* mct_add's last steps from its two rescaled operands (the same integers). */
static inline int8_t add_of_scaled(int32_t sa, int32_t sb, const mct_add_params *p, uint8_t *inside) {
    const int64_t v = (int64_t)mct_mbqm(sa + sb, p->out_multiplier, p->out_shift) + p->out_zero;
    *inside = (uint8_t)((v > p->qmin) && (v < p->qmax));
    return mct_clamp_i8(v, p->qmin, p->qmax);
}

#if MCT_DSP
/* The elements through mct_dsp_requantize (sum = sa + sb, no bias) where t->dsp (|sa|, |sb| < 2^28, the output
 * shift in [-22, -1], a multiplier other than INT32_MIN, an int8 zero point: the generator checks): v is then
 * MBQM(sa + sb) + out_zero exactly (mct_add has no int16 clamp to leave out). Mask bits from bit0 (cleared). */
static void add_dsp(const mct_add_params *p, const mct_add_table *t, const int8_t *a, const int8_t *b, int8_t *y,
                    uint8_t *mask, int32_t bit0, int32_t n) {
    const int32_t right = -p->out_shift, m = p->out_multiplier, qmin = p->qmin, qmax = p->qmax;
    const int32_t nudge = mct_rq_nudge(right, p->out_zero);
    const int32_t *const ta = t->a + 128, *const tb = t->b + 128; /* indexed by the int8 itself */
    int32_t i = 0;
    if (qmin == -128 && qmax == 127 && mask == NULL) /* the clamp is SSAT; no bits (an inference, a frozen add) */
        for (; i < n; ++i) y[i] = (int8_t)__ssat(mct_dsp_requantize(ta[a[i]] + tb[b[i]], 0, m, nudge, right), 8);
    else if (qmin == -128 && qmax == 127 && (bit0 & 7) == 0) /* eight mask bits, one byte store */
        for (; i + 8 <= n; i += 8) {
            uint32_t bits = 0;
            for (int32_t j = 0; j < 8; ++j) {
                const int32_t v = mct_dsp_requantize(ta[a[i + j]] + tb[b[i + j]], 0, m, nudge, right);
                y[i + j] = (int8_t)__ssat(v, 8);
                bits |= (uint32_t)((uint32_t)(v + 127) < 254u) << j; /* -128 < v < 127 */
            }
            mask[(bit0 + i) >> 3] = (uint8_t)bits; /* bits bit0+i.. +7: this call's */
        }
    for (; i < n; ++i) {
        const int32_t v = mct_dsp_requantize(ta[a[i]] + tb[b[i]], 0, m, nudge, right);
        y[i] = (int8_t)(v < qmin ? qmin : (v > qmax ? qmax : v));
        if (mask != NULL) mct_put_bit(mask, bit0 + i, (uint8_t)((v > qmin) & (v < qmax)));
    }
}
#endif

void mct_add_scaled(const mct_add_params *p, const mct_add_table *t, const int8_t *a, const int8_t *b, int8_t *y,
                    uint8_t *mask, int32_t bit0, int32_t n) {
#if MCT_DSP
    if (t->dsp) {
        add_dsp(p, t, a, b, y, mask, bit0, n);
        return;
    }
#endif
    for (int32_t i = 0; i < n; ++i) {
        uint8_t inside;
        y[i] = add_of_scaled(t->a[a[i] + 128], t->b[b[i] + 128], p, &inside);
        mct_put_bit(mask, bit0 + i, inside);
    }
}

void mct_add_tensors(const mct_add_params *p, const mct_add_table *t, const int8_t *a, const int8_t *b, int8_t *y,
                     uint8_t *mask, int32_t n) {
    mct_clear_bits(mask, n);
    mct_add_scaled(p, t, a, b, y, mask, 0, n);
}

void mct_global_avgpool(const mct_pool *p, const int8_t *x, int8_t *y, uint8_t *mask) {
    mct_clear_bits(mask, p->channels);
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
        for (int32_t c = 0; c < p->in_features; ++c) acc += (int64_t)((int32_t)x[c] - p->x_zero) * mct_row_at(&w, c);
        logits[k] = (float)((double)acc * (double)p->scale[k]);
    }
}

/* A hidden fully connected layer as its 1x1 conv over [in_c][1][1] (mcutrain.quant.graph.FcConv):
 * LiteRT's FULLY_CONNECTED rescale in double, v = round_half_away(sat32(bias + sum (x - z) w) * rescale[o])
 * + y_zero (graph_forward.fc_values: the same IEEE product; the rounding reads v - trunc(v), exact). */
void mct_fc_forward(const mct_conv *p, const double *rescale, const int8_t *x, int8_t *y, uint8_t *mask) {
    mct_clear_bits(mask, p->out_c);
    for (int32_t o = 0; o < p->out_c; ++o) {
        const mct_weight_row w = mct_row_of(&p->w, o);
        int64_t acc = p->bias[o];
        for (int32_t c = 0; c < p->in_c; ++c) acc += (int64_t)((int32_t)x[c] - p->x_zero) * mct_row_at(&w, c);
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
