/* Host build of the frame encoder: prints the wire bytes of the golden POWER_SAMPLES vector
 * (tests/vectors/protocol_v1.json, frame "power_samples") as hex, for tests/sensors. */
#include <stdio.h>
#include "frame.h"

int main(void)
{
    static uint8_t payload[TT_MAX_PAYLOAD], wire[TT_MAX_WIRE];
    const int16_t shunt[3] = {1200, -3, 32767};
    const uint16_t bus[3] = {2640, 2641, 0xFFFF};
    size_t n = tt_power_payload(1000, 280000, TT_CHIP_INA226, shunt, bus, 3, payload);
    size_t w = tt_encode_frame(TT_POWER_SAMPLES, 16, 11000, payload, n, wire);
    for (size_t i = 0; i < w; i++) printf("%02x", wire[i]);
    printf("\n");
    return 0;
}
