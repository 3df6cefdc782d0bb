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
 * Q5_K one for the mins) are the same for every T, M, thread count and instruction set (AVX2,
 * AVX-VNNI, AVX512-VNNI: ek_rows8_tiles.h), so are its bits. */
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

/* byte j of each 32-bit lane, zero-extended to the lane */
static inline AI T2 __m256i lane_byte32(__m256i v, int j)
{
    const char J = (char)j;
    const __m128i p = _mm_setr_epi8(J, -1, -1, -1, (char)(4 + J), -1, -1, -1, (char)(8 + J), -1, -1, -1, (char)(12 + J), -1, -1, -1);
    return _mm256_shuffle_epi8(v, _mm256_broadcastsi128_si256(p));
}

/* v, as a register the compiler may not reassociate through (keeps a tile's sums in registers) */
static inline AI T2 __m256i keep(__m256i v)
{
    __asm__("" : "+v"(v)); /* "v": xmm0-31 where AVX-512 is enabled */
    return v;
}

/* Software prefetch of the group block EK_PF_BLOCKS ahead (the next group's first blocks at a
 * group's end: groups are contiguous), by the first tile of a group only, into L2 (prefetcht1;
 * AMD cores fill L1 for every hint). Without it a cold M = 1 matmul stalls on DRAM between blocks.
 * Measured on a Sapphire Rapids VM, M = 1 at 1 thread: prefetchnta 40-57 % of DRAM bandwidth,
 * prefetcht1 2 blocks ahead 73-79 %, 4-16 blocks 68-72 %, prefetcht0 59-73 %. */
#ifndef EK_PF_BLOCKS
#define EK_PF_BLOCKS 2
#endif
#ifndef EK_PF_LOC
#define EK_PF_LOC 2 /* __builtin_prefetch locality: 2 = prefetcht1 */
#endif
static inline AI void prefetch_block(const uint8_t *gb, size_t GB)
{
    for (size_t o = 0; o < GB; o += 64) __builtin_prefetch(gb + EK_PF_BLOCKS * GB + o, 0, EK_PF_LOC);
}

static inline AI T2 void store8(const ek_bctx *c, int i, int g, __m256 v) { _mm256_storeu_ps(c->y + (size_t)i * c->ldy + 8 * (size_t)g, v); }

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


/* -------------------------------------------------------------------- code vectors
 * Each type's codes as the tiles read them: vector v of a group block holds 4 codes of each of the
 * 8 rows (a 32-bit lane per row), the unsigned values vpmaddubsw / vpdpbusd take. */
enum { TY_Q4_K, TY_Q5_K, TY_Q6_K, TY_Q5_0 };

/* Q4_K / Q5_K (layout above tile_k4): v = 8u + q, quad q of sub-block u */
static inline AI T2 __m256i codes_k4(const uint8_t *gb, int v, const int Q5)
{
    const int u = v >> 3, q = v & 7;
    const __m256i w = ld(gb + (Q5 ? 384 : 128) + 32 * (8 * (u >> 1) + q));
    __m256i code = _mm256_and_si256(u & 1 ? _mm256_srli_epi16(w, 4) : w, _mm256_set1_epi8(0x0F));
    if (Q5) {
        const __m256i qh = ld(gb + 128 + 32 * q);
        const __m256i hb = u < 4 ? _mm256_slli_epi16(qh, 4 - u) : u > 4 ? _mm256_srli_epi16(qh, u - 4) : qh;
        code = _mm256_or_si256(code, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
    }
    return code;
}

/* Q6_K (layout above tile_q6_k): v = 4s + q, quad q of the 16-element sub-block s = 8h + 2ci + j */
static inline AI T2 __m256i codes_q6_k(const uint8_t *gb, int v)
{
    const int s = v >> 2, h = s >> 3, ci = (s >> 1) & 3, t = 16 * (s & 1) + 4 * (v & 3);
    const __m256i ql = ld(gb + 32 * (16 * h + 8 * (ci & 1) + t / 4));
    const __m256i qh = ld(gb + 1024 + 32 * (8 * h + t / 4));
    const __m256i lo = _mm256_and_si256(ci < 2 ? ql : _mm256_srli_epi16(ql, 4), _mm256_set1_epi8(0x0F));
    const __m256i hb = ci == 0 ? _mm256_slli_epi16(qh, 4) : ci == 1 ? _mm256_slli_epi16(qh, 2) : ci == 2 ? qh : _mm256_srli_epi16(qh, 2);
    return _mm256_or_si256(lo, _mm256_and_si256(hb, _mm256_set1_epi8(0x30)));
}

/* Q5_0 (layout above tile_q5_0): v = 2w + hi, the low (elements 4w ..) or high (16 + 4w ..)
 * nibbles of qs word w with their fifth bits */
static inline AI T2 __m256i codes_q5_0(const uint8_t *gb, int v)
{
    const int w = v >> 1;
    const __m256i qs = ld(gb + 48 + 32 * w), qh = ld(gb + 16);
    const __m256i nib = _mm256_and_si256(v & 1 ? _mm256_srli_epi16(qs, 4) : qs, _mm256_set1_epi8(0x0F));
    return _mm256_or_si256(nib, q5_bits(qh, 2 * (v & 1) + (w >> 1), w & 1));
}

/* code vectors per group block */
#define R8_NV(TY) ((TY) == TY_Q5_0 ? 8 : 64)

static inline AI T2 __m256i codes_of(const uint8_t *gb, int v, const int TY)
{
    return TY == TY_Q6_K ? codes_q6_k(gb, v) : TY == TY_Q5_0 ? codes_q5_0(gb, v) : codes_k4(gb, v, TY == TY_Q5_K);
}

/* Prompt-sized M: a group's codes are unpacked once into ub (R8_UB bytes at most), in the order
 * the tiles read them, and every activation tile reads them there instead of unpacking them again
 * (for Q5_0 the unpacking is more instructions than the dot products of a 4-row tile). */
#define R8_UB 32768
static inline AI T2 void unpack_group(const ek_bctx *c, int g, uint8_t *ub, const int TY)
{
    const int nblk = c->k / c->t->block, NV = R8_NV(TY);
    const size_t GB = 8 * (size_t)c->t->nbytes;
    const uint8_t *base = c->w + (size_t)g * nblk * GB;
    for (int b = 0; b < nblk; b++) {
        const uint8_t *gb = base + (size_t)b * GB;
        prefetch_block(gb, GB);
#pragma GCC unroll 64
        for (int v = 0; v < NV; v++) _mm256_store_si256((__m256i *)(ub + 32 * ((size_t)b * NV + v)), codes_of(gb, v, TY));
    }
}

#define R8_T T2
#define R8_SUFFIX avx2
#include "ek_rows8_tiles.h"
#undef R8_T
#undef R8_SUFFIX

#define R8_T __attribute__((target(ISA_AVXVNNI)))
#define R8_DPBUSD _mm256_dpbusd_avx_epi32
#define R8_DPWSSD _mm256_dpwssd_avx_epi32
#define R8_SUFFIX avxvnni
#include "ek_rows8_tiles.h"
#undef R8_T
#undef R8_DPBUSD
#undef R8_DPWSSD
#undef R8_SUFFIX

#define R8_T __attribute__((target(ISA512)))
#define R8_DPBUSD _mm256_dpbusd_epi32
#define R8_DPWSSD _mm256_dpwssd_epi32
#define R8_SUFFIX avx512vnni
#include "ek_rows8_tiles.h"
#undef R8_T
#undef R8_DPBUSD
#undef R8_DPWSSD
#undef R8_SUFFIX

int ek_rows8_has(int code) { return rows8_of_avx2(code) != NULL; }

/* the interleaved kernel for c, or NULL: rows8 weights with int8 activations and their sums */
static int rows8_call(const ek_bctx *c) { return c->rows8 && c->act_int8 && c->xs; }

ek_blocks_fn ek_rows8_avx2(const ek_bctx *c) { return rows8_call(c) ? rows8_of_avx2(c->t->code) : NULL; }
ek_blocks_fn ek_rows8_avxvnni(const ek_bctx *c) { return rows8_call(c) ? rows8_of_avxvnni(c->t->code) : NULL; }
ek_blocks_fn ek_rows8_avx512vnni(const ek_bctx *c) { return rows8_call(c) ? rows8_of_avx512vnni(c->t->code) : NULL; }
#endif
