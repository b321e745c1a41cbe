/* Test probe: a from-the-spec C reader of .tlm files and the integer matmul contract.
 *
 *   tlm_probe check  MODEL.tlm                 -> prints "ok <tensor_count>" or an error
 *   tlm_probe matvec MODEL.tlm NAME X.f32      -> y = W x, one float per line as hex bits
 *   tlm_probe exp    X.f32                     -> tt_expf(x), one per line as hex bits
 *
 * Written from docs/tlm-format.md and docs/quantization.md only; built with
 * -std=c99 -ffp-contract=off so the Python engine must agree bit for bit.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
    uint32_t bits;
    float f;
    if (exp == 0) {
        f = (float)man * (1.0f / 16777216.0f); /* subnormal: man * 2^-24, exact */
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    memcpy(&f, &bits, 4);
    return f;
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(buf); return NULL; }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static float tt_expf(float x) {
    if (x < -86.0f) return 0.0f;
    if (x > 88.0f) x = 88.0f;
    float n = rintf(x * 1.44269504088896341f);
    float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = ((p * (r * r)) + r) + 1.0f;
    int ni = (int)n;
    if (ni < -126) ni = -126;
    if (ni > 127) ni = 127;
    uint32_t b = (uint32_t)(ni + 127) << 23;
    float two_n;
    memcpy(&two_n, &b, 4);
    return y * two_n;
}

/* Signed level of element i of a quantized tensor (type code, packed data, zero points). */
static int32_t level(uint8_t code, const uint8_t *d, const uint8_t *z, uint32_t i, uint32_t g) {
    uint32_t bits = code & 0x0Fu, u;
    int sym = (code & 0xF0u) == 0x10u;
    if (bits == 8) return sym ? (int32_t)(int8_t)d[i] : (int32_t)d[i] - (int32_t)z[i / g];
    if (bits == 4) u = (d[i / 2] >> (4 * (i % 2))) & 0xFu;
    else if (bits == 2) u = (d[i / 4] >> (2 * (i % 4))) & 0x3u;
    else {
        const uint8_t *t = d + 3 * (i / 8);
        uint32_t w = (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16;
        u = (w >> (3 * (i % 8))) & 7u;
    }
    return sym ? (int32_t)u - (int32_t)(1u << (bits - 1)) : (int32_t)u - (int32_t)z[i / g];
}

int main(int argc, char **argv) {
    size_t len = 0;
    if (argc == 3 && strcmp(argv[1], "exp") == 0) {
        uint8_t *xs = slurp(argv[2], &len);
        if (!xs) return 2;
        for (size_t i = 0; i + 4 <= len; i += 4) {
            float x, y;
            uint32_t b;
            memcpy(&x, xs + i, 4);
            y = tt_expf(x);
            memcpy(&b, &y, 4);
            printf("%08x\n", (unsigned)b);
        }
        free(xs);
        return 0;
    }
    if (argc < 3) return 2;
    uint8_t *m = slurp(argv[2], &len);
    if (!m || len < 196 || memcmp(m, "TLM1", 4) != 0) { puts("bad magic"); return 1; }
    if (rd16(m + 4) != 1 || rd32(m + 20) != len) { puts("bad version or size"); return 1; }
    if (crc32(m, len - 4) != rd32(m + len - 4)) { puts("bad crc"); return 1; }
    uint32_t count = rd32(m + 24), table = rd32(m + 28), esize = rd32(m + 32);
    uint32_t align = rd32(m + 16);
    if (strcmp(argv[1], "check") == 0) {
        for (uint32_t t = 0; t < count; t++) {
            const uint8_t *e = m + table + t * esize;
            for (int r = 0; r < 3; r++)
                if (rd32(e + 60 + 8 * r) && rd32(e + 56 + 8 * r) % align) {
                    puts("misaligned"); return 1;
                }
        }
        printf("ok %u\n", (unsigned)count);
        return 0;
    }
    if (argc != 5 || strcmp(argv[1], "matvec") != 0) return 2;
    const uint8_t *e = NULL;
    for (uint32_t t = 0; t < count; t++) {
        const uint8_t *c = m + table + t * esize;
        if (strncmp((const char *)c, argv[3], 32) == 0) e = c;
    }
    if (!e) { puts("no such tensor"); return 1; }
    uint8_t code = e[32];
    uint32_t g = rd16(e + 34), rows = rd32(e + 36), cols = rd32(e + 40);
    const uint8_t *data = m + rd32(e + 52), *scales = m + rd32(e + 60), *zeros = m + rd32(e + 68);
    size_t xlen = 0;
    uint8_t *xraw = slurp(argv[4], &xlen);
    float *x = calloc(cols, sizeof(float));
    memcpy(x, xraw, xlen < 4 * (size_t)cols ? xlen : 4 * (size_t)cols); /* zero-extended */
    for (uint32_t r = 0; r < rows; r++) {
        float acc = 0.0f;
        if (code == 0x00) {
            for (uint32_t c = 0; c < cols; c++) {
                float w;
                memcpy(&w, data + 4 * ((size_t)r * cols + c), 4);
                acc += w * x[c];
            }
        } else {
            for (uint32_t gi = 0; gi < cols / g; gi++) {
                float amax = 0.0f;
                for (uint32_t k = 0; k < g; k++) {
                    float a = fabsf(x[gi * g + k]);
                    if (a > amax) amax = a;
                }
                float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
                int32_t isum = 0;
                for (uint32_t k = 0; k < g; k++) {
                    float v = rintf(x[gi * g + k] * id);
                    int32_t q = (int32_t)(v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v));
                    isum += q * level(code, data + (size_t)r * cols * (code & 0xFu) / 8, zeros +
                                      (size_t)r * (cols / g), gi * g + k, g);
                }
                float ws = f16_to_f32(rd16(scales + 2 * ((size_t)r * (cols / g) + gi)));
                acc += (float)isum * (d * ws);
            }
        }
        uint32_t b;
        memcpy(&b, &acc, 4);
        printf("%08x\n", (unsigned)b);
    }
    free(x);
    free(xraw);
    free(m);
    return 0;
}
