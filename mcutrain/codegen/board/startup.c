/* startup.c: reset for every Cortex-M target (mcutrain/codegen/cores.py; each runs on its QEMU board).
 *
 * The vector table, then at reset: copy .data from Flash, zero .bss, enable the FPU where the core has
 * one (the build uses -mfloat-abi=hard there, so the first float instruction would fault without it;
 * on the M55 the same bits enable Helium), paint the
 * free stack with a pattern (so the harness can measure the stack's high-water mark at the end), run
 * main() and leave through semihosting. No C library start-up code: nothing here allocates.
 */
#include <stdint.h>

#include "mct_board.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _stack_limit, _estack;
int main(void);
void Reset_Handler(void);
void Fault_Handler(void);

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(uintptr_t)&_estack, /* initial stack pointer: the top of SRAM */
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    0, 0, 0, 0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,
    Fault_Handler, /* PendSV */
    Fault_Handler, /* SysTick */
};

/* Paint from the end of .bss up to a little below the current stack pointer: the words this very
 * function is using stay unpainted, so they count as used (the measurement errs on the safe side). */
static void paint_stack(void) {
    uint32_t sp;
    __asm volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = &_stack_limit; (uintptr_t)p < sp - 64u; ++p) *p = MCT_STACK_PAINT;
}

__attribute__((noreturn)) void Reset_Handler(void) {
    const uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;) *dst++ = 0u;
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: full access to CP10 and CP11 (the FPU) */
    __asm volatile("dsb\n\tisb" ::: "memory");
#endif
    paint_stack();
    mct_board_exit(main());
}

__attribute__((noreturn)) void Fault_Handler(void) {
    mct_board_puts("{\"event\":\"fault\"}\n");
    mct_board_exit(3);
}
