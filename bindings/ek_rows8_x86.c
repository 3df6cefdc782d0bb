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

enum { TY_Q4_K, TY_Q5_K, TY_Q6_K, TY_Q5_0 };

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
