/* Host shim of FreeRTOS.h as ESP-IDF configures it (stack sizes in bytes). */
#ifndef SHIM_FREERTOS_H
#define SHIM_FREERTOS_H
#include <stdint.h>
typedef uint32_t TickType_t;
typedef unsigned int UBaseType_t;
typedef void *TaskHandle_t;
typedef void *QueueHandle_t;
#define portMAX_DELAY ((TickType_t)0xFFFFFFFFu)
#endif
