/* mct_int8_grad.h: the C99 side of mcutrain/quant/int8_grad.py (the integer backward, --backward int8).
 *
 * A gradient tensor is int8 g[] with an int32 exponent e: its values are g * 2^e. Every function here
 * computes exactly what its Python namesake defines (see that module's docstring), so the generated C
 * equals the NumPy reference and the PyTorch simulation bit for bit. tests/quant/test_c_parity_int8_grad.py
 * compiles this header with gcc (undefined-behaviour sanitizer on) and checks it against the Python.
 *
 * Integer only: no float anywhere except mct_g8_update_factor (one float32 multiply per trained
 * channel, soft-float on a core without FPU) and mct_g8_from_products (the K loss-gradient values).
 * Requires what mct_int8.h requires (two's complement, arithmetic >> of negative integers).
 */
#ifndef MCT_INT8_GRAD_H
#define MCT_INT8_GRAD_H

#include <stdint.h>
#include <string.h>

#define MCT_G8_MAX 127
#define MCT_G8_ZERO_EXPONENT 0
#define MCT_G8_ALIGN_LIMIT 40
#define MCT_G8_STEP_LIMIT_BITS 33
#define MCT_G8_FRACTION_BITS 24

/* p * 2^n for n >= 0 without shifting a negative number (undefined in C99); the caller keeps it in range. */
static inline int64_t mct_g8_lift(int64_t p, int32_t n) { return p * ((int64_t)1 << n); }

/* floor(p * 2^-s + 1/2), s >= 0, |p| < 2^62. */
static inline int64_t mct_g8_round_half_up(int64_t p, int32_t s) {
    return s == 0 ? p : (p + ((int64_t)1 << (s - 1))) >> s;
}

/* The smallest s (any sign) with peak <= 127 * 2^s; peak > 0. */
static inline int32_t mct_g8_shift_for(uint64_t peak) {
    int32_t s = 0;
    while (peak > ((uint64_t)MCT_G8_MAX << s)) ++s;
    if (s > 0) return s;
    while ((peak << 1) <= MCT_G8_MAX) {
        peak <<= 1;
        --s;
    }
    return s;
}

static inline uint64_t mct_g8_abs64(int64_t v) { return v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v; }

/* Round acc[i] * 2^-shift to int8 (shift of any sign; the result fits by construction). */
static inline int8_t mct_g8_shifted(int64_t acc, int32_t shift) {
    if (shift <= 0) return (int8_t)mct_g8_lift(acc, -shift);
    return (int8_t)mct_g8_round_half_up(acc, shift > 62 ? 62 : shift);
}

/* Element k of an exact sum that has no buffer: recomputed in each pass. */
typedef int64_t (*mct_g8_sum_at)(const void *src, int32_t k);

/* normalize(sum(k) * 2^e) for k < n in two passes (the peak, then the values), no buffer. Returns E. */
static inline int32_t mct_g8_normalize_by(mct_g8_sum_at sum, const void *src, int32_t n, int32_t e, int8_t *out) {
    uint64_t peak = 0;
    for (int32_t k = 0; k < n; ++k) {
        const uint64_t a = mct_g8_abs64(sum(src, k));
        if (a > peak) peak = a;
    }
    if (peak == 0) {
        for (int32_t k = 0; k < n; ++k) out[k] = 0;
        return MCT_G8_ZERO_EXPONENT;
    }
    const int32_t shift = mct_g8_shift_for(peak);
    for (int32_t k = 0; k < n; ++k) out[k] = mct_g8_shifted(sum(src, k), shift);
    return e + shift;
}

/* normalize(g * mask * m[c] * 2^(e + sh[c])) over channels x plane elements (channel-major); one
 * factor for all channels when per_channel is 0. mask: one bit per element (NULL: all set). out may be g. */
static inline int32_t mct_g8_scale(const int8_t *g, int32_t e, const uint8_t *mask, const int32_t *m,
                                   const int32_t *sh, int32_t per_channel, int32_t channels, int32_t plane,
                                   int8_t *out) {
    int32_t top = 0, live = 0;
    for (int32_t c = 0; c < channels; ++c) { /* pass 1: the exponent the largest value needs */
        const int32_t k = per_channel ? c : 0;
        uint64_t peak = 0;
        for (int32_t q = 0; q < plane; ++q) {
            const int32_t i = c * plane + q;
            const int32_t v = (mask == 0 || ((mask[i >> 3] >> (i & 7)) & 1)) ? g[i] : 0;
            const uint64_t a = mct_g8_abs64((int64_t)v * m[k]);
            if (a > peak) peak = a;
        }
        if (peak == 0) continue;
        const int32_t need = e + sh[k] + mct_g8_shift_for(peak);
        if (!live || need > top) top = need;
        live = 1;
    }
    for (int32_t c = 0; c < channels; ++c) { /* pass 2: each channel shifted by its own amount */
        const int32_t k = per_channel ? c : 0;
        const int32_t shift = top - e - sh[k];
        for (int32_t q = 0; q < plane; ++q) {
            const int32_t i = c * plane + q;
            const int32_t v = (mask == 0 || ((mask[i >> 3] >> (i & 7)) & 1)) ? g[i] : 0;
            out[i] = live ? mct_g8_shifted((int64_t)v * m[k], shift) : 0;
        }
    }
    return live ? top : MCT_G8_ZERO_EXPONENT;
}

/* How add_grads lines two live canonical operands up: the one with the larger exponent is lifted to the
 * smaller's grid, or, more than ALIGN_LIMIT orders apart, the smaller enters as its sign (the sticky bit)
 * at 2^(E_big - ALIGN_LIMIT). Values of the sum are in units of 2^lo. */
typedef struct {
    int a_big, sticky;
    int32_t lo, lift;
} mct_g8_align;

static inline mct_g8_align mct_g8_align_of(int32_t ea, int32_t eb) {
    mct_g8_align al;
    al.a_big = ea >= eb;
    const int32_t big = al.a_big ? ea : eb, small = al.a_big ? eb : ea;
    al.sticky = big - small > MCT_G8_ALIGN_LIMIT;
    al.lo = al.sticky ? big - MCT_G8_ALIGN_LIMIT : small;
    al.lift = big - al.lo;
    return al;
}

static inline int64_t mct_g8_aligned(const mct_g8_align *al, int64_t va, int64_t vb) {
    const int64_t hi = al->a_big ? va : vb, low = al->a_big ? vb : va;
    return mct_g8_lift(hi, al->lift) + (al->sticky ? (low > 0) - (low < 0) : low);
}

/* The two operands of a fan-out sum, aligned (the element accessor of mct_g8_add's normalize_by). */
typedef struct {
    const int8_t *a, *b;
    mct_g8_align al;
} mct_g8_pair;

static inline int64_t mct_g8_pair_sum(const void *src, int32_t k) {
    const mct_g8_pair *p = (const mct_g8_pair *)src;
    return mct_g8_aligned(&p->al, p->a[k], p->b[k]);
}

/* add_grads: normalize(a + b) of two canonical gradient tensors; out may be a or b (element k is written
 * after both operands' element k were read, and never read again). Returns E. */
static inline int32_t mct_g8_add(const int8_t *a, int32_t ea, const int8_t *b, int32_t eb, int32_t n, int8_t *out) {
    int any_a = 0, any_b = 0;
    for (int32_t i = 0; i < n; ++i) {
        any_a |= a[i] != 0;
        any_b |= b[i] != 0;
    }
    if (!any_a || !any_b) { /* the other one, already canonical (an all-zero tensor has exponent 0) */
        const int8_t *src = any_a ? a : b;
        for (int32_t i = 0; i < n; ++i) out[i] = src[i];
        return any_a ? ea : (any_b ? eb : MCT_G8_ZERO_EXPONENT);
    }
    const mct_g8_pair pair = {a, b, mct_g8_align_of(ea, eb)};
    return mct_g8_normalize_by(mct_g8_pair_sum, &pair, n, pair.al.lo, out);
}

/* 2^n as a double, from its bits (-1022 <= n <= 1023): no libm (the generated C calls only memcpy, memset
 * and a few float functions). */
static inline double mct_g8_pow2(int32_t n) {
    const uint64_t bits = (uint64_t)(n + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* floor(y) for |y| < 2^31. */
static inline int32_t mct_g8_floor(double y) {
    const int32_t t = (int32_t)y; /* toward zero */
    return (double)t > y ? t - 1 : t;
}

/* The K loss-gradient values a[i] * b[i] (two float32 arrays: the product is exact in float64)
 * normalized: the exponent from the peak's bits, checked exactly against 127 * 2^E; the scaling by a
 * power of two and the +0.5 are exact. Returns E. */
static inline int32_t mct_g8_from_products(const float *a, const float *b, int32_t n, int8_t *out) {
    double peak = 0.0;
    for (int32_t i = 0; i < n; ++i) {
        const double v = (double)a[i] * (double)b[i];
        const double m = v < 0 ? -v : v;
        if (m > peak) peak = m;
    }
    if (peak == 0.0) {
        for (int32_t i = 0; i < n; ++i) out[i] = 0;
        return MCT_G8_ZERO_EXPONENT;
    }
    uint64_t bits;
    memcpy(&bits, &peak, sizeof bits);
    int32_t e = (int32_t)((bits >> 52) & 0x7ff) - 1023 - 7; /* peak >= 2^k > 127 * 2^(k - 7): too small */
    while (peak > MCT_G8_MAX * mct_g8_pow2(e)) ++e;
    const double scale = mct_g8_pow2(-e);
    for (int32_t i = 0; i < n; ++i) out[i] = (int8_t)mct_g8_floor((double)a[i] * (double)b[i] * scale + 0.5);
    return e;
}

/* c = fl32(lr * qas) as m * 2^x exactly, m a 24-bit integer (frexp's normalization), from c's bits. */
static inline void mct_g8_update_factor(float lr, float qas, int32_t *m, int32_t *x) {
    const float c = lr * qas;
    uint32_t bits;
    memcpy(&bits, &c, sizeof bits);
    const int32_t field = (int32_t)((bits >> 23) & 0xff);
    int32_t mant = (int32_t)(bits & 0x7fffff), exp = field - 150;
    if (field != 0) {
        mant |= 0x800000;
    } else if (mant == 0) { /* c == 0: the step is zero whatever x is */
        *m = 0;
        *x = 0;
        return;
    } else {
        exp = -149;
        while (mant < 0x800000) { /* a subnormal, normalized as frexp does */
            mant <<= 1;
            --exp;
        }
    }
    *m = (bits >> 31) ? -mant : mant;
    *x = exp;
}

/* floor(p * 2^-s + u), u = (r >> 8) * 2^-24 (stochastic) or 1/2 (stochastic == 0), exactly; |p| < 2^62.
 * s < 0 saturates at +-2^33; s > 62 first floors p by s - 62. */
static inline int64_t mct_g8_shift_round(int64_t p, int32_t s, uint32_t r, int stochastic) {
    if (s < 0) {
        const int64_t limit = (int64_t)1 << MCT_G8_STEP_LIMIT_BITS;
        const int32_t n = -s > MCT_G8_STEP_LIMIT_BITS + 1 ? MCT_G8_STEP_LIMIT_BITS + 1 : -s;
        if (mct_g8_abs64(p) >= (uint64_t)(limit >> n)) return p > 0 ? limit : (p < 0 ? -limit : 0);
        return mct_g8_lift(p, n);
    }
    if (s > 62) {
        p >>= (s - 62 > 63 ? 63 : s - 62);
        s = 62;
    }
    if (s == 0) return p;
    const int64_t q = p >> s;
    const uint64_t rem = (uint64_t)(p - mct_g8_lift(q, s)); /* in [0, 2^s) */
    if (!stochastic) return q + (rem >= ((uint64_t)1 << (s - 1)));
    const uint64_t need = ((uint64_t)1 << MCT_G8_FRACTION_BITS) - (r >> 8);
    const int carry = s <= MCT_G8_FRACTION_BITS ? (rem << (MCT_G8_FRACTION_BITS - s)) >= need
                                                : rem >= (need << (s - MCT_G8_FRACTION_BITS));
    return q + carry;
}

/* One weight: clamp(w + sround(-m * grad, -(x + e), r), -127, 127). */
static inline int8_t mct_g8_update_weight_element(int8_t w, int32_t grad, int32_t e, int32_t m, int32_t x, uint32_t r) {
    const int64_t v = (int64_t)w + mct_g8_shift_round(-(int64_t)m * grad, -(x + e), r, 1);
    return (int8_t)(v < -127 ? -127 : (v > 127 ? 127 : v));
}

/* One bias: sat32(b + floor(-m * grad * 2^(x + e) + 1/2)). */
static inline int32_t mct_g8_update_bias_element(int32_t b, int32_t grad, int32_t e, int32_t m, int32_t x) {
    const int64_t v = (int64_t)b + mct_g8_shift_round(-(int64_t)m * grad, -(x + e), 0, 0);
    return v > INT32_MAX ? INT32_MAX : (v < INT32_MIN ? INT32_MIN : (int32_t)v);
}

#endif
