/* mct_pointwise.c: the 1x1 convs of the forward (mct_kernels.h: mct_pointwise, mct_pointwise_channel) and
 * the fused expand + depthwise op (mct_pointwise_depthwise). Why a file of its own: the DSP build's widened
 * 1x1 conv (pointwise_wide, mct_dsp.h) took mct_kernels.c past the 500 lines a file may have; the rest of
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
/* The widened input (mct_dsp_widen) lives in a fixed stack buffer of MCT_PW_WIDE_WORDS words, not in the
 * arena: its size is bounded whatever the model (a 1x1 conv with more input channels than it holds for one
 * position pair takes the unbuffered path), so the firmware's measured stack high-water mark counts it
 * and the 4 KB stack reserve (cortex_m7.STACK_RESERVE) covers it without the memory planner knowing of it.
 * 2 KB: one position pair of up to 512 input channels, or a whole 64-wide row of 16. */
#define MCT_PW_WIDE_WORDS 512
/* Fewer output channels than this per call: one channel on the widened input would pay for a pair's loop
 * (mct_dsp_pw_one instead); from two on, widening once beat mct_dsp_pw_two (3 channels: 1.75 instructions a
 * MAC instead of 2.0, Proxyless' row windows of 2-3 expanded channels: -3.3 M an inference). */
#define MCT_PW_WIDE_MIN_OUT 2

/* A pair of weight rows (same SRAM/Flash split) over the widened groups: groups [0, lo_groups) from the
 * SRAM slice, [hi_g0, hi_g0 + hi_groups) from Flash, and at most two groups gathered byte by byte (the one
 * straddling the split, the last one of an in_c not a multiple of 4). */
typedef struct {
    const int8_t *lo, *hi;
    int32_t lo_d, hi_d, lo_groups, hi_g0, hi_groups, n_gather, gather_g[2], gather_u[2], gather_v[2];
} pw_runs;

static void pw_gather(pw_runs *w, const mct_weight_row *r0, const mct_weight_row *r1, int32_t in_c, int32_t g) {
    int8_t u[4], v[4];
    for (int32_t k = 0; k < 4; ++k) {
        const int32_t c = 4 * g + k;
        u[k] = c < in_c ? mct_row_at(r0, c) : 0;
        v[k] = c < in_c ? mct_row_at(r1, c) : 0;
    }
    w->gather_g[w->n_gather] = g;
    w->gather_u[w->n_gather] = mct_dsp_gather_w(u);
    w->gather_v[w->n_gather++] = mct_dsp_gather_w(v);
}

static pw_runs pw_runs_of(const mct_weight_row *r0, const mct_weight_row *r1, int32_t in_c) {
    pw_runs w;
    const int32_t split = mct_imin(r0->split, in_c), full = in_c >> 2;
    w.lo = r0->lo;
    w.lo_d = (int32_t)(r1->lo - r0->lo);
    w.lo_groups = split >> 2;
    w.hi_g0 = (split + 3) >> 2;
    w.hi = r0->hi + 4 * w.hi_g0;
    w.hi_d = (int32_t)(r1->hi - r0->hi);
    w.hi_groups = mct_imax(0, full - w.hi_g0);
    w.n_gather = 0;
    if (split & 3) pw_gather(&w, r0, r1, in_c, split >> 2);
    if ((in_c & 3) && (full != split >> 2 || !(split & 3))) pw_gather(&w, r0, r1, in_c, full);
    return w;
}

/* The sums of the pair's two rows at ``pairs`` position pairs of a widened block (pair j's words at
 * xb + j * pair_words) into s[4j..4j+3] = (a(q), a(q+1), b(q), b(q+1)): kept apart from the requantization,
 * so that neither loop runs out of registers. */
static void pw_sums(const int32_t *xb, int32_t pair_words, int32_t pairs, const pw_runs *w, int32_t *s) {
    if (w->n_gather == 0 && w->lo_groups == 0) { /* one run: the weights all in Flash (or SRAM, below) */
        for (int32_t j = 0; j < pairs; ++j, xb += pair_words, s += 4) {
            s[0] = s[1] = s[2] = s[3] = 0;
            mct_dsp_pw_wide(xb + MCT_DSP_GROUP_WORDS * w->hi_g0, w->hi, w->hi_d, w->hi_groups, s);
        }
        return;
    }
    for (int32_t j = 0; j < pairs; ++j, xb += pair_words, s += 4) {
        s[0] = s[1] = s[2] = s[3] = 0;
        if (w->lo_groups > 0) mct_dsp_pw_wide(xb, w->lo, w->lo_d, w->lo_groups, s);
        for (int32_t k = 0; k < w->n_gather; ++k)
            mct_dsp_pw_group(xb + MCT_DSP_GROUP_WORDS * w->gather_g[k], w->gather_u[k], w->gather_v[k], s);
        if (w->hi_groups > 0) mct_dsp_pw_wide(xb + MCT_DSP_GROUP_WORDS * w->hi_g0, w->hi, w->hi_d, w->hi_groups, s);
    }
}

/* A pair's weights over all groups, unpacked (mct_dsp_unpack_group) into out[4g..4g+3]: the runs of pw_runs
 * and its gathered groups in place. */
static void pw_unpack(const pw_runs *w, int32_t *out) {
    mct_dsp_unpack_w(w->lo, w->lo_d, w->lo_groups, out);
    for (int32_t k = 0; k < w->n_gather; ++k)
        mct_dsp_unpack_group(w->gather_u[k], w->gather_v[k], out + MCT_DSP_GROUP_WORDS * w->gather_g[k]);
    mct_dsp_unpack_w(w->hi, w->hi_d, w->hi_groups, out + MCT_DSP_GROUP_WORDS * w->hi_g0);
}

/* pw_sums on a pair's unpacked weights (``groups`` in all). */
static void pw_sums_unpacked(const int32_t *xb, int32_t pair_words, int32_t pairs, const int32_t *wb, int32_t groups,
                             int32_t *s) {
    for (int32_t j = 0; j < pairs; ++j, xb += pair_words, s += 4) mct_dsp_pw_unpacked(xb, wb, groups, s);
}

/* One output channel's 2 * pairs outputs from s[4j], s[4j + 1] (pw_sums' layout, s offset by 2: the second
 * row's): the constants in registers, no mask (else mct_rq_out, which also takes the rare slow case). */
static void pw_requant(const mct_rq *q, const int32_t *s, int32_t pairs, int8_t *y, uint8_t *mask, int32_t bit) {
    if (mask != NULL || !q->fast) {
        for (int32_t j = 0; j < pairs; ++j) {
            mct_rq_out(q, s[4 * j], y + 2 * j, mask, bit + 2 * j);
            mct_rq_out(q, s[4 * j + 1], y + 2 * j + 1, mask, bit + 2 * j + 1);
        }
        return;
    }
    mct_dsp_requant_pairs(s, 4, pairs, q->bias2, q->multiplier, q->nudge, q->right, y);
}

/* Position pairs whose sums are held at once (pw_sums, pw_requant): 256 bytes of stack. */
#define MCT_PW_SUM_PAIRS 16
/* Fewest position pairs a block for which a pair's weights are unpacked once (pw_unpack: about 10 instructions
 * a group, each pair then saves 4); they share the widened input's buffer (its last pair_words words), so the
 * stack does not grow. */
#define MCT_PW_UNPACK_MIN_PAIRS 3

/* The requantization constants of one output channel in mct_rq_of's fast case (mct_dsp_requant_pairs'). */
typedef struct {
    int32_t bias2, multiplier, nudge, right;
} pw_fast_rq;

/* Most output channels a planned call takes (pointwise_planned): their constants are 256 bytes of stack. */
#define MCT_PW_PLAN_OUT 16

/* The plan of output channels [o0, o1): each channel's requantization constants and each channel pair's weights
 * unpacked (pw_unpack; an odd last channel paired with itself), pair k's at unpacked + k * pair_words. 0 (no
 * plan) where a channel is not in the fast case or the two rows of a pair are split differently. */
static int32_t pw_plan(const mct_conv *p, int32_t o0, int32_t o1, int32_t pair_words, pw_fast_rq *rq,
                       int32_t *unpacked) {
    for (int32_t o = o0; o < o1; ++o) {
        const mct_rq q = mct_rq_of(p, o);
        if (!q.fast) return 0;
        rq[o - o0] = (pw_fast_rq){q.bias2, q.multiplier, q.nudge, q.right};
    }
    for (int32_t o = o0; o < o1; o += 2, unpacked += pair_words) {
        const mct_weight_row r0 = mct_row_of(&p->w, o), r1 = o + 1 < o1 ? mct_row_of(&p->w, o + 1) : r0;
        if (r1.split != r0.split) return 0;
        const pw_runs w = pw_runs_of(&r0, &r1, p->in_c);
        pw_unpack(&w, unpacked);
    }
    return 1;
}

#define MCT_PW_FIXED(g_)                                                          \
    case g_:                                                                      \
        if (two)                                                                  \
            mct_dsp_pw_unpacked_fixed(xb, wb, g_, 1, pairs, sums);                \
        else                                                                      \
            mct_dsp_pw_unpacked_fixed(xb, wb, g_, 0, pairs, sums);                \
        return;

/* The sums of a planned channel pair (``two``; else its first channel alone) at ``pairs`` widened position pairs,
 * pw_sums' layout: the row pipelines' few input channels (up to 24) on unrolled groups. */
static __attribute__((noinline)) void pw_planned_sums(const int32_t *xb, const int32_t *wb, int32_t groups,
                                                      int32_t two, int32_t pairs, int32_t *sums) {
    switch (groups) {
        MCT_PW_FIXED(1) MCT_PW_FIXED(2) MCT_PW_FIXED(3) MCT_PW_FIXED(4) MCT_PW_FIXED(5) MCT_PW_FIXED(6)
    default:
        break;
    }
    const int32_t pair_words = groups * MCT_DSP_GROUP_WORDS;
    if (two)
        pw_sums_unpacked(xb, pair_words, pairs, wb, groups, sums);
    else
        for (int32_t i = 0; i < pairs; ++i) mct_dsp_pw_unpacked_one(xb + i * pair_words, wb, groups, sums + 4 * i);
}
#undef MCT_PW_FIXED

/* One planned channel pair (``two``; else its first channel alone) at ``pairs`` widened position pairs: the sums
 * (pw_planned_sums) then 2 outputs at a time into ya, yb. */
static void pw_planned_pair(const int32_t *xb, int32_t pair_words, int32_t pairs, const int32_t *wb, int32_t groups,
                            const pw_fast_rq *rq, int32_t two, int8_t *ya, int8_t *yb, int32_t *sums) {
    for (int32_t j = 0; j < pairs; j += MCT_PW_SUM_PAIRS, xb += MCT_PW_SUM_PAIRS * pair_words) {
        const int32_t m = mct_imin(MCT_PW_SUM_PAIRS, pairs - j);
        pw_planned_sums(xb, wb, groups, two, m, sums);
        mct_dsp_requant_pairs(sums, 4, m, rq[0].bias2, rq[0].multiplier, rq[0].nudge, rq[0].right, ya + 2 * j);
        if (two)
            mct_dsp_requant_pairs(sums + 2, 4, m, rq[1].bias2, rq[1].multiplier, rq[1].nudge, rq[1].right, yb + 2 * j);
    }
}

/* Output channels [o0, o1) (at most MCT_PW_PLAN_OUT) at the positions [0, 2 * (n / 2)) of ``rows`` input rows
 * (x_rows[a], NULL: skipped; output row a at y + a * y_row, ``last`` as in out_row: one row only), no mask: the
 * plan (pw_plan) is made once for all rows, not once per row and block as in pointwise_wide (the row pipelines
 * call the 1x1 conv once a row with few channels: the setup outweighed the sums). Returns the positions done
 * per row (0: not taken). */
static __attribute__((noinline)) int32_t pointwise_planned(const mct_conv *p, int32_t o0, int32_t o1,
                                                           const int8_t *const *x_rows, int32_t rows, int32_t x_cs,
                                                           int32_t n, int8_t *y, int32_t y_row, int32_t y_cs,
                                                           int8_t *last) {
    const int32_t count = o1 - o0, groups = (p->in_c + 3) >> 2, pair_words = groups * MCT_DSP_GROUP_WORDS;
    const int32_t all = n >> 1, plan_words = ((count + 1) >> 1) * pair_words;
    const int32_t room = plan_words < MCT_PW_WIDE_WORDS ? (MCT_PW_WIDE_WORDS - plan_words) / pair_words : 0;
    if (count < MCT_PW_WIDE_MIN_OUT || count > MCT_PW_PLAN_OUT || all == 0 || room < mct_imin(all, 4)) return 0;
    int32_t buf[MCT_PW_WIDE_WORDS], sums[4 * MCT_PW_SUM_PAIRS];
    pw_fast_rq rq[MCT_PW_PLAN_OUT];
    int32_t *const unpacked = buf + MCT_PW_WIDE_WORDS - plan_words;
    if (!pw_plan(p, o0, o1, pair_words, rq, unpacked)) return 0;
    const int32_t blocks = (all + room - 1) / room, most = (all + blocks - 1) / blocks; /* even blocks */
    for (int32_t a = 0; a < rows; ++a) {
        if (x_rows[a] == NULL) continue;
        for (int32_t j0 = 0; j0 < all; j0 += most) {
            const int32_t pairs = mct_imin(most, all - j0), q0 = 2 * j0 + a * y_row;
            mct_dsp_widen(x_rows[a], x_cs, 2 * j0, pairs, p->in_c, p->x_zero, buf);
            for (int32_t k = 0; k < count; k += 2) {
                const int32_t two = k + 1 < count;
                int8_t *ya = out_row(y, y_cs, last, k, count) + q0;
                int8_t *yb = two ? out_row(y, y_cs, last, k + 1, count) + q0 : ya;
                pw_planned_pair(buf, pair_words, pairs, unpacked + (k >> 1) * pair_words, groups, rq + k, two, ya, yb,
                                sums);
            }
        }
    }
    return 2 * all;
}

/* Output channels [o0, o1) at the positions [0, 2 * (n / 2)) (mct_pointwise's arguments): per block of
 * position pairs, the input is widened once (zero point subtracted) and read by every output pair. Returns
 * the positions done (0: not taken, too few output channels or too many input channels). */
static __attribute__((noinline)) int32_t pointwise_wide(const mct_conv *p, int32_t o0, int32_t o1, const int8_t *x,
                                                        int32_t x_cs, int32_t n, int8_t *y, int32_t y_cs, int8_t *last,
                                                        uint8_t *mask, int32_t bit0, int32_t bit_cs) {
    const int32_t in_c = p->in_c, pair_words = ((in_c + 3) >> 2) * MCT_DSP_GROUP_WORDS, all = n >> 1;
    if (o1 - o0 < MCT_PW_WIDE_MIN_OUT || all == 0 || pair_words > MCT_PW_WIDE_WORDS) return 0;
    int32_t buf[MCT_PW_WIDE_WORDS], sums[4 * MCT_PW_SUM_PAIRS];
    const int32_t groups = pair_words / MCT_DSP_GROUP_WORDS, beside = (MCT_PW_WIDE_WORDS - pair_words) / pair_words;
    const int32_t unpacking = beside >= MCT_PW_UNPACK_MIN_PAIRS && all >= MCT_PW_UNPACK_MIN_PAIRS;
    const int32_t most = unpacking ? beside : MCT_PW_WIDE_WORDS / pair_words; /* position pairs a block */
    int32_t *const unpacked = buf + MCT_PW_WIDE_WORDS - pair_words;
    for (int32_t j0 = 0; j0 < all; j0 += most) {
        const int32_t pairs = mct_imin(most, all - j0), q0 = 2 * j0;
        const int32_t unpack = unpacking && pairs >= MCT_PW_UNPACK_MIN_PAIRS;
        mct_dsp_widen(x, x_cs, q0, pairs, in_c, p->x_zero, buf);
        for (int32_t o = o0; o < o1;) {
            const mct_weight_row r0 = mct_row_of(&p->w, o);
            mct_weight_row r1 = r0;
            if (o + 1 < o1) r1 = mct_row_of(&p->w, o + 1);
            const int32_t two = o + 1 < o1 && r1.split == r0.split; /* else one row, paired with itself */
            const pw_runs w = pw_runs_of(&r0, two ? &r1 : &r0, in_c);
            if (unpack) pw_unpack(&w, unpacked);
            const mct_rq qa = mct_rq_of(p, o), qb = mct_rq_of(p, o + two);
            int8_t *ya = out_row(y, y_cs, last, o - o0, o1 - o0) + q0;
            int8_t *yb = out_row(y, y_cs, last, o + 1 - o0, o1 - o0) + q0;
            const int32_t ba = bit0 + (o - o0) * bit_cs + q0;
            for (int32_t j = 0; j < pairs; j += MCT_PW_SUM_PAIRS) {
                const int32_t m = mct_imin(MCT_PW_SUM_PAIRS, pairs - j);
                if (unpack)
                    pw_planned_sums(buf + j * pair_words, unpacked, groups, 1, m, sums);
                else
                    pw_sums(buf + j * pair_words, pair_words, m, &w, sums);
                pw_requant(&qa, sums, m, ya + 2 * j, mask, ba + 2 * j);
                if (two) pw_requant(&qb, sums + 2, m, yb + 2 * j, mask, ba + bit_cs + 2 * j);
            }
            o += 1 + two;
        }
    }
    return 2 * all;
}
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
