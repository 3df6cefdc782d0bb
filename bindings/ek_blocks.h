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
    const float *dx;    /* [M][k/32] activation scale per 32-block */
    const float *xf;    /* [M][k] fp32 activations (exact path) */
    float *y;           /* [M][ldy] */
    int ldy;
    int act_int8;
} ek_bctx;

/* Computes rows r0..r1 of y for every activation row. */
typedef void (*ek_blocks_fn)(const struct ek_bctx *c, int r0, int r1);
void ek_blocks_rows_portable(const ek_bctx *c, int r0, int r1);
#endif
