/* Entry for bare-metal ports (the native port has its own main with options). */
#include "tt_device.h"

int main(void)
{
    tt_device_main();
    return 0;
}
