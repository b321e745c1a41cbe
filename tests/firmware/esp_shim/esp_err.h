/* Host shim of ESP-IDF's esp_err.h (only what the tinytelem port uses). */
#ifndef SHIM_ESP_ERR_H
#define SHIM_ESP_ERR_H
#include <stdlib.h>
typedef int esp_err_t;
#define ESP_OK 0
#define ESP_FAIL -1
#define ESP_ERROR_CHECK(x) do { if ((x) != ESP_OK) abort(); } while (0)
#endif
