/* tinytelem wire protocol v1 (see tt_proto.h and docs/protocol.md). */
#include "tt_proto.h"

#include "tt_string.h"

#if defined(__GNUC__)
#define TT_HOT_INLINE static inline __attribute__((always_inline))
#define TT_NOINLINE __attribute__((noinline))
#define TT_COLD static TT_NOINLINE
#define TT_RARE __attribute__((cold)) /* once per boot or per command: optimised for size */
#else
#define TT_HOT_INLINE static inline
#define TT_NOINLINE
#define TT_COLD static
#define TT_RARE
#endif

/* Nibble table: 64 bytes of flash, 2 lookups per byte; a full 1 KiB table buys little for
 * frames of ~20 bytes. */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

/* Not inlined: the frame writer and the command decoder share one copy (flash). */
TT_NOINLINE uint32_t tt_crc32(uint32_t crc, const uint8_t *buf, size_t n)
{
    size_t i;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= buf[i];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
    }
    return ~crc;
}

/* Stuff n bytes into out (at most TT_MAX_ENCODED); returns the stuffed length. Branch-free:
 * the instruction count depends only on n, never on where the zero bytes are, so timestamps
 * taken under an instruction-counting emulator do not depend on the values being sent. Frames
 * under 254 bytes take crc_stuff_small() instead. */
static size_t cobs_stuff(const uint8_t *src, size_t n, uint8_t *out)
{
    size_t i, o = 1u, pos = 0u;
    uint32_t code = 1u;
    for (i = 0; i < n; i++) {
        uint32_t b = src[i];
        uint32_t zm = (uint32_t)0 - (uint32_t)(b == 0u);      /* all ones on a zero byte */
        uint32_t fm;
        out[o] = (uint8_t)b;
        out[pos] = (uint8_t)code;
        pos = (size_t)(((uint32_t)o & zm) | ((uint32_t)pos & ~zm));
        code = (1u & zm) | ((code + 1u) & ~zm);
        o++;
        /* a full 254-byte block ends without consuming a zero: open a new one */
        fm = (uint32_t)0 - (uint32_t)(code == 255u && i + 1u < n);
        out[pos] = (uint8_t)code;
        pos = (size_t)(((uint32_t)o & fm) | ((uint32_t)pos & ~fm));
        o += fm & 1u;
        code = (1u & fm) | (code & ~fm);
    }
    out[pos] = (uint8_t)code;
    return o;
}

/* One buffer for the stuffed frame and its delimiter: a frame leaves in one sink call. */
static uint8_t cobs_out_[TT_MAX_ENCODED + 1u];

size_t tt_cobs_write(const uint8_t *src, size_t n, const tt_sink *sink)
{
    size_t o = cobs_stuff(src, n, cobs_out_);
    sink->write(sink->ctx, cobs_out_, o);
    return o;
}

TT_RARE long tt_cobs_decode(const uint8_t *src, size_t n, uint8_t *dst)
{
    size_t i = 0, out = 0;
    while (i < n) {
        uint8_t code = src[i];
        size_t k;
        if (code == 0 || i + code > n) return -1;
        for (k = 1; k < code; k++) dst[out++] = src[i + k];
        i += code;
        if (code != 0xFFu && i < n) dst[out++] = 0;
    }
    return (long)out;
}

static uint8_t *put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
    return p + 4;
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint8_t *put_str(uint8_t *p, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n > 255u) n = 255u;
    *p++ = (uint8_t)n;
    if (n) memcpy(p, s, n);
    return p + n;
}

static void put_header(uint8_t *frame, uint8_t type, uint16_t seq, uint32_t ticks,
                       const uint8_t *payload, size_t n)
{
    frame[0] = (uint8_t)TT_PROTOCOL_VERSION;
    frame[1] = type;
    put16(frame + 2, seq);
    put32(frame + 4, ticks);
    if (n && frame + TT_HEADER_LEN != payload) memmove(frame + TT_HEADER_LEN, payload, n);
}

/* Frames under 254 bytes (all but long LOG/HELLO/SPAN_BATCH): CRC-32 and COBS in one pass over
 * header and payload (each byte loaded once), then the CRC's 4 bytes; the same bytes as
 * tt_crc32 + cobs_stuff, and as branch-free. */
static size_t crc_stuff_small(uint8_t *frame, size_t n, uint8_t *out)
{
    uint32_t crc = 0xFFFFFFFFu, last = 0u;
    size_t i;
    for (i = 0; i < n; i++) {
        uint32_t b = frame[i], zm = 0u - ((b - 1u) >> 31); /* all ones on a zero byte */
        crc ^= b;
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
        out[i + 1u] = (uint8_t)b;
        out[last] = (uint8_t)(i + 1u - last);
        last = (last & ~zm) | ((uint32_t)(i + 1u) & zm);
    }
    put32(frame + n, ~crc);
    for (; i < n + TT_CRC_LEN; i++) {
        uint32_t b = frame[i], zm = 0u - ((b - 1u) >> 31);
        out[i + 1u] = (uint8_t)b;
        out[last] = (uint8_t)(i + 1u - last);
        last = (last & ~zm) | ((uint32_t)(i + 1u) & zm);
    }
    out[last] = (uint8_t)(i + 1u - last);
    return i + 1u;
}

size_t tt_frame_build(uint8_t *frame, uint8_t type, uint16_t seq, uint32_t ticks,
                      const uint8_t *payload, size_t n)
{
    uint32_t crc;
    if (n > TT_MAX_PAYLOAD) return 0;
    put_header(frame, type, seq, ticks, payload, n);
    crc = tt_crc32(0, frame, TT_HEADER_LEN + n);
    put32(frame + TT_HEADER_LEN + n, crc);
    return TT_HEADER_LEN + n + TT_CRC_LEN;
}

size_t tt_frame_write(uint8_t *work, uint8_t type, uint16_t seq, uint32_t ticks,
                      const uint8_t *payload, size_t n, const tt_sink *sink)
{
    size_t out;
    if (n > TT_MAX_PAYLOAD) return 0;
    put_header(work, type, seq, ticks, payload, n);
    n += TT_HEADER_LEN;
    if (n + TT_CRC_LEN < 254u) {
        out = crc_stuff_small(work, n, cobs_out_);
    } else {
        put32(work + n, tt_crc32(0, work, n));
        out = cobs_stuff(work, n + TT_CRC_LEN, cobs_out_);
    }
    cobs_out_[out++] = 0u; /* the delimiter */
    sink->write(sink->ctx, cobs_out_, out);
    return out;
}

TT_RARE size_t tt_pack_hello(uint8_t *p, const tt_hello *h)
{
    uint8_t *q = p;
    q = put32(q, h->cpu_hz); q = put32(q, h->tick_hz); q = put32(q, h->ram_bytes);
    q = put32(q, h->flash_bytes); q = put32(q, h->psram_bytes); q = put32(q, h->capabilities);
    memcpy(q, h->model_hash, TT_HASH_LEN); q += TT_HASH_LEN;
    q = put_str(q, h->platform); q = put_str(q, h->firmware_version); q = put_str(q, h->model_name);
    return (size_t)(q - p);
}

size_t tt_pack_infer_begin(uint8_t *p, uint32_t run_id, uint16_t n_prompt, uint16_t n_tokens)
{
    put16(put16(put32(p, run_id), n_prompt), n_tokens);
    return 8;
}

size_t tt_pack_infer_end(uint8_t *p, uint32_t run_id, uint16_t n_generated, uint8_t status)
{
    put16(put32(p, run_id), n_generated)[0] = status;
    return 7;
}

size_t tt_pack_token(uint8_t *p, uint32_t index, uint32_t token_id, uint8_t phase)
{
    put32(put32(p, index), token_id)[0] = phase;
    return 9;
}

size_t tt_pack_span(uint8_t *p, uint16_t layer, uint8_t op)
{
    put16(p, layer)[0] = op;
    return 3;
}

size_t tt_pack_span_batch_head(uint8_t *p, uint16_t first)
{
    put16(p, first);
    return 2;
}

/* One SPAN_BATCH record at p; returns its end. Inlined in tt_span_at, the hot path. */

TT_HOT_INLINE uint8_t *put_record(
    uint8_t *p, uint8_t tag, uint16_t layer, uint16_t *prev_layer, uint32_t delta)
{
    uint8_t *q = p + 1;
    if (layer != *prev_layer) {
        tag |= TT_SPAN_LAYER_BIT;
        q = put16(q, layer);
        *prev_layer = layer;
    }
    p[0] = tag;
    while (delta >= 0x80u) {
        *q++ = (uint8_t)(delta | 0x80u);
        delta >>= 7;
    }
    *q++ = (uint8_t)delta;
    return q;
}

size_t tt_pack_span_record(uint8_t *p, uint8_t tag, uint16_t layer, uint16_t prev_layer,
                           uint32_t delta)
{
    return (size_t)(put_record(p, tag, layer, &prev_layer, delta) - p);
}

size_t tt_pack_memory(uint8_t *p, uint32_t heap_used, uint32_t heap_peak, uint32_t stack_peak,
                      uint32_t arena_bytes, uint32_t kv_bytes)
{
    put32(put32(put32(put32(put32(p, heap_used), heap_peak), stack_peak), arena_bytes), kv_bytes);
    return 20;
}

size_t tt_pack_counter(uint8_t *p, uint16_t counter_id, uint64_t value)
{
    put32(put32(put16(p, counter_id), (uint32_t)value), (uint32_t)(value >> 32));
    return 10;
}

size_t tt_pack_marker(uint8_t *p, uint16_t marker_id, uint32_t value)
{
    put32(put16(p, marker_id), value);
    return 6;
}

TT_RARE size_t tt_pack_log(uint8_t *p, uint8_t level, const char *text, size_t len)
{
    if (len > TT_MAX_PAYLOAD - 1u) len = TT_MAX_PAYLOAD - 1u;
    p[0] = level;
    if (len) memcpy(p + 1, text, len);
    return 1u + len;
}

TT_RARE size_t tt_pack_error(uint8_t *p, uint16_t code, const char *text, size_t len)
{
    if (len > TT_MAX_PAYLOAD - 2u) len = TT_MAX_PAYLOAD - 2u;
    put16(p, code);
    if (len) memcpy(p + 2, text, len);
    return 2u + len;
}

size_t tt_pack_heartbeat(uint8_t *p, uint32_t uptime_ms, uint32_t tx_dropped)
{
    put32(put32(p, uptime_ms), tx_dropped);
    return 8;
}

size_t tt_pack_u32(uint8_t *p, uint32_t v)
{
    put32(p, v);
    return 4;
}

size_t tt_pack_power_samples(uint8_t *p, uint32_t first_index, uint32_t period_ns, uint8_t chip,
                             uint8_t count, const int16_t *shunt, const uint16_t *bus)
{
    uint8_t *q = put32(put32(p, first_index), period_ns);
    uint8_t i;
    if (count > 253u) count = 253u;
    *q++ = chip;
    *q++ = count;
    for (i = 0; i < count; i++) q = put16(put16(q, (uint16_t)shunt[i]), bus[i]);
    return (size_t)(q - p);
}

size_t tt_pack_run(uint8_t *p, uint32_t run_id, uint32_t seed, float temperature,
                   uint16_t n_tokens, uint16_t n_prompt, const uint32_t *prompt)
{
    uint32_t bits;
    uint8_t *q;
    uint16_t i;
    if (n_prompt > TT_MAX_PROMPT) n_prompt = TT_MAX_PROMPT;
    memcpy(&bits, &temperature, 4);
    q = put16(put16(put32(put32(put32(p, run_id), seed), bits), n_tokens), n_prompt);
    for (i = 0; i < n_prompt; i++) q = put32(q, prompt[i]);
    return (size_t)(q - p);
}

/* ---- link ---------------------------------------------------------------------------- */

/* The pending SPAN_BATCH is built in work[] behind a gap of TT_SPAN_GAP bytes, where the other
 * frames' payloads are packed (TOKEN, MEMORY, COUNTER, ...: at most 20 bytes), so packing them
 * does not touch it; the batch then leaves first, its frame built in place at SPAN_FRAME. The
 * long payloads (HELLO, LOG, ERROR) send the batch before they are packed. span_p is the write
 * position, SPAN_NONE when no batch is pending. */
#define TT_SPAN_GAP 32u
#define SPAN_FRAME(l) ((l)->work + TT_SPAN_GAP)
#define SPAN_AT(l) (SPAN_FRAME(l) + TT_HEADER_LEN)
#define SPAN_NONE(l) ((l)->work + TT_MAX_FRAME)
#define SPAN_FULL(l) ((l)->work + TT_MAX_FRAME - TT_CRC_LEN - TT_SPAN_RECORD_MAX)

static void flush_batch(tt_link *l);

static void count_sink(tt_link *l, size_t n) { l->tx_bytes += n; }

void tt_link_init(tt_link *l, tt_sink sink, uint32_t (*now)(void))
{
    memset(l, 0, sizeof *l);
    l->sink = sink;
    l->now = now;
    l->level = TT_LEVEL_TOKENS;
    l->span_p = SPAN_NONE(l);
}

/* Take seq (and, with now_too, the timestamp) in one critical section, then send the frame
 * built at work (l->work, or the pending batch's place). */
static void send_frame(tt_link *l, uint8_t *work, uint8_t type, int now_too, uint32_t ticks,
                       const uint8_t *payload, size_t n)
{
    uint16_t seq;
    if (TT_SPAN_PENDING(l)) flush_batch(l); /* spans that happened earlier leave first */
    if (l->lock) l->lock();
    seq = l->seq++;
    if (now_too) ticks = l->now ? l->now() : 0u;
    if (l->unlock) l->unlock();
    count_sink(l, tt_frame_write(work, type, seq, ticks, payload, n, &l->sink));
}

TT_NOINLINE void tt_send_at(tt_link *l, uint8_t type, uint32_t ticks, const uint8_t *payload, size_t n)
{
    send_frame(l, l->work, type, 0, ticks, payload, n);
}

TT_NOINLINE void tt_send(tt_link *l, uint8_t type, const uint8_t *payload, size_t n)
{
    send_frame(l, l->work, type, 1, 0u, payload, n);
}

/* Payloads are packed straight into the work buffer after the header (no copy). */
#define PAYLOAD(l) ((l)->work + TT_HEADER_LEN)

/* The pending batch leaves as a frame, built where it lies; not inlined (flash). */
TT_COLD void flush_batch(tt_link *l)
{
    size_t n = (size_t)(l->span_p - SPAN_AT(l));
    l->span_p = SPAN_NONE(l);
    send_frame(l, SPAN_FRAME(l), TT_SPAN_BATCH, 0, l->span_t0, SPAN_AT(l), n);
}

void tt_span_flush(tt_link *l)
{
    if (TT_SPAN_PENDING(l)) flush_batch(l);
}

/* A new batch: send a full one first, then its record number; out of the hot path. */
TT_COLD uint8_t *span_open(tt_link *l, uint32_t now)
{
    tt_span_flush(l);
    l->span_t0 = l->span_last = now;
    l->span_layer = TT_NO_LAYER;
    return SPAN_AT(l) + tt_pack_span_batch_head(SPAN_AT(l), l->span_count);
}

void tt_span_at(tt_link *l, uint8_t tag, uint16_t layer, uint32_t now)
{
    uint8_t *p = l->span_p;
    if (p > SPAN_FULL(l)) p = span_open(l, now);
    l->span_p = put_record(p, tag, layer, &l->span_layer, now - l->span_last);
    l->span_last = now;
    l->span_count++;
}

void tt_span(tt_link *l, uint8_t tag, uint16_t layer)
{
    if (TT_WANTS_SPANS(l)) tt_span_at(l, tag, layer, l->now ? l->now() : 0u);
}

TT_RARE void tt_send_hello(tt_link *l, const tt_hello *h)
{
    tt_span_flush(l); /* a long payload: the pending batch must leave first */
    tt_send(l, TT_HELLO, PAYLOAD(l), tt_pack_hello(PAYLOAD(l), h));
}

void tt_send_infer_begin(tt_link *l, uint32_t run_id, uint16_t n_prompt, uint16_t n_tokens)
{
    tt_send(l, TT_INFER_BEGIN, PAYLOAD(l), tt_pack_infer_begin(PAYLOAD(l), run_id, n_prompt, n_tokens));
}

void tt_send_infer_end(tt_link *l, uint32_t run_id, uint16_t n_generated, uint8_t status)
{
    tt_send(l, TT_INFER_END, PAYLOAD(l), tt_pack_infer_end(PAYLOAD(l), run_id, n_generated, status));
}

void tt_send_token(tt_link *l, uint32_t index, uint32_t token_id, uint8_t phase)
{
    if (!TT_WANTS_TOKENS(l)) return;
    tt_send(l, TT_TOKEN, PAYLOAD(l), tt_pack_token(PAYLOAD(l), index, token_id, phase));
}

void tt_send_span_begin(tt_link *l, uint16_t layer, uint8_t op)
{
    if (!TT_WANTS_SPANS(l)) return;
    tt_send(l, TT_SPAN_BEGIN, PAYLOAD(l), tt_pack_span(PAYLOAD(l), layer, op));
}

void tt_send_span_end(tt_link *l, uint16_t layer, uint8_t op)
{
    if (!TT_WANTS_SPANS(l)) return;
    tt_send(l, TT_SPAN_END, PAYLOAD(l), tt_pack_span(PAYLOAD(l), layer, op));
}

void tt_send_memory(tt_link *l, uint32_t heap_used, uint32_t heap_peak, uint32_t stack_peak,
                    uint32_t arena_bytes, uint32_t kv_bytes)
{
    if (!TT_WANTS_TOKENS(l)) return;
    tt_send(l, TT_MEMORY, PAYLOAD(l),
            tt_pack_memory(PAYLOAD(l), heap_used, heap_peak, stack_peak, arena_bytes, kv_bytes));
}

void tt_send_counter(tt_link *l, uint16_t counter_id, uint64_t value)
{
    if (!TT_WANTS_TOKENS(l)) return;
    tt_send(l, TT_COUNTER, PAYLOAD(l), tt_pack_counter(PAYLOAD(l), counter_id, value));
}

void tt_send_marker(tt_link *l, uint16_t marker_id, uint32_t value)
{
    tt_send(l, TT_MARKER, PAYLOAD(l), tt_pack_marker(PAYLOAD(l), marker_id, value));
}

TT_RARE void tt_send_log(tt_link *l, uint8_t level, const char *text)
{
    tt_span_flush(l); /* a long payload: the pending batch must leave first */
    tt_send(l, TT_LOG, PAYLOAD(l), tt_pack_log(PAYLOAD(l), level, text, strlen(text)));
}

TT_RARE void tt_send_error(tt_link *l, uint16_t code, const char *text)
{
    tt_span_flush(l); /* a long payload: the pending batch must leave first */
    tt_send(l, TT_ERROR, PAYLOAD(l), tt_pack_error(PAYLOAD(l), code, text, strlen(text)));
}

void tt_send_heartbeat(tt_link *l, uint32_t uptime_ms)
{
    tt_send(l, TT_HEARTBEAT, PAYLOAD(l), tt_pack_heartbeat(PAYLOAD(l), uptime_ms, l->tx_dropped));
}

void tt_send_pong(tt_link *l, uint32_t nonce, uint32_t ticks)
{
    tt_send_at(l, TT_PONG, ticks, PAYLOAD(l), tt_pack_u32(PAYLOAD(l), nonce));
}

/* ---- host commands ------------------------------------------------------------------- */

void tt_rx_init(tt_rx *rx) { memset(rx, 0, sizeof *rx); }

TT_RARE int tt_decode_frame(const uint8_t *f, size_t n, tt_cmd *cmd)
{
    size_t plen;
    const uint8_t *p;
    uint32_t bits;
    uint16_t i;
    if (n < TT_MIN_FRAME || n > TT_MAX_FRAME) return TT_RX_BAD;
    if (tt_crc32(0, f, n - TT_CRC_LEN) != get32(f + n - TT_CRC_LEN)) return TT_RX_BAD;
    if (f[0] != TT_PROTOCOL_VERSION) return TT_RX_BAD;
    plen = n - TT_MIN_FRAME;
    p = f + TT_HEADER_LEN;
    cmd->type = f[1];
    cmd->seq = get16(f + 2);
    switch (f[1]) {
    case TT_PING:
        if (plen != 4) return TT_RX_BAD;
        cmd->nonce = get32(p);
        return TT_RX_CMD;
    case TT_STOP:
        return plen == 0 ? TT_RX_CMD : TT_RX_BAD;
    case TT_CONFIG:
        if (plen != 1) return TT_RX_BAD;
        cmd->trace_level = p[0];
        return TT_RX_CMD;
    case TT_RUN:
        if (plen < 16) return TT_RX_BAD;
        cmd->n_prompt = get16(p + 14);
        if (cmd->n_prompt > TT_MAX_PROMPT || plen != 16u + 4u * cmd->n_prompt) return TT_RX_BAD;
        bits = get32(p + 8);
        /* finite and >= 0: sign clear, exponent not all ones */
        if ((bits & 0x80000000u) && bits != 0x80000000u) return TT_RX_BAD;
        if ((bits & 0x7F800000u) == 0x7F800000u) return TT_RX_BAD;
        cmd->run_id = get32(p);
        cmd->seed = get32(p + 4);
        memcpy(&cmd->temperature, &bits, 4);
        cmd->n_tokens = get16(p + 12);
        for (i = 0; i < cmd->n_prompt; i++) cmd->prompt[i] = get32(p + 16 + 4u * i);
        return TT_RX_CMD;
    default:
        return TT_RX_NONE; /* device->host or unknown types: ignored (section 8) */
    }
}

TT_RARE int tt_rx_byte(tt_rx *rx, uint8_t byte, tt_cmd *cmd)
{
    long n;
    int r;
    if (byte != 0) {
        if (rx->len < sizeof rx->buf) rx->buf[rx->len++] = byte;
        else rx->overflow = 1;
        return TT_RX_NONE;
    }
    if (rx->len == 0 && !rx->overflow) return TT_RX_NONE; /* empty stretch */
    if (rx->overflow) {
        rx->len = 0;
        rx->overflow = 0;
        rx->errors++;
        return TT_RX_BAD;
    }
    n = tt_cobs_decode(rx->buf, rx->len, rx->buf);
    rx->len = 0;
    if (n < 0) {
        rx->errors++;
        return TT_RX_BAD;
    }
    r = tt_decode_frame(rx->buf, (size_t)n, cmd);
    if (r == TT_RX_CMD) rx->frames++;
    else if (r == TT_RX_BAD) rx->errors++;
    else rx->ignored++;
    return r;
}
