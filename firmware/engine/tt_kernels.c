/* Kernels of the llama engine: see tt_kernels.h for the contract they follow. */
#include "tt_kernels.h"

#include "tt_softf.h"
#include "tt_string.h"

/* Bit casts by union (memcpy is a real call in freestanding builds). */
typedef union { float f; uint32_t u; } tt_fu;
typedef float __attribute__((may_alias, aligned(4))) tt_f32a;

float tt_ldf(const uint8_t *p)
{
    return *(const tt_f32a *)p; /* f32 tensors are 4-byte aligned (docs/tlm-format.md) */
}

static inline float from_bits(uint32_t b)
{
    tt_fu v;
    v.u = b;
    return v.f;
}

static inline uint32_t to_bits(float f)
{
    tt_fu v;
    v.f = f;
    return v.u;
}

#ifdef TT_FAST_SOFTFLOAT
/* The soft-float fast paths of tt_softf.h: normal operands and results computed here with
 * round to nearest even; everything else by the compiler's library (same bits). */
float tt_fmul(float a, float b)
{
    uint32_t x = to_bits(a), y = to_bits(b);
    uint32_t ex = (x >> 23) & 0xFFu, ey = (y >> 23) & 0xFFu, m, rest, half;
    uint64_t p;
    int32_t e;
    if (ex - 1u >= 0xFEu || ey - 1u >= 0xFEu) return a * b;
    p = (uint64_t)((x & 0x7FFFFFu) | 0x800000u) * ((y & 0x7FFFFFu) | 0x800000u);
    e = (int32_t)(ex + ey) - 127;
    if (p >> 47) {
        m = (uint32_t)(p >> 24);
        rest = (uint32_t)p & 0xFFFFFFu;
        half = 0x800000u;
        e++;
    } else {
        m = (uint32_t)(p >> 23);
        rest = (uint32_t)p & 0x7FFFFFu;
        half = 0x400000u;
    }
    if (rest > half || (rest == half && (m & 1u))) {
        m++;
        if (m == 0x1000000u) {
            m >>= 1;
            e++;
        }
    }
    if (e <= 0 || e >= 255) return a * b;
    return from_bits(((x ^ y) & 0x80000000u) | ((uint32_t)e << 23) | (m & 0x7FFFFFu));
}

float tt_fadd(float a, float b)
{
    uint32_t x = to_bits(a), y = to_bits(b), ax = x & 0x7FFFFFFFu, ay = y & 0x7FFFFFFFu;
    uint32_t ex, ey, d, mx, my, m, r;
    int32_t e;
    if (ax < ay) {
        uint32_t t = x;
        x = y; y = t;
        t = ax; ax = ay; ay = t;
    }
    ex = ax >> 23;
    ey = ay >> 23;
    if (ex - 1u >= 0xFEu || ey - 1u >= 0xFEu) return a + b;
    d = ex - ey;
    if (d >= 30u) return from_bits(x); /* |y| < ulp(x) / 2^8: rounds to x */
    mx = ((ax & 0x7FFFFFu) | 0x800000u) << 6; /* 6 guard bits below the last place */
    my = ((ay & 0x7FFFFFu) | 0x800000u) << 6;
    if (d) my = (my >> d) | ((my << (32u - d)) != 0u); /* sticky bit */
    e = (int32_t)ex;
    if ((x ^ y) >> 31) {
        m = mx - my;
        if (m == 0u) return 0.0f;
        while (m < (1u << 29)) { /* more than one step only when d <= 1: then exact */
            m <<= 1;
            e--;
        }
    } else {
        m = mx + my;
        if (m >= (1u << 30)) {
            m = (m >> 1) | (m & 1u);
            e++;
        }
    }
    r = m & 0x3Fu;
    m >>= 6;
    if (r > 0x20u || (r == 0x20u && (m & 1u))) {
        m++;
        if (m == 0x1000000u) {
            m >>= 1;
            e++;
        }
    }
    if (e <= 0 || e >= 255) return a + b;
    return from_bits((x & 0x80000000u) | ((uint32_t)e << 23) | (m & 0x7FFFFFu));
}

float tt_i2f(int32_t i)
{
    uint32_t s = 0, m = (uint32_t)i, e = 150u;
    if (i == 0) return 0.0f;
    if (i < 0) {
        s = 0x80000000u;
        m = 0u - m;
    }
    if (m >= 0x1000000u) return (float)i;
    if (m < (1u << 8)) { m <<= 16; e -= 16u; }
    if (m < (1u << 16)) { m <<= 8; e -= 8u; }
    if (m < (1u << 20)) { m <<= 4; e -= 4u; }
    if (m < (1u << 22)) { m <<= 2; e -= 2u; }
    if (m < (1u << 23)) { m <<= 1; e -= 1u; }
    return from_bits(s | (e << 23) | (m & 0x7FFFFFu));
}
#endif

float tt_f16(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
    if (e == 0) return from_bits(to_bits((float)man * (1.0f / 16777216.0f)) | sign);
    if (e == 31) return from_bits(sign | 0x7F800000u | (man << 13));
    return from_bits(sign | ((e + 112u) << 23) | (man << 13));
}

float tt_rintf(float x)
{
    /* Adding 1.5 * 2^23 pushes the fraction out in round-to-nearest-even. */
    /* Without -ffast-math (-fassociative-math) the compiler may not fold the pair. */
    const float b = 12582912.0f;
    return TT_FADD(TT_FADD(x, b), -b);
}

/* (int32_t)v for a v that holds an integer, |v| < 2^23 (tt_rintf's results). */
static inline int32_t tt_f2i(float v)
{
#ifdef TT_FAST_SOFTFLOAT
    uint32_t u = to_bits(v), e = (u >> 23) & 0xFFu;
    int32_t m;
    if (e < 127u) return 0;
    m = (int32_t)(((u & 0x7FFFFFu) | 0x800000u) >> (150u - e));
    return (u >> 31) ? -m : m;
#else
    return (int32_t)v;
#endif
}

float tt_sqrtf(float x)
{
    /* x = M * 2^(e - 23), M in [2^23, 2^24); make e even, then sqrt(M * 2^23) by integer
     * square root gives 24 bits; the remainder rounds to nearest (a tie is impossible). */
    uint32_t b = to_bits(x), m;
    int32_t e;
    uint64_t n, q = 0, bit, rem;
    if (x <= 0.0f || b >= 0x7F800000u) return x;
    e = (int32_t)(b >> 23) - 127;
    m = b & 0x7FFFFFu;
    if (b >> 23) {
        m |= 0x800000u;
    } else { /* subnormal: normalise */
        e = -126;
        while (!(m & 0x800000u)) { m <<= 1; e--; }
    }
    n = (uint64_t)m << 23;
    if (e & 1) { n <<= 1; e--; }
    rem = n;
    for (bit = (uint64_t)1 << 48; bit > rem; bit >>= 2) {}
    while (bit) {
        if (rem >= q + bit) {
            rem -= q + bit;
            q = (q >> 1) + bit;
        } else {
            q >>= 1;
        }
        bit >>= 2;
    }
    if (rem > q) q++;
    return from_bits((uint32_t)((e / 2 + 127) << 23) + ((uint32_t)q - 0x800000u));
}

float tt_expf(float x)
{
    float n, r, p, y;
    int32_t ni;
    if (x < -86.0f) return 0.0f;
    if (x > 88.0f) x = 88.0f;
    n = tt_rintf(TT_FMUL(x, 1.44269504088896341f));
    r = TT_FADD(TT_FADD(x, -TT_FMUL(n, 0.693359375f)), -TT_FMUL(n, -2.12194440e-4f));
    p = 1.9875691500e-4f;
    p = TT_FADD(TT_FMUL(p, r), 1.3981999507e-3f);
    p = TT_FADD(TT_FMUL(p, r), 8.3334519073e-3f);
    p = TT_FADD(TT_FMUL(p, r), 4.1665795894e-2f);
    p = TT_FADD(TT_FMUL(p, r), 1.6666665459e-1f);
    p = TT_FADD(TT_FMUL(p, r), 5.0000001201e-1f);
    y = TT_FADD(TT_FADD(TT_FMUL(p, TT_FMUL(r, r)), r), 1.0f);
    ni = (int32_t)n;
    if (ni < -126) ni = -126;
    if (ni > 127) ni = 127;
    return TT_FMUL(y, from_bits((uint32_t)(ni + 127) << 23));
}

void tt_softmax(float *x, uint32_t n)
{
    float m = x[0], s = 0.0f;
    uint32_t i;
    for (i = 1; i < n; i++)
        if (x[i] > m) m = x[i];
    for (i = 0; i < n; i++) {
        x[i] = tt_expf(TT_FADD(x[i], -m));
        s = TT_FADD(s, x[i]);
    }
    for (i = 0; i < n; i++) x[i] = x[i] / s;
}

void tt_rmsnorm(float *o, const float *x, const tt_tensor *w, uint32_t n)
{
    float ss = 0.0f;
    uint32_t i;
    for (i = 0; i < n; i++) ss = TT_FADD(ss, TT_FMUL(x[i], x[i]));
    ss = ss / (float)n;
    ss = ss + 1e-5f;
    ss = 1.0f / tt_sqrtf(ss);
    for (i = 0; i < n; i++) o[i] = TT_FMUL(tt_ldf(w->data + 4u * i), TT_FMUL(ss, x[i]));
}

#if defined(TT_KERNELS_DSP) && defined(__ARM_FEATURE_DSP)
#define TT_DSP 1
/* Cortex-M4/M7: two 16-bit lanes per SMLAD; SXTB16/UXTB16 widen two bytes at once. */
static inline uint32_t sxtb16(uint32_t v)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1" : "=r"(r) : "r"(v));
    return r;
}
static inline uint32_t sxtb16_ror8(uint32_t v)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
static inline uint32_t uxtb16(uint32_t v)
{
    uint32_t r;
    __asm__("uxtb16 %0, %1" : "=r"(r) : "r"(v));
    return r;
}
static inline uint32_t uxtb16_ror8(uint32_t v)
{
    uint32_t r;
    __asm__("uxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
static inline int32_t smlad(uint32_t a, uint32_t b, int32_t acc)
{
    int32_t r;
    __asm__("smlad %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}

int32_t tt_dot_i8(const int8_t *a, const int8_t *b, uint32_t n)
{
    int32_t acc = 0;
    uint32_t i, wa, wb;
    for (i = 0; i < n; i += 4) {
        __builtin_memcpy(&wa, a + i, 4);
        __builtin_memcpy(&wb, b + i, 4);
        acc = smlad(sxtb16(wa), sxtb16(wb), acc);
        acc = smlad(sxtb16_ror8(wa), sxtb16_ror8(wb), acc);
    }
    return acc;
}
#else
#define TT_DSP 0
int32_t tt_dot_i8(const int8_t *a, const int8_t *b, uint32_t n)
{
    int32_t acc = 0;
    uint32_t i;
    for (i = 0; i < n; i++) acc += (int32_t)a[i] * (int32_t)b[i];
    return acc;
}
#endif

/* Weight words: the .tlm layout puts every 2-, 4- and 8-bit row (and group) on a 4-byte
 * boundary (cols is a multiple of 16, regions are aligned), so they load as words. */
typedef uint32_t __attribute__((may_alias, aligned(4))) tt_w32;
typedef uint16_t __attribute__((may_alias, aligned(2))) tt_h16;

static inline uint32_t ld24(const uint8_t *p) /* a 3-bit chunk: 8 fields in 24 bits */
{
#if TT_DSP
    uint32_t v;
    __builtin_memcpy(&v, p, 4); /* unaligned LDR: the 4th byte is masked off by the callers */
    return v;
#else
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
#endif
}

/* Spread a 24-bit chunk so fields k and k + 4 sit at bits 3k and 16 + 3k. */
static inline uint32_t spread24(uint32_t c) { return (c & 0xFFFu) | ((c << 4) & 0x0FFF0000u); }

static inline float f16_to_f32(uint32_t h)
{
#if defined(__ARM_FP) && defined(__ARM_ARCH_7EM__) /* FPv4-SP / FPv5: VCVTB from f16 */
    float f;
    __asm__("vmov %0, %1\n\tvcvtb.f32.f16 %0, %0" : "=t"(f) : "r"(h));
    return f;
#else
    uint32_t e = h & 0x7C00u;
    if (e != 0u && e != 0x7C00u)
        return from_bits(((h & 0x8000u) << 16) | (((h & 0x7FFFu) << 13) + 0x38000000u));
    return tt_f16((uint16_t)h);
#endif
}

/* Columns per expansion block for a matrix: E of tt_qact, or 1 (plain int8 levels) where
 * the fast kernels do not apply (2-bit groups that are not a multiple of 16; 8-bit without
 * DSP, whose scalar loop wants the levels as they are). */
static uint32_t block_for(const tt_tensor *t)
{
    if (TT_HAS(TT_K_B8) && t->bits == 8u) return TT_DSP ? 4u : 1u;
    if (TT_HAS(TT_K_B2) && t->bits == 2u) return (t->group % 16u) == 0u ? 16u : 1u;
    return 8u; /* 3-bit chunks and 4-bit words hold 8 fields */
}

void tt_quantize(tt_qact *a, const float *x, uint32_t cols, uint32_t group, uint32_t block)
{
    int8_t q[256] __attribute__((aligned(4)));
    uint32_t j, k, b, h = block / 2u;
    if (a->x == x && a->cols == cols && a->group == group && a->block == block) return;
    for (j = 0; j < cols / group; j++) {
        const float *xg = x + j * group;
        float amax = 0.0f, d, id;
        int32_t sum = 0;
        for (k = 0; k < group; k++) {
            float v = xg[k];
            if (v < 0.0f) v = -v;
            if (v > amax) amax = v;
        }
        d = amax / 127.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        for (k = 0; k < group; k++) {
            int32_t qi = tt_f2i(tt_rintf(TT_FMUL(xg[k], id)));
            if (qi > 127) qi = 127;
            if (qi < -127) qi = -127;
            q[k] = (int8_t)qi;
            sum += qi;
        }
        a->qg[j].d = d;
        a->qg[j].sum = sum;
        if (block == 1u) {
            memcpy((int8_t *)a->xe + j * group, q, group);
            continue;
        }
        for (b = 0; b < group; b += block) {
            uint32_t *o = a->xe + (j * group + b) / 2u;
            for (k = 0; k < h; k++) {
                int32_t lo = q[b + k], hi = q[b + k + h];
#if TT_DSP
                o[k] = ((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16);
#else
                o[k] = (uint32_t)hi + ((uint32_t)lo << 16);
#endif
            }
        }
    }
    a->x = x;
    a->cols = cols;
    a->group = group;
    a->block = block;
}

/* Dot products of one group of stored fields (unsigned, or int8 for symmetric 8-bit) with the
 * expanded activations, g columns. */
#if TT_DSP
/* Each step: the weight word(s), the activation pairs by LDRD, one AND (or SXTB16/UXTB16) and
 * one SMLAD per two MACs. "m" operands tell the compiler which memory the asm reads. */
#define TT_IN16(p) "m"(*(const uint32_t(*)[4])(p))
#define TT_IN32(p) "m"(*(const uint32_t(*)[8])(p))

static inline __attribute__((always_inline)) int32_t dot_q4(const uint8_t **wp, const uint32_t **xp, uint32_t g)
{
    const uint8_t *w = *wp;
    const uint32_t *xe = *xp;
    const uint32_t m = 0x000F000Fu;
    int32_t acc = 0;
    uint32_t v, a0, a1, a2, a3, t;
    for (; g >= 16u; g -= 16u) {
        uint32_t u;
        __asm__("ldrd %[v], %[u], [%[w]], #8\n\t"
                "ldrd %[a0], %[a1], [%[x]], #8\n\t"
                "ldrd %[a2], %[a3], [%[x]], #8\n\t"
                "and %[t], %[m], %[v]\n\t"
                "smlad %[acc], %[t], %[a0], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #4\n\t"
                "smlad %[acc], %[t], %[a1], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #8\n\t"
                "smlad %[acc], %[t], %[a2], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #12\n\t"
                "smlad %[acc], %[t], %[a3], %[acc]\n\t"
                "ldrd %[a0], %[a1], [%[x]], #8\n\t"
                "ldrd %[a2], %[a3], [%[x]], #8\n\t"
                "and %[t], %[m], %[u]\n\t"
                "smlad %[acc], %[t], %[a0], %[acc]\n\t"
                "and %[t], %[m], %[u], lsr #4\n\t"
                "smlad %[acc], %[t], %[a1], %[acc]\n\t"
                "and %[t], %[m], %[u], lsr #8\n\t"
                "smlad %[acc], %[t], %[a2], %[acc]\n\t"
                "and %[t], %[m], %[u], lsr #12\n\t"
                "smlad %[acc], %[t], %[a3], %[acc]"
                : [acc] "+r"(acc), [w] "+r"(w), [x] "+r"(xe), [v] "=&r"(v), [u] "=&r"(u),
                  [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [t] "=&r"(t)
                : [m] "r"(m), TT_IN32(xe), "m"(*(const uint32_t(*)[2])w));
    }
    if (g) {
        __asm__("ldr %[v], [%[w]], #4\n\t"
                "ldrd %[a0], %[a1], [%[x]], #8\n\t"
                "ldrd %[a2], %[a3], [%[x]], #8\n\t"
                "and %[t], %[m], %[v]\n\t"
                "smlad %[acc], %[t], %[a0], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #4\n\t"
                "smlad %[acc], %[t], %[a1], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #8\n\t"
                "smlad %[acc], %[t], %[a2], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #12\n\t"
                "smlad %[acc], %[t], %[a3], %[acc]"
                : [acc] "+r"(acc), [w] "+r"(w), [x] "+r"(xe), [v] "=&r"(v),
                  [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [t] "=&r"(t)
                : [m] "r"(m), TT_IN16(xe), "m"(*(const uint32_t *)w));
    }
    *wp = w;
    *xp = xe;
    return acc;
}

static inline __attribute__((always_inline)) int32_t dot_q2(const uint8_t **wp, const uint32_t **xp, uint32_t g)
{
    const uint8_t *w = *wp;
    const uint32_t *xe = *xp;
    const uint32_t m = 0x00030003u;
    int32_t acc = 0;
    uint32_t v, a0, a1, a2, a3, t;
    for (; g; g -= 16u) {
        __asm__("ldr %[v], [%[w]], #4\n\t"
                "ldrd %[a0], %[a1], [%[x]], #8\n\t"
                "ldrd %[a2], %[a3], [%[x]], #8\n\t"
                "and %[t], %[m], %[v]\n\t"
                "smlad %[acc], %[t], %[a0], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #2\n\t"
                "smlad %[acc], %[t], %[a1], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #4\n\t"
                "smlad %[acc], %[t], %[a2], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #6\n\t"
                "smlad %[acc], %[t], %[a3], %[acc]\n\t"
                "ldrd %[a0], %[a1], [%[x]], #8\n\t"
                "ldrd %[a2], %[a3], [%[x]], #8\n\t"
                "and %[t], %[m], %[v], lsr #8\n\t"
                "smlad %[acc], %[t], %[a0], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #10\n\t"
                "smlad %[acc], %[t], %[a1], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #12\n\t"
                "smlad %[acc], %[t], %[a2], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #14\n\t"
                "smlad %[acc], %[t], %[a3], %[acc]"
                : [acc] "+r"(acc), [w] "+r"(w), [x] "+r"(xe), [v] "=&r"(v),
                  [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [t] "=&r"(t)
                : [m] "r"(m), TT_IN32(xe), "m"(*(const uint32_t *)w));
    }
    *wp = w;
    *xp = xe;
    return acc;
}

static inline __attribute__((always_inline)) int32_t dot_q3(const uint8_t **wp, const uint32_t **xp, uint32_t g)
{
    const uint8_t *w = *wp;
    const uint32_t *xe = *xp;
    const uint32_t m = 0x00070007u, hm = 0x0FFF0000u;
    int32_t acc = 0;
    uint32_t v, a0, a1, a2, a3, t;
    for (; g; g -= 8u) {
        __asm__("ldr %[v], [%[w]], #3\n\t"
                "and %[t], %[hm], %[v], lsl #4\n\t"
                "ubfx %[v], %[v], #0, #12\n\t"
                "orr %[v], %[v], %[t]\n\t"
                "ldrd %[a0], %[a1], [%[x]], #8\n\t"
                "ldrd %[a2], %[a3], [%[x]], #8\n\t"
                "and %[t], %[m], %[v]\n\t"
                "smlad %[acc], %[t], %[a0], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #3\n\t"
                "smlad %[acc], %[t], %[a1], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #6\n\t"
                "smlad %[acc], %[t], %[a2], %[acc]\n\t"
                "and %[t], %[m], %[v], lsr #9\n\t"
                "smlad %[acc], %[t], %[a3], %[acc]"
                : [acc] "+r"(acc), [w] "+r"(w), [x] "+r"(xe), [v] "=&r"(v),
                  [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [t] "=&r"(t)
                : [m] "r"(m), [hm] "r"(hm), TT_IN16(xe), "m"(*(const uint8_t(*)[4])w));
    }
    *wp = w;
    *xp = xe;
    return acc;
}

static inline __attribute__((always_inline)) int32_t dot_q8(const uint8_t **wp, const uint32_t **xp, uint32_t g, int sym)
{
    const uint8_t *w = *wp;
    const uint32_t *xe = *xp;
    int32_t acc = 0;
    uint32_t v, u, a0, a1, a2, a3, t;
#define TT_Q8_STEP(X)                                                                     \
    __asm__("ldrd %[v], %[u], [%[w]], #8\n\t"                                             \
            "ldrd %[a0], %[a1], [%[x]], #8\n\t"                                           \
            "ldrd %[a2], %[a3], [%[x]], #8\n\t"                                           \
            X " %[t], %[v]\n\t"                                                           \
            "smlad %[acc], %[t], %[a0], %[acc]\n\t"                                       \
            X " %[t], %[v], ror #8\n\t"                                                   \
            "smlad %[acc], %[t], %[a1], %[acc]\n\t"                                       \
            X " %[t], %[u]\n\t"                                                           \
            "smlad %[acc], %[t], %[a2], %[acc]\n\t"                                       \
            X " %[t], %[u], ror #8\n\t"                                                   \
            "smlad %[acc], %[t], %[a3], %[acc]"                                           \
            : [acc] "+r"(acc), [w] "+r"(w), [x] "+r"(xe), [v] "=&r"(v), [u] "=&r"(u),     \
              [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [t] "=&r"(t) \
            : TT_IN16(xe), "m"(*(const uint32_t(*)[2])w))
    if (sym) {
        for (; g; g -= 8u) TT_Q8_STEP("sxtb16");
    } else {
        for (; g; g -= 8u) TT_Q8_STEP("uxtb16");
    }
#undef TT_Q8_STEP
    *wp = w;
    *xp = xe;
    return acc;
}

/* The two common cases, symmetric groups of 32 at 4 and 8 bits, as one tight loop over the
 * whole matrix: rows and their scales are contiguous, so the weight and scale pointers run
 * on from row to row, and the loop keeps every pointer in a register. One step: 8 columns. */
#define TT_S4(V)                                                                          \
    "ldrd %[a0], %[a1], [%[x]], #8\n\t"                                                   \
    "and %[t], %[m], " V "\n\t"                                                           \
    "smlad %[acc], %[t], %[a0], %[acc]\n\t"                                               \
    "and %[t], %[m], " V ", lsr #4\n\t"                                                   \
    "smlad %[acc], %[t], %[a1], %[acc]\n\t"                                               \
    "ldrd %[a0], %[a1], [%[x]], #8\n\t"                                                   \
    "and %[t], %[m], " V ", lsr #8\n\t"                                                   \
    "smlad %[acc], %[t], %[a0], %[acc]\n\t"                                               \
    "and %[t], %[m], " V ", lsr #12\n\t"                                                  \
    "smlad %[acc], %[t], %[a1], %[acc]\n\t"
#define TT_S8(V)                                                                          \
    "ldrd %[a0], %[a1], [%[x]], #8\n\t"                                                   \
    "sxtb16 %[t], " V "\n\t"                                                              \
    "smlad %[acc], %[t], %[a0], %[acc]\n\t"                                               \
    "sxtb16 %[t], " V ", ror #8\n\t"                                                      \
    "smlad %[acc], %[t], %[a1], %[acc]\n\t"

static inline __attribute__((always_inline)) void rows_s32_(const tt_tensor *t, float *y,
                                                              const tt_qact *a, int add,
                                                              uint32_t bits)
{
    const uint8_t *w = t->data;
    const tt_h16 *sp = (const tt_h16 *)t->scales;
    const uint32_t m = 0x000F000Fu, G = t->cols / 32u;
    uint32_t r;
    for (r = 0; r < t->rows; r++) {
        const uint32_t *xe = a->xe;
        const tt_qgroup *qg = a->qg, *qe = qg + G;
        float acc = 0.0f;
        do {
            int32_t isum = 0;
            uint32_t v, u, a0, a1, tt;
            if (bits == 4u) {
                __asm__("ldrd %[v], %[u], [%[w]], #8\n\t" TT_S4("%[v]") TT_S4("%[u]")
                        "ldrd %[v], %[u], [%[w]], #8\n\t" TT_S4("%[v]") TT_S4("%[u]")
                        : [acc] "+r"(isum), [w] "+r"(w), [x] "+r"(xe), [v] "=&r"(v),
                          [u] "=&r"(u), [a0] "=&r"(a0), [a1] "=&r"(a1), [t] "=&r"(tt)
                        : [m] "r"(m), "m"(*(const uint32_t(*)[16])xe),
                          "m"(*(const uint32_t(*)[4])w));
                isum -= 8 * qg->sum; /* stored fields are level + 8 */
            } else {
                __asm__("ldrd %[v], %[u], [%[w]], #8\n\t" TT_S8("%[v]") TT_S8("%[u]")
                        "ldrd %[v], %[u], [%[w]], #8\n\t" TT_S8("%[v]") TT_S8("%[u]")
                        "ldrd %[v], %[u], [%[w]], #8\n\t" TT_S8("%[v]") TT_S8("%[u]")
                        "ldrd %[v], %[u], [%[w]], #8\n\t" TT_S8("%[v]") TT_S8("%[u]")
                        : [acc] "+r"(isum), [w] "+r"(w), [x] "+r"(xe), [v] "=&r"(v),
                          [u] "=&r"(u), [a0] "=&r"(a0), [a1] "=&r"(a1), [t] "=&r"(tt)
                        : "m"(*(const uint32_t(*)[16])xe), "m"(*(const uint32_t(*)[8])w));
            }
            acc += (float)isum * (qg->d * f16_to_f32(*sp++));
        } while (++qg != qe);
        y[r] = add ? y[r] + acc : acc;
    }
}
#undef TT_S4
#undef TT_S8

static void rows_s32(const tt_tensor *t, float *y, const tt_qact *a, int add)
{
    if (!TT_HAS(TT_K_B8) || (TT_HAS(TT_K_B4) && t->bits == 4u))
        rows_s32_(t, y, a, add, 4u);
    else
        rows_s32_(t, y, a, add, 8u);
}
#else
/* SWAR: a pair p = f[j] + 65536 f[j+h] of unsigned fields times the word x[j+h] + 65536 x[j]
 * is, modulo 2^32, L + 65536 M with M = f[j] x[j] + f[j+h] x[j+h] (wanted) and L = f[j] x[j+h].
 * While |sum L| and |sum M| stay below 2^15, (sum + 2^15) >> 16 is exactly sum M: 8 products
 * of 4-bit fields (|M| <= 30480), 16 of 3-bit (28448), 32 of 2-bit (24384). */
static inline int32_t swar_take(uint32_t s) { return (int32_t)(s + 0x8000u) >> 16; }

static inline __attribute__((always_inline)) int32_t dot_q4(const uint8_t **wp, const uint32_t **xp, uint32_t g)
{
    const uint32_t *xe = *xp;
    const tt_w32 *p = (const tt_w32 *)*wp;
    const uint32_t m = 0x000F000Fu;
    int32_t acc = 0;
    for (; g >= 16u; g -= 16u, xe += 8, p += 2) {
        uint32_t v0 = p[0], v1 = p[1];
        acc += swar_take((v0 & m) * xe[0] + ((v0 >> 4) & m) * xe[1] +
                         ((v0 >> 8) & m) * xe[2] + ((v0 >> 12) & m) * xe[3] +
                         (v1 & m) * xe[4] + ((v1 >> 4) & m) * xe[5] +
                         ((v1 >> 8) & m) * xe[6] + ((v1 >> 12) & m) * xe[7]);
    }
    if (g) {
        uint32_t v0 = p[0];
        acc += swar_take((v0 & m) * xe[0] + ((v0 >> 4) & m) * xe[1] +
                         ((v0 >> 8) & m) * xe[2] + ((v0 >> 12) & m) * xe[3]);
    }
    *wp = (const uint8_t *)p;
    *xp = xe;
    return acc;
}

static inline __attribute__((always_inline)) int32_t dot_q2(const uint8_t **wp, const uint32_t **xp, uint32_t g)
{
    const uint32_t *xe = *xp;
    const tt_w32 *p = (const tt_w32 *)*wp;
    const uint32_t m = 0x00030003u;
    int32_t acc = 0;
    while (g) {
        uint32_t s = 0, n = g < 64u ? g : 64u;
        g -= n;
        for (; n; n -= 16u, xe += 8) {
            uint32_t v = *p++;
            s += (v & m) * xe[0] + ((v >> 2) & m) * xe[1] + ((v >> 4) & m) * xe[2] +
                 ((v >> 6) & m) * xe[3] + ((v >> 8) & m) * xe[4] + ((v >> 10) & m) * xe[5] +
                 ((v >> 12) & m) * xe[6] + ((v >> 14) & m) * xe[7];
        }
        acc += swar_take(s);
    }
    *wp = (const uint8_t *)p;
    *xp = xe;
    return acc;
}

static inline __attribute__((always_inline)) int32_t dot_q3(const uint8_t **wp, const uint32_t **xp, uint32_t g)
{
    const uint8_t *w = *wp;
    const uint32_t *xe = *xp;
    const uint32_t m = 0x00070007u;
    int32_t acc = 0;
    while (g) {
        uint32_t s = 0, n = g < 32u ? g : 32u;
        g -= n;
        for (; n; n -= 8u, xe += 4, w += 3) {
            uint32_t v = spread24(ld24(w));
            s += (v & m) * xe[0] + ((v >> 3) & m) * xe[1] + ((v >> 6) & m) * xe[2] +
                 ((v >> 9) & m) * xe[3];
        }
        acc += swar_take(s);
    }
    *wp = w;
    *xp = xe;
    return acc;
}

static inline __attribute__((always_inline)) int32_t dot_q8(const uint8_t *w, const int8_t *xq, uint32_t g, int sym)
{
    int32_t acc = 0;
    uint32_t k;
    if (sym) {
        const int8_t *s = (const int8_t *)w;
        for (k = 0; k < g; k += 4)
            acc += s[k] * xq[k] + s[k + 1] * xq[k + 1] + s[k + 2] * xq[k + 2] +
                   s[k + 3] * xq[k + 3];
    } else {
        for (k = 0; k < g; k += 4)
            acc += w[k] * xq[k] + w[k + 1] * xq[k + 1] + w[k + 2] * xq[k + 2] +
                   w[k + 3] * xq[k + 3];
    }
    return acc;
}
#endif

/* Any layout, one field at a time (plain int8 activations): the fallback. */
static int32_t dot_any(const tt_tensor *t, const uint8_t *d, const int8_t *xq, uint32_t g)
{
    int32_t acc = 0;
    uint32_t k, bits = t->bits;
    for (k = 0; k < g; k++) {
        int32_t f;
        if (TT_HAS(TT_K_B8) && bits == 8u) {
            f = (t->code & 0xF0u) == TT_TLM_SYM ? (int32_t)(int8_t)d[k] : (int32_t)d[k];
        } else if (TT_HAS(TT_K_B4) && bits == 4u) {
            f = (d[k / 2u] >> (4u * (k & 1u))) & 0xF;
        } else if (TT_HAS(TT_K_B2) && bits == 2u) {
            f = (d[k / 4u] >> (2u * (k & 3u))) & 0x3;
        } else {
            f = (int32_t)(ld24(d + 3u * (k / 8u)) >> (3u * (k & 7u))) & 0x7;
        }
        acc += f * xq[k];
    }
    return acc;
}


/* The contract's float work per row and group, around an integer dot product DOT of the group
 * (which advances w and xe past it): isum = DOT - z * sum(xq), z the field offset (symmetric)
 * or the zero point (asymmetric); acc += (float)isum * (d * scale). */
#define TT_ROWS(DOT, ZERO)                                                                    \
    for (r = 0; r < t->rows; r++) {                                                           \
        const uint8_t *w = t->data + r * rowbytes;                                            \
        const uint8_t *zp = zs ? t->zeros + r * G : &off8;                                    \
        const tt_h16 *sp = (const tt_h16 *)(t->scales + 2u * r * G);                          \
        const uint32_t *xe = a->xe;                                                           \
        const int8_t *xq = (const int8_t *)a->xe;                                             \
        const tt_qgroup *qg = a->qg, *qe = qg + G;                                            \
        float acc = 0.0f;                                                                     \
        (void)zp; (void)xe; (void)xq;                                                         \
        for (; qg != qe; qg++, sp++, zp += zs) {                                              \
            int32_t isum = (DOT) - (ZERO) * qg->sum;                                          \
            acc = TT_FADD(acc, TT_FMUL(TT_I2F(isum), TT_FMUL(qg->d, f16_to_f32(*sp))));       \
        }                                                                                     \
        y[r] = add ? TT_FADD(y[r], acc) : acc;                                                \
    }

static void matvec_q(const tt_tensor *t, float *y, const tt_qact *a, int add)
{
    uint32_t r, g = TT_HAS(TT_K_GANY) ? t->group : 32u, G = t->cols / g, bits = t->bits;
    uint32_t block = a->block, gbytes = g * bits / 8u, rowbytes = G * gbytes;
    int sym = !TT_HAS(TT_K_ASYM) || (t->code & 0xF0u) == TT_TLM_SYM;
    /* level = field - z: z = 2^(bits-1) for symmetric 2/3/4-bit, 0 for symmetric 8-bit (the
     * stored byte is the level), the group's zero point when asymmetric (zs = 1 walks them). */
    const uint8_t off8 = (uint8_t)(sym ? (bits == 8u ? 0 : 1 << (bits - 1u)) : 0);
    const uint32_t zs = sym ? 0u : 1u;
    const int32_t off = off8;
    (void)off;
#define TT_Z ((int32_t)*zp)
    /* plain int8 levels (block_for): 8-bit on cores without DSP, 2-bit in odd groups */
    if (((TT_HAS(TT_K_B8) && !TT_DSP) || (TT_HAS(TT_K_B2) && TT_HAS(TT_K_GANY))) &&
        block == 1u) {
#if !TT_DSP
        if (TT_HAS(TT_K_B8) && bits == 8u) {
            TT_ROWS((w += g, xq += g, dot_q8(w - g, xq - g, g, sym)), TT_Z)
            return;
        }
#endif
        TT_ROWS((w += gbytes, xq += g, dot_any(t, w - gbytes, xq - g, g)), TT_Z)
        return;
    }
#if TT_DSP
    if (((TT_HAS(TT_K_B4) && bits == 4u) || (TT_HAS(TT_K_B8) && bits == 8u)) && sym &&
        g == 32u) {
        rows_s32(t, y, a, add);
    } else if (TT_HAS(TT_K_B8) && bits == 8u) {
        TT_ROWS(dot_q8(&w, &xe, g, sym), TT_Z)
    }
#else
    if (TT_HAS(TT_K_B4) && bits == 4u && sym && g == 32u) {
        TT_ROWS(dot_q4(&w, &xe, 32u), off) /* the common case, unrolled */
    }
#endif
    /* the general kernels: only what the build's model needs (TT_KERNELS, tt_tlm.h) */
    else if (TT_HAS(TT_K_B4) && bits == 4u && (TT_HAS(TT_K_GANY) || TT_HAS(TT_K_ASYM))) {
        TT_ROWS(dot_q4(&w, &xe, g), TT_Z)
    } else if (TT_HAS(TT_K_B2) && bits == 2u) {
        TT_ROWS(dot_q2(&w, &xe, g), TT_Z)
    } else if (TT_HAS(TT_K_B3) && bits == 3u) {
        TT_ROWS(dot_q3(&w, &xe, g), TT_Z)
    }
#undef TT_Z
}

void tt_row(const tt_tensor *t, uint32_t r, float *out, uint32_t n)
{
    uint32_t c, k, G, j;
    if (TT_HAS(TT_K_F32) && t->code == TT_TLM_F32) {
        for (c = 0; c < n; c++) out[c] = tt_ldf(t->data + 4u * ((uint32_t)r * t->cols + c));
        return;
    }
    if (TT_HAS(TT_K_F16) && t->code == TT_TLM_F16) {
        for (c = 0; c < n; c++) out[c] = tt_f16((uint16_t)(t->data[2u * (r * t->cols + c)] |
                                                           t->data[2u * (r * t->cols + c) + 1u] << 8));
        return;
    }
    G = t->cols / t->group;
    {
        int sym = (t->code & 0xF0u) == TT_TLM_SYM;
        int32_t off = sym ? (t->bits == 8u ? 0 : 1 << (t->bits - 1u)) : 0;
        const uint8_t *row = t->data + r * t->cols * t->bits / 8u;
        /* one field at a time, by the same unpacking as dot_any */
        for (j = 0; j < G && j * t->group < n; j++) {
            const uint8_t *sp = t->scales + 2u * (r * G + j);
            float s = tt_f16((uint16_t)(sp[0] | sp[1] << 8));
            int32_t z = sym ? off : (int32_t)t->zeros[r * G + j];
            for (k = 0; k < t->group && j * t->group + k < n; k++) {
                uint32_t i = j * t->group + k;
                int32_t f;
                if (TT_HAS(TT_K_B8) && t->bits == 8u)
                    f = sym ? (int32_t)(int8_t)row[i] : (int32_t)row[i];
                else if (TT_HAS(TT_K_B4) && t->bits == 4u)
                    f = (row[i / 2u] >> (4u * (i & 1u))) & 0xF;
                else if (TT_HAS(TT_K_B2) && t->bits == 2u)
                    f = (row[i / 4u] >> (2u * (i & 3u))) & 0x3;
                else
                    f = (int32_t)(((uint32_t)row[3u * (i / 8u)] | (uint32_t)row[3u * (i / 8u) + 1u] << 8 |
                                   (uint32_t)row[3u * (i / 8u) + 2u] << 16) >> (3u * (i & 7u))) & 0x7;
                out[i] = TT_FMUL(s, TT_I2F(f - z));
            }
        }
    }
}

void tt_matvec(const tt_tensor *t, const float *x, float *y, tt_qact *a, int add)
{
    uint32_t r, c;
    if (TT_HAS(TT_K_F32) && t->code == TT_TLM_F32) {
        for (r = 0; r < t->rows; r++) {
            const uint8_t *w = t->data + 4u * r * t->cols;
            float acc = 0.0f;
            for (c = 0; c < t->cols; c++) acc += tt_ldf(w + 4u * c) * x[c];
            y[r] = add ? y[r] + acc : acc;
        }
        return;
    }
    if (TT_HAS(TT_K_F16) && t->code == TT_TLM_F16) {
        for (r = 0; r < t->rows; r++) {
            const uint8_t *w = t->data + 2u * r * t->cols;
            float acc = 0.0f;
            for (c = 0; c < t->cols; c++)
                acc += tt_f16((uint16_t)(w[2u * c] | w[2u * c + 1u] << 8)) * x[c];
            y[r] = add ? y[r] + acc : acc;
        }
        return;
    }
    tt_quantize(a, x, t->cols, t->group, block_for(t));
    matvec_q(t, y, a, add);
}
