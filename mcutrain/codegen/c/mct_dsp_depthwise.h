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

/* ---- copies and masks (mct_depthwise.c) ---- */

/* n bytes (a multiple of 4) copied between word-aligned ends: 16 a step by LDM / STM, then the 8 and 4 bytes
 * left: the steps counted from n once, no end test a word (mct_depthwise.c's dw_copy). */
static inline __attribute__((always_inline)) void mct_dsp_copy_words(int8_t *dst, const int8_t *src,
                                                                      int32_t n) {
    for (int32_t i = n >> 4; i > 0; --i)
        __asm__ volatile("ldmia %1!, {r4, r5, r6, r7}\n\tstmia %0!, {r4, r5, r6, r7}"
                         : "+r"(dst), "+r"(src)
                         :
                         : "r4", "r5", "r6", "r7", "memory");
    if (n & 8) memcpy(dst, src, 8), dst += 8, src += 8;
    if (n & 4) memcpy(dst, src, 4);
}

/* The clamp mask's inside bits of the 4 outputs in v (bit i: byte i is neither -128 nor 127): UADD8 of 0x81
 * maps exactly those two bytes to 0 and 1, USUB8 of 2 sets GE where a byte is >= 2, SEL makes those bytes 1;
 * the multiply by 2^24 + 2^17 + 2^10 + 2^3 adds byte i's flag at bit 24 + i (the other products land below
 * bit 20 or past bit 31). 6 instructions for 4 bits (mct_put_bit's way: 15 a bit). */
static inline uint32_t mct_dsp_inside4(int32_t v) {
    uint32_t t;
    __asm__("uadd8 %0, %1, %2\n\tusub8 %0, %0, %3\n\tsel %0, %4, %5"
            : "=&r"(t)
            : "r"(v), "r"(0x81818181u), "r"(0x02020202u), "r"(0x01010101u), "r"(0u)
            : "cc");
    return (t * 0x01020408u) >> 24;
}

/* ---- 3x3 output rows in assembly (mct_depthwise.c's dw3_s1 / dw3_s2) ----
 * Why assembly: the C loops keep 15 to 16 values live (two sums, the unpacked word, five weight registers, the
 * requantization's constants, the row pointers and the end); the core has 14 and GCC spilled a weight or a
 * pointer on every step (about 42 instructions for 18 MACs at stride 1, 48 at stride 2). Why functions of their
 * own, not inline asm: all 14 registers are theirs (the end of y's row is one: no load a step), the constants
 * come in by one LDM, the rows loop runs inside (8 to 10 instructions a row), and a call costs about 20
 * instructions, where the C wrapper and the asm's set-up around every row cost 60 to 90. The constants read once a
 * step sit on the stack (the start value ``init`` twice: one LDRD starts both sums; the nudge), and the
 * requantization adds the rounding's sign to the nudge before SMMLAR (the same integers as dw_requant: SMMLAR
 * adds its accumulator whole). One loop per shift ``right`` in [1, 22] (mct_rq_of's fast range, the only one
 * mct_depthwise.c plans; TBH picks the loop): SSAT shifts as it saturates (mct_dsp_requant_pairs' idea), an ASR
 * less an output.
 *
 * mct_dsp_dw3_s{1,2}_seg(seg, k): ``rows`` output rows of n outputs (n even, > 0; rows > 0; seg: mct_depthwise.c's
 * dw_seg, its offsets below), from one output row to the next the tap rows move on by in_step bytes and y by
 * y_step. k: {a0, a1, a2, b01, b2, m, init, nudge, right} (dw_plan's doubled operands: a = (2w0, 2w2) of a tap
 * row; b01 = (2w1 of row 0, 2w1 of row 1), b2's high half 2w1 of row 2). Stack: 9 registers and 28 / 32 bytes.
 *
 * Stride 1: the tap rows at r, r + w, r + 2w (w = seg's r[1] - r[0]; LDR's register offset, LSL #1 for the
 * third), one load per tap row gives both windows (as mct_dsp_dw3_two): 33 instructions for 18 MACs. Frame:
 * init, init, nudge, n, rows left, the tap row's step less n, y's step less n. Registers: r0 tap row 0, r1 w, r2
 * y, r3 the row's end of y, r4 / r5 the sums, r6-r11 a0 a1 a2 b01 b2 m, ip / lr the word and its odd bytes.
 *
 * Stride 2: the tap rows at seg's r[0], r[1], r[2], a word and the byte after it each (the second output's
 * (r4, r2) pair by PKHBT, SMLADX against (w0, w2)); three row pointers leave no register for m: it is on the
 * stack too. 40 instructions for 18 MACs. Frame: init, init, nudge, m, n, rows left, the tap rows' step less 2n,
 * y's step less n. Registers: r0-r2 the tap rows, r3 y, r4 the row's end, r5 / r6 the sums, r7-r11 a0 a1 a2 b01
 * b2, ip / lr as at stride 1. */
enum { MCT_DW3_M = 5, MCT_DW3_INIT = 6, MCT_DW3_NUDGE = 7, MCT_DW3_RIGHT = 8, MCT_DW3_WORDS = 9 };
#define MCT_DW3_SEG_R 0     /* const int8_t *r[7] */
#define MCT_DW3_SEG_Y 28    /* int8_t *y, then int32_t n */
#define MCT_DW3_SEG_ROWS 36 /* int32_t rows, then in_step, y_step */
void mct_dsp_dw3_s1_seg(const void *seg, const int32_t *k);
void mct_dsp_dw3_s2_seg(const void *seg, const int32_t *k);

/* One output row's loop at shift \sh (stride 1), then the next row, then the return. */
#define MCT_DW3_S1_LOOP \
    ".macro mct_dw3_s1_loop sh\n"                                                                                    \
    ".Lmct_dw3_s1_\\sh:\n"                                                                                           \
    "1:\n"                                                                                                           \
    "ldrd r4, r5, [sp]\n\t"                                                                                          \
    "ldr ip, [r0, r1]\n\t"                                                                                           \
    "sxtb16 lr, ip, ror #8\n\t"                                                                                      \
    "sxtb16 ip, ip\n\t"                                                                                              \
    "smlad r4, ip, r7, r4\n\t"                                                                                       \
    "smlabt r4, lr, r9, r4\n\t"                                                                                      \
    "smlad r5, lr, r7, r5\n\t"                                                                                       \
    "smlatt r5, ip, r9, r5\n\t"                                                                                      \
    "ldr ip, [r0, r1, lsl #1]\n\t"                                                                                   \
    "sxtb16 lr, ip, ror #8\n\t"                                                                                      \
    "sxtb16 ip, ip\n\t"                                                                                              \
    "smlad r4, ip, r8, r4\n\t"                                                                                       \
    "smlabt r4, lr, r10, r4\n\t"                                                                                     \
    "smlad r5, lr, r8, r5\n\t"                                                                                       \
    "smlatt r5, ip, r10, r5\n\t"                                                                                     \
    "ldr ip, [r0], #2\n\t"                                                                                           \
    "sxtb16 lr, ip, ror #8\n\t"                                                                                      \
    "sxtb16 ip, ip\n\t"                                                                                              \
    "smlad r4, ip, r6, r4\n\t"                                                                                       \
    "smlabb r4, lr, r9, r4\n\t"                                                                                      \
    "smlad r5, lr, r6, r5\n\t"                                                                                       \
    "smlatb r5, ip, r9, r5\n\t"                                                                                      \
    "ldr ip, [sp, #8]\n\t"                                                                                           \
    "add lr, ip, r4, asr #31\n\t"                                                                                    \
    "smmlar r4, r4, r11, lr\n\t"                                                                                     \
    "add lr, ip, r5, asr #31\n\t"                                                                                    \
    "smmlar r5, r5, r11, lr\n\t"                                                                                     \
    "ssat r4, #8, r4, asr #\\sh\n\t"                                                                                 \
    "ssat r5, #8, r5, asr #\\sh\n\t"                                                                                 \
    "strb r4, [r2], #1\n\t"                                                                                          \
    "strb r5, [r2], #1\n\t"                                                                                          \
    "cmp r2, r3\n\t"                                                                                                 \
    "bne 1b\n\t"                                                                                                     \
    "ldrd ip, lr, [sp, #20]\n\t"                                                                                     \
    "add r0, r0, ip\n\t"                                                                                             \
    "add r2, r2, lr\n\t"                                                                                             \
    "ldrd ip, lr, [sp, #12]\n\t"                                                                                     \
    "add r3, r2, ip\n\t"                                                                                             \
    "subs lr, lr, #1\n\t"                                                                                            \
    "str lr, [sp, #16]\n\t"                                                                                          \
    "bne 1b\n\t"                                                                                                     \
    "add sp, sp, #28\n\t"                                                                                            \
    "pop {r4-r11, pc}\n\t"                                                                                           \
    ".endm\n"                                                                                                        \

/* The same at stride 2. */
#define MCT_DW3_S2_LOOP \
    ".macro mct_dw3_s2_loop sh\n"                                                                                    \
    ".Lmct_dw3_s2_\\sh:\n"                                                                                           \
    "1:\n"                                                                                                           \
    "ldrd r5, r6, [sp]\n\t"                                                                                          \
    "ldr ip, [r0], #4\n\t"                                                                                           \
    "sxtb16 lr, ip, ror #8\n\t"                                                                                      \
    "sxtb16 ip, ip\n\t"                                                                                              \
    "smlad r5, ip, r7, r5\n\t"                                                                                       \
    "smlabb r5, lr, r10, r5\n\t"                                                                                     \
    "smlatb r6, lr, r10, r6\n\t"                                                                                     \
    "ldrsb lr, [r0]\n\t"                                                                                             \
    "pkhbt ip, lr, ip\n\t"                                                                                           \
    "smladx r6, ip, r7, r6\n\t"                                                                                      \
    "ldr ip, [r1], #4\n\t"                                                                                           \
    "sxtb16 lr, ip, ror #8\n\t"                                                                                      \
    "sxtb16 ip, ip\n\t"                                                                                              \
    "smlad r5, ip, r8, r5\n\t"                                                                                       \
    "smlabt r5, lr, r10, r5\n\t"                                                                                     \
    "smlatt r6, lr, r10, r6\n\t"                                                                                     \
    "ldrsb lr, [r1]\n\t"                                                                                             \
    "pkhbt ip, lr, ip\n\t"                                                                                           \
    "smladx r6, ip, r8, r6\n\t"                                                                                      \
    "ldr ip, [r2], #4\n\t"                                                                                           \
    "sxtb16 lr, ip, ror #8\n\t"                                                                                      \
    "sxtb16 ip, ip\n\t"                                                                                              \
    "smlad r5, ip, r9, r5\n\t"                                                                                       \
    "smlabt r5, lr, r11, r5\n\t"                                                                                     \
    "smlatt r6, lr, r11, r6\n\t"                                                                                     \
    "ldrsb lr, [r2]\n\t"                                                                                             \
    "pkhbt ip, lr, ip\n\t"                                                                                           \
    "smladx r6, ip, r9, r6\n\t"                                                                                      \
    "ldrd ip, lr, [sp, #8]\n\t"                                                                                      \
    "add ip, ip, r5, asr #31\n\t"                                                                                    \
    "smmlar r5, r5, lr, ip\n\t"                                                                                      \
    "ldr ip, [sp, #8]\n\t"                                                                                           \
    "add ip, ip, r6, asr #31\n\t"                                                                                    \
    "smmlar r6, r6, lr, ip\n\t"                                                                                      \
    "ssat r5, #8, r5, asr #\\sh\n\t"                                                                                 \
    "ssat r6, #8, r6, asr #\\sh\n\t"                                                                                 \
    "strb r5, [r3], #1\n\t"                                                                                          \
    "strb r6, [r3], #1\n\t"                                                                                          \
    "cmp r3, r4\n\t"                                                                                                 \
    "bne 1b\n\t"                                                                                                     \
    "ldrd ip, lr, [sp, #24]\n\t"                                                                                     \
    "add r0, r0, ip\n\t"                                                                                             \
    "add r1, r1, ip\n\t"                                                                                             \
    "add r2, r2, ip\n\t"                                                                                             \
    "add r3, r3, lr\n\t"                                                                                             \
    "ldrd ip, lr, [sp, #16]\n\t"                                                                                     \
    "add r4, r3, ip\n\t"                                                                                             \
    "subs lr, lr, #1\n\t"                                                                                            \
    "str lr, [sp, #20]\n\t"                                                                                          \
    "bne 1b\n\t"                                                                                                     \
    "add sp, sp, #32\n\t"                                                                                            \
    "pop {r4-r11, pc}\n\t"                                                                                           \
    ".endm\n"                                                                                                        \

/* The functions: the frame, the constants, then TBH to the loop of k's shift. Expanded once (mct_depthwise.c). */
#define MCT_DW3_S1_DEFINE \
    __asm__(MCT_DW3_S1_LOOP                                                                                          \
            ".pushsection .text.mct_dsp_dw3_s1_seg,\"ax\",%progbits\n"                                               \
            ".syntax unified\n"                                                                                      \
            ".thumb\n"                                                                                               \
            ".p2align 2\n"                                                                                           \
            ".global mct_dsp_dw3_s1_seg\n"                                                                           \
            ".thumb_func\n"                                                                                          \
            ".type mct_dsp_dw3_s1_seg, %function\n"                                                                  \
            "mct_dsp_dw3_s1_seg:\n"                                                                                  \
            "push {r4-r11, lr}\n\t"                                                                                  \
            "sub sp, sp, #28\n\t"                                                                                    \
            "ldrd r4, r5, [r1, #24]\n\t"                                                                             \
            "strd r4, r4, [sp]\n\t"                                                                                  \
            "str r5, [sp, #8]\n\t"                                                                                   \
            "ldr lr, [r1, #32]\n\t"                                                                                  \
            "ldm r1, {r6-r11}\n\t"                                                                                   \
            "ldrd r2, r3, [r0, #28]\n\t"                                                                             \
            "ldr r4, [r0, #36]\n\t"                                                                                  \
            "ldrd r5, ip, [r0, #40]\n\t"                                                                             \
            "sub r5, r5, r3\n\t"                                                                                     \
            "sub ip, ip, r3\n\t"                                                                                     \
            "strd r3, r4, [sp, #12]\n\t"                                                                             \
            "strd r5, ip, [sp, #20]\n\t"                                                                             \
            "ldrd r4, r1, [r0]\n\t"                                                                                  \
            "sub r1, r1, r4\n\t"                                                                                     \
            "mov r0, r4\n\t"                                                                                         \
            "add r3, r2, r3\n\t"                                                                                     \
            "sub lr, lr, #1\n\t"                                                                                     \
            "tbh [pc, lr, lsl #1]\n\t"                                                                               \
            ".Lmct_dw3_s1_table:\n"                                                                                  \
            ".irp sh, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22\n"                                    \
            ".hword (.Lmct_dw3_s1_\\sh - .Lmct_dw3_s1_table) / 2\n"                                                  \
            ".endr\n"                                                                                                \
            ".irp sh, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22\n"                                    \
            "mct_dw3_s1_loop \\sh\n\t"                                                                               \
            ".endr\n"                                                                                                \
            ".size mct_dsp_dw3_s1_seg, . - mct_dsp_dw3_s1_seg\n"                                                     \
            ".purgem mct_dw3_s1_loop\n"                                                                              \
            ".popsection\n"                                                                                          \
            )

#define MCT_DW3_S2_DEFINE \
    __asm__(MCT_DW3_S2_LOOP                                                                                          \
            ".pushsection .text.mct_dsp_dw3_s2_seg,\"ax\",%progbits\n"                                               \
            ".syntax unified\n"                                                                                      \
            ".thumb\n"                                                                                               \
            ".p2align 2\n"                                                                                           \
            ".global mct_dsp_dw3_s2_seg\n"                                                                           \
            ".thumb_func\n"                                                                                          \
            ".type mct_dsp_dw3_s2_seg, %function\n"                                                                  \
            "mct_dsp_dw3_s2_seg:\n"                                                                                  \
            "push {r4-r11, lr}\n\t"                                                                                  \
            "sub sp, sp, #32\n\t"                                                                                    \
            "ldrd r4, r5, [r1, #20]\n\t"                                                                             \
            "ldr r6, [r1, #28]\n\t"                                                                                  \
            "strd r5, r5, [sp]\n\t"                                                                                  \
            "strd r6, r4, [sp, #8]\n\t"                                                                              \
            "ldr lr, [r1, #32]\n\t"                                                                                  \
            "ldm r1, {r7-r11}\n\t"                                                                                   \
            "ldrd r3, r4, [r0, #28]\n\t"                                                                             \
            "ldr r5, [r0, #36]\n\t"                                                                                  \
            "ldrd r6, ip, [r0, #40]\n\t"                                                                             \
            "sub r6, r6, r4, lsl #1\n\t"                                                                             \
            "sub ip, ip, r4\n\t"                                                                                     \
            "strd r4, r5, [sp, #16]\n\t"                                                                             \
            "strd r6, ip, [sp, #24]\n\t"                                                                             \
            "add r4, r3, r4\n\t"                                                                                     \
            "ldm r0, {r0-r2}\n\t"                                                                                    \
            "sub lr, lr, #1\n\t"                                                                                     \
            "tbh [pc, lr, lsl #1]\n\t"                                                                               \
            ".Lmct_dw3_s2_table:\n"                                                                                  \
            ".irp sh, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22\n"                                    \
            ".hword (.Lmct_dw3_s2_\\sh - .Lmct_dw3_s2_table) / 2\n"                                                  \
            ".endr\n"                                                                                                \
            ".irp sh, 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22\n"                                    \
            "mct_dw3_s2_loop \\sh\n\t"                                                                               \
            ".endr\n"                                                                                                \
            ".size mct_dsp_dw3_s2_seg, . - mct_dsp_dw3_s2_seg\n"                                                     \
            ".purgem mct_dw3_s2_loop\n"                                                                              \
            ".popsection\n"                                                                                          \
            )

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
