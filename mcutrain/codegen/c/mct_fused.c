/* mct_fused.c: see mct_fused.h (row pipelines; the channel-by-channel block backward is in mct_fused_grad.c). */
#include "mct_fused.h"

#include <string.h>

/* ------------------------------------------------------------------------------------------------
 * Row pipelines */

static int8_t *view_data(const mct_rows_view *v, uint8_t *arena) { return (int8_t *)(void *)(arena + v->offset); }

static int32_t view_row(const mct_rows_view *v, int32_t r) { return (r % v->ring) * v->w; }

/* The output of event (stage, r): the row pointer in the output view, its channel stride, mask bits. */
typedef struct {
    int8_t *y;
    int32_t y_cs;
    uint8_t *mask;
    int32_t bit0, bit_cs;
} row_target;

#define MCT_ROW_CHUNK 16 /* interior output columns accumulated together (int32 sums on the stack) */

/* Column ox of a groups-1 conv row whose window crosses the input's left or right edge: bounded taps. */
static int32_t general_edge(const mct_conv *p, int32_t o, const int8_t *x, int32_t x_cs, const int32_t *off,
                            int32_t ox) {
    const int32_t k = p->k, ix = ox * p->stride - p->pad_left;
    const int32_t b0 = mct_imax(0, -ix), b1 = mct_imin(k, p->in_w - ix);
    int32_t sum = 0;
    for (int32_t i = 0; i < p->in_c; ++i) {
        const int8_t *w = mct_weight_at(&p->w, o, i);
        for (int32_t a = 0; a < k; ++a) {
            if (off[a] < 0) continue;
            const int8_t *row = x + i * x_cs + off[a];
            for (int32_t b = b0; b < b1; ++b) sum += ((int32_t)row[ix + b] - p->x_zero) * w[a * k + b];
        }
    }
    return sum;
}

#if MCT_DSP
/* The DSP build's groups-1 conv row (the first conv): im2col. Each output column's taps, (x - z) as int16
 * pairs in a stack table, are read by every output channel; 2 channels x 2 columns a step
 * (patch_2x2). Padding taps are 0 (x = z), so edge columns take the same loop and no weight sums
 * are needed: sum (x - z) w is the portable code's integer. */
#define MCT_PATCH_WORDS 224 /* int32 words of each of the two stack tables (patches, weights): 896 bytes */
#define MCT_PATCH_MAX 40    /* most words of one column's patch: in_c * k * k <= 80 taps (5x5 on 3) */
#define MCT_PATCH_COLS 32   /* most columns a chunk (their int32 sums of two channels on the stack) */

/* The sums of 2 output channels x 2 output columns over ``words`` words of int16 pairs (an even count):
 * xb [words][2] the two columns' taps (x - z), wb [words][2] the two channels' weights in the same order;
 * su[0..1] = channel u at the two columns, sv[0..1] = channel v. Per word 3 loads and 4 SMLAD for 8 MACs.
 * Inlined: with ``words`` a constant (the 3x3 conv on 3 channels: 14) the loop unrolls whole, no pointer
 * steps (GCC does not unroll the general loop at -O2). */
static inline __attribute__((always_inline)) void patch_2x2(const int32_t *xb, const int32_t *wb, int32_t words,
                                                             int32_t *su, int32_t *sv) {
    int32_t ua = 0, ub = 0, va = 0, vb = 0;
#pragma GCC unroll 14
    for (int32_t t = 0; t < words; ++t) {
        const int32_t pa = xb[2 * t], pb = xb[2 * t + 1], wu = wb[2 * t], wv = wb[2 * t + 1];
        ua = __smlad(pa, wu, ua);
        ub = __smlad(pb, wu, ub);
        va = __smlad(pa, wv, va);
        vb = __smlad(pb, wv, vb);
    }
    su[0] = ua, su[1] = ub, sv[0] = va, sv[1] = vb;
}

/* The order of a column's taps in its patch, as SMLAD pairs them: tap[v] = (i * k + a) * k + b (input
 * channel i, tap row a, column b), -1 for a zero past the taps. k = 3: (b = 0, b = 2) of each tap row
 * first (SXTB16 of the row's 4 bytes at the window), then the middle taps of two tap rows a word (the
 * rotated SXTB16's low halves, joined); any other k: the natural order. Returns the words (even). */
static int32_t patch_order(int32_t tap_rows, int32_t k, int16_t *tap) {
    int32_t n = 0;
    if (k == 3) {
        for (int32_t r = 0; r < tap_rows; ++r) tap[n++] = (int16_t)(3 * r), tap[n++] = (int16_t)(3 * r + 2);
        for (int32_t r = 0; r < tap_rows; ++r) tap[n++] = (int16_t)(3 * r + 1);
    } else {
        for (; n < tap_rows * k; ++n) tap[n] = (int16_t)n;
    }
    const int32_t words = (((n + 1) >> 1) + 1) & ~1;
    while (n < 2 * words) tap[n++] = -1;
    return words;
}

static int32_t pair16(int32_t lo, int32_t hi) { return (int32_t)((uint32_t)(uint16_t)lo | ((uint32_t)hi << 16)); }

/* Column ix's patch of a 3x3 conv whose k tap rows all lie inside the input (rows[r]: tap row r) and
 * whose 4 bytes from ix do too: per tap row one load, SXTAB16 (-z, -z) of it and of it rotated (the
 * middle tap in the low half), two middles joined by PKHBT. patch_order's k = 3 order. */
static inline __attribute__((always_inline)) void patch_column3(const int8_t *const *rows, int32_t tap_rows, int32_t ix,
                                                                int32_t zz, int32_t words, int32_t *dst) {
    int32_t even = 0, t = tap_rows;
    for (int32_t r = 0; r < tap_rows; ++r) {
        const int32_t v = mct_ld32(rows[r] + ix), mid = mct_sxtab16_ror8(zz, v);
        dst[2 * r] = __sxtab16(zz, v);
        if (r & 1)
            dst[2 * t++] = pair16(even, mid);
        else
            even = mid;
    }
    if (tap_rows & 1) dst[2 * t++] = (int32_t)(uint16_t)even;
    for (; t < words; ++t) dst[2 * t] = 0;
}

/* The weights of channels [o0, o1) in patch order, [channel pair][word][2] (an odd last channel paired
 * with itself): each channel's kernel gathered once (in_c * k * k <= 2 * MCT_PATCH_MAX bytes), then picked;
 * for k = 3 by patch_column3 over the kernel's tap rows (its order is patch_order's; a zero point of 0), a
 * load and two SXTAB16 a tap row instead of two byte picks a tap (the table is made for every output row). Not
 * inlined: its gathered kernel is off general_row_dsp's frame while the sums and requantization run. */
static __attribute__((noinline)) void patch_weights(const mct_conv *p, int32_t o0, int32_t o1, const int16_t *tap,
                                                   int32_t words, int32_t *table) {
    const int32_t kk = p->k * p->k, tap_rows = p->in_c * p->k;
    int8_t kernel[2 * MCT_PATCH_MAX + 4]; /* + 3: patch_column3's word load of the last tap row */
    const int8_t *rows[2 * MCT_PATCH_MAX / 3];
    kernel[0] = 0; /* tap -1: the zero past the taps */
    memset(kernel + 1 + tap_rows * p->k, 0, 3);
    for (int32_t r = 0; p->k == 3 && r < tap_rows; ++r) rows[r] = kernel + 1 + 3 * r;
    for (int32_t o = o0; o < o1; ++o) {
        for (int32_t i = 0; i < p->in_c; ++i) memcpy(kernel + 1 + i * kk, mct_weight_at(&p->w, o, i), (size_t)kk);
        int32_t *dst = table + ((o - o0) >> 1) * 2 * words + ((o - o0) & 1);
        if (p->k == 3)
            patch_column3(rows, tap_rows, 0, 0, words, dst);
        else
            for (int32_t t = 0; t < words; ++t)
                dst[2 * t] = pair16(kernel[1 + tap[2 * t]], kernel[1 + tap[2 * t + 1]]);
        if (o == o1 - 1 && ((o - o0) & 1) == 0) /* an odd last channel: its pair's second row repeats it */
            for (int32_t t = 0; t < words; ++t) dst[2 * t + 1] = dst[2 * t];
    }
}

/* Column ox's patch, tap by tap, bounded (edges, padding rows, any k): word t at dst[2 * t]. */
static void patch_column(const mct_conv *p, const int8_t *x, int32_t x_cs, const int32_t *off, const int16_t *tap,
                         int32_t words, int32_t ox, int32_t *dst) {
    const int32_t k = p->k, kk = k * k, ix = ox * p->stride - p->pad_left;
    for (int32_t t = 0; t < words; ++t) {
        int32_t h[2];
        for (int32_t j = 0; j < 2; ++j) {
            const int32_t v = tap[2 * t + j], i = v / kk, a = v % kk / k, b = v % k;
            h[j] = v >= 0 && off[a] >= 0 && ix + b >= 0 && ix + b < p->in_w
                       ? x[i * x_cs + off[a] + ix + b] - p->x_zero : 0;
        }
        dst[2 * t] = pair16(h[0], h[1]);
    }
}

/* The 2 * pairs columns from c0 (m of them inside the row; an odd last one computed twice) into the table
 * [column pair][word][2]. */
static void patch_columns(const mct_conv *p, const int8_t *x, int32_t x_cs, const int32_t *off, const int16_t *tap,
                          int32_t words, const int8_t *const *rows, int32_t c0, int32_t m, int32_t *table) {
    const int32_t tap_rows = p->in_c * p->k, zz = pair16(-p->x_zero, -p->x_zero);
    for (int32_t c = 0; c < ((m + 1) & ~1); ++c) {
        const int32_t ox = c0 + mct_imin(c, m - 1), ix = ox * p->stride - p->pad_left;
        int32_t *dst = table + (c >> 1) * 2 * words + (c & 1);
        if (rows != NULL && ix >= 0 && ix + 4 <= p->in_w)
            patch_column3(rows, tap_rows, ix, zz, words, dst);
        else
            patch_column(p, x, x_cs, off, tap, words, ox, dst);
    }
}

/* Output channel o at m columns from their sums s[0..m) (row target t, columns from c0): in the fast case
 * (``fast``: mct_rq_all_fast once a row, no mask: mct_rq_of's checks for every channel of every column chunk
 * were half of the first conv's requantization) by mct_dsp_requant_pairs with mct_rq_fast_of's constants (no
 * table of them: this frame is on the deepest stack), else mct_rq_out's. */
static void patch_requant(const mct_conv *p, int32_t o, int32_t fast, const int32_t *s, int32_t m, int32_t c0,
                          const row_target *t) {
    int8_t *y = t->y + o * t->y_cs + c0;
    if (t->mask != NULL || !fast) {
        const mct_rq q = mct_rq_of(p, o);
        for (int32_t j = 0; j < m; ++j) mct_rq_out(&q, s[j], y + j, t->mask, t->bit0 + o * t->bit_cs + c0 + j);
        return;
    }
    const mct_rq_fast q = mct_rq_fast_of(p, o);
    mct_dsp_requant_pairs(s, 2, m >> 1, q.bias2, q.multiplier, q.nudge, q.right, y);
    if (m & 1) /* the row's odd last column */
        y[m - 1] = (int8_t)__ssat(mct_dsp_requantize_pos(s[m - 1], q.bias2, q.multiplier, q.nudge, q.right), 8);
}

/* Channels [o0, o1) at the m columns from c0 whose patches are in ``patches``: each channel pair's sums over
 * the chunk, then each channel's row segment requantized (``fast``: patch_requant's). */
static void patch_outputs(const mct_conv *p, int32_t o0, int32_t o1, const int32_t *weights, const int32_t *patches,
                          int32_t words, int32_t c0, int32_t m, int32_t fast, const row_target *t) {
    int32_t su[MCT_PATCH_COLS], sv[MCT_PATCH_COLS];
    for (int32_t o = o0; o < o1; o += 2) {
        const int32_t *w = weights + (o - o0) * words;
        for (int32_t c = 0; c < m; c += 2) {
            if (words == 14) /* the 3x3 conv on 3 channels: unrolled whole */
                patch_2x2(patches + c * 14, w, 14, su + c, sv + c);
            else
                patch_2x2(patches + c * words, w, words, su + c, sv + c);
        }
        patch_requant(p, o, fast, su, m, c0, t);
        if (o + 1 < o1) patch_requant(p, o + 1, fast, sv, m, c0, t);
    }
}

/* The whole output row on the DSP path; 0: not taken (more taps than MCT_PATCH_MAX words hold). Not inlined:
 * its tables live on the stack only while it runs. A frozen conv's weight table is the generator's
 * (mct_conv.dsp_plan: dsp_plans.patch_plan, patch_weights' layout for all channels), not made every row. */
static __attribute__((noinline)) int general_row_dsp(const mct_conv *p, const int8_t *x, int32_t x_cs,
                                                     const int32_t *off, const row_target *t) {
    const int32_t k = p->k, tap_rows = p->in_c * k;
    if (tap_rows * k > 2 * MCT_PATCH_MAX) return 0;
    int16_t tap[2 * MCT_PATCH_MAX];
    const int32_t words = patch_order(tap_rows, k, tap);
    const int32_t pairs = mct_imin(MCT_PATCH_WORDS / (2 * words), MCT_PATCH_COLS / 2); /* columns, channels */
    const int8_t *rows[2 * MCT_PATCH_MAX / 3]; /* k = 3 with every tap row inside: patch_column3's */
    int32_t full = k == 3;
    for (int32_t a = 0; a < k; ++a) full &= off[a] >= 0;
    for (int32_t r = 0; full && r < tap_rows; ++r) rows[r] = x + (r / 3) * x_cs + off[r % 3];
    int32_t patches[MCT_PATCH_WORDS], weights[MCT_PATCH_WORDS];
    const int32_t fast = t->mask == NULL && mct_rq_all_fast(p, 0, p->out_c);
    for (int32_t o0 = 0; o0 < p->out_c; o0 += 2 * pairs) {
        const int32_t o1 = mct_imin(p->out_c, o0 + 2 * pairs);
        const int32_t *table = p->dsp_plan != NULL ? p->dsp_plan + o0 * words : weights; /* frozen: generated */
        if (p->dsp_plan == NULL) patch_weights(p, o0, o1, tap, words, weights);
        for (int32_t c0 = 0; c0 < p->out_w; c0 += 2 * pairs) {
            const int32_t m = mct_imin(p->out_w - c0, 2 * pairs);
            patch_columns(p, x, x_cs, off, tap, words, full ? rows : NULL, c0, m, patches);
            patch_outputs(p, o0, o1, table, patches, words, c0, m, fast, t);
        }
    }
    return 1;
}
#endif

/* Interior columns [lo, hi) of output channel o, MCT_ROW_CHUNK at a time: for each (input channel,
 * tap row) its k weights are loaded once for the whole chunk; raw inputs, the zero point folded into
 * ``zsum`` (the weights of the tap rows inside the input). */
static void general_inside(const mct_conv *p, int32_t o, const int8_t *x, int32_t x_cs, const int32_t *off,
                           int32_t zsum, int32_t lo, int32_t hi, const row_target *t) {
    const int32_t k = p->k, s = p->stride;
    for (int32_t c0 = lo; c0 < hi; c0 += MCT_ROW_CHUNK) {
        const int32_t m = mct_imin(MCT_ROW_CHUNK, hi - c0);
        int32_t sum[MCT_ROW_CHUNK];
        for (int32_t j = 0; j < m; ++j) sum[j] = -zsum;
        for (int32_t i = 0; i < p->in_c; ++i) {
            const int8_t *w = mct_weight_at(&p->w, o, i);
            for (int32_t a = 0; a < k; ++a) {
                if (off[a] < 0) continue;
                const int8_t *row = x + i * x_cs + off[a] + c0 * s - p->pad_left;
                const int8_t *wa = w + a * k;
                if (k == 3) {
                    const int32_t w0 = wa[0], w1 = wa[1], w2 = wa[2];
                    for (int32_t j = 0; j < m; ++j, row += s) sum[j] += row[0] * w0 + row[1] * w1 + row[2] * w2;
                } else {
                    for (int32_t j = 0; j < m; ++j, row += s) sum[j] += mct_taps(row, wa, k);
                }
            }
        }
        const mct_rq q = mct_rq_of(p, o);
        for (int32_t j = 0; j < m; ++j)
            mct_rq_out(&q, sum[j], t->y + o * t->y_cs + c0 + j, t->mask, t->bit0 + o * t->bit_cs + c0 + j);
    }
}

#if MCT_SIMD
/* Interior columns from lo, 8 at a time while a block's reads stay inside the input rows (stride 1 or 2,
 * mct_simd.h); returns the first column not done (general_inside takes the rest). */
static int32_t general_inside_simd(const mct_conv *p, int32_t o, const int8_t *x, int32_t x_cs, const int32_t *off,
                                   int32_t zsum, int32_t lo, int32_t hi, const row_target *t) {
    const int32_t k = p->k, s = p->stride, reach = mct_simd_reach(k, s);
    if (s > 2) return lo;
    const mct_rq q = mct_rq_of(p, o);
    const mct_simd_rq r = mct_simd_rq_of(&q);
    int32_t ox = lo;
    for (; ox + 8 <= hi && ox * s - p->pad_left + reach <= p->in_w; ox += 8) {
        __m256i acc = _mm256_set1_epi32(-zsum);
        for (int32_t i = 0; i < p->in_c; ++i) {
            const int8_t *w = mct_weight_at(&p->w, o, i), *row = x + i * x_cs + ox * s - p->pad_left;
            for (int32_t a = 0; a < k; ++a)
                if (off[a] >= 0) acc = mct_simd_taps8(row + off[a], w + a * k, k, s, acc);
        }
        mct_simd_out8(&r, &q, acc, t->y + o * t->y_cs + ox, t->mask, t->bit0 + o * t->bit_cs + ox);
    }
    return ox;
}
#endif

/* One output row of a groups-1 k x k conv (the first conv): interior columns by ``general_inside``,
 * the edge columns bounded. */
static void general_row(const mct_conv *p, const int8_t *x, int32_t x_cs, const int32_t *off, const row_target *t) {
    const int32_t k = p->k, s = p->stride, pad = p->pad_left;
    int32_t lo = p->out_w, hi = p->out_w; /* interior columns [lo, hi) */
    if (p->in_w >= k) {
        lo = mct_imin((pad + s - 1) / s, p->out_w);
        hi = mct_imax(lo, mct_imin((p->in_w - k + pad) / s + 1, p->out_w));
    }
#if MCT_DSP
    if (general_row_dsp(p, x, x_cs, off, t)) return;
#endif
    for (int32_t o = 0; o < p->out_c; ++o) {
        int32_t wsum = 0;
        for (int32_t i = 0; i < p->in_c; ++i) {
            const int8_t *w = mct_weight_at(&p->w, o, i);
            for (int32_t a = 0; a < k; ++a)
                if (off[a] >= 0)
                    for (int32_t b = 0; b < k; ++b) wsum += w[a * k + b];
        }
        for (int32_t ox = 0; ox < lo; ++ox)
            mct_conv_out(p, o, general_edge(p, o, x, x_cs, off, ox), t->y + o * t->y_cs + ox, t->mask,
                         t->bit0 + o * t->bit_cs + ox);
        int32_t mid = lo;
#if MCT_SIMD
        mid = general_inside_simd(p, o, x, x_cs, off, p->x_zero * wsum, lo, hi, t);
#endif
        general_inside(p, o, x, x_cs, off, p->x_zero * wsum, mid, hi, t);
        for (int32_t ox = hi; ox < p->out_w; ++ox)
            mct_conv_out(p, o, general_edge(p, o, x, x_cs, off, ox), t->y + o * t->y_cs + ox, t->mask,
                         t->bit0 + o * t->bit_cs + ox);
    }
}

/* Where the k tap rows of output row r sit in a view (-1: padding). */
static void window_rows(const mct_conv *p, int32_t r, const mct_rows_view *v, int32_t *off) {
    for (int32_t a = 0; a < p->k; ++a) {
        const int32_t rho = r * p->stride - p->pad + a;
        off[a] = rho >= 0 && rho < p->in_h ? view_row(v, rho) : -1;
    }
}

static void conv_stage(const mct_conv *p, const mct_rows_view *in, uint8_t *arena, int32_t r, const row_target *t) {
    int32_t off[MCT_ROWS_MAX_K];
    const int8_t *x = view_data(in, arena);
    const int32_t x_cs = in->ring * in->w;
    window_rows(p, r, in, off);
    if (p->groups > 1) {
        const int8_t *rows[MCT_ROWS_MAX_K];
        for (int32_t a = 0; a < p->k; ++a) rows[a] = off[a] >= 0 ? x + off[a] : NULL;
        mct_depthwise_rows(p, 0, p->out_c, rows, x_cs, t->y, t->y_cs, t->mask, t->bit0, t->bit_cs);
    } else if (p->k == 1 && p->stride == 1) {
        mct_pointwise(p, 0, p->out_c, x + off[0], x_cs, p->out_w, t->y, t->y_cs, t->mask, t->bit0, t->bit_cs);
    } else {
        general_row(p, x, x_cs, off, t);
    }
}

/* Where event (stage, r) writes output row r of view o (mask: the pipeline's, when o is its output). */
static row_target target_of(const mct_rows_view *o, uint8_t *arena, uint8_t *mask, int32_t r) {
    const row_target t = {view_data(o, arena) + view_row(o, r), o->ring * o->w, mask, r * o->w, o->h * o->w};
    return t;
}

/* A depthwise stage whose input (a 1x1 expand conv's output) has no ring: ``batch`` output rows from r on,
 * from a window of the expanded rows they read (k + (batch - 1) * stride rows, [channel][row][w]), for each
 * group of ``window_channels`` channels: the expand conv makes the window's rows (its output channels in
 * pairs), then each output row reads its k rows there, stride rows apart. A batch makes the rows its
 * windows share once, not once per output row. */
static void folded_stage(const mct_rows_stage *st, const mct_rows_view *in, const mct_rows_view *o, uint8_t *arena,
                         uint8_t *mask, int32_t r) {
    const mct_conv *dw = st->conv;
    const int8_t *rows[MCT_ROWS_MAX_K];
    int32_t src[MCT_ROWS_MAX_K];
    const int8_t *x = view_data(in, arena);
    int8_t *window = (int8_t *)(void *)(arena + st->window);
    const int32_t x_cs = in->ring * in->w, count = mct_imin(st->batch, o->h - r);
    const int32_t n = dw->k + (count - 1) * dw->stride, plane = (dw->k + (st->batch - 1) * dw->stride) * dw->in_w;
    const int32_t group = mct_imax(st->window_channels, 1);
    for (int32_t a = 0; a < n; ++a) { /* window row a: expanded row rho */
        const int32_t rho = r * dw->stride - dw->pad + a;
        src[a] = rho >= 0 && rho < dw->in_h ? view_row(in, rho) : -1;
    }
    for (int32_t c0 = 0; c0 < dw->out_c; c0 += group) {
        const int32_t c1 = mct_imin(c0 + group, dw->out_c);
        for (int32_t a = 0; a < n; ++a) rows[a] = src[a] >= 0 ? x + src[a] : NULL;
        mct_pointwise_rows(st->expand, c0, c1, rows, n, x_cs, dw->in_w, window, dw->in_w, plane); /* the rows */
        for (int32_t i = 0; i < count; ++i) {
            const row_target t = target_of(o, arena, mask, r + i);
            for (int32_t a = 0; a < dw->k; ++a) {
                const int32_t at = i * dw->stride + a;
                rows[a] = src[at] >= 0 ? window + at * dw->in_w : NULL;
            }
            mct_depthwise_rows(dw, c0, c1, rows, plane, t.y + c0 * t.y_cs, t.y_cs, t.mask, t.bit0 + c0 * t.bit_cs,
                               t.bit_cs);
        }
    }
}

static void add_stage(const mct_add_params *p, const mct_add_table *tables, const mct_rows_view *a,
                      const mct_rows_view *b, uint8_t *arena, int32_t r, const row_target *t) {
    const int8_t *xa = view_data(a, arena) + view_row(a, r), *xb = view_data(b, arena) + view_row(b, r);
    for (int32_t c = 0; c < a->c; ++c)
        mct_add_scaled(p, tables, xa + c * a->ring * a->w, xb + c * b->ring * b->w, t->y + c * t->y_cs, t->mask,
                       t->bit0 + c * t->bit_cs, a->w);
}

void mct_mbconv_rows(const mct_rows *p, uint8_t *arena, const int8_t *source) {
    const mct_rows_view *out = &p->views[p->out];
    uint8_t *mask = p->mask_offset >= 0 ? arena + p->mask_offset : NULL;
    if (mask != NULL) memset(mask, 0, ((size_t)out->c * (size_t)out->h * (size_t)out->w + 7) / 8);
    for (int32_t e = 0; e < p->n_events; ++e) {
        const int32_t s = p->schedule[2 * e], r = p->schedule[2 * e + 1];
        if (s == MCT_ROWS_STREAM) { /* row r of every channel of the caller's image into the ring */
            const mct_rows_view *v = &p->views[p->stream];
            int8_t *ring = view_data(v, arena) + view_row(v, r);
            for (int32_t c = 0; c < v->c; ++c)
                memcpy(ring + (size_t)c * (size_t)v->ring * (size_t)v->w,
                       source + ((size_t)c * (size_t)v->h + (size_t)r) * (size_t)v->w, (size_t)v->w);
            continue;
        }
        const mct_rows_stage *st = &p->stages[s];
        const mct_rows_view *o = &p->views[st->out];
        uint8_t *out_mask = st->out == p->out ? mask : NULL;
        const row_target t = target_of(o, arena, out_mask, r);
        if (st->add != NULL)
            add_stage(st->add, st->add_tables, &p->views[st->in], &p->views[st->in2], arena, r, &t);
        else if (st->expand != NULL)
            folded_stage(st, &p->views[st->in], o, arena, out_mask, r);
        else
            conv_stage(st->conv, &p->views[st->in], arena, r, &t);
    }
}
