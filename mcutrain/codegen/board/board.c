/* board.c: semihosting calls, the timer, the stack measurement (see mct_board.h). */
#include "mct_board.h"

enum { SYS_OPEN = 0x01, SYS_WRITE0 = 0x04, SYS_READ = 0x06, SYS_SEEK = 0x0A, SYS_EXIT_EXTENDED = 0x20 };
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static int32_t semihost(uint32_t op, const void *args) {
    register uint32_t r0 __asm("r0") = op;
    register const void *r1 __asm("r1") = args;
    __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

int32_t mct_board_open(const char *path) {
    size_t n = 0;
    while (path[n] != '\0') ++n;
    const uint32_t args[3] = {(uint32_t)(uintptr_t)path, 1u /* "rb" */, (uint32_t)n};
    return semihost(SYS_OPEN, args);
}

int32_t mct_board_read(int32_t handle, void *buf, size_t n) {
    const uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, (uint32_t)n};
    return semihost(SYS_READ, args); /* the number of bytes NOT read */
}

int32_t mct_board_seek(int32_t handle, uint32_t position) {
    const uint32_t args[2] = {(uint32_t)handle, position};
    return semihost(SYS_SEEK, args);
}

void mct_board_puts(const char *text) { semihost(SYS_WRITE0, text); }

void mct_board_exit(int code) {
    const uint32_t args[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    semihost(SYS_EXIT_EXTENDED, args);
    for (;;) {
    }
}

/* The clock, per board (mcutrain/codegen/cores.py: the -D flags come from the core's row). */
#if defined(MCT_TIMER_CMSDK)
/* CMSDK APB timer 0: CTRL +0 (bit 0 enables), VALUE +4 (counts down), RELOAD +8. */
#define TIMER0 ((volatile uint32_t *)MCT_TIMER_BASE)

void mct_board_clock_start(void) {
    TIMER0[0] = 0u;
    TIMER0[2] = 0xFFFFFFFFu;
    TIMER0[1] = 0xFFFFFFFFu;
    TIMER0[0] = 1u;
}

uint32_t mct_board_ticks(void) { return 0xFFFFFFFFu - TIMER0[1]; }
#elif defined(MCT_TIMER_SSE)
/* The SSE-300 system counter: enabled by CNTCR bit 0 in its control frame, read (low 32 bits of the
 * 64-bit count, counting up) through a timer frame's CNTPCT at +0. Differences of the low word are
 * exact for intervals under 2^32 ticks. */
static uint32_t clock_zero;

void mct_board_clock_start(void) {
    *(volatile uint32_t *)MCT_COUNTER_CONTROL |= 1u;
    clock_zero = *(volatile uint32_t *)MCT_TIMER_BASE;
}

uint32_t mct_board_ticks(void) { return *(volatile uint32_t *)MCT_TIMER_BASE - clock_zero; }
#else
#error "no board timer: build through mcutrain.codegen.firmware (it passes the core's -DMCT_TIMER_* flags)"
#endif

extern uint32_t _stack_limit, _estack;

uint32_t mct_board_stack_high_water(void) {
    const uint32_t *p = &_stack_limit;
    while (p < &_estack && *p == MCT_STACK_PAINT) ++p;
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

uint32_t mct_board_stack_space(void) {
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)&_stack_limit);
}
