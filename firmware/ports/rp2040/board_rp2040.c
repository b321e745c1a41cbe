/*
 * Raspberry Pi RP2040 (Cortex-M0+, no DSP, no FPU): UART0 (PL011) on GP0/GP1 from the 12 MHz
 * crystal-less ROSC default is not stable enough for a UART, so this board expects the clocks
 * set up by the second-stage boot loader of the Pico SDK (clk_peri = 125 MHz) and links after
 * it (boot2 occupies the first 256 bytes of flash). Compile-checked here.
 */
#include "cortexm.h"
#include "tt_port.h"

#ifndef TT_CPU_HZ
#define TT_CPU_HZ 125000000u
#endif
#ifndef TT_BAUD
#define TT_BAUD 921600u
#endif
#define RESETS_CLR 0x4000F000u      /* RESETS base 0x4000C000 + atomic clear alias 0x3000 */
#define RESETS_DONE 0x4000C008u
#define RESET_UART0 (1u << 22)
#define RESET_IO_BANK0 (1u << 5)
#define IO_BANK0_GPIO0_CTRL 0x40014004u
#define IO_BANK0_GPIO1_CTRL 0x4001400Cu
#define UART0 0x40034000u
#define UARTDR (UART0 + 0x000u)
#define UARTFR (UART0 + 0x018u)
#define UARTIBRD (UART0 + 0x024u)
#define UARTFBRD (UART0 + 0x028u)
#define UARTLCR_H (UART0 + 0x02Cu)
#define UARTCR (UART0 + 0x030u)
#define FR_RXFE (1u << 4)
#define FR_TXFF (1u << 5)

static const tt_port_info info_ = {"rp2040", TT_CPU_HZ, TT_CPU_HZ, 264u << 10, 2u << 20, 0};

void port_init(void)
{
    uint32_t div;
    TT_REG(RESETS_CLR) = RESET_UART0 | RESET_IO_BANK0;
    while ((TT_REG(RESETS_DONE) & (RESET_UART0 | RESET_IO_BANK0)) != (RESET_UART0 | RESET_IO_BANK0)) {}
    TT_REG(IO_BANK0_GPIO0_CTRL) = 2u; /* FUNCSEL UART */
    TT_REG(IO_BANK0_GPIO1_CTRL) = 2u;
    div = (8u * TT_CPU_HZ) / TT_BAUD; /* 64 * (clk / (16 * baud)) */
    TT_REG(UARTIBRD) = div >> 7;
    TT_REG(UARTFBRD) = ((div & 0x7Fu) + 1u) / 2u;
    TT_REG(UARTLCR_H) = (3u << 5) | (1u << 4); /* 8 bits, FIFOs */
    TT_REG(UARTCR) = (1u << 0) | (1u << 8) | (1u << 9); /* UARTEN, TXE, RXE */
    cm_systick_start(TT_CPU_HZ);
}

const tt_port_info *port_info(void) { return &info_; }

void port_write(const uint8_t *buf, size_t n)
{
    while (n--) {
        while (TT_REG(UARTFR) & FR_TXFF) {}
        TT_REG(UARTDR) = *buf++;
    }
}

int port_read(void)
{
    if (TT_REG(UARTFR) & FR_RXFE) return -1;
    return (int)(TT_REG(UARTDR) & 0xFFu);
}
