/* harness.c: the test firmware around a generated model (mcutrain run drives it under QEMU).
 *
 * Reads its samples from the host through semihosting (the file mcutrain run writes: see
 * mcutrain/codegen/firmware.py, INPUT_FORMAT), evaluates the held-out samples, runs the training
 * steps, evaluates again, and prints one JSON object per line on the host's stdout. Floats are
 * printed as the hex of their IEEE bits (exact, and no printf float formatting on the device). Each
 * training line carries the guard's status flags and learning rate after the step; the last line its
 * rollback count and final learning rate.
 *
 * Time is counted in ticks of the board's timer (board.c); under QEMU with -icount shift=0 one
 * instruction advances virtual time by 1 ns, so one tick is 1e9 / the timer's clock instructions: 40
 * on the mps2 boards' 25 MHz timer (the core's row in mcutrain/codegen/cores.py says). The
 * "calibration" line reports the ticks of a loop of known length (2 instructions per iteration: subs
 * + bne) so that the runner can check that scale on every run. These are instructions, not cycles: a
 * Cortex-M7 issues up to two per cycle and waits on memory. Ticks are 32 bits: one measured interval
 * may span up to 2^32 ticks (134 G instructions at the fastest clock, 32 MHz).
 *
 * The sample and save buffers live in the .hostio section, outside the SRAM being measured: on a
 * device the camera would write into the model's own input buffer (the arena) instead.
 *
 * Profile builds (-DMCT_TRACE, `mcutrain compile --target cortex-m7 --profile`): model.c calls a hook
 * after every op; the hook here stores the timer (ticks since the step or prediction began) per op
 * index, and after each step / prediction a "profile" line lists them, so per-op instructions are the
 * differences (resolution: one tick, 40 instructions on the mps2 boards, per op; the sum over ops telescopes, so it is
 * exact to one tick). The hook's own cost is measured once at start ("hook_cost": mct_trace_probe's
 * n back-to-back hook sites with the hook set, and again with it cleared) for the runner to subtract.
 */
#include <stdint.h>

#include "mct_board.h"
#include "model.h"

#define CALIBRATION_ITERATIONS (1u << 20)
#define INPUT_MAGIC 0x4954434Du /* "MCTI" */
#define INPUT_VERSION 1u
#define FLAG_EVAL_BEFORE 1u
#define FLAG_EVAL_AFTER 2u

typedef struct {
    uint32_t magic, version, image_bytes, classes, n_train, n_eval, flags, reserved;
} input_header;

__attribute__((section(".hostio"), aligned(8))) static int8_t image[MCT_IMAGE_BYTES];
__attribute__((section(".hostio"), aligned(8))) static uint8_t saved[MCT_SAVE_BYTES];

/* ---- JSON lines without printf ---------------------------------------------------------------- */
/* A small buffer sent whenever it fills: the harness's SRAM does not grow with the number of classes. */
static char line[128];
static uint32_t used;

static void flush(void) {
    line[used] = '\0';
    mct_board_puts(line);
    used = 0;
}

static void put_char(char c) {
    if (used + 1u >= sizeof line) flush();
    line[used++] = c;
}

static void put(const char *s) {
    while (*s != '\0') put_char(*s++);
}

static void put_u32(uint32_t v) {
    char digits[11];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    while (n > 0) put_char(digits[--n]);
}

static void put_hex(uint32_t v) {
    static const char hex[] = "0123456789abcdef";
    put("\"");
    for (int i = 7; i >= 0; --i) put_char(hex[(v >> (4 * i)) & 0xFu]);
    put("\"");
}

static uint32_t bits(float f) {
    union {
        float f;
        uint32_t u;
    } b = {f};
    return b.u;
}

static void key(const char *name, uint32_t value) {
    put(",\"");
    put(name);
    put("\":");
    put_u32(value);
}

static void end_line(void) {
    put("}\n");
    flush();
}

static void fail(const char *why) {
    put("{\"event\":\"error\",\"why\":\"");
    put(why);
    put("\"");
    end_line();
    mct_board_exit(2);
}

/* ---- profile builds: the per-op timer ---------------------------------------------------------- */
#ifdef MCT_TRACE
#define MCT_PROFILE_MAX_OPS 2048u
#define HOOK_PROBE_CALLS 4096u
void mct_host_set_trace(void (*hook)(int32_t stage, int32_t op));
void mct_trace_probe(uint32_t n);

/* In .hostio like the sample buffer: the profile does not add to the SRAM being measured. */
__attribute__((section(".hostio"), aligned(8))) static uint32_t op_ticks[MCT_PROFILE_MAX_OPS];
static uint32_t op_count;

static void mark(int32_t stage, int32_t op) {
    (void)stage;
    const uint32_t now = mct_board_ticks();
    if ((uint32_t)op < MCT_PROFILE_MAX_OPS) op_ticks[op] = now;
    op_count += 1u;
}

/* Called before the step's first timer read, so that resetting costs the step nothing. */
static void profile_begin(void) { op_count = 0u; }

/* The ticks from t0 (the step's or prediction's start) to the end of each op. */
static void profile_line(const char *stage, uint32_t t0) {
    put("{\"event\":\"profile\",\"stage\":\"");
    put(stage);
    put("\"");
    key("ops", op_count);
    put(",\"ticks\":[");
    for (uint32_t i = 0; i < op_count && i < MCT_PROFILE_MAX_OPS; ++i) {
        if (i > 0) put(",");
        put_u32(op_ticks[i] - t0);
    }
    put("]");
    end_line();
}

static void hook_cost(void) {
    mct_host_set_trace(mark);
    uint32_t t0 = mct_board_ticks();
    mct_trace_probe(HOOK_PROBE_CALLS);
    const uint32_t with_hook = mct_board_ticks() - t0;
    mct_host_set_trace(0);
    t0 = mct_board_ticks();
    mct_trace_probe(HOOK_PROBE_CALLS);
    const uint32_t without = mct_board_ticks() - t0;
    mct_host_set_trace(mark);
    put("{\"event\":\"hook_cost\"");
    key("calls", HOOK_PROBE_CALLS);
    key("ticks_with_hook", with_hook);
    key("ticks_without_hook", without);
    end_line();
}
#define PROFILE_BEGIN() profile_begin()
#define PROFILE_LINE(stage, t0) profile_line((stage), (t0))
#else
#define PROFILE_BEGIN() ((void)0)
#define PROFILE_LINE(stage, t0) ((void)0)
#endif

/* ---- the run ---------------------------------------------------------------------------------- */
static void known_loop(uint32_t n) { __asm volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc"); }

static void calibrate(void) {
    const uint32_t t0 = mct_board_ticks();
    known_loop(CALIBRATION_ITERATIONS);
    const uint32_t ticks = mct_board_ticks() - t0;
    put("{\"event\":\"calibration\"");
    key("loop_instructions", 2u * CALIBRATION_ITERATIONS);
    key("ticks", ticks);
    end_line();
}

static int32_t read_label_and_image(int32_t file) {
    int32_t label;
    if (mct_board_read(file, &label, sizeof label) != 0 || mct_board_read(file, image, sizeof image) != 0)
        fail("input file ends early");
    return label;
}

static void evaluate(int32_t file, uint32_t n, const char *phase) {
    float logits[MCT_NUM_CLASSES];
    for (uint32_t i = 0; i < n; ++i) {
        const int32_t label = read_label_and_image(file);
        PROFILE_BEGIN();
        const uint32_t t0 = mct_board_ticks();
        const int predicted = mct_predict(image, logits);
        const uint32_t ticks = mct_board_ticks() - t0;
        PROFILE_LINE("inference", t0);
        put("{\"event\":\"predict\",\"phase\":\"");
        put(phase);
        put("\"");
        key("index", i);
        key("label", (uint32_t)label);
        key("class", (uint32_t)predicted);
        key("ticks", ticks);
        put(",\"logits\":[");
        for (int k = 0; k < MCT_NUM_CLASSES; ++k) {
            if (k > 0) put(",");
            put_hex(bits(logits[k]));
        }
        put("]");
        end_line();
    }
}

static void train(int32_t file, uint32_t n) {
    for (uint32_t i = 0; i < n; ++i) {
        const int32_t label = read_label_and_image(file);
        PROFILE_BEGIN();
        const uint32_t t0 = mct_board_ticks();
        const float loss = mct_train_step(image, label);
        const uint32_t ticks = mct_board_ticks() - t0;
        PROFILE_LINE("train", t0);
        if (loss < 0.0f) fail("mct_train_step refused a sample (label out of range)");
        put("{\"event\":\"train\"");
        key("step", mct_steps());
        key("label", (uint32_t)label);
        put(",\"loss\":");
        put_hex(bits(loss));
        key("ticks", ticks);
        /* What the guard did in this step (model.h: MCT_STEP_*) and the learning rate it left. */
        key("status", (uint32_t)mct_last_step_status());
        put(",\"lr\":");
        put_hex(bits(mct_learning_rate()));
        end_line();
    }
}

static uint32_t fnv1a(const uint8_t *p, uint32_t n) {
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < n; ++i) h = (h ^ p[i]) * 16777619u;
    return h;
}

/* Position the input at record ``index`` (the training records come first, then the held-out ones). */
static void seek_record(int32_t file, uint32_t index) {
    if (mct_board_seek(file, (uint32_t)sizeof(input_header) + index * (4u + MCT_IMAGE_BYTES)) != 0)
        fail("cannot seek in the input file");
}

int main(void) {
    mct_board_clock_start();
    calibrate();
    input_header h;
    const int32_t file = mct_board_open("mct_input.bin");
    if (file < 0) fail("cannot open mct_input.bin in the working directory");
    if (mct_board_read(file, &h, sizeof h) != 0) fail("input file ends early");
    if (h.magic != INPUT_MAGIC || h.version != INPUT_VERSION) fail("not an mcutrain input file (magic/version)");
    if (h.image_bytes != MCT_IMAGE_BYTES || h.classes != MCT_NUM_CLASSES)
        fail("input file made for another model (image bytes or classes differ)");
    mct_init();
#ifdef MCT_TRACE
    hook_cost();
#endif
    if (h.flags & FLAG_EVAL_BEFORE) {
        seek_record(file, h.n_train);
        evaluate(file, h.n_eval, "before");
    }
    seek_record(file, 0);
    train(file, h.n_train);
    size_t arena_bytes;
    const uint8_t *trained_arena = mct_arena_view(&arena_bytes);
    const uint32_t arena_hash = fnv1a(trained_arena, (uint32_t)arena_bytes); /* before "after" overwrites it */
    if (h.flags & FLAG_EVAL_AFTER) {
        seek_record(file, h.n_train);
        evaluate(file, h.n_eval, "after");
    }
    const uint32_t n_saved = (uint32_t)mct_save(saved, sizeof saved);
    put("{\"event\":\"done\"");
    key("steps", mct_steps());
    key("rollbacks", mct_rollbacks());
    put(",\"lr\":");
    put_hex(bits(mct_learning_rate()));
    key("save_bytes", n_saved);
    put(",\"save_fnv1a\":");
    put_hex(fnv1a(saved, n_saved));
    put(",\"arena_fnv1a\":");
    put_hex(arena_hash);
    key("stack_high_water", mct_board_stack_high_water());
    key("stack_space", mct_board_stack_space());
    end_line();
    return 0;
}
