/* The reset path every bare-metal port shares (core/tt_start.c). */
#ifndef TT_START_H
#define TT_START_H

/* Copy .data from flash, zero .bss, paint the stack (port_stack_peak), run main(); halts if
 * main() returns, so it never returns. A port's entry jumps here once the stack and anything C
 * needs first are set up: the Cortex-M Reset_Handler turns the FPU on, the RISC-V _start sets
 * sp, gp and the FPU. Needs _sidata, _sdata, _edata, _sbss, _ebss and _stack_bottom from the
 * linker script. Not declared noreturn: GCC never tail-calls a noreturn function, and the
 * Cortex-M Reset_Handler would keep a stack frame below main() for nothing. */
void tt_start(void);

#endif
