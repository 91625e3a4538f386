/* mct_fused_grad.c: see mct_fused.h (the channel-by-channel block backward of mbconv_grad; the row
 * pipelines are in mct_fused.c). */
#include "mct_fused.h"

/* ------------------------------------------------------------------------------------------------
 * Channel-by-channel block backward */

float mct_lazy_value(const mct_lazy_grad *s, int32_t o, int32_t q) {
    const float spread = (s->g[o] * (float)mct_get_bit(s->pool_mask, o)) * s->scale;
    return (spread * (float)mct_get_bit(s->mask, o * s->plane + q)) * s->m[s->per_channel ? o : 0];
}

/* The head's terms fl32(w[o][c] * g[o][q]) of channels o0 + j, j < n (1, 4 or 8) in one pass over out:
 * the float32 additions of channel after channel, in order, out[q] held in a register. ``first``
 * (o0 == 0): out starts from the first product. */
#define MCT_HEAD_T(j) (g[j][q])
#define MCT_HEAD_L(j) (mct_lazy_at(&l[j], q))
#define MCT_HEAD_ADD(acc, V, j) mct_fmac((acc), wv[j], V(j)) /* (acc) + wv[j] * value, one VMLA on the M7 */
#define MCT_HEAD_FROM(acc, V)                                                                      \
    MCT_HEAD_ADD(MCT_HEAD_ADD(MCT_HEAD_ADD(MCT_HEAD_ADD(                                                       \
        MCT_HEAD_ADD(MCT_HEAD_ADD(MCT_HEAD_ADD(acc, V, 1), V, 2), V, 3), V, 4), V, 5), V, 6), V, 7)
#define MCT_HEAD_PASS(V)                                                                                      \
    do {                                                                                                      \
        if (n == 8 && first)                                                                                  \
            for (int32_t q = 0; q < plane; ++q) out[q] = MCT_HEAD_FROM(wv[0] * V(0), V);                      \
        else if (n == 8)                                                                                      \
            for (int32_t q = 0; q < plane; ++q) out[q] = MCT_HEAD_FROM(MCT_HEAD_ADD(out[q], V, 0), V);        \
        else if (n == 4 && first)                                                                             \
            for (int32_t q = 0; q < plane; ++q)                                                               \
                out[q] = MCT_HEAD_ADD(MCT_HEAD_ADD(MCT_HEAD_ADD(wv[0] * V(0), V, 1), V, 2), V, 3);            \
        else if (n == 4)                                                                                      \
            for (int32_t q = 0; q < plane; ++q)                                                               \
                out[q] = MCT_HEAD_ADD(MCT_HEAD_ADD(MCT_HEAD_ADD(MCT_HEAD_ADD(out[q], V, 0), V, 1), V, 2), V, 3);  \
        else if (first)                                                                                       \
            for (int32_t q = 0; q < plane; ++q) out[q] = wv[0] * V(0);                                        \
        else                                                                                                  \
            for (int32_t q = 0; q < plane; ++q) out[q] = MCT_HEAD_ADD(out[q], V, 0);                          \
    } while (0)

/* Eight lazy channels whose mask bits start on byte boundaries (plane % 8 == 0), eight positions at a
 * time: each channel's mask byte is loaded once for the eight (lazy_at's value, bit by bit). */
#define MCT_LAZY8_V(j, k) ((bits[j] >> (k)) & 1u ? l[j].v1 : l[j].v0)
#define MCT_LAZY8_A(acc, j, k) mct_fmac((acc), wv[j], MCT_LAZY8_V(j, k))
#define MCT_LAZY8_FROM(acc, k)                                                                     \
    MCT_LAZY8_A(MCT_LAZY8_A(MCT_LAZY8_A(MCT_LAZY8_A(                                                           \
        MCT_LAZY8_A(MCT_LAZY8_A(MCT_LAZY8_A(acc, 1, k), 2, k), 3, k), 4, k), 5, k), 6, k), 7, k)
#define MCT_LAZY8_AT(k)                                                                                      \
    out[q0 + (k)] = first ? MCT_LAZY8_FROM(wv[0] * MCT_LAZY8_V(0, k), k)                                   \
                          : MCT_LAZY8_FROM(MCT_LAZY8_A(out[q0 + (k)], 0, k), k)

static inline void head_lazy8(const float *wv, const mct_lazy_channel *l, int first, int32_t plane, float *out) {
    const uint8_t *m[8];
    for (int32_t j = 0; j < 8; ++j) m[j] = l[j].mask + (l[j].bit0 >> 3);
    for (int32_t q0 = 0; q0 < plane; q0 += 8) {
        const uint32_t bits[8] = {m[0][q0 >> 3], m[1][q0 >> 3], m[2][q0 >> 3], m[3][q0 >> 3],
                                  m[4][q0 >> 3], m[5][q0 >> 3], m[6][q0 >> 3], m[7][q0 >> 3]};
        MCT_LAZY8_AT(0);
        MCT_LAZY8_AT(1);
        MCT_LAZY8_AT(2);
        MCT_LAZY8_AT(3);
        MCT_LAZY8_AT(4);
        MCT_LAZY8_AT(5);
        MCT_LAZY8_AT(6);
        MCT_LAZY8_AT(7);
    }
}
#undef MCT_LAZY8_AT
#undef MCT_LAZY8_FROM
#undef MCT_LAZY8_A
#undef MCT_LAZY8_V

#if MCT_SIMD
/* head_lazy8 on the host's AVX2 (mct_simd.h), eight positions per vector: each lane does the float32
 * operations of the scalar loop for its position, in their order (no fused multiply-add), so the sums
 * are the same bits. A mask byte becomes eight lane masks that pick v1 or v0. */
#define MCT_LAZY8_VEC(j)                                                                                 \
    _mm256_mul_ps(w[j], _mm256_blendv_ps(v0[j], v1[j], _mm256_castsi256_ps(_mm256_cmpeq_epi32(            \
                                           _mm256_and_si256(_mm256_set1_epi32(m[j][q0 >> 3]), bit), bit))))

static void head_lazy8_simd(const float *wv, const mct_lazy_channel *l, int first, int32_t plane, float *out) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const uint8_t *m[8];
    __m256 w[8], v0[8], v1[8];
    for (int32_t j = 0; j < 8; ++j) {
        m[j] = l[j].mask + (l[j].bit0 >> 3);
        w[j] = _mm256_set1_ps(wv[j]);
        v0[j] = _mm256_set1_ps(l[j].v0);
        v1[j] = _mm256_set1_ps(l[j].v1);
    }
    for (int32_t q0 = 0; q0 < plane; q0 += 8) {
        __m256 acc = first ? MCT_LAZY8_VEC(0) : _mm256_add_ps(_mm256_loadu_ps(out + q0), MCT_LAZY8_VEC(0));
        for (int32_t j = 1; j < 8; ++j) acc = _mm256_add_ps(acc, MCT_LAZY8_VEC(j));
        _mm256_storeu_ps(out + q0, acc);
    }
}
#undef MCT_LAZY8_VEC
#endif

#if MCT_SIMD
/* MCT_HEAD_PASS(MCT_HEAD_T) for n == 8 on the host's AVX2: eight positions per vector, each lane the
 * scalar loop's float32 operations in their order; the positions past the last multiple of 8 as there. */
static void head8_simd(const float *wv, const float *const *g, int first, int32_t plane, float *out) {
    __m256 w[8];
    for (int32_t j = 0; j < 8; ++j) w[j] = _mm256_set1_ps(wv[j]);
    int32_t q = 0;
    for (; q + 8 <= plane; q += 8) {
        __m256 acc = _mm256_mul_ps(w[0], _mm256_loadu_ps(g[0] + q));
        if (!first) acc = _mm256_add_ps(_mm256_loadu_ps(out + q), acc);
        for (int32_t j = 1; j < 8; ++j) acc = _mm256_add_ps(acc, _mm256_mul_ps(w[j], _mm256_loadu_ps(g[j] + q)));
        _mm256_storeu_ps(out + q, acc);
    }
    for (; q < plane; ++q) {
        float acc = first ? wv[0] * g[0][q] : out[q] + wv[0] * g[0][q];
        for (int32_t j = 1; j < 8; ++j) acc = acc + wv[j] * g[j][q];
        out[q] = acc;
    }
}
#endif

static void head_pass(const mct_weight *w, int32_t c, int32_t o0, int32_t n, const float *g_all,
                      const mct_lazy_grad *lazy, int32_t plane, float *out) {
    float wv[8];
    const float *g[8];
    mct_lazy_channel l[8];
    const int first = o0 == 0;
    for (int32_t j = 0; j < n; ++j) wv[j] = mct_weight_f(w, o0 + j, c);
    if (lazy == NULL) {
        for (int32_t j = 0; j < n; ++j) g[j] = g_all + (size_t)(o0 + j) * (size_t)plane;
#if MCT_SIMD
        if (n == 8) {
            head8_simd(wv, g, first, plane, out);
            return;
        }
#endif
        MCT_HEAD_PASS(MCT_HEAD_T);
        return;
    }
    for (int32_t j = 0; j < n; ++j) l[j] = mct_lazy_channel_of(lazy, o0 + j);
    if (n == 8 && plane % 8 == 0)
#if MCT_SIMD
        head_lazy8_simd(wv, l, first, plane, out);
#else
        head_lazy8(wv, l, first, plane, out);
#endif
    else
        MCT_HEAD_PASS(MCT_HEAD_L);
}
#undef MCT_HEAD_PASS
#undef MCT_HEAD_FROM
#undef MCT_HEAD_ADD
#undef MCT_HEAD_L
#undef MCT_HEAD_T

void mct_fg_head(const mct_weight *w, int32_t c, int32_t out_c, const float *g, const mct_lazy_grad *lazy,
                 int32_t plane, float *out) {
    for (int32_t o = 0; o < out_c;) {
        const int32_t n = out_c - o >= 8 ? 8 : (out_c - o >= 4 ? 4 : 1);
        head_pass(w, c, o, n, g, lazy, plane, out);
        o += n;
    }
}

/* Element q0 + k of a requantization whose mask byte is ``bits``: (float)bit as a select, not a conversion. */
#define MCT_RQ_AT(k) out[q0 + (k)] = (g[q0 + (k)] * ((bits >> (k)) & 1u ? 1.0f : 0.0f)) * m

void mct_fg_requant(const float *g, const uint8_t *mask, int32_t bit0, float m, int32_t plane, float *out) {
    int32_t q0 = 0;
    if ((bit0 & 7) == 0) /* mask bits on byte boundaries: one byte load per eight elements */
        for (const uint8_t *bytes = mask + (bit0 >> 3); q0 + 8 <= plane; q0 += 8) {
            const uint32_t bits = bytes[q0 >> 3];
            MCT_RQ_AT(0);
            MCT_RQ_AT(1);
            MCT_RQ_AT(2);
            MCT_RQ_AT(3);
            MCT_RQ_AT(4);
            MCT_RQ_AT(5);
            MCT_RQ_AT(6);
            MCT_RQ_AT(7);
        }
    for (int32_t q = q0; q < plane; ++q) out[q] = (g[q] * (float)mct_get_bit(mask, bit0 + q)) * m;
}
#undef MCT_RQ_AT

float mct_fg_sum(const float *g, int32_t plane) {
    mct_acc_t acc = 0;
    for (int32_t q = 0; q < plane; ++q) acc = mct_add_exact(acc, g[q]);
    return (float)acc;
}

float mct_fg_lazy_sum(const mct_lazy_grad *s, int32_t o) {
    const mct_lazy_channel l = mct_lazy_channel_of(s, o);
    mct_acc_t acc = 0;
    for (int32_t q = 0; q < s->plane; ++q) acc = mct_add_exact(acc, mct_lazy_at(&l, q));
    return (float)acc;
}

void mct_fg_tail(const mct_weight *w, int32_t c, const float *g_c, const float *init, int32_t in_c, int32_t plane,
                 float *out) {
    const mct_weight_row row = mct_row_of(w, c);
    int32_t i = 0;
    if (c > 0) /* eight input channels per pass over g_c: each element's addition as below */
        for (; i + 8 <= in_c; i += 8) {
            float wv[8];
            for (int32_t j = 0; j < 8; ++j) wv[j] = (float)(i + j < row.split ? row.lo[i + j] : row.hi[i + j]);
            float *o0 = out + (size_t)i * (size_t)plane, *o1 = o0 + plane, *o2 = o1 + plane, *o3 = o2 + plane;
            float *o4 = o3 + plane, *o5 = o4 + plane, *o6 = o5 + plane, *o7 = o6 + plane;
            int32_t q = 0;
#if MCT_SIMD /* eight positions per vector, each element's multiply and add as below */
            for (; q + 8 <= plane; q += 8) {
                const __m256 gq = _mm256_loadu_ps(g_c + q);
                for (int32_t j = 0; j < 8; ++j) {
                    float *oj = o0 + (size_t)j * (size_t)plane + q;
                    _mm256_storeu_ps(oj, _mm256_add_ps(_mm256_loadu_ps(oj), _mm256_mul_ps(_mm256_set1_ps(wv[j]), gq)));
                }
            }
#endif
            for (; q < plane; ++q) {
                const float gq = g_c[q];
                o0[q] = mct_fmac(o0[q], wv[0], gq);
                o1[q] = mct_fmac(o1[q], wv[1], gq);
                o2[q] = mct_fmac(o2[q], wv[2], gq);
                o3[q] = mct_fmac(o3[q], wv[3], gq);
                o4[q] = mct_fmac(o4[q], wv[4], gq);
                o5[q] = mct_fmac(o5[q], wv[5], gq);
                o6[q] = mct_fmac(o6[q], wv[6], gq);
                o7[q] = mct_fmac(o7[q], wv[7], gq);
            }
        }
    if (c > 0) /* four at a time for the rest */
        for (; i + 4 <= in_c; i += 4) {
            const float w0 = (float)(i < row.split ? row.lo[i] : row.hi[i]);
            const float w1 = (float)(i + 1 < row.split ? row.lo[i + 1] : row.hi[i + 1]);
            const float w2 = (float)(i + 2 < row.split ? row.lo[i + 2] : row.hi[i + 2]);
            const float w3 = (float)(i + 3 < row.split ? row.lo[i + 3] : row.hi[i + 3]);
            float *o0 = out + (size_t)i * (size_t)plane, *o1 = o0 + plane, *o2 = o1 + plane, *o3 = o2 + plane;
            for (int32_t q = 0; q < plane; ++q) {
                const float gq = g_c[q];
                o0[q] = mct_fmac(o0[q], w0, gq);
                o1[q] = mct_fmac(o1[q], w1, gq);
                o2[q] = mct_fmac(o2[q], w2, gq);
                o3[q] = mct_fmac(o3[q], w3, gq);
            }
        }
    for (; i < in_c; ++i) {
        const float wi = (float)(i < row.split ? row.lo[i] : row.hi[i]);
        float *out_i = out + (size_t)i * (size_t)plane;
        if (c > 0) {
            for (int32_t q = 0; q < plane; ++q) out_i[q] = out_i[q] + wi * g_c[q];
        } else if (init != NULL) {
            const float *init_i = init + (size_t)i * (size_t)plane;
            for (int32_t q = 0; q < plane; ++q) out_i[q] = init_i[q] + wi * g_c[q];
        } else {
            for (int32_t q = 0; q < plane; ++q) out_i[q] = wi * g_c[q];
        }
    }
}

/* Element (r, col, tap) of a weight gradient whose row is not the 1x1 one of ``grad_w_1x1``: depthwise
 * channel r's tap, or a general conv's (r, col, tap). */
static float grad_w_at(const mct_conv *p, const int8_t *x, const float *g_r, int32_t r, int32_t col, int32_t tap) {
    const int32_t in_n = p->in_h * p->in_w;
    const int32_t channel = p->groups > 1 ? r : col;
    return mct_grad_w_element(p, x + (size_t)channel * (size_t)in_n, g_r, tap / p->k, tap % p->k);
}

/* A 1x1 stride-1 weight gradient (a lazily computed gradient is always one): positions are the plane's. */
static int grad_w_is_1x1(const mct_conv *p, const mct_lazy_grad *lazy) {
    return lazy != NULL || (p->k == 1 && p->stride == 1 && p->pad == 0 && p->groups == 1);
}

#define MCT_GW_COLS 8 /* 1x1 weight-gradient columns computed together */

/* One position q of the eight columns: gq (the gradient at q) times each column's centred input. */
#define MCT_GW_MAC8(gq)                                                         \
    do {                                                                        \
        a0 = mct_mac_exact(a0, (gq), (int32_t)xs[0][q] - x_zero);               \
        a1 = mct_mac_exact(a1, (gq), (int32_t)xs[1][q] - x_zero);               \
        a2 = mct_mac_exact(a2, (gq), (int32_t)xs[2][q] - x_zero);               \
        a3 = mct_mac_exact(a3, (gq), (int32_t)xs[3][q] - x_zero);               \
        a4 = mct_mac_exact(a4, (gq), (int32_t)xs[4][q] - x_zero);               \
        a5 = mct_mac_exact(a5, (gq), (int32_t)xs[5][q] - x_zero);               \
        a6 = mct_mac_exact(a6, (gq), (int32_t)xs[6][q] - x_zero);               \
        a7 = mct_mac_exact(a7, (gq), (int32_t)xs[7][q] - x_zero);               \
    } while (0)

/* Columns [col, col + n) (n <= MCT_GW_COLS) of row r of a 1x1 weight gradient into out[0, n): each
 * column's sum over the plane in its own accumulator, positions ascending (the sum of one column alone),
 * so each gradient value (g_r[q], or the lazy value) is read once per position for all of them. Missing
 * columns (n < MCT_GW_COLS) repeat column col and are dropped. */
static void grad_w_1x1(const mct_conv *p, const int8_t *x, const float *g_r, const mct_lazy_grad *lazy, int32_t r,
                       int32_t col, int32_t n, float *out) {
    const int32_t in_n = p->in_h * p->in_w, x_zero = p->x_zero;
    if (sizeof(mct_acc_t) != sizeof(float)) { /* one column (gw_cols) */
        const int8_t *x_i = x + (size_t)col * (size_t)in_n;
        mct_acc_t acc = 0;
        if (lazy != NULL) {
            const mct_lazy_channel l = mct_lazy_channel_of(lazy, r);
            for (int32_t q = 0; q < in_n; ++q) acc = mct_mac_exact(acc, mct_lazy_at(&l, q), (int32_t)x_i[q] - x_zero);
        } else {
            for (int32_t q = 0; q < in_n; ++q) acc = mct_mac_exact(acc, g_r[q], (int32_t)x_i[q] - x_zero);
        }
        out[0] = (float)acc;
        return;
    }
    const int8_t *xs[MCT_GW_COLS];
    for (int32_t j = 0; j < MCT_GW_COLS; ++j) xs[j] = x + (size_t)(col + (j < n ? j : 0)) * (size_t)in_n;
    mct_acc_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    if (lazy != NULL) {
        const mct_lazy_channel l = mct_lazy_channel_of(lazy, r);
        for (int32_t q = 0; q < in_n; ++q) {
            const float gq = mct_lazy_at(&l, q);
            MCT_GW_MAC8(gq);
        }
    } else {
        for (int32_t q = 0; q < in_n; ++q) {
            const float gq = g_r[q];
            MCT_GW_MAC8(gq);
        }
    }
    if (n == MCT_GW_COLS) { /* stored one by one: GCC makes the loop below a memcpy call */
        out[0] = (float)a0, out[1] = (float)a1, out[2] = (float)a2, out[3] = (float)a3;
        out[4] = (float)a4, out[5] = (float)a5, out[6] = (float)a6, out[7] = (float)a7;
        return;
    }
    const float sums[MCT_GW_COLS] = {(float)a0, (float)a1, (float)a2, (float)a3,
                                     (float)a4, (float)a5, (float)a6, (float)a7};
    for (int32_t j = 0; j < n; ++j) out[j] = sums[j];
}
#undef MCT_GW_MAC8

/* Columns per grad_w_1x1 call: eight with float32 accumulators; one with double ones, whose soft-float
 * adds dominate and whose eight accumulators would not fit the registers. */
static inline int32_t gw_cols(void) { return sizeof(mct_acc_t) == sizeof(float) ? MCT_GW_COLS : 1; }

void mct_fg_grad_w_row(const mct_conv *p, const int8_t *x, const float *g_r, const mct_lazy_grad *lazy, int32_t r,
                       int32_t cols, float *out) {
    if (grad_w_is_1x1(p, lazy)) {
        for (int32_t c = 0; c < cols; c += gw_cols())
            grad_w_1x1(p, x, g_r, lazy, r, c, mct_imin(gw_cols(), cols - c), out + c);
        return;
    }
    const int32_t taps = p->k * p->k;
    for (int32_t c = 0; c < cols; ++c)
        for (int32_t t = 0; t < taps; ++t) out[c * taps + t] = grad_w_at(p, x, g_r, r, c, t);
}

void mct_fg_grad_w_update_row(const mct_conv *p, const mct_update *u, const int8_t *x, const float *g_r,
                              const mct_lazy_grad *lazy, int32_t r, uint32_t step) {
    if (r >= u->rows) return;
    const uint32_t key = mct_stream_key(u->seed, step, u->tensor_id);
    const float lr = *u->lr, qas = u->qas[r];
    if (grad_w_is_1x1(p, lazy) && u->inner == 1) { /* element (r, c) is i = r * cols + c */
        float g[MCT_GW_COLS];
        for (int32_t c = 0; c < u->cols; c += gw_cols()) {
            const int32_t n = mct_imin(gw_cols(), u->cols - c);
            grad_w_1x1(p, x, g_r, lazy, r, c, n, g);
            for (int32_t j = 0; j < n; ++j) {
                const int32_t i = r * u->cols + c + j;
                u->w[i] = mct_sgd_int8_word(u->w[i], g[j], qas, lr, mct_stream_word(key, (uint32_t)i));
            }
        }
        return;
    }
    for (int32_t c = 0; c < u->cols; ++c)
        for (int32_t t = 0; t < u->inner; ++t) {
            const int32_t i = (r * u->cols + c) * u->inner + t;
            const float g = grad_w_at(p, x, g_r, r, c, t);
            u->w[i] = mct_sgd_int8_word(u->w[i], g, qas, lr, mct_stream_word(key, (uint32_t)i));
        }
}

void mct_fg_update_weight_row(const mct_update *u, int32_t r, const float *g_r, uint32_t step) {
    if (r >= u->rows) return;
    const uint32_t key = mct_stream_key(u->seed, step, u->tensor_id);
    const float lr = *u->lr;
    const int32_t per_row = u->cols * u->inner;
    for (int32_t j = 0; j < per_row; ++j) {
        const int32_t i = r * per_row + j;
        u->w[i] = mct_sgd_int8_word(u->w[i], g_r[j], u->qas[r], lr, mct_stream_word(key, (uint32_t)i));
    }
}

void mct_fg_update_bias_row(const mct_update *u, int32_t r, float g) {
    mct_update row = *u;
    row.b = u->b + r;
    row.qas = u->qas + r;
    row.rows = 1;
    mct_update_bias(&row, &g);
}
