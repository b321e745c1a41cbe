/* Protocol-v1 frames for the INA bridge, through the firmware's one encoder
 * (telemetry/tt_proto.c): each frame is encoded whole into a buffer first, so the UART ring
 * can take or drop it as a unit. */
#ifndef INA_BRIDGE_WIRE_H
#define INA_BRIDGE_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include "tt_proto.h"

/* POWER_SAMPLES chip codes (docs/protocol.md, PowerChip). */
#define TT_CHIP_INA219 0u
#define TT_CHIP_INA226 1u

/* Largest frame on the wire: COBS-stuffed header + payload + CRC, and the 0x00 delimiter. */
#define BRIDGE_MAX_WIRE (TT_MAX_ENCODED + 1u)

/* Encode one frame into wire[BRIDGE_MAX_WIRE]; returns its length (0: payload too large). */
size_t bridge_frame(uint8_t type, uint16_t seq, uint32_t ticks, const uint8_t *payload,
                    size_t n, uint8_t *wire);

#endif
