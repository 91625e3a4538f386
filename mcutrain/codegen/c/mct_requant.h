/* mct_requant.h: a conv output from its int32 sum (bias, requantization, clamp, mask bit), included by
 * mct_kernels.h after its types and mct_dsp.h. Why a header of its own: every forward kernel inlines
 * these, and mct_kernels.h passed the 500 lines a file may have; the portable and the DSP forms of the
 * same integers stay side by side here. */
#ifndef MCT_REQUANT_H
#define MCT_REQUANT_H

/* a + b saturated to int32 (= mct_sat_i32((int64_t)a + b), without 64-bit arithmetic). */
static inline int32_t mct_add_sat(int32_t a, int32_t b) {
    if (b >= 0 ? a > INT32_MAX - b : a < INT32_MIN - b) return b >= 0 ? INT32_MAX : INT32_MIN;
    return a + b;
}

/* mct_srdhm in one rounding step: its nudge (+2^30, or 1 - 2^30 below zero) and truncation towards zero
 * round a*b / 2^31 half up, which is floor((a*b + 2^30) / 2^31) for either sign (an arithmetic shift:
 * one multiply, one add, one shift of the 64-bit product instead of a 64-bit division). */
static inline int32_t mct_srdhm_fast(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    return (int32_t)(((int64_t)a * (int64_t)b + ((int64_t)1 << 30)) >> 31);
}

/* mct_requantize with the same results, cheaper where the shift is <= 0 (a multiplier below 1: every
 * conv of a trained network): then MBQM has no left shift to saturate, and the zero point can be added
 * in int32 after clamping to +-2^15 (the clamp to [qmin, qmax] and the mask give the same answers). */
static inline int8_t mct_requantize_fast(int32_t acc, int32_t multiplier, int32_t shift, int32_t zero_point,
                                         int32_t qmin, int32_t qmax, uint8_t *inside) {
    if (shift > 0) return mct_requantize(acc, multiplier, shift, zero_point, qmin, qmax, inside);
    int32_t m = mct_rdbpot(mct_srdhm_fast(acc, multiplier), -shift);
    m = m < -32768 ? -32768 : (m > 32767 ? 32767 : m);
    const int32_t v = m + zero_point;
    *inside = (uint8_t)((v > qmin) & (v < qmax));
    return (int8_t)(v < qmin ? qmin : (v > qmax ? qmax : v));
}

/* Output channel o's requantization constants, as locals of the loop over its positions (read from the
 * struct once: the compiler would reload them after every int8 store it cannot tell apart from them). */
typedef struct {
    int32_t bias, multiplier, shift, y_zero, qmin, qmax;
#if MCT_DSP
    int32_t fast, bias2, right, nudge; /* mct_dsp_requantize's (fast: its conditions hold, mct_rq_of) */
#endif
} mct_rq;

#if MCT_DSP
/* mct_dsp_requantize's nudge for a shift right by ``right``: 2^(right - 1) + zero * 2^right (the rounding's
 * half and the zero point in one add). */
static inline int32_t mct_rq_nudge(int32_t right, int32_t zero) {
    return ((int32_t)1 << (right - 1)) + zero * ((int32_t)1 << right);
}

/* mct_dsp_requantize's conditions (the fast case), those on the conv as a whole: |sum| <= taps * 255 * 128 <
 * 2^29, the int8 range and zero point. */
static inline int32_t mct_rq_conv_fast(const mct_conv *p) {
    const int32_t taps = (p->groups > 1 ? 1 : p->in_c) * p->k * p->kw;
    return taps <= 16384 && p->qmin == -128 && p->qmax == 127 && p->y_zero >= -128 && p->y_zero <= 127;
}

/* Those on output channel o: a shift in [-22, -1], a positive multiplier (mct_dsp_requantize_pos), |bias| <=
 * 2^29 (so 2 * (sum + bias) fits in int32); the ranges as unsigned differences, one compare each. */
static inline int32_t mct_rq_channel_fast(const mct_conv *p, int32_t o) {
    return (uint32_t)p->shift[o] + 22u <= 21u && p->multiplier[o] > 0
           && (uint32_t)p->bias[o] + (1u << 29) <= (1u << 30);
}

/* Whether every output channel of [o0, o1) is in the fast case: kernels that make many outputs a channel
 * check once a call and then take mct_rq_fast_of's constants, with none of mct_rq_of's checks. */
static inline int32_t mct_rq_all_fast(const mct_conv *p, int32_t o0, int32_t o1) {
    if (!mct_rq_conv_fast(p)) return 0;
    for (int32_t o = o0; o < o1; ++o)
        if (!mct_rq_channel_fast(p, o)) return 0;
    return 1;
}

/* One output channel's constants in the fast case (mct_dsp_requant_pairs'). */
typedef struct {
    int32_t bias2, multiplier, nudge, right;
} mct_rq_fast;

static inline mct_rq_fast mct_rq_fast_of(const mct_conv *p, int32_t o) {
    const int32_t right = -p->shift[o];
    return (mct_rq_fast){2 * p->bias[o], p->multiplier[o], mct_rq_nudge(right, p->y_zero), right};
}
#endif

static inline mct_rq mct_rq_of(const mct_conv *p, int32_t o) {
#if MCT_DSP
    const int32_t shift = p->shift[o], bias = p->bias[o];
    const int32_t fast = mct_rq_conv_fast(p) && mct_rq_channel_fast(p, o);
    const mct_rq q = {bias, p->multiplier[o], shift, p->y_zero, p->qmin, p->qmax, fast, 2 * (fast ? bias : 0),
                      -shift, fast ? mct_rq_nudge(-shift, p->y_zero) : 0};
#else
    const mct_rq q = {p->bias[o], p->multiplier[o], p->shift[o], p->y_zero, p->qmin, p->qmax};
#endif
    return q;
}

/* A conv output from its int32 sum: + bias (saturated), requantize, clamp; stored at dst (unless NULL:
 * a recomputation that wants the mask bit only) and mask bit ``bit``. */
static inline void mct_rq_out_portable(const mct_rq *q, int32_t sum, int8_t *dst, uint8_t *mask, int32_t bit) {
    uint8_t inside;
    const int32_t acc = mct_add_sat(sum, q->bias);
    const int8_t v = mct_requantize_fast(acc, q->multiplier, q->shift, q->y_zero, q->qmin, q->qmax, &inside);
    if (dst != NULL) *dst = v;
    mct_put_bit(mask, bit, inside);
}

#if MCT_DSP
/* q by value: the caller's constants never escape, so it can keep them in registers across its stores. */
static __attribute__((noinline, unused)) void mct_rq_out_general(mct_rq q, int32_t sum, int8_t *dst,
                                                                uint8_t *mask, int32_t bit) {
    mct_rq_out_portable(&q, sum, dst, mask, bit);
}

/* The same integers in about 7 instructions, inlined (mct_dsp_requantize_pos; the clamp to [-128, 127] is
 * SSAT #8, inside it is -128 < v < 127). */
static inline __attribute__((always_inline)) void mct_rq_out(const mct_rq *q, int32_t sum, int8_t *dst,
                                                             uint8_t *mask, int32_t bit) {
    if (__builtin_expect(!q->fast, 0)) {
        mct_rq_out_general(*q, sum, dst, mask, bit);
        return;
    }
    const int32_t v = mct_dsp_requantize_pos(sum, q->bias2, q->multiplier, q->nudge, q->right);
    if (dst != NULL) *dst = (int8_t)__ssat(v, 8);
    if (mask != NULL) mct_put_bit(mask, bit, (uint8_t)((uint32_t)(v + 127) < 254u));
}
#else
static inline void mct_rq_out(const mct_rq *q, int32_t sum, int8_t *dst, uint8_t *mask, int32_t bit) {
    mct_rq_out_portable(q, sum, dst, mask, bit);
}
#endif

static inline void mct_conv_out(const mct_conv *p, int32_t o, int32_t sum, int8_t *dst, uint8_t *mask, int32_t bit) {
    const mct_rq q = mct_rq_of(p, o);
    mct_rq_out(&q, sum, dst, mask, bit);
}

#endif /* MCT_REQUANT_H */
