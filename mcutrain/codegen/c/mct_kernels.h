/* mct_kernels.h: the kernels of the programs mcutrain.codegen generates (C99; no malloc, no OS).
 *
 * One function per op kind of the engine's catalogue (mcutrain/engine/ops.py). What each computes is
 * defined by the NumPy reference executor (mcutrain/engine/executor/kernels.py); these mirror it:
 *   forward   int8, bit-exact: the fixed-point primitives of mct_int8.h (int32 accumulators, the
 *             accumulator + bias saturated to int32, then requantized and clamped);
 *   backward  float32 elementwise products in the reference's order; contractions (conv transposes,
 *             weight correlations, channel sums, the classifier's products) accumulated in
 *             mct_acc_t (double, as the reference's float64; float in a folder generated with
 *             accumulate="float32") and rounded once to float32; the input gradient of a 1x1 conv
 *             summed in float32, output channel after output channel (the reference's order, and
 *             what a channel-by-channel backward does);
 *   updates   SGD with QAS factors; int8 weights rounded stochastically with the counter-based RNG
 *             (the word of an element is its index in the trained slice, C order), saturated to
 *             [-127, 127]; int32 biases rounded to nearest, saturated to int32.
 * Tensors are batch 1, NCHW, C order. Clamp masks hold 1 bit per element: element i is bit i % 8 of
 * byte i / 8 (little bit order), unused bits of the last byte are zero: numpy.packbits(bitorder=
 * "little"), the bytes the NumPy executor keeps. Kernels that write a mask clear it first.
 * In place: an op the engine marks ``inplace`` gets the same pointer for its output and the input it
 * overwrites; every kernel below allows exactly the aliasing the engine's in-place rules allow.
 *
 * Forward fast paths (same integers): a conv's sum of (x - x_zero) * w is computed as sum x * w minus
 * x_zero times the sum of the weights of the taps inside the input (exact in int32), so inner loops are
 * one multiply-accumulate per MAC; 1x1 convs run two output channels x four positions per input load,
 * depthwise 3x3 rows keep their weights in locals; requantization with a shift <= 0 skips the 64-bit
 * saturation paths (mct_requantize_fast, tested equal to mct_int8.h's mct_requantize). With MCT_DSP 1
 * (below) the same sums and roundings run through the Cortex-M DSP extension (mct_dsp.h).
 * Build with IEEE float32 semantics: no -ffast-math, and -ffp-contract=off (a fused multiply-add
 * rounds once where the reference rounds twice). The arena is reached through int8/int32/float
 * pointers into one byte array: build with -fno-strict-aliasing.
 */
#ifndef MCT_KERNELS_H
#define MCT_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mct_int8.h"

/* Accumulator of backward contractions, fixed when the folder is generated (mcutrain compile
 * --accumulate, mcutrain.codegen.generate(..., accumulate=)): double ("float64", the default) mirrors
 * the reference's float64 sums, bit for bit (soft-float on a single-precision FPU such as the
 * Cortex-M7's: about half of a training step there); float ("float32") sums on the FPU, within float32
 * rounding of them. The generator writes the line below, so the folder carries its arithmetic without a
 * build flag; a -DMCT_ACC_T of another type is a macro redefinition (an error under -Werror), and
 * model.c checks that it was generated for this accumulator (MCT_ACC_BITS in model.h). */
#define MCT_ACC_T double
typedef MCT_ACC_T mct_acc_t;

/* An int8 weight [rows][cols][inner] whose leading slice [kept_rows][kept_cols][inner] may be trained:
 * that slice lives in SRAM (``sram``), the rest is read from Flash (``flash``, the whole initial
 * weight). Frozen weights: sram == NULL. */
typedef struct {
    const int8_t *flash;
    int8_t *sram;
    int32_t rows, cols, inner;
    int32_t kept_rows, kept_cols;
} mct_weight;

/* Conv geometry and operands; groups > 1 is depthwise (groups == in_c == out_c). Backward ops use the
 * geometry and the weight only. A kh x kw kernel (k = kh), strides (stride, stride_w), padding rows
 * ``pad`` at the top and columns ``pad_left`` at the left with the input zero point (the bottom/right
 * padding follows from out_h/out_w). The zoo's "same" convs have k == kw, stride == stride_w and
 * pad == pad_left == k / 2 (out = ceil(in / stride)); the row pipelines (mct_fused.c) also take TFLite's SAME
 * convs with the extra row/column at the bottom/right (pad == pad_left == k / 2 - 1 for stride 2 on an
 * even input): a square kernel, one stride, pad == pad_left, out = ceil(in / stride), windows clipped to
 * the input (mcutrain.engine.ops.row_geometry). */
typedef struct {
    int32_t in_c, in_h, in_w;
    int32_t out_c, out_h, out_w;
    int32_t k, stride, pad, groups;
    int32_t kw, stride_w, pad_left;
    int32_t x_zero, y_zero, qmin, qmax;
    mct_weight w;
    const int32_t *bias;       /* [out_c]: the SRAM copy when trained */
    const int32_t *multiplier; /* [out_c] */
    const int32_t *shift;      /* [out_c] */
    /* A frozen conv of a row pipeline in a DSP build (MCT_DSP_PLANS): its channels' operands for the DSP
     * kernels, made by the generator into Flash (mcutrain/codegen/dsp_plans.py has the layouts: a 1x1 conv's
     * records of 4 + 2 * ceil(in_c / 4) words a channel, read by pointwise_planned; a depthwise conv's dw_plan
     * a channel, mct_depthwise.c); NULL: the kernels make them at run time. */
    const int32_t *dsp_plan;
} mct_conv;

/* Global average pool constants (fixedpoint.avgpool_params). */
typedef struct {
    int32_t channels, count, x_zero, multiplier, shift, y_zero, qmin, qmax;
} mct_pool;

/* Classifier: logits[k] = scale[k] * (sum_c (x[c] - x_zero) * w[k][c] + bias[k]). */
typedef struct {
    int32_t in_features, out_features, x_zero;
    mct_weight w;
    const int32_t *bias;
    const float *scale; /* [out_features]: s_x * s_w[k] */
} mct_linear;

/* A TFLite pool over [channels][in_h][in_w] (mcutrain.quant.graph_forward.avgpool / maxpool): kh x kw
 * windows, strides (sh, sw), ``pad_top`` / ``pad_left`` rows / columns before the input; every window is
 * clipped to the input (padding is never averaged nor a maximum). ``ratio`` = s_x / s_y, used by the
 * average pool's backward only. */
typedef struct {
    int32_t channels, in_h, in_w, out_h, out_w;
    int32_t kh, kw, sh, sw, pad_top, pad_left;
    int32_t qmin, qmax;
    double ratio;
} mct_tfl_pool;

/* TFLite MEAN over H, W of [channels][count] (graph_forward.mean): y = clamp(MBQM(sum x - x_zero * count,
 * multiplier, shift) + y_zero, -128, 127), 1 / count folded into (multiplier, shift) by the generator. */
typedef struct {
    int32_t channels, count, x_zero, multiplier, shift, y_zero;
} mct_tfl_mean_params;

/* One parameter's in-place SGD step over its trained slice [rows][cols][inner] (w: int8 weights, or
 * b: int32 biases, cols = inner = 1); qas: one QAS factor per row; RNG stream (seed, step, tensor_id).
 * lr points at the program's learning rate, a runtime value (model.c's guard halves it on a rollback;
 * the struct itself stays in Flash): each update reads it once, when it starts. */
typedef struct {
    int8_t *w;
    int32_t *b;
    const float *qas;
    const float *lr;
    uint32_t seed, tensor_id;
    int32_t rows, cols, inner;
} mct_update;

/* ---- parameters ---- */
const int8_t *mct_weight_at(const mct_weight *w, int32_t row, int32_t col);
/* Row ``row`` as two runs: columns [0, split) from ``lo`` (the SRAM slice), [split, cols) from ``hi``. */
typedef struct {
    const int8_t *lo, *hi;
    int32_t split;
} mct_weight_row;
mct_weight_row mct_row_of(const mct_weight *w, int32_t row);
/* Column col of a weight row (mct_row_of): from the SRAM run or the Flash one. */
static inline int8_t mct_row_at(const mct_weight_row *r, int32_t col) { return col < r->split ? r->lo[col] : r->hi[col]; }
/* Clears the n bits of a clamp mask (a kernel that writes one clears it first); NULL: nothing. */
static inline void mct_clear_bits(uint8_t *mask, int32_t n) {
    if (mask != NULL) memset(mask, 0, ((size_t)n + 7) / 8);
}
void mct_copy_slice_i8(int8_t *dst, const int8_t *src, int32_t cols, int32_t inner, int32_t kept_rows,
                       int32_t kept_cols);

/* ---- forward (int8) ---- */
void mct_conv2d(const mct_conv *p, const int8_t *x, int8_t *y, uint8_t *mask, int8_t *scratch);
/* A hidden fully connected layer (a 1x1 conv over [in_c][1][1]) with LiteRT's double rescale, one per
 * output channel: y = clamp(round_half_away(sat32(acc) * rescale[o]) + y_zero); mask may be NULL. */
void mct_fc_forward(const mct_conv *p, const double *rescale, const int8_t *x, int8_t *y, uint8_t *mask);
void mct_pointwise_depthwise(const mct_conv *expand, const mct_conv *dw, const int8_t *x, int8_t *y,
                             uint8_t *mask, int8_t *scratch);
/* A residual add's rescaled operands, one per int8 value (index: value + 128), and whether the DSP build's
 * add loop may use them (add_dsp's range conditions): constants of the add, made by the generator
 * (int8_ops.add_operand_tables, emitters.add_structs) into Flash, so no call or row of a row pipeline builds
 * them (512 MBQM, ~13 k instructions on the M7). mct_add_scaled: n outputs from them (the same integers as
 * mct_add; mask bits from bit0, cleared before); mct_add_tensors: a whole tensor, its mask cleared first. */
typedef struct {
    int32_t a[256], b[256];
    int32_t dsp;
} mct_add_table;
void mct_add_scaled(const mct_add_params *p, const mct_add_table *t, const int8_t *a, const int8_t *b, int8_t *y,
                    uint8_t *mask, int32_t bit0, int32_t n);
void mct_add_tensors(const mct_add_params *p, const mct_add_table *t, const int8_t *a, const int8_t *b, int8_t *y,
                     uint8_t *mask, int32_t n);
void mct_global_avgpool(const mct_pool *p, const int8_t *x, int8_t *y, uint8_t *mask);
void mct_linear_forward(const mct_linear *p, const int8_t *x, float *logits);
int32_t mct_argmax(const float *v, int32_t n);

/* TFLite ops of imported graphs (issue 13); masks: qmin < v < qmax (v before the clamp) */
void mct_tfl_avgpool(const mct_tfl_pool *p, const int8_t *x, int8_t *y, uint8_t *mask);
void mct_tfl_maxpool(const mct_tfl_pool *p, const int8_t *x, int8_t *y, uint8_t *mask);
void mct_tfl_mean(const mct_tfl_mean_params *p, const int8_t *x, int8_t *y, uint8_t *mask);
/* [c][plane] -> [plane][c] (TFLite's channels-last flatten) and back for gradients */
void mct_nchw_to_nhwc_i8(const int8_t *x, int32_t channels, int32_t plane, int8_t *y);
void mct_nhwc_to_nchw_f32(const float *g, int32_t channels, int32_t plane, float *out);

/* ---- loss ---- */
void mct_softmax_ce(const float *logits, int32_t k, int32_t label, float *loss, float *grad);
double mct_exp(double x);
double mct_log(double x);

/* ---- backward (float32) ---- */
void mct_requant_grad(const float *g, const uint8_t *mask, const float *m, int32_t per_channel, int32_t channels,
                      int32_t plane, float *out);
void mct_add_grad(const float *g, const uint8_t *mask, const float *ratios, int32_t n, float *out_a, float *out_b);
void mct_avgpool_grad(const float *g, const uint8_t *mask, const float *factor, int32_t channels, int32_t plane,
                      float *out);
void mct_grad_sum(const float *const *terms, int32_t n_terms, int32_t n, float *out);
void mct_conv2d_grad_x(const mct_conv *p, const float *g, const float *init, float *out, float *scratch);
void mct_conv2d_grad_b(const float *g, int32_t channels, int32_t plane, float *out);
void mct_conv2d_grad_w(const mct_conv *p, const int8_t *x, const float *g, int32_t rows, int32_t cols, float *out);
void mct_linear_grad_x(const mct_linear *p, const float *g, float *out);
void mct_linear_grad_w(const mct_linear *p, const float *g, const int8_t *x, float *out);
void mct_linear_grad_b(const mct_linear *p, const float *g, float *out);
/* Average pool: each output's (g * mask) * (float)(ratio / n) added to its n valid input positions,
 * summed per input position in mct_acc_t (windows in ascending order). Max pool: g * mask added in
 * float32, outputs in C order, at its window's first maximum of x in row-major window order. */
void mct_tfl_avgpool_grad(const mct_tfl_pool *p, const float *g, const uint8_t *mask, float *out);
void mct_tfl_maxpool_grad(const mct_tfl_pool *p, const float *g, const uint8_t *mask, const int8_t *x, float *out);

/* ---- updates (write the SRAM copies in place) ---- */
void mct_update_weight(const mct_update *u, const float *g, uint32_t step);
void mct_update_bias(const mct_update *u, const float *g);
void mct_conv2d_grad_w_update(const mct_conv *p, const mct_update *u, const int8_t *x, const float *g,
                              uint32_t step);
void mct_linear_grad_w_update(const mct_linear *p, const mct_update *u, const float *g, const int8_t *x,
                              uint32_t step);

/* ---- building blocks (shared with the fused kernels of mct_fused.c) ---- */
/* The forward's inner loops, fixed when the folder is generated (mcutrain compile --kernels,
 * mcutrain.codegen.generate(..., kernels=)): 0 the portable C of this file and mct_fused.c, 1 the
 * Cortex-M DSP extension's (SMLAD on int16 pairs, mct_dsp.h; the same int32 sums). The generator writes
 * the line below; a folder generated with 1 does not build for a core without the extension. */
#define MCT_DSP 0
#include "mct_dsp.h"

#define MCT_BLOCK 8 /* output positions computed together (their int32 sums live on the stack) */

static inline int32_t mct_imax(int32_t a, int32_t b) { return a > b ? a : b; }
static inline int32_t mct_imin(int32_t a, int32_t b) { return a < b ? a : b; }

static inline void mct_put_bit(uint8_t *mask, int32_t i, uint8_t bit) {
    if (mask != NULL) mask[i >> 3] |= (uint8_t)(bit << (i & 7));
}

static inline int mct_get_bit(const uint8_t *mask, int32_t i) { return (mask[i >> 3] >> (i & 7)) & 1; }

#include "mct_requant.h" /* conv outputs from their sums: bias, requantization, clamp, mask */

#define MCT_MAX_K 16 /* largest kernel side of a depthwise conv */

/* A 1x1 stride-1 conv without padding: the pointwise fast paths. */
static inline int mct_is_pointwise(const mct_conv *p) {
    return p->groups == 1 && p->k == 1 && p->kw == 1 && p->stride == 1 && p->stride_w == 1 && p->pad == 0
           && p->pad_left == 0 && p->out_h == p->in_h && p->out_w == p->in_w;
}

/* One row of a window without bounds (every tap inside the input), raw inputs (the zero point is
 * folded into a weight sum by the caller). */
static inline int32_t mct_taps3(const int8_t *r, const int8_t *w) { return r[0] * w[0] + r[1] * w[1] + r[2] * w[2]; }
static inline int32_t mct_taps5(const int8_t *r, const int8_t *w) {
    return mct_taps3(r, w) + r[3] * w[3] + r[4] * w[4];
}
static inline int32_t mct_taps7(const int8_t *r, const int8_t *w) {
    return mct_taps5(r, w) + r[5] * w[5] + r[6] * w[6];
}
static inline int32_t mct_taps(const int8_t *r, const int8_t *w, int32_t k) {
    int32_t sum = 0;
    switch (k) {
    case 1: return r[0] * w[0];
    case 3: return mct_taps3(r, w);
    case 5: return mct_taps5(r, w);
    case 7: return mct_taps7(r, w);
    default:
        for (int32_t b = 0; b < k; ++b) sum += r[b] * w[b];
        return sum;
    }
}

/* Output channels [o0, o1) of a 1x1 stride-1 conv at n positions: input channel i's n values at
 * x + i * x_cs, output channel o's at y + (o - o0) * y_cs, its mask bits from bit0 + (o - o0) * bit_cs. */
void mct_pointwise(const mct_conv *p, int32_t o0, int32_t o1, const int8_t *x, int32_t x_cs, int32_t n, int8_t *y,
                   int32_t y_cs, uint8_t *mask, int32_t bit0, int32_t bit_cs);
/* mct_pointwise on ``rows`` input rows (x_rows[a]; NULL: none), no mask: output row a at y + a * y_row. The
 * row pipelines' folded convs (mct_fused.c) make a window's k rows at once: the setup of the channels'
 * weights and requantization is done once for them all, not once a row. */
void mct_pointwise_rows(const mct_conv *p, int32_t o0, int32_t o1, const int8_t *const *x_rows, int32_t rows,
                        int32_t x_cs, int32_t n, int8_t *y, int32_t y_row, int32_t y_cs);
/* Output channel o of a 1x1 stride-1 conv (whole [in_c][H][W] input) into y_o, mask bits from bit0. */
void mct_pointwise_channel(const mct_conv *p, int32_t o, const int8_t *x, int8_t *y_o, uint8_t *mask, int32_t bit0);
/* One output row of depthwise channel c from the input rows of its k taps (NULL: a padding row);
 * y NULL: mask bits only. */
void mct_depthwise_row(const mct_conv *p, int32_t c, const int8_t *const *rows, int8_t *y, uint8_t *mask,
                       int32_t bit0);
/* The output rows of depthwise channels [c0, c1) (a row pipeline's event): channel c's tap rows at rows[a] +
 * (c - c0) * x_cs (rows[a] NULL: a padding row), its output row at y + (c - c0) * y_cs, its mask bits from bit0 +
 * (c - c0) * bit_cs; mct_depthwise_row's results, the DSP build's setup once for all channels. */
void mct_depthwise_rows(const mct_conv *p, int32_t c0, int32_t c1, const int8_t *const *rows, int32_t x_cs, int8_t *y,
                        int32_t y_cs, uint8_t *mask, int32_t bit0, int32_t bit_cs);
/* Channel c of a depthwise conv: input plane x_c -> output plane y_c (NULL: mask bits only). */
void mct_depthwise_channel(const mct_conv *p, int32_t c, const int8_t *x_c, int8_t *y_c, uint8_t *mask, int32_t bit0);
/* (mct_acc_t)g * (mct_acc_t)v for a float32 g and a small integer v (|v| <= 255: an int8 weight, or an
 * int8 input minus its zero point). With double accumulators the product is exact (24 + 8 bits), so it
 * is built from g's bits with one integer multiply: the same double as the conversions and the
 * soft-float multiply (several times the instructions on a single-precision FPU). Zero, subnormal,
 * infinite and NaN operands take the plain expression. */
/* The exact-product helpers below are inlined at every call site, as the compiler does for one call in
 * a loop but may stop doing for the several of a register-blocked loop: an out-of-line call per MAC
 * would cost more than the soft-float double add it sits beside. */
#if defined(__GNUC__) || defined(__clang__)
#define MCT_ALWAYS_INLINE __attribute__((always_inline))
#else
#define MCT_ALWAYS_INLINE
#endif

static inline MCT_ALWAYS_INLINE mct_acc_t mct_mul_exact(float g, int32_t v) {
    if (sizeof(mct_acc_t) != sizeof(double)) return (mct_acc_t)g * (mct_acc_t)v;
    uint32_t bits;
    memcpy(&bits, &g, sizeof bits);
    const uint32_t e = (bits >> 23) & 0xffu, av = (uint32_t)(v < 0 ? -v : v);
    if (e == 0 || e == 0xffu || av == 0 || av > 255) return (mct_acc_t)g * (mct_acc_t)v;
    const uint32_t p = ((bits & 0x7fffffu) | 0x800000u) * av; /* < 2^32: exact */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(MCT_PORTABLE_CLZ)
    const int32_t n = 31 - __builtin_clz(p);                  /* p's leading bit */
#else
    int32_t n = 23; /* p is in [2^23, 2^32): its leading bit, portably */
    while (n < 31 && (p >> (n + 1)) != 0) ++n;
#endif
    const uint64_t sign = (uint64_t)((bits >> 31) ^ (uint32_t)(v < 0)) << 63;
    const uint64_t exponent = (uint64_t)(n + (int32_t)e - 150 + 1023) << 52;
    const uint64_t fraction = ((uint64_t)p << (52 - n)) & 0xfffffffffffffull;
    const uint64_t word = sign | exponent | fraction;
    double d;
    memcpy(&d, &word, sizeof d);
    return (mct_acc_t)d;
}

/* acc + a * b in float32 with the product rounded before the add: the C expression under
 * -ffp-contract=off. On a Cortex-M with a single-precision FPU, one VMLA.F32 (the CHAINED multiply-add,
 * which rounds its product, not VFMA, which does not) instead of VMUL + VADD: the same bits, one
 * instruction per multiply-accumulate less in every float32 backward contraction. GCC does not emit VMLA
 * itself under -ffp-contract=off, hence the asm. Elsewhere (the host, soft-float cores) the expression. */
#if defined(__arm__) && defined(__ARM_FP) && (__ARM_FP & 4) && defined(__thumb2__) && !defined(MCT_NO_VMLA)
static inline MCT_ALWAYS_INLINE float mct_fmac(float acc, float a, float b) {
    __asm__("vmla.f32 %0, %1, %2" : "+t"(acc) : "t"(a), "t"(b));
    return acc;
}
#else
static inline MCT_ALWAYS_INLINE float mct_fmac(float acc, float a, float b) { return acc + a * b; }
#endif

/* acc + mct_mul_exact(g, v), the same double; with double accumulators a zero product (g = +-0, or
 * v = 0 and g finite: about half of a masked gradient or a ReLU input) costs no soft-float add:
 * x + (-0) is x, x + (+0) is x except -0 + +0 = +0 (round to nearest). A NaN acc takes the plain add. */
static inline MCT_ALWAYS_INLINE mct_acc_t mct_mac_exact(mct_acc_t acc, float g, int32_t v) {
    if (sizeof(mct_acc_t) != sizeof(double)) return (mct_acc_t)mct_fmac((float)acc, g, (float)v);
    uint32_t bits;
    memcpy(&bits, &g, sizeof bits);
    const int zero = (bits << 1) == 0 || (v == 0 && ((bits >> 23) & 0xffu) != 0xffu);
    if (!zero) return acc + mct_mul_exact(g, v);
    uint64_t a;
    memcpy(&a, &acc, sizeof a);
    if ((a << 1) > ((uint64_t)0x7ff << 53)) return acc + mct_mul_exact(g, v); /* NaN */
    if (((bits >> 31) ^ (uint32_t)(v < 0)) != 0) return acc;                  /* + (-0) */
    return (a << 1) == 0 ? (mct_acc_t)0 : acc;                                /* + (+0) */
}

/* acc + (mct_acc_t)g, the same value; a zero g costs no soft-float add (see mct_mac_exact). */
static inline MCT_ALWAYS_INLINE mct_acc_t mct_add_exact(mct_acc_t acc, float g) {
    if (sizeof(mct_acc_t) != sizeof(double)) return acc + (mct_acc_t)g;
    uint32_t bits;
    memcpy(&bits, &g, sizeof bits);
    if ((bits << 1) != 0) return acc + (mct_acc_t)g;
    uint64_t a;
    memcpy(&a, &acc, sizeof a);
    if ((a << 1) > ((uint64_t)0x7ff << 53)) return acc + (mct_acc_t)g; /* NaN */
    if ((bits >> 31) != 0) return acc;                                  /* + (-0) */
    return (a << 1) == 0 ? (mct_acc_t)0 : acc;                          /* + (+0) */
}

/* The taps a in [0, k) of a conv transpose whose source t = yp - a (yp = y + pad) is an output position:
 * t >= 0, t % s == 0, t / s < out_side. They are lo, lo + s, ..., up to hi (none: lo > hi); the first's
 * position is ``first``, each next one's one less. */
typedef struct {
    int32_t lo, hi, first;
} mct_tap_range;

static inline mct_tap_range mct_tap_range_of(int32_t yp, int32_t s, int32_t out_side, int32_t k) {
    mct_tap_range r;
    const int32_t low = yp - s * (out_side - 1); /* congruent to yp modulo s, like yp % s */
    r.lo = yp >= 0 ? mct_imax(yp % s, low) : 0;
    r.hi = yp >= 0 ? mct_imin(k - 1, yp) : -1;
    r.first = (yp - r.lo) / s;
    return r;
}

/* sum over the taps (a, b) of ranges ra x rb, a then b ascending, of w[a][b] * g_o[oy][ox] (mct_acc_t);
 * kw: the weight's row length, sh/sw: the strides. */
static inline mct_acc_t mct_tap_range_sum(const int8_t *w, int32_t kw, int32_t sh, int32_t sw, const float *g_o,
                                          int32_t out_w, const mct_tap_range *ra, const mct_tap_range *rb) {
    mct_acc_t acc = 0;
    for (int32_t a = ra->lo, oy = ra->first; a <= ra->hi; a += sh, --oy) {
        const int8_t *wa = w + a * kw;
        const float *g_row = g_o + oy * out_w;
        for (int32_t b = rb->lo, ox = rb->first; b <= rb->hi; b += sw, --ox)
            acc = mct_mac_exact(acc, g_row[ox], wa[b]);
    }
    return acc;
}

/* The first o >= 0 with o * s - d >= 0, and the end of the os with o * s - d < n (weight-gradient
 * positions whose input is inside; d = pad - tap). */
static inline int32_t mct_first_inside(int32_t d, int32_t s) { return d <= 0 ? 0 : (d + s - 1) / s; }
static inline int32_t mct_end_inside(int32_t n, int32_t d, int32_t s) {
    const int32_t t = n - 1 + d; /* o * s <= t */
    return t < 0 ? 0 : t / s + 1;
}

/* A weight-gradient element's output positions: those whose input (oy * s - pad + a, ox * s - pad + b) is
 * inside, as the ranges [oy0, oy1) x [ox0, ox1) (every kernel visits them in this ascending order). */
typedef struct {
    int32_t oy0, oy1, ox0, ox1;
} mct_tap_window;

static inline mct_tap_window mct_tap_window_of(const mct_conv *p, int32_t a, int32_t b) {
    mct_tap_window t;
    t.oy0 = mct_first_inside(p->pad - a, p->stride);
    t.oy1 = mct_imin(p->out_h, mct_end_inside(p->in_h, p->pad - a, p->stride));
    t.ox0 = mct_first_inside(p->pad_left - b, p->stride_w);
    t.ox1 = mct_imin(p->out_w, mct_end_inside(p->in_w, p->pad_left - b, p->stride_w));
    return t;
}

/* Input-gradient element (y, x) of one channel of a conv transpose: sum over taps of w * g (mct_acc_t). */
mct_acc_t mct_transpose_tap_sum(const mct_conv *p, const int8_t *w, const float *g_o, int32_t y, int32_t x);
/* Weight-gradient element at tap (a, b): sum over output positions (ascending) of g * (x - x_zero). */
float mct_grad_w_element(const mct_conv *p, const int8_t *x_i, const float *g_o, int32_t a, int32_t b);
/* One SGD step of an int8 weight element (float32, stochastic rounding with word ``index``). */
int8_t mct_sgd_int8(int8_t w, float g, float qas, float lr, uint32_t key, uint32_t index);
/* mct_sgd_int8's arithmetic from its random word r (mct_stream_word(key, index)), inline: the fused
 * backward's row updates call it per element and step the stream word's argument themselves. */
static inline MCT_ALWAYS_INLINE int8_t mct_sgd_int8_word(int8_t w, float g, float qas, float lr, uint32_t r) {
    const float x = (float)w - lr * (g * qas);
    const int32_t q = mct_stochastic_round(x, r);
    return (int8_t)(q < -127 ? -127 : (q > 127 ? 127 : q));
}

/* x86 AVX2 paths of the forward for the native host build (mct_simd.h); MCT_SIMD 0 elsewhere. */
#include "mct_simd.h"
/* Helium (MVE) paths of the dsp kernels on a Cortex-M55 (mct_mve.h); MCT_MVE 0 elsewhere. */
#include "mct_mve.h"

/* Whether the DSP kernels that read mct_conv.dsp_plan are this build's (model.c defines the plans only then). */
#define MCT_DSP_PLANS (MCT_DSP && !MCT_MVE && !MCT_SIMD)
#if MCT_DSP_PLANS
#define MCT_DSP_PLAN(plan) (plan)
#else
#define MCT_DSP_PLAN(plan) NULL
#endif

#endif /* MCT_KERNELS_H */
