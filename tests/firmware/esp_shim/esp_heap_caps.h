/* Host shim of ESP-IDF's esp_heap_caps.h. */
#ifndef SHIM_ESP_HEAP_CAPS_H
#define SHIM_ESP_HEAP_CAPS_H
#include <stddef.h>
#include <stdint.h>
#define MALLOC_CAP_SPIRAM (1u << 10)
#define MALLOC_CAP_INTERNAL (1u << 11)
size_t heap_caps_get_total_size(uint32_t caps);
#endif
