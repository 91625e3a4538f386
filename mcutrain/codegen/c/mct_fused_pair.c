/* mct_fused_pair.c: see mct_fused.h (the block backward's helpers for TWO expanded channels c and c + 1
 * per pass of the generated loop).
 *
 * Why: per expanded channel the head reads every output-channel gradient plane, the tail reads and writes
 * every input-channel float plane, and a 1x1 weight gradient converts every input value; two channels per
 * pass share those loads, stores and conversions. Each element keeps its own operations in their order:
 * the head's out[q] of each channel sums o ascending, the tail adds channel c's term, then c + 1's, and a
 * weight gradient element sums the plane ascending, so the results are those of the one-channel helpers.
 * On the host's AVX2 build (MCT_SIMD) the pair helpers call the one-channel ones (vectorised there). */
#include "mct_fused.h"

/* ------------------------------------------------------------------------------------------------
 * Head: channels c and c + 1 of a 1x1 conv's input gradient, eight output channels per pass */

/* Eight terms in order, j = 0..7 (written out: GCC -O2 does not unroll the loops of the pair helpers). */
#define MCT_PAIR_8(F) \
    do {              \
        F(0);         \
        F(1);         \
        F(2);         \
        F(3);         \
        F(4);         \
        F(5);         \
        F(6);         \
        F(7);         \
    } while (0)

#if !MCT_SIMD /* the host's AVX2 build calls the one-channel helpers (vectorised there) */
/* One position of a pass over eight output channels whose values there are v[0..7]: out0 takes the
 * weights wa, out1 wb; ``first`` (the pass of o = 0): the sums start from the first product. */
#define MCT_HEAD2_TERM(j)               \
    do {                                \
        a = mct_fmac(a, wa[j], v[j]);   \
        b = mct_fmac(b, wb[j], v[j]);   \
    } while (0)
static inline MCT_ALWAYS_INLINE void head2_at(const float *wa, const float *wb, const float *v, int first,
                                              float *out0, float *out1) {
    float a = first ? 0.0f : *out0, b = first ? 0.0f : *out1;
    if (first) {
        a = wa[0] * v[0];
        b = wb[0] * v[0];
    } else {
        MCT_HEAD2_TERM(0);
    }
    MCT_HEAD2_TERM(1);
    MCT_HEAD2_TERM(2);
    MCT_HEAD2_TERM(3);
    MCT_HEAD2_TERM(4);
    MCT_HEAD2_TERM(5);
    MCT_HEAD2_TERM(6);
    MCT_HEAD2_TERM(7);
    *out0 = a;
    *out1 = b;
}
#undef MCT_HEAD2_TERM

static inline MCT_ALWAYS_INLINE void head2_plane8(const float *wa, const float *wb, const float *const *g, int first,
                                                  int32_t plane, float *out0, float *out1) {
    for (int32_t q = 0; q < plane; ++q) {
        const float v[8] = {g[0][q], g[1][q], g[2][q], g[3][q], g[4][q], g[5][q], g[6][q], g[7][q]};
        head2_at(wa, wb, v, first, out0 + q, out1 + q);
    }
}

/* Position q0 + k of a lazy pass: each channel's value picked by bit k of its mask byte (k a constant:
 * one test per channel, shared by both outputs). */
#define MCT_LAZY2_V(j, k) (bits[j] & (1u << (k)) ? l[j].v1 : l[j].v0)
#define MCT_LAZY2_AT(k)                                                                                 \
    do {                                                                                                \
        const float v[8] = {MCT_LAZY2_V(0, k), MCT_LAZY2_V(1, k), MCT_LAZY2_V(2, k), MCT_LAZY2_V(3, k),  \
                            MCT_LAZY2_V(4, k), MCT_LAZY2_V(5, k), MCT_LAZY2_V(6, k), MCT_LAZY2_V(7, k)}; \
        head2_at(wa, wb, v, first, out0 + q0 + (k), out1 + q0 + (k));                                   \
    } while (0)

/* Lazy channels whose mask bits start on byte boundaries (plane % 8 == 0): one mask byte per channel
 * for eight positions, each value picked once for both outputs. */
static inline MCT_ALWAYS_INLINE void head2_lazy8(const float *wa, const float *wb, const mct_lazy_channel *l,
                                                 int first, int32_t plane, float *out0, float *out1) {
    const uint8_t *m[8];
    for (int32_t j = 0; j < 8; ++j) m[j] = l[j].mask + (l[j].bit0 >> 3);
    for (int32_t q0 = 0; q0 < plane; q0 += 8) {
        const uint32_t bits[8] = {m[0][q0 >> 3], m[1][q0 >> 3], m[2][q0 >> 3], m[3][q0 >> 3],
                                  m[4][q0 >> 3], m[5][q0 >> 3], m[6][q0 >> 3], m[7][q0 >> 3]};
        MCT_PAIR_8(MCT_LAZY2_AT);
    }
}
#undef MCT_LAZY2_AT
#undef MCT_LAZY2_V

/* Any n output channels (a remainder pass, or lazy mask bits off byte boundaries), position by position. */
static void head2_any(const float *wa, const float *wb, const float *const *g, const mct_lazy_channel *l, int32_t n,
                      int first, int32_t plane, float *out0, float *out1) {
    for (int32_t q = 0; q < plane; ++q) {
        float a = out0[q], b = out1[q];
        for (int32_t j = 0; j < n; ++j) {
            const float v = l != NULL ? mct_lazy_at(&l[j], q) : g[j][q];
            a = first && j == 0 ? wa[0] * v : mct_fmac(a, wa[j], v);
            b = first && j == 0 ? wb[0] * v : mct_fmac(b, wb[j], v);
        }
        out0[q] = a;
        out1[q] = b;
    }
}

/* w[o][c] and w[o][c + 1] of rows [o0, o0 + n) as floats (mct_weight_f's elements): read down one run,
 * SRAM or Flash, with one stride when every one of them lies in it, else element by element. */
static void head2_weights(const mct_weight *w, int32_t c, int32_t o0, int32_t n, float *wa, float *wb) {
    const int in_sram = w->sram != NULL && c + 1 < w->kept_cols && o0 + n <= w->kept_rows;
    const int in_flash = w->sram == NULL || c >= w->kept_cols || o0 >= w->kept_rows;
    if (!in_sram && !in_flash) {
        for (int32_t j = 0; j < n; ++j) {
            wa[j] = mct_weight_f(w, o0 + j, c);
            wb[j] = mct_weight_f(w, o0 + j, c + 1);
        }
        return;
    }
    const size_t inner = (size_t)w->inner, stride = (size_t)(in_sram ? w->kept_cols : w->cols) * inner;
    const int8_t *at = (in_sram ? w->sram : w->flash) + (size_t)o0 * stride + (size_t)c * inner;
    for (int32_t j = 0; j < n; ++j, at += stride) {
        wa[j] = (float)at[0];
        wb[j] = (float)at[inner];
    }
}

static void head2_pass(const mct_weight *w, int32_t c, int32_t o0, int32_t n, const float *g_all,
                       const mct_lazy_grad *lazy, int32_t plane, float *out0, float *out1) {
    float wa[8], wb[8];
    const float *g[8];
    mct_lazy_channel l[8];
    const int first = o0 == 0;
    head2_weights(w, c, o0, n, wa, wb);
    for (int32_t j = 0; j < n; ++j) {
        if (lazy != NULL)
            l[j] = mct_lazy_channel_of(lazy, o0 + j);
        else
            g[j] = g_all + (size_t)(o0 + j) * (size_t)plane;
    }
    if (n == 8 && lazy == NULL && first)
        head2_plane8(wa, wb, g, 1, plane, out0, out1);
    else if (n == 8 && lazy == NULL)
        head2_plane8(wa, wb, g, 0, plane, out0, out1);
    else if (n == 8 && plane % 8 == 0 && first)
        head2_lazy8(wa, wb, l, 1, plane, out0, out1);
    else if (n == 8 && plane % 8 == 0)
        head2_lazy8(wa, wb, l, 0, plane, out0, out1);
    else
        head2_any(wa, wb, g, lazy != NULL ? l : NULL, n, first, plane, out0, out1);
}

#endif

void mct_fg_head2(const mct_weight *w, int32_t c, int32_t out_c, const float *g, const mct_lazy_grad *lazy,
                  int32_t plane, float *out0, float *out1) {
#if MCT_SIMD
    mct_fg_head(w, c, out_c, g, lazy, plane, out0);
    mct_fg_head(w, c + 1, out_c, g, lazy, plane, out1);
#else
    for (int32_t o = 0; o < out_c;) {
        const int32_t n = out_c - o >= 8 ? 8 : out_c - o;
        head2_pass(w, c, o, n, g, lazy, plane, out0, out1);
        o += n;
    }
#endif
}

/* ------------------------------------------------------------------------------------------------
 * Tail: out[i][q] = (out[i][q] + w[c][i] * g0[q]) + w[c + 1][i] * g1[q], one load and store per element */

#if !MCT_SIMD
/* Input channels [i, i + n) (n <= 8): their weights of rows c and c + 1, as floats. */
static void tail2_weights(const mct_weight_row *ra, const mct_weight_row *rb, int32_t i, int32_t n, float *wa,
                          float *wb) {
    const int32_t split = mct_imin(ra->split, rb->split);
    if (i + n <= split || (i >= ra->split && i >= rb->split)) { /* each row's run from one part: no test per column */
        const int8_t *a = (i < split ? ra->lo : ra->hi) + i, *b = (i < split ? rb->lo : rb->hi) + i;
        for (int32_t j = 0; j < n; ++j) {
            wa[j] = (float)a[j];
            wb[j] = (float)b[j];
        }
        return;
    }
    for (int32_t j = 0; j < n; ++j) {
        wa[j] = (float)mct_row_at(ra, i + j);
        wb[j] = (float)mct_row_at(rb, i + j);
    }
}

#endif

void mct_fg_tail2(const mct_weight *w, int32_t c, const float *g0, const float *g1, const float *init, int32_t in_c,
                  int32_t plane, float *out) {
#if !MCT_SIMD
    if (c > 0) {
        const mct_weight_row ra = mct_row_of(w, c), rb = mct_row_of(w, c + 1);
        float wa[8], wb[8];
        int32_t i = 0;
        for (; i + 8 <= in_c; i += 8) { /* eight input channels per pass over g0 and g1 */
            tail2_weights(&ra, &rb, i, 8, wa, wb);
            float *o0 = out + (size_t)i * (size_t)plane, *o1 = o0 + plane, *o2 = o1 + plane, *o3 = o2 + plane;
            float *o4 = o3 + plane, *o5 = o4 + plane, *o6 = o5 + plane, *o7 = o6 + plane;
            for (int32_t q = 0; q < plane; ++q) {
                const float ga = g0[q], gb = g1[q];
#define MCT_TAIL2_AT(j) o##j[q] = mct_fmac(mct_fmac(o##j[q], wa[j], ga), wb[j], gb)
                MCT_PAIR_8(MCT_TAIL2_AT);
#undef MCT_TAIL2_AT
            }
        }
        for (; i < in_c; ++i) {
            tail2_weights(&ra, &rb, i, 1, wa, wb);
            float *o = out + (size_t)i * (size_t)plane;
            for (int32_t q = 0; q < plane; ++q) o[q] = mct_fmac(mct_fmac(o[q], wa[0], g0[q]), wb[0], g1[q]);
        }
        return;
    }
#endif
    mct_fg_tail(w, c, g0, init, in_c, plane, out);
    mct_fg_tail(w, c + 1, g1, NULL, in_c, plane, out);
}

/* ------------------------------------------------------------------------------------------------
 * 1x1 weight gradient: rows r and r + 1, eight columns per pass over the plane */

#define MCT_GW2_COLS 8

/* nz + byte k of word, sign-extended: one SXTAB on a core with the DSP extension (GCC emits SBFX and
 * an add for the expression), the expression elsewhere; byte 3 is one ADD with ASR #24 as it is. */
#if defined(__arm__) && defined(__ARM_FEATURE_DSP)
#define MCT_GW2_SXTAB(k)                                                                                 \
    static inline MCT_ALWAYS_INLINE int32_t gw2_byte##k(int32_t nz, uint32_t word) {                     \
        int32_t v;                                                                                       \
        __asm__("sxtab %0, %1, %2, ror #" #k "*8" : "=r"(v) : "r"(nz), "r"(word));                       \
        return v;                                                                                        \
    }
#else
#define MCT_GW2_SXTAB(k)                                                                                 \
    static inline MCT_ALWAYS_INLINE int32_t gw2_byte##k(int32_t nz, uint32_t word) {                     \
        return nz + (int32_t)(int8_t)(word >> (8 * (k)));                                                \
    }
#endif
MCT_GW2_SXTAB(0)
MCT_GW2_SXTAB(1)
MCT_GW2_SXTAB(2)
#undef MCT_GW2_SXTAB
static inline MCT_ALWAYS_INLINE int32_t gw2_byte3(int32_t nz, uint32_t word) { return nz + ((int32_t)word >> 24); }

/* Centred input value k (0..3) of a little-endian word of four int8 positions (nz = -x_zero), as a float
 * (the word costs one load for four positions). */
#define MCT_GW2_V(word, k) ((float)gw2_byte##k(nz, word))

/* Four positions q..q+3 of column j: its four values converted once for both rows, each accumulator
 * adding q, q+1, q+2, q+3 in turn (the order of one position at a time). */
#define MCT_GW2_AT4(j)                                                                                  \
    do {                                                                                                \
        uint32_t word;                                                                                  \
        memcpy(&word, x##j + q, sizeof word);                                                           \
        const float v0 = MCT_GW2_V(word, 0), v1 = MCT_GW2_V(word, 1), v2 = MCT_GW2_V(word, 2),           \
                    v3 = MCT_GW2_V(word, 3);                                                            \
        a##j = mct_fmac(mct_fmac(mct_fmac(mct_fmac(a##j, g0, v0), g1, v1), g2, v2), g3, v3);             \
        b##j = mct_fmac(mct_fmac(mct_fmac(mct_fmac(b##j, h0, v0), h1, v1), h2, v2), h3, v3);             \
    } while (0)
#define MCT_GW2_AT(j)                                           \
    do {                                                        \
        const float v = (float)(nz + (int32_t)x##j[q]);         \
        a##j = mct_fmac(a##j, g, v);                            \
        b##j = mct_fmac(b##j, h, v);                            \
    } while (0)

#if MCT_SIMD
/* The host's AVX2 grad_w_1x1_rows2 (same arguments): the eight columns are the eight lanes, so each lane is
 * one element's sum, position after position, a separate multiply and add as mct_fmac (no contraction: the
 * host flags' -ffp-contract=off): the portable build's floats bit for bit. A lane's four positions come
 * from one word of its column; byte k by shifts. */
static inline __m256 gw2_simd_byte(__m256i words, int32_t k, __m256i nz) {
    const __m256i v = _mm256_srai_epi32(_mm256_slli_epi32(words, 24 - 8 * k), 24);
    return _mm256_cvtepi32_ps(_mm256_add_epi32(v, nz));
}

static void grad_w_1x1_rows2(const mct_conv *p, const int8_t *x, const float *ga, const float *gb, int32_t col,
                             int32_t n, float *outa, float *outb) {
    const int32_t in_n = p->in_h * p->in_w;
    const __m256i nz = _mm256_set1_epi32(-p->x_zero);
    const int8_t *xs[MCT_GW2_COLS];
    for (int32_t j = 0; j < MCT_GW2_COLS; ++j) xs[j] = x + (size_t)(col + (j < n ? j : 0)) * (size_t)in_n;
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    int32_t q = 0;
    for (; q + 4 <= in_n; q += 4) {
        int32_t w[MCT_GW2_COLS];
        for (int32_t j = 0; j < MCT_GW2_COLS; ++j) memcpy(&w[j], xs[j] + q, sizeof w[j]);
        const __m256i words = _mm256_loadu_si256((const __m256i *)(const void *)w);
        for (int32_t k = 0; k < 4; ++k) {
            const __m256 v = gw2_simd_byte(words, k, nz);
            a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_set1_ps(ga[q + k]), v));
            b = _mm256_add_ps(b, _mm256_mul_ps(_mm256_set1_ps(gb[q + k]), v));
        }
    }
    for (; q < in_n; ++q) { /* the positions left of a plane not a multiple of four */
        int32_t w[MCT_GW2_COLS];
        for (int32_t j = 0; j < MCT_GW2_COLS; ++j) w[j] = xs[j][q] - p->x_zero;
        const __m256 v = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(const void *)w));
        a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_set1_ps(ga[q]), v));
        b = _mm256_add_ps(b, _mm256_mul_ps(_mm256_set1_ps(gb[q]), v));
    }
    _mm256_storeu_ps(outa, a);
    _mm256_storeu_ps(outb, b);
}
#else
/* Columns [col, col + n) of rows r (from ga) and r + 1 (from gb) of a 1x1 stride-1 weight gradient with
 * float32 accumulators into outa / outb [0, n) (arrays of MCT_GW2_COLS): each element's sum over the
 * plane ascending, as grad_w_1x1; each centred input converted once for both rows, four positions of a
 * column read as one word. Missing columns repeat column col. */
static void grad_w_1x1_rows2(const mct_conv *p, const int8_t *x, const float *ga, const float *gb, int32_t col,
                             int32_t n, float *outa, float *outb) {
    const int32_t in_n = p->in_h * p->in_w, nz = -p->x_zero;
    const int8_t *xs[MCT_GW2_COLS];
    for (int32_t j = 0; j < MCT_GW2_COLS; ++j) xs[j] = x + (size_t)(col + (j < n ? j : 0)) * (size_t)in_n;
    const int8_t *x0 = xs[0], *x1 = xs[1], *x2 = xs[2], *x3 = xs[3], *x4 = xs[4], *x5 = xs[5], *x6 = xs[6],
                 *x7 = xs[7];
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    float b0 = 0, b1 = 0, b2 = 0, b3 = 0, b4 = 0, b5 = 0, b6 = 0, b7 = 0;
    int32_t q = 0;
    for (; q + 4 <= in_n; q += 4) {
        const float g0 = ga[q], g1 = ga[q + 1], g2 = ga[q + 2], g3 = ga[q + 3];
        const float h0 = gb[q], h1 = gb[q + 1], h2 = gb[q + 2], h3 = gb[q + 3];
        MCT_PAIR_8(MCT_GW2_AT4);
    }
    for (; q < in_n; ++q) { /* a plane of 1, 2x2... not a multiple of four: the positions left */
        const float g = ga[q], h = gb[q];
        MCT_PAIR_8(MCT_GW2_AT);
    }
    /* all eight stored (the caller's arrays hold MCT_GW2_COLS): a loop of n would be two memcpy calls */
#define MCT_GW2_OUT(j) (outa[j] = a##j, outb[j] = b##j)
    MCT_PAIR_8(MCT_GW2_OUT);
#undef MCT_GW2_OUT
}
#endif
#undef MCT_GW2_AT
#undef MCT_GW2_AT4
#undef MCT_GW2_V

/* Row r's elements [c, c + n) applied (mct_fg_grad_w_update_row's arithmetic; key: the step's stream). */
static inline void sgd_row_part(const mct_update *u, int32_t r, int32_t c, int32_t n, const float *g, uint32_t key) {
    const float lr = *u->lr, qas = u->qas[r];
    int8_t *w = u->w + r * u->cols + c;
    /* mct_stream_word(key, i) hashes key + i * 0x9E3779B9 (mod 2^32): one add per next element */
    uint32_t arg = key + (uint32_t)(r * u->cols + c) * 0x9E3779B9U;
    for (int32_t j = 0; j < n; ++j, arg += 0x9E3779B9U) w[j] = mct_sgd_int8_word(w[j], g[j], qas, lr, mct_hash32(arg));
}

void mct_fg_grad_w_update_row2(const mct_conv *p, const mct_update *u, const int8_t *x, const float *g0,
                               const float *g1, int32_t r, uint32_t step) {
    const int is_1x1 = p->k == 1 && p->stride == 1 && p->pad == 0 && p->groups == 1 && u->inner == 1;
    if (sizeof(mct_acc_t) != sizeof(float) || !is_1x1 || r + 1 >= u->rows) { /* one row at a time */
        mct_fg_grad_w_update_row(p, u, x, g0, NULL, r, step);
        mct_fg_grad_w_update_row(p, u, x, g1, NULL, r + 1, step);
        return;
    }
    const uint32_t key = mct_stream_key(u->seed, step, u->tensor_id);
    float ga[MCT_GW2_COLS], gb[MCT_GW2_COLS];
    for (int32_t c = 0; c < u->cols; c += MCT_GW2_COLS) {
        const int32_t n = mct_imin(MCT_GW2_COLS, u->cols - c);
        grad_w_1x1_rows2(p, x, g0, g1, c, n, ga, gb);
        sgd_row_part(u, r, c, n, ga, key);
        sgd_row_part(u, r + 1, c, n, gb, key);
    }
}
