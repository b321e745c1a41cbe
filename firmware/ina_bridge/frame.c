#include "frame.h"

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

uint32_t tt_crc32(const uint8_t *buf, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= buf[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

size_t tt_cobs_encode(const uint8_t *src, size_t n, uint8_t *dst)
{
    size_t code_at = 0, out = 1;
    uint8_t code = 1;
    for (size_t i = 0; i < n; i++) {
        if (src[i] != 0) { dst[out++] = src[i]; code++; }
        if (src[i] == 0 || code == 0xFF) {
            dst[code_at] = code; code = 1; code_at = out;
            if (src[i] == 0 || i + 1 < n) out++;
        }
    }
    dst[code_at] = code;
    return out;
}

size_t tt_encode_frame(uint8_t type, uint16_t seq, uint32_t ticks, const uint8_t *payload,
                       size_t n, uint8_t *wire)
{
    static uint8_t body[8u + TT_MAX_PAYLOAD + 4u];
    if (n > TT_MAX_PAYLOAD) return 0;
    body[0] = TT_VERSION;
    body[1] = type;
    put_u16(body + 2, seq);
    put_u32(body + 4, ticks);
    for (size_t i = 0; i < n; i++) body[8 + i] = payload[i];
    put_u32(body + 8 + n, tt_crc32(body, 8 + n));
    size_t len = tt_cobs_encode(body, 8 + n + 4, wire);
    wire[len++] = 0x00;
    return len;
}

size_t tt_power_payload(uint32_t first_index, uint32_t period_ns, uint8_t chip,
                        const int16_t *shunt, const uint16_t *bus, uint8_t count, uint8_t *out)
{
    if (count > TT_MAX_POWER_SAMPLES) return 0;
    put_u32(out, first_index);
    put_u32(out + 4, period_ns);
    out[8] = chip;
    out[9] = count;
    for (unsigned k = 0; k < count; k++) {
        put_u16(out + 10 + 4 * k, (uint16_t)shunt[k]);
        put_u16(out + 12 + 4 * k, bus[k]);
    }
    return 10u + 4u * count;
}

static size_t put_str(uint8_t *p, const char *s)
{
    size_t n = 0;
    while (s[n] && n < 255) { p[1 + n] = (uint8_t)s[n]; n++; }
    p[0] = (uint8_t)n;
    return n + 1;
}

size_t tt_hello_payload(uint32_t cpu_hz, uint32_t tick_hz, uint32_t ram, uint32_t flash,
                        const char *platform, const char *fw_version, uint8_t *out)
{
    put_u32(out, cpu_hz);
    put_u32(out + 4, tick_hz);
    put_u32(out + 8, ram);
    put_u32(out + 12, flash);
    put_u32(out + 16, 0);      /* psram */
    put_u32(out + 20, 0);      /* capabilities */
    for (int i = 0; i < 32; i++) out[24 + i] = 0;  /* no model */
    size_t n = 56;
    n += put_str(out + n, platform);
    n += put_str(out + n, fw_version);
    n += put_str(out + n, "");
    return n;
}
