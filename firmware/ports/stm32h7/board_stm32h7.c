/*
 * STM32H743 (Cortex-M7): USART3 on PD8/PD9 (the Nucleo-H743ZI virtual COM port), core at the
 * 64 MHz HSI after reset (TT_CPU_HZ changes it when a board sets up the PLL). Compile-checked.
 */
#include "cortexm.h"
#include "tt_port.h"

#ifndef TT_CPU_HZ
#define TT_CPU_HZ 64000000u
#endif
#ifndef TT_BAUD
#define TT_BAUD 921600u
#endif
#define RCC_AHB4ENR 0x580244E0u
#define RCC_APB1LENR 0x580244E8u
#define GPIOD_MODER 0x58020C00u
#define GPIOD_AFRH 0x58020C24u
#define USART3 0x40004800u
#define USART_CR1 (USART3 + 0x00u)
#define USART_BRR (USART3 + 0x0Cu)
#define USART_ISR (USART3 + 0x1Cu)
#define USART_RDR (USART3 + 0x24u)
#define USART_TDR (USART3 + 0x28u)
#define ISR_RXNE (1u << 5)
#define ISR_TXE (1u << 7)

static const tt_port_info info_ = {"stm32h7", TT_CPU_HZ, TT_CPU_HZ, 1u << 20, 2u << 20, 0};

void port_init(void)
{
    TT_REG(RCC_AHB4ENR) |= 1u << 3;   /* GPIOD */
    TT_REG(RCC_APB1LENR) |= 1u << 18; /* USART3 */
    TT_REG(GPIOD_MODER) = (TT_REG(GPIOD_MODER) & ~(0xFu << 16)) | (0xAu << 16);
    TT_REG(GPIOD_AFRH) = (TT_REG(GPIOD_AFRH) & ~0xFFu) | 0x77u;
    TT_REG(USART_BRR) = (TT_CPU_HZ + TT_BAUD / 2u) / TT_BAUD;
    TT_REG(USART_CR1) = (1u << 0) | (1u << 2) | (1u << 3); /* UE, RE, TE */
    cm_systick_start(TT_CPU_HZ);
}

const tt_port_info *port_info(void) { return &info_; }

void port_write(const uint8_t *buf, size_t n)
{
    while (n--) {
        while (!(TT_REG(USART_ISR) & ISR_TXE)) {}
        TT_REG(USART_TDR) = *buf++;
    }
}

int port_read(void)
{
    if (!(TT_REG(USART_ISR) & ISR_RXNE)) return -1;
    return (int)(TT_REG(USART_RDR) & 0xFFu);
}
