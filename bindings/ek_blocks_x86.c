/* x86 row kernels over GGUF-native blocks (see ek_blocks.h).
 *
 * The plain-C kernel (ek_blocks_rows.h) is compiled for AVX2 and AVX-512; on the int8-activation
 * path Q4_K, Q5_K, Q6_K and Q5_0 (what Q4_K_M / Q5_K_M files are made of) get hand-written AVX2 dots:
 * codes are unpacked in registers, multiplied with the int8 activations by vpmaddubsw (unsigned x
 * signed; signed codes via abs/sign) and accumulated as floats per row, one horizontal sum per row.
 * Each output is computed by one thread with one instruction sequence, whatever M or the thread
 * count: results are bit-identical across both. */
#include "ek_blocks.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define T2 __attribute__((target(ISA_AVX2)))
#define T512 __attribute__((target(ISA512)))

#define EK_LINK static
#define EK_TARGET T2
#define EK_NAME generic_avx2
#include "ek_blocks_rows.h"
#undef EK_NAME
#undef EK_TARGET
#define EK_TARGET T512
#define EK_NAME generic_avx512
#include "ek_blocks_rows.h"
#undef EK_NAME
#undef EK_TARGET
#undef EK_LINK

static inline T2 float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 int32 sums of 4 adjacent products each: u (unsigned bytes) x x (signed bytes) */
static inline T2 __m256i dot_u8(__m256i u, __m256i x)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
}

/* the same for signed codes q (|q| <= 127) */
static inline T2 __m256i dot_s8(__m256i q, __m256i x)
{
    return dot_u8(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q));
}

/* Shared loop: per row, per EK_MR activation rows, per block `blk` (index b): the body, which adds
 * into acc[i] for the mt activation rows i. Activations are quantized per weight block (ab == block),
 * so block b's activation scale is dx[b]; everything indexed is computed here, once. */
#define ROWS_LOOP(...)                                                                                 \
    const int B = c->t->block, nblk = c->k / B, B32 = B / 32;                                        \
    const size_t K = (size_t)c->k, S32 = K / 32, nbytes = (size_t)c->t->nbytes, row_bytes = (size_t)nblk * nbytes; \
    const int8_t *const xq0 = c->xq;                                                                 \
    const float *const dx0 = c->dx, *const cs0 = c->cs;                                              \
    (void)cs0;                                                                                       \
    (void)S32;                                                                                       \
    (void)B32;                                                                                       \
    for (int r = r0; r < r1; r++) {                                                                  \
        const uint8_t *row = c->w + (size_t)r * row_bytes;                                           \
        for (int i0 = 0; i0 < c->M; i0 += EK_MR) {                                                   \
            const int mt = c->M - i0 < EK_MR ? c->M - i0 : EK_MR;                                    \
            __m256 acc[EK_MR];                                                                       \
            for (int i = 0; i < EK_MR; i++) acc[i] = _mm256_setzero_ps();                            \
            for (int b = 0; b < nblk; b++) {                                                         \
                const uint8_t *blk = row + (size_t)b * nbytes;                                       \
                __VA_ARGS__                                                                          \
            }                                                                                        \
            for (int i = 0; i < mt; i++) c->y[(size_t)(i0 + i) * c->ldy + r] = hsum8(acc[i]);     \
        }                                                                                            \
    }

/* the activation rows of a tile: a constant trip count keeps acc[] in registers */
#define FOR_ROWS(i) for (int i = 0; i < EK_MR; i++) if (i < mt)
#define XQ(i, off) ((const __m256i *)(xq0 + (size_t)(i0 + (i)) * K + (size_t)b * B + (off)))
#define DX(i, j) (dx0[(size_t)(i0 + (i)) * nblk + b + (j)])
#define CS(i, j) (cs0[(size_t)(i0 + (i)) * S32 + (size_t)b * B32 + (j)])

/* fp16 at byte offset `at` by the F16C instruction (the portable ek_h2f costs ~20 scalar ops) */
static inline T2 float h2f_at(const uint8_t *b, int at)
{
    uint16_t h;
    memcpy(&h, b + at, 2);
    return _cvtsh_ss(h);
}

/* Q4_K / Q5_K (Q5: a fifth bit per code from qh), activations per 256: each 32-element sub-block's
 * integer dot is weighted by its 6-bit scale in int16/int32 (vpmaddwd), the super-block sums in
 * integers, one float FMA per block; mins through cs. */
static inline __attribute__((always_inline)) T2 void rows_k4(const ek_bctx *c, int r0, int r1, const int Q5)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    ROWS_LOOP({
        const uint8_t *s = blk + 4;
        int16_t si[8];
        int32_t mi[8];
        for (int j = 0; j < 4; j++) {
            si[j] = (int16_t)(s[j] & 63);
            mi[j] = s[j + 4] & 63;
            si[j + 4] = (int16_t)((s[j + 8] & 15) | ((s[j] >> 2) & 0x30));
            mi[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
        }
        const float d = h2f_at(blk, 0);
        const __m256 mnv = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(_mm256_set1_ps(h2f_at(blk, 2)),
                                                                            _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)mi))));
        __m256i lo[4], hi[4];
        const __m256i qh = Q5 ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
        for (int ch = 0; ch < 4; ch++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(blk + (Q5 ? 48 : 16) + 32 * ch));
            lo[ch] = _mm256_and_si256(v, m4);
            hi[ch] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if (Q5) { /* element 32j + t: bit j of qh[t] is its fifth bit */
                lo[ch] = _mm256_or_si256(lo[ch], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * ch), one), 4));
                hi[ch] = _mm256_or_si256(hi[ch], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * ch + 1), one), 4));
            }
        }
        FOR_ROWS(i) {
            __m256i sumi = _mm256_setzero_si256();
            for (int ch = 0; ch < 4; ch++) {
                const __m256i p0 = _mm256_maddubs_epi16(lo[ch], _mm256_loadu_si256(XQ(i, 64 * ch)));
                const __m256i p1 = _mm256_maddubs_epi16(hi[ch], _mm256_loadu_si256(XQ(i, 64 * ch + 32)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p0, _mm256_set1_epi16(si[2 * ch])));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p1, _mm256_set1_epi16(si[2 * ch + 1])));
            }
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(d * DX(i, 0)), acc[i]);
            acc[i] = _mm256_fmadd_ps(mnv, _mm256_loadu_ps(&CS(i, 0)), acc[i]); /* min term */
        }
    })
}

static T2 void rows_q4_k(const ek_bctx *c, int r0, int r1) { rows_k4(c, r0, r1, 0); }

static T2 void rows_q5_k(const ek_bctx *c, int r0, int r1) { rows_k4(c, r0, r1, 1); }

/* Q6_K, activations per 256: signed codes via abs/sign, each 16-element sub-block weighted by its
 * int8 scale in vpmaddwd, integer sums over the super-block, one float FMA per block. */
static T2 void rows_q6_k(const ek_bctx *c, int r0, int r1)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03), o32 = _mm256_set1_epi8(32);
    ROWS_LOOP({
        const float d = h2f_at(blk, 208);
        const int8_t *scl = (const int8_t *)(blk + 192);
        __m256i q[8], sv[8];
        for (int h = 0; h < 2; h++) {
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * h));
            for (int g = 0; g < 4; g++) { /* elements 128h + 32g .. +31: sub-blocks 8h+2g, 8h+2g+1 */
                const __m256i ql = _mm256_loadu_si256((const __m256i *)(blk + 64 * h + 32 * (g & 1)));
                const __m256i lo = _mm256_and_si256(g < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
                const __m256i hb = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * g), m2), 4);
                const int s0 = 8 * h + 2 * g;
                q[4 * h + g] = _mm256_sub_epi8(_mm256_or_si256(lo, hb), o32);
                sv[4 * h + g] = _mm256_setr_m128i(_mm_set1_epi16(scl[s0]), _mm_set1_epi16(scl[s0 + 1]));
            }
        }
        FOR_ROWS(i) {
            __m256i sumi = _mm256_setzero_si256();
            for (int u = 0; u < 8; u++) {
                const __m256i x = _mm256_loadu_si256(XQ(i, 32 * u));
                const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(q[u], q[u]), _mm256_sign_epi8(x, q[u]));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sv[u]));
            }
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(d * DX(i, 0)), acc[i]);
        }
    })
}

/* 32 bits -> 32 bytes, 0xFF where the bit is set (element j = bit j) */
static inline T2 __m256i bits_to_bytes(uint32_t bits)
{
    const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x7fbfdfeff7fbfdfeull);
    return _mm256_cmpeq_epi8(_mm256_or_si256(v, bit), _mm256_set1_epi64x(-1));
}

static T2 void rows_q5_0(const ek_bctx *c, int r0, int r1)
{
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m256i b16 = _mm256_set1_epi8(0x10);
    ROWS_LOOP({
        const float d = h2f_at(blk, 0);
        const __m128i v = _mm_loadu_si128((const __m128i *)(blk + 6));
        const __m256i nib = _mm256_setr_m128i(_mm_and_si128(v, m4), _mm_and_si128(_mm_srli_epi16(v, 4), m4));
        const __m256i q = _mm256_sub_epi8(_mm256_or_si256(nib, _mm256_and_si256(bits_to_bytes(le32(blk + 2)), b16)), b16);
        FOR_ROWS(i)
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_s8(q, _mm256_loadu_si256(XQ(i, 0)))),
                                     _mm256_set1_ps(d * DX(i, 0)), acc[i]);
    })
}

static ek_blocks_fn avx2_dot(const ek_bctx *c)
{
    if (!c->act_int8) return NULL;
    switch (c->t->code) {
    case 12: return rows_q4_k;
    case 13: return rows_q5_k;
    case 14: return rows_q6_k;
    case 6: return rows_q5_0;
    default: return NULL;
    }
}

T2 void ek_blocks_rows_avx2(const ek_bctx *c, int r0, int r1)
{
    const ek_blocks_fn f = avx2_dot(c);
    if (f) f(c, r0, r1);
    else generic_avx2(c, r0, r1);
}

/* AVX-512 CPUs run the AVX2 dots (their needs are a subset of the path's) */
T512 void ek_blocks_rows_avx512(const ek_bctx *c, int r0, int r1)
{
    const ek_blocks_fn f = avx2_dot(c);
    if (f) f(c, r0, r1);
    else generic_avx512(c, r0, r1);
}
#endif
