/*
 * Reset handler (the FPU on, then core/tt_start.c), vector table, SysTick time base and stack
 * high-water for ARMv6-M / ARMv7-M.
 *
 * The clock: DWT CYCCNT is absent on Cortex-M0+ and reads 0 under QEMU, so the time base is
 * SysTick at the core clock with a 1 ms reload; the interrupt counts periods and port_ticks()
 * combines them with the current value. Runs start on a SysTick edge (cm_align), which makes
 * every timestamp of a run reproducible under QEMU's -icount.
 */
#include <stdint.h>

#include "tt_stack.h"
#include "tt_start.h"
#include "cortexm.h"

#define SYST_CSR 0xE000E010u
#define SYST_RVR 0xE000E014u
#define SYST_CVR 0xE000E018u
#define SCB_CPACR 0xE000ED88u
#define SCB_ICSR 0xE000ED04u
#define ICSR_PENDSTSET (1u << 26)

extern uint32_t _stack_bottom, _stack_top;

static volatile uint32_t periods_;
static uint32_t period_ticks_;

void Reset_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void);

void Reset_Handler(void)
{
#if defined(__ARM_FP)
    /* CP10/CP11 full access before any floating-point instruction runs. */
    TT_REG(SCB_CPACR) |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    tt_start(); /* .data, .bss, stack paint, main() */
}

void Default_Handler(void)
{
    for (;;) {}
}

void SysTick_Handler(void) { periods_++; }

void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));

__attribute__((section(".vectors"), used))
static void (*const vectors_[16 + 32])(void) = {
    (void (*)(void))(&_stack_top), Reset_Handler, NMI_Handler, HardFault_Handler,
    Default_Handler, Default_Handler, Default_Handler, 0, 0, 0, 0, SVC_Handler,
    Default_Handler, 0, PendSV_Handler, SysTick_Handler,
    /* external interrupts: none used (the link is polled) */
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler,
};

void cm_systick_start(uint32_t cpu_hz)
{
    period_ticks_ = cpu_hz / 1000u;
    TT_REG(SYST_RVR) = period_ticks_ - 1u;
    TT_REG(SYST_CVR) = 0;
    TT_REG(SYST_CSR) = 7u; /* core clock, interrupt, enable */
}

/* Inlined in cm_ticks(): port_ticks() times every span event. */
static inline __attribute__((always_inline)) uint64_t cycles_now(void)
{
    /* SysTick may reload a few instructions before its interrupt is taken (QEMU takes
     * interrupts at translation-block boundaries), so a pending SysTick counts as one more
     * period; a reload between the two reads of VAL (it counts down) means retry. */
    uint32_t p, v, v2, pending;
    do {
        p = periods_;
        v = TT_REG(SYST_CVR);
        pending = TT_REG(SCB_ICSR) & ICSR_PENDSTSET;
        v2 = TT_REG(SYST_CVR);
    } while (p != periods_ || v2 > v || v == 0u);
    /* VAL == 0 is ambiguous (QEMU may have raised, or even taken, the interrupt before the
     * reload shows), which put a timestamp a whole period off: read again a tick later. */
    if (pending) p++;
    return (uint64_t)p * period_ticks_ + (period_ticks_ - 1u - v);
}

uint32_t cm_ticks(void) { return (uint32_t)cycles_now(); }
uint64_t cm_cycles(void) { return cycles_now(); }
uint32_t cm_uptime_ms(void) { return periods_; }

void cm_align(void)
{
    uint32_t p = periods_;
    while (periods_ == p) __asm__ volatile("wfi");
}

uint32_t cm_stack_peak(void)
{
    return tt_stack_peak(&_stack_bottom, &_stack_top);
}

void cm_semihost_exit(int code)
{
    uint32_t block[2];
    block[0] = 0x20026u; /* ADP_Stopped_ApplicationExit */
    block[1] = (uint32_t)code;
    __asm__ volatile("mov r0, %0\n\tmov r1, %1\n\tbkpt 0xAB"
                     : : "r"(0x20u), "r"(block) : "r0", "r1", "memory");
}

/* The tt_port.h hooks every Cortex-M board implements the same way (boards add their UART,
 * clock set-up and port_info). */
uint32_t port_ticks(void) __attribute__((alias("cm_ticks")));
uint64_t port_cycles(void) { return cm_cycles(); }
uint64_t port_instructions(void) { return UINT64_MAX; }
uint32_t port_uptime_ms(void) { return cm_uptime_ms(); }
uint32_t port_stack_peak(void) { return cm_stack_peak(); }
void port_align(void) { cm_align(); }
void port_flush(void) {} /* the UART sends each byte as it is written */
void port_idle(void) {}
int port_new_connection(void) { return 0; }
