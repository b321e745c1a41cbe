/* Host shim of ESP-IDF's esp_timer.h: microseconds since start (CLOCK_MONOTONIC). */
#ifndef SHIM_ESP_TIMER_H
#define SHIM_ESP_TIMER_H
#include <stdint.h>
int64_t esp_timer_get_time(void);
#endif
