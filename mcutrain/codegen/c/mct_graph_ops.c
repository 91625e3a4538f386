/* mct_graph_ops.c: see mct_kernels.h: the TFLite ops of imported graphs, forward and backward (split from
 * mct_kernels.c to keep each file one part). */
#include "mct_backward8.h"

#include <string.h>

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
    mct_clear_bits(mask, p->channels * out_plane);
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
    mct_clear_bits(mask, p->channels * p->out_h * p->out_w);
    for (int32_t c = 0; c < p->channels; ++c)
        for (int32_t oh = 0; oh < p->out_h; ++oh)
            for (int32_t ow = 0; ow < p->out_w; ++ow)
                pool_out(p, x[c * plane + window_argmax(p, x + c * plane, oh, ow)], y, mask,
                         (c * p->out_h + oh) * p->out_w + ow);
}

void mct_tfl_mean(const mct_tfl_mean_params *p, const int8_t *x, int8_t *y, uint8_t *mask) {
    mct_clear_bits(mask, p->channels);
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

/* ------------------------------------------------------------------------------------------------
 * Their integer backward (--backward int8, mct_backward8.h): each input's exact sum over the windows
 * that reach it, recomputed in the two passes of mct_g8_normalize_by. */

typedef struct {
    const mct_tfl_pool *p;
    const int8_t *g, *x;
    const uint8_t *mask;
    const int32_t *m, *sh;
    int32_t base;
} pool_grad8;

/* The outputs whose windows cover input k = (c, i, j), as ranges [*oh0, *oh1) x [*ow0, *ow1). */
static void covering(const mct_tfl_pool *p, int32_t k, int32_t *c, int32_t *oh0, int32_t *oh1, int32_t *ow0,
                     int32_t *ow1) {
    const int32_t plane = p->in_h * p->in_w, i = (k % plane) / p->in_w, j = k % p->in_w;
    *c = k / plane;
    windows_over(i, p->sh, p->pad_top, p->kh, p->out_h, oh0, oh1);
    windows_over(j, p->sw, p->pad_left, p->kw, p->out_w, ow0, ow1);
}

/* sum of g[o] * mask[o] * m[pos] * 2^(sh[pos] - base) over the windows covering input k. */
static int64_t avgpool_sum8(const void *src, int32_t k) {
    const pool_grad8 *s = (const pool_grad8 *)src;
    const mct_tfl_pool *p = s->p;
    int32_t c, oh0, oh1, ow0, ow1;
    covering(p, k, &c, &oh0, &oh1, &ow0, &ow1);
    int64_t acc = 0;
    for (int32_t oh = oh0; oh < oh1; ++oh)
        for (int32_t ow = ow0; ow < ow1; ++ow) {
            const int32_t pos = oh * p->out_w + ow, o = c * p->out_h * p->out_w + pos;
            if (mct_get_bit(s->mask, o)) acc += (int64_t)s->g[o] * s->m[pos] * ((int64_t)1 << (s->sh[pos] - s->base));
        }
    return acc;
}

int32_t mct_g8_tfl_avgpool_grad(const mct_tfl_pool *p, const int8_t *g, int32_t e, const uint8_t *mask,
                                const int32_t *m, const int32_t *sh, int8_t *out) {
    int32_t base = sh[0];
    for (int32_t pos = 1; pos < p->out_h * p->out_w; ++pos) base = sh[pos] < base ? sh[pos] : base;
    const pool_grad8 s = {p, g, NULL, mask, m, sh, base};
    return mct_g8_normalize_by(avgpool_sum8, &s, p->channels * p->in_h * p->in_w, e + base, out);
}

/* sum of g[o] * mask[o] over the windows covering input k whose first maximum it is. */
static int64_t maxpool_sum8(const void *src, int32_t k) {
    const pool_grad8 *s = (const pool_grad8 *)src;
    const mct_tfl_pool *p = s->p;
    const int32_t plane = p->in_h * p->in_w;
    int32_t c, oh0, oh1, ow0, ow1;
    covering(p, k, &c, &oh0, &oh1, &ow0, &ow1);
    int64_t acc = 0;
    for (int32_t oh = oh0; oh < oh1; ++oh)
        for (int32_t ow = ow0; ow < ow1; ++ow) {
            const int32_t o = (c * p->out_h + oh) * p->out_w + ow;
            if (mct_get_bit(s->mask, o) && window_argmax(p, s->x + c * plane, oh, ow) == k % plane) acc += s->g[o];
        }
    return acc;
}

int32_t mct_g8_tfl_maxpool_grad(const mct_tfl_pool *p, const int8_t *g, int32_t e, const uint8_t *mask,
                                const int8_t *x, int8_t *out) {
    const pool_grad8 s = {p, g, x, mask, NULL, NULL, 0};
    return mct_g8_normalize_by(maxpool_sum8, &s, p->channels * p->in_h * p->in_w, e, out);
}

void mct_nhwc_to_nchw_i8(const int8_t *g, int32_t channels, int32_t plane, int8_t *out) {
    for (int32_t c = 0; c < channels; ++c)
        for (int32_t q = 0; q < plane; ++q) out[c * plane + q] = g[q * channels + c];
}
