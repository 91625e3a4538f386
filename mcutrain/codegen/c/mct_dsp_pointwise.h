/* mct_dsp_pointwise.h: the DSP build's 1x1 convs on a widened input (included by mct_pointwise.c only, after
 * out_row): the row pipelines' planned calls (pointwise_planned), the widened 1x1 conv of any channel count
 * (pointwise_wide) and the one whose input channels of a position pair do not fit the buffer (pointwise_sliced).
 * Why a header of its own: with the per-call plans below, mct_pointwise.c would pass the 500 lines a file may
 * have. The kernels (widening, sums, requantization) are mct_dsp.h's. */
#ifndef MCT_DSP_POINTWISE_H
#define MCT_DSP_POINTWISE_H

/* The widened input (mct_dsp_widen) lives in a fixed stack buffer of MCT_PW_WIDE_WORDS words, not in the
 * arena: its size is bounded whatever the model (a 1x1 conv with more input channels than it holds for one
 * position pair widens them in slices, pointwise_sliced), so the firmware's measured stack high-water mark counts it
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

/* Position pairs whose sums are held at once (pw_sums, pw_requant): 256 bytes of stack. */
#define MCT_PW_SUM_PAIRS 16
/* Fewest position pairs a block for which a pair's weights are unpacked once (pw_unpack: about 10 instructions
 * a group, each pair then saves 4); they share the widened input's buffer (its last pair_words words), so the
 * stack does not grow. */
#define MCT_PW_UNPACK_MIN_PAIRS 3

/* From this many position pairs on, mct_dsp_requant_pairs' constant shifts repay its call and switch. */
#define MCT_PW_RQ_CALL_PAIRS 8

/* One channel's 2 * pairs outputs from s[4j], s[4j + 1] (pw_sums' layout) into y, no mask, fast constants q:
 * few pairs with the shift by register (one instruction an output more than mct_dsp_requant_pairs, but no call
 * and switch: the late 1x1 convs' blocks of 1 to 3 pairs), more by that. (pointwise_planned calls that alone:
 * inlined, this took its frame past the deepest stack.) */
static inline void pw_requant_fast(const int32_t *s, int32_t pairs, const mct_rq_fast q, int8_t *y) {
    if (pairs >= MCT_PW_RQ_CALL_PAIRS) {
        mct_dsp_requant_pairs(s, 4, pairs, q.bias2, q.multiplier, q.nudge, q.right, y);
        return;
    }
    for (int32_t j = 0; j < 2 * pairs; j += 2, s += 4) {
        y[j] = (int8_t)__ssat(mct_dsp_requantize_pos(s[0], q.bias2, q.multiplier, q.nudge, q.right), 8);
        y[j + 1] = (int8_t)__ssat(mct_dsp_requantize_pos(s[1], q.bias2, q.multiplier, q.nudge, q.right), 8);
    }
}

/* Most output channels a planned call takes (pointwise_planned): their constants are 256 bytes of stack. */
#define MCT_PW_PLAN_OUT 16

/* The plan of output channels [o0, o1): each channel's requantization constants and each channel pair's weights
 * unpacked (pw_unpack; an odd last channel paired with itself), pair k's at unpacked + k * pair_words. 0 (no
 * plan) where a channel is not in the fast case or the two rows of a pair are split differently. */
static int32_t pw_plan(const mct_conv *p, int32_t o0, int32_t o1, int32_t pair_words, mct_rq_fast *rq,
                       int32_t *unpacked) {
    if (!mct_rq_all_fast(p, o0, o1)) return 0;
    for (int32_t o = o0; o < o1; ++o) rq[o - o0] = mct_rq_fast_of(p, o);
    for (int32_t o = o0; o < o1; o += 2, unpacked += pair_words) {
        const mct_weight_row r0 = mct_row_of(&p->w, o), r1 = o + 1 < o1 ? mct_row_of(&p->w, o + 1) : r0;
        if (r1.split != r0.split) return 0;
        const pw_runs w = pw_runs_of(&r0, &r1, p->in_c);
        pw_unpack(&w, unpacked);
    }
    return 1;
}

#define MCT_PW_FIXED_AS(g_, biased_)                                                        \
    if (two)                                                                                \
        mct_dsp_pw_unpacked_fixed(xb, wb, g_, 1, biased_, pairs, sums);                     \
    else                                                                                    \
        mct_dsp_pw_unpacked_fixed(xb, wb, g_, 0, biased_, pairs, sums);
#define MCT_PW_FIXED(g_)                                                                    \
    case g_:                                                                                \
        if (biased) {                                                                       \
            MCT_PW_FIXED_AS(g_, 1)                                                          \
        } else {                                                                            \
            MCT_PW_FIXED_AS(g_, 0)                                                          \
        }                                                                                   \
        return;

/* The sums of a planned channel pair (``two``; else its first channel alone) at ``pairs`` widened position pairs,
 * pw_sums' layout, on unrolled groups: the row pipelines' few input channels (up to 24), and the group counts of
 * the paper networks' unpacked 1x1 convs (32 to 120 input channels: 12 instructions a group, the loop's 15; about
 * 13 KB more Flash for 1.3 to 1.7 M instructions less an inference; the lone channel's variants included, which
 * the row pipelines' odd channel counts take: 0.3 to 0.7 M of it). ``biased``: a generated plan's record (its
 * pair's 2 * bias first: pw_generated_plan; its lone channels too, the pair's second weights 0). */
static __attribute__((noinline)) void pw_planned_sums(const int32_t *xb, const int32_t *wb, int32_t groups,
                                                      int32_t two, int32_t biased, int32_t pairs, int32_t *sums) {
    switch (groups) {
        MCT_PW_FIXED(1) MCT_PW_FIXED(2) MCT_PW_FIXED(3) MCT_PW_FIXED(4) MCT_PW_FIXED(5) MCT_PW_FIXED(6)
        MCT_PW_FIXED(8) MCT_PW_FIXED(10) MCT_PW_FIXED(12) MCT_PW_FIXED(14) MCT_PW_FIXED(16) MCT_PW_FIXED(18)
        MCT_PW_FIXED(24) MCT_PW_FIXED(30)
    default:
        break;
    }
    if (biased) {
        mct_dsp_pw_unpacked_fixed(xb, wb, groups, two, 1, pairs, sums);
        return;
    }
    const int32_t pair_words = groups * MCT_DSP_GROUP_WORDS;
    if (two)
        pw_sums_unpacked(xb, pair_words, pairs, wb, groups, sums);
    else
        for (int32_t i = 0; i < pairs; ++i) mct_dsp_pw_unpacked_one(xb + i * pair_words, wb, groups, sums + 4 * i);
}
#undef MCT_PW_FIXED
#undef MCT_PW_FIXED_AS

/* One planned channel pair (``two``; else its first channel alone) at ``pairs`` widened position pairs: the sums
 * (pw_planned_sums) then 2 outputs at a time into ya, yb; ``biased``: a generated plan's doubled sums. */
static inline __attribute__((always_inline)) void pw_planned_pair(const int32_t *xb, int32_t pair_words,
                                                                  int32_t pairs, const int32_t *wb, int32_t groups,
                                                                  const mct_rq_fast *rq, int32_t two, int32_t biased,
                                                                  int8_t *ya, int8_t *yb, int32_t *sums) {
    for (int32_t j = 0; j < pairs; j += MCT_PW_SUM_PAIRS, xb += MCT_PW_SUM_PAIRS * pair_words) {
        const int32_t m = mct_imin(MCT_PW_SUM_PAIRS, pairs - j);
        pw_planned_sums(xb, wb, groups, two, biased, m, sums);
        for (int32_t c = 0; c <= two; ++c) {
            const mct_rq_fast q = rq[c];
            int8_t *const y = (c ? yb : ya) + 2 * j;
            if (biased)
                mct_dsp_requant_doubled(sums + 2 * c, 4, m, q.multiplier, q.nudge, q.right, y);
            else
                mct_dsp_requant_pairs(sums + 2 * c, 4, m, q.bias2, q.multiplier, q.nudge, q.right, y);
        }
    }
}

/* The plan of a call's channels: channel pair k's weights (its record) at wb + k * record, channel c's constants at
 * rq[c]; ``room``: the position pairs a block of widened input may have (0: no plan). */
typedef struct {
    const int32_t *wb;
    const mct_rq_fast *rq;
    int32_t record, room;
} pw_call_plan;

/* The rows of a planned call (pointwise_planned's arguments): per block of positions the input widened once into
 * buf, then every channel pair's outputs from it; ``biased`` (a constant where inlined): a generated plan (records
 * led by the pair's 2 * bias, doubled weights). */
static inline __attribute__((always_inline)) int32_t pw_planned_rows(const mct_conv *p, int32_t o0, int32_t o1,
                                                                     const int8_t *const *x_rows, int32_t rows,
                                                                     int32_t x_cs, int32_t n, int8_t *y,
                                                                     int32_t y_row, int32_t y_cs, int8_t *last,
                                                                     const pw_call_plan *plan, int32_t biased,
                                                                     int32_t *buf, int32_t *sums) {
    const int32_t count = o1 - o0, groups = (p->in_c + 3) >> 2, pair_words = groups * MCT_DSP_GROUP_WORDS;
    const int32_t all = n >> 1, blocks = (all + plan->room - 1) / plan->room;
    const int32_t most = (all + blocks - 1) / blocks; /* even blocks */
    for (int32_t a = 0; a < rows; ++a) {
        if (x_rows[a] == NULL) continue;
        for (int32_t j0 = 0; j0 < all; j0 += most) {
            const int32_t pairs = mct_imin(most, all - j0), q0 = 2 * j0 + a * y_row;
            mct_dsp_widen(x_rows[a], x_cs, 2 * j0, pairs, p->in_c, p->x_zero, buf);
            for (int32_t k = 0; k < count; k += 2) {
                const int32_t two = k + 1 < count;
                int8_t *ya = out_row(y, y_cs, last, k, count) + q0;
                int8_t *yb = two ? out_row(y, y_cs, last, k + 1, count) + q0 : ya;
                pw_planned_pair(buf, pair_words, pairs, plan->wb + (k >> 1) * plan->record, groups, plan->rq + k,
                                two, biased, ya, yb, sums);
            }
        }
    }
    return 2 * all;
}

/* A frozen 1x1 conv's generated plan (mct_conv.dsp_plan; mcutrain/codegen/dsp_plans.py's layout): the channel
 * window W its calls take, each channel's constants (mct_rq_fast's four words), then a record per channel pair of
 * each window: the pair's 2 * bias, then per group its doubled weights as mct_dsp_unpack_group's words. The sums
 * start at 2 * bias, so each is 2 * (acc + bias), the requantization's operand, with no add
 * (mct_dsp_requant_doubled: 5 instructions an output, not 6), and weights and constants come from Flash instead
 * of a plan made on every call (pw_plan: once a row and channel window). Only a call of one whole window takes
 * it (the calls of a row pipeline's 1x1 convs). */
static pw_call_plan pw_generated_plan(const mct_conv *p, int32_t o0, int32_t o1) {
    const int32_t window = p->dsp_plan[0], pair_words = ((p->in_c + 3) >> 2) * MCT_DSP_GROUP_WORDS;
    const int32_t record = 2 + pair_words, whole = o0 % window == 0 && o1 - o0 == mct_imin(window, p->out_c - o0);
    const int32_t *const records = p->dsp_plan + 1 + 4 * p->out_c + (o0 / window) * ((window + 1) >> 1) * record;
    const pw_call_plan plan = {records, (const mct_rq_fast *)(const void *)(p->dsp_plan + 1 + 4 * o0), record,
                               whole ? MCT_PW_WIDE_WORDS / pair_words : 0};
    return plan;
}

/* Output channels [o0, o1) at the positions [0, 2 * (n / 2)) of ``rows`` input rows (x_rows[a], NULL: skipped;
 * output row a at y + a * y_row, ``last`` as in out_row: one row only), no mask, on a plan of the call: the
 * generator's (pw_generated_plan) or one made here once for all rows (pw_plan: at most MCT_PW_PLAN_OUT channels),
 * not once per row and block as in pointwise_wide (the row pipelines call the 1x1 conv once a row with few
 * channels: the setup outweighed the sums). Returns the positions done per row (0: not taken). */
static __attribute__((noinline)) int32_t pointwise_planned(const mct_conv *p, int32_t o0, int32_t o1,
                                                           const int8_t *const *x_rows, int32_t rows, int32_t x_cs,
                                                           int32_t n, int8_t *y, int32_t y_row, int32_t y_cs,
                                                           int8_t *last) {
    const int32_t count = o1 - o0, groups = (p->in_c + 3) >> 2, pair_words = groups * MCT_DSP_GROUP_WORDS;
    const int32_t all = n >> 1;
    if (count < MCT_PW_WIDE_MIN_OUT || all == 0) return 0;
    int32_t buf[MCT_PW_WIDE_WORDS], sums[4 * MCT_PW_SUM_PAIRS];
    const pw_call_plan generated = p->dsp_plan != NULL ? pw_generated_plan(p, o0, o1) : (pw_call_plan){0};
    if (generated.room > 0)
        return pw_planned_rows(p, o0, o1, x_rows, rows, x_cs, n, y, y_row, y_cs, last, &generated, 1, buf, sums);
    const int32_t plan_words = ((count + 1) >> 1) * pair_words;
    const int32_t room = plan_words < MCT_PW_WIDE_WORDS ? (MCT_PW_WIDE_WORDS - plan_words) / pair_words : 0;
    if (count > MCT_PW_PLAN_OUT || room < mct_imin(all, 4)) return 0;
    mct_rq_fast rq[MCT_PW_PLAN_OUT];
    int32_t *const unpacked = buf + MCT_PW_WIDE_WORDS - plan_words;
    if (!pw_plan(p, o0, o1, pair_words, rq, unpacked)) return 0;
    const pw_call_plan made = {unpacked, rq, pair_words, room};
    return pw_planned_rows(p, o0, o1, x_rows, rows, x_cs, n, y, y_row, y_cs, last, &made, 0, buf, sums);
}

/* ---- the widened 1x1 conv of any channel count (pointwise_wide, pointwise_sliced) ----
 * What depends on the call only is found once a call: whether every channel is in mct_rq_of's fast case
 * (mct_rq_all_fast) and whether every weight row splits at a multiple of 4 (pw_aligned); an output pair's runs and
 * constants then come from the conv's arrays in a few instructions (pw_pair_runs, mct_rq_fast_of). Each block of
 * positions and output pair called mct_row_of twice, pw_runs_of and mct_rq_of twice with all their checks before
 * (about 220 instructions, paid again for every block of 1 to 3 position pairs of an input of 128 channels or
 * more: 2 M instructions an MbV2 inference). */

/* Where row o's SRAM run ends (mct_row_of's split; 0: all in Flash). */
static inline int32_t pw_split(const mct_weight *w, int32_t o) {
    return w->sram != NULL && o < w->kept_rows ? w->kept_cols : 0;
}

/* Whether output channels o and o + 1 make a pair: o + 1 before o1 and split as o (else o alone, paired with
 * itself). */
static inline int32_t pw_two(const mct_weight *w, int32_t o, int32_t o1) {
    return o + 1 < o1 && pw_split(w, o + 1) == pw_split(w, o);
}

/* in_c and every row's split (clipped to in_c) multiples of 4: no group gathered byte by byte (pw_gather). */
static int32_t pw_aligned(const mct_conv *p) {
    return !(p->in_c & 3) && (p->w.sram == NULL || !(mct_imin(p->w.kept_cols, p->in_c) & 3));
}

/* pw_runs_of for rows o and o + two (two: 0 or 1, pw_two): from the weight's layout with no call where pw_aligned
 * holds, else through mct_row_of and pw_runs_of. */
static inline pw_runs pw_pair_runs(const mct_conv *p, int32_t o, int32_t two, int32_t aligned) {
    const mct_weight *w = &p->w;
    if (!aligned) {
        const mct_weight_row r0 = mct_row_of(w, o), r1 = two ? mct_row_of(w, o + 1) : r0;
        return pw_runs_of(&r0, &r1, p->in_c);
    }
    const int32_t split = mct_imin(pw_split(w, o), p->in_c), row = w->cols * w->inner, kept = w->kept_cols * w->inner;
    pw_runs r;
    r.hi = w->flash + o * row + split; /* column split on: group split / 4 on */
    r.hi_d = two * row;
    r.lo = split > 0 ? w->sram + o * kept : r.hi;
    r.lo_d = two * kept;
    r.lo_groups = r.hi_g0 = split >> 2;
    r.hi_groups = (p->in_c >> 2) - r.hi_g0;
    r.n_gather = 0;
    return r;
}

/* Channel o's 2 * pairs outputs from s[4j], s[4j + 1] (pw_sums' layout) into y, mask bits from ``bit`` on:
 * ``fast`` (mct_rq_all_fast) without a mask in runs (mct_dsp_requant_pairs), with one the bits of 8 pairs ORed at
 * once (mct_dsp_or_bits: the training forward's masked 1x1 convs); else mct_rq_out each. */
static void pw_out(const mct_conv *p, int32_t o, int32_t fast, const int32_t *s, int32_t pairs, int8_t *y,
                   uint8_t *mask, int32_t bit) {
    if (!fast) {
        const mct_rq q = mct_rq_of(p, o);
        for (int32_t i = 0; i < 2 * pairs; ++i) mct_rq_out(&q, s[4 * (i >> 1) + (i & 1)], y + i, mask, bit + i);
        return;
    }
    const mct_rq_fast q = mct_rq_fast_of(p, o);
    if (mask == NULL) {
        mct_dsp_requant_pairs(s, 4, pairs, q.bias2, q.multiplier, q.nudge, q.right, y);
        return;
    }
    for (int32_t j = 0; j < pairs; j += 8, s += 32, y += 16, bit += 16) {
        const int32_t m = 2 * mct_imin(8, pairs - j);
        uint32_t inside = 0;
        for (int32_t i = 0; i < m; i += 2) { /* -128 < v < 127: mct_rq_out's bit */
            const int32_t v = mct_dsp_requantize_pos(s[2 * i], q.bias2, q.multiplier, q.nudge, q.right);
            const int32_t w = mct_dsp_requantize_pos(s[2 * i + 1], q.bias2, q.multiplier, q.nudge, q.right);
            y[i] = (int8_t)__ssat(v, 8);
            y[i + 1] = (int8_t)__ssat(w, 8);
            inside |= ((uint32_t)((uint32_t)(v + 127) < 254u) | (uint32_t)((uint32_t)(w + 127) < 254u) << 1) << i;
        }
        mct_dsp_or_bits(mask, bit, inside, m);
    }
}

/* pw_out of an output pair (channel o from s[4j], s[4j + 1] into ya; o + 1 from s[4j + 2], s[4j + 3] into yb
 * where ``two``) in mct_rq_all_fast's case, no mask: the constants of each read once (pw_requant_fast). */
static void pw_out_pair(const mct_conv *p, int32_t o, int32_t two, const int32_t *s, int32_t pairs, int8_t *ya,
                        int8_t *yb) {
    pw_requant_fast(s, pairs, mct_rq_fast_of(p, o), ya);
    if (two) pw_requant_fast(s + 2, pairs, mct_rq_fast_of(p, o + 1), yb);
}

/* Output channels [o0, o1) at the positions [0, 2 * (n / 2)) (mct_pointwise's arguments): per block of
 * position pairs (blocks of even size), the input is widened once (zero point subtracted) and read by every
 * output pair. Returns the positions done (0: not taken, too few output channels or too many input channels:
 * pointwise_sliced). */
static __attribute__((noinline)) int32_t pointwise_wide(const mct_conv *p, int32_t o0, int32_t o1, const int8_t *x,
                                                        int32_t x_cs, int32_t n, int8_t *y, int32_t y_cs, int8_t *last,
                                                        uint8_t *mask, int32_t bit0, int32_t bit_cs) {
    const int32_t in_c = p->in_c, groups = (in_c + 3) >> 2, pair_words = groups * MCT_DSP_GROUP_WORDS, all = n >> 1;
    if (o1 - o0 < MCT_PW_WIDE_MIN_OUT || all == 0 || pair_words > MCT_PW_WIDE_WORDS) return 0;
    int32_t buf[MCT_PW_WIDE_WORDS], sums[4 * MCT_PW_SUM_PAIRS];
    const int32_t fast = mct_rq_all_fast(p, o0, o1), aligned = pw_aligned(p);
    const int32_t beside = (MCT_PW_WIDE_WORDS - pair_words) / pair_words;
    const int32_t unpacking = beside >= MCT_PW_UNPACK_MIN_PAIRS && all >= MCT_PW_UNPACK_MIN_PAIRS;
    const int32_t room = unpacking ? mct_imin(beside, MCT_PW_SUM_PAIRS) : MCT_PW_WIDE_WORDS / pair_words;
    const int32_t blocks = (all + room - 1) / room;
    const int32_t most = (all + blocks - 1) / blocks; /* position pairs a block */
    int32_t *const unpacked = buf + MCT_PW_WIDE_WORDS - pair_words;
    for (int32_t j0 = 0; j0 < all; j0 += most) {
        const int32_t pairs = mct_imin(most, all - j0), q0 = 2 * j0;
        const int32_t unpack = unpacking && pairs >= MCT_PW_UNPACK_MIN_PAIRS;
        mct_dsp_widen(x, x_cs, q0, pairs, in_c, p->x_zero, buf);
        for (int32_t j = 0; j < pairs; j += MCT_PW_SUM_PAIRS) { /* one chunk of sums a block but for in_c < 32 */
            const int32_t m = mct_imin(MCT_PW_SUM_PAIRS, pairs - j), q = q0 + 2 * j;
            const int32_t *const xb = buf + j * pair_words;
            for (int32_t o = o0; o < o1;) {
                const int32_t two = pw_two(&p->w, o, o1);
                const pw_runs w = pw_pair_runs(p, o, two, aligned);
                int8_t *ya = out_row(y, y_cs, last, o - o0, o1 - o0) + q;
                int8_t *yb = out_row(y, y_cs, last, o + 1 - o0, o1 - o0) + q;
                if (unpack) {
                    pw_unpack(&w, unpacked);
                    pw_planned_sums(xb, unpacked, groups, two, 0, m, sums);
                } else {
                    pw_sums(xb, pair_words, m, &w, sums);
                }
                if (fast && mask == NULL) {
                    pw_out_pair(p, o, two, sums, m, ya, yb);
                } else {
                    const int32_t ba = bit0 + (o - o0) * bit_cs + q;
                    pw_out(p, o, fast, sums, m, ya, mask, ba);
                    if (two) pw_out(p, o + 1, fast, sums + 2, m, yb, mask, ba + bit_cs);
                }
                o += 1 + two;
            }
        }
    }
    return 2 * all;
}

/* Input-channel groups [g0, g1) of the output pairs from oc to oe (pw_two) at the position pair widened in xb
 * (group g0's words first), added to acc (4 sums an output pair, pw_sums' layout; set where g0 is 0). */
static void pw_slice_sums(const mct_conv *p, int32_t oc, int32_t oe, int32_t g0, int32_t g1, const int32_t *xb,
                          int32_t *acc) {
    for (int32_t o = oc; o < oe; acc += 4) {
        const int32_t two = pw_two(&p->w, o, oe);
        const pw_runs w = pw_pair_runs(p, o, two, 1);
        const int32_t lo_end = mct_imin(g1, w.lo_groups), hi_from = mct_imax(g0, w.hi_g0);
        if (g0 == 0) acc[0] = acc[1] = acc[2] = acc[3] = 0;
        if (lo_end > g0) mct_dsp_pw_wide(xb, w.lo + 4 * g0, w.lo_d, lo_end - g0, acc);
        if (g1 > hi_from)
            mct_dsp_pw_wide(xb + MCT_DSP_GROUP_WORDS * (hi_from - g0), w.hi + 4 * (hi_from - w.hi_g0), w.hi_d,
                            g1 - hi_from, acc);
        o += 1 + two;
    }
}

/* Input channels a slice holds at most (pointwise_sliced): the buffer's other words hold the sums of 32 output
 * pairs or more. */
#define MCT_PW_SLICE_WORDS 384

/* pointwise_wide for a 1x1 conv whose input channels of one position pair do not fit the buffer (more than
 * 512: MCUNet's 576 -> 160, on pointwise_two before at 2.2 instructions a MAC): one position pair at a time, its
 * input channels in slices widened one after another, each output pair's sums added over the slices (int32
 * sums: exact in any order) in the buffer's words past the slice, for as many output pairs as fit there (the
 * slices widened again for the next ones). Returns the positions done (0: not taken: too few output channels,
 * or a row split inside a group). */
static __attribute__((noinline)) int32_t pointwise_sliced(const mct_conv *p, int32_t o0, int32_t o1, const int8_t *x,
                                                          int32_t x_cs, int32_t n, int8_t *y, int32_t y_cs,
                                                          int8_t *last, uint8_t *mask, int32_t bit0, int32_t bit_cs) {
    const int32_t groups = p->in_c >> 2, all = n >> 1;
    if (o1 - o0 < MCT_PW_WIDE_MIN_OUT || all == 0 || !pw_aligned(p)) return 0;
    int32_t buf[MCT_PW_WIDE_WORDS];
    const int32_t slices = (groups * MCT_DSP_GROUP_WORDS + MCT_PW_SLICE_WORDS - 1) / MCT_PW_SLICE_WORDS;
    const int32_t slice = (groups + slices - 1) / slices, fast = mct_rq_all_fast(p, o0, o1); /* groups a slice */
    int32_t *const acc = buf + slice * MCT_DSP_GROUP_WORDS;
    const int32_t room = (MCT_PW_WIDE_WORDS - slice * MCT_DSP_GROUP_WORDS) / 4; /* output pairs a pass */
    for (int32_t j = 0; j < all; ++j) {
        for (int32_t oc = o0, oe = o0; oc < o1; oc = oe) {
            for (int32_t k = 0; k < room && oe < o1; ++k) oe += 1 + pw_two(&p->w, oe, o1);
            for (int32_t g0 = 0; g0 < groups; g0 += slice) {
                const int32_t g1 = mct_imin(groups, g0 + slice);
                mct_dsp_widen(x + 4 * g0 * x_cs, x_cs, 2 * j, 1, 4 * (g1 - g0), p->x_zero, buf);
                pw_slice_sums(p, oc, oe, g0, g1, buf, acc);
            }
            const int32_t *s = acc;
            for (int32_t o = oc; o < oe; s += 4) {
                const int32_t two = pw_two(&p->w, o, oe), bit = bit0 + (o - o0) * bit_cs + 2 * j;
                pw_out(p, o, fast, s, 1, out_row(y, y_cs, last, o - o0, o1 - o0) + 2 * j, mask, bit);
                if (two) pw_out(p, o + 1, fast, s + 2, 1, out_row(y, y_cs, last, o + 1 - o0, o1 - o0) + 2 * j, mask,
                                bit + bit_cs);
                o += 1 + two;
            }
        }
    }
    return 2 * all;
}
#endif /* MCT_DSP_POINTWISE_H */
