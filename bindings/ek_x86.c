/* x86-64 paths, each function compiled for its own ISA with target attributes and
 * chosen at run time by the features its target string names (never -march=native), so
 * one build runs on any x86-64 and uses AMX / AVX-512 VNNI / AVX-VNNI / AVX2 where the CPU
 * has each.  The tables at the end are the only place a path's kernels and needs are listed. */
#include "ek_internal.h"
#include "ek_blocks.h"


#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* ------------------------------------------------------------ AVX-512 VNNI */
/* the i16x32 tiles' weight prefetch (here and in ek_tile256.h) goes to L2 (AMD cores fill L1 for
 * every hint): on a Xeon VM (AMX), cold 4096 x 4096 at M = 1 and 1 thread, prefetcht0 -> prefetcht1
 * took Q8_0 1.19 -> 1.14 ms and Q4_0 0.69 -> 0.61 ms on the avx512vnni tiles, 1.24 -> 1.15 and 0.74 ->
 * 0.68 on the avxvnni ones, Q8_0 1.46 -> 1.29 on the avx2 ones (3 or 8 KiB ahead instead of EK_PF
 * was no faster) */
#ifndef EK_PF_HINT
#define EK_PF_HINT _MM_HINT_T1
#endif
#define T512 __attribute__((target(ISA512)))

/* One 16-row group x MR activation rows.  Per 32-element sub-block: 4 (or 8) 64-byte
 * loads give 8 vectors of 16 rows x 4 codes; each meets a broadcast activation quad
 * in vpdpbusd, so the int32 lanes are the 16 rows' block dot products directly. */
static inline __attribute__((always_inline)) T512 void
tile512(const ek_ctx *c, int g, int m0, const int MR, const int BITS, float *out)
{
    const ek_weight *w = c->w;
    const int S = c->S, spb = w->spb, Kp = c->Kp;
    const size_t sub = BITS == 4 ? 256 : 512;
    const uint8_t *qs = w->q + (size_t)g * S * sub;
    const uint16_t *dg = w->d + (size_t)g * w->nblk * 16;
    const uint16_t *mg = w->m ? w->m + (size_t)g * w->nblk * 16 : NULL;
    const __m512i lo4 = _mm512_set1_epi8(0x0F);
    const __m512 noff = _mm512_set1_ps(-(float)w->offset);
    __m512 acc[EK_MR];
    for (int i = 0; i < MR; i++) acc[i] = _mm512_setzero_ps();
    __m512 dw = _mm512_setzero_ps(), cw = _mm512_setzero_ps();
    for (int s = 0, left = 0; s < S; s++, qs += sub) {
        if (left == 0) {
            const int b = s / spb;
            dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(dg + 16 * b)));
            cw = mg ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(mg + 16 * b)))
                    : _mm512_mul_ps(dw, noff);
            left = spb;
        }
        left--;
        for (size_t p = 0; p < sub; p += 64) _mm_prefetch((const char *)qs + EK_PF + p, EK_PF_HINT);
#ifdef EK_PF_SCALES
        if ((s & 1) == 0) _mm_prefetch((const char *)(dg + 16 * (s / spb)) + EK_PF / 8, EK_PF_HINT);
#endif
        __m512i wv[8];
        if (BITS == 4) {
            /* high nibbles stay in place (x16): one AND instead of shift+AND, and the
             * exact multiple of 16 is shifted out of the int32 sum once */
            for (int j = 0; j < 4; j++) {
                const __m512i v = _mm512_loadu_si512((const void *)(qs + 64 * j));
                wv[j] = _mm512_and_si512(v, lo4);
                wv[j + 4] = _mm512_andnot_si512(lo4, v);
            }
        } else {
            for (int j = 0; j < 8; j++) wv[j] = _mm512_loadu_si512((const void *)(qs + 64 * j));
        }
        for (int i = 0; i < MR; i++) {
            const int8_t *xq = c->xq + (size_t)(m0 + i) * Kp + (size_t)s * 32;
            /* a0: k 0-15 (low nibbles / first half), a1: k 16-31 */
            __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
            a0 = _mm512_dpbusd_epi32(a0, wv[0], _mm512_set1_epi32(ek_ld32(xq + 0)));
            a1 = _mm512_dpbusd_epi32(a1, wv[4], _mm512_set1_epi32(ek_ld32(xq + 16)));
            a0 = _mm512_dpbusd_epi32(a0, wv[1], _mm512_set1_epi32(ek_ld32(xq + 4)));
            a1 = _mm512_dpbusd_epi32(a1, wv[5], _mm512_set1_epi32(ek_ld32(xq + 20)));
            a0 = _mm512_dpbusd_epi32(a0, wv[2], _mm512_set1_epi32(ek_ld32(xq + 8)));
            a1 = _mm512_dpbusd_epi32(a1, wv[6], _mm512_set1_epi32(ek_ld32(xq + 24)));
            a0 = _mm512_dpbusd_epi32(a0, wv[3], _mm512_set1_epi32(ek_ld32(xq + 12)));
            a1 = _mm512_dpbusd_epi32(a1, wv[7], _mm512_set1_epi32(ek_ld32(xq + 28)));
            if (BITS == 4) a1 = _mm512_srai_epi32(a1, 4);
            const size_t xi = (size_t)(m0 + i) * S + s;
            const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(c->dx[xi]));
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(a0, a1)), sc, acc[i]);
            acc[i] = _mm512_fmadd_ps(cw, _mm512_set1_ps(c->cs[xi]), acc[i]);
        }
    }
    for (int i = 0; i < MR; i++) _mm512_storeu_ps(out + 16 * i, acc[i]);
}

/* Two row groups (32 rows) x MR activation rows, at every M.  Each broadcast activation
 * quad feeds two vpdpbusd (one per group), halving broadcast loads per multiply; the
 * integer block sums equal tile512's exactly and the float epilogue is the same
 * instruction sequence, so outputs are bit-identical to the one-group tile.  The two
 * groups are two weight streams, each prefetched EK_PF_PAIR bytes ahead into L2 and
 * EK_PF_PAIR_L1 into L1: on a Xeon VM (AMX), cold 4096 x 4096 Q8_0 at M = 1 and 1 thread
 * took 1.14 ms on tile512 (one stream, EK_PF ahead), 1.03 ms here with 3 KiB into L2 only
 * and 0.99 ms with the L1 prefetch too (2, 4 or 6 KiB: slower). That is the "paired" read plan
 * (ekern.h); the "single" one decodes with tile512: on a Zen 5 VM (cold 4096 x 4096, M = 1, 1
 * thread, each call's share of a like read right after it) Q8_0 read 94-96 % there against 74-75 %
 * here, Q4_0 86-101 % against 67-71 %. */
#ifndef EK_PF_PAIR
#define EK_PF_PAIR 3072
#endif
#ifndef EK_PF_PAIR_L1
#define EK_PF_PAIR_L1 512
#endif
static inline __attribute__((always_inline)) T512 void
tile512x2(const ek_ctx *c, int g, int m0, const int MR, const int BITS, float *out)
{
    const ek_weight *w = c->w;
    const int S = c->S, spb = w->spb, Kp = c->Kp;
    const size_t sub = BITS == 4 ? 256 : 512, gstride = (size_t)S * sub;
    const uint8_t *qs = w->q + (size_t)g * gstride;
    const uint16_t *dg = w->d + (size_t)g * w->nblk * 16;
    const uint16_t *mg = w->m ? w->m + (size_t)g * w->nblk * 16 : NULL;
    const size_t sstride = (size_t)w->nblk * 16;
    const __m512i lo4 = _mm512_set1_epi8(0x0F);
    const __m512 noff = _mm512_set1_ps(-(float)w->offset);
    __m512 acc[2][EK_MR];
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < MR; i++) acc[h][i] = _mm512_setzero_ps();
    __m512 dw[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()}, cw[2] = {dw[0], dw[0]};
    for (int s = 0, left = 0; s < S; s++, qs += sub) {
        if (left == 0) {
            const int b = s / spb;
            for (int h = 0; h < 2; h++) {
                dw[h] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(dg + h * sstride + 16 * b)));
                cw[h] = mg ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(mg + h * sstride + 16 * b)))
                           : _mm512_mul_ps(dw[h], noff);
            }
            left = spb;
        }
        left--;
        if (m0 == 0) { /* the first activation tile streams the weights */
            const size_t pos = (size_t)s * sub, far = ek_pair_ahead(pos, EK_PF_PAIR, gstride), near = ek_pair_ahead(pos, EK_PF_PAIR_L1, gstride);
            for (int h = 0; h < 2; h++)
                for (size_t p = 0; p < sub; p += 64) {
                    _mm_prefetch((const char *)qs + h * gstride + far + p, EK_PF_HINT);
                    _mm_prefetch((const char *)qs + h * gstride + near + p, _MM_HINT_T0);
                }
        }
        __m512i ia[2][EK_MR];
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < MR; i++) ia[h][i] = _mm512_setzero_si512();
        for (int j = 0; j < 4; j++) {
            __m512i wl[2], wh[2];
            for (int h = 0; h < 2; h++) {
                if (BITS == 4) {
                    const __m512i v = _mm512_loadu_si512((const void *)(qs + h * gstride + 64 * j));
                    wl[h] = _mm512_and_si512(v, lo4);
                    wh[h] = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
                } else {
                    wl[h] = _mm512_loadu_si512((const void *)(qs + h * gstride + 64 * j));
                    wh[h] = _mm512_loadu_si512((const void *)(qs + h * gstride + 64 * (j + 4)));
                }
            }
            for (int i = 0; i < MR; i++) {
                const int8_t *xq = c->xq + (size_t)(m0 + i) * Kp + (size_t)s * 32;
                const __m512i xl = _mm512_set1_epi32(ek_ld32(xq + 4 * j));
                const __m512i xh = _mm512_set1_epi32(ek_ld32(xq + 16 + 4 * j));
                for (int h = 0; h < 2; h++) {
                    ia[h][i] = _mm512_dpbusd_epi32(ia[h][i], wl[h], xl);
                    ia[h][i] = _mm512_dpbusd_epi32(ia[h][i], wh[h], xh);
                }
            }
        }
        for (int i = 0; i < MR; i++) {
            const size_t xi = (size_t)(m0 + i) * S + s;
            const __m512 sx = _mm512_set1_ps(c->dx[xi]), sc = _mm512_set1_ps(c->cs[xi]);
            for (int h = 0; h < 2; h++) {
                acc[h][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[h][i]), _mm512_mul_ps(dw[h], sx), acc[h][i]);
                acc[h][i] = _mm512_fmadd_ps(cw[h], sc, acc[h][i]);
            }
        }
    }
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < MR; i++) _mm512_storeu_ps(out + (h * EK_MR + i) * 16, acc[h][i]);
}

/* Exact fp32 path: each 64-byte line's int32 lane r holds row r's 4 codes, so a shift
 * and mask yields 16 rows' code for one k, converted and FMA'd with broadcast x[k].
 * Four partial sums per activation row break the FMA latency chain. */
static inline __attribute__((always_inline)) T512 void
tile512f(const ek_ctx *c, int g, int m0, const int MR, const int BITS, float *out)
{
    const ek_weight *w = c->w;
    const int S = c->S, spb = w->spb, Kp = c->Kp;
    const size_t sub = BITS == 4 ? 256 : 512;
    const uint8_t *qs = w->q + (size_t)g * S * sub;
    const uint16_t *dg = w->d + (size_t)g * w->nblk * 16;
    const uint16_t *mg = w->m ? w->m + (size_t)g * w->nblk * 16 : NULL;
    const __m512i mask = _mm512_set1_epi32(BITS == 4 ? 0x0F : 0xFF);
    const __m512 off = _mm512_set1_ps((float)w->offset);
    __m512 acc[EK_MR];
    for (int i = 0; i < MR; i++) acc[i] = _mm512_setzero_ps();
    for (int s = 0; s < S; s++, qs += sub) {
        const int b = s / spb;
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(dg + 16 * b)));
        const __m512 mw = mg ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(mg + 16 * b)))
                             : _mm512_setzero_ps();
        for (size_t p = 0; p < sub; p += 64) _mm_prefetch((const char *)qs + EK_PF + p, _MM_HINT_T0);
        __m512 dot[EK_MR][4];
        for (int i = 0; i < MR; i++)
            for (int t = 0; t < 4; t++) dot[i][t] = _mm512_setzero_ps();
        for (int j = 0; j < (BITS == 4 ? 4 : 8); j++) {
            const __m512i v = _mm512_loadu_si512((const void *)(qs + 64 * j));
            for (int t = 0; t < 4; t++) {
                for (int h = 0; h < (BITS == 4 ? 2 : 1); h++) {
                    const int k = 16 * h + 4 * j + t;
                    const __m512i q = _mm512_and_si512(_mm512_srli_epi32(v, 8 * t + 4 * h), mask);
                    const __m512 wf = _mm512_sub_ps(_mm512_cvtepi32_ps(q), off);
                    for (int i = 0; i < MR; i++) {
                        const float xk = c->xf[(size_t)(m0 + i) * Kp + (size_t)s * 32 + k];
                        dot[i][t] = _mm512_fmadd_ps(wf, _mm512_set1_ps(xk), dot[i][t]);
                    }
                }
            }
        }
        for (int i = 0; i < MR; i++) {
            const __m512 d = _mm512_add_ps(_mm512_add_ps(dot[i][0], dot[i][1]), _mm512_add_ps(dot[i][2], dot[i][3]));
            acc[i] = _mm512_fmadd_ps(dw, d, acc[i]);
            acc[i] = _mm512_fmadd_ps(mw, _mm512_set1_ps(c->xs[(size_t)(m0 + i) * S + s]), acc[i]);
        }
    }
    for (int i = 0; i < MR; i++) _mm512_storeu_ps(out + 16 * i, acc[i]);
}

#define EK_DEF_MR(NAME, BODY, BITS)                                                      \
    void NAME(const ek_ctx *c, int g, int m0, int mr, float *out)                       \
    {                                                                                    \
        switch (mr) {                                                                    \
        case 1: BODY(c, g, m0, 1, BITS, out); break;                                     \
        case 2: BODY(c, g, m0, 2, BITS, out); break;                                     \
        case 3: BODY(c, g, m0, 3, BITS, out); break;                                     \
        default: BODY(c, g, m0, 4, BITS, out); break;                                    \
        }                                                                                \
    }

static T512 EK_DEF_MR(tile_q4_avx512vnni, tile512, 4)
static T512 EK_DEF_MR(tile_q8_avx512vnni, tile512, 8)
static T512 EK_DEF_MR(tile2_q4_avx512vnni, tile512x2, 4)
static T512 EK_DEF_MR(tile2_q8_avx512vnni, tile512x2, 8)
static T512 EK_DEF_MR(tile_q4_f32_avx512, tile512f, 4)
static T512 EK_DEF_MR(tile_q8_f32_avx512, tile512f, 8)

/* ------------------------------------------------------------ AVX2 / AVX-VNNI (256-bit) */
/* Rows 0-7 and 8-15 of a group are the two 32-byte halves of each 64-byte line. */
#define T_AVX2 __attribute__((target(ISA_AVX2)))
#define T_AVXVNNI __attribute__((target(ISA_AVXVNNI)))
#define EK_T256 T_AVX2
#define EK_VNNI 0
#define EK_NAME256 tile256_avx2
#include "ek_tile256.h"
#undef EK_T256
#undef EK_VNNI
#undef EK_NAME256
#define EK_T256 T_AVXVNNI
#define EK_VNNI 1
#define EK_NAME256 tile256_avxvnni
#include "ek_tile256.h"
#undef EK_T256
#undef EK_VNNI
#undef EK_NAME256

/* 16 ymm registers: more than two activation rows per pass spills, so 3-4 rows run as
 * 2+1 / 2+2 (per-element arithmetic is unchanged) */
#define EK_DEF_MR2(NAME, BODY, BITS)                                                     \
    void NAME(const ek_ctx *c, int g, int m0, int mr, float *out)                        \
    {                                                                                    \
        switch (mr) {                                                                    \
        case 1: BODY(c, g, m0, 1, BITS, out); break;                                     \
        case 2: BODY(c, g, m0, 2, BITS, out); break;                                     \
        case 3: BODY(c, g, m0, 2, BITS, out); BODY(c, g, m0 + 2, 1, BITS, out + 32); break; \
        default: BODY(c, g, m0, 2, BITS, out); BODY(c, g, m0 + 2, 2, BITS, out + 32); break; \
        }                                                                                \
    }

static T_AVX2 EK_DEF_MR2(tile_q4_avx2, tile256_avx2, 4)
static T_AVX2 EK_DEF_MR2(tile_q8_avx2, tile256_avx2, 8)
static T_AVX2 EK_DEF_MR(tile_q4_f32_avx2, tile256f, 4)
static T_AVX2 EK_DEF_MR(tile_q8_f32_avx2, tile256f, 8)
static T_AVXVNNI EK_DEF_MR2(tile_q4_avxvnni, tile256_avxvnni, 4)
static T_AVXVNNI EK_DEF_MR2(tile_q8_avxvnni, tile256_avxvnni, 8)

/* ------------------------------------------------------------ activation quantizers */
/* Bit-identical to the scalar quant_rows in ekern.c: same amax, d = fp16(amax/127), id = 127/amax,
 * cvtps2dq rounds half-to-even under the default MXCSR exactly like nearbyintf. */
static T512 int quant_block512(const float *x, int n, int8_t *q, float *dx, float *cs)
{
    const __mmask16 m0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
    const __mmask16 m1 = n >= 32 ? 0xffff : (n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1));
    const __m512 v0 = _mm512_maskz_loadu_ps(m0, x), v1 = _mm512_maskz_loadu_ps(m1, x + 16);
    /* NaN, +-Inf */
    if (_mm512_fpclass_ps_mask(v0, 0x99) | _mm512_fpclass_ps_mask(v1, 0x99)) return EK_ENONFINITE;
    const __m512 a = _mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1));
    const float amax = _mm512_reduce_max_ps(a);
    const float d0 = amax / 127.0f, d = d0 < 65504.0f ? ek_round_f16(d0) : d0, id = amax > 0.0f ? 127.0f / amax : 0.0f;
    const __m512 vid = _mm512_set1_ps(id);
    const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
    __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid));
    __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
    q0 = _mm512_max_epi32(_mm512_min_epi32(q0, lim), nlim);
    q1 = _mm512_max_epi32(_mm512_min_epi32(q1, lim), nlim);
    _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtepi32_epi8(q1));
    const int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    *dx = d;
    *cs = d * (float)sum;
    return 0;
}

static T512 int quant_rows512(const float *x, int m0, int m1, int k, int Kp, int8_t *xq, float *dx, float *cs)
{
    const int S = Kp / 32;
    for (int i = m0; i < m1; i++)
        for (int s = 0; s < S; s++) {
            const int n = k - 32 * s < 32 ? k - 32 * s : 32;
            const size_t o = (size_t)i * S + s;
            if (quant_block512(x + (size_t)i * k + 32 * s, n, xq + (size_t)i * Kp + 32 * s, dx + o, cs + o))
                return EK_ENONFINITE;
        }
    return 0;
}

/* The AVX2 quantizers: the same arithmetic as quant_rows / quant_rows_super in ekern.c (amax,
 * d = amax / 127 (fp16-rounded per 32), id = 127 / amax, codes by cvtps2dq: round-half-even under
 * the default MXCSR, like nearbyintf), so bit-identical to them; the scalar ones cost more than a
 * whole M = 1 matmul. */
static inline T_AVX2 int nonfinite8(__m256 v)
{
    const __m256i e = _mm256_set1_epi32(0x7f800000);
    return _mm256_movemask_epi8(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), e), e)) != 0;
}

static inline T_AVX2 float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline T_AVX2 int hsum8i(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* n (1..32) floats of x as 4 vectors, zero past n; the max |x| of them, or -1 on NaN/Inf */
static inline T_AVX2 float load32(const float *x, int n, __m256 *v)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_setzero_ps();
    int bad = 0;
    for (int j = 0; j < 4; j++) {
        if (n >= 8 * j + 8) {
            v[j] = _mm256_loadu_ps(x + 8 * j);
        } else {
            const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            v[j] = _mm256_maskload_ps(x + 8 * j, _mm256_cmpgt_epi32(_mm256_set1_epi32(n - 8 * j), lane));
        }
        bad |= nonfinite8(v[j]);
        a = _mm256_max_ps(a, _mm256_andnot_ps(sign, v[j]));
    }
    return bad ? -1.0f : hmax8(a);
}

/* the 32 codes of v times id into q; returns their sum */
static inline T_AVX2 int codes32(const __m256 *v, float id, int8_t *q)
{
    const __m256 vid = _mm256_set1_ps(id);
    const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
    __m256i c[4];
    for (int j = 0; j < 4; j++) c[j] = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[j], vid)), lim), nlim);
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
    _mm256_storeu_si256((__m256i *)q, _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    return hsum8i(_mm256_add_epi32(_mm256_add_epi32(c[0], c[1]), _mm256_add_epi32(c[2], c[3])));
}

static T_AVX2 int quant_rows_avx2(const float *x, int m0, int m1, int k, int Kp, int8_t *xq, float *dx, float *cs)
{
    const int S = Kp / 32;
    for (int i = m0; i < m1; i++)
        for (int s = 0; s < S; s++) {
            const int n = k - 32 * s < 32 ? k - 32 * s : 32;
            __m256 v[4];
            const float amax = load32(x + (size_t)i * k + 32 * s, n, v);
            if (amax < 0.0f) return EK_ENONFINITE;
            const float d0 = amax / 127.0f, d = d0 < 65504.0f ? ek_round_f16(d0) : d0, id = amax > 0.0f ? 127.0f / amax : 0.0f;
            const int sum = codes32(v, id, xq + (size_t)i * Kp + 32 * s);
            dx[(size_t)i * S + s] = d;
            cs[(size_t)i * S + s] = d * (float)sum;
        }
    return 0;
}

static T_AVX2 int quant256_avx2(const float *x, int m, int k, int8_t *xq, float *dx, float *cs)
{
    const int nb = k / 256;
    for (int i = 0; i < m; i++)
        for (int b = 0; b < nb; b++) {
            const float *xr = x + (size_t)i * k + 256 * b;
            __m256 v[8][4];
            float amax = 0.0f;
            for (int s = 0; s < 8; s++) {
                const float a = load32(xr + 32 * s, 32, v[s]);
                if (a < 0.0f) return EK_ENONFINITE;
                amax = a > amax ? a : amax;
            }
            const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
            for (int s = 0; s < 8; s++) cs[(size_t)i * (k / 32) + 8 * b + s] = d * (float)codes32(v[s], id, xq + (size_t)i * k + 256 * b + 32 * s);
            dx[(size_t)i * nb + b] = d;
        }
    return 0;
}

/* bandwidth probe: four independent 64-byte loads per step (prefetches past the end are harmless:
 * a prefetch never faults). The AVX-512 paths also offer stream256, and the probe takes the faster:
 * on a Xeon VM (AMX) 32-byte loads read 18-19 GB/s from one core, 64-byte ones 15-17. */
static T512 uint64_t stream512(const uint8_t *p, size_t n, size_t pf)
{
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 256 <= n; i += 256) {
        if (pf)
            for (int k = 0; k < 4; k++) _mm_prefetch((const char *)p + i + pf + 64 * k, _MM_HINT_T1);
        a0 = _mm512_xor_si512(a0, _mm512_loadu_si512((const void *)(p + i)));
        a1 = _mm512_xor_si512(a1, _mm512_loadu_si512((const void *)(p + i + 64)));
        a2 = _mm512_xor_si512(a2, _mm512_loadu_si512((const void *)(p + i + 128)));
        a3 = _mm512_xor_si512(a3, _mm512_loadu_si512((const void *)(p + i + 192)));
    }
    a0 = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
    uint64_t lanes[8], s = 0;
    _mm512_storeu_si512((void *)lanes, a0);
    for (int k = 0; k < 8; k++) s ^= lanes[k];
    for (; i < n; i++) s += p[i];
    return s;
}
/* the same with 32-byte loads: a 64-bit-load loop cannot keep DRAM busy from one core, so without
 * this the bandwidth probe under-reads AVX2 machines (kernels then showed > 100 % of it) */
static T_AVX2 uint64_t stream256(const uint8_t *p, size_t n, size_t pf)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        if (pf) {
            _mm_prefetch((const char *)p + i + pf, _MM_HINT_T1);
            _mm_prefetch((const char *)p + i + pf + 64, _MM_HINT_T1);
        }
        a0 = _mm256_xor_si256(a0, _mm256_loadu_si256((const __m256i *)(p + i)));
        a1 = _mm256_xor_si256(a1, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_xor_si256(a2, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_xor_si256(a3, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    uint64_t lanes[4], s = 0;
    _mm256_storeu_si256((__m256i *)lanes, a0);
    for (int k = 0; k < 4; k++) s ^= lanes[k];
    for (; i < n; i++) s += p[i];
    return s;
}
#define X86(f) f
#define BUILT 1
#else
#define X86(f) NULL
#define BUILT 0
#endif

/* amx: the avx512vnni path, with AMX tiles for prompt-sized GGUF block matmuls */
const ek_path ek_x86_paths[EK_X86_NPATHS] = {
    {"amx", ISA_AMX, BUILT, {X86(tile_q4_avx512vnni), X86(tile_q8_avx512vnni)},
     {X86(tile2_q4_avx512vnni), X86(tile2_q8_avx512vnni)}, {X86(tile_q4_f32_avx512), X86(tile_q8_f32_avx512)},
     X86(quant_rows512), {X86(stream512), X86(stream256)}, X86(ek_blocks_rows_amx), X86(quant256_avx2)},
    {"avx512vnni", ISA512, BUILT, {X86(tile_q4_avx512vnni), X86(tile_q8_avx512vnni)},
     {X86(tile2_q4_avx512vnni), X86(tile2_q8_avx512vnni)}, {X86(tile_q4_f32_avx512), X86(tile_q8_f32_avx512)},
     X86(quant_rows512), {X86(stream512), X86(stream256)}, X86(ek_blocks_rows_avx512), X86(quant256_avx2)},
    {"avxvnni", ISA_AVXVNNI, BUILT, {X86(tile_q4_avxvnni), X86(tile_q8_avxvnni)}, {NULL, NULL},
     {X86(tile_q4_f32_avx2), X86(tile_q8_f32_avx2)}, X86(quant_rows_avx2), {X86(stream256), NULL}, X86(ek_blocks_rows_avxvnni), X86(quant256_avx2)},
    {"avx2", ISA_AVX2, BUILT, {X86(tile_q4_avx2), X86(tile_q8_avx2)}, {NULL, NULL},
     {X86(tile_q4_f32_avx2), X86(tile_q8_f32_avx2)}, X86(quant_rows_avx2), {X86(stream256), NULL}, X86(ek_blocks_rows_avx2), X86(quant256_avx2)},
};
