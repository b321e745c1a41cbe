/*
 * Arm MPS2 FPGA boards as QEMU models them: AN386 (Cortex-M4F) and AN500 (Cortex-M7).
 * UART0 is a CMSDK APB UART at 0x40004000; the core clock is 25 MHz.
 *
 * The CMSDK UART drops every byte unless CTRL.TXEN is set, and receives only with RXEN.
 */
#include "cortexm.h"
#include "tt_port.h"

#define UART0 0x40004000u
#define UART_DATA (UART0 + 0x00u)
#define UART_STATE (UART0 + 0x04u)
#define UART_CTRL (UART0 + 0x08u)
#define UART_BAUDDIV (UART0 + 0x10u)
#define STATE_TXFULL 1u
#define STATE_RXFULL 2u
#define CTRL_TXEN 1u
#define CTRL_RXEN 2u

#define CPU_HZ 25000000u

#if defined(TT_BOARD_AN500)
static const tt_port_info info_ = {"mps2-an500", CPU_HZ, CPU_HZ, 4u << 20, 4u << 20, 16u << 20};
#else
static const tt_port_info info_ = {"mps2-an386", CPU_HZ, CPU_HZ, 4u << 20, 4u << 20, 16u << 20};
#endif

void port_init(void)
{
    TT_REG(UART_BAUDDIV) = CPU_HZ / 115200u;
    TT_REG(UART_CTRL) = CTRL_TXEN | CTRL_RXEN;
    cm_systick_start(CPU_HZ);
}

const tt_port_info *port_info(void) { return &info_; }

void port_write(const uint8_t *buf, size_t n)
{
    while (n--) {
        while (TT_REG(UART_STATE) & STATE_TXFULL) {}
        TT_REG(UART_DATA) = *buf++;
    }
}

int port_read(void)
{
    if (!(TT_REG(UART_STATE) & STATE_RXFULL)) return -1;
    return (int)(TT_REG(UART_DATA) & 0xFFu);
}
