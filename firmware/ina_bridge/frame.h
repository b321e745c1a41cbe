/* Protocol-v1 frame encoder for the INA bridge (docs/protocol.md): header, payload, CRC-32,
 * COBS, 0x00 delimiter. Portable C99, no allocation, so the same file builds for the MCU and
 * for the host test that checks it against the golden vectors. */
#ifndef INA_BRIDGE_FRAME_H
#define INA_BRIDGE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define TT_VERSION 1u
#define TT_HELLO 0x01u
#define TT_POWER_SAMPLES 0x0Eu
#define TT_MAX_PAYLOAD 1024u
#define TT_MAX_WIRE (8u + TT_MAX_PAYLOAD + 4u + (8u + TT_MAX_PAYLOAD + 4u) / 254u + 2u)
#define TT_CHIP_INA219 0u
#define TT_CHIP_INA226 1u
#define TT_MAX_POWER_SAMPLES 253u

uint32_t tt_crc32(const uint8_t *buf, size_t n);
size_t tt_cobs_encode(const uint8_t *src, size_t n, uint8_t *dst);
/* Encode one frame (type, seq, ticks, payload) into wire bytes; returns the byte count. */
size_t tt_encode_frame(uint8_t type, uint16_t seq, uint32_t ticks, const uint8_t *payload,
                       size_t n, uint8_t *wire);
/* POWER_SAMPLES payload from register pairs; returns its length (0 if count is too big). */
size_t tt_power_payload(uint32_t first_index, uint32_t period_ns, uint8_t chip,
                        const int16_t *shunt, const uint16_t *bus, uint8_t count,
                        uint8_t *out);
/* HELLO payload; strings are NUL-terminated and at most 255 bytes. */
size_t tt_hello_payload(uint32_t cpu_hz, uint32_t tick_hz, uint32_t ram, uint32_t flash,
                        const char *platform, const char *fw_version, uint8_t *out);

#endif
