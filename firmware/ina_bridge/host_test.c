/* Host build of the bridge's framing: prints the wire bytes of the golden POWER_SAMPLES vector
 * (tests/vectors/protocol_v1.json, frame "power_samples") as hex, for tests/sensors. */
#include <stdio.h>
#include "wire.h"

int main(void)
{
    static uint8_t payload[TT_MAX_PAYLOAD], wire[BRIDGE_MAX_WIRE];
    const int16_t shunt[3] = {1200, -3, 32767};
    const uint16_t bus[3] = {2640, 2641, 0xFFFF};
    size_t n = tt_pack_power_samples(payload, 1000, 280000, TT_CHIP_INA226, 3, shunt, bus);
    size_t w = bridge_frame(TT_POWER_SAMPLES, 16, 11000, payload, n, wire);
    for (size_t i = 0; i < w; i++) printf("%02x", wire[i]);
    printf("\n");
    return 0;
}
