/* mct_depthwise.c: the int8 depthwise forward on the Cortex-M DSP extension (kernels=dsp, a core without
 * Helium), the same integers as mct_kernels.c's portable rows.
 *
 * Why a path of its own: the row calls of mct_kernels.c redo a channel's setup (requantization constants,
 * weight operands, the zero point's weight sum) for every output row, take the edge columns and the rows
 * next to padding through bounded byte loops, and keep the sums in a stack buffer for a requantization loop
 * of its own; on the 4- to 16-wide rows of the late blocks that cost more than the multiply-accumulates.
 * Here a channel's setup is one ``dw_plan``, made once per output row of a row pipeline (mct_dw_dsp_rows: the
 * layer's checks and the padded buffer once for all channels of the row) or once per channel (mct_dw_dsp_channel,
 * a whole plane in one kernel call); every output column runs the same kernel on a padded copy of its tap rows
 * (x_zero outside the input and in padding rows: a padded tap adds (x_zero - x_zero) * w = 0, as the bounded
 * loops leave it out, since the zero point enters through the weight sum); each kernel step requantizes its
 * outputs in registers: 5x5 / 7x7 take four outputs a step in C, 5 instructions an output (dw_requant); 3x3
 * rows run in two asm functions (mct_dsp_depthwise.h: all registers theirs, one loop per shift, 4 an output).
 *
 * The sums are doubled: the plan's weights are 2w (|2w| <= 254 still fits SMLAD's halfwords) and every sum
 * starts at 2 * (bias - x_zero * sum w), so a sum is 2 * (acc + bias), SMMLAR's operand, without an add. */
#include "mct_kernels.h"

#include <stddef.h>

#if MCT_DSP && !MCT_MVE

#define MCT_DW_PATCH 1024 /* bytes of a row's padded copy of its k tap rows (stack) */
#define MCT_DW_ROW 256    /* longest output row of a row call (its stack row when y is NULL) */
#define MCT_DW_PLANE 2048 /* bytes of a channel's padded plane (stack; mct_depthwise_channel's limit too) */

enum { DW_3S1, DW_3S2, DW_5S1, DW_5S2, DW_7S1, DW_7S2 };

/* One channel's operands: kernel side k (k x k taps), stride s both ways. */
typedef struct {
    int32_t kind, k, s;
    /* 3x3: the weight operands (mct_dsp_dw3_s1_seg's k) in k3[0..4]; every kernel: the requantization's m, nudge
     * and right (dw_requant's), and init = 2 * (bias - x_zero * sum w), where every doubled sum starts, in
     * k3[MCT_DW3_M...] */
    int32_t k3[MCT_DW3_WORDS];
    mct_dsp_row57 row[7]; /* 5x5 / 7x7: per tap row, doubled (mct_dsp_row57's layout) */
} dw_plan;

/* Channel c's k * k weights (mct_weight_at(w, c, 0), inlined: a call per row was a visible cost). */
static inline const int8_t *dw_weights(const mct_weight *w, int32_t c) {
    if (w->sram != NULL && c < w->kept_rows && w->kept_cols > 0)
        return w->sram + (size_t)c * (size_t)w->kept_cols * (size_t)w->inner;
    return w->flash + (size_t)c * (size_t)w->cols * (size_t)w->inner;
}

/* Both halfwords doubled. */
static inline int32_t dw_twice(int32_t pair) { return (int32_t)__sadd16(pair, pair); }

/* The 3x3 operands a0, a1, a2, b01, b2 into k from three word loads: SXTB16 of w[0..3] is (w0, w2), of w[3..6]
 * (w3, w5), rotated (w4, w6); of w[5..8] rotated (w6, w8), unrotated (w5, w7) whose high half is row 2's middle
 * tap. Returns the doubled weights' sum (SMUAD of a pair against (1, 1) adds its halves). */
static int32_t dw_plan3(const int8_t *w, int32_t *k) {
    const int32_t v0 = mct_ld32(w), v1 = mct_ld32(w + 3), v2 = mct_ld32(w + 5);
    const int32_t o0 = mct_sxtb16_ror8(v0), o1 = mct_sxtb16_ror8(v1); /* (w1, w3), (w4, w6) */
    const int32_t a0 = dw_twice(__sxtb16(v0)), a1 = dw_twice(__sxtb16(v1)), a2 = dw_twice(mct_sxtb16_ror8(v2));
    const int32_t b01 = dw_twice(mct_pkhbt_lsl16(o0, o1)), b2 = dw_twice(__sxtb16(v2));
    k[0] = a0, k[1] = a1, k[2] = a2, k[3] = b01, k[4] = b2;
    const int32_t one = 0x00010001; /* SMLAD's chain: one instruction a pair */
    return __smlad(b01, one, __smlad(a2, one, __smlad(a1, one, __smuad(a0, one)))) + (b2 >> 16);
}

/* A 5- or 7-tap row r as mct_dsp_row57 operands at o, doubled: SXTB16 of r[0..3] gives (w0, w2) and (w1, w3), of
 * r[3..6] (7 taps) (w3, w5) and (w4, w6); no load past the row. Returns the doubled row's sum (as dw_plan3). */
static int32_t dw_row57(const int8_t *r, int32_t k, mct_dsp_row57 *out) {
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
    *out = o;
    return __smlad(o.w46, 0x00010001, __smlad(o.w13, 0x00010001, __smuad(o.w02, 0x00010001))) + o.w5;
}

/* Whether this file takes a layer, and channel c's plan (dw_plan_of); 0 where it does not apply: another kernel
 * or stride, or requantization
 * constants outside mct_dsp_requantize's conditions (mct_rq_of's ``fast``: a shift in [-22, -1], |bias| <= 2^29,
 * the int8 clamp and zero point; |sum| < 2^29 holds for k <= 7) or a multiplier <= 0. The conditions are
 * tested here, not through mct_rq_of: a row call makes a plan, and mct_rq_of's general form cost a third of
 * it. */
static int dw_layer_fits(const mct_conv *p) {
    const int32_t k = p->k, s = p->stride_w;
    return p->kw == k && (k == 3 || k == 5 || k == 7) && (s == 1 || s == 2) && p->stride >= 1 && p->qmin == -128
           && p->qmax == 127 && p->y_zero >= -128 && p->y_zero <= 127;
}

/* The layer's part of a plan (kind, k, s: once a call, not once a channel) where it fits (dw_layer_fits). */
static int dw_layer_plan(const mct_conv *p, dw_plan *d) {
    const int32_t k = p->k;
    d->kind = (k == 3 ? DW_3S1 : (k == 5 ? DW_5S1 : DW_7S1)) + (p->stride_w == 2);
    d->k = k, d->s = p->stride_w;
    return dw_layer_fits(p);
}

/* Channel c's part of a plan whose layer part is made (dw_layer_plan); 0 where its constants do not fit (the
 * ranges tested as unsigned differences: one compare each). */
static int dw_channel_plan(const mct_conv *p, int32_t c, dw_plan *d) {
    const int32_t k = d->k, shift = p->shift[c], bias = p->bias[c], m = p->multiplier[c];
    if (!mct_rq_channel_fast(p, c)) return 0;
    const int8_t *w = dw_weights(&p->w, c);
    d->k3[MCT_DW3_M] = m, d->k3[MCT_DW3_RIGHT] = -shift;
    d->k3[MCT_DW3_NUDGE] = mct_rq_nudge(-shift, p->y_zero);
    int32_t wsum2 = 0; /* 2 * sum w */
    if (k == 3)
        wsum2 = dw_plan3(w, d->k3);
    else
        for (int32_t a = 0; a < k; ++a) wsum2 += dw_row57(w + a * k, k, &d->row[a]);
    d->k3[MCT_DW3_INIT] = 2 * bias - p->x_zero * wsum2;
    return 1;
}

static int dw_plan_of(const mct_conv *p, int32_t c, dw_plan *d) {
    return dw_layer_plan(p, d) && dw_channel_plan(p, c, d);
}

/* Channel c's plan made by the generator for a frozen conv (p->dsp_plan: dsp_plans.depthwise_plan writes each
 * channel's dw_plan up to its last tap row, the rest never read: 12 words a 3x3 channel, 12 + 4k else). */
_Static_assert(sizeof(dw_plan) == 40 * sizeof(int32_t) && offsetof(dw_plan, row) == 12 * sizeof(int32_t),
               "dsp_plans.dw_plan_words");
static const dw_plan *dw_generated(const mct_conv *p, int32_t c) {
    return (const dw_plan *)(const void *)(p->dsp_plan + c * (12 + (p->k == 3 ? 0 : 4 * p->k)));
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

/* ---- kernels: segments of output rows, two outputs a step ---- */

/* ``rows`` output rows of n outputs each (n even) from the tap rows r[a] (each at its first window's first
 * byte; every byte read lies in the windows; r[a] = r[0] + a * w: rows of a padded buffer, w bytes apart, as the
 * stride-1 asm reads them); from one output row to the next the tap rows move on by in_step bytes, y by y_step.
 * A kernel call runs a few segments (a row's even part and an odd last pair; a plane's rows): its constants
 * are loaded once. */
typedef struct {
    const int8_t *r[7];
    int8_t *y;
    int32_t n, rows, in_step, y_step;
} dw_seg;

MCT_DW3_S1_DEFINE; /* mct_dsp_dw3_s1_seg and mct_dsp_dw3_s2_seg, which read a dw_seg at these offsets: */
MCT_DW3_S2_DEFINE;
_Static_assert(offsetof(dw_seg, r) == MCT_DW3_SEG_R && offsetof(dw_seg, y) == MCT_DW3_SEG_Y
                   && offsetof(dw_seg, n) == MCT_DW3_SEG_Y + 4 && offsetof(dw_seg, rows) == MCT_DW3_SEG_ROWS
                   && offsetof(dw_seg, in_step) == MCT_DW3_SEG_ROWS + 4
                   && offsetof(dw_seg, y_step) == MCT_DW3_SEG_ROWS + 8,
               "mct_dsp_dw3_s{1,2}_seg's offsets");

/* 3x3: stride 1 (the tap rows w bytes apart: dw_seg_of's rows are a padded buffer's) or 2, the segments' rows
 * in one call each. */
static inline void dw3_run(const dw_plan *d, const dw_seg *seg, int32_t count) {
    for (; count > 0; --count, ++seg)
        if (seg->n > 0 && seg->rows > 0) {
            if (d->s == 1)
                mct_dsp_dw3_s1_seg(seg, d->k3);
            else
                mct_dsp_dw3_s2_seg(seg, d->k3);
        }
}

/* k x k (5 or 7), stride s: four outputs a step, one mct_dsp_row{5,7}_four(_s2) per tap row (the weights read
 * once for four outputs), a last pair by mct_dsp_row{5,7}_two(_s2). Inlined with k and s constants. */
static inline __attribute__((always_inline)) void dw_wide(const dw_plan *d, const dw_seg *seg, int32_t count,
                                                          int32_t k, int32_t s) {
    /* locals, not d's fields: y's int8 stores may alias *d, so GCC reloaded m, nudge and right for every output */
    const int32_t init = d->k3[MCT_DW3_INIT], m = d->k3[MCT_DW3_M], nudge = d->k3[MCT_DW3_NUDGE];
    const int32_t right = d->k3[MCT_DW3_RIGHT];
    for (; count > 0; --count, ++seg)
        for (int32_t row = 0; row < seg->rows; ++row) {
            const int32_t at = row * seg->in_step;
            int8_t *y = seg->y + row * seg->y_step;
            int32_t i = 0;
            for (; i + 4 <= seg->n; i += 4) {
                int32_t sum[4] = {init, init, init, init};
#pragma GCC unroll 7
                for (int32_t a = 0; a < k; ++a) {
                    const int8_t *r = seg->r[a] + at + i * s;
                    if (k == 7 && s == 1) mct_dsp_row7_four(r, &d->row[a], sum);
                    else if (k == 7) mct_dsp_row7_four_s2(r, &d->row[a], sum);
                    else if (s == 1) mct_dsp_row5_four(r, &d->row[a], sum);
                    else mct_dsp_row5_four_s2(r, &d->row[a], sum);
                }
#pragma GCC unroll 4
                for (int32_t j = 0; j < 4; ++j) y[i + j] = dw_requant(sum[j], m, nudge, right);
            }
            if (i < seg->n) { /* n = 2 mod 4 */
                int32_t s0 = init, s1 = init;
#pragma GCC unroll 7
                for (int32_t a = 0; a < k; ++a) {
                    const int8_t *r = seg->r[a] + at + i * s;
                    if (k == 7 && s == 1) mct_dsp_row7_two(r, &d->row[a], &s0, &s1);
                    else if (k == 7) mct_dsp_row7_two_s2(r, &d->row[a], &s0, &s1);
                    else if (s == 1) mct_dsp_row5_two(r, &d->row[a], &s0, &s1);
                    else mct_dsp_row5_two_s2(r, &d->row[a], &s0, &s1);
                }
                y[i] = dw_requant(s0, m, nudge, right);
                y[i + 1] = dw_requant(s1, m, nudge, right);
            }
        }
}

static __attribute__((noinline)) void dw_run_wide(const dw_plan *d, const dw_seg *seg, int32_t count) {
    switch (d->kind) {
    case DW_5S1: dw_wide(d, seg, count, 5, 1); break;
    case DW_5S2: dw_wide(d, seg, count, 5, 2); break;
    case DW_7S1: dw_wide(d, seg, count, 7, 1); break;
    default: dw_wide(d, seg, count, 7, 2); break;
    }
}

/* The segments on the plan's kernel: 3x3 straight to the asm (no call between: the wide kernels' frame is large). */
static inline void dw_run(const dw_plan *d, const dw_seg *seg, int32_t count) {
    if (d->k == 3)
        dw3_run(d, seg, count);
    else
        dw_run_wide(d, seg, count);
}

/* A one-row segment of n outputs (n even) from the k tap rows r, each moved on by ``from`` bytes. */
static void dw_seg_of(dw_seg *seg, int32_t k, const int8_t *const *r, int32_t from, int32_t n, int8_t *y) {
    for (int32_t a = 0; a < k; ++a) {
        seg->r[a] = r[a] + from;
        __asm__("" : "+r"(a)); /* keeps the loop: GCC would make it a memcpy call where from is 0 */
    }
    seg->y = y, seg->n = n, seg->rows = 1, seg->in_step = 0, seg->y_step = 0;
}

/* One row of n outputs (any n) from the tap rows r (their bytes readable for whole steps): an odd last one
 * through a step of its own into a stack pair, so nothing past y + n is written. */
static void dw_run_row(const dw_plan *d, const int8_t *const *r, int32_t n, int8_t *y) {
    dw_seg seg[2];
    int8_t last[2];
    const int32_t even = n & ~1;
    dw_seg_of(&seg[0], d->k, r, 0, even, y);
    if (n > even) dw_seg_of(&seg[1], d->k, r, even * d->s, 2, last);
    dw_run(d, seg, 1 + (n > even));
    if (n > even) y[n - 1] = last[0];
}

/* ---- padded copies ---- */

/* n bytes of the value zero; word stores for whole words. The empty asm keeps the loops: GCC would make them
 * memset calls (newlib-nano's stores a byte at a time, after a call). */
static void dw_fill(int8_t *dst, int32_t zero, int32_t n) {
    const uint32_t v = (uint32_t)(uint8_t)zero * 0x01010101u;
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(dst + i, &v, 4);
        memcpy(dst + i + 4, &v, 4);
        __asm__("" : "+r"(i));
    }
    for (; i < n; ++i) {
        dst[i] = (int8_t)zero;
        __asm__("" : "+r"(i));
    }
}

/* The first n bytes (rounded up to 8) of a word-aligned buffer set to zero, two words a store (STRD). */
static void dw_fill_pairs(int32_t *buffer, int32_t n, int32_t zero) {
    const int32_t v = (int32_t)((uint32_t)(uint8_t)zero * 0x01010101u);
    for (int32_t *const end = buffer + (n + 7) / 8 * 2; buffer < end; buffer += 2) {
        buffer[0] = v, buffer[1] = v;
        __asm__("" : "+r"(buffer)); /* keeps the loop: GCC would make it a memset call */
    }
}

/* n bytes copied: 16 a step by LDM / STM where both ends are word-aligned (the ring rows of the row pipelines and
 * the planes are; the padded copies are laid out so), else a word a step (unaligned LDR / STR: allowed on
 * ARMv7-M; the loads are mct_ldr_post's asm, so GCC does not turn the loop back into a memcpy call). */
static inline __attribute__((always_inline)) void dw_copy(int8_t *dst, const int8_t *src, int32_t n) {
    const int8_t *const end = src + n;
    if ((((uintptr_t)dst | (uintptr_t)src) & 3) == 0)
        while (end - src >= 16)
            __asm__ volatile("ldmia %1!, {r4, r5, r6, r7}\n\tstmia %0!, {r4, r5, r6, r7}"
                             : "+r"(dst), "+r"(src)
                             :
                             : "r4", "r5", "r6", "r7", "memory");
    while (end - src >= 4) {
        const int32_t v = mct_ldr_post(&src);
        memcpy(dst, &v, 4);
        dst += 4;
    }
    while (src < end) *dst++ = *src++;
}

/* n words of the byte ``zero`` from p on (the empty asm keeps the loop: GCC would make it a memset call). */
static inline void dw_fill_words(int32_t *p, int32_t n, int32_t zero) {
    const int32_t v = (int32_t)((uint32_t)(uint8_t)zero * 0x01010101u);
    for (int32_t *const end = p + n; p < end; ++p) {
        *p = v;
        __asm__("" : "+r"(p));
    }
}

/* The bytes a row of n outputs reads, whole steps (padded columns). */
static int32_t dw_span(const dw_plan *d, int32_t n) { return (((n + 1) & ~1) - 1) * d->s + d->k; }

/* Mask bits of a row of outputs: inside the clamp is y strictly between -128 and 127 (qmin, qmax of the plan's
 * requantization: the clamped v is -128 exactly where v <= -128, 127 where v >= 127). */
static void dw_mask(const int8_t *y, int32_t n, uint8_t *mask, int32_t bit0) {
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) { /* 16 bits a read-modify-write of the mask's bytes (mct_put_bit's: one a bit) */
        uint32_t bits = 0;
#pragma GCC unroll 4
        for (int32_t j = 0; j < 16; j += 4) bits |= mct_dsp_inside4(mct_ld32(y + i + j)) << j;
        mct_dsp_or_bits(mask, bit0 + i, bits, 16);
    }
    for (; i + 4 <= n; i += 4) mct_dsp_or_bits(mask, bit0 + i, mct_dsp_inside4(mct_ld32(y + i)), 4);
    for (; i < n; ++i) mct_put_bit(mask, bit0 + i, (uint8_t)((uint32_t)(y[i] + 127) < 254u));
}

/* An input row of n bytes (NULL: a padding row) as a padded row of w bytes at dst: ``left`` bytes of zero, the
 * row, zero up to w, the zero in whole words (up to 3 bytes past w: the next row's bytes, written after, or
 * the buffer's slack). dst + left is word-aligned (dw_base), so an aligned input row copies by LDM / STM. */
static inline __attribute__((always_inline)) void dw_pad_row(int8_t *dst, const int8_t *src, int32_t n, int32_t left,
                                                             int32_t w, int32_t zero) {
    const uint32_t v = (uint32_t)(uint8_t)zero * 0x01010101u;
    if (src == NULL) {
        dw_fill(dst, zero, w);
        return;
    }
    for (int32_t i = 0; i < left; i += 4) {
        memcpy(dst + i, &v, 4);
        __asm__("" : "+r"(i)); /* keeps the loop: GCC would make it a memset call */
    }
    dw_copy(dst + left, src, n);
    for (int32_t i = left + n; i < w; i += 4) {
        memcpy(dst + i, &v, 4);
        __asm__("" : "+r"(i));
    }
}

/* Where a padded copy's first row starts in an int32-aligned buffer: its input bytes word-aligned. */
static int8_t *dw_base(int32_t *buffer, int32_t left) { return (int8_t *)(void *)buffer + ((4 - (left & 3)) & 3); }

/* A row call: its k tap rows copied padded (a few hundred bytes: costs less than taking the edge columns and
 * the padding rows apart), then one kernel run over the whole row. */
int mct_dw_dsp_row(const mct_conv *p, int32_t c, const int8_t *const *rows, int8_t *y, uint8_t *mask,
                   int32_t bit0) {
    dw_plan d;
    const int32_t out_w = p->out_w, left = p->pad_left;
    if (out_w > MCT_DW_ROW || left < 0 || !dw_plan_of(p, c, &d)) return 0;
    const int32_t w = (mct_imax(p->in_w + left, dw_span(&d, out_w)) + 3) & ~3;
    if (d.k * w + 8 > MCT_DW_PATCH) return 0; /* 3 bytes of dw_base's offset, 3 of dw_pad_row's last word */
    int32_t padded[MCT_DW_PATCH / 4];
    int8_t row[MCT_DW_ROW], *base = dw_base(padded, left);
    const int8_t *at[7];
    for (int32_t a = 0; a < d.k; ++a) {
        dw_pad_row(base + a * w, rows[a], p->in_w, left, w, p->x_zero);
        at[a] = base + a * w;
    }
    int8_t *out = y != NULL ? y : row;
    dw_run_row(&d, at, out_w, out);
    if (mask != NULL) dw_mask(out, out_w, mask, bit0);
    return 1;
}

/* The rows of channels [c0, c1) of a row pipeline's event: one padded buffer for all of them, its padding (and
 * its padding rows) written once, each channel's tap rows copied into it; the layer's checks once; each
 * channel's plan the generator's (a frozen conv: no dw_channel_plan a channel a row) or made here. */
int mct_dw_dsp_rows(const mct_conv *p, int32_t c0, int32_t c1, const int8_t *const *rows, int32_t x_cs, int8_t *y,
                    int32_t y_cs, uint8_t *mask, int32_t bit0, int32_t bit_cs) {
    const int32_t out_w = p->out_w, left = p->pad_left, k = p->k, n = p->in_w;
    dw_plan d;
    if (out_w > MCT_DW_ROW || left < 0 || !dw_layer_plan(p, &d)) return 0;
    const int32_t w = (mct_imax(n + left, ((((out_w + 1) & ~1) - 1) * p->stride_w + k)) + 3) & ~3;
    if (k * w + 8 > MCT_DW_PATCH) return 0;
    int32_t padded[MCT_DW_PATCH / 4];
    int8_t *base = dw_base(padded, left);
    const int8_t *at[7];
    dw_fill(base, p->x_zero, k * w);
    for (int32_t a = 0; a < k; ++a) at[a] = base + a * w;
    dw_seg seg[2]; /* the row's even part, an odd last output into ``last`` (dw_run_row's) */
    int8_t last[2];
    const int32_t even = out_w & ~1;
    /* the tap rows inside the input: channel j's copies from src[i] + j * x_cs to dst[i] */
    const int8_t *src[7];
    int8_t *dst[7];
    int32_t copies = 0;
    uintptr_t ends = (uintptr_t)n | (uintptr_t)x_cs; /* every copy word-aligned (the ring's rows are) */
    for (int32_t a = 0; a < k; ++a)
        if (rows[a] != NULL) src[copies] = rows[a], dst[copies++] = base + a * w + left, ends |= (uintptr_t)rows[a];
    const int aligned = (ends & 3) == 0;
    dw_seg_of(&seg[0], k, at, 0, even, y);
    if (out_w > even) dw_seg_of(&seg[1], k, at, even * p->stride_w, 2, last);
    for (int32_t c = c0; c < c1; ++c) {
        const int32_t j = c - c0;
        const dw_plan *plan = p->dsp_plan != NULL ? dw_generated(p, c) : (dw_channel_plan(p, c, &d) ? &d : NULL);
        if (plan == NULL) { /* the portable row */
            const int8_t *r[7];
            for (int32_t a = 0; a < k; ++a) r[a] = rows[a] != NULL ? rows[a] + j * x_cs : NULL;
            mct_depthwise_row(p, c, r, y + j * y_cs, mask, bit0 + j * bit_cs);
            continue;
        }
        for (int32_t i = 0; i < copies; ++i)
            if (aligned)
                mct_dsp_copy_words(dst[i], src[i] + j * x_cs, n);
            else
                dw_copy(dst[i], src[i] + j * x_cs, n);
        seg[0].y = y + j * y_cs;
        dw_run(plan, seg, 1 + (out_w > even));
        if (out_w > even) y[j * y_cs + out_w - 1] = last[0];
        if (mask != NULL) dw_mask(y + j * y_cs, out_w, mask, bit0 + j * bit_cs);
    }
    return 1;
}

/* The padded plane of h rows of w bytes at ``plane`` in ``buffer`` from a channel x_c whose rows are whole words
 * and word-aligned: only the padding is filled (the rows above, after each row its gap up to the next row's
 * first byte, the rows below), the rows copied a word a step; filling the whole plane first wrote most bytes
 * twice. */
static void dw_plane_words(const mct_conv *p, const int8_t *x_c, int32_t *buffer, int8_t *plane, int32_t h,
                           int32_t w) {
    const int32_t n = p->in_w, gap = (w - n) >> 2; /* w - n: a multiple of 4 */
    const int32_t v = (int32_t)((uint32_t)(uint8_t)p->x_zero * 0x01010101u);
    int32_t *dst = (int32_t *)(void *)(plane + p->pad * w + p->pad_left); /* word-aligned (dw_base) */
    dw_fill_words(buffer, (int32_t)(dst - buffer), p->x_zero);
    for (int32_t r = 0; r < p->in_h; ++r) { /* a row and its gap: w bytes, the next row's first byte after */
        for (const int8_t *const end = x_c + n; x_c < end;) *dst++ = mct_ldr_post(&x_c);
        for (int32_t g = 0; g < gap; ++g) {
            *dst++ = v;
            __asm__("" : "+r"(dst)); /* keeps the loop: GCC would make it a memset call */
        }
    }
    const int32_t below = (int32_t)(plane + h * w - (int8_t *)(void *)dst); /* bytes left to the plane's end */
    if (below > 0) dw_fill_words(dst, (below + 3) >> 2, p->x_zero);
}

/* A channel: its plane copied padded, then one kernel run over the plane (its output rows back to back; row
 * by row where the width is odd or y is NULL). */
int mct_dw_dsp_channel(const mct_conv *p, int32_t c, const int8_t *x_c, int8_t *y_c, uint8_t *mask, int32_t bit0) {
    dw_plan d;
    const int32_t top = p->pad, left = p->pad_left, out_w = p->out_w;
    if (top < 0 || left < 0 || out_w > MCT_DW_ROW || !dw_plan_of(p, c, &d)) return 0;
    const int32_t h = mct_imax(p->in_h + top, (p->out_h - 1) * p->stride + d.k);
    const int32_t w = (mct_imax(p->in_w + left, dw_span(&d, out_w)) + 3) & ~3;
    if (h * w + 8 > MCT_DW_PLANE) return 0; /* as in mct_dw_dsp_row */
    int32_t buffer[MCT_DW_PLANE / 4];
    int8_t row[MCT_DW_ROW], *plane = dw_base(buffer, left);
    const int8_t *at[7];
    if (((p->in_w | (int32_t)(uintptr_t)x_c) & 3) == 0) { /* the planes' rows: word-aligned, whole words */
        dw_plane_words(p, x_c, buffer, plane, h, w);
    } else { /* a small plane: one run of stores beats padding row by row (from the aligned start: STRD) */
        dw_fill_pairs(buffer, (int32_t)(plane - (int8_t *)(void *)buffer) + h * w, p->x_zero);
        for (int32_t r = 0; r < p->in_h; ++r) dw_copy(plane + (top + r) * w + left, x_c + r * p->in_w, p->in_w);
    }
    for (int32_t a = 0; a < d.k; ++a) at[a] = plane + a * w;
    dw_seg seg;
    if (y_c != NULL && (out_w & 1) == 0) { /* one kernel run over the plane */
        dw_seg_of(&seg, d.k, at, 0, out_w, y_c);
        seg.rows = p->out_h, seg.in_step = p->stride * w, seg.y_step = out_w;
        dw_run(&d, &seg, 1);
        if (mask != NULL) dw_mask(y_c, out_w * p->out_h, mask, bit0);
        return 1;
    }
    /* A mask (the training forward; without y: its recomputation) of an odd width or without y: the outputs in
     * the buffer's end past the plane (and its fill's last word: 8 bytes) where they fit, rows of n (even)
     * outputs (the windows of an odd width's extra output are padded: dw_span), one kernel run, not one a row;
     * then each row copied into y, its mask made. (Without a mask, odd rows measured cheaper row by row.) */
    const int32_t n = (out_w + 1) & ~1;
    int8_t *spare = plane + h * w + 8;
    if ((y_c == NULL || mask != NULL) && spare + n * p->out_h <= (int8_t *)(void *)buffer + sizeof buffer) {
        dw_seg_of(&seg, d.k, at, 0, n, spare);
        seg.rows = p->out_h, seg.in_step = p->stride * w, seg.y_step = n;
        dw_run(&d, &seg, 1);
        if (n == out_w) { /* no y (else the first case): the rows back to back, one mask run */
            if (mask != NULL) dw_mask(spare, out_w * p->out_h, mask, bit0);
            return 1;
        }
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            if (y_c != NULL) dw_copy(y_c + oy * out_w, spare + oy * n, out_w);
            if (mask != NULL) dw_mask(spare + oy * n, out_w, mask, bit0 + oy * out_w);
        }
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
