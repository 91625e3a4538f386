/* Reads one operation per line on stdin, prints its result on one line: the C side of
 * tests/quant/test_c_parity_int8_grad.py (mct_int8_grad.h against mcutrain/quant/int8_grad.py). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "mct_int8_grad.h"

#define MAX_N 4096

static int read_i32s(int32_t *v, int32_t n) {
    for (int32_t i = 0; i < n; ++i)
        if (scanf("%" SCNd32, &v[i]) != 1) return 0;
    return 1;
}

static int read_i8s(int8_t *v, int32_t n) {
    for (int32_t i = 0; i < n; ++i) {
        int x;
        if (scanf("%d", &x) != 1) return 0;
        v[i] = (int8_t)x;
    }
    return 1;
}

static int64_t int32_at(const void *src, int32_t k) { return ((const int32_t *)src)[k]; }

static void print_g8(int32_t e, const int8_t *g, int32_t n) {
    printf("%" PRId32, e);
    for (int32_t i = 0; i < n; ++i) printf(" %d", (int)g[i]);
    printf("\n");
}

int main(void) {
    static int32_t acc[MAX_N], m[MAX_N], sh[MAX_N];
    static int8_t g[MAX_N], h[MAX_N], out[MAX_N];
    static uint8_t mask[MAX_N / 8];
    char op[16];
    while (scanf("%15s", op) == 1) {
        int32_t n, e, f;
        if (!strcmp(op, "norm")) {
            if (scanf("%" SCNd32 " %" SCNd32, &n, &e) != 2 || n > MAX_N || !read_i32s(acc, n)) return 2;
            print_g8(mct_g8_normalize_by(int32_at, acc, n, e, out), out, n);
        } else if (!strcmp(op, "scale")) { /* channels plane per_channel e m.. sh.. mask(0/1/-1 none) g.. */
            int32_t channels, plane, per, has_mask;
            if (scanf("%" SCNd32 " %" SCNd32 " %" SCNd32 " %" SCNd32 " %" SCNd32, &channels, &plane, &per, &e,
                      &has_mask) != 5) return 2;
            n = channels * plane;
            f = per ? channels : 1;
            if (n > MAX_N || !read_i32s(m, f) || !read_i32s(sh, f) || !read_i32s(acc, has_mask ? n : 0) ||
                !read_i8s(g, n)) return 2;
            memset(mask, 0, sizeof mask);
            for (int32_t i = 0; has_mask && i < n; ++i) mask[i >> 3] |= (uint8_t)((acc[i] & 1) << (i & 7));
            print_g8(mct_g8_scale(g, e, has_mask ? mask : 0, m, sh, per, channels, plane, out), out, n);
        } else if (!strcmp(op, "add")) {
            int32_t eb;
            if (scanf("%" SCNd32 " %" SCNd32 " %" SCNd32, &n, &e, &eb) != 3 || n > MAX_N || !read_i8s(g, n) ||
                !read_i8s(h, n)) return 2;
            print_g8(mct_g8_add(g, e, h, eb, n, out), out, n);
        } else if (!strcmp(op, "prod")) { /* two float32 arrays as uint32 bit patterns */
            static float fa[MAX_N], fb[MAX_N];
            if (scanf("%" SCNd32, &n) != 1 || n > MAX_N) return 2;
            for (int32_t i = 0; i < 2 * n; ++i) {
                uint32_t bits;
                if (scanf("%" SCNu32, &bits) != 1) return 2;
                memcpy(i < n ? &fa[i] : &fb[i - n], &bits, sizeof bits);
            }
            print_g8(mct_g8_from_products(fa, fb, n, out), out, n);
        } else if (!strcmp(op, "sround")) {
            int64_t p;
            int32_t s, stochastic;
            uint32_t r;
            if (scanf("%" SCNd64 " %" SCNd32 " %" SCNu32 " %" SCNd32, &p, &s, &r, &stochastic) != 4) return 2;
            printf("%" PRId64 "\n", mct_g8_shift_round(p, s, r, stochastic));
        } else if (!strcmp(op, "factor")) { /* float32 bit patterns */
            uint32_t lr_bits, qas_bits;
            float lr, qas;
            int32_t fm, fx;
            if (scanf("%" SCNu32 " %" SCNu32, &lr_bits, &qas_bits) != 2) return 2;
            memcpy(&lr, &lr_bits, sizeof lr);
            memcpy(&qas, &qas_bits, sizeof qas);
            mct_g8_update_factor(lr, qas, &fm, &fx);
            printf("%" PRId32 " %" PRId32 "\n", fm, fx);
        } else if (!strcmp(op, "uw")) {
            int32_t w, grad, fm, fx;
            uint32_t r;
            if (scanf("%" SCNd32 " %" SCNd32 " %" SCNd32 " %" SCNd32 " %" SCNd32 " %" SCNu32, &w, &grad, &e, &fm, &fx,
                      &r) != 6) return 2;
            printf("%d\n", (int)mct_g8_update_weight_element((int8_t)w, grad, e, fm, fx, r));
        } else if (!strcmp(op, "ub")) {
            int32_t b, grad, fm, fx;
            if (scanf("%" SCNd32 " %" SCNd32 " %" SCNd32 " %" SCNd32 " %" SCNd32, &b, &grad, &e, &fm, &fx) != 5) return 2;
            printf("%" PRId32 "\n", mct_g8_update_bias_element(b, grad, e, fm, fx));
        } else {
            return 3;
        }
    }
    return 0;
}
