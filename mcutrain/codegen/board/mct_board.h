/* mct_board.h: what the harness needs from the board: semihosting I/O, the cycle-free clock, the
 * stack measurement. Semihosting (BKPT 0xAB) is answered by the debugger or by QEMU
 * (-semihosting-config enable=on,target=native); the program calls it directly instead of through a
 * C library so that the firmware has no heap and no stdio buffers in SRAM. */
#ifndef MCT_BOARD_H
#define MCT_BOARD_H

#include <stddef.h>
#include <stdint.h>

#define MCT_STACK_PAINT 0xC5AC5AC5u /* what unused stack words hold */

/* Semihosting. */
int32_t mct_board_open(const char *path);                  /* read-only binary; -1 on failure */
int32_t mct_board_read(int32_t handle, void *buf, size_t n); /* 0 when all n bytes were read */
int32_t mct_board_seek(int32_t handle, uint32_t position); /* from the file's start; 0 on success */
void mct_board_puts(const char *text);                     /* to the host's stdout */
__attribute__((noreturn)) void mct_board_exit(int code);  /* 0: success, else failure */

/* The clock: the board's timer (board.c), in ticks whose length in instructions the runner knows per core. */
void mct_board_clock_start(void);
uint32_t mct_board_ticks(void); /* ticks since mct_board_clock_start */

/* Stack: bytes between the top of SRAM and the lowest word that no longer holds the paint. */
uint32_t mct_board_stack_high_water(void);
uint32_t mct_board_stack_space(void); /* bytes from the end of .bss to the top of SRAM (the stack's room) */

#endif /* MCT_BOARD_H */
