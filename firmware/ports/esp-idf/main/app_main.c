/* ESP-IDF entry point: the device core runs on the main task and never returns. */
#include "tt_device.h"

void app_main(void);

void app_main(void) { tt_device_main(); }
