/* GGUF-native block decoders and their row kernels (see ek_blocks.h). */
#include "ek_blocks.h"


static void dec_q4_0(const uint8_t *b, int8_t *q, float *sc, float *mn)
{
    (void)mn;
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((b[2 + j] & 15) - 8);
        q[j + 16] = (int8_t)((b[2 + j] >> 4) - 8);
    }
    sc[0] = f16at(b, 0);
}

static void dec_q4_1(const uint8_t *b, int8_t *q, float *sc, float *mn)
{
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)(b[4 + j] & 15);
        q[j + 16] = (int8_t)(b[4 + j] >> 4);
    }
    sc[0] = f16at(b, 0);
    mn[0] = f16at(b, 2);
}


static void dec_q5_0(const uint8_t *b, int8_t *q, float *sc, float *mn)
{
    (void)mn;
    const uint32_t qh = le32(b + 2);
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)(((b[6 + j] & 15) | ((qh >> j) & 1) << 4) - 16);
        q[j + 16] = (int8_t)(((b[6 + j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16);
    }
    sc[0] = f16at(b, 0);
}

static void dec_q5_1(const uint8_t *b, int8_t *q, float *sc, float *mn)
{
    const uint32_t qh = le32(b + 4);
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((b[8 + j] & 15) | ((qh >> j) & 1) << 4);
        q[j + 16] = (int8_t)((b[8 + j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
    }
    sc[0] = f16at(b, 0);
    mn[0] = f16at(b, 2);
}

static void dec_q8_0(const uint8_t *b, int8_t *q, float *sc, float *mn)
{
    (void)mn;
    memcpy(q, b + 2, 32);
    sc[0] = f16at(b, 0);
}

static const int8_t iq4nl_grid[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static void dec_iq4_nl(const uint8_t *b, int8_t *q, float *sc, float *mn)
{
    (void)mn;
    for (int j = 0; j < 16; j++) {
        q[j] = iq4nl_grid[b[2 + j] & 15];
        q[j + 16] = iq4nl_grid[b[2 + j] >> 4];
    }
    sc[0] = f16at(b, 0);
}

/* 2-bit fields of 64 bytes: element 128h + 32i + t is bits 2i..2i+1 of byte 32h + t */
static inline void crumbs64(const uint8_t *qs, int8_t *q)
{
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 4; i++)
            for (int t = 0; t < 32; t++) q[128 * h + 32 * i + t] = (int8_t)((qs[32 * h + t] >> (2 * i)) & 3);
}

static void dec_q2_k(const uint8_t *b, int8_t *q, float *sc, float *mn)
{
    crumbs64(b + 16, q);
    const float d = f16at(b, 80), dmin = f16at(b, 82);
    for (int s = 0; s < 16; s++) {
        sc[s] = d * (float)(b[s] & 15);
        mn[s] = -(dmin * (float)(b[s] >> 4));
    }
}

static void dec_q3_k(const uint8_t *b, int8_t *q, float *sc, float *mn)
{
    (void)mn;
    crumbs64(b + 32, q);
    for (int i = 0; i < 8; i++)  /* element 32i + t: its high bit is bit i of hmask[t]; clear means -4 */
        for (int t = 0; t < 32; t++) q[32 * i + t] = (int8_t)(q[32 * i + t] - (((b[t] >> i) & 1) ? 0 : 4));
    const uint8_t *s = b + 96;
    const float d = f16at(b, 108);
    for (int j = 0; j < 16; j++) {
        const int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4, hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        sc[j] = d * (float)((lo | hi << 4) - 32);
    }
}

/* 4-bit fields of 128 bytes: element 64c + t is the low nibble of byte 32c + t, 64c + 32 + t the high */
static inline void nibbles128(const uint8_t *qs, int8_t *q)
{
    for (int c = 0; c < 4; c++)
        for (int t = 0; t < 32; t++) {
            q[64 * c + t] = (int8_t)(qs[32 * c + t] & 15);
            q[64 * c + 32 + t] = (int8_t)(qs[32 * c + t] >> 4);
        }
}

static void dec_q4_k(const uint8_t *b, int8_t *q, float *sc, float *mn)
{
    k_scale_min(b + 4, b, sc, mn);
    nibbles128(b + 16, q);
}

static void dec_q5_k(const uint8_t *b, int8_t *q, float *sc, float *mn)
{
    k_scale_min(b + 4, b, sc, mn);
    nibbles128(b + 48, q);
    for (int i = 0; i < 8; i++)
        for (int t = 0; t < 32; t++) q[32 * i + t] = (int8_t)(q[32 * i + t] | ((b[16 + t] >> i) & 1) << 4);
}

static void dec_q6_k(const uint8_t *b, int8_t *q, float *sc, float *mn)
{
    (void)mn;
    for (int h = 0; h < 2; h++)
        for (int t = 0; t < 64; t++) {
            q[128 * h + t] = (int8_t)(b[64 * h + t] & 15);
            q[128 * h + 64 + t] = (int8_t)(b[64 * h + t] >> 4);
        }
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 4; i++)
            for (int t = 0; t < 32; t++) {
                const int e = 128 * h + 32 * i + t;
                q[e] = (int8_t)((q[e] | ((b[128 + 32 * h + t] >> (2 * i)) & 3) << 4) - 32);
            }
    const float d = f16at(b, 208);
    for (int j = 0; j < 16; j++) sc[j] = d * (float)(int8_t)b[192 + j];
}

static const ek_btype btypes[] = {
    {2, 32, 18, 32, 0, dec_q4_0},       {3, 32, 20, 32, 1, dec_q4_1},      {6, 32, 22, 32, 0, dec_q5_0},
    {7, 32, 24, 32, 1, dec_q5_1},       {8, 32, 34, 32, 0, dec_q8_0},      {10, EK_QK_K, 84, 16, 1, dec_q2_k},
    {11, EK_QK_K, 110, 16, 0, dec_q3_k}, {12, EK_QK_K, 144, 32, 1, dec_q4_k}, {13, EK_QK_K, 176, 32, 1, dec_q5_k},
    {14, EK_QK_K, 210, 16, 0, dec_q6_k}, {20, 32, 18, 32, 0, dec_iq4_nl},
};

const ek_btype *ek_btype_of(int code)
{
    for (size_t i = 0; i < sizeof btypes / sizeof btypes[0]; i++)
        if (btypes[i].code == code) return &btypes[i];
    return NULL;
}

int ek_block_type(int code, int *block, int *nbytes)
{
    const ek_btype *t = ek_btype_of(code);
    if (!t) return -1;
    *block = t->block;
    *nbytes = t->nbytes;
    return 0;
}

int ek_block_decode(int code, const unsigned char *b, signed char *q, float *sc, float *mn)
{
    const ek_btype *t = ek_btype_of(code);
    if (!t || !b || !q || !sc || !mn) return EK_EINVAL;
    t->decode(b, (int8_t *)q, sc, mn);
    if (!t->has_min)
        for (int s = 0; s < t->block / t->sub; s++) mn[s] = 0.0f;
    return 0;
}

const uint8_t *ek_rows8_block(const ek_bctx *c, int r, int b, uint8_t *out)
{
    const int nb = c->t->nbytes, nblk = c->k / c->t->block;
    const uint8_t *g = c->w + ((size_t)(r / 8) * nblk + (size_t)b) * 8 * (size_t)nb;
    for (int f = 0, off = 0; f < c->nfields; f++) {
        const int size = c->fields[2 * f], word = c->fields[2 * f + 1];
        for (int i = 0; i < size / word; i++) memcpy(out + off + i * word, g + 8 * off + ((size_t)i * 8 + r % 8) * word, (size_t)word);
        off += size;
    }
    return out;
}

/* ---------------------------------------------------------------- row kernels, one per ISA */
#define EK_LINK
#define EK_TARGET
#define EK_NAME ek_blocks_rows_portable
#include "ek_blocks_rows.h"
#undef EK_NAME
#undef EK_TARGET
#undef EK_LINK
