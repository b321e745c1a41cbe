/* The reset path the bare-metal ports share (see tt_start.h); the vector table and the first
 * instructions stay in each port (ports/cortex-m/cortexm.c, ports/riscv-virt/start.S). */
#include <stdint.h>

#include "tt_stack.h"
#include "tt_start.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _stack_bottom;
int main(void);

void tt_start(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    uint32_t sp;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss; dst++) *dst = 0;
    /* Paint the stack below the current frame; tt_stack_peak() finds the deepest write. */
#if defined(__riscv)
    __asm__ volatile("mv %0, sp" : "=r"(sp));
#else
    __asm__ volatile("mov %0, sp" : "=r"(sp));
#endif
    tt_stack_paint(&_stack_bottom, sp);
    main();
    for (;;) {}
}
