/* mct_depthwise.c: the int8 depthwise forward on the Cortex-M DSP extension (kernels=dsp, a core without
 * Helium), the same integers as mct_kernels.c's portable rows.
 *
 * Why a path of its own: the row calls of mct_kernels.c redo a channel's setup (requantization constants,
 * weight operands, the zero point's weight sum) for every output row, take the edge columns and the rows
 * next to padding through bounded byte loops, and keep the sums in a stack buffer for a requantization loop
 * of its own; on the 4- to 16-wide rows of the late blocks that cost more than the multiply-accumulates.
 * Here a channel's setup is one ``dw_plan``, made once per row call (mct_dw_dsp_row) or once per channel
 * (mct_dw_dsp_channel, a whole plane); every output column runs the same kernel, the edges and padding rows
 * on a padded copy of the few bytes they read (x_zero outside the input: a padded tap adds (x_zero - x_zero)
 * * w = 0, as the bounded loops leave it out, since the zero point enters through the weight sum); and each
 * kernel step requantizes its outputs in registers, 5 instructions each (dw_requant).
 *
 * The sums are doubled: the plan's weights are 2w (|2w| <= 254 still fits SMLAD's halfwords) and every sum
 * starts at 2 * (bias - x_zero * sum w), so a sum is 2 * (acc + bias), SMMLAR's operand, without an add. */
#include "mct_kernels.h"

#if MCT_DSP && !MCT_MVE

#define MCT_DW_PATCH 1024 /* bytes of a row call's padded copy of its tap rows (stack) */
#define MCT_DW_ROW 256    /* longest output row of a row call (its stack row when y is NULL) */
#define MCT_DW_PLANE 2048 /* bytes of a channel's padded plane (stack; mct_depthwise_channel's limit too) */

enum { DW_3S1, DW_3S2, DW_5S1, DW_5S2, DW_7S1, DW_7S2 };

/* One channel's operands: kernel side k (k x k taps), stride s both ways (outputs two a step). */
typedef struct {
    int32_t kind, k, s;
    int32_t init;            /* 2 * (bias - x_zero * sum w): where every doubled sum starts */
    int32_t m, nudge, right; /* dw_requant's constants */
    int32_t w02[3], w1[2];   /* 3x3: per tap row (2w0, 2w2); (2w1 of row 0, 2w1 of row 1); (-, 2w1 of row 2) */
    mct_dsp_row57 row[7];    /* 5x5 / 7x7: per tap row, doubled (mct_dsp_row57's layout) */
} dw_plan;

/* Channel c's k * k weights (mct_weight_at(w, c, 0), inlined: a call per row was a visible cost). */
static inline const int8_t *dw_weights(const mct_weight *w, int32_t c) {
    if (w->sram != NULL && c < w->kept_rows && w->kept_cols > 0)
        return w->sram + (size_t)c * (size_t)w->kept_cols * (size_t)w->inner;
    return w->flash + (size_t)c * (size_t)w->cols * (size_t)w->inner;
}

/* Both halfwords doubled. */
static inline int32_t dw_twice(int32_t pair) { return (int32_t)__sadd16(pair, pair); }

/* The 3x3 operands from three word loads: SXTB16 of w[0..3] is (w0, w2), of w[3..6] (w3, w5), rotated (w4, w6);
 * of w[5..8] rotated (w6, w8), unrotated (w5, w7) whose high half is row 2's middle tap. */
static void dw_plan3(const int8_t *w, dw_plan *d) {
    const int32_t v0 = mct_ld32(w), v1 = mct_ld32(w + 3), v2 = mct_ld32(w + 5);
    const int32_t o0 = mct_sxtb16_ror8(v0), o1 = mct_sxtb16_ror8(v1); /* (w1, w3), (w4, w6) */
    d->w02[0] = dw_twice(__sxtb16(v0));
    d->w02[1] = dw_twice(__sxtb16(v1));
    d->w02[2] = dw_twice(mct_sxtb16_ror8(v2));
    d->w1[0] = dw_twice((int32_t)((uint32_t)(uint16_t)o0 | ((uint32_t)o1 << 16)));
    d->w1[1] = dw_twice(__sxtb16(v2));
}

/* A 5- or 7-tap row r as mct_dsp_row57 operands, doubled: SXTB16 of r[0..3] gives (w0, w2) and (w1, w3), of
 * r[3..6] (7 taps) (w3, w5) and (w4, w6); no load past the row. */
static mct_dsp_row57 dw_row57(const int8_t *r, int32_t k) {
    const int32_t v = mct_ld32(r);
    mct_dsp_row57 o;
    o.w02 = dw_twice(__sxtb16(v));
    o.w13 = dw_twice(mct_sxtb16_ror8(v));
    if (k == 7) {
        const int32_t u = mct_ld32(r + 3);
        o.w46 = dw_twice(mct_sxtb16_ror8(u));
        o.w5 = 2 * (__sxtb16(u) >> 16);
    } else {
        o.w46 = (uint16_t)(2 * r[4]);
        o.w5 = 0;
    }
    return o;
}

/* Channel c's plan; 0 where this file does not apply: another kernel or stride, or requantization
 * constants outside mct_dsp_requantize's conditions (mct_rq_of's ``fast``) or a multiplier <= 0. */
static int dw_plan_of(const mct_conv *p, int32_t c, dw_plan *d) {
    const int32_t k = p->k, s = p->stride_w;
    if (p->kw != k || (k != 3 && k != 5 && k != 7) || (s != 1 && s != 2) || p->stride < 1) return 0;
    const mct_rq q = mct_rq_of(p, c);
    if (!q.fast || q.multiplier <= 0) return 0;
    const int8_t *w = dw_weights(&p->w, c);
    d->kind = (k == 3 ? DW_3S1 : (k == 5 ? DW_5S1 : DW_7S1)) + (s == 2);
    d->k = k, d->s = s;
    d->init = 2 * (q.bias - p->x_zero * mct_dsp_sum_i8(w, k * k));
    d->m = q.multiplier, d->nudge = q.nudge, d->right = q.right;
    if (k == 3)
        dw_plan3(w, d);
    else
        for (int32_t a = 0; a < k; ++a) d->row[a] = dw_row57(w + a * k, k);
    return 1;
}

/* The int8 output of a doubled sum s2 = 2 * (acc + bias): mct_dsp_requantize's integers in 5 instructions.
 * SMMLAR adds the nudge to the rounded high product x = SMMULR(s2, m); the sign of s2 stands in for x's
 * (the rounding's x >> 31): with m > 0 they differ only where x = 0 and s2 < 0, and there (nudge - 1) >> right
 * = nudge >> right (nudge = 2^(right-1) + y_zero * 2^right, right >= 1). */
static inline __attribute__((always_inline)) int8_t dw_requant(int32_t s2, int32_t m, int32_t nudge, int32_t right) {
    int32_t x;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(x) : "r"(s2), "r"(m), "r"(nudge));
    return (int8_t)__ssat((x + (s2 >> 31)) >> right, 8);
}

/* ---- kernels: ``rows`` output rows of n outputs each (n even), from the tap rows r[a] (each at its first
 * window's first byte; every byte read lies in the windows); between output rows the tap rows move on by
 * in_step bytes, y by y_step ---- */

typedef struct {
    const int8_t *const *r;
    int32_t n, rows, in_step, y_step;
} dw_job;

/* 3x3, stride 1: one load per tap row gives both windows (as mct_dsp_dw3_two); SMLAxy picks the middle taps'
 * halfwords. */
static void dw3_s1(const dw_plan *d, const dw_job *j, int8_t *y) {
    const int32_t a0 = d->w02[0], a1 = d->w02[1], a2 = d->w02[2], b01 = d->w1[0], b2 = d->w1[1];
    const int32_t init = d->init, m = d->m, nudge = d->nudge, right = d->right;
    for (int32_t row = 0; row < j->rows; ++row, y += j->y_step - j->n) {
        const int32_t at = row * j->in_step;
        const int8_t *r0 = j->r[0] + at, *r1 = j->r[1] + at, *r2 = j->r[2] + at;
        for (const int8_t *const end = r0 + j->n; r0 < end; r0 += 2, r1 += 2, r2 += 2, y += 2) {
            int32_t v = mct_ld32(r0), e = __sxtb16(v), o = mct_sxtb16_ror8(v);
            int32_t s0 = __smlabb(o, b01, __smlad(e, a0, init)), s1 = __smlatb(e, b01, __smlad(o, a0, init));
            v = mct_ld32(r1), e = __sxtb16(v), o = mct_sxtb16_ror8(v);
            s0 = __smlabt(o, b01, __smlad(e, a1, s0));
            s1 = __smlatt(e, b01, __smlad(o, a1, s1));
            v = mct_ld32(r2), e = __sxtb16(v), o = mct_sxtb16_ror8(v);
            s0 = __smlabt(o, b2, __smlad(e, a2, s0));
            s1 = __smlatt(e, b2, __smlad(o, a2, s1));
            y[0] = dw_requant(s0, m, nudge, right);
            y[1] = dw_requant(s1, m, nudge, right);
        }
    }
}

/* One 3-tap row of two stride-2 outputs: r[0..2] and r[2..4] (a word and a byte); the second's (r2, r4) pair
 * by PKHBT against (w0, w2) swapped. hi_: the middle tap is the high half of w1_. */
#define DW3_S2_ROW(r_, a_, w1_, hi_)                                                                     \
    {                                                                                                    \
        const int32_t v = mct_ld32(r_), b4 = (r_)[4], e = __sxtb16(v), o = mct_sxtb16_ror8(v);           \
        s0 = hi_ ? __smlabt(o, w1_, __smlad(e, a_, s0)) : __smlabb(o, w1_, __smlad(e, a_, s0));           \
        s1 = hi_ ? __smlatt(o, w1_, __smladx(mct_pkhbt(b4, e), a_, s1))                                  \
                 : __smlatb(o, w1_, __smladx(mct_pkhbt(b4, e), a_, s1));                                 \
    }

static void dw3_s2(const dw_plan *d, const dw_job *j, int8_t *y) {
    const int32_t a0 = d->w02[0], a1 = d->w02[1], a2 = d->w02[2], b01 = d->w1[0], b2 = d->w1[1];
    const int32_t init = d->init, m = d->m, nudge = d->nudge, right = d->right;
    for (int32_t row = 0; row < j->rows; ++row, y += j->y_step - j->n) {
        const int32_t at = row * j->in_step;
        const int8_t *r0 = j->r[0] + at, *r1 = j->r[1] + at, *r2 = j->r[2] + at;
        for (const int8_t *const end = r0 + 2 * j->n; r0 < end; r0 += 4, r1 += 4, r2 += 4, y += 2) {
            int32_t s0 = init, s1 = init;
            DW3_S2_ROW(r0, a0, b01, 0)
            DW3_S2_ROW(r1, a1, b01, 1)
            DW3_S2_ROW(r2, a2, b2, 1)
            y[0] = dw_requant(s0, m, nudge, right);
            y[1] = dw_requant(s1, m, nudge, right);
        }
    }
}
#undef DW3_S2_ROW

/* k x k (5 or 7), stride s: two outputs a step, one mct_dsp_row{5,7}_two(_s2) per tap row. Inlined with k
 * and s constants. */
static inline __attribute__((always_inline)) void dw_wide(const dw_plan *d, const dw_job *j, int8_t *y, int32_t k,
                                                          int32_t s) {
    for (int32_t row = 0; row < j->rows; ++row, y += j->y_step) {
        const int32_t at = row * j->in_step;
        for (int32_t i = 0; i < j->n; i += 2) {
            int32_t s0 = d->init, s1 = d->init;
            for (int32_t a = 0; a < k; ++a) {
                const int8_t *r = j->r[a] + at + i * s;
                if (k == 7 && s == 1) mct_dsp_row7_two(r, &d->row[a], &s0, &s1);
                else if (k == 7) mct_dsp_row7_two_s2(r, &d->row[a], &s0, &s1);
                else if (s == 1) mct_dsp_row5_two(r, &d->row[a], &s0, &s1);
                else mct_dsp_row5_two_s2(r, &d->row[a], &s0, &s1);
            }
            y[i] = dw_requant(s0, d->m, d->nudge, d->right);
            y[i + 1] = dw_requant(s1, d->m, d->nudge, d->right);
        }
    }
}

static void dw_run(const dw_plan *d, const dw_job *j, int8_t *y) {
    switch (d->kind) {
    case DW_3S1: dw3_s1(d, j, y); break;
    case DW_3S2: dw3_s2(d, j, y); break;
    case DW_5S1: dw_wide(d, j, y, 5, 1); break;
    case DW_5S2: dw_wide(d, j, y, 5, 2); break;
    case DW_7S1: dw_wide(d, j, y, 7, 1); break;
    default: dw_wide(d, j, y, 7, 2); break;
    }
}

/* One row of n outputs (any n) from the tap rows r (their bytes readable for whole steps): an odd last one
 * through a step of its own into a stack pair, so nothing past y + n is written. */
static void dw_run_row(const dw_plan *d, const int8_t *const *r, int32_t n, int8_t *y) {
    dw_job j = {r, n & ~1, 1, 0, 0};
    if (j.n > 0) dw_run(d, &j, y);
    if (n > j.n) {
        const int8_t *at[7];
        int8_t last[2];
        for (int32_t a = 0; a < d->k; ++a) at[a] = r[a] + j.n * d->s;
        j.r = at, j.n = 2;
        dw_run(d, &j, last);
        y[n - 1] = last[0];
    }
}

/* ---- padded copies ---- */

/* n bytes of the value zero, rounded up to whole words (the buffers are whole words), a word a store
 * (newlib-nano's memset stores a byte at a time). */
static void dw_fill(int8_t *dst, int32_t zero, int32_t n) {
    const uint32_t v = (uint32_t)(uint8_t)zero * 0x01010101u;
    for (int32_t i = 0; i < n; i += 4) {
        memcpy(dst + i, &v, 4);
        __asm__("" : "+r"(i)); /* keeps the loop: GCC would make it a memset call */
    }
}

/* n bytes copied a word at a time (unaligned loads and stores: allowed on ARMv7-M). The load is mct_ldr_post's
 * asm, so GCC does not turn the loop back into a memcpy call. */
static void dw_copy(int8_t *dst, const int8_t *src, int32_t n) {
    const int8_t *const end = src + (n & ~3);
    while (src < end) {
        const int32_t v = mct_ldr_post(&src);
        memcpy(dst, &v, 4);
        dst += 4;
    }
    for (int32_t i = 0; i < (n & 3); ++i) dst[i] = src[i];
}

/* The bytes a row of ``count`` outputs from column c0 reads, whole steps: columns c0 * s .. (padded). */
static int32_t dw_span(const dw_plan *d, int32_t count) { return (((count + 1) & ~1) - 1) * d->s + d->k; }

/* Output columns [c0, c0 + count) of a row through a padded copy of their windows in ``patch``: the input
 * columns they read, x_zero outside the input and in the NULL rows. */
static void dw_patched(const mct_conv *p, const dw_plan *d, const int8_t *const *rows, int32_t c0, int32_t count,
                       int8_t *y, int8_t *patch) {
    const int32_t width = dw_span(d, count), ix0 = c0 * d->s - p->pad_left;
    const int32_t from = mct_imax(ix0, 0), to = mct_imin(ix0 + width, p->in_w);
    const int8_t *r[7];
    dw_fill(patch, p->x_zero, d->k * width);
    for (int32_t a = 0; a < d->k; ++a) {
        r[a] = patch + a * width;
        if (rows[a] != NULL && to > from) dw_copy(patch + a * width + (from - ix0), rows[a] + from, to - from);
    }
    dw_run_row(d, r, count, y);
}

/* Mask bits of a row of outputs: inside the clamp is y strictly between -128 and 127 (qmin, qmax of the plan's
 * requantization: the clamped v is -128 exactly where v <= -128, 127 where v >= 127). */
static void dw_mask(const int8_t *y, int32_t n, uint8_t *mask, int32_t bit0) {
    for (int32_t i = 0; i < n; ++i) mct_put_bit(mask, bit0 + i, (uint8_t)((uint32_t)(y[i] + 127) < 254u));
}

int mct_dw_dsp_row(const mct_conv *p, int32_t c, const int8_t *const *rows, int8_t *y, uint8_t *mask,
                   int32_t bit0) {
    dw_plan d;
    const int32_t out_w = p->out_w, pad = p->pad_left;
    if (out_w > MCT_DW_ROW || pad < 0 || !dw_plan_of(p, c, &d) || d.k * dw_span(&d, out_w) > MCT_DW_PATCH) return 0;
    int8_t patch[MCT_DW_PATCH], row[MCT_DW_ROW];
    int8_t *out = y != NULL ? y : row;
    const int32_t s = d.s, k = d.k;
    /* direct columns [lo, hi): every window inside the input, from an even offset to the first edge */
    int32_t lo = mct_imin((pad + s - 1) / s, out_w), hi = lo, full = 1;
    if (p->in_w >= k) hi = mct_imax(lo, mct_imin((p->in_w - k + pad) / s + 1, out_w));
    for (int32_t a = 0; a < k; ++a) full &= rows[a] != NULL;
    lo = mct_imin((lo + 1) & ~1, hi);
    hi = lo + ((hi - lo) & ~1);
    if (!full || hi == lo) {
        dw_patched(p, &d, rows, 0, out_w, out, patch);
    } else {
        const int8_t *at[7];
        for (int32_t a = 0; a < k; ++a) at[a] = rows[a] + lo * s - pad;
        const dw_job j = {at, hi - lo, 1, 0, 0};
        if (lo > 0) dw_patched(p, &d, rows, 0, lo, out, patch);
        dw_run(&d, &j, out + lo);
        if (hi < out_w) dw_patched(p, &d, rows, hi, out_w - hi, out + hi, patch);
    }
    if (mask != NULL) dw_mask(out, out_w, mask, bit0);
    return 1;
}

int mct_dw_dsp_channel(const mct_conv *p, int32_t c, const int8_t *x_c, int8_t *y_c, uint8_t *mask, int32_t bit0) {
    dw_plan d;
    const int32_t top = p->pad, left = p->pad_left, out_w = p->out_w;
    if (top < 0 || left < 0 || out_w > MCT_DW_ROW || !dw_plan_of(p, c, &d)) return 0;
    const int32_t h = mct_imax(p->in_h + top, (p->out_h - 1) * p->stride + d.k);
    const int32_t w = mct_imax(p->in_w + left, dw_span(&d, out_w));
    if (h * w > MCT_DW_PLANE) return 0;
    int8_t plane[MCT_DW_PLANE], row[MCT_DW_ROW];
    dw_fill(plane, p->x_zero, h * w);
    for (int32_t r = 0; r < p->in_h; ++r) dw_copy(plane + (top + r) * w + left, x_c + r * p->in_w, p->in_w);
    const int8_t *at[7];
    if (y_c != NULL && (out_w & 1) == 0) { /* the plane at once: one call, the constants loaded once */
        for (int32_t a = 0; a < d.k; ++a) at[a] = plane + a * w;
        const dw_job j = {at, out_w, p->out_h, p->stride * w, out_w};
        dw_run(&d, &j, y_c);
        if (mask != NULL) dw_mask(y_c, out_w * p->out_h, mask, bit0);
        return 1;
    }
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        int8_t *out = y_c != NULL ? y_c + oy * out_w : row;
        for (int32_t a = 0; a < d.k; ++a) at[a] = plane + (oy * p->stride + a) * w;
        dw_run_row(&d, at, out_w, out);
        if (mask != NULL) dw_mask(out, out_w, mask, bit0 + oy * out_w);
    }
    return 1;
}

#else
typedef int mct_depthwise_empty; /* ISO C: a translation unit is never empty */
#endif
