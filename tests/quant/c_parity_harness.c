/* Reads one operation per line on stdin, prints its result(s) on one line: the C side of the
 * NumPy / C parity test (tests/quant/test_c_parity.py). Floats travel as uint32 bit patterns. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "mct_int8.h"

int main(void) {
    char op[16];
    while (scanf("%15s", op) == 1) {
        if (!strcmp(op, "srdhm")) {
            int32_t a, b;
            if (scanf("%" SCNd32 " %" SCNd32, &a, &b) != 2) return 2;
            printf("%" PRId32 "\n", mct_srdhm(a, b));
        } else if (!strcmp(op, "rdbpot")) {
            int32_t x; int e;
            if (scanf("%" SCNd32 " %d", &x, &e) != 2) return 2;
            printf("%" PRId32 "\n", mct_rdbpot(x, e));
        } else if (!strcmp(op, "mbqm") || !strcmp(op, "round1")) {
            int32_t x, m; int s;
            if (scanf("%" SCNd32 " %" SCNd32 " %d", &x, &m, &s) != 3) return 2;
            printf("%" PRId32 "\n", op[0] == 'm' ? mct_mbqm(x, m, s) : mct_mul_round1(x, m, s));
        } else if (!strcmp(op, "req")) {
            int32_t acc, m, z, lo, hi; int s; uint8_t inside;
            if (scanf("%" SCNd32 " %" SCNd32 " %d %" SCNd32 " %" SCNd32 " %" SCNd32, &acc, &m, &s, &z, &lo, &hi) != 6) return 2;
            int8_t y = mct_requantize(acc, m, s, z, lo, hi, &inside);
            printf("%d %d\n", (int)y, (int)inside);
        } else if (!strcmp(op, "add")) {
            int32_t a, b; mct_add_params p; uint8_t inside;
            if (scanf("%" SCNd32 " %" SCNd32, &a, &b) != 2) return 2;
            if (scanf("%" SCNd32 " %" SCNd32 " %" SCNd32 " %" SCNd32 " %" SCNd32 " %" SCNd32 " %" SCNd32
                      " %" SCNd32 " %" SCNd32 " %" SCNd32 " %" SCNd32 " %" SCNd32,
                      &p.left_shift, &p.a_zero, &p.a_multiplier, &p.a_shift, &p.b_zero, &p.b_multiplier,
                      &p.b_shift, &p.out_zero, &p.out_multiplier, &p.out_shift, &p.qmin, &p.qmax) != 12) return 2;
            int8_t y = mct_add((int8_t)a, (int8_t)b, &p, &inside);
            printf("%d %d\n", (int)y, (int)inside);
        } else if (!strcmp(op, "pool")) {
            int32_t count, xz, m, yz, lo, hi; int s; uint8_t inside; int8_t x[4096];
            if (scanf("%" SCNd32 " %" SCNd32 " %" SCNd32 " %d %" SCNd32 " %" SCNd32 " %" SCNd32,
                      &count, &xz, &m, &s, &yz, &lo, &hi) != 7 || count > 4096) return 2;
            for (int32_t i = 0; i < count; ++i) {
                int v;
                if (scanf("%d", &v) != 1) return 2;
                x[i] = (int8_t)v;
            }
            int8_t y = mct_avgpool(x, count, xz, m, s, yz, lo, hi, &inside);
            printf("%d %d\n", (int)y, (int)inside);
        } else if (!strcmp(op, "hash")) {
            uint32_t x;
            if (scanf("%" SCNu32, &x) != 1) return 2;
            printf("%" PRIu32 "\n", mct_hash32(x));
        } else if (!strcmp(op, "words")) {
            uint32_t seed, step, tid, n;
            if (scanf("%" SCNu32 " %" SCNu32 " %" SCNu32 " %" SCNu32, &seed, &step, &tid, &n) != 4) return 2;
            uint32_t key = mct_stream_key(seed, step, tid);
            for (uint32_t i = 0; i < n; ++i) printf("%" PRIu32 "%c", mct_stream_word(key, i), i + 1 < n ? ' ' : '\n');
        } else if (!strcmp(op, "sround")) {
            uint32_t bits, r; float x;
            if (scanf("%" SCNu32 " %" SCNu32, &bits, &r) != 2) return 2;
            memcpy(&x, &bits, sizeof x);
            printf("%" PRId32 "\n", mct_stochastic_round(x, r));
        } else {
            fprintf(stderr, "unknown op %s\n", op);
            return 2;
        }
    }
    return 0;
}
