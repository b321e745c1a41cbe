/*
 * STM32F405 (QEMU netduinoplus2): USART1 at 0x40011000 on PA9/PA10, core at 168 MHz in QEMU.
 * On real silicon the chip boots from the 16 MHz HSI; a board that sets up the PLL changes
 * TT_CPU_HZ (and the BRR value follows).
 */
#include "cortexm.h"
#include "tt_port.h"

#ifndef TT_CPU_HZ
#define TT_CPU_HZ 168000000u
#endif
#ifndef TT_BAUD
#define TT_BAUD 921600u
#endif

#define RCC_AHB1ENR 0x40023830u
#define RCC_APB2ENR 0x40023844u
#define GPIOA_MODER 0x40020000u
#define GPIOA_AFRH 0x40020024u
#define USART1 0x40011000u
#define USART_SR (USART1 + 0x00u)
#define USART_DR (USART1 + 0x04u)
#define USART_BRR (USART1 + 0x08u)
#define USART_CR1 (USART1 + 0x0Cu)
#define SR_RXNE (1u << 5)
#define SR_TXE (1u << 7)
#define CR1_UE (1u << 13)
#define CR1_TE (1u << 3)
#define CR1_RE (1u << 2)

static const tt_port_info info_ = {"stm32f405", TT_CPU_HZ, TT_CPU_HZ, 192u << 10, 1u << 20, 0};

void port_init(void)
{
    TT_REG(RCC_AHB1ENR) |= 1u;        /* GPIOA */
    TT_REG(RCC_APB2ENR) |= 1u << 4;   /* USART1 */
    TT_REG(GPIOA_MODER) = (TT_REG(GPIOA_MODER) & ~(0xFu << 18)) | (0xAu << 18); /* PA9/10 AF */
    TT_REG(GPIOA_AFRH) = (TT_REG(GPIOA_AFRH) & ~0xFF0u) | 0x770u;               /* AF7 */
    TT_REG(USART_BRR) = (TT_CPU_HZ / 2u + TT_BAUD / 2u) / TT_BAUD;             /* APB2 = HCLK/2 */
    TT_REG(USART_CR1) = CR1_UE | CR1_TE | CR1_RE;
    cm_systick_start(TT_CPU_HZ);
}

const tt_port_info *port_info(void) { return &info_; }

void port_write(const uint8_t *buf, size_t n)
{
    while (n--) {
        while (!(TT_REG(USART_SR) & SR_TXE)) {}
        TT_REG(USART_DR) = *buf++;
    }
}

int port_read(void)
{
    if (!(TT_REG(USART_SR) & SR_RXNE)) return -1;
    return (int)(TT_REG(USART_DR) & 0xFFu);
}
