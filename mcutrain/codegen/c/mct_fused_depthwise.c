/* mct_fused_depthwise.c: see mct_fused.h (the block backward's depthwise conv input gradient, channel by
 * channel: mct_fg_depthwise_grad_x).
 *
 * Each input position sums the taps whose output position exists, a (row) then b (column) ascending, as
 * mct_tap_range_sum. Interior columns of a 3x3 stride-1 kernel hold the nine weights in registers; other
 * positions (every position of a 4x4 plane under a 5x5 or 7x7 kernel) walk their tap rows, a row of n
 * taps jumping into an unrolled run of n terms at constant offsets (strides 1 and 2). */
#include "mct_fused.h"

#define MCT_FG_DW_K 7 /* depthwise kernels up to 7x7 take the fast paths below (float weights on the stack) */

/* acc + g * w[i], mct_mac_exact's value: float32 accumulators take the weight converted once (wf[i]). */
#define MCT_DW_MAC(acc, gv, i) \
    (sizeof(mct_acc_t) == sizeof(float) ? (mct_acc_t)mct_fmac((float)(acc), (gv), wf[i])     \
                                        : mct_mac_exact((acc), (gv), w[i]))

/* Interior columns [x0, x1) of input row y of a 3x3 stride-1 depthwise transpose whose three tap rows
 * are all inside (g0: the output row of tap row 0, g1 and g2 the rows above it): the nine taps of
 * mct_tap_range_sum in its order (a, then b ascending), the weights held in registers. */
static void dw_grad_x_row3(const int8_t *w, const float *wf, const float *g0, int32_t out_w, int32_t pad,
                           int32_t x0, int32_t x1, float *out_y) {
    const float *g1 = g0 - out_w, *g2 = g1 - out_w;
    for (int32_t x = x0; x < x1; ++x) {
        const int32_t ox = x + pad;
        mct_acc_t acc = 0;
        acc = MCT_DW_MAC(acc, g0[ox], 0);
        acc = MCT_DW_MAC(acc, g0[ox - 1], 1);
        acc = MCT_DW_MAC(acc, g0[ox - 2], 2);
        acc = MCT_DW_MAC(acc, g1[ox], 3);
        acc = MCT_DW_MAC(acc, g1[ox - 1], 4);
        acc = MCT_DW_MAC(acc, g1[ox - 2], 5);
        acc = MCT_DW_MAC(acc, g2[ox], 6);
        acc = MCT_DW_MAC(acc, g2[ox - 1], 7);
        acc = MCT_DW_MAC(acc, g2[ox - 2], 8);
        out_y[x] = (float)acc;
    }
}

/* Tap rows ``rows`` (from the first: weights ``w_step`` apart, gradient rows ``out_w`` apart) of n taps
 * each (n <= 7), S apart in the weight row, the gradient's column descending: term t = 7 - n .. 6 of a
 * row reads g[6 - t] (g: the row's lowest gradient read) and wa[(t - 6) * S] (wa: its last weight), at
 * constant offsets, entered at its count. The float32 accumulator's terms, in mct_tap_range_sum's order. */
static inline MCT_ALWAYS_INLINE float dw_rows_sum(const float *g, const float *wa, int32_t n, int32_t rows,
                                                  int32_t out_w, int32_t w_step, const int32_t S) {
    float sum = 0.0f;
    for (int32_t r = 0; r < rows; ++r, g -= out_w, wa += w_step) {
#define MCT_DW_T(t) sum = mct_fmac(sum, g[6 - (t)], wa[((t) - 6) * S])
        switch (n) {
        case 7: MCT_DW_T(0); /* fall through */
        case 6: MCT_DW_T(1); /* fall through */
        case 5: MCT_DW_T(2); /* fall through */
        case 4: MCT_DW_T(3); /* fall through */
        case 3: MCT_DW_T(4); /* fall through */
        case 2: MCT_DW_T(5); /* fall through */
        case 1: MCT_DW_T(6); /* fall through */
        default: break;
        }
#undef MCT_DW_T
    }
    return sum;
}

/* The taps from b = lo, n of them, of the tap rows ra, the first one's gradient column ``first``:
 * dw_rows_sum for strides 1 and 2 (float32 accumulators). */
static inline MCT_ALWAYS_INLINE float dw_taps_sum(const float *wf, int32_t k, int32_t s, const float *g_o,
                                                  int32_t out_w, const mct_tap_range *ra, int32_t lo, int32_t n,
                                                  int32_t first) {
    const int32_t rows = ra->lo <= ra->hi ? (ra->hi - ra->lo) / s + 1 : 0;
    const float *g = g_o + ra->first * out_w + first - (n - 1), *wa = wf + ra->lo * k + lo + (n - 1) * s;
    return s == 1 ? dw_rows_sum(g, wa, n, rows, out_w, k, 1) : dw_rows_sum(g, wa, n, rows, out_w, 2 * k, 2);
}

/* mct_tap_range_sum (k x k taps, stride s in both directions) in its order, each term MCT_DW_MAC's: float32
 * accumulators take the weights converted once (wf), not one conversion per term. */
static inline mct_acc_t dw_tap_range_sum(const int8_t *w, const float *wf, int32_t k, int32_t s, const float *g_o,
                                         int32_t out_w, const mct_tap_range *ra, const mct_tap_range *rb) {
    if (sizeof(mct_acc_t) == sizeof(float) && s <= 2) {
        const int32_t n = rb->lo <= rb->hi ? (rb->hi - rb->lo) / s + 1 : 0;
        return (mct_acc_t)dw_taps_sum(wf, k, s, g_o, out_w, ra, rb->lo, n, rb->first);
    }
    mct_acc_t acc = 0;
    for (int32_t a = ra->lo, oy = ra->first; a <= ra->hi; a += s, --oy) {
        const float *g = g_o + oy * out_w + rb->first;
        for (int32_t b = rb->lo; b <= rb->hi; b += s, --g) acc = MCT_DW_MAC(acc, *g, a * k + b);
    }
    return acc;
}

/* Interior columns [x0, x1) of input row y (tap rows ra): each column's taps b in [xp % s, k), all
 * inside the output row, in mct_tap_range_sum's order, its tap phase and first output column tracked
 * from column to column instead of divided out. */
static void dw_grad_x_inside(const int8_t *w, const float *wf, const mct_conv *p, const float *g_c,
                             const mct_tap_range *ra, int32_t x0, int32_t x1, float *out_y) {
    const int32_t k = p->k, s = p->stride, out_w = p->out_w;
    int32_t lo = (x0 + p->pad) % s, first = (x0 + p->pad) / s;
    for (int32_t x = x0; x < x1; ++x) {
        mct_acc_t acc = 0;
        if (sizeof(mct_acc_t) == sizeof(float) && s <= 2) /* taps b = lo, lo + s, ... < k */
            acc = (mct_acc_t)dw_taps_sum(wf, k, s, g_c, out_w, ra, lo, (k - 1 - lo) / s + 1, first);
        else
            for (int32_t a = ra->lo, oy = ra->first; a <= ra->hi; a += s, --oy) {
                const float *g_row = g_c + oy * out_w;
                for (int32_t b = lo, ox = first; b < k; b += s, --ox) acc = MCT_DW_MAC(acc, g_row[ox], a * k + b);
            }
        out_y[x] = (float)acc;
        if (++lo == s) {
            lo = 0;
            ++first;
        }
    }
}

/* One position of a 3x3 stride-1 transpose with ROWS tap rows (weights u0.. of the first, u3.. and u6.. of
 * the next): the gradient columns ox (n*), ox - 1 (m*), ox - 2 (l*) of each tap row, in mct_tap_range_sum's
 * order (a, then b ascending); a ROWS below 3 drops the rows after it. */
#define MCT_S1K3_SUM(out, n0, m0, l0, n1, m1, l1, n2, m2, l2)                    \
    do {                                                                          \
        float acc = mct_fmac(mct_fmac(mct_fmac(0.0f, n0, u0), m0, u1), l0, u2);   \
        if (ROWS >= 2) acc = mct_fmac(mct_fmac(mct_fmac(acc, n1, u3), m1, u4), l1, u5); \
        if (ROWS == 3) acc = mct_fmac(mct_fmac(mct_fmac(acc, n2, u6), m2, u7), l2, u8); \
        (out) = acc;                                                              \
    } while (0)

/* Interior columns [x0, x1) of an input row of a 3x3 stride-1 transpose (float32 accumulators) whose ROWS
 * (1 to 3, a constant) tap rows start at gradient row g0 (the next ones out_w floats above) and weight
 * row u: a window of three gradient columns slides along the rows, three positions per turn of the loop
 * (each column loaded once, the registers renamed instead of moved), the weights in registers. */
static inline MCT_ALWAYS_INLINE void dw_s1k3_inside(const float *u, const float *g0, const int32_t ROWS, int32_t out_w,
                                                    int32_t pad, int32_t x0, int32_t x1, float *out_y) {
    const float *g1 = ROWS >= 2 ? g0 - out_w : g0, *g2 = ROWS == 3 ? g1 - out_w : g1;
    const float u0 = u[0], u1 = u[1], u2 = u[2];
    const float u3 = ROWS >= 2 ? u[3] : 0.0f, u4 = ROWS >= 2 ? u[4] : 0.0f, u5 = ROWS >= 2 ? u[5] : 0.0f;
    const float u6 = ROWS == 3 ? u[6] : 0.0f, u7 = ROWS == 3 ? u[7] : 0.0f, u8 = ROWS == 3 ? u[8] : 0.0f;
    if (x0 >= x1) return;
    int32_t x = x0, ox = x0 + pad; /* >= 2: interior */
    float a0 = g0[ox - 2], a1 = g1[ox - 2], a2 = g2[ox - 2], b0 = g0[ox - 1], b1 = g1[ox - 1], b2 = g2[ox - 1];
    float c0, c1, c2;
    for (; x + 3 <= x1; x += 3, ox += 3) {
        c0 = g0[ox], c1 = g1[ox], c2 = g2[ox];
        MCT_S1K3_SUM(out_y[x], c0, b0, a0, c1, b1, a1, c2, b2, a2);
        a0 = g0[ox + 1], a1 = g1[ox + 1], a2 = g2[ox + 1];
        MCT_S1K3_SUM(out_y[x + 1], a0, c0, b0, a1, c1, b1, a2, c2, b2);
        b0 = g0[ox + 2], b1 = g1[ox + 2], b2 = g2[ox + 2];
        MCT_S1K3_SUM(out_y[x + 2], b0, a0, c0, b1, a1, c1, b2, a2, c2);
    }
    for (; x < x1; ++x, ++ox) { /* the last one or two columns */
        c0 = g0[ox], c1 = g1[ox], c2 = g2[ox];
        MCT_S1K3_SUM(out_y[x], c0, b0, a0, c1, b1, a1, c2, b2, a2);
        a0 = b0, a1 = b1, a2 = b2, b0 = c0, b1 = c1, b2 = c2;
    }
}
#undef MCT_S1K3_SUM

static void dw_s1k3_row(const float *u, const float *g0, int32_t rows, int32_t out_w, int32_t pad, int32_t x0,
                        int32_t x1, float *out_y) {
    if (rows == 3)
        dw_s1k3_inside(u, g0, 3, out_w, pad, x0, x1, out_y);
    else if (rows == 2)
        dw_s1k3_inside(u, g0, 2, out_w, pad, x0, x1, out_y);
    else
        dw_s1k3_inside(u, g0, 1, out_w, pad, x0, x1, out_y);
}

/* Tap b = i of one tap row for two neighbouring positions: gradient column f - i for the first (acc0),
 * f + 1 - i (the column the previous tap read, kept in ``prev``) for the second. */
#define MCT_S1_PAIR_T(i)                       \
    do {                                       \
        if ((i) < K) {                         \
            const float wi = W[i], gi = G[-(i)]; \
            acc0 = mct_fmac(acc0, gi, wi);     \
            acc1 = mct_fmac(acc1, prev, wi);   \
            prev = gi;                         \
        }                                      \
    } while (0)

/* Interior columns [x0, x1) of an input row of a KxK (5 or 7, a constant) stride-1 transpose (float32
 * accumulators) whose ``rows`` tap rows start at gradient row g_row and weight row u: two positions per
 * pass over the taps, each gradient value loaded once for both (each position's sum in dw_rows_sum's
 * order: tap rows, then b ascending); an odd last position by dw_rows_sum. ``f``: x0's first column. */
static inline MCT_ALWAYS_INLINE void dw_s1_inside(const float *u, const float *g_row, int32_t rows, int32_t out_w,
                                                  const int32_t K, int32_t f, int32_t x0, int32_t x1, float *out_y) {
    int32_t x = x0;
    for (; x + 2 <= x1; x += 2, f += 2) {
        float acc0 = 0.0f, acc1 = 0.0f;
        const float *G = g_row + f, *W = u;
        for (int32_t r = 0; r < rows; ++r, G -= out_w, W += K) {
            float prev = G[1];
            MCT_S1_PAIR_T(0);
            MCT_S1_PAIR_T(1);
            MCT_S1_PAIR_T(2);
            MCT_S1_PAIR_T(3);
            MCT_S1_PAIR_T(4);
            MCT_S1_PAIR_T(5);
            MCT_S1_PAIR_T(6);
        }
        out_y[x] = acc0;
        out_y[x + 1] = acc1;
    }
    if (x < x1) out_y[x] = dw_rows_sum(g_row + f - (K - 1), u + K - 1, K, rows, out_w, K, 1);
}
#undef MCT_S1_PAIR_T

static void dw_s1_row(const float *u, const float *g_row, int32_t rows, int32_t out_w, int32_t k, int32_t f,
                      int32_t x0, int32_t x1, float *out_y) {
    if (k == 5)
        dw_s1_inside(u, g_row, rows, out_w, 5, f, x0, x1, out_y);
    else
        dw_s1_inside(u, g_row, rows, out_w, 7, f, x0, x1, out_y);
}

/* Interior columns [x0, x1) of an input row of a 3x3 stride-2 transpose (float32 accumulators) whose
 * ROWS (1 or 2, a constant) tap rows start at gradient row h0 and weight row u (the next ones out_w
 * floats above and 6 weights on): a column of tap phase 0 sums taps b = 0, 2 (gradient columns f, f - 1),
 * one of phase 1 tap b = 1 (column f), row after row, as dw_rows_sum; the column f - 1 of a phase-0
 * position is the f of the pair before, kept in a register, and the weights are held in registers. */
static inline MCT_ALWAYS_INLINE void dw_s2k3_inside(const float *u, const float *h0, const int32_t ROWS, int32_t out_w,
                                                    int32_t lo, int32_t f, int32_t x0, int32_t x1, float *out_y) {
    const float *h1 = h0 - out_w;
    const float u0 = u[0], u1 = u[1], u2 = u[2], v0 = u[6], v1 = u[7], v2 = u[8];
    int32_t x = x0;
    if (lo == 1 && x < x1) { /* a phase-1 column first: then phase 0 at f + 1 */
        const float acc = mct_fmac(0.0f, h0[f], u1);
        out_y[x++] = ROWS == 2 ? mct_fmac(acc, h1[f], v1) : acc;
        ++f;
    }
    if (x >= x1) return;
    float p0 = h0[f - 1], p1 = ROWS == 2 ? h1[f - 1] : 0.0f; /* gradient column f - 1 of both rows */
    for (; x < x1; x += 2, ++f) {
        const float c0 = h0[f], c1 = ROWS == 2 ? h1[f] : 0.0f;
        float acc = mct_fmac(mct_fmac(0.0f, c0, u0), p0, u2);
        out_y[x] = ROWS == 2 ? mct_fmac(mct_fmac(acc, c1, v0), p1, v2) : acc;
        if (x + 1 == x1) break;
        acc = mct_fmac(0.0f, c0, u1);
        out_y[x + 1] = ROWS == 2 ? mct_fmac(acc, c1, v1) : acc;
        p0 = c0, p1 = c1;
    }
}

/* An edge column's taps as dw_rows_sum takes them: n, the last one's weight column, the lowest gradient
 * column read (the same for every row). */
typedef struct {
    int32_t n, w, g;
} dw_column;

static dw_column dw_column_of(int32_t xp, int32_t s, int32_t out_w, int32_t k) {
    const mct_tap_range rb = mct_tap_range_of(xp, s, out_w, k);
    const int32_t n = rb.lo <= rb.hi ? (rb.hi - rb.lo) / s + 1 : 0;
    const dw_column col = {n, rb.lo + (n - 1) * s, rb.first - (n - 1)};
    return col;
}

/* Edge columns cols[0, count) of an input row whose tap rows start at gradient row g_row and weight row
 * w_row (float32 accumulators, stride S): each position's sum, no tap ranges recomputed. */
static inline MCT_ALWAYS_INLINE void dw_edges(const float *g_row, const float *w_row, int32_t rows,
                                              const dw_column *cols, int32_t count, int32_t out_w, int32_t k,
                                              const int32_t S, float *out) {
    for (int32_t i = 0; i < count; ++i)
        out[i] = cols[i].n > 0 && rows > 0
                     ? dw_rows_sum(g_row + cols[i].g, w_row + cols[i].w, cols[i].n, rows, out_w, S * k, S)
                     : 0.0f;
}

static void dw_s2k3_row(const float *u, const float *h0, int32_t rows, int32_t out_w, int32_t lo, int32_t f,
                        int32_t x0, int32_t x1, float *out_y) {
    if (rows == 2)
        dw_s2k3_inside(u, h0, 2, out_w, lo, f, x0, x1, out_y);
    else
        dw_s2k3_inside(u, h0, 1, out_w, lo, f, x0, x1, out_y);
}

/* Stride 1 or 2, kernels up to 7x7, float32 accumulators: the edge columns' taps worked out once per call. */
static void dw_grad_x_f32(const int8_t *w, const float *wf, const mct_conv *p, const float *g_c, int32_t x0,
                          int32_t x1, float *out) {
    const int32_t k = p->k, s = p->stride, in_w = p->in_w, out_w = p->out_w, pad = p->pad, right = in_w - x1;
    dw_column cols[2 * MCT_FG_DW_K]; /* left edge columns, then right ones */
    for (int32_t x = 0; x < x0; ++x) cols[x] = dw_column_of(x + pad, s, out_w, k);
    for (int32_t x = x1; x < in_w; ++x) cols[x0 + x - x1] = dw_column_of(x + pad, s, out_w, k);
    for (int32_t y = 0; y < p->in_h; ++y) {
        const mct_tap_range ra = mct_tap_range_of(y + pad, s, p->out_h, k);
        const int32_t rows = ra.lo <= ra.hi ? (ra.hi - ra.lo) / s + 1 : 0;
        const float *g_row = g_c + ra.first * out_w, *w_row = wf + ra.lo * k;
        float *out_y = out + y * in_w;
        if (s == 1) {
            dw_edges(g_row, w_row, rows, cols, x0, out_w, k, 1, out_y);
            dw_edges(g_row, w_row, rows, cols + x0, right, out_w, k, 1, out_y + x1);
        } else {
            dw_edges(g_row, w_row, rows, cols, x0, out_w, k, 2, out_y);
            dw_edges(g_row, w_row, rows, cols + x0, right, out_w, k, 2, out_y + x1);
        }
        if (k == 3 && s == 1 && rows >= 1 && rows <= 3)
            dw_s1k3_row(w_row, g_row, rows, out_w, pad, x0, x1, out_y);
        else if ((k == 5 || k == 7) && s == 1)
            dw_s1_row(w_row, g_row, rows, out_w, k, x0 + pad, x0, x1, out_y);
        else if (k == 3 && s == 2 && (rows == 1 || rows == 2))
            dw_s2k3_row(w_row, g_row, rows, out_w, (x0 + pad) % 2, (x0 + pad) / 2, x0, x1, out_y);
        else
            dw_grad_x_inside(w, wf, p, g_c, &ra, x0, x1, out_y);
    }
}

void mct_fg_depthwise_grad_x(const mct_conv *p, int32_t c, const float *g_c, float *out) {
    const int8_t *w = mct_weight_at(&p->w, c, 0);
    const int32_t k = p->k, s = p->stride, in_w = p->in_w, out_w = p->out_w, pad = p->pad;
    float wf[MCT_FG_DW_K * MCT_FG_DW_K];
    const int fast = k <= MCT_FG_DW_K;
    /* interior columns [x0, x1): x + pad >= k - 1 and (x + pad) / s < out_w */
    const int32_t x0 = fast ? mct_imin(mct_imax(0, k - 1 - pad), in_w) : in_w;
    const int32_t x1 = fast ? mct_imax(x0, mct_imin(in_w, s * out_w - pad)) : in_w;
    mct_tap_range edge[2 * MCT_FG_DW_K]; /* the edge columns' tap ranges, the same for every row */
    const int32_t right = in_w - x1;
    const int edges_cached = fast && x0 + right <= 2 * MCT_FG_DW_K;
    for (int32_t i = 0; fast && i < k * k; ++i) wf[i] = (float)w[i];
    if (sizeof(mct_acc_t) == sizeof(float) && edges_cached && s <= 2) {
        dw_grad_x_f32(w, wf, p, g_c, x0, x1, out);
        return;
    }
    for (int32_t x = 0; edges_cached && x < x0; ++x) edge[x] = mct_tap_range_of(x + pad, s, out_w, k);
    for (int32_t x = x1; edges_cached && x < in_w; ++x) edge[x0 + x - x1] = mct_tap_range_of(x + pad, s, out_w, k);
    for (int32_t y = 0; y < p->in_h; ++y) {
        const mct_tap_range ra = mct_tap_range_of(y + pad, s, p->out_h, k); /* once per row */
        float *out_y = out + y * in_w;
        for (int32_t x = 0; x < in_w; ++x) {
            if (x == x0) {
                if (k == 3 && s == 1 && ra.lo == 0 && ra.hi == 2)
                    dw_grad_x_row3(w, wf, g_c + ra.first * out_w, out_w, pad, x0, x1, out_y);
                else
                    dw_grad_x_inside(w, wf, p, g_c, &ra, x0, x1, out_y);
                x = x1;
                if (x >= in_w) break;
            }
            const mct_tap_range rb = edges_cached ? edge[x < x0 ? x : x0 + x - x1]
                                                  : mct_tap_range_of(x + pad, s, out_w, k);
            out_y[x] = (float)(fast ? dw_tap_range_sum(w, wf, k, s, g_c, out_w, &ra, &rb)
                                    : mct_tap_range_sum(w, k, s, s, g_c, out_w, &ra, &rb));
        }
    }
}
#undef MCT_DW_MAC
