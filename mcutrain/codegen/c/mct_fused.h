/* mct_fused.h: the fused kernels of the programs mcutrain.codegen generates (C99; no malloc, no OS).
 *
 * Two op kinds of the engine's full pipeline (mcutrain/engine/passes) that have no single-op
 * counterpart; what they compute is defined by the NumPy arena kernels
 * (mcutrain/engine/executor/arena_kernels.py), which these mirror with the rounding discipline of
 * mct_kernels.h (forward int8 bit-exact; backward float32 products, float64 contractions rounded once):
 *
 * mbconv_rows (passes/fuse_rows): a chain of frozen convs and residual adds run row by row. Every
 *   intermediate tensor is a ring of a few rows in the op's scratch (row r in slot r % ring); the
 *   chain's input is whole in the arena, or STREAMED: then row r of every channel is copied from the
 *   caller's image (which may live in Flash) into its ring when the static schedule says so. The
 *   schedule (a table of (stage, row) events in Flash) is the NumPy executor's, so the rings hold
 *   exactly the rows it holds. A folded stage (a depthwise conv whose 1x1 expand conv has no ring)
 *   makes the k expanded rows of its window one channel at a time in a k-row window of the scratch.
 *
 * mbconv_grad (passes/fuse_backward): the backward of an inverted-residual block one expanded
 *   channel at a time. The generated code runs the chain's parts for channel c (a loop the emitter
 *   writes) with the per-channel helpers below; the gradients of one channel live in the op's
 *   scratch, updates apply as soon as their row is complete. Per channel every helper computes what
 *   the whole-tensor kernel computes for that channel, with the same summation order, so running one
 *   channel at a time (the NumPy kernel runs a few) changes no bit.
 */
#ifndef MCT_FUSED_H
#define MCT_FUSED_H

#include <stddef.h>
#include <stdint.h>

#include "mct_kernels.h"

/* ---- row pipelines (mbconv_rows) ---- */

/* A tensor of a pipeline, [c][h][w] int8; row r of channel ch at arena + offset + (ch * ring + r % ring) * w
 * (ring == h: the whole tensor; a streamed input's view is its ring). */
typedef struct {
    int32_t offset;
    int32_t c, h, ring, w;
} mct_rows_view;

/* One stage: a conv (conv != NULL) or a residual add (add != NULL, its operand tables add_tables) from view
 * ``in`` (and ``in2``) into view ``out``. A folded conv (expand != NULL) makes ``batch`` output rows an event
 * (its schedule rows step by batch) from a window of the rows they read, made by the 1x1 conv ``expand`` from
 * view ``in`` (the expand conv's input), ``window_channels`` channels at a time (the planner's fold group: the
 * window holds that many channels of k + (batch - 1) * stride rows, [channel][row][w]) at arena offset
 * ``window``. */
typedef struct {
    const mct_conv *conv;
    const mct_add_params *add;
    const mct_add_table *add_tables;
    const mct_conv *expand;
    int32_t in, in2, out, window, window_channels, batch;
} mct_rows_stage;

#define MCT_ROWS_STREAM (-1) /* schedule event: copy the next row of the streamed input into its ring */
#define MCT_ROWS_MAX_K MCT_MAX_K

typedef struct {
    const mct_rows_stage *stages;
    const mct_rows_view *views;
    const int16_t *schedule; /* n_events (stage, row) pairs, in execution order */
    int32_t n_events;
    int32_t stream;      /* view index of the streamed input's ring, or -1 (the input is whole) */
    int32_t out;         /* view index of the output (whole) */
    int32_t mask_offset; /* arena offset of the output's packed clamp mask, or -1 */
} mct_rows;

/* Runs the schedule. ``arena``: the arena's first byte; ``source``: the streamed input, whole
 * [c][h][w] int8 (read one row at a time; NULL when nothing is streamed). */
void mct_mbconv_rows(const mct_rows *p, uint8_t *arena, const int8_t *source);

/* ---- channel-by-channel block backward (mbconv_grad): helpers for channel c ----
 * Fast paths, every output's float sum in the order stated below (so float64 folders stay bit-equal to
 * the NumPy executor, and float32 ones unchanged too): register blocking over independent outputs (the
 * head adds eight channels per pass over out, the tail eight input channels per pass over g_c, a 1x1
 * weight gradient eight columns per pass over the plane with float32 accumulators), weights converted to
 * float once per call, clamp masks read a byte per eight positions where their bits start on a byte,
 * depthwise transposes walking their interior columns without divisions. */

/* The lazily computed input of the block's head (the average pool's gradient spread over the
 * positions, times the project conv's clamp mask and requantization factor), never whole:
 * value(o, q) = (((g[o] * pool_mask[o]) * scale) * mask[o * plane + q]) * m[per_channel ? o : 0]. */
typedef struct {
    const float *g;          /* [channels]: the pooled gradient */
    const uint8_t *pool_mask; /* [channels] bits: the average pool's clamp mask */
    float scale;             /* the average pool's factor */
    const uint8_t *mask;     /* [channels][plane] bits: the project conv's clamp mask */
    const float *m;          /* requantization factors */
    int32_t per_channel, channels, plane;
} mct_lazy_grad;

float mct_lazy_value(const mct_lazy_grad *s, int32_t o, int32_t q);

/* Lazy channel o's two possible values: mct_lazy_value with mask bit 1 and with bit 0, computed with
 * the same float32 operations once per channel (per position only the bit picks one). */
typedef struct {
    float v0, v1;
    const uint8_t *mask;
    int32_t bit0;
} mct_lazy_channel;

static inline MCT_ALWAYS_INLINE mct_lazy_channel mct_lazy_channel_of(const mct_lazy_grad *s, int32_t o) {
    const float spread = (s->g[o] * (float)mct_get_bit(s->pool_mask, o)) * s->scale;
    const float m = s->m[s->per_channel ? o : 0];
    const mct_lazy_channel l = {(spread * 0.0f) * m, (spread * 1.0f) * m, s->mask, o * s->plane};
    return l;
}

static inline MCT_ALWAYS_INLINE float mct_lazy_at(const mct_lazy_channel *l, int32_t q) {
    return mct_get_bit(l->mask, l->bit0 + q) ? l->v1 : l->v0;
}

/* w[o][c] as a float (mct_weight_at's element, without its call: the head reads a column). */
static inline MCT_ALWAYS_INLINE float mct_weight_f(const mct_weight *w, int32_t o, int32_t c) {
    if (w->sram != NULL && o < w->kept_rows && c < w->kept_cols)
        return (float)w->sram[((size_t)o * (size_t)w->kept_cols + (size_t)c) * (size_t)w->inner];
    return (float)w->flash[((size_t)o * (size_t)w->cols + (size_t)c) * (size_t)w->inner];
}

/* Channel c of a 1x1 conv's input gradient (the head): out[q] = sum_o fl32(w[o][c] * g[o][q]), float32,
 * o ascending; g from the arena ([out_c][plane]) or lazily (lazy != NULL). */
void mct_fg_head(const mct_weight *w, int32_t c, int32_t out_c, const float *g, const mct_lazy_grad *lazy,
                 int32_t plane, float *out);
/* out[q] = (g[q] * bit(mask, bit0 + q)) * m (in place allowed). */
void mct_fg_requant(const float *g, const uint8_t *mask, int32_t bit0, float m, int32_t plane, float *out);
/* sum over the plane in mct_acc_t, ascending, rounded once (a bias gradient). */
float mct_fg_sum(const float *g, int32_t plane);
/* Lazy channel o summed likewise (the project conv's bias gradient). */
float mct_fg_lazy_sum(const mct_lazy_grad *s, int32_t o);
/* Channel c of a depthwise conv's input gradient from channel c of g_acc (the conv's geometry). */
void mct_fg_depthwise_grad_x(const mct_conv *p, int32_t c, const float *g_c, float *out);
/* The 1x1 tail: out[i][q] (+)= fl32(w[c][i] * g_c[q]); channel 0 starts from init (NULL: from nothing;
 * init may be out). */
void mct_fg_tail(const mct_weight *w, int32_t c, const float *g_c, const float *init, int32_t in_c, int32_t plane,
                 float *out);
/* Row r of a weight gradient (depthwise: channel r's k*k taps; 1x1: cols input channels), from the
 * gradient plane g_r of output channel r (lazy != NULL: lazily computed channel r) and the saved input x. */
void mct_fg_grad_w_row(const mct_conv *p, const int8_t *x, const float *g_r, const mct_lazy_grad *lazy, int32_t r,
                       int32_t cols, float *out);
/* The same row applied at once to the trained slice (no gradient stored); rows >= u->rows are frozen. */
void mct_fg_grad_w_update_row(const mct_conv *p, const mct_update *u, const int8_t *x, const float *g_r,
                              const mct_lazy_grad *lazy, int32_t r, uint32_t step);
/* update_weight of row r from its gradient row g_r; update_bias of row r from its gradient g. */
void mct_fg_update_weight_row(const mct_update *u, int32_t r, const float *g_r, uint32_t step);
void mct_fg_update_bias_row(const mct_update *u, int32_t r, float g);

/* ---- the same for TWO expanded channels c and c + 1 per pass (mct_fused_pair.c): every element the
 * one-channel helpers' value, its operations in their order, the loads of the two shared ---- */

/* mct_fg_head for channels c (into out0) and c + 1 (into out1). */
void mct_fg_head2(const mct_weight *w, int32_t c, int32_t out_c, const float *g, const mct_lazy_grad *lazy,
                  int32_t plane, float *out0, float *out1);
/* mct_fg_tail of channel c (gradient g0), then of channel c + 1 (g1). */
void mct_fg_tail2(const mct_weight *w, int32_t c, const float *g0, const float *g1, const float *init, int32_t in_c,
                  int32_t plane, float *out);
/* mct_fg_grad_w_update_row of rows r (gradient plane g0) and r + 1 (g1). */
void mct_fg_grad_w_update_row2(const mct_conv *p, const mct_update *u, const int8_t *x, const float *g0,
                               const float *g1, int32_t r, uint32_t step);

#endif /* MCT_FUSED_H */
