/* mct_backward8.h: the integer backward's kernels (--backward int8; mcutrain/quant/int8_grad.py).
 *
 * A gradient tensor is int8 g[] with an exponent e (values g * 2^e); the elementwise rules and the
 * update are mct_int8_grad.h's primitives, these are the contractions around them. Each kernel that
 * produces a gradient tensor returns its exponent. Parameter gradients are int32 at the exponent of
 * the g they came from (unrounded, as the spec says), written to a buffer the update then reads.
 * Accumulators are int32 and exact: |w| <= 127, |g| <= 127, |x - x_zero| <= 255, so a sum stays
 * exact up to 2^17 terms (a transposed conv) or 2^16 positions (a weight gradient).
 */
#ifndef MCT_BACKWARD8_H
#define MCT_BACKWARD8_H

#include "mct_int8_grad.h"
#include "mct_kernels.h"

/* The input gradient of a conv: normalize(conv_transpose(w, g)) into out, in two passes over the exact
 * int32 sums (the peak, then the values): no buffer beyond out. With init (1x1 convs, accumulated):
 * add_grads(init, that), out may be init. scratch (one input channel, int8) when out is g: an in-place
 * depthwise conv. Returns E. */
int32_t mct_g8_conv2d_grad_x(const mct_conv *p, const int8_t *g, int32_t e, const int8_t *init, int32_t e_init,
                             int8_t *out, int8_t *scratch);
/* The weight gradient of the kept slice [rows][cols][taps] (depthwise: [rows][1][taps]); x holds the
 * kept input channels (or all). */
void mct_g8_conv2d_grad_w(const mct_conv *p, const int8_t *x, const int8_t *g, int32_t rows, int32_t cols,
                          int32_t *out);
void mct_g8_conv2d_grad_b(const int8_t *g, int32_t channels, int32_t plane, int32_t *out);

/* The classifier: g is the gradient of its int32 accumulator (the logit scale already in it). */
int32_t mct_g8_linear_grad_x(const mct_linear *p, const int8_t *g, int32_t e, int8_t *out);
void mct_g8_linear_grad_w(const mct_linear *p, const int8_t *g, const int8_t *x, int32_t *out);
void mct_g8_linear_grad_b(const mct_linear *p, const int8_t *g, int32_t *out);

/* A global average pool's backward: g [channels] scaled by (m, sh), masked, spread over plane. */
int32_t mct_g8_avgpool_grad(const int8_t *g, int32_t e, const uint8_t *mask, int32_t m, int32_t sh,
                            int32_t channels, int32_t plane, int8_t *out);
/* A fan-out sum: terms folded left to right with mct_g8_add. out may be any term. Returns E. */
int32_t mct_g8_grad_sum(const int8_t *const *terms, const int32_t *exponents, int32_t n_terms, int32_t n,
                        int8_t *out);

/* The updates of one parameter's trained slice (mct_update's layout), from its int32 gradient at e. */
void mct_g8_update_weight(const mct_update *u, const int32_t *g, int32_t e, uint32_t step);
void mct_g8_update_bias(const mct_update *u, const int32_t *g, int32_t e);
/* The weight gradient applied element by element as mct_g8_update_weight applies it: never stored. */
void mct_g8_conv2d_grad_w_update(const mct_conv *p, const mct_update *u, const int8_t *x, const int8_t *g, int32_t e,
                                 uint32_t step);
void mct_g8_linear_grad_w_update(const mct_linear *p, const mct_update *u, const int8_t *g, const int8_t *x, int32_t e,
                                 uint32_t step);

/* The TFLite pools of imported graphs (mct_graph_ops.c): each input's exact sum over the windows that reach
 * it, normalized. Average: g * mask * m[p] * 2^sh[p], the factor per output position p (ratio / its
 * window's valid count), lifted to the smallest sh. Maximum: g * mask at each window's first maximum. */
int32_t mct_g8_tfl_avgpool_grad(const mct_tfl_pool *p, const int8_t *g, int32_t e, const uint8_t *mask,
                                const int32_t *m, const int32_t *sh, int8_t *out);
int32_t mct_g8_tfl_maxpool_grad(const mct_tfl_pool *p, const int8_t *g, int32_t e, const uint8_t *mask,
                                const int8_t *x, int8_t *out);
/* [plane][c] -> [c][plane]: the channels-last flatten's gradient payload. */
void mct_nhwc_to_nchw_i8(const int8_t *g, int32_t channels, int32_t plane, int8_t *out);

#endif
