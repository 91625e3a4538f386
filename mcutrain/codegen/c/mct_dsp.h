/* mct_dsp.h: the int8 forward on the Cortex-M DSP extension (SMLAD(X), SMLAxy, SXTB16, PKHBT, SMMULR, SSAT).
 *
 * Why: the portable kernels (mct_kernels.c, mct_fused.c) do one multiply-accumulate per instruction
 * plus a byte load per operand, and requantize each output through a call with 64-bit paths; SMLAD
 * does two multiply-accumulates per instruction on 16-bit pairs, SMMULR / SSAT round and saturate in
 * one. The functions here compute the SAME int32 sums (integer sums are exact in any order) and the
 * same roundings where that measured faster on the Cortex-M7 (bench/m7_hotspots.py: instructions per
 * function and source line under QEMU): the requantization of every conv output (mct_dsp_requantize_pos,
 * used by mct_rq_out in mct_kernels.h; runs of outputs with SSAT shifting: mct_dsp_requant_pairs), 1x1
 * convs two output channels at a time (on a widened input, with weights unpacked once) or one (channel
 * pairs joined by PKH), the 1x1 convs' weight sums (the first conv's im2col: mct_fused.c), and the
 * depthwise rows' helpers: interior 3x3 stride-1 rows two outputs per step, stride-2 3-tap rows four,
 * 5x5 / 7x7 rows four (mct_dsp_row{5,7}_four(_s2)). On a core without Helium the depthwise convs run in
 * mct_depthwise.c (whole rows and planes on padded copies). Everything else (channel and position tails,
 * edges, padding, other kernels) stays on the portable code, which calls these first and finishes what
 * they leave. Chosen when the folder is generated
 * (``MCT_DSP`` in mct_kernels.h, mcutrain.codegen.generate(..., kernels="dsp")); with MCT_DSP 0 this
 * header defines nothing.
 *
 * Layout: activations stay NCHW (a channel's positions contiguous). Pairs along the reduction come
 * from loads: SXTB16 of bytes b0..b3 gives the halfwords (b0, b2), with ROR #8 (b1, b3); two channels'
 * halfwords joined in one word pair the same position of both. No buffer: operands are packed in
 * registers.
 * Loads never reach past the bytes the portable code reads (unaligned 4-byte loads: allowed on ARMv7-M
 * with the reset value of CCR.UNALIGN_TRP).
 */
#ifndef MCT_DSP_H
#define MCT_DSP_H

#include <stdint.h>
#include <string.h>

#if MCT_DSP
#if !defined(__ARM_FEATURE_DSP)
#error "generated with kernels=dsp: build for a core with the DSP extension (-mcpu=cortex-m7), or generate portable"
#endif
#include <arm_acle.h>

/* ---- requantization ---- */

/* mct_rq_out's value before the clamp, v = MBQM(sum + bias) + y_zero, for the conditions mct_rq_of checks:
 * |sum| < 2^29 and |bias| <= 2^29 (so a = sum + bias and 2a fit in int32), a shift -right in [-22, -1], a
 * multiplier m other than INT32_MIN, y_zero and the clamp [qmin, qmax] = [-128, 127] (int8); the same
 * integers as the portable mct_requantize_fast, in 6 instructions:
 * - the rounding doubling high multiply, floor((a * m + 2^30) / 2^31), is SMMULR's floor((2a * m + 2^31) /
 *   2^32); ``bias2`` = 2 * bias, so 2a is one add with a shifted operand;
 * - the rounding divide by 2^right (ties away from zero, mct_rdbpot) is (x + 2^(right-1) + (x >> 31)) >>
 *   right; the zero point rides in the same shift: ``nudge`` = 2^(right-1) + y_zero * 2^right (adding a
 *   multiple of 2^right before a floor shift adds its quotient after). No overflow: |x| <= 2^30,
 *   |nudge| <= 2^21 + 2^29;
 * - the portable clamp to [-2^15, 2^15 - 1] before adding y_zero is left out: a value it would change
 *   lies beyond [-128, 127] with or without it, so the int8 clamp and the inside bit are the same. */
static inline int32_t mct_dsp_requantize(int32_t sum, int32_t bias2, int32_t m, int32_t nudge, int32_t right) {
    int32_t x;
    __asm__("smmulr %0, %1, %2" : "=r"(x) : "r"(bias2 + sum * 2), "r"(m));
    return (x + nudge + (x >> 31)) >> right;
}

/* The same value for a positive multiplier in 4 instructions (mct_rq_out's, mct_rq_of's fast conditions):
 * with m > 0, x = SMMULR(2a, m) is < 0 only where a < 0, and where a < 0 and x = 0 adding -1 or 0 before the
 * shift gives y_zero either way (0 <= 2^(right-1) - 1 < 2^right). So the rounding's sign term is a's,
 * known before the multiply: SMMLAR adds the nudge + (2a >> 31) into the product's rounding. */
static inline int32_t mct_dsp_requantize_doubled(int32_t a2, int32_t m, int32_t nudge) {
    int32_t x;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(x) : "r"(a2), "r"(m), "r"(nudge + (a2 >> 31)));
    return x;
}

static inline int32_t mct_dsp_requantize_unshifted(int32_t sum, int32_t bias2, int32_t m, int32_t nudge) {
    return mct_dsp_requantize_doubled(bias2 + sum * 2, m, nudge);
}

static inline int32_t mct_dsp_requantize_pos(int32_t sum, int32_t bias2, int32_t m, int32_t nudge, int32_t right) {
    return mct_dsp_requantize_unshifted(sum, bias2, m, nudge) >> right;
}

/* ORs the n <= 24 low bits of ``bits`` into the mask from bit ``bit`` on: one read-modify-write a byte, not
 * one a bit (masks are cleared before a kernel writes them; mct_put_bit only sets bits too). */
static inline void mct_dsp_or_bits(uint8_t *mask, int32_t bit, uint32_t bits, int32_t n) {
    uint8_t *b = mask + (bit >> 3);
    bits <<= bit & 7;
    for (n += bit & 7; n > 0; n -= 8, bits >>= 8) *b++ |= (uint8_t)bits;
}

/* Two outputs a pair, y[2j], y[2j + 1] = the int8 of sums s[j * stride], s[j * stride + 1], two pairs a step; A(s):
 * the doubled sum 2 * (sum + bias) (mct_dsp_requantize_doubled's operand) of a stored s. */
#define MCT_DSP_RQ_PAIRS(shift_, A)                                                                   \
    for (; j + 2 <= pairs; j += 2, s += 2 * stride, y += 4) {                                       \
        y[0] = (int8_t)__ssat(mct_dsp_requantize_doubled(A(s[0]), m, nudge) >> (shift_), 8);        \
        y[1] = (int8_t)__ssat(mct_dsp_requantize_doubled(A(s[1]), m, nudge) >> (shift_), 8);        \
        y[2] = (int8_t)__ssat(mct_dsp_requantize_doubled(A(s[stride]), m, nudge) >> (shift_), 8);   \
        y[3] = (int8_t)__ssat(mct_dsp_requantize_doubled(A(s[stride + 1]), m, nudge) >> (shift_), 8); \
    }                                                                                                 \
    for (; j < pairs; ++j, s += stride, y += 2) {                                                    \
        y[0] = (int8_t)__ssat(mct_dsp_requantize_doubled(A(s[0]), m, nudge) >> (shift_), 8);        \
        y[1] = (int8_t)__ssat(mct_dsp_requantize_doubled(A(s[1]), m, nudge) >> (shift_), 8);        \
    }
#define MCT_DSP_RQ_SWITCH(A)                                                                                   \
    switch (right) {                                                                                           \
        MCT_DSP_RQ_CASE(1, A) MCT_DSP_RQ_CASE(2, A) MCT_DSP_RQ_CASE(3, A) MCT_DSP_RQ_CASE(4, A)                \
        MCT_DSP_RQ_CASE(5, A) MCT_DSP_RQ_CASE(6, A) MCT_DSP_RQ_CASE(7, A) MCT_DSP_RQ_CASE(8, A)                \
        MCT_DSP_RQ_CASE(9, A) MCT_DSP_RQ_CASE(10, A) MCT_DSP_RQ_CASE(11, A) MCT_DSP_RQ_CASE(12, A)             \
        MCT_DSP_RQ_CASE(13, A) MCT_DSP_RQ_CASE(14, A) MCT_DSP_RQ_CASE(15, A) MCT_DSP_RQ_CASE(16, A)            \
        MCT_DSP_RQ_CASE(17, A) MCT_DSP_RQ_CASE(18, A) MCT_DSP_RQ_CASE(19, A) MCT_DSP_RQ_CASE(20, A)            \
        MCT_DSP_RQ_CASE(21, A) MCT_DSP_RQ_CASE(22, A)                                                          \
    default: /* outside mct_rq_of's fast range: not called there */                                           \
        MCT_DSP_RQ_PAIRS(right, A)                                                                             \
    }
#define MCT_DSP_RQ_CASE(shift_, A) \
    case shift_:                   \
        MCT_DSP_RQ_PAIRS(shift_, A) \
        break;
#define MCT_DSP_RQ_BIASED(v) (bias2 + (v) * 2)
#define MCT_DSP_RQ_AS_IS(v) (v)

/* mct_dsp_requantize_pos of 2 * pairs sums (pairs of s[j * stride], s[j * stride + 1]) clamped to int8 into y,
 * no mask: the shift a constant of each case, so SSAT shifts as it saturates (6 instructions an output). */
static __attribute__((unused, noinline)) void mct_dsp_requant_pairs(const int32_t *s, int32_t stride, int32_t pairs,
                                                          int32_t bias2, int32_t m, int32_t nudge, int32_t right,
                                                          int8_t *y) {
    int32_t j = 0;
    MCT_DSP_RQ_SWITCH(MCT_DSP_RQ_BIASED)
}

/* The same of doubled sums s = 2 * (sum + bias) (a generated plan's: dsp_plans.py): 5 instructions an output. */
static __attribute__((unused, noinline)) void mct_dsp_requant_doubled(const int32_t *s, int32_t stride, int32_t pairs,
                                                            int32_t m, int32_t nudge, int32_t right, int8_t *y) {
    int32_t j = 0;
    MCT_DSP_RQ_SWITCH(MCT_DSP_RQ_AS_IS)
}
#undef MCT_DSP_RQ_CASE
#undef MCT_DSP_RQ_PAIRS
#undef MCT_DSP_RQ_SWITCH
#undef MCT_DSP_RQ_BIASED
#undef MCT_DSP_RQ_AS_IS

/* ---- loads and unpacking ---- */

static inline int32_t mct_ld32(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* (b1, b3) of bytes b0..b3, sign-extended to halfwords: SXTB16 with its rotation (GCC does not fold a
 * rotate into __sxtb16). */
static inline int32_t mct_sxtb16_ror8(int32_t x) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

/* a + (b1, b3) of bytes b0..b3 sign-extended, per halfword: SXTAB16 with its rotation. */
static inline int32_t mct_sxtab16_ror8(int32_t a, int32_t x) {
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}

/* *lo, *hi = (*p)[0], (*p)[1], and *p += 2: one LDRD with post-increment (GCC splits a 64-bit load of two
 * words it uses apart into two LDR and a pointer add). */
static inline void mct_ldrd_post(const int32_t **p, int32_t *lo, int32_t *hi) {
    __asm__("ldrd %0, %1, [%2], #8" : "=r"(*lo), "=r"(*hi), "+r"(*p) : "m"(*(const int32_t(*)[2]) * p));
}

/* The 4 bytes at *p (any alignment: LDR allows it, LDRD does not), and *p += 4: one LDR with post-increment. */
static inline int32_t mct_ldr_post(const int8_t **p) {
    int32_t v;
    __asm__("ldr %0, [%1], #4" : "=r"(v), "+r"(*p) : "m"(*(const int8_t(*)[4]) * p));
    return v;
}

/* PKHBT with no shift: the low halfword of lo, the high halfword of hi. */
static inline int32_t mct_pkhbt(int32_t lo, int32_t hi) {
    int32_t r;
    __asm__("pkhbt %0, %1, %2" : "=r"(r) : "r"(lo), "r"(hi));
    return r;
}

/* ---- weight sums (the zero point's term) ---- */

/* w[0] + ... + w[n - 1]: four weights per load, summed as int16 pairs by SMLAD against (1, 1). */
static inline int32_t mct_dsp_sum_i8(const int8_t *w, int32_t n) {
    int32_t total = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        const int32_t v = mct_ld32(w + i);
        total = __smlad(__sxtb16(v), 0x00010001, total);
        total = __smlad(mct_sxtb16_ror8(v), 0x00010001, total);
    }
    for (; i < n; ++i) total += w[i];
    return total;
}

/* ---- 1x1 convs ---- */

/* Input channels [0, count) of two output channels (weights u[i], v[i] = u[i + d]) at the 2 positions
 * x[i * x_cs + 0..1]; returns the sums (a0, a1) of u and (b0, b1) of v in s[0..3], added. Four input
 * channels per step: a halfword of each channel's row, rows (i, i+2) and (i+1, i+3) joined in one word,
 * whose SXTB16 gives the channel pair of position 0 and, rotated, of position 1; SXTB16 of 4 weight
 * bytes gives the pairs (i, i+2) and (i+1, i+3): 8 SMLAD for 16 MACs (2 output channels x 2 positions,
 * four sums: few live registers; 2 x 4 sums spilled and ran slower). */
static inline void mct_dsp_pw_two(const int8_t *x, int32_t x_cs, const int8_t *u, int32_t d, int32_t count,
                                  int32_t *s) {
    int32_t a0 = s[0], a1 = s[1], b0 = s[2], b1 = s[3];
    const int8_t *const end = u + (count & ~3);
    for (; u < end; u += 4) {
        uint16_t h0, h1, h2, h3;
        memcpy(&h0, x, 2);
        memcpy(&h1, x + x_cs, 2);
        memcpy(&h2, x + 2 * x_cs, 2);
        memcpy(&h3, x + 3 * x_cs, 2);
        x += 4 * x_cs;
        const int32_t t02 = (int32_t)((uint32_t)h0 | ((uint32_t)h2 << 16));
        const int32_t t13 = (int32_t)((uint32_t)h1 | ((uint32_t)h3 << 16));
        const int32_t wu = mct_ld32(u), wv = mct_ld32(u + d);
        const int32_t p0 = __sxtb16(t02), p1 = mct_sxtb16_ror8(t02), q0 = __sxtb16(t13), q1 = mct_sxtb16_ror8(t13);
        const int32_t ue = __sxtb16(wu), uo = mct_sxtb16_ror8(wu), ve = __sxtb16(wv), vo = mct_sxtb16_ror8(wv);
        a0 = __smlad(p0, ue, a0);
        a1 = __smlad(p1, ue, a1);
        b0 = __smlad(p0, ve, b0);
        b1 = __smlad(p1, ve, b1);
        a0 = __smlad(q0, uo, a0);
        a1 = __smlad(q1, uo, a1);
        b0 = __smlad(q0, vo, b0);
        b1 = __smlad(q1, vo, b1);
    }
    for (int32_t i = count & ~3; i < count; ++i, x += x_cs, ++u) { /* 1 to 3 channels left */
        const int32_t uw = u[0], vw = u[d], x0 = x[0], x1 = x[1];
        a0 += x0 * uw;
        a1 += x1 * uw;
        b0 += x0 * vw;
        b1 += x1 * vw;
    }
    s[0] = a0, s[1] = a1, s[2] = b0, s[3] = b1;
}

/* PKHBT with LSL #16: the low halfword of lo, the low halfword of hi as the high one. */
static inline int32_t mct_pkhbt_lsl16(int32_t lo, int32_t hi) {
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(lo), "r"(hi));
    return r;
}

/* PKHTB with ASR #16: the high halfword of lo as the low one, the high halfword of hi. */
static inline int32_t mct_pkhtb_asr16(int32_t hi, int32_t lo) {
    int32_t r;
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(hi), "r"(lo));
    return r;
}

/* Input channels [0, count) of ONE output channel (weights u[i]) at the 4 positions x[i * x_cs + 0..3],
 * added to s[0..3]. SMLAD needs two channels at one position in a word: four channels a step, each a word
 * of its 4 positions; channels (i, i+2) joined by PKHBT / PKHTB into (a0 a1 c0 c1), (a2 a3 c2 c3), whose
 * SXTB16 gives the channel pair of positions 0, 2 and, rotated, 1, 3, against SXTB16 of the 4 weight
 * bytes (pairs (i, i+2), (i+1, i+3)): 5 loads, 4 PKH, 10 SXTB16, 8 SMLAD for 16 MACs (a multiply per
 * MAC and a byte load per input before). */
static inline void mct_dsp_pw_one(const int8_t *x, int32_t x_cs, const int8_t *u, int32_t count, int32_t *s) {
    int32_t s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
    const int8_t *const end = u + (count & ~3);
    while (u < end) {
        const int8_t *x2 = x + 2 * x_cs;
        const int32_t a = mct_ld32(x), b = mct_ld32(x + x_cs), c = mct_ld32(x2), d = mct_ld32(x2 + x_cs);
        const int32_t w = mct_ldr_post(&u), we = __sxtb16(w), wo = mct_sxtb16_ror8(w);
        x += 4 * x_cs;
        const int32_t ac01 = mct_pkhbt_lsl16(a, c), bd01 = mct_pkhbt_lsl16(b, d);
        s0 = __smlad(__sxtb16(ac01), we, s0);
        s1 = __smlad(mct_sxtb16_ror8(ac01), we, s1);
        s0 = __smlad(__sxtb16(bd01), wo, s0);
        s1 = __smlad(mct_sxtb16_ror8(bd01), wo, s1);
        const int32_t ac23 = mct_pkhtb_asr16(c, a), bd23 = mct_pkhtb_asr16(d, b);
        s2 = __smlad(__sxtb16(ac23), we, s2);
        s3 = __smlad(mct_sxtb16_ror8(ac23), we, s3);
        s2 = __smlad(__sxtb16(bd23), wo, s2);
        s3 = __smlad(mct_sxtb16_ror8(bd23), wo, s3);
    }
    for (int32_t i = count & ~3; i < count; ++i, x += x_cs, ++u) { /* 1 to 3 channels left */
        const int32_t w = u[0];
        s0 += x[0] * w;
        s1 += x[1] * w;
        s2 += x[2] * w;
        s3 += x[3] * w;
    }
    s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3;
}

/* ---- 1x1 convs on a widened input (mct_dsp_pointwise.h: pointwise_planned, pointwise_wide, pointwise_sliced) ---- */

/* The widened input of 2 positions (q, q + 1) and 4 input channels i..i+3 ("a group"), as the 4 words
 * SMLAD pairs with SXTB16 of 4 weight bytes (pairs (i, i+2), (i+1, i+3)): [E(q), O(q), E(q+1), O(q+1)],
 * E(p) = (x_i[p] - z, x_i+2[p] - z), O(p) = (x_i+1[p] - z, x_i+3[p] - z) as int16 pairs. The zero point is
 * subtracted once here (SXTAB16 adds (-z, -z) while widening: |x - z| <= 255 fits a halfword), so no
 * weight sums are needed: sum (x - z) w is the same integer as sum x w - z sum w. */
#define MCT_DSP_GROUP_WORDS 4

/* The 4 widened words of a group at a position pair from t02 = (x_i, x_i+2), t13 = (x_i+1, x_i+3) (the pair's
 * bytes of each channel as halfwords), the zero point's (-z, -z) in zz. */
static inline void mct_dsp_widen_group(int32_t zz, int32_t t02, int32_t t13, int32_t *out) {
    out[0] = __sxtab16(zz, t02);
    out[1] = __sxtab16(zz, t13);
    out[2] = mct_sxtab16_ror8(zz, t02);
    out[3] = mct_sxtab16_ror8(zz, t13);
}

/* mct_dsp_widen_group's words stored by two STRD (GCC stores them with four STR). */
static inline void mct_dsp_widen_group_strd(int32_t zz, int32_t t02, int32_t t13, int32_t *out) {
    __asm__("strd %1, %2, [%3]" : "=m"(*(int32_t(*)[2])out) : "r"(__sxtab16(zz, t02)), "r"(__sxtab16(zz, t13)),
            "r"(out));
    __asm__("strd %1, %2, [%3, #8]" : "=m"(*(int32_t(*)[2])(out + 2)) : "r"(mct_sxtab16_ror8(zz, t02)),
            "r"(mct_sxtab16_ror8(zz, t13)), "r"(out));
}

/* A full group's words of ``pairs`` position pairs from c0 on (channel k's bytes at c0 + k * x_cs), two pairs
 * a step: a word load per channel, its two pairs joined by PKHBT / PKHTB (4 loads, 4 PKH for 2 pairs instead
 * of 8 halfword loads, 4 ORR); the last pair of an odd count by halfwords. */
static inline void mct_dsp_widen_full(const int8_t *c0, int32_t x_cs, int32_t pairs, int32_t zz, int32_t pair_words,
                                      int32_t *out) {
    const int8_t *c2 = c0 + 2 * x_cs, *const end = c0 + 4 * (pairs >> 1); /* channels 2, 3: a second pointer */
    while (c0 < end) { /* 24 instructions for 2 pairs (30 with STR and a counter) */
        const int32_t w1 = mct_ld32(c0 + x_cs), w0 = mct_ldr_post(&c0);
        const int32_t w3 = mct_ld32(c2 + x_cs), w2 = mct_ldr_post(&c2);
        mct_dsp_widen_group_strd(zz, mct_pkhbt_lsl16(w0, w2), mct_pkhbt_lsl16(w1, w3), out);
        out += pair_words;
        mct_dsp_widen_group_strd(zz, mct_pkhtb_asr16(w2, w0), mct_pkhtb_asr16(w3, w1), out);
        out += pair_words;
    }
    if (pairs & 1) {
        uint16_t h0, h1, h2, h3;
        memcpy(&h0, c0, 2);
        memcpy(&h1, c0 + x_cs, 2);
        memcpy(&h2, c0 + 2 * x_cs, 2);
        memcpy(&h3, c0 + 3 * x_cs, 2);
        mct_dsp_widen_group(zz, (int32_t)((uint32_t)h0 | ((uint32_t)h2 << 16)),
                            (int32_t)((uint32_t)h1 | ((uint32_t)h3 << 16)), out);
    }
}

/* The widened words of ``pairs`` position pairs from q on, channels [0, in_c) (in_c rounded up to 4:
 * the missing channels read as 0 bytes; their weights are 0, mct_dsp_gather_w), into buf, laid out
 * [pair][group][4 words]: full groups by mct_dsp_widen_full, the last group of an in_c not a multiple of 4
 * per pair (its halfwords one by one). */
static inline void mct_dsp_widen(const int8_t *x, int32_t x_cs, int32_t q, int32_t pairs, int32_t in_c, int32_t zero,
                                 int32_t *buf) {
    const int32_t groups = (in_c + 3) >> 2, full = in_c >> 2, pair_words = groups * MCT_DSP_GROUP_WORDS;
    const int32_t zz = (int32_t)(((uint32_t)(uint16_t)(int16_t)-zero) * 0x00010001u);
    for (int32_t g = 0; g < groups; ++g) {
        const int8_t *c0 = x + (4 * g) * x_cs + q;
        int32_t *out = buf + g * MCT_DSP_GROUP_WORDS;
        if (g < full) {
            mct_dsp_widen_full(c0, x_cs, pairs, zz, pair_words, out);
            continue;
        }
        const int32_t have = in_c - 4 * g; /* channels of the last group inside the input: 1 to 3 */
        for (int32_t j = 0; j < pairs; ++j, c0 += 2, out += pair_words) {
            uint16_t h0, h1 = 0, h2 = 0;
            memcpy(&h0, c0, 2);
            if (have > 1) memcpy(&h1, c0 + x_cs, 2);
            if (have > 2) memcpy(&h2, c0 + 2 * x_cs, 2);
            mct_dsp_widen_group(zz, (int32_t)((uint32_t)h0 | ((uint32_t)h2 << 16)), (int32_t)h1, out);
        }
    }
}

/* 4 weight bytes of channels 4g..4g+3 gathered one by one (a group that straddles the SRAM/Flash split of
 * a row, or the last group of an in_c not a multiple of 4: 0 for the channels past in_c), as one word. */
static inline int32_t mct_dsp_gather_w(const int8_t *b) {
    return (int32_t)((uint32_t)(uint8_t)b[0] | ((uint32_t)(uint8_t)b[1] << 8) | ((uint32_t)(uint8_t)b[2] << 16)
                     | ((uint32_t)(uint8_t)b[3] << 24));
}

/* One group of two output channels (weight words wu, wv) at the position pair of xb, added to s[0..3] =
 * (a0, a1, b0, b1). */
static inline void mct_dsp_pw_group(const int32_t *xb, int32_t wu, int32_t wv, int32_t *s) {
    const int32_t ue = __sxtb16(wu), uo = mct_sxtb16_ror8(wu), ve = __sxtb16(wv), vo = mct_sxtb16_ror8(wv);
    s[0] = __smlad(xb[1], uo, __smlad(xb[0], ue, s[0]));
    s[1] = __smlad(xb[3], uo, __smlad(xb[2], ue, s[1]));
    s[2] = __smlad(xb[1], vo, __smlad(xb[0], ve, s[2]));
    s[3] = __smlad(xb[3], vo, __smlad(xb[2], ve, s[3]));
}

/* ``groups`` groups of two output channels (weights u[i], v[i] = u[i + d], 4 bytes a group) at the
 * position pair whose words start at xb, added to s[0..3]: per group 4 input words (two LDRD), 2 weight
 * words, 4 SXTB16, 8 SMLAD for 16 MACs (mct_dsp_pw_two unpacks the input again for every output pair:
 * 26 instructions). */
static inline void mct_dsp_pw_wide(const int32_t *xb, const int8_t *u, int32_t d, int32_t groups, int32_t *s) {
    int32_t a0 = s[0], a1 = s[1], b0 = s[2], b1 = s[3];
    const int8_t *const end = u + 4 * groups;
    while (u < end) {
        int32_t e0, o0, e1, o1;
        mct_ldrd_post(&xb, &e0, &o0);
        mct_ldrd_post(&xb, &e1, &o1);
        const int32_t wv = mct_ld32(u + d), wu = mct_ldr_post(&u);
        const int32_t ue = __sxtb16(wu), uo = mct_sxtb16_ror8(wu), ve = __sxtb16(wv), vo = mct_sxtb16_ror8(wv);
        a0 = __smlad(e0, ue, a0);
        a1 = __smlad(e1, ue, a1);
        b0 = __smlad(e0, ve, b0);
        b1 = __smlad(e1, ve, b1);
        a0 = __smlad(o0, uo, a0);
        a1 = __smlad(o1, uo, a1);
        b0 = __smlad(o0, vo, b0);
        b1 = __smlad(o1, vo, b1);
    }
    s[0] = a0, s[1] = a1, s[2] = b0, s[3] = b1;
}

/* Two output channels' weight words wu, wv of one group as the 4 words mct_dsp_pw_unpacked reads: (SXTB16(wu),
 * SXTB16(wu) ror 8, SXTB16(wv), SXTB16(wv) ror 8). */
static inline void mct_dsp_unpack_group(int32_t wu, int32_t wv, int32_t *out) {
    out[0] = __sxtb16(wu), out[1] = mct_sxtb16_ror8(wu), out[2] = __sxtb16(wv), out[3] = mct_sxtb16_ror8(wv);
}

/* *p[0], *p[1] = a, b and *p += 2: one STRD with post-increment. */
static inline void mct_strd_post(int32_t **p, int32_t a, int32_t b) {
    __asm__("strd %2, %3, [%1], #8" : "=m"(*(int32_t(*)[2]) * p), "+r"(*p) : "r"(a), "r"(b));
}

/* ``groups`` groups of two output channels (weights u[i], v[i] = u[i + d]) unpacked into out[4g..4g+3]: 2 LDR,
 * 4 SXTB16, 2 STRD a group (13 instructions with a counter and STR). */
static inline void mct_dsp_unpack_w(const int8_t *u, int32_t d, int32_t groups, int32_t *out) {
    for (const int8_t *const end = u + 4 * groups; u < end;) {
        const int32_t wv = mct_ld32(u + d), wu = mct_ldr_post(&u);
        mct_strd_post(&out, __sxtb16(wu), mct_sxtb16_ror8(wu));
        mct_strd_post(&out, __sxtb16(wv), mct_sxtb16_ror8(wv));
    }
}

/* mct_dsp_pw_wide on weights unpacked once for all position pairs (wb: mct_dsp_unpack_group's words per group),
 * the sums stored (not added) in s[0..3]: per group 4 LDRD and 8 SMLAD for 16 MACs, no SXTB16 (unpacking the
 * weights for every pair cost 4 more). */
static inline void mct_dsp_pw_unpacked(const int32_t *xb, const int32_t *wb, int32_t groups, int32_t *s) {
    int32_t a0 = 0, a1 = 0, b0 = 0, b1 = 0;
    const int32_t *const end = wb + MCT_DSP_GROUP_WORDS * groups;
    while (wb < end) {
        int32_t e0, o0, e1, o1, ue, uo, ve, vo;
        mct_ldrd_post(&xb, &e0, &o0);
        mct_ldrd_post(&wb, &ue, &uo);
        a0 = __smlad(o0, uo, __smlad(e0, ue, a0));
        mct_ldrd_post(&xb, &e1, &o1);
        a1 = __smlad(o1, uo, __smlad(e1, ue, a1));
        mct_ldrd_post(&wb, &ve, &vo);
        b0 = __smlad(o0, vo, __smlad(e0, ve, b0));
        b1 = __smlad(o1, vo, __smlad(e1, ve, b1));
    }
    s[0] = a0, s[1] = a1, s[2] = b0, s[3] = b1;
}

/* mct_dsp_pw_unpacked for ONE output channel (the first of each group's unpacked words: ue, uo), its two sums
 * stored in s[0..1]: an odd channel left alone, not paired with itself (half the SMLAD). */
static inline void mct_dsp_pw_unpacked_one(const int32_t *xb, const int32_t *wb, int32_t groups, int32_t *s) {
    int32_t a0 = 0, a1 = 0;
    for (const int32_t *const end = wb + MCT_DSP_GROUP_WORDS * groups; wb < end; wb += MCT_DSP_GROUP_WORDS) {
        int32_t e0, o0, e1, o1;
        mct_ldrd_post(&xb, &e0, &o0);
        mct_ldrd_post(&xb, &e1, &o1);
        a0 = __smlad(o0, wb[1], __smlad(e0, wb[0], a0));
        a1 = __smlad(o1, wb[1], __smlad(e1, wb[0], a1));
    }
    s[0] = a0, s[1] = a1;
}

/* mct_dsp_pw_unpacked (``two``; else mct_dsp_pw_unpacked_one) at ``pairs`` position pairs (pair j's words at
 * xb + j * 4 * groups, its sums in s[4j..]), ``groups`` a constant where inlined: the group loop unrolled (4
 * LDRD, 8 SMLAD a group; the first SMUAD, no zeroed sums), the weight pointer stepped back after each pair,
 * so sums, input, weights and pointers fit the registers (the looped form spilled around every pair: 18
 * instructions a pair beside the groups); up to 32 groups (pw_planned_sums' cases). ``biased``: wb starts with
 * the two channels' first sums (a generated plan's 2 * bias: mct_dsp_pointwise.h), loaded once a pair. */
static inline __attribute__((always_inline)) void mct_dsp_pw_unpacked_fixed(const int32_t *xb, const int32_t *wb,
                                                                             int32_t groups, int32_t two,
                                                                             int32_t biased, int32_t pairs,
                                                                             int32_t *s) {
    for (int32_t *const end = s + 4 * pairs; s < end;) {
        int32_t a0 = 0, a1 = 0, b0 = 0, b1 = 0, u0 = 0, v0 = 0;
        if (biased) mct_ldrd_post(&wb, &u0, &v0);
#pragma GCC unroll 32
        for (int32_t g = 0; g < groups; ++g) {
            int32_t e0, o0, e1, o1, ue, uo, ve, vo;
            mct_ldrd_post(&xb, &e0, &o0);
            mct_ldrd_post(&wb, &ue, &uo);
            a0 = __smlad(o0, uo, g > 0 ? __smlad(e0, ue, a0) : biased ? __smlad(e0, ue, u0) : __smuad(e0, ue));
            mct_ldrd_post(&xb, &e1, &o1);
            a1 = __smlad(o1, uo, g > 0 ? __smlad(e1, ue, a1) : biased ? __smlad(e1, ue, u0) : __smuad(e1, ue));
            if (two) {
                mct_ldrd_post(&wb, &ve, &vo);
                b0 = __smlad(o0, vo, g > 0 ? __smlad(e0, ve, b0) : biased ? __smlad(e0, ve, v0) : __smuad(e0, ve));
                b1 = __smlad(o1, vo, g > 0 ? __smlad(e1, ve, b1) : biased ? __smlad(e1, ve, v0) : __smuad(e1, ve));
            } else {
                wb += 2;
            }
        }
        wb -= MCT_DSP_GROUP_WORDS * groups + (biased ? 2 : 0);
        mct_strd_post(&s, a0, a1);
        mct_strd_post(&s, b0, b1);
    }
}

#include "mct_dsp_depthwise.h" /* the depthwise rows' helpers */

#endif /* MCT_DSP */
#endif /* MCT_DSP_H */
