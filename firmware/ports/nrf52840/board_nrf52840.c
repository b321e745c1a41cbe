/*
 * Nordic nRF52840 (Cortex-M4F, 64 MHz): UARTE0 with EasyDMA on P0.06 (TX) / P0.08 (RX), the
 * pins of the nRF52840-DK's interface MCU. Compile-checked here; flash with nrfjprog/pyOCD.
 */
#include "cortexm.h"
#include "tt_port.h"

#define CPU_HZ 64000000u
#define UARTE0 0x40002000u
#define TASKS_STARTRX (UARTE0 + 0x000u)
#define TASKS_STARTTX (UARTE0 + 0x008u)
#define EVENTS_ENDRX (UARTE0 + 0x110u)
#define EVENTS_ENDTX (UARTE0 + 0x120u)
#define ENABLE (UARTE0 + 0x500u)
#define PSEL_TXD (UARTE0 + 0x50Cu)
#define PSEL_RXD (UARTE0 + 0x514u)
#define BAUDRATE (UARTE0 + 0x524u)
#define RXD_PTR (UARTE0 + 0x534u)
#define RXD_MAXCNT (UARTE0 + 0x538u)
#define TXD_PTR (UARTE0 + 0x544u)
#define TXD_MAXCNT (UARTE0 + 0x548u)
#define BAUD_1M 0x10000000u

static const tt_port_info info_ = {"nrf52840", CPU_HZ, CPU_HZ, 256u << 10, 1u << 20, 0};
static uint8_t rx_byte_;
static uint8_t tx_buf_[64]; /* EasyDMA reads RAM only: copy flash data through this buffer */

void port_init(void)
{
    TT_REG(PSEL_TXD) = 6u;
    TT_REG(PSEL_RXD) = 8u;
    TT_REG(BAUDRATE) = BAUD_1M;
    TT_REG(ENABLE) = 8u;
    TT_REG(RXD_PTR) = (uint32_t)&rx_byte_;
    TT_REG(RXD_MAXCNT) = 1u;
    TT_REG(TASKS_STARTRX) = 1u;
    cm_systick_start(CPU_HZ);
}

const tt_port_info *port_info(void) { return &info_; }

void port_write(const uint8_t *buf, size_t n)
{
    while (n) {
        size_t k = n < sizeof tx_buf_ ? n : sizeof tx_buf_, i;
        for (i = 0; i < k; i++) tx_buf_[i] = buf[i];
        TT_REG(EVENTS_ENDTX) = 0;
        TT_REG(TXD_PTR) = (uint32_t)tx_buf_;
        TT_REG(TXD_MAXCNT) = k;
        TT_REG(TASKS_STARTTX) = 1u;
        while (!TT_REG(EVENTS_ENDTX)) {}
        buf += k;
        n -= k;
    }
}

int port_read(void)
{
    int b;
    if (!TT_REG(EVENTS_ENDRX)) return -1;
    TT_REG(EVENTS_ENDRX) = 0;
    b = rx_byte_;
    TT_REG(TASKS_STARTRX) = 1u;
    return b;
}
