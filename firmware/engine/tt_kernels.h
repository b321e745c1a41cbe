/*
 * The arithmetic of docs/quantization.md ("Integer arithmetic contract"), which the host's
 * tinytelem.models.qinfer mirrors bit for bit: every float sum is a sequential loop from 0.0f,
 * integer dot products are exact, and exp / sqrt / rint are our own functions so no libm (and
 * no libm difference) is involved. Build with -ffp-contract=off, never -ffast-math.
 *
 * The one hook for fast kernels is tt_dot_i8(): the scalar loop everywhere, SMLAD/SXTB16 on
 * Cortex-M4/M7 (TT_KERNELS_DSP). Integer sums are exact in any order, so both give the same bits.
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

/* Scratch the matmul needs: xq (cols int8), d and sums (cols / TT_MIN_GROUP each). */
typedef struct tt_scratch {
    int8_t *xq;
    float *d;
    int32_t *sums;
} tt_scratch;

/* y[r] = sum_c W[r][c] x[c] for r < rows. x has t->cols entries (callers zero-extend). */
void tt_matvec(const tt_tensor *t, const float *x, float *y, const tt_scratch *s);
/* Row `r` of W dequantized: (float)scale * (float)level, first n columns. */
void tt_row(const tt_tensor *t, uint32_t r, float *out, uint32_t n);
/* o = w * (ss * x) with ss = 1 / sqrt(sum(x*x) / n + 1e-5). */
void tt_rmsnorm(float *o, const float *x, const tt_tensor *w, uint32_t n);
void tt_softmax(float *x, uint32_t n);

#endif
