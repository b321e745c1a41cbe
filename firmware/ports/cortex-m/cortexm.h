/* Cortex-M core pieces shared by every ARM board: SysTick clock, stack painting, semihosting. */
#ifndef TT_CORTEXM_H
#define TT_CORTEXM_H

#include <stdint.h>

#define TT_REG(addr) (*(volatile uint32_t *)(addr))

/* Start SysTick from the core clock with a 1 kHz interrupt; port_ticks() then counts core
 * cycles (tick_hz = cpu_hz) extended to 32 bits in software. */
void cm_systick_start(uint32_t cpu_hz);
uint32_t cm_ticks(void);
uint64_t cm_cycles(void);
uint32_t cm_uptime_ms(void);
void cm_align(void);
uint32_t cm_stack_peak(void);
/* Semihosting SYS_EXIT_EXTENDED: ends QEMU with `code` (needs -semihosting-config enable=on). */
void cm_semihost_exit(int code);

#endif
