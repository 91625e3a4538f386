/* mct_simd.h: x86 AVX2 versions of the forward's inner loops, for the HOST build only.
 *
 * Why: on the host, about 70% of a training step was the int8 forward in scalar C
 * (docs/results/host_training.md), so the engine ran at half PyTorch eager's speed. The native host build
 * (mcutrain.codegen.host, flags "native": -O3 -march=native) on a CPU with AVX2 compiles these paths; the
 * portable flags (the reference build, the test suite's default) and every Cortex-M build compile none of
 * it: MCT_SIMD follows the compiler's own __AVX2__, and is 0 in a folder generated with MCT_DSP 1.
 *
 * The integers are those of the portable C, by construction:
 * - the sums are int32 sums of int8 x int8 products, exact in any order (|sum| < 2^31, as the portable
 *   loops assume), taken two products at a time by VPMADDWD on sign-extended int16 pairs (|pair| <= 2^15)
 *   or one at a time by VPMULLD;
 * - the requantization is mct_requantize_fast lane by lane: the saturating bias add, the rounding doubling
 *   high multiply as floor((acc * M + 2^30) / 2^31) from the 64-bit products (M >= 0: never INT32_MIN), the
 *   rounding divide by 2^-shift, the clamp to +-2^15, the zero point, the mask test and the clamp. A channel
 *   whose shift is > 0 (a multiplier >= 1: never seen in a trained network) takes the scalar mct_rq_out.
 * tests/codegen/test_codegen_host_simd.py checks native == portable, bit for bit, on nets that reach every
 * path and tail here (odd channel counts, widths that are not multiples of 8 or 16, strides 1 and 2, 3x3 /
 * 5x5 / 7x7 and non-square kernels, SRAM/Flash split weight rows, mask bits that do not start on a byte).
 * Vector loads never read outside the input rows: each path states how many bytes a block reads from its
 * first column (its "reach"), and callers run a block only where that many bytes are inside the row.
 */
#ifndef MCT_SIMD_H
#define MCT_SIMD_H

#if defined(__AVX2__) && !MCT_DSP
#define MCT_SIMD 1
#include <immintrin.h>

/* One output channel's requantization constants, broadcast. */
typedef struct {
    __m256i bias, sat, mult, nudge, rmask, rthr, lo16, hi16, zero, qmin, qmax;
    __m128i right;
    int fast;
} mct_simd_rq;

static inline mct_simd_rq mct_simd_rq_of(const mct_rq *q) {
    mct_simd_rq r;
    const int32_t right = q->shift <= 0 ? -q->shift : 0;
    const int32_t rmask = (int32_t)(((int64_t)1 << right) - 1);
    r.fast = q->shift <= 0 && q->multiplier >= 0;
    r.bias = _mm256_set1_epi32(q->bias);
    r.sat = _mm256_set1_epi32(q->bias >= 0 ? INT32_MAX : INT32_MIN);
    r.mult = _mm256_set1_epi64x(q->multiplier);
    r.nudge = _mm256_set1_epi64x((int64_t)1 << 30);
    r.rmask = _mm256_set1_epi32(rmask);
    r.rthr = _mm256_set1_epi32(rmask >> 1);
    r.lo16 = _mm256_set1_epi32(-32768);
    r.hi16 = _mm256_set1_epi32(32767);
    r.zero = _mm256_set1_epi32(q->y_zero);
    r.qmin = _mm256_set1_epi32(q->qmin);
    r.qmax = _mm256_set1_epi32(q->qmax);
    r.right = _mm_cvtsi32_si128(right);
    return r;
}

/* mct_requantize_fast(sat(sum + bias)) of 8 lanes, before the final clamp; *inside: the mask lanes. */
static inline __m256i mct_simd_requant(const mct_simd_rq *r, __m256i sum, __m256i *inside) {
    const __m256i added = _mm256_add_epi32(sum, r->bias);
    const __m256i overflow = _mm256_and_si256(_mm256_xor_si256(sum, added), _mm256_xor_si256(r->bias, added));
    const __m256i acc = _mm256_blendv_epi8(added, r->sat, _mm256_srai_epi32(overflow, 31));
    /* floor((acc * M + 2^30) / 2^31): bits 31..62 of the 64-bit sums, even lanes then odd lanes */
    const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(acc, r->mult), r->nudge);
    const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(acc, 32), r->mult), r->nudge);
    const __m256i high = _mm256_blend_epi32(_mm256_srli_epi64(even, 31), _mm256_slli_epi64(odd, 1), 0xAA);
    /* rounding divide by 2^right, half away from zero (mct_rdbpot) */
    const __m256i remainder = _mm256_and_si256(high, r->rmask);
    const __m256i threshold = _mm256_add_epi32(r->rthr, _mm256_srli_epi32(high, 31));
    const __m256i up = _mm256_cmpgt_epi32(remainder, threshold);
    __m256i v = _mm256_sub_epi32(_mm256_sra_epi32(high, r->right), up);
    v = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v, r->lo16), r->hi16), r->zero);
    *inside = _mm256_and_si256(_mm256_cmpgt_epi32(v, r->qmin), _mm256_cmpgt_epi32(r->qmax, v));
    return _mm256_min_epi32(_mm256_max_epi32(v, r->qmin), r->qmax);
}

/* Eight outputs from their int32 sums: int8 values at dst (NULL: mask bits only), mask bits from ``bit``
 * (OR-ed in, as mct_put_bit does: the kernels clear their masks first). */
static inline void mct_simd_out8(const mct_simd_rq *r, const mct_rq *q, __m256i sum, int8_t *dst, uint8_t *mask,
                                 int32_t bit) {
    if (!r->fast) {
        int32_t s[8];
        _mm256_storeu_si256((__m256i *)(void *)s, sum);
        for (int32_t j = 0; j < 8; ++j) mct_rq_out(q, s[j], dst != NULL ? dst + j : NULL, mask, bit + j);
        return;
    }
    __m256i inside;
    const __m256i v = mct_simd_requant(r, sum, &inside);
    if (dst != NULL) {
        const __m128i half = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        _mm_storel_epi64((__m128i *)(void *)dst, _mm_packs_epi16(half, half));
    }
    if (mask != NULL) {
        const uint32_t bits = (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(inside)) << (bit & 7);
        mask[bit >> 3] |= (uint8_t)bits;
        if (bits > 0xFF) mask[(bit >> 3) + 1] |= (uint8_t)(bits >> 8);
    }
}

/* Bytes a row block of 8 outputs reads from its first column (mct_simd_taps8), stride 1 or 2. */
static inline int32_t mct_simd_reach(int32_t kw, int32_t stride) { return stride == 1 ? kw + 7 : ((kw - 1) & ~1) + 16; }

/* (a, b) as one int32 of two int16 halves, a low: a VPMADDWD operand pairing two taps or two channels. */
static inline int32_t mct_simd_pack(int8_t a, int8_t b) {
    return (int32_t)(((uint32_t)(uint16_t)(int16_t)b << 16) | (uint32_t)(uint16_t)(int16_t)a);
}

static inline __m256i mct_simd_pair(int8_t a, int8_t b) { return _mm256_set1_epi32(mct_simd_pack(a, b)); }

/* acc[j] += sum_b w[b] * row[stride * j + b] for 8 outputs j, stride 1 (VPMULLD per tap) or 2 (VPMADDWD on
 * the even/odd byte pairs: taps b and b + 1 at once). Reads mct_simd_reach(kw, stride) bytes from row. */
static inline __m256i mct_simd_taps8(const int8_t *row, const int8_t *w, int32_t kw, int32_t stride, __m256i acc) {
    if (stride == 1) {
        for (int32_t b = 0; b < kw; ++b) {
            const __m256i x = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(row + b)));
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(x, _mm256_set1_epi32(w[b])));
        }
        return acc;
    }
    for (int32_t b = 0; b < kw; b += 2) {
        const __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(row + b)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, mct_simd_pair(w[b], b + 1 < kw ? w[b + 1] : 0)));
    }
    return acc;
}

/* acc[j] += sum_b w[b] * row[j + b] for 16 outputs j, stride 1: taps b, b + 1 at once by VPMADDWD on the pairs
 * (row[j + b], row[j + b + 1]) (VPUNPCK of the row from b and from b + 1: lanes hold j = 0-3 | 8-11 in *lo and 4-7 |
 * 12-15 in *hi), an odd last tap paired with a zero weight. A multiply-add of 16 lanes a tap pair instead of two
 * VPMULLD of 8 a tap (10 cycles of latency each, on one chain). Reads kw + 16 bytes from row. */
static inline void mct_simd_taps16(const int8_t *row, const int8_t *w, int32_t kw, __m256i *lo, __m256i *hi) {
    for (int32_t b = 0; b < kw; b += 2) {
        const __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(row + b)));
        const __m256i c = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(row + b + 1)));
        const __m256i wb = mct_simd_pair(w[b], b + 1 < kw ? w[b + 1] : 0);
        *lo = _mm256_add_epi32(*lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, c), wb));
        *hi = _mm256_add_epi32(*hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, c), wb));
    }
}

/* The first m < 8 of eight outputs (a row's last block). */
static inline void mct_simd_outn(const mct_simd_rq *r, const mct_rq *q, __m256i sum, int8_t *dst, uint8_t *mask,
                                 int32_t bit, int32_t m) {
    int8_t v[8];
    uint8_t bits[2] = {0, 0};
    mct_simd_out8(r, q, sum, v, bits, 0);
    if (dst != NULL) memcpy(dst, v, (size_t)m);
    if (mask != NULL)
        for (int32_t j = 0; j < m; ++j) mct_put_bit(mask, bit + j, (uint8_t)((bits[0] >> j) & 1));
}

#define MCT_SIMD_ROW 1024 /* longest padded tap row (bytes) the vector depthwise takes */

/* Bytes a padded tap row must hold for a row of out_w outputs at stride s (mct_simd_taps8 / mct_simd_taps16's
 * reads; + 1 at stride 1: a 16-output block at ox <= out_w - 16 reads to ox + kw + 16), at least pad + in_w. */
static inline int32_t mct_simd_dw_length(const mct_conv *p) {
    const int32_t s = p->stride_w, last = (p->out_w - 1) / 8 * 8;
    return mct_imax(last * s + mct_simd_reach(p->kw, s) + (s == 1), p->pad_left + p->in_w);
}

/* One output row of a depthwise channel from padded tap rows (tap[a]: NULL for a padding row, else a row of
 * mct_simd_dw_length bytes, x_zero outside the input: a padding column adds (x_zero - x_zero) * w = 0, as the
 * bounded edge loop leaves it out); ``zsum`` = x_zero * the weights of the rows that are not NULL. Stride 1:
 * 16 columns a block (mct_simd_taps16), the rest and stride 2 8 a block. */
static inline void mct_simd_dw_padded_row(const mct_conv *p, const mct_rq *q, const mct_simd_rq *r,
                                          const int8_t *const *tap, const int8_t *w, int32_t zsum, int8_t *y,
                                          uint8_t *mask, int32_t bit0) {
    const int32_t s = p->stride_w, kw = p->kw, out_w = p->out_w;
    int32_t ox = 0;
    for (; s == 1 && ox + 16 <= out_w; ox += 16) {
        __m256i lo = _mm256_set1_epi32(-zsum), hi = lo;
        for (int32_t a = 0; a < p->k; ++a)
            if (tap[a] != NULL) mct_simd_taps16(tap[a] + ox, w + a * kw, kw, &lo, &hi);
        mct_simd_out8(r, q, _mm256_permute2x128_si256(lo, hi, 0x20), y != NULL ? y + ox : NULL, mask, bit0 + ox);
        mct_simd_out8(r, q, _mm256_permute2x128_si256(lo, hi, 0x31), y != NULL ? y + ox + 8 : NULL, mask,
                      bit0 + ox + 8);
    }
    for (; ox < out_w; ox += 8) {
        __m256i acc = _mm256_set1_epi32(-zsum);
        for (int32_t a = 0; a < p->k; ++a)
            if (tap[a] != NULL) acc = mct_simd_taps8(tap[a] + ox * s, w + a * kw, kw, s, acc);
        int8_t *dst = y != NULL ? y + ox : NULL;
        if (ox + 8 <= out_w)
            mct_simd_out8(r, q, acc, dst, mask, bit0 + ox);
        else
            mct_simd_outn(r, q, acc, dst, mask, bit0 + ox, out_w - ox);
    }
}

/* n input bytes as a padded row of ``length`` at dst: the zero point only where the row is not copied (a
 * memset of the whole row, rep stos, was a fifth of the depthwise's time on the 8- to 64-byte rows). */
static inline void mct_simd_pad_row(int8_t *dst, const int8_t *src, int32_t pad, int32_t n, int32_t length,
                                    int32_t zero) {
    memset(dst, (uint8_t)(int8_t)zero, (size_t)pad);
    memcpy(dst + pad, src, (size_t)n);
    memset(dst + pad + n, (uint8_t)(int8_t)zero, (size_t)(length - pad - n));
}

/* A whole output row of depthwise channel c (mct_depthwise_row's arguments), stride 1 or 2: each tap row
 * inside the input copied padded, then mct_simd_dw_padded_row. Returns 0 where it does not apply (stride >
 * 2, a row too long). */
static inline int mct_simd_depthwise_row(const mct_conv *p, int32_t c, const int8_t *const *rows, const int8_t *w,
                                         int8_t *y, uint8_t *mask, int32_t bit0) {
    const int32_t length = mct_simd_dw_length(p);
    if (p->stride_w > 2 || p->pad_left < 0 || p->k > MCT_MAX_K || length > MCT_SIMD_ROW) return 0;
    int8_t padded[MCT_MAX_K][MCT_SIMD_ROW];
    const int8_t *tap[MCT_MAX_K];
    int32_t wsum = 0;
    for (int32_t a = 0; a < p->k; ++a) {
        tap[a] = rows[a] != NULL ? padded[a] : NULL;
        if (rows[a] == NULL) continue;
        mct_simd_pad_row(padded[a], rows[a], p->pad_left, p->in_w, length, p->x_zero);
        for (int32_t b = 0; b < p->kw; ++b) wsum += w[a * p->kw + b];
    }
    const mct_rq q = mct_rq_of(p, c);
    const mct_simd_rq r = mct_simd_rq_of(&q);
    mct_simd_dw_padded_row(p, &q, &r, tap, w, p->x_zero * wsum, y, mask, bit0);
    return 1;
}

#define MCT_SIMD_PLANE 65536 /* bytes of the padded plane of mct_simd_depthwise_channel (the host's stack) */

/* A whole depthwise channel (mct_depthwise_channel's arguments): its plane copied padded once (every row
 * mct_simd_dw_length bytes, x_zero rows above and below where windows reach them), the requantization's
 * constants and the weight sum made once, then each output row from the padded plane (mct_depthwise_row
 * would pad k rows and make the constants again for every output row: most of its time on the 4- to 16-wide
 * planes of the late blocks). Returns 0 where it does not apply. */
static inline int mct_simd_depthwise_channel(const mct_conv *p, int32_t c, const int8_t *x_c, int8_t *y_c,
                                             uint8_t *mask, int32_t bit0) {
    const int32_t length = mct_simd_dw_length(p), top = p->pad, k = p->k;
    const int32_t h = mct_imax(p->in_h + top, (p->out_h - 1) * p->stride + k);
    if (p->stride_w > 2 || p->pad_left < 0 || top < 0 || k > MCT_MAX_K || length > MCT_SIMD_ROW
        || (int64_t)h * length > MCT_SIMD_PLANE)
        return 0;
    int8_t plane[MCT_SIMD_PLANE];
    memset(plane, (uint8_t)(int8_t)p->x_zero, (size_t)(top * length));
    for (int32_t r = 0; r < p->in_h; ++r)
        mct_simd_pad_row(plane + (top + r) * length, x_c + r * p->in_w, p->pad_left, p->in_w, length, p->x_zero);
    memset(plane + (top + p->in_h) * length, (uint8_t)(int8_t)p->x_zero, (size_t)((h - top - p->in_h) * length));
    const int8_t *w = mct_weight_at(&p->w, c, 0);
    int32_t wsum = 0;
    for (int32_t i = 0; i < k * p->kw; ++i) wsum += w[i];
    const mct_rq q = mct_rq_of(p, c);
    const mct_simd_rq r = mct_simd_rq_of(&q);
    const int8_t *tap[MCT_MAX_K];
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        for (int32_t a = 0; a < k; ++a) tap[a] = plane + (oy * p->stride + a) * length;
        mct_simd_dw_padded_row(p, &q, &r, tap, w, p->x_zero * wsum, y_c != NULL ? y_c + oy * p->out_w : NULL, mask,
                               bit0 + oy * p->out_w);
    }
    return 1;
}

#define MCT_SIMD_MAX_IN 2048 /* input channels of a 1x1 conv the vector path takes (weight pairs on the stack) */

/* Weights [i, end) of a row (src[i]...) sign-extended into the int16 array h, 16 a step; returns their sum. */
static inline int32_t mct_simd_widen_run(const int8_t *src, int32_t i, int32_t end, int16_t *h) {
    __m256i acc = _mm256_setzero_si256();
    for (; i + 16 <= end; i += 16) {
        const __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(src + i)));
        _mm256_storeu_si256((__m256i *)(void *)(h + i), v);
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(v, _mm256_set1_epi16(1)));
    }
    const __m128i half = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    const __m128i quad = _mm_add_epi32(half, _mm_shuffle_epi32(half, 0x4E));
    int32_t total = _mm_cvtsi128_si32(_mm_add_epi32(quad, _mm_shuffle_epi32(quad, 0xB1)));
    for (; i < end; ++i) {
        h[i] = src[i];
        total += src[i];
    }
    return total;
}

/* Row o's weights as int16 pairs (w[2h], w[2h + 1]) for VPMADDWD (the last pair of an odd count ends in 0):
 * the row's int16 array is exactly that (little-endian), so the weights are widened 16 a step, the SRAM part
 * then the Flash part (mct_row_of's split); returns the row's sum (the zero point's term). */
static inline int32_t mct_simd_pairs(const mct_weight *w, int32_t o, int32_t in_c, int32_t *pairs) {
    const mct_weight_row r = mct_row_of(w, o);
    const int32_t split = mct_imax(0, mct_imin(r.split, in_c));
    int16_t *h = (int16_t *)(void *)pairs; /* the typed views of -fno-strict-aliasing (host.CFLAGS) */
    const int32_t total = mct_simd_widen_run(r.lo, 0, split, h) + mct_simd_widen_run(r.hi, split, in_c, h);
    if (in_c & 1) h[in_c] = 0;
    return total;
}

/* Sums of K output channels (weight pairs ``pairs`` [K][half]) at 16 positions from q: acc[2k] holds
 * positions 0-3 and 8-11, acc[2k + 1] 4-7 and 12-15 (VPUNPCK works within 128-bit lanes). Inlined with K a
 * constant, so the loops over k unroll. */
static inline __attribute__((always_inline)) void mct_simd_pw_sums(int32_t K, const int32_t *pairs, int32_t in_c,
                                                                   const int8_t *x, int32_t x_cs, __m256i *acc) {
    const int32_t half = (in_c + 1) / 2;
    for (int32_t k = 0; k < 2 * K; ++k) acc[k] = _mm256_setzero_si256();
    for (int32_t h = 0; h < half; ++h, x += 2 * x_cs) {
        const __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)x));
        const __m256i b = 2 * h + 1 < in_c
                              ? _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(x + x_cs)))
                              : _mm256_setzero_si256();
        const __m256i lo = _mm256_unpacklo_epi16(a, b), hi = _mm256_unpackhi_epi16(a, b);
        for (int32_t k = 0; k < K; ++k) {
            const __m256i wk = _mm256_set1_epi32(pairs[k * half + h]);
            acc[2 * k] = _mm256_add_epi32(acc[2 * k], _mm256_madd_epi16(lo, wk));
            acc[2 * k + 1] = _mm256_add_epi32(acc[2 * k + 1], _mm256_madd_epi16(hi, wk));
        }
    }
}

/* K output channels from o of a 1x1 conv over positions [0, n16) (a multiple of 16). */
static inline __attribute__((always_inline)) void mct_simd_pw_channels(int32_t K, const mct_conv *p, int32_t o,
                                                                       const int8_t *x, int32_t x_cs, int32_t n16,
                                                                       int8_t *y, int32_t y_cs, uint8_t *mask,
                                                                       int32_t bit, int32_t bit_cs) {
    int32_t pairs[4 * (MCT_SIMD_MAX_IN / 2)];
    const int32_t half = (p->in_c + 1) / 2;
    mct_rq q[4];
    mct_simd_rq r[4];
    __m256i zsum[4];
    for (int32_t k = 0; k < K; ++k) {
        zsum[k] = _mm256_set1_epi32(p->x_zero * mct_simd_pairs(&p->w, o + k, p->in_c, pairs + k * half));
        q[k] = mct_rq_of(p, o + k);
        r[k] = mct_simd_rq_of(&q[k]);
    }
    for (int32_t at = 0; at < n16; at += 16) {
        __m256i acc[8];
        mct_simd_pw_sums(K, pairs, p->in_c, x + at, x_cs, acc);
        for (int32_t k = 0; k < K; ++k) {
            const __m256i first = _mm256_permute2x128_si256(acc[2 * k], acc[2 * k + 1], 0x20);
            const __m256i second = _mm256_permute2x128_si256(acc[2 * k], acc[2 * k + 1], 0x31);
            int8_t *yk = y + k * y_cs + at;
            const int32_t bk = bit + k * bit_cs + at;
            mct_simd_out8(&r[k], &q[k], _mm256_sub_epi32(first, zsum[k]), yk, mask, bk);
            mct_simd_out8(&r[k], &q[k], _mm256_sub_epi32(second, zsum[k]), yk + 8, mask, bk + 8);
        }
    }
}

/* Output channels [o0, o1) of a 1x1 conv at positions [0, n16), n16 = n rounded down to 16 (mct_pointwise's
 * arguments); returns n16 (0: nothing done, e.g. too many input channels for the stack pairs). */
static inline int32_t mct_simd_pointwise(const mct_conv *p, int32_t o0, int32_t o1, const int8_t *x, int32_t x_cs,
                                         int32_t n, int8_t *y, int32_t y_cs, uint8_t *mask, int32_t bit0,
                                         int32_t bit_cs) {
    const int32_t n16 = n & ~15;
    if (n16 == 0 || p->in_c > MCT_SIMD_MAX_IN) return 0;
    int32_t o = o0;
    for (; o + 4 <= o1; o += 4)
        mct_simd_pw_channels(4, p, o, x, x_cs, n16, y + (o - o0) * y_cs, y_cs, mask, bit0 + (o - o0) * bit_cs,
                             bit_cs);
    for (; o < o1; ++o)
        mct_simd_pw_channels(1, p, o, x, x_cs, n16, y + (o - o0) * y_cs, y_cs, mask, bit0 + (o - o0) * bit_cs,
                             bit_cs);
    return n16;
}

#else
#define MCT_SIMD 0
#endif

#endif /* MCT_SIMD_H */
