/* .tlm reader: validation as docs/tlm-format.md "Validation a reader performs" lists it. */
#include "tt_tlm.h"

#include "tt_string.h"

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }

uint32_t tt_tlm_crc32(const uint8_t *p, uint32_t n)
{
    /* Bitwise (no table: 1 KB of flash saved; runs once at boot). */
    uint32_t c = 0xFFFFFFFFu, i;
    int k;
    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* Expected region sizes of an entry; 0 on success. */
static int sizes(uint8_t code, uint32_t ndim, const uint32_t *shape, uint32_t group,
                 uint32_t *ds, uint32_t *ss, uint32_t *zs)
{
    uint32_t n = 1, i, bits = code & 0x0Fu, kind = code & 0xF0u;
    for (i = 0; i < ndim; i++) n *= shape[i];
    *ss = *zs = 0;
    if (code == TT_TLM_F32) { *ds = 4u * n; return TT_HAS(TT_K_F32) ? 0 : -2; }
    if (code == TT_TLM_F16) { *ds = 2u * n; return TT_HAS(TT_K_F16) ? 0 : -2; }
    if ((bits != 2 && bits != 3 && bits != 4 && bits != 8) ||
        (kind != TT_TLM_SYM && kind != TT_TLM_ASYM))
        return -1;
    if (ndim != 2 || group == 0 || group % 8u || shape[1] % group) return -1;
    if (!TT_HAS(bits == 2 ? TT_K_B2 : bits == 3 ? TT_K_B3 : bits == 4 ? TT_K_B4 : TT_K_B8) ||
        (kind == TT_TLM_ASYM && !TT_HAS(TT_K_ASYM)) || (group != 32u && !TT_HAS(TT_K_GANY)))
        return -2;
    *ds = n * bits / 8u;
    *ss = 2u * (n / group);
    *zs = kind == TT_TLM_ASYM ? n / group : 0;
    return 0;
}

int tt_tlm_open(tt_tlm *m, const uint8_t *p, uint32_t size, const char **why)
{
    uint32_t i, r, a;
    memset(m, 0, sizeof *m);
    *why = "ok";
    if (size < TT_TLM_HEADER + 4u || memcmp(p, "TLM1", 4) != 0) {
        *why = "model image: bad magic (not a .tlm file)";
        return -1;
    }
    if (rd16(p + 4) != 1u) { *why = "model image: .tlm major version is not 1"; return -2; }
    if (rd32(p + 20) != size) { *why = "model image: file_size does not match the image"; return -3; }
    if (tt_tlm_crc32(p, size - 4u) != rd32(p + size - 4u)) {
        *why = "model image: CRC-32 mismatch (corrupt flash or model)";
        return -4;
    }
    m->image = p;
    m->size = size;
    m->flags = rd32(p + 12);
    m->alignment = a = rd32(p + 16);
    m->count = rd32(p + 24);
    m->table = rd32(p + 28);
    m->entry_size = rd32(p + 32);
    m->data_off = rd32(p + 36);
    m->data_size = rd32(p + 40);
    if (rd32(p + 8) < TT_TLM_HEADER || m->entry_size < 80u || (a != 4 && a != 8 && a != 16 &&
        a != 32 && a != 64) || (m->flags & ~3u)) {
        *why = "model image: bad header size, entry size, alignment or flags";
        return -5;
    }
    if (m->table + m->count * m->entry_size > m->data_off ||
        m->data_off + m->data_size > size - 4u) {
        *why = "model image: tensor table or data section outside the file";
        return -6;
    }
    m->dim = rd32(p + 56);
    m->hidden_dim = rd32(p + 60);
    m->n_layers = rd32(p + 64);
    m->n_heads = rd32(p + 68);
    m->n_kv_heads = rd32(p + 72);
    m->vocab_size = rd32(p + 76);
    m->seq_len = rd32(p + 80);
    m->head_dim = rd32(p + 84);
    if (!m->dim || !m->hidden_dim || !m->n_layers || !m->n_heads || !m->n_kv_heads ||
        !m->vocab_size || !m->seq_len || m->dim % m->n_heads || m->n_heads % m->n_kv_heads ||
        m->head_dim != m->dim / m->n_heads || m->head_dim % 2u) {
        *why = "model image: inconsistent configuration";
        return -7;
    }
    m->name = (const char *)(p + 120);
    if (p[151] != 0) { *why = "model image: name not NUL-terminated"; return -8; }
    for (i = 0; i < m->count; i++) {
        const uint8_t *e = p + m->table + i * m->entry_size;
        uint32_t shape[4], ndim = e[33], want[3];
        for (r = 0; r < 4; r++) shape[r] = rd32(e + 36 + 4 * r);
        if (ndim < 1 || ndim > 4) { *why = "model image: tensor with a bad ndim"; return -9; }
        for (r = 0; r < ndim; r++)
            if (shape[r] == 0 || shape[r] > (1u << 24)) {
                *why = "model image: tensor with an absurd shape";
                return -9;
            }
        r = (uint32_t)-sizes(e[32], ndim, shape, rd16(e + 34), &want[0], &want[1], &want[2]);
        if (r == 1u) {
            *why = "model image: unknown tensor type or bad group size";
            return -10;
        }
        if (r == 2u) {
            *why = "model image: a tensor kind not built in (build for this model)";
            return -13;
        }
        for (r = 0; r < 3; r++) {
            uint32_t off = rd32(e + 52 + 8 * r), sz = rd32(e + 56 + 8 * r);
            if (sz != want[r]) { *why = "model image: tensor region size mismatch"; return -11; }
            if (sz && (off % a || off < m->data_off || off + sz > m->data_off + m->data_size)) {
                *why = "model image: tensor region misaligned or outside the data section";
                return -12;
            }
        }
    }
    return 0;
}

int tt_tlm_find(const tt_tlm *m, const char *name, tt_tensor *t)
{
    uint32_t i, n = (uint32_t)strlen(name);
    for (i = 0; i < m->count; i++) {
        const uint8_t *e = m->image + m->table + i * m->entry_size;
        if (n < 32u && memcmp(e, name, n) == 0 && e[n] == 0) {
            uint32_t ndim = e[33];
            t->code = e[32];
            t->bits = (e[32] & 0xF0u) ? (uint8_t)(e[32] & 0x0Fu) : 0;
            t->group = (uint16_t)rd16(e + 34);
            t->rows = ndim >= 2 ? rd32(e + 36) : 1u;
            t->cols = ndim >= 2 ? rd32(e + 40) : rd32(e + 36);
            if (ndim > 2) t->cols *= rd32(e + 44) * (ndim > 3 ? rd32(e + 48) : 1u);
            t->data = m->image + rd32(e + 52);
            t->scales = rd32(e + 64) ? m->image + rd32(e + 60) : 0;
            t->zeros = rd32(e + 72) ? m->image + rd32(e + 68) : 0;
            return 1;
        }
    }
    return 0;
}
