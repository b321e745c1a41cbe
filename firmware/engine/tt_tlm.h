/*
 * Reader of the .tlm model container (docs/tlm-format.md), for an image linked into flash as
 * a C array (tinytelem.models.export_c). The engine uses the tensors in place: nothing is
 * copied, so the weights stay in flash (XIP) and RAM holds only activations and the KV cache.
 */
#ifndef TT_TLM_H
#define TT_TLM_H

#include <stdint.h>

#define TT_TLM_HEADER 192u
#define TT_TLM_F32 0x00u
#define TT_TLM_F16 0x01u
#define TT_TLM_SYM 0x10u
#define TT_TLM_ASYM 0x20u

/* The tensor kinds whose kernels are compiled in. A build that links one model passes the
 * kinds that model holds (firmware/Makefile KERNELS, computed by the host build from the
 * .tlm), so kernels the model never calls cost no flash; without it every kernel is built.
 * tt_tlm_open refuses a tensor whose kernel is missing. */
#define TT_K_F32 0x001u
#define TT_K_F16 0x002u
#define TT_K_B2 0x004u
#define TT_K_B3 0x008u
#define TT_K_B4 0x010u
#define TT_K_B8 0x020u
#define TT_K_ASYM 0x040u   /* asymmetric groups (a zero point per group) */
#define TT_K_GANY 0x080u   /* quantized groups of other than 32 columns */
#define TT_K_ALL 0x0FFu
#ifndef TT_KERNELS
#define TT_KERNELS TT_K_ALL
#endif
#define TT_HAS(k) ((TT_KERNELS & (k)) != 0u)

typedef struct tt_tensor {
    uint8_t code;              /* type code: 0x00 f32, 0x01 f16, 0x1b / 0x2b quantized */
    uint8_t bits;              /* 2, 3, 4, 8 (quantized), 0 otherwise */
    uint16_t group;            /* columns per group (quantized) */
    uint32_t rows, cols;       /* 1-D tensors: rows = 1, cols = n */
    const uint8_t *data;
    const uint8_t *scales;     /* f16, rows * cols / group */
    const uint8_t *zeros;      /* u8, asymmetric only */
} tt_tensor;

typedef struct tt_tlm {
    const uint8_t *image;
    uint32_t size, alignment, flags, count, table, entry_size, data_off, data_size;
    uint32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len, head_dim;
    const char *name;          /* NUL-terminated inside the header */
} tt_tlm;

/* Validate (magic, version, size, CRC, header, every table entry) and fill *m.
 * Returns 0, or a negative code; *why names the problem. */
int tt_tlm_open(tt_tlm *m, const uint8_t *image, uint32_t size, const char **why);
/* The tensor called `name`, or 0 when absent. *t is filled on success. */
int tt_tlm_find(const tt_tlm *m, const char *name, tt_tensor *t);
uint32_t tt_tlm_crc32(const uint8_t *p, uint32_t n);

#endif
