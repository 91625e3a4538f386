/* mct_backward8.c: see mct_backward8.h. Plain integer loops: the same code on every core (no FPU needed);
 * the DSP forms can come later without changing a bit, since every sum is exact. */
#include "mct_backward8.h"

int32_t mct_g8_softmax_ce(const float *logits, const float *scale, int32_t k, int32_t label, float *loss,
                          float *grad, int8_t *out) {
    mct_softmax_ce(logits, k, label, loss, grad);
    return mct_g8_from_products(grad, scale, k, out);
}

/* sum over the taps of ranges ra x rb of w[a][b] * g_o[oy][ox], int32 (mct_tap_range_sum's order; exact). */
static int32_t tap_range_sum8(const int8_t *w, int32_t kw, int32_t sh, int32_t sw, const int8_t *g_o, int32_t out_w,
                              const mct_tap_range *ra, const mct_tap_range *rb) {
    int32_t acc = 0;
    for (int32_t a = ra->lo, oy = ra->first; a <= ra->hi; a += sh, --oy) {
        const int8_t *wa = w + a * kw;
        const int8_t *g_row = g_o + oy * out_w;
        for (int32_t b = rb->lo, ox = rb->first; b <= rb->hi; b += sw, --ox) acc += (int32_t)wa[b] * g_row[ox];
    }
    return acc;
}

static int32_t transpose_tap_sum8(const mct_conv *p, const int8_t *w, const int8_t *g_o, int32_t y, int32_t x) {
    const mct_tap_range ra = mct_tap_range_of(y + p->pad, p->stride, p->out_h, p->k);
    const mct_tap_range rb = mct_tap_range_of(x + p->pad_left, p->stride_w, p->out_w, p->kw);
    return tap_range_sum8(w, p->kw, p->stride, p->stride_w, g_o, p->out_w, &ra, &rb);
}

static void pointwise_grad_x8(const mct_conv *p, const int8_t *g, int32_t *acc) {
    const int32_t n = p->in_h * p->in_w;
    memset(acc, 0, (size_t)p->in_c * (size_t)n * sizeof *acc);
    for (int32_t o = 0; o < p->out_c; ++o) {
        const mct_weight_row w = mct_row_of(&p->w, o);
        const int8_t *g_o = g + o * n;
        for (int32_t i = 0; i < p->in_c; ++i) {
            const int32_t wi = mct_row_at(&w, i);
            int32_t *acc_i = acc + i * n;
            for (int32_t q = 0; q < n; ++q) acc_i[q] += wi * g_o[q];
        }
    }
}

static void spatial_grad_x8(const mct_conv *p, const int8_t *g, int32_t *acc) {
    const int32_t in_n = p->in_h * p->in_w, out_n = p->out_h * p->out_w;
    for (int32_t i = 0; i < p->in_c; ++i)
        for (int32_t y = 0; y < p->in_h; ++y)
            for (int32_t x = 0; x < p->in_w; ++x) {
                int32_t sum = 0;
                if (p->groups > 1)
                    sum = transpose_tap_sum8(p, mct_weight_at(&p->w, i, 0), g + i * out_n, y, x);
                else
                    for (int32_t o = 0; o < p->out_c; ++o)
                        sum += transpose_tap_sum8(p, mct_weight_at(&p->w, o, i), g + o * out_n, y, x);
                acc[i * in_n + y * p->in_w + x] = sum;
            }
}

int32_t mct_g8_conv2d_grad_x(const mct_conv *p, const int8_t *g, int32_t e, int32_t *acc, int8_t *out) {
    if (mct_is_pointwise(p))
        pointwise_grad_x8(p, g, acc);
    else
        spatial_grad_x8(p, g, acc);
    return mct_g8_normalize32(acc, p->in_c * p->in_h * p->in_w, e, out);
}

/* sum over the output positions whose input (oy * s - pad + a, ox * s - pad + b) is inside of
 * (x - x_zero) * g (mct_grad_w_element's positions; exact). */
static int32_t grad_w_element8(const mct_conv *p, const int8_t *x_i, const int8_t *g_o, int32_t a, int32_t b) {
    const int32_t sh = p->stride, sw = p->stride_w, in_w = p->in_w, out_w = p->out_w, x_zero = p->x_zero;
    const int32_t oy0 = mct_first_inside(p->pad - a, sh);
    const int32_t oy1 = mct_imin(p->out_h, mct_end_inside(p->in_h, p->pad - a, sh));
    const int32_t ox0 = mct_first_inside(p->pad_left - b, sw);
    const int32_t ox1 = mct_imin(out_w, mct_end_inside(in_w, p->pad_left - b, sw));
    int32_t acc = 0;
    for (int32_t oy = oy0; oy < oy1; ++oy) {
        const int8_t *g_row = g_o + oy * out_w;
        const int8_t *x_row = x_i + (oy * sh - p->pad + a) * in_w;
        for (int32_t ox = ox0, ix = ox0 * sw - p->pad_left + b; ox < ox1; ++ox, ix += sw)
            acc += ((int32_t)x_row[ix] - x_zero) * g_row[ox];
    }
    return acc;
}

void mct_g8_conv2d_grad_w(const mct_conv *p, const int8_t *x, const int8_t *g, int32_t rows, int32_t cols,
                          int32_t *out) {
    const int32_t taps = p->k * p->kw, in_n = p->in_h * p->in_w, out_n = p->out_h * p->out_w;
    for (int32_t r = 0; r < rows; ++r)
        for (int32_t c = 0; c < cols; ++c)
            for (int32_t t = 0; t < taps; ++t) {
                const int32_t channel = p->groups > 1 ? r : c;
                out[(r * cols + c) * taps + t] = grad_w_element8(p, x + channel * in_n, g + r * out_n, t / p->kw,
                                                                 t % p->kw);
            }
}

void mct_g8_conv2d_grad_b(const int8_t *g, int32_t channels, int32_t plane, int32_t *out) {
    for (int32_t c = 0; c < channels; ++c) {
        int32_t acc = 0;
        for (int32_t q = 0; q < plane; ++q) acc += g[c * plane + q];
        out[c] = acc;
    }
}

int32_t mct_g8_linear_grad_x(const mct_linear *p, const int8_t *g, int32_t e, int32_t *acc, int8_t *out) {
    for (int32_t c = 0; c < p->in_features; ++c) {
        int32_t sum = 0;
        for (int32_t k = 0; k < p->out_features; ++k) sum += (int32_t)g[k] * *mct_weight_at(&p->w, k, c);
        acc[c] = sum;
    }
    return mct_g8_normalize32(acc, p->in_features, e, out);
}

void mct_g8_linear_grad_w(const mct_linear *p, const int8_t *g, const int8_t *x, int32_t *out) {
    for (int32_t k = 0; k < p->out_features; ++k)
        for (int32_t c = 0; c < p->in_features; ++c)
            out[k * p->in_features + c] = (int32_t)g[k] * ((int32_t)x[c] - p->x_zero);
}

void mct_g8_linear_grad_b(const mct_linear *p, const int8_t *g, int32_t *out) {
    for (int32_t k = 0; k < p->out_features; ++k) out[k] = g[k];
}

int32_t mct_g8_avgpool_grad(const int8_t *g, int32_t e, const uint8_t *mask, int32_t m, int32_t sh,
                            int32_t channels, int32_t plane, int8_t *out) {
    const int32_t top = mct_g8_scale(g, e, mask, &m, &sh, 0, channels, 1, out); /* spreading keeps the peak */
    for (int32_t c = channels - 1; c >= 0; --c) { /* from the end: out[c] is read before it is overwritten */
        const int8_t v = out[c];
        for (int32_t q = plane - 1; q >= 0; --q) out[c * plane + q] = v;
    }
    return top;
}

int32_t mct_g8_grad_sum(const int8_t *const *terms, const int32_t *exponents, int32_t n_terms, int32_t n,
                        int8_t *out) {
    int32_t e = exponents[0];
    const int8_t *sum = terms[0];
    for (int32_t t = 1; t < n_terms; ++t) {
        e = mct_g8_add(sum, e, terms[t], exponents[t], n, out);
        sum = out;
    }
    if (sum != out) memcpy(out, sum, (size_t)n);
    return e;
}

void mct_g8_update_weight(const mct_update *u, const int32_t *g, int32_t e, uint32_t step) {
    const uint32_t key = mct_stream_key(u->seed, step, u->tensor_id);
    const float lr = *u->lr;
    const int32_t per_row = u->cols * u->inner;
    for (int32_t r = 0; r < u->rows; ++r) {
        int32_t m, x;
        mct_g8_update_factor(lr, u->qas[r], &m, &x);
        for (int32_t j = 0; j < per_row; ++j) {
            const int32_t i = r * per_row + j;
            u->w[i] = mct_g8_update_weight_element(u->w[i], g[i], e, m, x, mct_stream_word(key, (uint32_t)i));
        }
    }
}

void mct_g8_update_bias(const mct_update *u, const int32_t *g, int32_t e) {
    const float lr = *u->lr;
    for (int32_t r = 0; r < u->rows; ++r) {
        int32_t m, x;
        mct_g8_update_factor(lr, u->qas[r], &m, &x);
        u->b[r] = mct_g8_update_bias_element(u->b[r], g[r], e, m, x);
    }
}
