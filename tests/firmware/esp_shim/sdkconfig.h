/* Host shim of ESP-IDF's generated sdkconfig.h: the values sdkconfig.defaults selects. */
#ifndef SHIM_SDKCONFIG_H
#define SHIM_SDKCONFIG_H
#define CONFIG_IDF_TARGET "esp32s3"
#define CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ 240
#define CONFIG_ESP_MAIN_TASK_STACK_SIZE 16384
#define CONFIG_FREERTOS_HZ 1000
/* The link (CONFIG_TT_LINK_USB_SERIAL_JTAG or CONFIG_TT_LINK_UART0) comes from -D. */
#if CONFIG_TT_LINK_UART0
#define CONFIG_TT_UART_BAUD 921600
#endif
#endif
