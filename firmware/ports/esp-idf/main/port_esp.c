/*
 * ESP32 / ESP32-S3 port (ESP-IDF >= 5.0): tt_port.h on the IDF drivers.
 *
 * Link: the chip's USB-Serial-JTAG (/dev/ttyACM0 on the host) or UART0 at CONFIG_TT_UART_BAUD
 * (921600 by default), chosen in menuconfig ("tinytelem"). Clock: esp_timer, 1 MHz, 64-bit
 * since boot (port_ticks sends its low 32 bits). Cycles are derived from it at the fixed CPU
 * clock (sdkconfig.defaults turns dynamic frequency scaling off). Stack: the FreeRTOS high-water
 * mark of the task running the core (the main task).
 */
#include <stdint.h>
#include <string.h>

#include "esp_err.h"
#include "esp_flash.h"
#include "esp_heap_caps.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "sdkconfig.h"

#if CONFIG_TT_LINK_USB_SERIAL_JTAG
#include "driver/usb_serial_jtag.h"
#else
#include "driver/uart.h"
#endif

#include "tt_port.h"

#ifdef CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ
#define TT_CPU_MHZ CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ
#else
#define TT_CPU_MHZ 160
#endif
#ifndef CONFIG_TT_UART_BAUD
#define CONFIG_TT_UART_BAUD 921600
#endif
#define TT_LINK_RX_BUF 1024
#define TT_LINK_TX_BUF 4096

static tt_port_info info_ = {CONFIG_IDF_TARGET, TT_CPU_MHZ * 1000000u, 1000000u, 0, 0, 0};

static void link_init(void)
{
#if CONFIG_TT_LINK_USB_SERIAL_JTAG
    usb_serial_jtag_driver_config_t cfg = USB_SERIAL_JTAG_DRIVER_CONFIG_DEFAULT();
    cfg.rx_buffer_size = TT_LINK_RX_BUF;
    cfg.tx_buffer_size = TT_LINK_TX_BUF;
    ESP_ERROR_CHECK(usb_serial_jtag_driver_install(&cfg));
#else
    uart_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.baud_rate = CONFIG_TT_UART_BAUD;
    cfg.data_bits = UART_DATA_8_BITS;
    cfg.parity = UART_PARITY_DISABLE;
    cfg.stop_bits = UART_STOP_BITS_1;
    cfg.flow_ctrl = UART_HW_FLOWCTRL_DISABLE;
    cfg.source_clk = UART_SCLK_DEFAULT;
    ESP_ERROR_CHECK(uart_driver_install(UART_NUM_0, TT_LINK_RX_BUF, TT_LINK_TX_BUF, 0, NULL, 0));
    ESP_ERROR_CHECK(uart_param_config(UART_NUM_0, &cfg));
#endif
}

void port_init(void)
{
    uint32_t flash = 0;
    link_init();
    if (esp_flash_get_size(NULL, &flash) == ESP_OK) info_.flash_bytes = flash;
    info_.ram_bytes = (uint32_t)heap_caps_get_total_size(MALLOC_CAP_INTERNAL);
    info_.psram_bytes = (uint32_t)heap_caps_get_total_size(MALLOC_CAP_SPIRAM);
}

const tt_port_info *port_info(void) { return &info_; }

void port_write(const uint8_t *buf, size_t n)
{
    /* Blocking: the driver copies into its ring buffer and waits only when that is full. */
    while (n) {
#if CONFIG_TT_LINK_USB_SERIAL_JTAG
        int w = usb_serial_jtag_write_bytes(buf, n, portMAX_DELAY);
#else
        int w = uart_write_bytes(UART_NUM_0, buf, n);
#endif
        if (w <= 0) continue;
        buf += w;
        n -= (size_t)w;
    }
}

int port_read(void)
{
    uint8_t b;
#if CONFIG_TT_LINK_USB_SERIAL_JTAG
    int r = usb_serial_jtag_read_bytes(&b, 1, 0);
#else
    int r = uart_read_bytes(UART_NUM_0, &b, 1, 0);
#endif
    return r == 1 ? (int)b : -1;
}

uint32_t port_ticks(void) { return (uint32_t)esp_timer_get_time(); }
uint64_t port_cycles(void) { return (uint64_t)esp_timer_get_time() * TT_CPU_MHZ; }
uint64_t port_instructions(void) { return UINT64_MAX; }
uint32_t port_uptime_ms(void) { return (uint32_t)(esp_timer_get_time() / 1000); }

uint32_t port_stack_peak(void)
{
    /* ESP-IDF's FreeRTOS counts stack in bytes; the core runs on the main task. */
    UBaseType_t free_bytes = uxTaskGetStackHighWaterMark(NULL);
    uint32_t size = CONFIG_ESP_MAIN_TASK_STACK_SIZE;
    return free_bytes < size ? size - (uint32_t)free_bytes : 0u;
}

void port_align(void) {}

/* The driver drains its ring buffer by itself (interrupt-driven); nothing is held back here. */
void port_flush(void) {}

/* Yield one scheduler tick: the idle task runs (and feeds the watchdog) between commands. */
void port_idle(void) { vTaskDelay(1); }

int port_new_connection(void) { return 0; }
