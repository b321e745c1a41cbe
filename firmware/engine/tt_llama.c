/*
 * The llama engine: a llama2.c-style decoder over a .tlm image linked into flash
 * (tlm_model[] from tinytelem.models.export_c), bit-exact with tinytelem.models.qinfer.
 *
 * No malloc: one static arena of TT_ARENA_BYTES (set by the build from the model header) holds
 * the activations, the float32 KV cache for TT_MAX_SEQ positions (0: the model's seq_len) and
 * the sampler's scratch; tt_engine_init() checks that it is big enough and refuses to run
 * otherwise. Spans per operator are reported through tt_trace.h.
 */
#include <stdint.h>

#include "tt_engine.h"
#include "tt_kernels.h"
#include "tt_proto.h"
#include "tt_softf.h"
#include "tt_string.h"
#include "tt_tlm.h"
#include "tt_trace.h"

#ifndef TT_ARENA_BYTES
#define TT_ARENA_BYTES (1024u * 1024u)
#endif
#ifndef TT_MAX_SEQ
#define TT_MAX_SEQ 0u
#endif
#ifndef TT_TOPP
#define TT_TOPP 0.9f /* run.c's default, as qinfer.generate's */
#endif
#ifndef TT_MAX_LAYERS
#define TT_MAX_LAYERS 64u /* the build passes the model's n_layers (252 B of RAM per layer) */
#endif

extern const uint8_t tlm_model[];
extern const uint32_t tlm_model_len;
extern const uint8_t tlm_model_sha256[32];

typedef struct layer_w {
    tt_tensor att_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3;
} layer_w;

static uint8_t arena_[TT_ARENA_BYTES] __attribute__((aligned(8)));
static tt_tlm m_;
static tt_model_info info_;
static tt_tensor emb_, cls_, norm_, cos_, sin_;
static layer_w layers_[TT_MAX_LAYERS];
static uint32_t ctx_, kv_dim_, hid_, max_cols_, fixed_bytes_, last_pos_, ready_;
static uint64_t macs_;
static float *x_, *xb_, *q_, *hb_, *hb2_, *att_, *logits_, *kc_, *vc_;
static uint16_t *idx_;
static tt_qact qa_;
const char *tt_engine_error = "not initialised";

static uint32_t up8(uint32_t n) { return (n + 7u) & ~7u; }

static void *take(uint32_t *off, uint32_t bytes)
{
    void *p = arena_ + *off;
    *off += up8(bytes);
    return p;
}

static int need(const char *name, tt_tensor *t, uint32_t rows, uint32_t cols_min)
{
    if (!tt_tlm_find(&m_, name, t)) return -1;
    if (t->rows != rows || t->cols < cols_min) return -1;
    if (t->code != TT_TLM_F32 && t->code != TT_TLM_F16 && t->group > 256u) return -1;
    if (t->cols > max_cols_) max_cols_ = t->cols;
    return 0;
}

static int fail(const char *why)
{
    tt_engine_error = why;
    ready_ = 0;
    return -1;
}

int tt_engine_init(void)
{
    char name[32];
    uint32_t l, off = 0, dim, kvb;
    const char *why;
    static const char *const kinds[9] = {"attention_norm", "wq", "wk", "wv", "wo", "ffn_norm",
                                         "w1", "w2", "w3"};
    ready_ = 0;
    if (tt_tlm_open(&m_, tlm_model, tlm_model_len, &why) != 0) return fail(why);
    if (m_.n_layers > TT_MAX_LAYERS) return fail("model has more layers than TT_MAX_LAYERS");
    if (m_.vocab_size > 65535u) return fail("vocabulary larger than 65535");
    dim = m_.dim;
    kv_dim_ = dim * m_.n_kv_heads / m_.n_heads;
    max_cols_ = 0;
    if (need("tok_embeddings", &emb_, m_.vocab_size, dim) != 0 ||
        need("norm", &norm_, 1, dim) != 0 || norm_.code != TT_TLM_F32 ||
        !tt_tlm_find(&m_, "rope.cos", &cos_) || !tt_tlm_find(&m_, "rope.sin", &sin_) ||
        cos_.code != TT_TLM_F32 || sin_.code != TT_TLM_F32 ||
        cos_.rows != m_.seq_len || cos_.cols != m_.head_dim / 2u)
        return fail("model image lacks tok_embeddings, norm or the RoPE tables");
    if (m_.flags & 1u) {
        cls_ = emb_;
    } else if (need("output", &cls_, m_.vocab_size, dim) != 0) {
        return fail("model image lacks the output classifier");
    }
    hid_ = m_.hidden_dim;
    for (l = 0; l < m_.n_layers; l++) {
        tt_tensor *t = &layers_[l].att_norm;
        uint32_t k;
        static const uint8_t kind_rows[9] = {1, 0, 2, 2, 0, 1, 3, 0, 3}; /* 0 dim 2 kv 3 hid */
        for (k = 0; k < 9; k++) {
            uint32_t n = 0, rows, cols;
            const char *s = kinds[k];
            memcpy(name, "layers.", 7);
            n = 7;
            if (l >= 10) name[n++] = (char)('0' + l / 10u);
            name[n++] = (char)('0' + l % 10u);
            name[n++] = '.';
            while (*s) name[n++] = *s++;
            name[n] = 0;
            rows = kind_rows[k] == 1 ? 1u : kind_rows[k] == 0 ? dim
                 : kind_rows[k] == 2 ? kv_dim_ : hid_;
            cols = k == 7 ? hid_ : dim;
            if (need(name, &t[k], rows, cols) != 0 ||
                ((k == 0 || k == 5) && t[k].code != TT_TLM_F32))
                return fail("model image: a layer tensor is missing or has the wrong shape");
        }
        if (layers_[l].w2.cols > max_cols_) max_cols_ = layers_[l].w2.cols;
    }
    ctx_ = m_.seq_len;
    if (TT_MAX_SEQ && TT_MAX_SEQ < ctx_) ctx_ = TT_MAX_SEQ;
    if (max_cols_ < hid_) max_cols_ = hid_;
    /* Arena layout: activations, matmul scratch, sampler scratch, then the KV cache. */
    if (max_cols_ < dim) max_cols_ = dim;
    /* x and xb feed matmuls: sized to the widest (padded) input, the tail stays zero. */
    x_ = take(&off, 4u * max_cols_);
    xb_ = take(&off, 4u * max_cols_);
    q_ = take(&off, 4u * dim);
    hb_ = take(&off, 4u * max_cols_);
    hb2_ = take(&off, 4u * max_cols_);
    att_ = take(&off, 4u * ctx_);
    logits_ = take(&off, 4u * m_.vocab_size);
    idx_ = take(&off, 2u * m_.vocab_size);
    qa_.xe = take(&off, 2u * max_cols_);
    qa_.qg = take(&off, 8u * (max_cols_ / TT_MIN_GROUP + 1u));
    qa_.x = 0;
    fixed_bytes_ = off;
    kvb = 4u * m_.n_layers * ctx_ * kv_dim_;
    if ((uint64_t)off + 2u * (uint64_t)kvb > TT_ARENA_BYTES)
        return fail("arena too small for this model: rebuild with a larger TT_ARENA_BYTES "
                    "or a shorter TT_MAX_SEQ (tinytelem firmware build sizes it)");
    memset(arena_, 0, fixed_bytes_);
    kc_ = take(&off, kvb);
    vc_ = take(&off, kvb);
    info_.name = m_.name;
    memcpy(info_.hash, tlm_model_sha256, 32);
    info_.vocab_size = m_.vocab_size;
    info_.seq_len = ctx_;
    info_.n_layers = m_.n_layers;
    info_.arena_bytes = TT_ARENA_BYTES;
    tt_engine_error = "ok";
    ready_ = 1;
    return 0;
}

const tt_model_info *tt_engine_info(void) { return &info_; }

void tt_engine_reset(void)
{
    /* Nothing to clear: position p's K and V are written before any attention reads them,
     * and attention at p reads positions 0..p only. */
    last_pos_ = 0;
}

/* y = W x, or y += W x (`add`); an input is quantized once for all the matmuls that read it
 * until forget() says its vector was rewritten. */
static void matvec(const tt_tensor *t, const float *x, float *y, int add)
{
    tt_matvec(t, x, y, &qa_, add);
    macs_ += (uint64_t)t->rows * t->cols;
}

static void rope(float *v, uint32_t n, uint32_t pos)
{
    uint32_t i, hs = m_.head_dim;
    const uint8_t *cp = cos_.data + 4u * pos * (hs / 2u), *sp = sin_.data + 4u * pos * (hs / 2u);
    for (i = 0; i < n; i += 2) {
        uint32_t j = (i % hs) / 2u;
        float c = tt_ldf(cp + 4u * j), s = tt_ldf(sp + 4u * j), a = v[i], b = v[i + 1];
        v[i] = TT_FADD(TT_FMUL(a, c), -TT_FMUL(b, s));
        v[i + 1] = TT_FADD(TT_FMUL(a, s), TT_FMUL(b, c));
    }
}

static void attention(uint32_t l, uint32_t pos)
{
    uint32_t h, t, i, hs = m_.head_dim, kv_mul = m_.n_heads / m_.n_kv_heads;
    float sq = tt_sqrtf((float)hs);
    const float *kl = kc_ + l * ctx_ * kv_dim_, *vl = vc_ + l * ctx_ * kv_dim_;
    for (h = 0; h < m_.n_heads; h++) {
        const float *qh = q_ + h * hs;
        uint32_t ko = (h / kv_mul) * hs;
        float *out = xb_ + h * hs;
        for (t = 0; t <= pos; t++) {
            const float *k = kl + t * kv_dim_ + ko;
            float s = 0.0f;
            for (i = 0; i < hs; i++) s = TT_FADD(s, TT_FMUL(qh[i], k[i]));
            att_[t] = s / sq;
        }
        tt_softmax(att_, pos + 1u);
        for (i = 0; i < hs; i++) {
            float acc = 0.0f;
            for (t = 0; t <= pos; t++) acc = TT_FADD(acc, TT_FMUL(att_[t], vl[t * kv_dim_ + ko + i]));
            out[i] = acc;
        }
    }
    macs_ += (uint64_t)2u * m_.n_heads * hs * (pos + 1u);
}

int tt_engine_forward(uint32_t token, uint32_t pos)
{
    uint32_t l, i, dim = m_.dim;
    if (!ready_ || token >= m_.vocab_size || pos >= ctx_) return -1;
    last_pos_ = pos;
    tt_span_begin(TT_NO_LAYER, TT_OP_EMBED);
    tt_row(&emb_, token, x_, dim);
    tt_span_end(TT_NO_LAYER, TT_OP_EMBED);
    for (l = 0; l < m_.n_layers; l++) {
        const layer_w *w = &layers_[l];
        float *kr = kc_ + (l * ctx_ + pos) * kv_dim_, *vr = vc_ + (l * ctx_ + pos) * kv_dim_;
        tt_span_begin((uint16_t)l, TT_OP_LAYER);
        tt_span_begin((uint16_t)l, TT_OP_ATTN_NORM);
        tt_rmsnorm(xb_, x_, &w->att_norm, dim);
        tt_span_end((uint16_t)l, TT_OP_ATTN_NORM);
        tt_span_begin((uint16_t)l, TT_OP_QKV);
        qa_.x = 0;
        matvec(&w->wq, xb_, q_, 0);
        matvec(&w->wk, xb_, kr, 0);
        matvec(&w->wv, xb_, vr, 0);
        tt_span_end((uint16_t)l, TT_OP_QKV);
        tt_span_begin((uint16_t)l, TT_OP_ROPE);
        rope(q_, dim, pos);
        rope(kr, kv_dim_, pos);
        tt_span_end((uint16_t)l, TT_OP_ROPE);
        tt_span_begin((uint16_t)l, TT_OP_ATTENTION);
        attention(l, pos);
        tt_span_end((uint16_t)l, TT_OP_ATTENTION);
        tt_span_begin((uint16_t)l, TT_OP_ATTN_OUT);
        qa_.x = 0;
        matvec(&w->wo, xb_, x_, 1);
        tt_span_end((uint16_t)l, TT_OP_ATTN_OUT);
        tt_span_begin((uint16_t)l, TT_OP_FFN_NORM);
        tt_rmsnorm(xb_, x_, &w->ffn_norm, dim);
        tt_span_end((uint16_t)l, TT_OP_FFN_NORM);
        tt_span_begin((uint16_t)l, TT_OP_FFN);
        qa_.x = 0;
        matvec(&w->w1, xb_, hb_, 0);
        matvec(&w->w3, xb_, hb2_, 0);
        for (i = 0; i < hid_; i++) {
            float h1 = hb_[i];
            hb_[i] = TT_FMUL(TT_FMUL(h1, 1.0f / TT_FADD(1.0f, tt_expf(-h1))), hb2_[i]);
        }
        for (i = hid_; i < w->w2.cols; i++) hb_[i] = 0.0f; /* group padding: zero-extend */
        qa_.x = 0;
        matvec(&w->w2, hb_, x_, 1);
        tt_span_end((uint16_t)l, TT_OP_FFN);
        tt_span_end((uint16_t)l, TT_OP_LAYER);
    }
    tt_span_begin(TT_NO_LAYER, TT_OP_FINAL_NORM);
    tt_rmsnorm(x_, x_, &norm_, dim);
    tt_span_end(TT_NO_LAYER, TT_OP_FINAL_NORM);
    tt_span_begin(TT_NO_LAYER, TT_OP_CLASSIFIER);
    qa_.x = 0;
    matvec(&cls_, x_, logits_, 0);
    tt_span_end(TT_NO_LAYER, TT_OP_CLASSIFIER);
    return 0;
}

const float *tt_engine_logits(void) { return logits_; }

static uint32_t rng_u32(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (uint32_t)((*s * 0x2545F4914F6CDD1Dull) >> 32);
}

uint32_t tt_engine_sample(float temperature, uint64_t *rng)
{
    uint32_t i, n = m_.vocab_size, best = 0, cnt = 0, last;
    float coin, topp = TT_TOPP, cutoff, cum, r;
    if (!ready_) return TT_BOS;
    if (!(temperature > 0.0f)) {
        for (i = 1; i < n; i++)
            if (logits_[i] > logits_[best]) best = i;
        return best;
    }
    for (i = 0; i < n; i++) logits_[i] = logits_[i] / temperature;
    tt_softmax(logits_, n);
    coin = (float)(rng_u32(rng) >> 8) / 16777216.0f;
    if (topp <= 0.0f || topp >= 1.0f) {
        cum = 0.0f;
        for (i = 0; i < n; i++) {
            cum += logits_[i];
            if (coin < cum) return i;
        }
        return n - 1u;
    }
    /* top-p: candidates above the cutoff, by probability descending, ties by lower id
     * (insertion sort is stable), then the nucleus and a draw inside it. */
    cutoff = (1.0f - topp) / (float)(n - 1u);
    for (i = 0; i < n; i++) {
        if (logits_[i] >= cutoff) {
            uint32_t j = cnt++;
            while (j > 0 && logits_[idx_[j - 1]] < logits_[i]) {
                idx_[j] = idx_[j - 1];
                j--;
            }
            idx_[j] = (uint16_t)i;
        }
    }
    cum = 0.0f;
    last = cnt - 1u;
    for (i = 0; i < cnt; i++) {
        cum += logits_[idx_[i]];
        if (cum > topp) { last = i; break; }
    }
    r = coin * cum;
    cum = 0.0f;
    for (i = 0; i <= last; i++) {
        cum += logits_[idx_[i]];
        if (r < cum) return idx_[i];
    }
    return idx_[last];
}

uint32_t tt_engine_arena_used(void)
{
    return ready_ ? fixed_bytes_ + tt_engine_kv_bytes(last_pos_ + 1u) : 0u;
}

uint32_t tt_engine_kv_bytes(uint32_t n_pos)
{
    return 2u * 4u * m_.n_layers * kv_dim_ * n_pos;
}

uint64_t tt_engine_macs(void) { return macs_; }
