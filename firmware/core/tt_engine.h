/*
 * The inference engine as the device core sees it. Two implementations link against it: the
 * demo engine (engine/demo_engine.c: a synthetic workload, no model) and the llama engine
 * (engine/tt_llama.c: a real decoder over .tlm weights). The engine reports operator spans
 * through tt_span_begin()/tt_span_end() from tt_trace.h.
 */
#ifndef TT_ENGINE_H
#define TT_ENGINE_H

#include <stdint.h>

#define TT_BOS 1u

typedef struct tt_model_info {
    const char *name;
    uint8_t hash[32];          /* SHA-256 of the model file (zeros for the demo engine) */
    uint32_t vocab_size;
    uint32_t seq_len;          /* context the firmware supports (may be below the model's) */
    uint32_t n_layers;
    uint32_t arena_bytes;      /* static arena capacity */
} tt_model_info;

/* 0 on success; a negative value when the linked model is unusable. */
int tt_engine_init(void);
/* Why tt_engine_init failed (or "ok"): sent to the host in an ERROR frame. */
extern const char *tt_engine_error;
const tt_model_info *tt_engine_info(void);
/* Forget the sequence (KV cache). */
void tt_engine_reset(void);
/* One forward pass of `token` at position `pos` (positions in order from 0). 0 on success. */
int tt_engine_forward(uint32_t token, uint32_t pos);
/* Pick the next token from the last logits: argmax at temperature 0, else llama2.c's
 * multinomial/top-p sampling driven by *rng (xorshift64*). */
uint32_t tt_engine_sample(float temperature, uint64_t *rng);
/* Arena bytes in use / peak, KV bytes holding `n_pos` positions, MACs since boot. */
uint32_t tt_engine_arena_used(void);
uint32_t tt_engine_kv_bytes(uint32_t n_pos);
uint64_t tt_engine_macs(void);

#endif
