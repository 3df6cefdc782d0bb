/* AVX2 kernels over GGUF blocks with rows interleaved 8 at a time (ekern.h, ek_weight.rows8).
 *
 * Within a group of 8 weight rows every field of a block is stored word by word for the 8 rows, so
 * one 32-byte load holds the same 4 bytes of codes of all 8 rows: a 32-bit lane per row. One
 * vpmaddubsw with 4 activation bytes broadcast multiplies 8 rows at once, an int16 sum over a
 * sub-block takes one vpmaddwd with that sub-block's 8 scales, and a block's float work (convert,
 * d * dx, FMA) is one vector for 8 outputs; no horizontal sums. The row-per-row kernels spend most
 * of their time unpacking scales and folding sums of one row; here that work is shared by 8 rows,
 * which is what lets token generation run at the memory bandwidth.
 *
 * A tile is T (1..4) activation rows x one group: each unpacked code vector feeds T rows. Integer
 * sums are exact; an output's float operations (one FMA per block, in block order, and for Q4_K /
 * Q5_K one for the mins) are the same for every T, M and thread count, so are its bits. */
#include "ek_blocks.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define T2 __attribute__((target(ISA_AVX2)))
#define AI __attribute__((always_inline))
#define TILE_ROWS(i) for (int i = 0; i < T; i++)
#define EK_TM 4 /* activation rows per tile */

static inline AI T2 __m256i ld(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* 4 bytes (activations, or a pair of int16 sums) broadcast to every 32-bit lane */
static inline AI T2 __m256i bc4(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* the 8 rows' fp16 at p, as floats */
static inline AI T2 __m256 h8(const uint8_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

/* byte j of each 32-bit lane, zero-extended, in both int16 halves of the lane */
static inline AI T2 __m256i lane_byte16(__m256i v, int j)
{
    const __m128i p = _mm_setr_epi8((char)j, -1, (char)j, -1, (char)(4 + j), -1, (char)(4 + j), -1, (char)(8 + j), -1, (char)(8 + j), -1,
                                    (char)(12 + j), -1, (char)(12 + j), -1);
    return _mm256_shuffle_epi8(v, _mm256_broadcastsi128_si256(p));
}

/* int16 half h of each 32-bit lane in both halves */
static inline AI T2 __m256i lane_half16(__m256i v, int h)
{
    const char a = (char)(2 * h), b = (char)(2 * h + 1);
    const __m128i p = _mm_setr_epi8(a, b, a, b, (char)(4 + a), (char)(4 + b), (char)(4 + a), (char)(4 + b), (char)(8 + a), (char)(8 + b),
                                    (char)(8 + a), (char)(8 + b), (char)(12 + a), (char)(12 + b), (char)(12 + a), (char)(12 + b));
    return _mm256_shuffle_epi8(v, _mm256_broadcastsi128_si256(p));
}

/* v, as a register the compiler may not reassociate through (keeps a tile's sums in registers) */
static inline AI T2 __m256i keep(__m256i v)
{
    __asm__("" : "+x"(v));
    return v;
}

/* Software prefetch of the group block EK_PF ahead (the next group's first blocks at a group's
 * end: groups are contiguous), by the first tile of a group only. Without it a cold M = 1 matmul
 * stalls on DRAM between blocks: the hardware prefetcher does not follow a block's field order. */
#define EK_PF_BLOCKS 4
static inline AI void prefetch_block(const uint8_t *gb, size_t GB)
{
    for (size_t o = 0; o < GB; o += 64) __builtin_prefetch(gb + EK_PF_BLOCKS * GB + o, 0, 0);
}

static inline AI T2 void store8(const ek_bctx *c, int i, int g, __m256 v) { _mm256_storeu_ps(c->y + (size_t)i * c->ldy + 8 * (size_t)g, v); }

/* -------------------------------------------------------------------- Q4_K / Q5_K
 * Group block: d[8] f16 | dmin[8] f16 | the 12 scale bytes as 3 words | (Q5_K: qh, 8 words) | qs, 32
 * words. qs word 8c + q holds elements 64c + 4q .. (low nibbles, sub-block 2c) and 64c + 32 + 4q ..
 * (high, 2c + 1); qh word q the fifth bits of elements 32u + 4q .. in bit u. Per sub-block u the
 * codes' int16 sums take the 6-bit scale in vpmaddwd; the mins are sum(m * xs) in vpmaddwd pairs. */
static inline AI T2 void tile_k4(const ek_bctx *c, int g, int i0, const int T, const int Q5)
{
    const int nblk = c->k / EK_QK_K;
    const size_t K = (size_t)c->k, GB = Q5 ? 1408 : 1152, QS = Q5 ? 384 : 128;
    const uint8_t *base = c->w + (size_t)g * nblk * GB;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m6 = _mm256_set1_epi8(0x3F), m30 = _mm256_set1_epi8(0x30), lo16 = _mm256_set1_epi32(0x00FF00FF);
    __m256 acc[EK_TM];
    TILE_ROWS(i) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nblk; b++) {
        const uint8_t *gb = base + (size_t)b * GB;
        if (i0 == 0) prefetch_block(gb, GB);
        /* k_scale_min, lane-wise: scales 0..3 | 4..7 and mins 0..3 | 4..7 as bytes of each lane */
        const __m256i w0 = ld(gb + 32), w1 = ld(gb + 64), w2 = ld(gb + 96);
        const __m256i sc_lo = _mm256_and_si256(w0, m6);
        const __m256i sc_hi = _mm256_or_si256(_mm256_and_si256(w2, m4), _mm256_and_si256(_mm256_srli_epi32(w0, 2), m30));
        const __m256i mn_lo = _mm256_and_si256(w1, m6);
        const __m256i mn_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(w2, 4), m4), _mm256_and_si256(_mm256_srli_epi32(w1, 2), m30));
        /* mins as int16 pairs (0, 2), (1, 3), (4, 6), (5, 7): the order of ek_bctx.xs */
        const __m256i mp[4] = {_mm256_and_si256(mn_lo, lo16), _mm256_srli_epi16(mn_lo, 8), _mm256_and_si256(mn_hi, lo16), _mm256_srli_epi16(mn_hi, 8)};
        __m256i isum[EK_TM], imin[EK_TM];
        TILE_ROWS(i) {
            const int16_t *xs = c->xs + (size_t)(i0 + i) * c->xs_stride + 8 * b;
            __m256i s = _mm256_madd_epi16(mp[0], bc4(xs));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(mp[1], bc4(xs + 2)));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(mp[2], bc4(xs + 4)));
            imin[i] = _mm256_add_epi32(s, _mm256_madd_epi16(mp[3], bc4(xs + 6)));
            isum[i] = _mm256_setzero_si256();
        }
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) {
            const __m256i sc = lane_byte16(u < 4 ? sc_lo : sc_hi, u & 3);
            /* Q4 codes (<= 15) sum over 8 quads in int16; Q5's (<= 31) over 4 */
            const int NQ = Q5 ? 4 : 8; /* quads per int16 sum */
#pragma GCC unroll 2
            for (int q0 = 0; q0 < 8; q0 += NQ) {
                __m256i a16[EK_TM];
                TILE_ROWS(i) a16[i] = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int q = q0; q < q0 + NQ; q++) {
                    const __m256i v = ld(gb + QS + 32 * (8 * (u >> 1) + q));
                    __m256i code = _mm256_and_si256(u & 1 ? _mm256_srli_epi16(v, 4) : v, m4);
                    if (Q5) {
                        const __m256i qh = ld(gb + 128 + 32 * q);
                        const __m256i hb = u < 4 ? _mm256_slli_epi16(qh, 4 - u) : u > 4 ? _mm256_srli_epi16(qh, u - 4) : qh;
                        code = _mm256_or_si256(code, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
                    }
                    TILE_ROWS(i) a16[i] = keep(_mm256_add_epi16(a16[i], _mm256_maddubs_epi16(code, bc4(c->xq + (size_t)(i0 + i) * K + 256 * (size_t)b + 32 * u + 4 * q))));
                }
                TILE_ROWS(i) isum[i] = _mm256_add_epi32(isum[i], _mm256_madd_epi16(a16[i], sc));
            }
        }
        const __m256 d = h8(gb), dmin = h8(gb + 16);
        TILE_ROWS(i) {
            const __m256 dx = _mm256_broadcast_ss(c->dx + (size_t)(i0 + i) * nblk + b);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i]), _mm256_mul_ps(d, dx), acc[i]);
            acc[i] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(imin[i]), _mm256_mul_ps(dmin, dx), acc[i]);
        }
    }
    TILE_ROWS(i) store8(c, i0 + i, g, acc[i]);
}

/* -------------------------------------------------------------------- Q6_K
 * Group block: ql, 32 words | qh, 16 words | the 16 int8 scales as 4 words | d[8] f16. Element
 * 128h + 32i + t: a nibble of ql byte 64h + 32(i & 1) + t (low for i < 2), bits 2i, 2i + 1 of qh byte
 * 32h + t. Codes as stored (0..63) sum over two quads in int16, then take the sub-block's scale in
 * vpmaddwd; the offset 32 comes off as 32 * sum(scale * xs) per block. */
static inline AI T2 void tile_q6_k(const ek_bctx *c, int g, int i0, const int T)
{
    const int nblk = c->k / EK_QK_K;
    const size_t K = (size_t)c->k, GB = 1680;
    const uint8_t *base = c->w + (size_t)g * nblk * GB;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    __m256 acc[EK_TM];
    TILE_ROWS(i) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nblk; b++) {
        const uint8_t *gb = base + (size_t)b * GB;
        if (i0 == 0) prefetch_block(gb, GB);
        /* scales 4w, 4w + 2 and 4w + 1, 4w + 3 of each row as int16 pairs */
        __m256i sp[8];
        for (int w = 0; w < 4; w++) {
            const __m256i v = ld(gb + 1536 + 32 * w);
            sp[2 * w] = _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8);
            sp[2 * w + 1] = _mm256_srai_epi16(v, 8);
        }
        __m256i isum[EK_TM], ioff[EK_TM];
        TILE_ROWS(i) {
            const int16_t *xs = c->xs + (size_t)(i0 + i) * c->xs_stride + 16 * b;
            __m256i s = _mm256_madd_epi16(sp[0], bc4(xs));
            for (int p = 1; p < 8; p++) s = _mm256_add_epi32(s, _mm256_madd_epi16(sp[p], bc4(xs + 2 * p)));
            ioff[i] = _mm256_slli_epi32(s, 5);
            isum[i] = _mm256_setzero_si256();
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
#pragma GCC unroll 4
            for (int ci = 0; ci < 4; ci++)
#pragma GCC unroll 2
                for (int j = 0; j < 2; j++) {
                    const int s = 8 * h + 2 * ci + j; /* the sub-block: elements 128h + 32ci + 16j .. + 15 */
                    const __m256i sc = lane_half16(sp[2 * (s >> 2) + (s & 1)], (s >> 1) & 1);
#pragma GCC unroll 2
                    for (int pair = 0; pair < 2; pair++) {
                        __m256i a16[EK_TM];
                        TILE_ROWS(i) a16[i] = _mm256_setzero_si256();
#pragma GCC unroll 2
                        for (int q = 2 * pair; q < 2 * pair + 2; q++) {
                            const int t = 16 * j + 4 * q;
                            const __m256i ql = ld(gb + 32 * (16 * h + 8 * (ci & 1) + t / 4));
                            const __m256i qh = ld(gb + 1024 + 32 * (8 * h + t / 4));
                            const __m256i lo = _mm256_and_si256(ci < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
                            const __m256i hb = ci == 0 ? _mm256_slli_epi16(qh, 4) : ci == 1 ? _mm256_slli_epi16(qh, 2) : ci == 2 ? qh : _mm256_srli_epi16(qh, 2);
                            const __m256i code = _mm256_or_si256(lo, _mm256_and_si256(hb, m30));
                            TILE_ROWS(i) a16[i] = keep(_mm256_add_epi16(a16[i], _mm256_maddubs_epi16(code, bc4(c->xq + (size_t)(i0 + i) * K + 256 * (size_t)b + 128 * h + 32 * ci + t))));
                        }
                        TILE_ROWS(i) isum[i] = _mm256_add_epi32(isum[i], _mm256_madd_epi16(a16[i], sc));
                    }
                }
        const __m256 d = h8(gb + 1664);
        TILE_ROWS(i) {
            const __m256 dx = _mm256_broadcast_ss(c->dx + (size_t)(i0 + i) * nblk + b);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(isum[i], ioff[i])), _mm256_mul_ps(d, dx), acc[i]);
        }
    }
    TILE_ROWS(i) store8(c, i0 + i, g, acc[i]);
}

/* -------------------------------------------------------------------- Q5_0
 * Group block: d[8] f16 | qh, one word | qs, 4 words. qs word w holds elements 4w .. (low nibbles)
 * and 16 + 4w .. (high); their fifth bits are bits 4w .. and 16 + 4w .. of qh. Codes as stored
 * (0..31); the offset 16 comes off as 16 * xs per block. */

/* byte j of each lane of the result: bit (8 * byte + 4 * nib + j) of the lane of qh at bit 4 */
static inline AI T2 __m256i q5_bits(__m256i qh, int byte, int nib)
{
    const char B = (char)byte;
    const __m128i p = _mm_setr_epi8(B, B, B, B, (char)(4 + B), (char)(4 + B), (char)(4 + B), (char)(4 + B), (char)(8 + B), (char)(8 + B), (char)(8 + B),
                                    (char)(8 + B), (char)(12 + B), (char)(12 + B), (char)(12 + B), (char)(12 + B));
    const __m256i bit = _mm256_set1_epi32((int)(0x08040201u << (4 * nib)));
    const __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(qh, _mm256_broadcastsi128_si256(p)), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(v, bit), _mm256_set1_epi8(0x10));
}

static inline AI T2 void tile_q5_0(const ek_bctx *c, int g, int i0, const int T)
{
    const int nblk = c->k / 32;
    const size_t K = (size_t)c->k, GB = 176;
    const uint8_t *base = c->w + (size_t)g * nblk * GB;
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[EK_TM];
    TILE_ROWS(i) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nblk; b++) {
        const uint8_t *gb = base + (size_t)b * GB;
        if (i0 == 0 && b % 4 == 0) prefetch_block(gb, 4 * GB);
        const __m256i qh = ld(gb + 16);
        __m256i isum[EK_TM];
        TILE_ROWS(i) isum[i] = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int half = 0; half < 2; half++) { /* codes <= 31: int16 sums over 4 quads */
            __m256i a16[EK_TM];
            TILE_ROWS(i) a16[i] = _mm256_setzero_si256();
#pragma GCC unroll 2
            for (int w = 2 * half; w < 2 * half + 2; w++) {
                const __m256i v = ld(gb + 48 + 32 * w);
                const __m256i lo = _mm256_or_si256(_mm256_and_si256(v, m4), q5_bits(qh, w >> 1, w & 1));
                const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), q5_bits(qh, 2 + (w >> 1), w & 1));
                TILE_ROWS(i) {
                    const int8_t *x = c->xq + (size_t)(i0 + i) * K + 32 * (size_t)b + 4 * w;
                    a16[i] = keep(_mm256_add_epi16(a16[i], _mm256_maddubs_epi16(lo, bc4(x))));
                    a16[i] = keep(_mm256_add_epi16(a16[i], _mm256_maddubs_epi16(hi, bc4(x + 16))));
                }
            }
            TILE_ROWS(i) isum[i] = _mm256_add_epi32(isum[i], _mm256_madd_epi16(a16[i], ones));
        }
        const __m256 d = h8(gb);
        TILE_ROWS(i) {
            const int off = 16 * c->xs[(size_t)(i0 + i) * c->xs_stride + ek_xs_index(b)];
            const __m256 dx = _mm256_broadcast_ss(c->dx + (size_t)(i0 + i) * nblk + b);
            const __m256i dot = _mm256_sub_epi32(isum[i], _mm256_set1_epi32(off));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(d, dx), acc[i]);
        }
    }
    TILE_ROWS(i) store8(c, i0 + i, g, acc[i]);
}

/* -------------------------------------------------------------------- the loops around the tiles */
enum { TY_Q4_K, TY_Q5_K, TY_Q6_K, TY_Q5_0 };

static inline AI T2 void tile(const ek_bctx *c, int g, int i0, const int T, const int TY)
{
    if (TY == TY_Q6_K) tile_q6_k(c, g, i0, T);
    else if (TY == TY_Q5_0) tile_q5_0(c, g, i0, T);
    else tile_k4(c, g, i0, T, TY == TY_Q5_K);
}

/* Groups of rows [r0, r1) (multiples of 8) x every activation row: a group's weights stay in L1/L2
 * while the activation tiles pass over them */
static inline AI T2 void rows8(const ek_bctx *c, int r0, int r1, const int TY)
{
    const int M = c->M, Mt = M / EK_TM * EK_TM;
    for (int g = r0 / 8; g < r1 / 8; g++) {
        for (int i0 = 0; i0 < Mt; i0 += EK_TM) tile(c, g, i0, EK_TM, TY);
        switch (M - Mt) {
        case 3: tile(c, g, Mt, 3, TY); break;
        case 2: tile(c, g, Mt, 2, TY); break;
        case 1: tile(c, g, Mt, 1, TY); break;
        default: break;
        }
    }
}

static T2 void rows8_q4_k(const ek_bctx *c, int r0, int r1) { rows8(c, r0, r1, TY_Q4_K); }
static T2 void rows8_q5_k(const ek_bctx *c, int r0, int r1) { rows8(c, r0, r1, TY_Q5_K); }
static T2 void rows8_q6_k(const ek_bctx *c, int r0, int r1) { rows8(c, r0, r1, TY_Q6_K); }
static T2 void rows8_q5_0(const ek_bctx *c, int r0, int r1) { rows8(c, r0, r1, TY_Q5_0); }

static ek_blocks_fn rows8_of(int code)
{
    switch (code) {
    case 12: return rows8_q4_k;
    case 13: return rows8_q5_k;
    case 14: return rows8_q6_k;
    case 6: return rows8_q5_0;
    default: return NULL;
    }
}

int ek_rows8_has(int code) { return rows8_of(code) != NULL; }

ek_blocks_fn ek_rows8_avx2(const ek_bctx *c) { return c->rows8 && c->act_int8 && c->xs ? rows8_of(c->t->code) : NULL; }
#endif
