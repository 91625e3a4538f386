/* simd_harness.c: the host's AVX2 forward paths (c/mct_simd.h) against plain loops, on random geometry.
 *
 * Built by tests/codegen/test_codegen_host_simd.py with -O2 -mavx2 (so MCT_SIMD is 1) together with
 * mct_kernels.c. For each of ``cases`` random convs (seeded by argv[1]) it runs mct_pointwise and
 * mct_depthwise_row, and the same outputs from the definition written out here: the bounded sum of
 * (x - x_zero) * w over the taps inside the input, plus the bias, requantized by mct_rq_out one output at
 * a time. Covered on purpose: odd input channel counts, widths that are not multiples of 8 or 16, strides 1
 * to 3, non-square kernels, padding rows (NULL), mask-only rows (y NULL), mask bits that do not start on a
 * byte, weight rows split between SRAM and Flash, multipliers of every size, channels whose shift is > 0
 * (the scalar fallback). Inputs are malloc'ed at their exact sizes, so a build with
 * -fsanitize=address catches any vector load that reads past them. Prints "mismatches N" (and the first
 * few cases); exit status 0 when N is 0. */
#include <stdio.h>
#include <stdlib.h>

#include "mct_kernels.h"

#if !MCT_SIMD
#error "build with -mavx2: this harness checks the AVX2 paths"
#endif

static uint32_t state;
static uint32_t rnd(uint32_t n) {
    state = state * 1664525u + 1013904223u;
    return (state >> 8) % n;
}

enum { MAX_C = 40, MAX_W = 90, MAX_O = 9, MAX_K = 7 };
static int8_t flash[MAX_O * MAX_C * MAX_K * MAX_K], sram[MAX_O * MAX_C * MAX_K * MAX_K];
static int8_t y_simd[MAX_O * MAX_W], y_ref[MAX_O * MAX_W];
static uint8_t m_simd[128], m_ref[128];
static int32_t bias[MAX_O], multiplier[MAX_O], shift[MAX_O];

static void random_requant(mct_conv *p, int32_t channels) {
    for (int32_t o = 0; o < channels; ++o) {
        bias[o] = (int32_t)rnd(1u << (1 + rnd(30))) - (int32_t)rnd(1u << 20);
        multiplier[o] = rnd(20) == 0 ? 0 : (int32_t)((1u << 30) + rnd(1u << 30));
        shift[o] = rnd(12) == 0 ? (int32_t)rnd(3) + 1 : -(int32_t)rnd(20); /* > 0: the scalar fallback */
    }
    p->x_zero = (int32_t)rnd(256) - 128;
    p->y_zero = (int32_t)rnd(256) - 128;
    p->qmin = rnd(3) == 0 ? p->y_zero : -128;
    p->qmax = 127;
    p->bias = bias;
    p->multiplier = multiplier;
    p->shift = shift;
}

static void random_weights(mct_conv *p, int32_t rows, int32_t cols, int32_t inner) {
    for (int32_t i = 0; i < rows * cols * inner; ++i) {
        flash[i] = (int8_t)(rnd(256) - 128);
        sram[i] = (int8_t)(rnd(256) - 128);
    }
    p->w.flash = flash;
    p->w.sram = NULL;
    p->w.rows = rows;
    p->w.cols = cols;
    p->w.inner = inner;
    if (rnd(2)) { /* a trained slice: the leading rows x cols from SRAM */
        p->w.sram = sram;
        p->w.kept_rows = (int32_t)rnd((uint32_t)rows + 1);
        p->w.kept_cols = (int32_t)rnd((uint32_t)cols + 1);
    }
}

static void clear_outputs(void) {
    memset(y_simd, 0x55, sizeof y_simd);
    memset(y_ref, 0x55, sizeof y_ref);
    memset(m_simd, 0, sizeof m_simd);
    memset(m_ref, 0, sizeof m_ref);
}

static int same_outputs(void) { return !memcmp(y_simd, y_ref, sizeof y_ref) && !memcmp(m_simd, m_ref, sizeof m_ref); }

static int pointwise_case(void) {
    mct_conv p;
    memset(&p, 0, sizeof p);
    const int32_t in_c = 1 + (int32_t)rnd(MAX_C), out_c = 1 + (int32_t)rnd(MAX_O), n = 1 + (int32_t)rnd(MAX_W);
    const int32_t bit0 = (int32_t)rnd(13);
    p.in_c = in_c, p.out_c = out_c, p.in_h = 1, p.in_w = n, p.out_h = 1, p.out_w = n;
    p.k = p.kw = p.stride = p.stride_w = p.groups = 1;
    random_weights(&p, out_c, in_c, 1);
    random_requant(&p, out_c);
    int8_t *x = malloc((size_t)(in_c * n));
    for (int32_t i = 0; i < in_c * n; ++i) x[i] = (int8_t)(rnd(256) - 128);
    clear_outputs();
    mct_pointwise(&p, 0, out_c, x, n, n, y_simd, n, m_simd, bit0, n);
    for (int32_t o = 0; o < out_c; ++o) {
        const mct_rq q = mct_rq_of(&p, o);
        for (int32_t j = 0; j < n; ++j) {
            int32_t sum = 0;
            for (int32_t i = 0; i < in_c; ++i) sum += (x[i * n + j] - p.x_zero) * mct_weight_at(&p.w, o, i)[0];
            mct_rq_out(&q, sum, y_ref + o * n + j, m_ref, bit0 + o * n + j);
        }
    }
    free(x);
    return same_outputs();
}

static int depthwise_case(void) {
    mct_conv p;
    memset(&p, 0, sizeof p);
    const int32_t kh = 1 + (int32_t)rnd(MAX_K), kw = 1 + (int32_t)rnd(MAX_K), s = 1 + (int32_t)rnd(3);
    const int32_t in_w = 1 + (int32_t)rnd(MAX_W), pad = (int32_t)rnd((uint32_t)kw);
    const int32_t out_w = (in_w + 2 * pad - kw) / s + 1, bit0 = (int32_t)rnd(13);
    if (out_w < 1) return 1;
    p.in_c = p.out_c = p.groups = 1, p.in_h = kh, p.in_w = in_w, p.out_h = 1, p.out_w = out_w;
    p.k = kh, p.kw = kw, p.stride = p.stride_w = s, p.pad = 0, p.pad_left = pad;
    random_weights(&p, 1, 1, kh * kw);
    random_requant(&p, 1);
    int8_t *rows[MCT_MAX_K];
    for (int32_t a = 0; a < kh; ++a) {
        rows[a] = malloc((size_t)in_w);
        for (int32_t i = 0; i < in_w; ++i) rows[a][i] = (int8_t)(rnd(256) - 128);
        if (rnd(5) == 0) { /* a padding row now and then */
            free(rows[a]);
            rows[a] = NULL;
        }
    }
    const int mask_only = rnd(4) == 0;
    clear_outputs();
    mct_depthwise_row(&p, 0, (const int8_t *const *)rows, mask_only ? NULL : y_simd, m_simd, bit0);
    const int8_t *w = mct_weight_at(&p.w, 0, 0);
    const mct_rq q = mct_rq_of(&p, 0);
    for (int32_t ox = 0; ox < out_w; ++ox) {
        int32_t sum = 0;
        for (int32_t a = 0; a < kh; ++a)
            for (int32_t b = 0; b < kw; ++b) {
                const int32_t ix = ox * s - pad + b;
                if (rows[a] != NULL && ix >= 0 && ix < in_w) sum += (rows[a][ix] - p.x_zero) * w[a * kw + b];
            }
        mct_rq_out(&q, sum, mask_only ? NULL : y_ref + ox, m_ref, bit0 + ox);
    }
    for (int32_t a = 0; a < kh; ++a) free(rows[a]);
    return same_outputs();
}

int main(int argc, char **argv) {
    state = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 1u;
    const int32_t cases = argc > 2 ? (int32_t)strtol(argv[2], NULL, 10) : 2000;
    int32_t bad = 0;
    for (int32_t c = 0; c < cases; ++c) {
        const uint32_t at = state;
        if (!pointwise_case() && bad++ < 5) printf("pointwise case %d (state %u) differs\n", c, at);
        const uint32_t at2 = state;
        if (!depthwise_case() && bad++ < 5) printf("depthwise case %d (state %u) differs\n", c, at2);
    }
    printf("mismatches %d\n", bad);
    return bad != 0;
}
