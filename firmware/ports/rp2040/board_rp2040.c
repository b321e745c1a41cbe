/*
 * Raspberry Pi RP2040 (Cortex-M0+, no DSP, no FPU) and, with TT_BOARD_RP2350, the RP2350
 * (Cortex-M33, DSP, single-precision FPU): UART0 (PL011) on GP0/GP1.
 *
 * RP2040: the 12 MHz crystal-less ROSC default is not stable enough for a UART, so this board
 * expects the clocks set up by the Pico SDK (clk_peri = 125 MHz) and links after the
 * second-stage boot loader (boot2 occupies the first 256 bytes of flash).
 * RP2350 (RP2350 datasheet): other addresses and reset bits, pads whose isolation latch must be
 * released, no boot2; the boot ROM needs an IMAGE_DEF block in the first 4 KiB of flash, and
 * the minimal one (an Arm secure executable) follows the vector table. It expects clk_peri at
 * TT_CPU_HZ as well. Both compile-checked here.
 */
#include "cortexm.h"
#include "tt_port.h"

#ifndef TT_BAUD
#define TT_BAUD 921600u
#endif
#if defined(TT_BOARD_RP2350)
#ifndef TT_CPU_HZ
#define TT_CPU_HZ 150000000u
#endif
#define RESETS_CLR 0x40023000u      /* RESETS base 0x40020000 + atomic clear alias 0x3000 */
#define RESETS_DONE 0x40020008u
#define RESET_UART0 (1u << 26)
#define RESET_IO_BANK0 (1u << 6)
#define RESET_PADS (1u << 9)        /* PADS_BANK0 */
#define IO_BANK0_GPIO0_CTRL 0x40028004u
#define IO_BANK0_GPIO1_CTRL 0x4002800Cu
#define PADS_BANK0_GPIO0 0x40038004u
#define PADS_BANK0_GPIO1 0x40038008u
#define PADS_ISO (1u << 8)
#define PADS_IE (1u << 6)
#define UART0 0x40070000u
#define PLATFORM "rp2350"
#define RAM_BYTES (520u << 10)
#define FLASH_BYTES (4u << 20)
/* PICOBIN block: start marker, IMAGE_TYPE item (executable, Arm, secure, RP2350), last item,
 * link to itself, end marker (RP2350 datasheet, "Image definitions"). */
__attribute__((section(".vectors"), used))
static const uint32_t image_def_[5] = {0xFFFFDED3u, 0x10210142u, 0x000001FFu, 0x00000000u,
                                       0xAB123579u};
#else
#ifndef TT_CPU_HZ
#define TT_CPU_HZ 125000000u
#endif
#define RESETS_CLR 0x4000F000u      /* RESETS base 0x4000C000 + atomic clear alias 0x3000 */
#define RESETS_DONE 0x4000C008u
#define RESET_UART0 (1u << 22)
#define RESET_IO_BANK0 (1u << 5)
#define RESET_PADS 0u               /* the RP2040's pads need no release */
#define IO_BANK0_GPIO0_CTRL 0x40014004u
#define IO_BANK0_GPIO1_CTRL 0x4001400Cu
#define UART0 0x40034000u
#define PLATFORM "rp2040"
#define RAM_BYTES (264u << 10)
#define FLASH_BYTES (2u << 20)
#endif
#define UARTDR (UART0 + 0x000u)
#define UARTFR (UART0 + 0x018u)
#define UARTIBRD (UART0 + 0x024u)
#define UARTFBRD (UART0 + 0x028u)
#define UARTLCR_H (UART0 + 0x02Cu)
#define UARTCR (UART0 + 0x030u)
#define FR_RXFE (1u << 4)
#define FR_TXFF (1u << 5)

static const tt_port_info info_ = {PLATFORM, TT_CPU_HZ, TT_CPU_HZ, RAM_BYTES, FLASH_BYTES, 0};

void port_init(void)
{
    const uint32_t blocks = RESET_UART0 | RESET_IO_BANK0 | RESET_PADS;
    uint32_t div;
    TT_REG(RESETS_CLR) = blocks;
    while ((TT_REG(RESETS_DONE) & blocks) != blocks) {}
#if defined(TT_BOARD_RP2350)
    TT_REG(PADS_BANK0_GPIO0) = (TT_REG(PADS_BANK0_GPIO0) & ~PADS_ISO) | PADS_IE;
    TT_REG(PADS_BANK0_GPIO1) = (TT_REG(PADS_BANK0_GPIO1) & ~PADS_ISO) | PADS_IE;
#endif
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
