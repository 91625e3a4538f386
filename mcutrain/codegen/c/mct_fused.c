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
#define MCT_DSP_S2_ROWS 12 /* (input channel, tap row) pairs of a 3x3 stride-2 conv on the DSP path */

/* Interior columns of output channel o of a 3x3 stride-2 conv with in_c <= 4 (the first conv), four at a
 * time from lo on (mct_dsp_s2_row4 per input channel and tap row); returns the first column left to the
 * portable loop. */
static int32_t general_inside_dsp(const mct_conv *p, int32_t o, const int8_t *x, int32_t x_cs, const int32_t *off,
                                  int32_t zsum, int32_t lo, int32_t hi, const row_target *t) {
    if (p->k != 3 || p->kw != 3 || p->stride != 2 || p->stride_w != 2 || p->in_c * 3 > MCT_DSP_S2_ROWS) return lo;
    const int8_t *rows[MCT_DSP_S2_ROWS];
    int32_t w02[MCT_DSP_S2_ROWS], w1[MCT_DSP_S2_ROWS], n = 0;
    for (int32_t i = 0; i < p->in_c; ++i) {
        const int8_t *w = mct_weight_at(&p->w, o, i);
        for (int32_t a = 0; a < 3; ++a)
            if (off[a] >= 0) {
                rows[n] = x + i * x_cs + off[a] - p->pad_left;
                w02[n] = mct_dsp_w02(w + 3 * a);
                w1[n++] = w[3 * a + 1];
            }
    }
    const mct_rq q = mct_rq_of(p, o);
    int8_t *y = t->y + o * t->y_cs;
    const int32_t bit = t->bit0 + o * t->bit_cs;
    int32_t ox = lo;
    for (; ox + 4 <= hi; ox += 4) {
        int32_t s[4] = {-zsum, -zsum, -zsum, -zsum};
        for (int32_t j = 0; j < n; ++j) mct_dsp_s2_row4(rows[j] + 2 * ox, w02[j], w1[j], s);
        for (int32_t j = 0; j < 4; ++j) mct_rq_out(&q, s[j], y + ox + j, t->mask, bit + ox + j);
    }
    return ox;
}
#endif

/* Interior columns [lo, hi) of output channel o, MCT_ROW_CHUNK at a time: for each (input channel,
 * tap row) its k weights are loaded once for the whole chunk; raw inputs, the zero point folded into
 * ``zsum`` (the weights of the tap rows inside the input). */
static void general_inside(const mct_conv *p, int32_t o, const int8_t *x, int32_t x_cs, const int32_t *off,
                           int32_t zsum, int32_t lo, int32_t hi, const row_target *t) {
    const int32_t k = p->k, s = p->stride;
#if MCT_DSP
    lo = general_inside_dsp(p, o, x, x_cs, off, zsum, lo, hi, t);
#endif
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

/* A depthwise row whose input (a 1x1 expand conv's output) has no ring: for each group of ``group``
 * channels, the expand conv's rows of the window go into ``window`` ([channel][k][w]: the 1x1 conv makes
 * the channels of a row together, its output channels in pairs), then the depthwise rows read them there. */
static void folded_stage(const mct_conv *dw, const mct_conv *expand, const mct_rows_view *in, uint8_t *arena,
                         int8_t *window, int32_t group, int32_t r, const row_target *t) {
    const int8_t *rows[MCT_ROWS_MAX_K];
    int32_t src[MCT_ROWS_MAX_K];
    const int8_t *x = view_data(in, arena);
    const int32_t x_cs = in->ring * in->w, plane = dw->k * dw->in_w; /* one channel of the window */
    for (int32_t a = 0; a < dw->k; ++a) { /* tap a: expanded row rho, made in window row a */
        const int32_t rho = r * dw->stride - dw->pad + a;
        src[a] = rho >= 0 && rho < dw->in_h ? view_row(in, rho) : -1;
    }
    group = mct_imax(group, 1);
    for (int32_t c0 = 0; c0 < dw->out_c; c0 += group) {
        const int32_t c1 = mct_imin(c0 + group, dw->out_c);
        for (int32_t a = 0; a < dw->k; ++a)
            if (src[a] >= 0)
                mct_pointwise(expand, c0, c1, x + src[a], x_cs, dw->in_w, window + a * dw->in_w, plane, NULL, 0, 0);
        for (int32_t a = 0; a < dw->k; ++a) rows[a] = src[a] >= 0 ? window + a * dw->in_w : NULL;
        mct_depthwise_rows(dw, c0, c1, rows, plane, t->y + c0 * t->y_cs, t->y_cs, t->mask, t->bit0 + c0 * t->bit_cs,
                           t->bit_cs);
    }
}

static void add_stage(const mct_add_params *p, const mct_rows_view *a, const mct_rows_view *b, uint8_t *arena,
                      int32_t r, const row_target *t) {
    const int8_t *xa = view_data(a, arena) + view_row(a, r), *xb = view_data(b, arena) + view_row(b, r);
    for (int32_t c = 0; c < a->c; ++c)
        for (int32_t i = 0; i < a->w; ++i) {
            uint8_t inside;
            t->y[c * t->y_cs + i] = mct_add(xa[c * a->ring * a->w + i], xb[c * b->ring * b->w + i], p, &inside);
            mct_put_bit(t->mask, t->bit0 + c * t->bit_cs + i, inside);
        }
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
        const int last = st->out == p->out;
        const row_target t = {view_data(o, arena) + view_row(o, r), o->ring * o->w, last ? mask : NULL, r * o->w,
                              o->h * o->w};
        if (st->add != NULL)
            add_stage(st->add, &p->views[st->in], &p->views[st->in2], arena, r, &t);
        else if (st->expand != NULL)
            folded_stage(st->conv, st->expand, &p->views[st->in], arena, (int8_t *)(void *)(arena + st->window),
                         st->window_channels, r, &t);
        else
            conv_stage(st->conv, &p->views[st->in], arena, r, &t);
    }
}
