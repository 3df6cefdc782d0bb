/* Shared between the kernel translation units; not part of the cffi interface. */
#ifndef EK_INTERNAL_H
#define EK_INTERNAL_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "ekern.h"

#define EK_EINVAL (-1)
#define EK_ENONFINITE (-2)
#define EK_ENOMEM (-3)

#define EK_MR 4          /* activation rows sharing one weight unpack */
#ifndef EK_PF
#define EK_PF 6144       /* software prefetch distance in weight bytes (tuned: 2 KiB on the Xeon, 4-8 KiB on Zen 5) */
#endif

enum { EK_PORTABLE = 0, EK_AVX2 = 1, EK_AVXVNNI = 2, EK_AVX512VNNI = 3, EK_NEON = 10 };

typedef struct ek_ctx {
    const ek_weight *w;
    int M, Kp, S, G;
    const int8_t *xq;   /* [M][Kp] int8 activations (int8 path) */
    const float *dx;    /* [M][S] activation scale per 32-block */
    const float *cs;    /* [M][S] dx * sum(xq) per 32-block */
    const float *xf;    /* [M][Kp] zero-padded fp32 activations (exact path) */
    const float *xs;    /* [M][S] fp32 block sums (exact path) */
    float *y;
    int act_int8;
} ek_ctx;

/* Computes out[i][r] (i < mr <= EK_MR, r < 16) for rows 16g.. and activation rows m0... */
typedef void (*ek_tile_fn)(const ek_ctx *c, int g, int m0, int mr, float *out);

static inline float ek_h2f(uint16_t h)
{
    uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, mt = h & 0x3ffu, u;
    float f;
    if (e == 0) {
        f = (float)mt * (1.0f / 16777216.0f);
        memcpy(&u, &f, 4);
        u |= s;
    } else if (e == 31) {
        u = s | 0x7f800000u | (mt << 13);
    } else {
        u = s | ((e + 112u) << 23) | (mt << 13);
    }
    memcpy(&f, &u, 4);
    return f;
}

static inline int32_t ek_ld32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

typedef int (*ek_quant_fn)(const float *x, int m0, int m1, int k, int Kp, int8_t *xq, float *dx, float *cs);
ek_quant_fn ek_x86_quant(int level);

/* per-ISA tile kernels; NULL-returning getters when the unit was not compiled for it */
ek_tile_fn ek_portable_tile(int bits, int act_int8);
ek_tile_fn ek_x86_tile(int level, int bits, int act_int8);
/* optional two-group tile (out: [2][EK_MR][16]) for M > 1; NULL when the ISA has none */
ek_tile_fn ek_x86_tile2(int level, int bits, int act_int8);
ek_tile_fn ek_neon_tile(int bits, int act_int8);
int ek_x86_detect(void);
int ek_x86_amx_usable(void);
#endif
