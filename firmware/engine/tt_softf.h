/*
 * Float arithmetic on cores without an FPU (RV32IMAC, Cortex-M0+): the engine's hot float
 * operations through short integer fast paths that give the IEEE-754 binary32 result
 * (round to nearest, ties to even) bit for bit, as the compiler's soft-float library does.
 * They cover normal operands and normal results; zeros, subnormals, infinities, NaNs and
 * results that overflow or underflow go to the compiler's own operation, so every input
 * gets exactly the library's answer. FPU builds use the operators themselves.
 *
 * TT_FMUL(a, b), TT_FADD(a, b) and TT_I2F(i) are the only names the engine uses.
 */
#ifndef TT_SOFTF_H
#define TT_SOFTF_H

#include <stdint.h>

#if !defined(TT_FAST_SOFTFLOAT) && \
    ((defined(__riscv) && !defined(__riscv_flen)) || (defined(__arm__) && !defined(__ARM_FP)))
#define TT_FAST_SOFTFLOAT 1
#endif

#ifdef TT_FAST_SOFTFLOAT
/* Defined in tt_kernels.c (out of line: one copy of each in flash). */
float tt_fmul(float a, float b);
float tt_fadd(float a, float b);
float tt_i2f(int32_t i); /* exact for |i| < 2^24 */

#define TT_FMUL(a, b) tt_fmul((a), (b))
#define TT_FADD(a, b) tt_fadd((a), (b))
#define TT_I2F(i) tt_i2f(i)
#else
#define TT_FMUL(a, b) ((a) * (b))
#define TT_FADD(a, b) ((a) + (b))
#define TT_I2F(i) ((float)(i))
#endif

#endif
