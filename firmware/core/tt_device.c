/*
 * The device side of protocol v1: HELLO at boot, commands from the host, one inference at a
 * time with TOKEN / SPAN / MEMORY / COUNTER frames at the requested trace level, HEARTBEAT about
 * once a second. Single-threaded and polled: the host link is checked between tokens, so PING
 * is answered within one token's time and STOP ends a run at the next token boundary.
 */
#include "tt_string.h"

#include "tt_device.h"
#include "tt_engine.h"
#include "tt_port.h"
#include "tt_proto.h"
#include "tt_trace.h"
#include "tt_txring.h"

#ifndef TT_FIRMWARE_VERSION
#define TT_FIRMWARE_VERSION "0.1.0"
#endif
#ifndef TT_DEFAULT_SEED
#define TT_DEFAULT_SEED 42u /* RUN.seed 0 means this (the xorshift state must be non-zero) */
#endif

static tt_link link_;
static tt_rx rx_;
static tt_cmd cmd_;
static tt_cmd run_req_;      /* the RUN being executed (copied: cmd_ is reused while it runs) */
static uint8_t run_pending_, run_active_, stop_requested_;
static uint32_t hb_last_;
static uint32_t arena_peak_;
uint8_t tt_trace_spans;

/* Every frame leaves through the transmit ring (tt_txring.h); the frame being written is still
 * in link_.work, whose second byte is its type. A dropped frame's sequence number is spent. */
static void sink_write(void *ctx, const uint8_t *buf, size_t n)
{
    (void)ctx;
    if (!tt_tx_write(buf, n, link_.work[1])) {
        link_.tx_dropped++;
        link_.tx_bytes -= n; /* tt_send counts the frame after this returns: net, not sent */
    }
}

/* Span events go into the link's pending SPAN_BATCH, which leaves before the next other frame
 * (the token's TOKEN at the latest), so a token's spans cost one frame instead of ~90. */
void tt_span_(uint16_t layer, uint8_t tag) { tt_span_at(&link_, tag, layer, port_ticks()); }

static void set_level(uint8_t level)
{
    link_.level = level;
    tt_trace_spans = (uint8_t)(level >= TT_LEVEL_SPANS);
}

static void send_hello(void)
{
    const tt_port_info *p = port_info();
    const tt_model_info *m = tt_engine_info();
    tt_hello h;
    memset(&h, 0, sizeof h);
    h.cpu_hz = p->cpu_hz;
    h.tick_hz = p->tick_hz;
    h.ram_bytes = p->ram_bytes;
    h.flash_bytes = p->flash_bytes;
    h.psram_bytes = p->psram_bytes;
    h.capabilities = TT_CAP_SPANS | TT_CAP_MEMORY | TT_CAP_COUNTERS | TT_CAP_TEMPERATURE | TT_CAP_STOP;
    memcpy(h.model_hash, m->hash, TT_HASH_LEN);
    h.platform = p->platform;
    h.firmware_version = TT_FIRMWARE_VERSION;
    h.model_name = m->name;
    tt_send_hello(&link_, &h);
}

static void heartbeat_poll(void)
{
    uint32_t now = port_ticks();
    if (now - hb_last_ >= port_info()->tick_hz) {
        hb_last_ = now;
        tt_send_heartbeat(&link_, port_uptime_ms());
    }
}

static void handle(const tt_cmd *c)
{
    switch (c->type) {
    case TT_PING:
        tt_send_pong(&link_, c->nonce, port_ticks());
        break;
    case TT_STOP:
        if (run_active_) stop_requested_ = 1;
        break;
    case TT_CONFIG:
        if (c->trace_level > TT_LEVEL_SPANS) {
            tt_send_error(&link_, TT_ERR_BAD_CONFIG, "unknown trace level (0 off, 1 tokens, 2 spans)");
            break;
        }
        set_level(c->trace_level);
        send_hello();
        break;
    case TT_RUN:
        if (run_active_ || run_pending_) {
            tt_send_error(&link_, TT_ERR_BUSY, "busy with a run; send STOP or wait for INFER_END");
            break;
        }
        memcpy(&run_req_, c, sizeof run_req_);
        run_pending_ = 1;
        break;
    default:
        break;
    }
    port_flush(); /* the host waits for the answer (PONG, ERROR, HELLO), also during a run */
}

/* Drain the receive side: commands are handled as they complete. */
static void poll_link(void)
{
    int b;
    if (port_new_connection()) send_hello();
    while ((b = port_read()) >= 0) {
        int r = tt_rx_byte(&rx_, (uint8_t)b, &cmd_);
        if (r == TT_RX_CMD) handle(&cmd_);
    }
}

static void bad_run(uint32_t run_id, const char *why)
{
    tt_send_error(&link_, TT_ERR_BAD_RUN, why);
    tt_send_infer_end(&link_, run_id, 0, TT_STATUS_ERROR);
}

static void memory_report(uint32_t n_pos)
{
    uint32_t used = tt_engine_arena_used();
    if (used > arena_peak_) arena_peak_ = used;
    tt_send_memory(&link_, used, arena_peak_, port_stack_peak(), tt_engine_info()->arena_bytes,
                   tt_engine_kv_bytes(n_pos));
}

static void counters(void)
{
    uint64_t instr = port_instructions();
    tt_send_counter(&link_, TT_CNT_MACS, tt_engine_macs());
    tt_send_counter(&link_, TT_CNT_CYCLES, port_cycles());
    if (instr != UINT64_MAX) tt_send_counter(&link_, TT_CNT_INSTRUCTIONS, instr);
    tt_send_counter(&link_, TT_CNT_TX_BYTES, link_.tx_bytes);
}

static void run(void)
{
    const tt_run_request *r = &run_req_;
    const tt_model_info *m = tt_engine_info();
    static const uint32_t bos_only[1] = {TT_BOS};
    const uint32_t *prompt = r->n_prompt ? r->prompt : bos_only;
    uint32_t n_prompt = r->n_prompt ? r->n_prompt : 1u;
    uint32_t n, i, j, token = 0, generated = 0;
    uint64_t rng = r->seed ? r->seed : TT_DEFAULT_SEED;
    uint8_t status = TT_STATUS_OK;

    run_pending_ = 0;
    for (i = 0; i < n_prompt; i++) {
        if (prompt[i] >= m->vocab_size) {
            bad_run(r->run_id, "prompt token outside the vocabulary");
            return;
        }
    }
    if (n_prompt > m->seq_len) {
        bad_run(r->run_id, "prompt longer than the firmware's context");
        return;
    }
    n = m->seq_len - n_prompt + 1u;
    if (r->n_tokens < n) n = r->n_tokens;
    run_active_ = 1;
    stop_requested_ = 0;
    port_align();
    hb_last_ = port_ticks();
    tt_send_infer_begin(&link_, r->run_id, (uint16_t)n_prompt, (uint16_t)n);
    tt_engine_reset();
    for (i = 0; i < n_prompt && status == TT_STATUS_OK; i++) {
        if (tt_engine_forward(prompt[i], i) != 0) status = TT_STATUS_ERROR;
        tt_send_token(&link_, i, prompt[i], TT_PREFILL);
        poll_link();
        heartbeat_poll();
        if (stop_requested_) status = TT_STATUS_STOPPED;
    }
    for (j = 0; j < n && status == TT_STATUS_OK; j++) {
        if (j > 0 && tt_engine_forward(token, n_prompt - 1u + j) != 0) {
            status = TT_STATUS_ERROR;
            break;
        }
        tt_span_begin(TT_NO_LAYER, TT_OP_SAMPLE);
        token = tt_engine_sample(r->temperature, &rng);
        tt_span_end(TT_NO_LAYER, TT_OP_SAMPLE);
        if (token == TT_BOS) break;
        tt_send_token(&link_, n_prompt + j, token, TT_DECODE);
        memory_report(n_prompt + j);
        generated++;
        poll_link();
        heartbeat_poll();
        if (stop_requested_) status = TT_STATUS_STOPPED;
    }
    counters();
    tt_send_infer_end(&link_, r->run_id, (uint16_t)generated, status);
    run_active_ = 0;
}

void tt_device_main(void)
{
    static const uint8_t resync = 0;
    tt_sink sink;
    sink.write = sink_write;
    sink.ctx = 0;
    port_init();
    tt_link_init(&link_, sink, port_ticks);
    tt_rx_init(&rx_);
    set_level(TT_DEFAULT_LEVEL);
    port_write(&resync, 1); /* a receiver joining mid-stream drops any partial frame */
    if (tt_engine_init() != 0) {
        send_hello();
        tt_send_log(&link_, TT_LOG_ERROR, tt_engine_error);
    } else {
        send_hello();
    }
    (void)port_new_connection();
    hb_last_ = port_ticks();
    for (;;) {
        poll_link();
        if (run_pending_) run();
        heartbeat_poll();
        tt_tx_pump();
        port_flush(); /* HELLO and LOG after boot or a connect, INFER_END after a run */
        if (!run_pending_) port_idle();
    }
}
