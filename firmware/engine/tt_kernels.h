/*
 * The arithmetic of docs/quantization.md ("Integer arithmetic contract"), which the host's
 * tinytelem.models.qinfer mirrors bit for bit: every float sum is a sequential loop from 0.0f,
 * integer dot products are exact, and exp / sqrt / rint are our own functions so no libm (and
 * no libm difference) is involved. Build with -ffp-contract=off, never -ffast-math.
 *
 * Integer sums are exact in any order, so the kernels may pair, reorder and pack products as
 * they like: SMLAD on 16-bit pairs on Cortex-M4/M7 (TT_KERNELS_DSP), a SWAR multiply of two
 * pairs per 32-bit MUL elsewhere; the float work per group is the contract's, in its order.
 */
#ifndef TT_KERNELS_H
#define TT_KERNELS_H

#include <stdint.h>

#include "tt_tlm.h"

#define TT_MIN_GROUP 16u

float tt_expf(float x);
float tt_rintf(float x);        /* round half to even, |x| < 2^22 */
float tt_sqrtf(float x);        /* correctly rounded, x >= 0 finite */
float tt_f16(uint16_t h);       /* IEEE binary16 -> binary32 (exact) */
float tt_ldf(const uint8_t *p); /* little-endian f32 load from flash */

/* Sum of a[k] * b[k] for k < n (n a multiple of 4; a, b 4-byte aligned). */
int32_t tt_dot_i8(const int8_t *a, const int8_t *b, uint32_t n);

/*
 * An input vector quantized for the integer matmuls (contract step 1): per group of `group`
 * columns the scale d and the sum of the int8 levels, and the levels themselves expanded once
 * into 16-bit pairs in the order the weight unpacking produces them, so the row loop does no
 * per-element activation work. A block of E columns (E = 32 / bits: 16 two-bit, 8 four-bit,
 * 4 eight-bit fields per 32-bit word; 8 for three-bit, one 24-bit chunk) becomes E/2 words,
 * word j holding the pair (x[j], x[j + E/2]): on DSP cores low half x[j] (an SMLAD operand),
 * elsewhere the 32-bit value x[j + E/2] + 65536 * x[j] (a SWAR multiply operand).
 * One quantization serves every matmul of the same input (q, k and v; w1 and w3).
 */
typedef struct tt_qgroup {
    float d;            /* scale: amax / 127 */
    int32_t sum;        /* sum of the int8 levels */
} tt_qgroup;

typedef struct tt_qact {
    uint32_t *xe;       /* cols / 2 words */
    tt_qgroup *qg;      /* cols / group */
    const float *x;     /* the vector quantized (0: none yet) */
    uint32_t cols, group, block; /* block: E of the expansion held in xe */
} tt_qact;

/* Quantize x (cols values) in groups of `group` and expand for blocks of `block` columns.
 * Does nothing when *a already holds exactly that. */
void tt_quantize(tt_qact *a, const float *x, uint32_t cols, uint32_t group, uint32_t block);

/* y[r] = sum_c W[r][c] x[c] for r < rows (y[r] += ... when `add`: the residual x + W v in
 * one pass, same bits as y = W v then x + y). x has t->cols entries (callers zero-extend). */
void tt_matvec(const tt_tensor *t, const float *x, float *y, tt_qact *a, int add);
/* Row `r` of W dequantized: (float)scale * (float)level, first n columns. */
void tt_row(const tt_tensor *t, uint32_t r, float *out, uint32_t n);
/* o = w * (ss * x) with ss = 1 / sqrt(sum(x*x) / n + 1e-5). */
void tt_rmsnorm(float *o, const float *x, const tt_tensor *w, uint32_t n);
void tt_softmax(float *x, uint32_t n);

#endif
