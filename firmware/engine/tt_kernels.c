/* Kernels of the llama engine: see tt_kernels.h for the contract they follow. */
#include "tt_kernels.h"

#include "tt_string.h"

float tt_ldf(const uint8_t *p)
{
    float f;
    memcpy(&f, p, 4);
    return f;
}

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static uint32_t to_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

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
    volatile float big = 12582912.0f; /* volatile: the compiler must not fold the pair */
    return (x + big) - big;
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
    n = tt_rintf(x * 1.44269504088896341f);
    r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    y = ((p * (r * r)) + r) + 1.0f;
    ni = (int32_t)n;
    if (ni < -126) ni = -126;
    if (ni > 127) ni = 127;
    return y * from_bits((uint32_t)(ni + 127) << 23);
}

void tt_softmax(float *x, uint32_t n)
{
    float m = x[0], s = 0.0f;
    uint32_t i;
    for (i = 1; i < n; i++)
        if (x[i] > m) m = x[i];
    for (i = 0; i < n; i++) {
        x[i] = tt_expf(x[i] - m);
        s += x[i];
    }
    for (i = 0; i < n; i++) x[i] = x[i] / s;
}

void tt_rmsnorm(float *o, const float *x, const tt_tensor *w, uint32_t n)
{
    float ss = 0.0f;
    uint32_t i;
    for (i = 0; i < n; i++) ss += x[i] * x[i];
    ss = ss / (float)n;
    ss = ss + 1e-5f;
    ss = 1.0f / tt_sqrtf(ss);
    for (i = 0; i < n; i++) o[i] = tt_ldf(w->data + 4u * i) * (ss * x[i]);
}

#if defined(TT_KERNELS_DSP) && defined(__ARM_FEATURE_DSP)
/* Cortex-M4/M7: two signed byte lanes per SXTB16, two MACs per SMLAD. */
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
        memcpy(&wa, a + i, 4);
        memcpy(&wb, b + i, 4);
        acc = smlad(sxtb16(wa), sxtb16(wb), acc);
        acc = smlad(sxtb16_ror8(wa), sxtb16_ror8(wb), acc);
    }
    return acc;
}
#else
int32_t tt_dot_i8(const int8_t *a, const int8_t *b, uint32_t n)
{
    int32_t acc = 0;
    uint32_t i;
    for (i = 0; i < n; i++) acc += (int32_t)a[i] * (int32_t)b[i];
    return acc;
}
#endif

/* Unpack one group of stored fields as int8: v = field - off, where off is 2^(bits-1) except
 * for symmetric 8-bit (raw int8, off 0) and asymmetric 2/3/4-bit (off 0). The true level is v
 * (symmetric) or v + off - zero (asymmetric). */
static int32_t unpack(const tt_tensor *t, const uint8_t *d, uint32_t g, int8_t *v)
{
    uint32_t i, bits = t->bits;
    int sym = (t->code & 0xF0u) == TT_TLM_SYM;
    int32_t off = (bits == 8) ? (sym ? 0 : 128) : (sym ? (1 << (bits - 1)) : 0);
    if (bits == 8) {
        for (i = 0; i < g; i++) v[i] = (int8_t)((int32_t)d[i] - off);
    } else if (bits == 4) {
        for (i = 0; i < g; i += 2) {
            v[i] = (int8_t)((int32_t)(d[i / 2] & 0xFu) - off);
            v[i + 1] = (int8_t)((int32_t)(d[i / 2] >> 4) - off);
        }
    } else if (bits == 2) {
        for (i = 0; i < g; i += 4) {
            uint32_t w = d[i / 4];
            v[i] = (int8_t)((int32_t)(w & 3u) - off);
            v[i + 1] = (int8_t)((int32_t)((w >> 2) & 3u) - off);
            v[i + 2] = (int8_t)((int32_t)((w >> 4) & 3u) - off);
            v[i + 3] = (int8_t)((int32_t)(w >> 6) - off);
        }
    } else { /* 3-bit: eight fields per three bytes */
        for (i = 0; i < g; i += 8) {
            const uint8_t *p = d + 3u * (i / 8u);
            uint32_t w = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16, k;
            for (k = 0; k < 8; k++) v[i + k] = (int8_t)((int32_t)((w >> (3u * k)) & 7u) - off);
        }
    }
    return off;
}

void tt_row(const tt_tensor *t, uint32_t r, float *out, uint32_t n)
{
    uint32_t c;
    if (t->code == TT_TLM_F32) {
        for (c = 0; c < n; c++) out[c] = tt_ldf(t->data + 4u * ((uint32_t)r * t->cols + c));
    } else if (t->code == TT_TLM_F16) {
        for (c = 0; c < n; c++) out[c] = tt_f16((uint16_t)(t->data[2u * (r * t->cols + c)] |
                                                           t->data[2u * (r * t->cols + c) + 1u] << 8));
    } else {
        int8_t v[256] __attribute__((aligned(4)));
        uint32_t G = t->cols / t->group, j, k;
        int sym = (t->code & 0xF0u) == TT_TLM_SYM;
        for (j = 0; j < G && j * t->group < n; j++) {
            const uint8_t *sp = t->scales + 2u * (r * G + j);
            float s = tt_f16((uint16_t)(sp[0] | sp[1] << 8));
            int32_t off = unpack(t, t->data + (r * t->cols + j * t->group) * t->bits / 8u,
                                 t->group, v);
            int32_t adj = sym ? 0 : off - (int32_t)t->zeros[r * G + j];
            for (k = 0; k < t->group && j * t->group + k < n; k++)
                out[j * t->group + k] = s * (float)((int32_t)v[k] + adj);
        }
    }
}

void tt_matvec(const tt_tensor *t, const float *x, float *y, const tt_scratch *s)
{
    uint32_t r, c, j, k;
    if (t->code == TT_TLM_F32 || t->code == TT_TLM_F16) {
        for (r = 0; r < t->rows; r++) {
            float acc = 0.0f, w;
            for (c = 0; c < t->cols; c++) {
                if (t->code == TT_TLM_F32) {
                    w = tt_ldf(t->data + 4u * (r * t->cols + c));
                } else {
                    const uint8_t *p = t->data + 2u * (r * t->cols + c);
                    w = tt_f16((uint16_t)(p[0] | p[1] << 8));
                }
                acc += w * x[c];
            }
            y[r] = acc;
        }
        return;
    }
    {
        uint32_t g = t->group, G = t->cols / g, rowbytes = t->cols * t->bits / 8u;
        int sym = (t->code & 0xF0u) == TT_TLM_SYM;
        int direct = sym && t->bits == 8u; /* int8 levels used in place */
        int8_t v[256] __attribute__((aligned(4)));
        /* Activations: int8 per group, d = amax / 127. */
        for (j = 0; j < G; j++) {
            float amax = 0.0f, d, id;
            int32_t sum = 0;
            for (k = 0; k < g; k++) {
                float a = x[j * g + k];
                if (a < 0.0f) a = -a;
                if (a > amax) amax = a;
            }
            d = amax / 127.0f;
            id = d != 0.0f ? 1.0f / d : 0.0f;
            for (k = 0; k < g; k++) {
                float q = tt_rintf(x[j * g + k] * id);
                int32_t qi = (int32_t)q;
                if (qi > 127) qi = 127;
                if (qi < -127) qi = -127;
                s->xq[j * g + k] = (int8_t)qi;
                sum += qi;
            }
            s->d[j] = d;
            s->sums[j] = sum;
        }
        for (r = 0; r < t->rows; r++) {
            const uint8_t *row = t->data + r * rowbytes;
            const uint8_t *sp = t->scales + 2u * r * G;
            float acc = 0.0f;
            for (j = 0; j < G; j++) {
                const uint8_t *gd = row + j * g * t->bits / 8u;
                int32_t isum;
                float ws = tt_f16((uint16_t)(sp[2u * j] | sp[2u * j + 1u] << 8));
                if (direct && ((uintptr_t)gd & 3u) == 0) {
                    isum = tt_dot_i8(s->xq + j * g, (const int8_t *)gd, g);
                } else {
                    int32_t off = unpack(t, gd, g, v);
                    isum = tt_dot_i8(s->xq + j * g, v, g);
                    if (!sym) isum += (off - (int32_t)t->zeros[r * G + j]) * s->sums[j];
                }
                acc += (float)isum * (s->d[j] * ws);
            }
            y[r] = acc;
        }
    }
}
