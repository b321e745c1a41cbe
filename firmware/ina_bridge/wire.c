#include "wire.h"

typedef struct { uint8_t *buf; size_t len; } wire_buf;

static void append(void *ctx, const uint8_t *src, size_t n)
{
    wire_buf *w = ctx;
    for (size_t i = 0; i < n; i++) w->buf[w->len + i] = src[i];
    w->len += n;
}

size_t bridge_frame(uint8_t type, uint16_t seq, uint32_t ticks, const uint8_t *payload,
                    size_t n, uint8_t *wire)
{
    static uint8_t work[TT_MAX_FRAME];
    wire_buf w = {wire, 0};
    const tt_sink sink = {append, &w};
    if (tt_frame_write(work, type, seq, ticks, payload, n, &sink) == 0) return 0;
    return w.len;
}
