/* INA219/INA226 power bridge for an STM32F411 ("Black Pill"), register level, no HAL.
 *
 * I2C1 (PB8 SCL, PB9 SDA, 400 kHz) reads the chip's shunt- and bus-voltage registers every
 * SAMPLE_PERIOD_US (TIM2, 1 MHz free-running: also the frame timestamp clock); USART2 (PA2 TX,
 * 1 Mbaud 8N1 (exact from 16 MHz), to a USB-serial bridge) streams protocol-v1 frames: HELLO at boot, then
 * POWER_SAMPLES with SAMPLES_PER_FRAME raw register pairs. Transmission is interrupt-driven
 * from a ring buffer, so sampling never waits for the UART; when the ring is full a frame is
 * dropped whole and the next frame's first_index jumps (the host records the gap).
 * The chip is configured for its fastest conversion (INA226: 140 us shunt + bus, no
 * averaging; INA219: 9-bit, 84 us each) in continuous shunt + bus mode, and its calibration
 * register is programmed so its own current register is valid too.
 * Build: make (arm-none-eabi-gcc). Chip: make CHIP=INA219. Clock: 16 MHz HSI (reset default).
 */
#include <stdint.h>
#include "wire.h"

#ifndef CHIP
#define CHIP TT_CHIP_INA226
#endif
#define INA_ADDR 0x40u
#define SAMPLE_PERIOD_US 280u
#define SAMPLES_PER_FRAME 50u
#define CPU_HZ 16000000u
#define BAUD 1000000u
#define SHUNT_MILLIOHM 100u
#define CURRENT_LSB_UA 100u /* calibration register: current LSB of 100 uA */

#define REG(addr) (*(volatile uint32_t *)(addr))
#define RCC_AHB1ENR REG(0x40023830u)
#define RCC_APB1ENR REG(0x40023840u)
#define GPIOA 0x40020000u
#define GPIOB 0x40020400u
#define GPIO_MODER(p) REG((p) + 0x00u)
#define GPIO_OTYPER(p) REG((p) + 0x04u)
#define GPIO_OSPEEDR(p) REG((p) + 0x08u)
#define GPIO_PUPDR(p) REG((p) + 0x0Cu)
#define GPIO_AFRL(p) REG((p) + 0x20u)
#define GPIO_AFRH(p) REG((p) + 0x24u)
#define I2C1 0x40005400u
#define I2C_CR1 REG(I2C1 + 0x00u)
#define I2C_CR2 REG(I2C1 + 0x04u)
#define I2C_DR REG(I2C1 + 0x10u)
#define I2C_SR1 REG(I2C1 + 0x14u)
#define I2C_SR2 REG(I2C1 + 0x18u)
#define I2C_CCR REG(I2C1 + 0x1Cu)
#define I2C_TRISE REG(I2C1 + 0x20u)
#define USART2 0x40004400u
#define USART_SR REG(USART2 + 0x00u)
#define USART_DR REG(USART2 + 0x04u)
#define USART_BRR REG(USART2 + 0x08u)
#define USART_CR1 REG(USART2 + 0x0Cu)
#define TIM2 0x40000000u
#define TIM_CR1 REG(TIM2 + 0x00u)
#define TIM_EGR REG(TIM2 + 0x14u)
#define TIM_CNT REG(TIM2 + 0x24u)
#define TIM_PSC REG(TIM2 + 0x28u)
#define TIM_ARR REG(TIM2 + 0x2Cu)
#define NVIC_ISER1 REG(0xE000E104u)

#define SR1_SB (1u << 0)
#define SR1_ADDR (1u << 1)
#define SR1_BTF (1u << 2)
#define SR1_RXNE (1u << 6)
#define SR1_TXE (1u << 7)
#define SR1_AF (1u << 10)
#define CR1_PE (1u << 0)
#define CR1_START (1u << 8)
#define CR1_STOP (1u << 9)
#define CR1_ACK (1u << 10)
#define CR1_POS (1u << 11)

/* ---- transmit ring (filled by main, drained by the USART2 interrupt) ------------------ */
#define RING 4096u
static volatile uint8_t ring[RING];
static volatile uint32_t ring_head, ring_tail; /* head: write (main), tail: read (irq) */

static uint32_t ring_free(void) { return RING - 1u - ((ring_head - ring_tail) & (RING - 1u)); }

static int ring_put(const uint8_t *p, uint32_t n)
{
    if (ring_free() < n) return 0;
    uint32_t h = ring_head;
    for (uint32_t i = 0; i < n; i++) ring[(h + i) & (RING - 1u)] = p[i];
    ring_head = (h + n) & (RING - 1u);
    USART_CR1 |= (1u << 7); /* TXEIE */
    return 1;
}

void USART2_IRQHandler(void)
{
    if (USART_SR & (1u << 7)) {
        if (ring_tail != ring_head) {
            USART_DR = ring[ring_tail];
            ring_tail = (ring_tail + 1u) & (RING - 1u);
        } else {
            USART_CR1 &= ~(1u << 7);
        }
    }
}

/* ---- I2C ---------------------------------------------------------------------------- */
static uint32_t i2c_errors;

static int wait_sr1(uint32_t mask)
{
    for (uint32_t n = 0; n < 20000u; n++) {
        uint32_t sr = I2C_SR1;
        if (sr & SR1_AF) { I2C_SR1 = ~SR1_AF; I2C_CR1 |= CR1_STOP; return 0; }
        if (sr & mask) return 1;
    }
    I2C_CR1 |= CR1_STOP;
    return 0;
}

static int ina_write(uint8_t reg, uint16_t value)
{
    I2C_CR1 |= CR1_START;
    if (!wait_sr1(SR1_SB)) return 0;
    I2C_DR = INA_ADDR << 1;
    if (!wait_sr1(SR1_ADDR)) return 0;
    (void)I2C_SR2;
    I2C_DR = reg;
    if (!wait_sr1(SR1_TXE)) return 0;
    I2C_DR = value >> 8;
    if (!wait_sr1(SR1_TXE)) return 0;
    I2C_DR = value & 0xFFu;
    if (!wait_sr1(SR1_BTF)) return 0;
    I2C_CR1 |= CR1_STOP;
    return 1;
}

/* Register pointer write, repeated start, two-byte read (RM0383 "2-byte reception"). */
static int ina_read(uint8_t reg, uint16_t *value)
{
    I2C_CR1 |= CR1_START | CR1_ACK;
    if (!wait_sr1(SR1_SB)) return 0;
    I2C_DR = INA_ADDR << 1;
    if (!wait_sr1(SR1_ADDR)) return 0;
    (void)I2C_SR2;
    I2C_DR = reg;
    if (!wait_sr1(SR1_BTF)) return 0;
    I2C_CR1 |= CR1_START;
    if (!wait_sr1(SR1_SB)) return 0;
    I2C_DR = (INA_ADDR << 1) | 1u;
    I2C_CR1 |= CR1_POS;
    I2C_CR1 &= ~CR1_ACK;
    if (!wait_sr1(SR1_ADDR)) { I2C_CR1 &= ~CR1_POS; return 0; }
    (void)I2C_SR2;
    if (!wait_sr1(SR1_BTF)) { I2C_CR1 &= ~CR1_POS; return 0; }
    I2C_CR1 |= CR1_STOP;
    uint16_t hi = (uint16_t)I2C_DR;
    uint16_t lo = (uint16_t)I2C_DR;
    I2C_CR1 &= ~CR1_POS;
    *value = (uint16_t)((hi << 8) | lo);
    return 1;
}

/* ---- setup -------------------------------------------------------------------------- */
static void setup(void)
{
    RCC_AHB1ENR |= (1u << 0) | (1u << 1);              /* GPIOA, GPIOB */
    RCC_APB1ENR |= (1u << 0) | (1u << 17) | (1u << 21); /* TIM2, USART2, I2C1 */
    /* PA2 / PA3: AF7 (USART2) */
    GPIO_MODER(GPIOA) = (GPIO_MODER(GPIOA) & ~(0xFu << 4)) | (0xAu << 4);
    GPIO_AFRL(GPIOA) = (GPIO_AFRL(GPIOA) & ~(0xFFu << 8)) | (0x77u << 8);
    GPIO_OSPEEDR(GPIOA) |= (0xFu << 4);
    /* PB8 / PB9: AF4 (I2C1), open drain, pull-up */
    GPIO_MODER(GPIOB) = (GPIO_MODER(GPIOB) & ~(0xFu << 16)) | (0xAu << 16);
    GPIO_OTYPER(GPIOB) |= (3u << 8);
    GPIO_PUPDR(GPIOB) = (GPIO_PUPDR(GPIOB) & ~(0xFu << 16)) | (0x5u << 16);
    GPIO_AFRH(GPIOB) = (GPIO_AFRH(GPIOB) & ~0xFFu) | 0x44u;
    /* I2C1 fast mode 400 kHz from PCLK1 = 16 MHz: CCR = 16e6 / (3 * 400e3) -> 14 */
    I2C_CR1 = 0;
    I2C_CR2 = 16u;
    I2C_CCR = (1u << 15) | 14u;
    I2C_TRISE = 16u * 300u / 1000u + 1u;
    I2C_CR1 = CR1_PE;
    /* USART2 1 Mbaud 8N1: BRR = f_PCLK1 / baud = 16 exactly (USARTDIV 1.0, 0% error) */
    USART_BRR = (CPU_HZ + BAUD / 2u) / BAUD;
    USART_CR1 = (1u << 13) | (1u << 3); /* UE, TE */
    NVIC_ISER1 = 1u << (38u - 32u);     /* USART2 IRQ */
    /* TIM2: 1 MHz free-running 32-bit counter */
    TIM_PSC = CPU_HZ / 1000000u - 1u;
    TIM_ARR = 0xFFFFFFFFu;
    TIM_EGR = 1u;
    TIM_CR1 = 1u;
}

static void setup_ina(void)
{
    if (CHIP == TT_CHIP_INA226) {
        ina_write(0x00, 0x4007);     /* AVG=1, VBUSCT=VSHCT=140 us, shunt+bus continuous */
        /* CAL = 0.00512 / (Current_LSB * R_shunt) */
        ina_write(0x05, (uint16_t)(5120000000ull / ((uint64_t)CURRENT_LSB_UA * SHUNT_MILLIOHM * 1000u)));
    } else {
        ina_write(0x00, 0x3807);     /* BRNG=32 V, PGA /8, 9-bit ADCs, shunt+bus continuous */
        /* CAL = 0.04096 / (Current_LSB * R_shunt) */
        ina_write(0x05, (uint16_t)(40960000000ull / ((uint64_t)CURRENT_LSB_UA * SHUNT_MILLIOHM * 1000u)));
    }
}

/* ---- main loop ---------------------------------------------------------------------- */
static uint8_t payload[TT_MAX_PAYLOAD];
static uint8_t wire[BRIDGE_MAX_WIRE];

int main(void)
{
    setup();
    setup_ina();
    uint16_t seq = 0;
    const uint8_t zero = 0;
    ring_put(&zero, 1); /* flush any partial frame at the receiver */
    const tt_hello hello = {
        .cpu_hz = CPU_HZ, .tick_hz = 1000000u, .ram_bytes = 131072u, .flash_bytes = 524288u,
        .platform = "stm32f411", .firmware_version = "ina-bridge 0.1", .model_name = "",
    };
    size_t n = tt_pack_hello(payload, &hello);
    ring_put(wire, (uint32_t)bridge_frame(TT_HELLO, seq++, TIM_CNT, payload, n, wire));

    int16_t shunt[SAMPLES_PER_FRAME];
    uint16_t bus[SAMPLES_PER_FRAME];
    uint32_t index = 0, filled = 0, first = 0;
    uint32_t next = TIM_CNT;
    for (;;) {
        while ((int32_t)(TIM_CNT - next) < 0) { }
        next += SAMPLE_PERIOD_US;
        uint16_t s = 0, b = 0;
        if (!ina_read(0x01, &s) || !ina_read(0x02, &b)) i2c_errors++;
        if (filled == 0) first = index;
        shunt[filled] = (int16_t)s;
        bus[filled] = b;
        filled++;
        index++;
        if (filled == SAMPLES_PER_FRAME) {
            n = tt_pack_power_samples(payload, first, SAMPLE_PERIOD_US * 1000u, CHIP,
                                      (uint8_t)filled, shunt, bus);
            size_t w = bridge_frame(TT_POWER_SAMPLES, seq++, TIM_CNT, payload, n, wire);
            (void)ring_put(wire, (uint32_t)w); /* full: dropped; the index jump tells the host */
            filled = 0;
        }
    }
}

/* ---- startup: vector table, .data copy, .bss zero ----------------------------------- */
extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;

void Reset_Handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    main();
    for (;;) { }
}

void Default_Handler(void) { for (;;) { } }

__attribute__((section(".isr_vector"), used))
void (*const vectors[16 + 39])(void) = {
    [0] = (void (*)(void))&_estack,
    [1] = Reset_Handler,
    [2 ... 15] = Default_Handler,
    [16 ... 53] = Default_Handler,
    [16 + 38] = USART2_IRQHandler,
};
