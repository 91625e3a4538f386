/* mct_backward.c: see mct_kernels.h: the loss, the backward kernels and the updates (the forward is in
 * mct_kernels.c, the TFLite graph ops in mct_graph_ops.c; split to keep each file one part). */
#include "mct_kernels.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------------
 * Loss: float64 like the reference, with exp and log of our own (libm only gives expf/logf here). */

static double pow2(int32_t e) { /* 2^e for -1022 <= e <= 1023, from its bits */
    const uint64_t bits = (uint64_t)(e + 1023) << 52;
    double f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static double scale2(double x, int32_t e) { /* x * 2^e */
    while (e > 1023) {
        x *= pow2(1023);
        e -= 1023;
    }
    while (e < -1022) {
        x *= pow2(-1022);
        e += 1022;
    }
    return x * pow2(e);
}

double mct_exp(double x) {
    static const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    static const double log2e = 1.44269504088896338700e+00;
    if (x != x) return x;
    if (x > 709.782712893384) return INFINITY;
    if (x < -745.2) return 0.0;
    const double t = x * log2e;
    const int32_t n = (int32_t)(t < 0 ? t - 0.5 : t + 0.5); /* nearest integer */
    const double r = (x - n * ln2_hi) - n * ln2_lo;         /* |r| <= ln2 / 2 */
    double p = 1.0;                                          /* Taylor series to r^17/17!: < 1e-19 left */
    for (int32_t i = 17; i >= 1; --i) p = 1.0 + p * r / i;
    return scale2(p, n);
}

double mct_log(double x) {
    static const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    if (x != x || x < 0) return NAN;
    if (x == 0) return -INFINITY;
    if (x > 1.7976931348623157e308) return x;
    int32_t e = 0;
    if (x < 2.2250738585072014e-308) { /* subnormal */
        x *= 18014398509481984.0;      /* 2^54 */
        e = -54;
    }
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    e += (int32_t)((bits >> 52) & 0x7ff) - 1023;
    bits = (bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL; /* m in [1, 2) */
    double m;
    memcpy(&m, &bits, sizeof m);
    if (m > 1.4142135623730951) {
        m *= 0.5;
        e += 1;
    }
    const double s = (m - 1.0) / (m + 1.0), s2 = s * s; /* |s| <= 0.1716 */
    double series = 0.0;                                 /* atanh series to s^29: < 1e-24 left */
    for (int32_t i = 29; i >= 3; i -= 2) series = (series + 1.0 / i) * s2;
    const double log_m = 2.0 * s + 2.0 * s * series;
    return e * ln2_hi + (e * ln2_lo + log_m);
}

/* loss = logsumexp(z) - z[label]; grad = softmax(z) - onehot(label) (float64, stored float32). */
void mct_softmax_ce(const float *logits, int32_t k, int32_t label, float *loss, float *grad) {
    double top = logits[0], sum = 0.0;
    for (int32_t i = 1; i < k; ++i)
        if (logits[i] > top) top = logits[i];
    for (int32_t i = 0; i < k; ++i) sum += mct_exp((double)logits[i] - top);
    const double log_sum = mct_log(sum);
    *loss = (float)(log_sum - ((double)logits[label] - top));
    for (int32_t i = 0; i < k; ++i)
        grad[i] = (float)(mct_exp(((double)logits[i] - top) - log_sum) - (i == label ? 1.0 : 0.0));
}

/* ------------------------------------------------------------------------------------------------
 * Backward: elementwise ops (in place: out == g allowed) */

void mct_requant_grad(const float *g, const uint8_t *mask, const float *m, int32_t per_channel, int32_t channels,
                      int32_t plane, float *out) {
    for (int32_t c = 0; c < channels; ++c) {
        const float mc = m[per_channel ? c : 0];
        for (int32_t q = 0; q < plane; ++q) {
            const int32_t i = c * plane + q;
            out[i] = (g[i] * (float)mct_get_bit(mask, i)) * mc;
        }
    }
}

/* out_a may be g (in place); out_b never is. */
void mct_add_grad(const float *g, const uint8_t *mask, const float *ratios, int32_t n, float *out_a, float *out_b) {
    for (int32_t i = 0; i < n; ++i) {
        const float gm = g[i] * (float)mct_get_bit(mask, i);
        out_b[i] = gm * ratios[1];
        out_a[i] = gm * ratios[0];
    }
}

void mct_avgpool_grad(const float *g, const uint8_t *mask, const float *factor, int32_t channels, int32_t plane,
                      float *out) {
    for (int32_t c = 0; c < channels; ++c) {
        const float spread = (g[c] * (float)mct_get_bit(mask, c)) * factor[0];
        for (int32_t q = 0; q < plane; ++q) out[c * plane + q] = spread;
    }
}

/* float32 additions in reading order; out may be any of the terms. */
void mct_grad_sum(const float *const *terms, int32_t n_terms, int32_t n, float *out) {
    for (int32_t i = 0; i < n; ++i) {
        float total = terms[0][i];
        for (int32_t t = 1; t < n_terms; ++t) total = total + terms[t][i];
        out[i] = total;
    }
}

/* ------------------------------------------------------------------------------------------------
 * Backward: conv gradients */

/* 1x1 stride-1 conv: out[i] = [init[i] +] sum_o w[o][i] * g[o], float32, o ascending (init may be out). */
static void pointwise_grad_x(const mct_conv *p, const float *g, const float *init, float *out) {
    const int32_t n = p->in_h * p->in_w;
    int32_t first = 0;
    if (init != NULL) {
        if (init != out) memcpy(out, init, (size_t)p->in_c * (size_t)n * sizeof *out);
    } else {
        const mct_weight_row w = mct_row_of(&p->w, 0);
        for (int32_t i = 0; i < p->in_c; ++i) {
            const float wi = (float)mct_row_at(&w, i);
            for (int32_t q = 0; q < n; ++q) out[i * n + q] = wi * g[q];
        }
        first = 1;
    }
    for (int32_t o = first; o < p->out_c; ++o) {
        const mct_weight_row w = mct_row_of(&p->w, o);
        const float *g_o = g + o * n;
        for (int32_t i = 0; i < p->in_c; ++i) {
            const float wi = (float)mct_row_at(&w, i);
            float *out_i = out + i * n;
            for (int32_t q = 0; q < n; ++q) out_i[q] = out_i[q] + wi * g_o[q];
        }
    }
}

mct_acc_t mct_transpose_tap_sum(const mct_conv *p, const int8_t *w, const float *g_o, int32_t y, int32_t x) {
    /* The taps whose source (y + pad - a) / stride is an output position, as ranges: the same taps in the
     * same ascending order (the same sum), no test per tap. */
    const int32_t ow = p->out_w;
    const mct_tap_range ra = mct_tap_range_of(y + p->pad, p->stride, p->out_h, p->k);
    const mct_tap_range rb = mct_tap_range_of(x + p->pad_left, p->stride_w, ow, p->kw);
    return mct_tap_range_sum(w, p->kw, p->stride, p->stride_w, g_o, ow, &ra, &rb);
}

/* Depthwise: channel c of the input gradient from channel c of g (into the scratch when in place). */
static void depthwise_grad_x(const mct_conv *p, const float *g, float *out, float *scratch) {
    const int32_t in_n = p->in_h * p->in_w, out_n = p->out_h * p->out_w;
    for (int32_t c = 0; c < p->in_c; ++c) {
        const int8_t *w = mct_weight_at(&p->w, c, 0);
        float *dst = scratch != NULL ? scratch : out + c * in_n;
        for (int32_t y = 0; y < p->in_h; ++y)
            for (int32_t x = 0; x < p->in_w; ++x)
                dst[y * p->in_w + x] = (float)mct_transpose_tap_sum(p, w, g + c * out_n, y, x);
        if (scratch != NULL) memcpy(out + c * in_n, scratch, (size_t)in_n * sizeof *out);
    }
}

static void general_grad_x(const mct_conv *p, const float *g, float *out) {
    const int32_t in_n = p->in_h * p->in_w, out_n = p->out_h * p->out_w;
    for (int32_t i = 0; i < p->in_c; ++i)
        for (int32_t y = 0; y < p->in_h; ++y)
            for (int32_t x = 0; x < p->in_w; ++x) {
                mct_acc_t acc = 0;
                for (int32_t o = 0; o < p->out_c; ++o)
                    acc += mct_transpose_tap_sum(p, mct_weight_at(&p->w, o, i), g + o * out_n, y, x);
                out[i * in_n + y * p->in_w + x] = (float)acc;
            }
}

void mct_conv2d_grad_x(const mct_conv *p, const float *g, const float *init, float *out, float *scratch) {
    if (p->groups > 1)
        depthwise_grad_x(p, g, out, scratch);
    else if (mct_is_pointwise(p))
        pointwise_grad_x(p, g, init, out);
    else
        general_grad_x(p, g, out);
}

void mct_conv2d_grad_b(const float *g, int32_t channels, int32_t plane, float *out) {
    for (int32_t c = 0; c < channels; ++c) {
        mct_acc_t acc = 0;
        for (int32_t q = 0; q < plane; ++q) acc += (mct_acc_t)g[c * plane + q];
        out[c] = (float)acc;
    }
}

float mct_grad_w_element(const mct_conv *p, const int8_t *x_i, const float *g_o, int32_t a, int32_t b) {
    /* The output positions whose input (oy * s - pad + a, ox * s - pad + b) is inside, as ranges (same
     * positions, ascending: same sum). */
    const int32_t sh = p->stride, sw = p->stride_w, in_w = p->in_w, out_w = p->out_w, x_zero = p->x_zero;
    const mct_tap_window t = mct_tap_window_of(p, a, b);
    mct_acc_t acc = 0;
    for (int32_t oy = t.oy0; oy < t.oy1; ++oy) {
        const float *g_row = g_o + oy * out_w;
        const int8_t *x_row = x_i + (oy * sh - p->pad + a) * in_w;
        for (int32_t ox = t.ox0, ix = t.ox0 * sw - p->pad_left + b; ox < t.ox1; ++ox, ix += sw)
            acc = mct_mac_exact(acc, g_row[ox], (int32_t)x_row[ix] - x_zero);
    }
    return (float)acc;
}

/* The element (row r, column c, tap t) of the weight gradient over the kept slice; x holds the kept
 * input channels (or all of them). Depthwise: row r is channel r (one column). */
static float conv_grad_w_at(const mct_conv *p, const int8_t *x, const float *g, int32_t r, int32_t c, int32_t t) {
    const int32_t in_n = p->in_h * p->in_w, out_n = p->out_h * p->out_w;
    const int32_t channel = p->groups > 1 ? r : c;
    return mct_grad_w_element(p, x + channel * in_n, g + r * out_n, t / p->kw, t % p->kw);
}

void mct_conv2d_grad_w(const mct_conv *p, const int8_t *x, const float *g, int32_t rows, int32_t cols, float *out) {
    const int32_t taps = p->k * p->kw;
    for (int32_t r = 0; r < rows; ++r)
        for (int32_t c = 0; c < cols; ++c)
            for (int32_t t = 0; t < taps; ++t) out[(r * cols + c) * taps + t] = conv_grad_w_at(p, x, g, r, c, t);
}

void mct_linear_grad_x(const mct_linear *p, const float *g, float *out) {
    for (int32_t c = 0; c < p->in_features; ++c) {
        mct_acc_t acc = 0;
        for (int32_t k = 0; k < p->out_features; ++k)
            acc += (mct_acc_t)(g[k] * p->scale[k]) * (mct_acc_t)*mct_weight_at(&p->w, k, c);
        out[c] = (float)acc;
    }
}

static float linear_grad_w_at(const mct_linear *p, const float *g, const int8_t *x, int32_t k, int32_t c) {
    return (float)((double)(g[k] * p->scale[k]) * (double)((int32_t)x[c] - p->x_zero));
}

void mct_linear_grad_w(const mct_linear *p, const float *g, const int8_t *x, float *out) {
    for (int32_t k = 0; k < p->out_features; ++k)
        for (int32_t c = 0; c < p->in_features; ++c) out[k * p->in_features + c] = linear_grad_w_at(p, g, x, k, c);
}

void mct_linear_grad_b(const mct_linear *p, const float *g, float *out) {
    for (int32_t k = 0; k < p->out_features; ++k) out[k] = g[k] * p->scale[k];
}

/* ------------------------------------------------------------------------------------------------
 * Updates */

/* w <- clamp(sr(w - lr * (g * qas)), -127, 127): float32, in this order (the reference's). */
int8_t mct_sgd_int8(int8_t w, float g, float qas, float lr, uint32_t key, uint32_t index) {
    return mct_sgd_int8_word(w, g, qas, lr, mct_stream_word(key, index));
}

void mct_update_weight(const mct_update *u, const float *g, uint32_t step) {
    const uint32_t key = mct_stream_key(u->seed, step, u->tensor_id);
    const float lr = *u->lr;
    const int32_t per_row = u->cols * u->inner;
    for (int32_t r = 0; r < u->rows; ++r)
        for (int32_t j = 0; j < per_row; ++j) {
            const int32_t i = r * per_row + j;
            u->w[i] = mct_sgd_int8(u->w[i], g[i], u->qas[r], lr, key, (uint32_t)i);
        }
}

/* b <- sat32(b + floor(0.5 - lr * (g * qas))) (float32 delta, float64 sum as the reference). */
void mct_update_bias(const mct_update *u, const float *g) {
    const float lr = *u->lr;
    for (int32_t r = 0; r < u->rows; ++r) {
        const float delta = floorf(0.5f - lr * (g[r] * u->qas[r]));
        const double v = (double)u->b[r] + (double)delta;
        if (v != v)
            u->b[r] = INT32_MIN; /* what NumPy's float -> int32 cast gives for NaN on x86 */
        else
            u->b[r] = v <= -2147483648.0 ? INT32_MIN : (v >= 2147483647.0 ? INT32_MAX : (int32_t)v);
    }
}

/* Each weight-gradient element is applied as soon as it is computed: no gradient buffer. */
void mct_conv2d_grad_w_update(const mct_conv *p, const mct_update *u, const int8_t *x, const float *g,
                              uint32_t step) {
    const uint32_t key = mct_stream_key(u->seed, step, u->tensor_id);
    const float lr = *u->lr;
    for (int32_t r = 0; r < u->rows; ++r)
        for (int32_t c = 0; c < u->cols; ++c)
            for (int32_t t = 0; t < u->inner; ++t) {
                const int32_t i = (r * u->cols + c) * u->inner + t;
                u->w[i] = mct_sgd_int8(u->w[i], conv_grad_w_at(p, x, g, r, c, t), u->qas[r], lr, key, (uint32_t)i);
            }
}

void mct_linear_grad_w_update(const mct_linear *p, const mct_update *u, const float *g, const int8_t *x,
                              uint32_t step) {
    const uint32_t key = mct_stream_key(u->seed, step, u->tensor_id);
    const float lr = *u->lr;
    for (int32_t k = 0; k < u->rows; ++k)
        for (int32_t c = 0; c < u->cols; ++c) {
            const int32_t i = k * u->cols + c;
            u->w[i] = mct_sgd_int8(u->w[i], linear_grad_w_at(p, g, x, k, c), u->qas[k], lr, key, (uint32_t)i);
        }
}

