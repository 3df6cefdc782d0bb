/* Shared between the kernel translation units; not part of the cffi interface. */
#ifndef EK_INTERNAL_H
#define EK_INTERNAL_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "ekern.h"
#include "ek_cpu.h"

#define EK_EINVAL (-1)
#define EK_ENONFINITE (-2)
#define EK_ENOMEM (-3)

/* What each x86 path's kernels are compiled for, and so what the CPU must have to run them */
#define ISA512 "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c"
#define ISA_AMX ISA512 ",amx-tile,amx-int8"
#define ISA_AVX2 "avx2,fma,f16c"
#define ISA_AVXVNNI ISA_AVX2 ",avxvnni"

#define EK_MR 4          /* activation rows sharing one weight unpack */
/* the read plan (ekern.h) applies at M <= EK_READ_M: on a Zen 5 VM the one-stream tiles were faster
 * at M = 1 and 2 (Q4_K 4096 x 4096, 1 thread: 407 -> 318 us at M = 2) but slower at M = 4 (384 -> 436) */
#define EK_READ_M 2
#ifndef EK_PF
#define EK_PF 6144       /* software prefetch distance in weight bytes (tuned: 2 KiB on the Xeon, 4-8 KiB on Zen 5) */
#endif

typedef struct ek_ctx {
    const ek_weight *w;
    int M, Kp, S, G;
    const int8_t *xq;   /* [M][Kp] int8 activations (int8 path) */
    const float *dx;    /* [M][S] activation scale per 32-block */
    const float *cs;    /* [M][S] dx * sum(xq) per 32-block */
    const float *xf;    /* [M][Kp] zero-padded fp32 activations (exact path) */
    const float *xs;    /* [M][S] fp32 block sums (exact path) */
    float *y;
    int ldy;            /* row stride of y (the whole fused projection's n) */
    int act_int8;
} ek_ctx;

/* Computes out[i][r] (i < mr <= EK_MR, r < 16) for rows 16g.. and activation rows m0... */
typedef void (*ek_tile_fn)(const ek_ctx *c, int g, int m0, int mr, float *out);

/* x rounded to the nearest fp16 value (ties to even), kept as a float; |x| must be below 65520. */
static inline float ek_round_f16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    const uint32_t a = u & 0x7fffffffu;
    if (a < 0x38800000u) { /* below 2^-14: fp16 subnormals are the multiples of 2^-24 */
        const float s = (float)(int32_t)(fabsf(x) * 16777216.0f + 0.5f);
        const float lo = fabsf(x) * 16777216.0f;
        /* ties to even: (int)(v + 0.5) rounds a tie up; step back when that made it odd */
        const float r = (s - lo == 0.5f && ((int32_t)s & 1)) ? s - 1.0f : s;
        return (x < 0 ? -r : r) * (1.0f / 16777216.0f);
    }
    const uint32_t r = (a + 0xfffu + ((a >> 13) & 1u)) & ~0x1fffu; /* keep 10 mantissa bits */
    u = (u & 0x80000000u) | r;
    memcpy(&x, &u, 4);
    return x;
}

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

/* Kernels that read two row groups at once (g, g + 1) as two weight streams prefetch `d` bytes
 * past offset `pos` of a group of `group` bytes in the same stream: the stream of group g goes on
 * in group g + 2 (the next pair), not in group g + 1 */
static inline size_t ek_pair_ahead(size_t pos, size_t d, size_t group) { return pos + d >= group ? d + group : d; }

struct ek_bctx;
typedef int (*ek_quant_fn)(const float *x, int m0, int m1, int k, int Kp, int8_t *xq, float *dx, float *cs);
typedef uint64_t (*ek_stream_fn)(const uint8_t *p, size_t n, size_t pf); /* pf: prefetch distance, 0 = none */

/* A SIMD path: the kernels built for one instruction-set combination.  `isa` is the GCC target
 * string its kernels are compiled with (some with a subset of it), and so exactly what the CPU
 * must provide (ek_cpu_parse): the path is runnable only when the CPU has every feature of it.  Kernel slots are
 * [0] 4-bit, [1] 8-bit weights; a NULL kernel means the portable one (NULL i8x2: none). */
typedef struct ek_path {
    const char *name;
    const char *isa;
    int built;                 /* 0 where this architecture cannot compile the path */
    ek_tile_fn i8[2];          /* int8 activations, one 16-row group */
    ek_tile_fn i8x2[2];        /* int8 activations, two groups at once (two weight streams) */
    ek_tile_fn f32[2];         /* exact fp32 activations */
    ek_quant_fn quant;         /* activation quantizer, bit-identical to the portable one */
    ek_stream_fn stream[2];    /* bandwidth probe read loops (NULL: none; the probe takes the fastest) */
    void (*blocks)(const struct ek_bctx *c, int r0, int r1);  /* GGUF-native block rows (ek_blocks.h) */
    /* activations of K-quant matmuls, one scale per 256 (x[m][k], k a multiple of 256; dx[m][k/256],
     * cs[m][k/32]), bit-identical to the portable one; NULL: the portable one */
    int (*quant256)(const float *x, int m, int k, int8_t *xq, float *dx, float *cs);
} ek_path;

/* Paths of each ISA unit, in order of preference; defined on every architecture (built = 0 off it),
 * so every path name is known everywhere and a request for one can say what is missing. */
#define EK_X86_NPATHS 4
extern const ek_path ek_x86_paths[EK_X86_NPATHS];
extern const ek_path ek_neon_path;
#endif
