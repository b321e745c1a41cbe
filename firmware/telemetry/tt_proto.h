/*
 * tinytelem wire protocol v1: device-side encoder and host-command decoder.
 *
 * Portable C99, no malloc, no libc beyond memcpy/memset. The normative description is
 * docs/protocol.md; tests/firmware/ compiles this file natively and checks every golden
 * vector of tests/vectors/protocol_v1.json byte for byte.
 *
 * Layers: tt_pack_*() write a message payload into a caller buffer; tt_frame_write() adds the
 * header and CRC-32, stuffs the frame with COBS and hands the bytes to a tt_sink; tt_link keeps
 * the device's sequence counter, clock and trace level and offers one tt_send_*() per message.
 * tt_rx decodes host commands (PING, RUN, STOP, CONFIG) from a byte stream.
 */
#ifndef TT_PROTO_H
#define TT_PROTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TT_PROTOCOL_VERSION 1u
#define TT_HEADER_LEN 8u
#define TT_CRC_LEN 4u
#define TT_MAX_PAYLOAD 1024u
#define TT_MIN_FRAME (TT_HEADER_LEN + TT_CRC_LEN)
#define TT_MAX_FRAME (TT_HEADER_LEN + TT_MAX_PAYLOAD + TT_CRC_LEN)
#define TT_MAX_ENCODED (TT_MAX_FRAME + TT_MAX_FRAME / 254u + 1u)
#define TT_HASH_LEN 32u
#define TT_MAX_PROMPT 252u
#define TT_NO_LAYER 0xFFFFu
/* SPAN_BATCH records: tag = op | TT_SPAN_END_BIT (ends) | TT_SPAN_LAYER_BIT (a u16 layer
 * follows), then the ticks since the previous record as an unsigned LEB128 varint. */
#define TT_SPAN_END_BIT 0x80u
#define TT_SPAN_LAYER_BIT 0x40u
#define TT_SPAN_RECORD_MAX 8u

/* Message types (docs/protocol.md section 6). */
enum tt_type {
    TT_HELLO = 0x01, TT_INFER_BEGIN = 0x02, TT_INFER_END = 0x03, TT_TOKEN = 0x04,
    TT_SPAN_BEGIN = 0x05, TT_SPAN_END = 0x06, TT_MEMORY = 0x07, TT_COUNTER = 0x08,
    TT_MARKER = 0x09, TT_LOG = 0x0A, TT_ERROR = 0x0B, TT_HEARTBEAT = 0x0C, TT_PONG = 0x0D, TT_POWER_SAMPLES = 0x0E,
    TT_SPAN_BATCH = 0x0F,
    TT_PING = 0x80, TT_RUN = 0x81, TT_STOP = 0x82, TT_CONFIG = 0x83
};

enum tt_phase { TT_PREFILL = 0, TT_DECODE = 1 };
enum tt_level { TT_LEVEL_OFF = 0, TT_LEVEL_TOKENS = 1, TT_LEVEL_SPANS = 2 };
enum tt_status { TT_STATUS_OK = 0, TT_STATUS_STOPPED = 1, TT_STATUS_ERROR = 2 };
enum tt_op {
    TT_OP_LAYER = 0, TT_OP_EMBED = 1, TT_OP_ATTN_NORM = 2, TT_OP_QKV = 3, TT_OP_ROPE = 4,
    TT_OP_ATTENTION = 5, TT_OP_ATTN_OUT = 6, TT_OP_FFN_NORM = 7, TT_OP_FFN = 8,
    TT_OP_FINAL_NORM = 9, TT_OP_CLASSIFIER = 10, TT_OP_SAMPLE = 11
};
enum tt_cap {
    TT_CAP_SPANS = 1u << 0, TT_CAP_MEMORY = 1u << 1, TT_CAP_COUNTERS = 1u << 2,
    TT_CAP_MARKERS_GPIO = 1u << 3, TT_CAP_TEMPERATURE = 1u << 4, TT_CAP_STOP = 1u << 5
};
enum tt_counter {
    TT_CNT_CYCLES = 0, TT_CNT_INSTRUCTIONS = 1, TT_CNT_MACS = 2, TT_CNT_BYTES_READ = 3,
    TT_CNT_TX_BYTES = 4, TT_CNT_TX_DROPPED_FRAMES = 5
};
enum tt_log_level { TT_LOG_DEBUG = 0, TT_LOG_INFO = 1, TT_LOG_WARNING = 2, TT_LOG_ERROR = 3 };
enum tt_error_code { TT_ERR_BUSY = 1, TT_ERR_BAD_RUN = 2, TT_ERR_BAD_CONFIG = 3 };

/* ---- primitives ---------------------------------------------------------------------- */

/* CRC-32 (zlib/PNG). Start with crc = 0; feed pieces by passing the previous result. */
uint32_t tt_crc32(uint32_t crc, const uint8_t *buf, size_t n);

/* Where encoded bytes go (a UART, a socket, a test buffer). */
typedef struct tt_sink {
    void (*write)(void *ctx, const uint8_t *buf, size_t n);
    void *ctx;
} tt_sink;

/* COBS-stuff src[0..n) into the sink (no delimiter); returns the number of bytes written. */
size_t tt_cobs_write(const uint8_t *src, size_t n, const tt_sink *sink);

/* Decode one stuffed frame in place-compatible form (dst may equal src); returns the decoded
 * length, or -1 when a code byte runs past the end or is zero. */
long tt_cobs_decode(const uint8_t *src, size_t n, uint8_t *dst);

/* Header + payload + CRC into frame[] (at least TT_MAX_FRAME bytes); returns its length, or 0
 * when the payload exceeds TT_MAX_PAYLOAD. */
size_t tt_frame_build(uint8_t *frame, uint8_t type, uint16_t seq, uint32_t ticks,
                      const uint8_t *payload, size_t n);

/* Build a frame in work[] (TT_MAX_FRAME bytes), write it stuffed plus the 0x00 delimiter.
 * Returns the wire length, 0 on an oversized payload. */
size_t tt_frame_write(uint8_t *work, uint8_t type, uint16_t seq, uint32_t ticks,
                      const uint8_t *payload, size_t n, const tt_sink *sink);

/* ---- payload packers: each returns the payload length ------------------------------- */

typedef struct tt_hello {
    uint32_t cpu_hz, tick_hz, ram_bytes, flash_bytes, psram_bytes, capabilities;
    uint8_t model_hash[TT_HASH_LEN];
    const char *platform, *firmware_version, *model_name; /* NUL-terminated, <= 255 bytes */
} tt_hello;

size_t tt_pack_hello(uint8_t *p, const tt_hello *h);
size_t tt_pack_infer_begin(uint8_t *p, uint32_t run_id, uint16_t n_prompt, uint16_t n_tokens);
size_t tt_pack_infer_end(uint8_t *p, uint32_t run_id, uint16_t n_generated, uint8_t status);
size_t tt_pack_token(uint8_t *p, uint32_t index, uint32_t token_id, uint8_t phase);
size_t tt_pack_span(uint8_t *p, uint16_t layer, uint8_t op);
/* SPAN_BATCH: a u16 record number, then records. tag = op (< 64) | TT_SPAN_END_BIT for an end;
 * prev_layer is the previous record's layer (TT_NO_LAYER for a batch's first record). Returns
 * the record's length (at most TT_SPAN_RECORD_MAX). */
size_t tt_pack_span_batch_head(uint8_t *p, uint16_t first);
size_t tt_pack_span_record(uint8_t *p, uint8_t tag, uint16_t layer, uint16_t prev_layer,
                           uint32_t delta);
size_t tt_pack_memory(uint8_t *p, uint32_t heap_used, uint32_t heap_peak, uint32_t stack_peak,
                      uint32_t arena_bytes, uint32_t kv_bytes);
size_t tt_pack_counter(uint8_t *p, uint16_t counter_id, uint64_t value);
size_t tt_pack_marker(uint8_t *p, uint16_t marker_id, uint32_t value);
size_t tt_pack_log(uint8_t *p, uint8_t level, const char *text, size_t len);
size_t tt_pack_error(uint8_t *p, uint16_t code, const char *text, size_t len);
size_t tt_pack_heartbeat(uint8_t *p, uint32_t uptime_ms, uint32_t tx_dropped);
size_t tt_pack_u32(uint8_t *p, uint32_t v); /* PONG and PING */
/* POWER_SAMPLES (power bridges): count <= 253 pairs of raw shunt / bus register values. */
size_t tt_pack_power_samples(uint8_t *p, uint32_t first_index, uint32_t period_ns, uint8_t chip,
                             uint8_t count, const int16_t *shunt, const uint16_t *bus);
size_t tt_pack_run(uint8_t *p, uint32_t run_id, uint32_t seed, float temperature,
                   uint16_t n_tokens, uint16_t n_prompt, const uint32_t *prompt);

/* ---- the device's link -------------------------------------------------------------- */

typedef struct tt_link {
    tt_sink sink;
    uint32_t (*now)(void);        /* the free-running device clock (ticks) */
    void (*lock)(void);           /* optional: seq + ticks taken in one critical section */
    void (*unlock)(void);
    uint16_t seq;
    uint8_t level;                /* enum tt_level */
    uint32_t tx_dropped;
    uint64_t tx_bytes;
    /* The pending SPAN_BATCH lives in work[] (behind the small payloads), written up to
     * span_p (work + TT_MAX_FRAME when there is none: see TT_SPAN_PENDING). */
    uint8_t *span_p;
    uint16_t span_layer;          /* layer of its last record */
    uint16_t span_count;          /* span records since boot (mod 2^16) */
    uint32_t span_t0, span_last;  /* ticks of its first and last record */
    uint8_t work[TT_MAX_FRAME];   /* the frame being built; payloads are packed in place */
} tt_link;

void tt_link_init(tt_link *l, tt_sink sink, uint32_t (*now)(void));
/* Send one frame: takes seq and ticks together, then encodes and writes it. */
void tt_send(tt_link *l, uint8_t type, const uint8_t *payload, size_t n);
/* Same, with a timestamp taken earlier by the caller (still consumes the next seq). */
void tt_send_at(tt_link *l, uint8_t type, uint32_t ticks, const uint8_t *payload, size_t n);

void tt_send_hello(tt_link *l, const tt_hello *h);
void tt_send_infer_begin(tt_link *l, uint32_t run_id, uint16_t n_prompt, uint16_t n_tokens);
void tt_send_infer_end(tt_link *l, uint32_t run_id, uint16_t n_generated, uint8_t status);
void tt_send_token(tt_link *l, uint32_t index, uint32_t token_id, uint8_t phase);
void tt_send_span_begin(tt_link *l, uint16_t layer, uint8_t op);
void tt_send_span_end(tt_link *l, uint16_t layer, uint8_t op);
/* A span event at TraceLevel SPANS: timestamped now and appended to the pending SPAN_BATCH
 * (a few bytes, no frame). tag = op | TT_SPAN_END_BIT for an end. The batch leaves as one
 * frame before any other frame is sent (TOKEN, INFER_END, ...: nothing is reordered), or when
 * it is full. */
void tt_span(tt_link *l, uint8_t tag, uint16_t layer);
/* Same, timestamped ``now`` by the caller, without the level check: the device's hot path,
 * called only at TraceLevel SPANS. */
void tt_span_at(tt_link *l, uint8_t tag, uint16_t layer, uint32_t now);
/* Send the pending SPAN_BATCH now (nothing when there is none). */
void tt_span_flush(tt_link *l);
void tt_send_memory(tt_link *l, uint32_t heap_used, uint32_t heap_peak, uint32_t stack_peak,
                    uint32_t arena_bytes, uint32_t kv_bytes);
void tt_send_counter(tt_link *l, uint16_t counter_id, uint64_t value);
void tt_send_marker(tt_link *l, uint16_t marker_id, uint32_t value);
void tt_send_log(tt_link *l, uint8_t level, const char *text);
void tt_send_error(tt_link *l, uint16_t code, const char *text);
void tt_send_heartbeat(tt_link *l, uint32_t uptime_ms);
void tt_send_pong(tt_link *l, uint32_t nonce, uint32_t ticks);

/* Level checks so callers skip work (and instructions) for frames that would not be sent. */
#define TT_WANTS_TOKENS(l) ((l)->level >= TT_LEVEL_TOKENS)
#define TT_WANTS_SPANS(l) ((l)->level >= TT_LEVEL_SPANS)
#define TT_SPAN_PENDING(l) ((l)->span_p != (l)->work + TT_MAX_FRAME)

/* ---- host commands ------------------------------------------------------------------ */

typedef struct tt_cmd {
    uint8_t type;                 /* TT_PING, TT_RUN, TT_STOP or TT_CONFIG */
    uint16_t seq;
    uint32_t nonce;               /* PING */
    uint32_t run_id, seed;        /* RUN */
    float temperature;
    uint16_t n_tokens, n_prompt;
    uint32_t prompt[TT_MAX_PROMPT];
    uint8_t trace_level;          /* CONFIG */
} tt_cmd;

enum tt_rx_result {
    TT_RX_NONE = 0,     /* need more bytes */
    TT_RX_CMD = 1,      /* a command is in the tt_cmd */
    TT_RX_BAD = -1      /* a stretch was rejected (counted in errors) */
};

typedef struct tt_rx {
    uint8_t buf[TT_MAX_ENCODED];
    size_t len;
    uint8_t overflow;
    uint32_t frames, errors, ignored;
} tt_rx;

void tt_rx_init(tt_rx *rx);
/* Feed one received byte; on TT_RX_CMD the command is in *cmd. */
int tt_rx_byte(tt_rx *rx, uint8_t byte, tt_cmd *cmd);
/* Decode one unstuffed frame (header + payload + CRC). TT_RX_CMD, or TT_RX_BAD for a CRC,
 * version or payload error, or TT_RX_NONE for a valid frame of a type the device ignores. */
int tt_decode_frame(const uint8_t *frame, size_t n, tt_cmd *cmd);

#ifdef __cplusplus
}
#endif
#endif /* TT_PROTO_H */
