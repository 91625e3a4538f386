/* mct_int8.h: the C99 side of mcutrain/quant/fixedpoint.py and mcutrain/quant/rng.py.
 *
 * The int8 arithmetic primitives every mcutrain executor shares, written once for generated C.
 * tests/quant/test_c_parity.py compiles this header with gcc and checks it bit-equal to the NumPy
 * reference on random and extreme inputs. Keep the three in step: change one, change all.
 *
 * Requires: C99, two's complement, arithmetic >> of negative signed integers (gcc, clang, armcc),
 * IEEE-754 float32 with FLT_EVAL_METHOD == 0 (Cortex-M7 fpv5-sp-d16, x86-64 SSE), no -ffast-math.
 * Multipliers come from quantize_multiplier(): multiplier in [2^30, 2^31) or 0, shift in [-31, 30].
 */
#ifndef MCT_INT8_H
#define MCT_INT8_H

#include <math.h>
#include <stdint.h>

/* Saturate an int64 to int32 (used where an int32 accumulator is formed: sum + bias). */
static inline int32_t mct_sat_i32(int64_t x) {
    return x > INT32_MAX ? INT32_MAX : (x < INT32_MIN ? INT32_MIN : (int32_t)x);
}

static inline int8_t mct_clamp_i8(int64_t v, int32_t qmin, int32_t qmax) {
    return (int8_t)(v < qmin ? qmin : (v > qmax ? qmax : v));
}

/* gemmlowp SaturatingRoundingDoublingHighMul: round(a*b / 2^31), ties towards +inf. */
static inline int32_t mct_srdhm(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero, 0 <= exponent <= 31. */
static inline int32_t mct_rdbpot(int32_t x, int exponent) {
    int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLite MultiplyByQuantizedMultiplier / CMSIS-NN arm_nn_requantize (left shift saturated). */
static inline int32_t mct_mbqm(int32_t x, int32_t multiplier, int shift) {
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    return mct_rdbpot(mct_srdhm(mct_sat_i32((int64_t)x * ((int64_t)1 << left)), multiplier), right);
}

/* round_half_away(x * multiplier / 2^(31 - shift)) in one rounding (average pool). */
static inline int32_t mct_mul_round1(int32_t x, int32_t multiplier, int shift) {
    int64_t p = (int64_t)x * multiplier;
    int total = 31 - shift;
    int64_t half = (int64_t)1 << (total - 1);
    int64_t q = p >= 0 ? (p + half) >> total : -((-p + half) >> total);
    return mct_sat_i32(q);
}

/* Conv requantization: clamp(MBQM(acc) + zero_point); *inside = backward mask (qmin < v < qmax). */
static inline int8_t mct_requantize(int32_t acc, int32_t multiplier, int shift, int32_t zero_point,
                                    int32_t qmin, int32_t qmax, uint8_t *inside) {
    int64_t v = (int64_t)mct_mbqm(acc, multiplier, shift) + zero_point;
    if (inside) *inside = (uint8_t)((v > qmin) && (v < qmax));
    return mct_clamp_i8(v, qmin, qmax);
}

/* Residual add (TFLite int8 ADD, left shift 20); constants from fixedpoint.add_params(). */
typedef struct {
    int32_t left_shift;
    int32_t a_zero, a_multiplier, a_shift;
    int32_t b_zero, b_multiplier, b_shift;
    int32_t out_zero, out_multiplier, out_shift;
    int32_t qmin, qmax;
} mct_add_params;

static inline int8_t mct_add(int8_t a, int8_t b, const mct_add_params *p, uint8_t *inside) {
    int32_t sa = mct_mbqm(((int32_t)a - p->a_zero) * (1 << p->left_shift), p->a_multiplier, p->a_shift);
    int32_t sb = mct_mbqm(((int32_t)b - p->b_zero) * (1 << p->left_shift), p->b_multiplier, p->b_shift);
    int64_t v = (int64_t)mct_mbqm(sa + sb, p->out_multiplier, p->out_shift) + p->out_zero;
    if (inside) *inside = (uint8_t)((v > p->qmin) && (v < p->qmax));
    return mct_clamp_i8(v, p->qmin, p->qmax);
}

/* Global average pool of one channel (count = H*W values); constants from fixedpoint.avgpool_params(). */
static inline int8_t mct_avgpool(const int8_t *x, int32_t count, int32_t x_zero, int32_t multiplier, int shift,
                                 int32_t y_zero, int32_t qmin, int32_t qmax, uint8_t *inside) {
    int32_t sum = 0;
    for (int32_t i = 0; i < count; ++i) sum += (int32_t)x[i] - x_zero;
    int64_t v = (int64_t)mct_mul_round1(sum, multiplier, shift) + y_zero;
    if (inside) *inside = (uint8_t)((v > qmin) && (v < qmax));
    return mct_clamp_i8(v, qmin, qmax);
}

/* Counter-based RNG (rng.py): lowbias32 hash, stream key, word `index` of a stream. */
static inline uint32_t mct_hash32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

static inline uint32_t mct_stream_key(uint32_t seed, uint32_t step, uint32_t tensor_id) {
    return mct_hash32(seed ^ mct_hash32(step ^ mct_hash32(tensor_id)));
}

static inline uint32_t mct_stream_word(uint32_t key, uint32_t index) {
    return mct_hash32(key + index * 0x9E3779B9U);
}

/* floor(x + u), u = (r >> 8) * 2^-24, in float32; NaN -> 0; clamped to the int32 range. */
static inline int32_t mct_stochastic_round(float x, uint32_t r) {
    float y = floorf(x + (float)(r >> 8) * 0x1p-24f);
    if (y != y) return 0;
    if (y < -2147483648.0f) return INT32_MIN;
    if (y > 2147483520.0f) return 2147483520;
    return (int32_t)y;
}

#endif /* MCT_INT8_H */
