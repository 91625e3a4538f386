/* mct_backward8.c: see mct_backward8.h. Plain integer loops: the same code on every core (no FPU needed);
 * the DSP forms can come later without changing a bit, since every sum is exact. */
#include "mct_backward8.h"

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

#define MCT_G8_BLOCK 64 /* input-gradient positions summed together: an int32 block on the stack */

/* The exact int32 sums of the transposed conv for input channel i, positions q0 .. q0 + len - 1 (within
 * the channel). 1x1 convs: over the output channels, one weight load per channel and block; others:
 * over their taps (mct_transpose_tap_sum's ranges). */
static void grad_x_block8(const mct_conv *p, const int8_t *g, int32_t i, int32_t q0, int32_t len, int32_t *acc) {
    const int32_t out_n = p->out_h * p->out_w;
    if (mct_is_pointwise(p)) { /* four output channels per pass over the block: one acc load and store each */
        int32_t o = 0;
        for (int32_t j = 0; j < len; ++j) acc[j] = 0;
        for (; o + 4 <= p->out_c; o += 4) {
            const int32_t w0 = *mct_weight_at(&p->w, o, i), w1 = *mct_weight_at(&p->w, o + 1, i);
            const int32_t w2 = *mct_weight_at(&p->w, o + 2, i), w3 = *mct_weight_at(&p->w, o + 3, i);
            const int8_t *g0 = g + o * out_n + q0, *g1 = g0 + out_n, *g2 = g1 + out_n, *g3 = g2 + out_n;
            for (int32_t j = 0; j < len; ++j) acc[j] += w0 * g0[j] + w1 * g1[j] + w2 * g2[j] + w3 * g3[j];
        }
        for (; o < p->out_c; ++o) {
            const int32_t w = *mct_weight_at(&p->w, o, i);
            const int8_t *g_o = g + o * out_n + q0;
            for (int32_t j = 0; j < len; ++j) acc[j] += w * g_o[j];
        }
        return;
    }
    for (int32_t j = 0; j < len; ++j) {
        const int32_t y = (q0 + j) / p->in_w, x = (q0 + j) % p->in_w;
        int32_t sum = 0;
        if (p->groups > 1)
            sum = transpose_tap_sum8(p, mct_weight_at(&p->w, i, 0), g + i * out_n, y, x);
        else
            for (int32_t o = 0; o < p->out_c; ++o)
                sum += transpose_tap_sum8(p, mct_weight_at(&p->w, o, i), g + o * out_n, y, x);
        acc[j] = sum;
    }
}

/* One pass over the input gradient, block by block: PEAK finds max |value|, WRITE stores each value
 * shifted by ``shift`` (into scratch first, channel by channel, when out is g: an in-place depthwise conv
 * reads only its own channel). A value is the exact sum, or with ``al`` its add_grads alignment with
 * init after rounding the sum by ``round_shift`` (the accumulated 1x1 form). */
typedef struct {
    const mct_conv *p;
    const int8_t *g, *init;
    const mct_g8_align *al;
    int32_t round_shift;
} grad_x_pass;

static int64_t grad_x_value(const grad_x_pass *s, int32_t k, int32_t acc) {
    if (s->al == NULL) return acc;
    return mct_g8_aligned(s->al, s->init[k], mct_g8_shifted(acc, s->round_shift));
}

static uint64_t grad_x_sweep(const grad_x_pass *s, int write, int32_t shift, int8_t *out, int8_t *scratch) {
    const int32_t in_n = s->p->in_h * s->p->in_w;
    int32_t acc[MCT_G8_BLOCK];
    uint64_t peak = 0;
    for (int32_t i = 0; i < s->p->in_c; ++i) {
        int8_t *dst = scratch != NULL ? scratch : out + i * in_n;
        for (int32_t q0 = 0; q0 < in_n; q0 += MCT_G8_BLOCK) {
            const int32_t len = in_n - q0 < MCT_G8_BLOCK ? in_n - q0 : MCT_G8_BLOCK;
            grad_x_block8(s->p, s->g, i, q0, len, acc);
            for (int32_t j = 0; j < len; ++j) {
                const int64_t v = grad_x_value(s, i * in_n + q0 + j, acc[j]);
                if (write) {
                    dst[q0 + j] = mct_g8_shifted(v, shift);
                } else {
                    const uint64_t a = mct_g8_abs64(v);
                    if (a > peak) peak = a;
                }
            }
        }
        if (write && scratch != NULL) memcpy(out + i * in_n, scratch, (size_t)in_n);
    }
    return peak;
}

static int any_nonzero(const int8_t *v, int32_t n) {
    for (int32_t k = 0; k < n; ++k)
        if (v[k] != 0) return 1;
    return 0;
}

int32_t mct_g8_conv2d_grad_x(const mct_conv *p, const int8_t *g, int32_t e, const int8_t *init, int32_t e_init,
                             int8_t *out, int8_t *scratch) {
    const int32_t n = p->in_c * p->in_h * p->in_w;
    grad_x_pass s = {p, g, NULL, NULL, 0};
    const uint64_t peak = grad_x_sweep(&s, 0, 0, out, NULL); /* the exact sums' peak */
    const int32_t round_shift = peak ? mct_g8_shift_for(peak) : 0, e_that = peak ? e + round_shift : 0;
    if (init != NULL && any_nonzero(init, n)) {
        if (peak == 0) { /* add_grads(init, 0) = init */
            if (out != init) memcpy(out, init, (size_t)n);
            return e_init;
        }
        /* add_grads(init, that): both live (a canonical tensor with a nonzero peak keeps it nonzero) */
        const mct_g8_align al = mct_g8_align_of(e_init, e_that);
        s = (grad_x_pass){p, g, init, &al, round_shift};
        const uint64_t sum_peak = grad_x_sweep(&s, 0, 0, out, NULL);
        if (sum_peak == 0) {
            memset(out, 0, (size_t)n);
            return MCT_G8_ZERO_EXPONENT;
        }
        const int32_t shift = mct_g8_shift_for(sum_peak);
        grad_x_sweep(&s, 1, shift, out, NULL); /* out may be init: element k is read before it is written */
        return al.lo + shift;
    }
    if (peak == 0) {
        memset(out, 0, (size_t)n);
        return MCT_G8_ZERO_EXPONENT;
    }
    grad_x_sweep(&s, 1, round_shift, out, scratch);
    return e_that;
}

/* sum over the output positions whose input (oy * s - pad + a, ox * s - pad + b) is inside of
 * (x - x_zero) * g (mct_grad_w_element's positions; exact). */
static int32_t grad_w_element8(const mct_conv *p, const int8_t *x_i, const int8_t *g_o, int32_t a, int32_t b) {
    const int32_t sh = p->stride, sw = p->stride_w, in_w = p->in_w, out_w = p->out_w, x_zero = p->x_zero;
    const mct_tap_window t = mct_tap_window_of(p, a, b);
    int32_t acc = 0;
    for (int32_t oy = t.oy0; oy < t.oy1; ++oy) {
        const int8_t *g_row = g_o + oy * out_w;
        const int8_t *x_row = x_i + (oy * sh - p->pad + a) * in_w;
        for (int32_t ox = t.ox0, ix = t.ox0 * sw - p->pad_left + b; ox < t.ox1; ++ox, ix += sw)
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

/* The classifier's input gradient: its exact sums as normalize_by's accessor. */
typedef struct {
    const mct_linear *p;
    const int8_t *g;
} linear_grad_x8;

static int64_t linear_grad_x_sum8(const void *src, int32_t c) {
    const mct_linear *p = ((const linear_grad_x8 *)src)->p;
    const int8_t *g = ((const linear_grad_x8 *)src)->g;
    int32_t sum = 0;
    for (int32_t k = 0; k < p->out_features; ++k) sum += (int32_t)g[k] * *mct_weight_at(&p->w, k, c);
    return sum;
}

int32_t mct_g8_linear_grad_x(const mct_linear *p, const int8_t *g, int32_t e, int8_t *out) {
    const linear_grad_x8 s = {p, g};
    return mct_g8_normalize_by(linear_grad_x_sum8, &s, p->in_features, e, out);
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

/* Each weight-gradient element is applied as soon as it is computed (final on its own): no buffer. */
void mct_g8_conv2d_grad_w_update(const mct_conv *p, const mct_update *u, const int8_t *x, const int8_t *g, int32_t e,
                                 uint32_t step) {
    const uint32_t key = mct_stream_key(u->seed, step, u->tensor_id);
    const int32_t in_n = p->in_h * p->in_w, out_n = p->out_h * p->out_w;
    for (int32_t r = 0; r < u->rows; ++r) {
        int32_t m, xf;
        mct_g8_update_factor(*u->lr, u->qas[r], &m, &xf);
        for (int32_t c = 0; c < u->cols; ++c)
            for (int32_t t = 0; t < u->inner; ++t) {
                const int32_t i = (r * u->cols + c) * u->inner + t, channel = p->groups > 1 ? r : c;
                const int32_t grad = grad_w_element8(p, x + channel * in_n, g + r * out_n, t / p->kw, t % p->kw);
                u->w[i] = mct_g8_update_weight_element(u->w[i], grad, e, m, xf, mct_stream_word(key, (uint32_t)i));
            }
    }
}

void mct_g8_linear_grad_w_update(const mct_linear *p, const mct_update *u, const int8_t *g, const int8_t *x, int32_t e,
                                 uint32_t step) {
    const uint32_t key = mct_stream_key(u->seed, step, u->tensor_id);
    for (int32_t k = 0; k < u->rows; ++k) {
        int32_t m, xf;
        mct_g8_update_factor(*u->lr, u->qas[k], &m, &xf);
        for (int32_t c = 0; c < u->cols; ++c) {
            const int32_t i = k * u->cols + c, grad = (int32_t)g[k] * ((int32_t)x[c] - p->x_zero);
            u->w[i] = mct_g8_update_weight_element(u->w[i], grad, e, m, xf, mct_stream_word(key, (uint32_t)i));
        }
    }
}
