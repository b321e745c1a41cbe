/*
 * RISC-V 32 on QEMU virt: NS16550A UART at 0x10000000, SiFive test device at 0x100000 (exit).
 *
 * The clock is mcycle (tick_hz = cpu_hz). Under QEMU's -icount shift=0 one instruction takes
 * 1 ns of virtual time and mcycle counts virtual nanoseconds, so the virtual core runs at 1 GHz
 * and a run's timestamps are exact instruction counts; minstret gives COUNTER INSTRUCTIONS.
 * Reading mcycle needs Zicsr in the assembler (binutils >= 2.38 split it from the base ISA).
 */
#include <stdint.h>

#include "tt_stack.h"
#include "tt_device.h"
#include "tt_port.h"

#define REG8(a) (*(volatile uint8_t *)(a))
#define UART 0x10000000u
#define UART_RBR (UART + 0u)
#define UART_THR (UART + 0u)
#define UART_FCR (UART + 2u)
#define UART_LCR (UART + 3u)
#define UART_LSR (UART + 5u)
#define LSR_DR 0x01u
#define LSR_THRE 0x20u
#define SIFIVE_TEST 0x00100000u

#ifndef TT_CPU_HZ
#define TT_CPU_HZ 1000000000u
#endif

extern uint32_t _stack_bottom, _stack_top;

#ifdef __riscv_flen
#define TT_VIRT_PLATFORM "riscv32f-virt"
#else
#define TT_VIRT_PLATFORM "riscv32-virt"
#endif
static const tt_port_info info_ = {TT_VIRT_PLATFORM, TT_CPU_HZ, TT_CPU_HZ, 4u << 20, 4u << 20, 0};

static uint64_t read64(int which)
{
    uint32_t hi, lo, hi2;
    do {
        if (which) {
            __asm__ volatile("csrr %0, minstreth" : "=r"(hi));
            __asm__ volatile("csrr %0, minstret" : "=r"(lo));
            __asm__ volatile("csrr %0, minstreth" : "=r"(hi2));
        } else {
            __asm__ volatile("csrr %0, mcycleh" : "=r"(hi));
            __asm__ volatile("csrr %0, mcycle" : "=r"(lo));
            __asm__ volatile("csrr %0, mcycleh" : "=r"(hi2));
        }
    } while (hi != hi2);
    return ((uint64_t)hi << 32) | lo;
}

void port_init(void)
{
    REG8(UART_LCR) = 0x03; /* 8N1 */
    REG8(UART_FCR) = 0x07; /* FIFOs on and cleared */
}

const tt_port_info *port_info(void) { return &info_; }

void port_write(const uint8_t *buf, size_t n)
{
    while (n--) {
        while (!(REG8(UART_LSR) & LSR_THRE)) {}
        REG8(UART_THR) = *buf++;
    }
}

int port_read(void)
{
    if (!(REG8(UART_LSR) & LSR_DR)) return -1;
    return REG8(UART_RBR);
}

uint32_t port_ticks(void)
{
    uint32_t lo;
#ifdef TT_TICKS_MINSTRET
    __asm__ volatile("csrr %0, minstret" : "=r"(lo));
#else
    __asm__ volatile("csrr %0, mcycle" : "=r"(lo));
#endif
    return lo;
}

uint64_t port_cycles(void) { return read64(0); }
uint64_t port_instructions(void) { return read64(1); }
uint32_t port_uptime_ms(void) { return (uint32_t)(read64(0) / (TT_CPU_HZ / 1000u)); }

uint32_t port_stack_peak(void)
{
    return tt_stack_peak(&_stack_bottom, &_stack_top);
}

void port_align(void) {}
void port_flush(void) {} /* the UART sends each byte as it is written */
void port_idle(void) {}
int port_new_connection(void) { return 0; }

/* Ends QEMU through the SiFive test device: 0x5555 = pass, (code << 16) | 0x3333 = fail. */
void rv_exit(int code)
{
    *(volatile uint32_t *)SIFIVE_TEST = code ? (((uint32_t)code << 16) | 0x3333u) : 0x5555u;
}
