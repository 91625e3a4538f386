/* host_driver.c: times the generated C training engine as a program of its own (bench/host_training.py).
 *
 * Usage: host_driver SAMPLES WARMUP STEPS
 *   SAMPLES: records of (int32 label, MCT_IMAGE_BYTES int8 image), native byte order.
 * Runs WARMUP untimed training steps, then STEPS timed ones (cycling through the samples), and prints
 * one JSON line: seconds per step, the losses and the process's peak resident set (VmHWM of
 * /proc/self/status, which starts afresh at exec; ru_maxrss would carry the forking parent's peak). A
 * program of its own, not a library inside Python, so that its peak RSS is the engine's.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"

#define RECORD_BYTES (4 + MCT_IMAGE_BYTES)
#define MAX_SAMPLES 64

static unsigned char samples[MAX_SAMPLES][RECORD_BYTES];

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static long peak_rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0) kib = atol(line + 6);
    if (f != NULL) fclose(f);
    return kib * 1024L;
}

static float step(int i, int n) {
    int32_t label;
    memcpy(&label, samples[i % n], 4);
    return mct_train_step((const int8_t *)(samples[i % n] + 4), (int)label);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s SAMPLES WARMUP STEPS\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (f == NULL) {
        perror(argv[1]);
        return 2;
    }
    int n = (int)fread(samples, RECORD_BYTES, MAX_SAMPLES, f);
    fclose(f);
    int warmup = atoi(argv[2]), steps = atoi(argv[3]);
    if (n == 0 || steps <= 0 || steps > 4096) {
        fprintf(stderr, "need 1..%d samples and 1..4096 steps\n", MAX_SAMPLES);
        return 2;
    }
    static float losses[4096];
    mct_init();
    for (int i = 0; i < warmup; i++) step(i, n);
    double t0 = now_seconds();
    for (int i = 0; i < steps; i++) losses[i] = step(warmup + i, n);
    double seconds = (now_seconds() - t0) / steps;
    printf("{\"seconds_per_step\": %.9f, \"peak_rss_bytes\": %ld, \"losses\": [", seconds, peak_rss_bytes());
    for (int i = 0; i < steps; i++) printf("%s%.6g", i ? ", " : "", (double)losses[i]);
    printf("]}\n");
    return 0;
}
