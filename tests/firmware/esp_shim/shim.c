/*
 * Host implementation of the ESP-IDF calls the tinytelem port makes, so the real
 * firmware/ports/esp-idf/main/port_esp.c runs as a process speaking the protocol on stdin/stdout.
 * Writes are cut into short pieces to exercise the port's partial-write loop; the driver
 * configuration the port chose is reported on stderr for the test to check.
 */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "driver/uart.h"
#include "driver/usb_serial_jtag.h"
#include "esp_flash.h"
#include "esp_heap_caps.h"
#include "esp_timer.h"
#include "freertos/task.h"

#define SHIM_STACK_FREE 12000u
#define SHIM_WRITE_PIECE 7u

void app_main(void);
static struct timespec t0_;

int64_t esp_timer_get_time(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)(t.tv_sec - t0_.tv_sec) * 1000000 + (t.tv_nsec - t0_.tv_nsec) / 1000;
}

esp_err_t esp_flash_get_size(esp_flash_t *chip, uint32_t *out_size)
{
    (void)chip;
    *out_size = 8u << 20;
    return ESP_OK;
}

size_t heap_caps_get_total_size(uint32_t caps)
{
    return (caps & MALLOC_CAP_SPIRAM) ? (size_t)8u << 20 : (size_t)400u << 10;
}

void vTaskDelay(TickType_t ticks)
{
    struct pollfd p = {0, POLLIN, 0};
    (void)poll(&p, 1, (int)ticks);
}

UBaseType_t uxTaskGetStackHighWaterMark(TaskHandle_t task)
{
    (void)task;
    return SHIM_STACK_FREE;
}

static int write_piece(const void *src, size_t size)
{
    ssize_t w = write(1, src, size < SHIM_WRITE_PIECE ? size : SHIM_WRITE_PIECE);
    if (w < 0) exit(1);
    return (int)w;
}

static int read_one(void *buf, uint32_t length)
{
    struct pollfd p = {0, POLLIN, 0};
    ssize_t r;
    if (length == 0 || poll(&p, 1, 0) <= 0) return 0;
    r = read(0, buf, 1);
    if (r <= 0) exit(0); /* the host closed the link */
    return 1;
}

esp_err_t uart_driver_install(uart_port_t uart_num, int rx_buffer_size, int tx_buffer_size,
                              int queue_size, QueueHandle_t *uart_queue, int intr_alloc_flags)
{
    (void)queue_size, (void)uart_queue, (void)intr_alloc_flags;
    fprintf(stderr, "uart%d driver rx %d tx %d\n", uart_num, rx_buffer_size, tx_buffer_size);
    return ESP_OK;
}

esp_err_t uart_param_config(uart_port_t uart_num, const uart_config_t *c)
{
    fprintf(stderr, "uart%d %d baud data %d parity %d stop %d flow %d\n", uart_num, c->baud_rate,
            c->data_bits, c->parity, c->stop_bits, c->flow_ctrl);
    return ESP_OK;
}

int uart_write_bytes(uart_port_t uart_num, const void *src, size_t size)
{
    (void)uart_num;
    return write_piece(src, size);
}

int uart_read_bytes(uart_port_t uart_num, void *buf, uint32_t length, TickType_t ticks_to_wait)
{
    (void)uart_num, (void)ticks_to_wait;
    return read_one(buf, length);
}

esp_err_t usb_serial_jtag_driver_install(usb_serial_jtag_driver_config_t *config)
{
    fprintf(stderr, "usb-serial-jtag driver rx %u tx %u\n", (unsigned)config->rx_buffer_size,
            (unsigned)config->tx_buffer_size);
    return ESP_OK;
}

int usb_serial_jtag_write_bytes(const void *src, size_t size, TickType_t ticks_to_wait)
{
    (void)ticks_to_wait;
    return write_piece(src, size);
}

int usb_serial_jtag_read_bytes(void *buf, uint32_t length, TickType_t ticks_to_wait)
{
    (void)ticks_to_wait;
    return read_one(buf, length);
}

int main(void)
{
    clock_gettime(CLOCK_MONOTONIC, &t0_);
    app_main();
    return 0;
}
