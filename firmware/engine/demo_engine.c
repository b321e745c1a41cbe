/*
 * The demo engine: no model, a synthetic integer workload shaped like stories260K's forward
 * pass (5 layers, the same operator sequence and spans), and tokens from a deterministic
 * xorshift. It exercises the whole telemetry path of a port before any model is linked, and
 * its cost per token is known, which the tests use to check timestamps.
 */
#include <stdint.h>

#include "tt_engine.h"
#include "tt_proto.h"
#include "tt_trace.h"

#define DEMO_LAYERS 5u
#define DEMO_VOCAB 512u
#define DEMO_SEQ 256u
#define DEMO_DIM 64u
#define DEMO_KV_PER_POS (2u * DEMO_LAYERS * 32u) /* int8 K and V, kv_dim 32 */

static int8_t arena_[DEMO_DIM * 4u + DEMO_KV_PER_POS * DEMO_SEQ];
static tt_model_info info_ = {"demo", {0}, DEMO_VOCAB, DEMO_SEQ, DEMO_LAYERS, sizeof arena_};
static uint32_t state_;
static uint32_t last_pos_;
static uint64_t macs_;
static volatile int32_t sink_;

/* n multiply-accumulates over the activations (the compiler cannot drop them: volatile sink). */
static void work(uint32_t n, uint32_t salt)
{
    int32_t acc = 0;
    uint32_t i;
    for (i = 0; i < n; i++) acc += arena_[(i + salt) % DEMO_DIM] * (int8_t)(i ^ salt);
    sink_ = acc;
    macs_ += n;
}

const char *tt_engine_error = "ok";

int tt_engine_init(void)
{
    uint32_t i;
    for (i = 0; i < DEMO_DIM; i++) arena_[i] = (int8_t)(i * 7u);
    return 0;
}

const tt_model_info *tt_engine_info(void) { return &info_; }

void tt_engine_reset(void) { state_ = 0x9E3779B9u; }

int tt_engine_forward(uint32_t token, uint32_t pos)
{
    static const uint8_t ops[] = {TT_OP_ATTN_NORM, TT_OP_QKV, TT_OP_ROPE, TT_OP_ATTENTION,
                                  TT_OP_ATTN_OUT, TT_OP_FFN_NORM, TT_OP_FFN};
    static const uint16_t cost[] = {64, 8192, 64, 512, 4096, 64, 33024};
    uint32_t l, k;
    if (pos >= DEMO_SEQ || token >= DEMO_VOCAB) return -1;
    last_pos_ = pos;
    tt_span_begin(TT_NO_LAYER, TT_OP_EMBED);
    work(DEMO_DIM, token);
    tt_span_end(TT_NO_LAYER, TT_OP_EMBED);
    for (l = 0; l < DEMO_LAYERS; l++) {
        tt_span_begin((uint16_t)l, TT_OP_LAYER);
        for (k = 0; k < sizeof ops; k++) {
            tt_span_begin((uint16_t)l, ops[k]);
            work(ops[k] == TT_OP_ATTENTION ? cost[k] / 8u * (pos + 1u) : cost[k], l + token);
            tt_span_end((uint16_t)l, ops[k]);
        }
        tt_span_end((uint16_t)l, TT_OP_LAYER);
    }
    tt_span_begin(TT_NO_LAYER, TT_OP_FINAL_NORM);
    work(DEMO_DIM, pos);
    tt_span_end(TT_NO_LAYER, TT_OP_FINAL_NORM);
    tt_span_begin(TT_NO_LAYER, TT_OP_CLASSIFIER);
    work(DEMO_DIM * DEMO_VOCAB, pos);
    tt_span_end(TT_NO_LAYER, TT_OP_CLASSIFIER);
    state_ = (state_ ^ token) * 2654435761u + pos;
    return 0;
}

uint32_t tt_engine_sample(float temperature, uint64_t *rng)
{
    uint32_t x = state_ ^ (state_ >> 15);
    if (temperature > 0.0f) {
        uint64_t s = *rng;
        s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
        *rng = s;
        x ^= (uint32_t)((s * 0x2545F4914F6CDD1Dull) >> 32);
    }
    return 2u + x % (DEMO_VOCAB - 2u); /* never 0 or BOS: runs last n_tokens */
}

uint32_t tt_engine_arena_used(void) { return DEMO_DIM * 4u + DEMO_KV_PER_POS * (last_pos_ + 1u); }
uint32_t tt_engine_kv_bytes(uint32_t n_pos) { return DEMO_KV_PER_POS * n_pos; }
uint64_t tt_engine_macs(void) { return macs_; }
