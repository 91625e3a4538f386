/* mct_dsp_depthwise.h: the depthwise rows' DSP helpers (SMLAD(X), SMLAxB, PKHBT on SXTB16-unpacked tap
 * rows), included by mct_dsp.h inside its MCT_DSP guard (its loads, unpacking and requantization are
 * defined there). Why a header of its own: mct_dsp.h passed the 500 lines a file may have once the
 * depthwise and the 1x1 kernels both grew; the split follows the op kinds. */
#ifndef MCT_DSP_DEPTHWISE_H
#define MCT_DSP_DEPTHWISE_H

/* ---- depthwise rows ---- */

/* (w[0], w[2]) of a 3-tap row as an int16 pair. */
static inline int32_t mct_dsp_w02(const int8_t *w) {
    return (int32_t)((uint32_t)(uint16_t)(int16_t)w[0] | ((uint32_t)(int32_t)w[2] << 16));
}

/* A 3x3 depthwise kernel as SMLAD operands: per tap row a, (w[a][0], w[a][2]) as an int16 pair and
 * w[a][1]. */
typedef struct {
    int32_t w02[3], w1[3];
} mct_dsp_dw3;

static inline mct_dsp_dw3 mct_dsp_dw3_of(const int8_t *w) {
    mct_dsp_dw3 k;
    for (int32_t a = 0; a < 3; ++a) {
        k.w02[a] = mct_dsp_w02(w + 3 * a);
        k.w1[a] = w[3 * a + 1];
    }
    return k;
}

/* One tap row of two neighbouring stride-1 outputs: r[0..2] for the first, r[1..3] for the second, from
 * one 4-byte load (both windows inside the row: no byte past them is read). */
#define MCT_DSP_DW3_ROW(r_, a_)                             \
    {                                                       \
        const int32_t v = mct_ld32(r_), e = __sxtb16(v), o = mct_sxtb16_ror8(v); \
        s0 = __smlad(e, k->w02[a_], s0);                    \
        s0 = __smlabb(o, k->w1[a_], s0);                    \
        s1 = __smlad(o, k->w02[a_], s1);                    \
        s1 = __smlatb(e, k->w1[a_], s1);                    \
    }

/* The raw sums of the 3x3 windows at columns ix and ix + 1 of rows r0, r1, r2 (added to *out0, *out1). */
static inline void mct_dsp_dw3_two(const int8_t *r0, const int8_t *r1, const int8_t *r2, const mct_dsp_dw3 *k,
                                   int32_t *out0, int32_t *out1) {
    int32_t s0 = *out0, s1 = *out1;
    MCT_DSP_DW3_ROW(r0, 0)
    MCT_DSP_DW3_ROW(r1, 1)
    MCT_DSP_DW3_ROW(r2, 2)
    *out0 = s0, *out1 = s1;
}
#undef MCT_DSP_DW3_ROW

/* One tap row (3 taps, stride 2) of 4 neighbouring outputs, added to s[0..3]: the windows r[0..2],
 * r[2..4], r[4..6], r[6..8] (two 4-byte loads and one byte: nothing outside the windows). SXTB16 of a
 * word gives its even bytes (b0, b2), rotated its odd ones (b1, b3): exactly the stride-2 taps. w02 =
 * (w0, w2) as an int16 pair, w1 the middle tap. Outputs 1 and 3 pair (b4, b2) / (b8, b6) by PKHBT and
 * SMLADX (the pair swapped against w02): 4 SMLAD(X) + 4 SMLAxB for 12 MACs. */
static inline void mct_dsp_s2_row4(const int8_t *r, int32_t w02, int32_t w1, int32_t *s) {
    const int32_t v0 = mct_ld32(r), v1 = mct_ld32(r + 4), b8 = r[8];
    const int32_t e0 = __sxtb16(v0), o0 = mct_sxtb16_ror8(v0), e1 = __sxtb16(v1), o1 = mct_sxtb16_ror8(v1);
    s[0] = __smlabb(o0, w1, __smlad(e0, w02, s[0]));
    s[1] = __smlatb(o0, w1, __smladx(mct_pkhbt(e1, e0), w02, s[1]));
    s[2] = __smlabb(o1, w1, __smlad(e1, w02, s[2]));
    s[3] = __smlatb(o1, w1, __smladx(mct_pkhbt(b8, e1), w02, s[3]));
}


/* A 5- or 7-tap row as SMLAD operands: (w0, w2), (w1, w3), (w4, w6) int16 pairs and w5 (k = 5: w4, w6 = 0,
 * w5 = 0). */
typedef struct {
    int32_t w02, w13, w46, w5;
} mct_dsp_row57;

static inline mct_dsp_row57 mct_dsp_row57_of(const int8_t *w, int32_t k) {
    mct_dsp_row57 r;
    r.w02 = mct_dsp_w02(w);
    r.w13 = mct_dsp_w02(w + 1);
    r.w46 = k == 7 ? mct_dsp_w02(w + 4) : w[4];
    r.w5 = k == 7 ? w[5] : 0;
    return r;
}

/* One tap row of two neighbouring stride-1 outputs of a 7-tap kernel: r[0..6] and r[1..7], exactly the
 * two words at r (b0..b3, b4..b7). Even/odd halves of each word: (b0, b2) (b1, b3) (b4, b6) (b5, b7);
 * the second output's (b2, b4) pair by PKHBT against (w1, w3) swapped (SMLADX). 7 SMLAD(X) + 1 SMLAxB for
 * 14 MACs. */
static inline void mct_dsp_row7_two(const int8_t *r, const mct_dsp_row57 *k, int32_t *s0, int32_t *s1) {
    const int32_t va = mct_ld32(r), vb = mct_ld32(r + 4);
    const int32_t ea = __sxtb16(va), oa = mct_sxtb16_ror8(va), eb = __sxtb16(vb), ob = mct_sxtb16_ror8(vb);
    *s0 = __smlabb(ob, k->w5, __smlad(eb, k->w46, __smlad(oa, k->w13, __smlad(ea, k->w02, *s0))));
    *s1 = __smlatb(eb, k->w5, __smlad(ob, k->w46, __smladx(mct_pkhbt(eb, ea), k->w13, __smlad(oa, k->w02, *s1))));
}

/* The same for a 5-tap kernel: r[0..4] and r[1..5] (a word and a halfword: nothing past the windows). */
static inline void mct_dsp_row5_two(const int8_t *r, const mct_dsp_row57 *k, int32_t *s0, int32_t *s1) {
    uint16_t h;
    memcpy(&h, r + 4, 2);
    const int32_t va = mct_ld32(r), vb = (int32_t)h;
    const int32_t ea = __sxtb16(va), oa = mct_sxtb16_ror8(va), eb = __sxtb16(vb), ob = mct_sxtb16_ror8(vb);
    *s0 = __smlabb(eb, k->w46, __smlad(oa, k->w13, __smlad(ea, k->w02, *s0)));
    *s1 = __smlabb(ob, k->w46, __smladx(mct_pkhbt(eb, ea), k->w13, __smlad(oa, k->w02, *s1)));
}

/* Stride 2: one tap row of two neighbouring outputs, r[0..6] and r[2..8] (7 taps: two words and a byte),
 * r[0..4] and r[2..6] (5 taps: a word, a halfword and a byte; nothing past the windows). The first output
 * pairs as at stride 1; the second's pairs (b2, b4) (b3, b5) (b6, b8) straddle the unpacked halves: PKHBT
 * joins them, SMLADX against the swapped weight pair. */
static inline void mct_dsp_row7_two_s2(const int8_t *r, const mct_dsp_row57 *k, int32_t *s0, int32_t *s1) {
    const int32_t va = mct_ld32(r), vb = mct_ld32(r + 4), b8 = r[8];
    const int32_t ea = __sxtb16(va), oa = mct_sxtb16_ror8(va), eb = __sxtb16(vb), ob = mct_sxtb16_ror8(vb);
    *s0 = __smlabb(ob, k->w5, __smlad(eb, k->w46, __smlad(oa, k->w13, __smlad(ea, k->w02, *s0))));
    *s1 = __smlatb(ob, k->w5, __smladx(mct_pkhbt(b8, eb), k->w46,
                                       __smladx(mct_pkhbt(ob, oa), k->w13, __smladx(mct_pkhbt(eb, ea), k->w02, *s1))));
}

static inline void mct_dsp_row5_two_s2(const int8_t *r, const mct_dsp_row57 *k, int32_t *s0, int32_t *s1) {
    uint16_t h;
    memcpy(&h, r + 4, 2);
    const int32_t va = mct_ld32(r), vb = (int32_t)h, b6 = r[6];
    const int32_t ea = __sxtb16(va), oa = mct_sxtb16_ror8(va), eb = __sxtb16(vb), ob = mct_sxtb16_ror8(vb);
    *s0 = __smlabb(eb, k->w46, __smlad(oa, k->w13, __smlad(ea, k->w02, *s0)));
    *s1 = __smlabb(b6, k->w46, __smladx(mct_pkhbt(ob, oa), k->w13, __smladx(mct_pkhbt(eb, ea), k->w02, *s1)));
}

/* Four neighbouring outputs of one 5- or 7-tap row, added to s[0..3] (mct_depthwise.c): the even/odd halves of
 * the row's words serve the four windows, the pairs that straddle two halves by PKHBT against a weight pair
 * swapped (SMLADX); each load, SXTB16 and PKHBT serves two or more outputs and the weights are read once for
 * four. Stride 1, 7 taps: r[0..9] (two words, a halfword), 29 instructions for 28 MACs. */
static inline void mct_dsp_row7_four(const int8_t *r, const mct_dsp_row57 *k, int32_t *s) {
    uint16_t h;
    memcpy(&h, r + 8, 2);
    const int32_t va = mct_ld32(r), vb = mct_ld32(r + 4), vc = (int32_t)h;
    const int32_t ea = __sxtb16(va), oa = mct_sxtb16_ror8(va), eb = __sxtb16(vb), ob = mct_sxtb16_ror8(vb);
    const int32_t ec = __sxtb16(vc), oc = mct_sxtb16_ror8(vc);
    const int32_t p = mct_pkhbt(eb, ea), q = mct_pkhbt(ob, oa); /* (r4, r2), (r5, r3) */
    s[0] = __smlabb(ob, k->w5, __smlad(eb, k->w46, __smlad(oa, k->w13, __smlad(ea, k->w02, s[0]))));
    s[1] = __smlatb(eb, k->w5, __smlad(ob, k->w46, __smladx(p, k->w13, __smlad(oa, k->w02, s[1]))));
    s[2] = __smlatb(ob, k->w5, __smladx(mct_pkhbt(ec, eb), k->w46, __smladx(q, k->w13, __smladx(p, k->w02, s[2]))));
    s[3] = __smlabb(ec, k->w5, __smladx(mct_pkhbt(oc, ob), k->w46, __smlad(eb, k->w13, __smladx(q, k->w02, s[3]))));
}

/* Stride 1, 5 taps (w46 = (w4, 0)): r[0..7] (two words), 20 instructions for 20 MACs. */
static inline void mct_dsp_row5_four(const int8_t *r, const mct_dsp_row57 *k, int32_t *s) {
    const int32_t va = mct_ld32(r), vb = mct_ld32(r + 4);
    const int32_t ea = __sxtb16(va), oa = mct_sxtb16_ror8(va), eb = __sxtb16(vb), ob = mct_sxtb16_ror8(vb);
    const int32_t p = mct_pkhbt(eb, ea), q = mct_pkhbt(ob, oa); /* (r4, r2), (r5, r3) */
    s[0] = __smlabb(eb, k->w46, __smlad(oa, k->w13, __smlad(ea, k->w02, s[0])));
    s[1] = __smlabb(ob, k->w46, __smladx(p, k->w13, __smlad(oa, k->w02, s[1])));
    s[2] = __smlatb(eb, k->w46, __smladx(q, k->w13, __smladx(p, k->w02, s[2])));
    s[3] = __smlatb(ob, k->w46, __smlad(eb, k->w13, __smladx(q, k->w02, s[3])));
}

/* Stride 2, 7 taps: r[0..12] (three words, a byte), 31 instructions for 28 MACs. */
static inline void mct_dsp_row7_four_s2(const int8_t *r, const mct_dsp_row57 *k, int32_t *s) {
    const int32_t va = mct_ld32(r), vb = mct_ld32(r + 4), vc = mct_ld32(r + 8), b12 = r[12];
    const int32_t ea = __sxtb16(va), oa = mct_sxtb16_ror8(va), eb = __sxtb16(vb), ob = mct_sxtb16_ror8(vb);
    const int32_t ec = __sxtb16(vc), oc = mct_sxtb16_ror8(vc);
    const int32_t rr = mct_pkhbt(ec, eb); /* (r8, r6) */
    s[0] = __smlabb(ob, k->w5, __smlad(eb, k->w46, __smlad(oa, k->w13, __smlad(ea, k->w02, s[0]))));
    s[1] = __smlatb(ob, k->w5, __smladx(rr, k->w46, __smladx(mct_pkhbt(ob, oa), k->w13,
                                                                __smladx(mct_pkhbt(eb, ea), k->w02, s[1]))));
    s[2] = __smlabb(oc, k->w5, __smlad(ec, k->w46, __smlad(ob, k->w13, __smlad(eb, k->w02, s[2]))));
    s[3] = __smlatb(oc, k->w5, __smladx(mct_pkhbt(b12, ec), k->w46, __smladx(mct_pkhbt(oc, ob), k->w13,
                                                                            __smladx(rr, k->w02, s[3]))));
}

/* Stride 2, 5 taps: r[0..10] (two words, a halfword, a byte), 28 instructions for 20 MACs. */
static inline void mct_dsp_row5_four_s2(const int8_t *r, const mct_dsp_row57 *k, int32_t *s) {
    uint16_t h;
    memcpy(&h, r + 8, 2);
    const int32_t va = mct_ld32(r), vb = mct_ld32(r + 4), vc = (int32_t)h, b10 = r[10];
    const int32_t ea = __sxtb16(va), oa = mct_sxtb16_ror8(va), eb = __sxtb16(vb), ob = mct_sxtb16_ror8(vb);
    const int32_t ec = __sxtb16(vc), oc = mct_sxtb16_ror8(vc);
    s[0] = __smlabb(eb, k->w46, __smlad(oa, k->w13, __smlad(ea, k->w02, s[0])));
    s[1] = __smlatb(eb, k->w46, __smladx(mct_pkhbt(ob, oa), k->w13, __smladx(mct_pkhbt(eb, ea), k->w02, s[1])));
    s[2] = __smlabb(ec, k->w46, __smlad(ob, k->w13, __smlad(eb, k->w02, s[2])));
    s[3] = __smlabb(b10, k->w46, __smladx(mct_pkhbt(oc, ob), k->w13, __smladx(mct_pkhbt(ec, eb), k->w02, s[3])));
}

/* ---- 3x3 output rows in assembly (mct_depthwise.c's dw3_s1 / dw3_s2) ----
 * Why assembly: the C loops keep 15 to 16 values live (two sums, the unpacked word, five weight registers, the
 * requantization's constants, the row pointers and the end); the core has 14 and GCC spilled a weight or a
 * pointer on every step (about 42 instructions for 18 MACs at stride 1, 48 at stride 2). Here the constants
 * that are read once a step sit on the stack (the start value ``init`` twice: one LDRD starts both sums; the
 * nudge; the end of y: GCC found no 14th register for an asm inlined into dw_run, 13 did build), the
 * shift ``right`` rides in the low halfword of b2 (ASR by a register reads its low byte; SMLAxT only the high
 * halfword) and the requantization adds the rounding's sign to the nudge before SMMLAR (the same integers as
 * dw_requant: SMMLAR adds its accumulator whole). k: {a0, a1, a2, b01, b2 | right, m, init, nudge} (dw_plan's
 * doubled operands); n outputs, n even and > 0. Stride 1: the tap rows at r, r + w, r + 2w (LDR's register
 * offset, LSL #1 for the third), 36 instructions for 18 MACs. */
static inline __attribute__((always_inline)) void mct_dsp_dw3_s1_row(const int8_t *r, int32_t w, int8_t *y,
                                                                     int32_t n, const int32_t *k) {
    int32_t s0 = k[6], s1 = k[7], e = (int32_t)(intptr_t)(y + n), o;
    __asm__ volatile(
        "strd %[s0], %[s0], [sp, #-16]!\n\t" /* init, init, nudge, end */
        "strd %[s1], %[e], [sp, #8]\n"
        "1:\n\t"
        "ldrd %[s0], %[s1], [sp]\n\t"
        "ldr %[e], [%[r], %[w]]\n\t"
        "sxtb16 %[o], %[e], ror #8\n\t"
        "sxtb16 %[e], %[e]\n\t"
        "smlad %[s0], %[e], %[a1], %[s0]\n\t"
        "smlabt %[s0], %[o], %[b01], %[s0]\n\t"
        "smlad %[s1], %[o], %[a1], %[s1]\n\t"
        "smlatt %[s1], %[e], %[b01], %[s1]\n\t"
        "ldr %[e], [%[r], %[w], lsl #1]\n\t"
        "sxtb16 %[o], %[e], ror #8\n\t"
        "sxtb16 %[e], %[e]\n\t"
        "smlad %[s0], %[e], %[a2], %[s0]\n\t"
        "smlabt %[s0], %[o], %[b2], %[s0]\n\t"
        "smlad %[s1], %[o], %[a2], %[s1]\n\t"
        "smlatt %[s1], %[e], %[b2], %[s1]\n\t"
        "ldr %[e], [%[r]], #2\n\t"
        "sxtb16 %[o], %[e], ror #8\n\t"
        "sxtb16 %[e], %[e]\n\t"
        "smlad %[s0], %[e], %[a0], %[s0]\n\t"
        "smlabb %[s0], %[o], %[b01], %[s0]\n\t"
        "smlad %[s1], %[o], %[a0], %[s1]\n\t"
        "smlatb %[s1], %[e], %[b01], %[s1]\n\t"
        "ldr %[e], [sp, #8]\n\t"
        "add %[o], %[e], %[s0], asr #31\n\t"
        "smmlar %[s0], %[s0], %[m], %[o]\n\t"
        "add %[o], %[e], %[s1], asr #31\n\t"
        "smmlar %[s1], %[s1], %[m], %[o]\n\t"
        "asr %[s0], %[s0], %[b2]\n\t"
        "asr %[s1], %[s1], %[b2]\n\t"
        "ssat %[s0], #8, %[s0]\n\t"
        "ssat %[s1], #8, %[s1]\n\t"
        "strb %[s0], [%[y]], #1\n\t"
        "strb %[s1], [%[y]], #1\n\t"
        "ldr %[e], [sp, #12]\n\t"
        "cmp %[y], %[e]\n\t"
        "bne 1b\n\t"
        "add sp, sp, #16"
        : [s0] "+&r"(s0), [s1] "+&r"(s1), [e] "+&r"(e), [o] "=&r"(o), [r] "+&r"(r), [y] "+&r"(y)
        : [w] "r"(w), [a0] "r"(k[0]), [a1] "r"(k[1]), [a2] "r"(k[2]), [b01] "r"(k[3]),
          [b2] "r"(k[4]), [m] "r"(k[5])
        : "cc", "memory");
}

/* Stride 2: the tap rows at r[0], r[1], r[2] (a word and the byte after it each: the second output's (r4, r2)
 * pair by PKHBT, SMLADX against (w0, w2)); three row pointers leave no register for m: it is on the stack too.
 * 43 instructions for 18 MACs. */
static inline __attribute__((always_inline)) void mct_dsp_dw3_s2_row(const int8_t *const *rows, int8_t *y,
                                                                     int32_t n, const int32_t *k) {
    int32_t s0 = k[6], s1 = k[7], e = (int32_t)(intptr_t)(y + n), o = k[5];
    const int8_t *r0 = rows[0], *r1 = rows[1], *r2 = rows[2];
    __asm__ volatile(
        "strd %[s0], %[s0], [sp, #-24]!\n\t" /* init, init, nudge, m, end */
        "strd %[s1], %[o], [sp, #8]\n\t"
        "str %[e], [sp, #16]\n"
        "1:\n\t"
        "ldrd %[s0], %[s1], [sp]\n\t"
        "ldr %[e], [%[r0]], #4\n\t"
        "sxtb16 %[o], %[e], ror #8\n\t"
        "sxtb16 %[e], %[e]\n\t"
        "smlad %[s0], %[e], %[a0], %[s0]\n\t"
        "smlabb %[s0], %[o], %[b01], %[s0]\n\t"
        "smlatb %[s1], %[o], %[b01], %[s1]\n\t"
        "ldrsb %[o], [%[r0]]\n\t"
        "pkhbt %[e], %[o], %[e]\n\t"
        "smladx %[s1], %[e], %[a0], %[s1]\n\t"
        "ldr %[e], [%[r1]], #4\n\t"
        "sxtb16 %[o], %[e], ror #8\n\t"
        "sxtb16 %[e], %[e]\n\t"
        "smlad %[s0], %[e], %[a1], %[s0]\n\t"
        "smlabt %[s0], %[o], %[b01], %[s0]\n\t"
        "smlatt %[s1], %[o], %[b01], %[s1]\n\t"
        "ldrsb %[o], [%[r1]]\n\t"
        "pkhbt %[e], %[o], %[e]\n\t"
        "smladx %[s1], %[e], %[a1], %[s1]\n\t"
        "ldr %[e], [%[r2]], #4\n\t"
        "sxtb16 %[o], %[e], ror #8\n\t"
        "sxtb16 %[e], %[e]\n\t"
        "smlad %[s0], %[e], %[a2], %[s0]\n\t"
        "smlabt %[s0], %[o], %[b2], %[s0]\n\t"
        "smlatt %[s1], %[o], %[b2], %[s1]\n\t"
        "ldrsb %[o], [%[r2]]\n\t"
        "pkhbt %[e], %[o], %[e]\n\t"
        "smladx %[s1], %[e], %[a2], %[s1]\n\t"
        "ldrd %[e], %[o], [sp, #8]\n\t"
        "add %[e], %[e], %[s0], asr #31\n\t"
        "smmlar %[s0], %[s0], %[o], %[e]\n\t"
        "ldr %[e], [sp, #8]\n\t"
        "add %[e], %[e], %[s1], asr #31\n\t"
        "smmlar %[s1], %[s1], %[o], %[e]\n\t"
        "asr %[s0], %[s0], %[b2]\n\t"
        "asr %[s1], %[s1], %[b2]\n\t"
        "ssat %[s0], #8, %[s0]\n\t"
        "ssat %[s1], #8, %[s1]\n\t"
        "strb %[s0], [%[y]], #1\n\t"
        "strb %[s1], [%[y]], #1\n\t"
        "ldr %[e], [sp, #16]\n\t"
        "cmp %[y], %[e]\n\t"
        "bne 1b\n\t"
        "add sp, sp, #24"
        : [s0] "+&r"(s0), [s1] "+&r"(s1), [e] "+&r"(e), [o] "+&r"(o), [r0] "+&r"(r0), [r1] "+&r"(r1),
          [r2] "+&r"(r2), [y] "+&r"(y)
        : [a0] "r"(k[0]), [a1] "r"(k[1]), [a2] "r"(k[2]), [b01] "r"(k[3]), [b2] "r"(k[4])
        : "cc", "memory");
}

/* ---- depthwise rows and channels (mct_depthwise.c; a core without Helium) ---- */

/* mct_depthwise_row / mct_depthwise_channel / mct_depthwise_rows on the DSP kernels; 0 (nothing written) where
 * they do not apply (mct_conv: mct_kernels.h includes this header after its definition). */
int mct_dw_dsp_row(const mct_conv *p, int32_t c, const int8_t *const *rows, int8_t *y, uint8_t *mask,
                   int32_t bit0);
int mct_dw_dsp_channel(const mct_conv *p, int32_t c, const int8_t *x_c, int8_t *y_c, uint8_t *mask,
                       int32_t bit0);
int mct_dw_dsp_rows(const mct_conv *p, int32_t c0, int32_t c1, const int8_t *const *rows, int32_t x_cs, int8_t *y,
                    int32_t y_cs, uint8_t *mask, int32_t bit0, int32_t bit_cs);

#endif /* MCT_DSP_DEPTHWISE_H */
