/* GGUF-native block types (edgesdk/quant/_types.py is the table; this is its C side).
 *
 * Each decoder turns one block into signed int8 codes, one float scale per sub-block and, for
 * types with mins, one float min per sub-block, with exactly the float arithmetic of the table's
 * numpy decoders (d * sc, -(dmin * m)), so w = scale * code + min. The row kernel
 * (ek_blocks_rows.h) dots the codes with int8 (or exact fp32) activations per sub-block. */
#ifndef EK_BLOCKS_H
#define EK_BLOCKS_H
#include "ek_internal.h"

#define EK_QK_K 256

static inline float f16at(const uint8_t *b, int at) { return ek_h2f((uint16_t)(b[at] | b[at + 1] << 8)); }

static inline uint32_t le32(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

/* Q4_K/Q5_K: eight 6-bit scales and mins in 12 bytes */
static inline void k_scale_min(const uint8_t *s, const uint8_t *b, float *sc, float *mn)
{
    const float d = f16at(b, 0), dmin = f16at(b, 2);
    for (int j = 0; j < 8; j++) {
        const int scj = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | ((s[j - 4] >> 2) & 0x30);
        const int mj = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
        sc[j] = d * (float)scj;
        mn[j] = -(dmin * (float)mj);
    }
}


typedef void (*ek_decode_fn)(const uint8_t *b, int8_t *q, float *sc, float *mn);

typedef struct ek_btype {
    int code;        /* GGML type id */
    int block;       /* elements per block */
    int nbytes;      /* bytes per block */
    int sub;         /* elements per scale */
    int has_min;
    ek_decode_fn decode;
} ek_btype;

/* The row of GGML type `code`, or NULL when the kernels do not decode it. */
const ek_btype *ek_btype_of(int code);

/* Shared by the per-ISA row kernels: what one matmul call over block rows needs. */
typedef struct ek_bctx {
    const ek_btype *t;
    const uint8_t *w;   /* (n, k / block * nbytes) */
    int n, k, M;
    const int8_t *xq;   /* [M][k] int8 activations (k is a multiple of 32 here) */
    int ab;             /* elements per activation scale: the weight block, 32 or 256 */
    const float *dx;    /* [M][k/ab] activation scales */
    const float *cs;    /* [M][k/32] dx * sum(xq) per 32 elements */
    const float *xf;    /* [M][k] fp32 activations (exact path) */
    float *y;           /* [M][ldy] */
    int ldy;
    int act_int8;
    int rows8;                      /* 1: rows interleaved 8 at a time (ekern.h, ek_weight.rows8) */
    const unsigned short *fields;   /* their field table (bytes, word size) x nfields */
    int nfields;
    const int16_t *xs;              /* rows8 + int8: [M][xs_stride] sums of xq per t->sub elements, in
                                     * each run of 4 the order 0, 2, 1, 3 (pairs for vpmaddwd) */
    int xs_stride;
    const int32_t *xo;              /* rows8 + int8 Q5_0: [M][k/32] -16 * sum(xq) per block, where the
                                     * block's integer dot starts (the offset costs no vector op) */
    int one_stream;                 /* the "single" read plan (ekern.h, ek_read_get), M <= EK_READ_M */
} ek_bctx;

/* Row r's block b of an interleaved weight, gathered into out (t->nbytes bytes) */
const uint8_t *ek_rows8_block(const ek_bctx *c, int r, int b, uint8_t *out);
/* Where a sum of xq over sub-block j lives in a row of ek_bctx.xs */
static inline int ek_xs_index(int j) { return (j & ~3) | ((j & 1) << 1) | ((j >> 1) & 1); }

/* Computes rows r0..r1 of y for every activation row. */
typedef void (*ek_blocks_fn)(const struct ek_bctx *c, int r0, int r1);
void ek_blocks_rows_portable(const ek_bctx *c, int r0, int r1);
/* x86 (ek_blocks_x86.c): the plain-C kernel compiled per ISA, with hand-written AVX2 dots for the
 * types of the common K-quant mixes (Q4_K, Q5_K, Q6_K, Q5_0) on the int8-activation path */
void ek_blocks_rows_avx2(const ek_bctx *c, int r0, int r1);
void ek_blocks_rows_avxvnni(const ek_bctx *c, int r0, int r1);
void ek_blocks_rows_avx512(const ek_bctx *c, int r0, int r1);
void ek_blocks_rows_amx(const ek_bctx *c, int r0, int r1);
/* x86 (ek_rows8_x86.c): kernels over rows interleaved 8 at a time for Q4_K, Q5_K, Q6_K, Q5_0 on
 * the int8 path, per instruction set; NULL where the weight has none */
ek_blocks_fn ek_rows8_avx2(const ek_bctx *c);
ek_blocks_fn ek_rows8_avxvnni(const ek_bctx *c);
ek_blocks_fn ek_rows8_avx512vnni(const ek_bctx *c);
ek_blocks_fn ek_rows8_amx(const ek_bctx *c); /* with AMX tiles for Q5_0 and Q4_K at prompt-sized M */
/* whether the interleaved kernels cover GGML type `code` (the same types on every instruction set) */
int ek_rows8_has(int code);
#endif
