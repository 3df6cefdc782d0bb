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

/* vpshufb patterns (per 128-bit lane, so the 256- and 512-bit shuffles share them): int16 half h of
 * each 32-bit lane in both halves; byte j of each 32-bit lane, zero-extended to the lane */
static inline AI __m128i pat_half16(int h)
{
    const char a = (char)(2 * h), b = (char)(2 * h + 1);
    return _mm_setr_epi8(a, b, a, b, (char)(4 + a), (char)(4 + b), (char)(4 + a), (char)(4 + b), (char)(8 + a), (char)(8 + b), (char)(8 + a), (char)(8 + b),
                         (char)(12 + a), (char)(12 + b), (char)(12 + a), (char)(12 + b));
}

static inline AI __m128i pat_byte32(int j)
{
    const char J = (char)j;
    return _mm_setr_epi8(J, -1, -1, -1, (char)(4 + J), -1, -1, -1, (char)(8 + J), -1, -1, -1, (char)(12 + J), -1, -1, -1);
}

static inline AI T2 __m256i lane_half16(__m256i v, int h) { return _mm256_shuffle_epi8(v, _mm256_broadcastsi128_si256(pat_half16(h))); }

static inline AI T2 __m256i lane_byte32(__m256i v, int j) { return _mm256_shuffle_epi8(v, _mm256_broadcastsi128_si256(pat_byte32(j))); }

/* v, as a register the compiler may not reassociate through (keeps a tile's sums in registers) */
static inline AI T2 __m256i keep(__m256i v)
{
    __asm__("" : "+v"(v)); /* "v": xmm0-31 where AVX-512 is enabled */
    return v;
}

/* Software prefetch into L2 (prefetcht1; AMD cores fill L1 for every hint): without it a cold
 * M = 1 matmul stalls on DRAM between blocks. Measured on a Sapphire Rapids VM, M = 1 at 1 thread:
 * prefetchnta 40-57 % of DRAM bandwidth, prefetcht1 2 blocks ahead 73-79 %, 4-16 blocks 68-72 %,
 * prefetcht0 59-73 %. */
#ifndef EK_PF_LOC
#define EK_PF_LOC 2 /* __builtin_prefetch locality: 2 = prefetcht1 */
#endif
/* the lines of slice `part` of `parts` of the `size` bytes at p, into L2 (prefetch_slice) or L1
 * (prefetch_slice_l1): the slices of 0 .. parts - 1 together prefetch each line once */
#define PREFETCH_SLICE(name, loc)                                                                                             \
    static inline AI void name(const uint8_t *p, size_t size, int part, int parts)                                        \
    {                                                                                                                       \
        const size_t lo = (size * (size_t)part / (size_t)parts + 63) / 64 * 64, hi = size * (size_t)(part + 1) / (size_t)parts; \
        for (size_t o = lo; o < hi; o += 64) __builtin_prefetch(p + o, 0, loc);                                             \
    }
PREFETCH_SLICE(prefetch_slice, EK_PF_LOC)
PREFETCH_SLICE(prefetch_slice_l1, 3)

/* The decode tiles (no unpacked codes) prefetch as they go, a slice per sub-block (a whole block's
 * lines at once queue on the core's fill buffers and stall its dot products): into L2 the group's
 * weights EK_PF_AHEAD super-blocks (`sb` bytes: 256 elements of 8 rows) ahead, into L1 those half a
 * super-block ahead. Groups are contiguous, so at a group's end that is the next group's start.
 * Measured on a Xeon VM with AMX, M = 1 at 1 thread, 2 MiB pages, Q4_K / Q5_K / Q6_K / Q5_0 in
 * microseconds per 4096 x 4096: one block's lines at once 2 ahead 680 / 840 / 970 / 850, sliced
 * 630 / 815 / 955 / 835, sliced with the L1 half 600 / 740 / 890 / 740; 3 or 4 super-blocks ahead
 * was slower, 1 much slower. That is the "paired" read plan's (ekern.h). The "single" plan's, for
 * CPUs whose prefetch hints all fill L1 (AMD's), prefetches only far, EK_PF_AHEAD1 super-blocks
 * ahead: on a Zen 5 VM (1 thread, cold 4096 x 4096 at M = 1, each call's share of a like read right
 * after it) the AVX-VNNI tiles read Q4_K / Q6_K / Q5_0 / Q5_K at 73-74 / 80-82 / 68 / 69-73 % with
 * 2 ahead and the L1 half, 82-84 / 87-91 / 81 / 84-85 % with 4 and the L1 half, 92-93 / 91-93 /
 * 91-92 / 93-94 % with 4 alone; at 11008 x 4096 Q4_K / Q5_K / Q6_K 88-89 / 87-88 / 87-88 % with 3,
 * 86 / 88-91 / 87-92 % with 4, 91-93 / 94-95 / 88 % with 6 (4096 x 4096: 4 and 6 alike). */
#ifndef EK_PF_AHEAD
#define EK_PF_AHEAD 2
#endif
#ifndef EK_PF_AHEAD1
#define EK_PF_AHEAD1 6
#endif
static inline AI void prefetch_decode(const ek_bctx *c, const uint8_t *gb, size_t sb, size_t GB, int part, int parts)
{
    if (c->one_stream) {
        prefetch_slice(gb + EK_PF_AHEAD1 * sb, GB, part, parts);
        return;
    }
    prefetch_slice(gb + EK_PF_AHEAD * sb, GB, part, parts);
    prefetch_slice_l1(gb + sb / 2, GB, part, parts);
}

/* The group block EK_PF_BLOCKS ahead, at once (the prompt paths, which unpack a group once) */
#ifndef EK_PF_BLOCKS
#define EK_PF_BLOCKS 2
#endif
static inline AI void prefetch_block(const uint8_t *gb, size_t GB) { prefetch_slice(gb + EK_PF_BLOCKS * GB, GB, 0, 1); }

/* Prompt-sized M: slice `part` of `parts` of the weights of groups g + 2, g + 3 (the next pair),
 * prefetched while pair g, g + 1's activation tiles run. Unpacking a pair is too quick for the
 * prefetch 2 blocks ahead to hide DRAM latency: without this, cold Q5_0 weights ran at 0.8x the
 * speed of warm ones. */
static inline AI void prefetch_next_pair(const ek_bctx *c, int g, int part, int parts)
{
    if (8 * (g + 4) > c->n) return;
    const size_t group = (size_t)(c->k / c->t->block) * 8 * (size_t)c->t->nbytes;
    prefetch_slice(c->w + (size_t)(g + 2) * group, 2 * group, part, parts);
}

static inline AI T2 void store8(const ek_bctx *c, int i, int g, __m256 v) { _mm256_storeu_ps(c->y + (size_t)i * c->ldy + 8 * (size_t)g, v); }

/* vpshufb pattern: byte `byte` of each 32-bit lane in all 4 of its bytes (Q5_0's fifth bits: byte
 * j of each lane of the result then tests bit 8 * byte + 4 * nib + j of the lane at bit 4 * nib + j) */
static inline AI __m128i pat_spread(int byte)
{
    const char B = (char)byte;
    return _mm_setr_epi8(B, B, B, B, (char)(4 + B), (char)(4 + B), (char)(4 + B), (char)(4 + B), (char)(8 + B), (char)(8 + B), (char)(8 + B),
                         (char)(8 + B), (char)(12 + B), (char)(12 + B), (char)(12 + B), (char)(12 + B));
}

static inline AI T2 __m256i q5_spread(__m256i qh, int byte) { return _mm256_shuffle_epi8(qh, _mm256_broadcastsi128_si256(pat_spread(byte))); }

static inline AI T2 __m256i q5_bits(__m256i qh, int byte, int nib)
{
    const __m256i bit = _mm256_set1_epi32((int)(0x08040201u << (4 * nib)));
    const __m256i v = _mm256_and_si256(q5_spread(qh, byte), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(v, bit), _mm256_set1_epi8(0x10));
}

/* A block's scaled sub-block sums (ek_rows8_tiles.h, the 16-row tiles) fold into R8_NC chains when
 * a tile has one activation row (decode): one chain would wait on vpdpwssd's latency at every fold
 * (16 folds of Q4_K, 32 of Q6_K per block), the block's critical path, where 4 interleaved chains
 * run at the units' throughput. Integer sums: the bits are the same. */
#define R8_NC 4
#define R8_CHAIN(T, f) ((T) == 1 ? (f) % R8_NC : 0)

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

/* Q4_K / Q5_K: k_scale_min lane-wise, scales 0..3 | 4..7 as bytes of each lane, and the mins as
 * int16 pairs (0, 2), (1, 3), (4, 6), (5, 7), the order of ek_bctx.xs */
static inline AI T2 void k4_scales(const uint8_t *gb, __m256i *sc_lo, __m256i *sc_hi, __m256i mp[4])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m6 = _mm256_set1_epi8(0x3F), m30 = _mm256_set1_epi8(0x30), lo16 = _mm256_set1_epi32(0x00FF00FF);
    const __m256i w0 = ld(gb + 32), w1 = ld(gb + 64), w2 = ld(gb + 96);
    *sc_lo = _mm256_and_si256(w0, m6);
    *sc_hi = _mm256_or_si256(_mm256_and_si256(w2, m4), _mm256_and_si256(_mm256_srli_epi32(w0, 2), m30));
    const __m256i mn_lo = _mm256_and_si256(w1, m6);
    const __m256i mn_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(w2, 4), m4), _mm256_and_si256(_mm256_srli_epi32(w1, 2), m30));
    mp[0] = _mm256_and_si256(mn_lo, lo16);
    mp[1] = _mm256_srli_epi16(mn_lo, 8);
    mp[2] = _mm256_and_si256(mn_hi, lo16);
    mp[3] = _mm256_srli_epi16(mn_hi, 8);
}

/* Q6_K: scales 4w, 4w + 2 (sp[2w]) and 4w + 1, 4w + 3 (sp[2w + 1]) of each row as int16 pairs */
static inline AI T2 void q6_scales(const uint8_t *gb, __m256i sp[8])
{
    for (int w = 0; w < 4; w++) {
        const __m256i v = ld(gb + 1536 + 32 * w);
        sp[2 * w] = _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8);
        sp[2 * w + 1] = _mm256_srai_epi16(v, 8);
    }
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
static inline AI T2 void unpack_group_at(const ek_bctx *c, int g, uint8_t *ub, size_t stride, const int TY)
{
    const int nblk = c->k / c->t->block, NV = R8_NV(TY);
    const size_t GB = 8 * (size_t)c->t->nbytes;
    const uint8_t *base = c->w + (size_t)g * nblk * GB;
    for (int b = 0; b < nblk; b++) {
        const uint8_t *gb = base + (size_t)b * GB;
        prefetch_block(gb, GB);
#pragma GCC unroll 64
        for (int v = 0; v < NV; v++) _mm256_store_si256((__m256i *)(ub + stride * ((size_t)b * NV + v)), codes_of(gb, v, TY));
    }
}

/* the group's code vectors one after another (stride 32) */
static inline AI T2 void unpack_group(const ek_bctx *c, int g, uint8_t *ub, const int TY) { unpack_group_at(c, g, ub, 32, TY); }

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

/* Q5_0's codes as codes_q5_0 gives them, with AVX512-BW/VL: the fifth bits become a byte mask
 * (vptestmb) that adds 16 (a masked vpaddb), two vector ops fewer per code vector than q5_bits'
 * compare and mask; decode (no unpacking) spends most of its Q5_0 uops there */
static inline AI __attribute__((target(ISA512))) __m256i codes_q5_0_512(const uint8_t *gb, int v)
{
    const int w = v >> 1, byte = 2 * (v & 1) + (w >> 1), nib = w & 1;
    const __m256i qs = ld(gb + 48 + 32 * w), qh = ld(gb + 16);
    const __m256i code = _mm256_and_si256(v & 1 ? _mm256_srli_epi16(qs, 4) : qs, _mm256_set1_epi8(0x0F));
    const __mmask32 hi = _mm256_test_epi8_mask(q5_spread(qh, byte), _mm256_set1_epi32((int)(0x08040201u << (4 * nib))));
    return _mm256_mask_add_epi8(code, hi, code, _mm256_set1_epi8(0x10));
}

#define R8_T __attribute__((target(ISA512)))
#define R8_CODES_Q5_0 codes_q5_0_512
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

/* -------------------------------------------------------------------- 16 rows in 512-bit vectors
 * Prompt-sized M on AVX-512: two neighbouring groups unpacked side by side (vector v of group g in
 * the low 32 bytes of a 64-byte line, of group g + 1 in the high ones), so one vpdpbusd on a zmm
 * register with a broadcast activation quad serves 16 weight rows, whose outputs are contiguous
 * (y[8g .. 8g + 15]). The integer sums and each output's float operations are those of the 256-bit
 * tiles, so are the bits. */
#define T512 __attribute__((target(ISA512)))
#define EK_TM16 8 /* activation rows per 16-row tile */

/* the two groups' 256-bit vectors as one */
static inline AI T512 __m512i cat(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

/* the 16 rows' fp16 at p (group g) and q (group g + 1), as floats */
static inline AI T512 __m512 h16(const uint8_t *p, const uint8_t *q)
{
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p)), _mm_loadu_si128((const __m128i *)q), 1));
}

static inline AI T512 __m512i bc4_512(const void *p) { return _mm512_set1_epi32(ek_ld32(p)); }

/* ---------------------------------------------------------------- 16-row tiles without ub (M <= EK_TM)
 * Decode-sized M reads two groups' weights as one 512-bit stream pair and unpacks their codes as
 * they arrive, in 512-bit ops: half the instructions per weight byte of the 256-bit tiles, which
 * is what a cold M = 1 matmul loses to the DRAM stream (measured on a Xeon VM with AMX, 1 thread,
 * cold 4096 x 4096: Q4_K 626 -> 565 us, Q5_K 779 -> 641 us). The "single" read plan (ekern.h) runs
 * the one-stream 8-row tiles instead: on a Zen 5 VM their share of a like read (see prefetch_decode)
 * was 91-94 % against 70-92 % here. The codes are those of codes_k4, codes_q6_k and codes_q5_0_512,
 * for both groups at once. */

/* the 256-bit vectors at `off` in blocks g0 (group g) and g1 (group g + 1), as one */
static inline AI T512 __m512i ld2(const uint8_t *g0, const uint8_t *g1, size_t off) { return cat(ld(g0 + off), ld(g1 + off)); }

static inline AI T512 __m512i codes16_k4(const uint8_t *g0, const uint8_t *g1, int v, const int Q5)
{
    const int u = v >> 3, q = v & 7;
    const __m512i w = ld2(g0, g1, (Q5 ? 384 : 128) + 32 * (8 * (u >> 1) + q));
    __m512i code = _mm512_and_si512(u & 1 ? _mm512_srli_epi16(w, 4) : w, _mm512_set1_epi8(0x0F));
    if (Q5) {
        const __m512i qh = ld2(g0, g1, 128 + 32 * q);
        const __m512i hb = u < 4 ? _mm512_slli_epi16(qh, 4 - u) : u > 4 ? _mm512_srli_epi16(qh, u - 4) : qh;
        code = _mm512_or_si512(code, _mm512_and_si512(hb, _mm512_set1_epi8(0x10)));
    }
    return code;
}

static inline AI T512 __m512i codes16_q6_k(const uint8_t *g0, const uint8_t *g1, int v)
{
    const int s = v >> 2, h = s >> 3, ci = (s >> 1) & 3, t = 16 * (s & 1) + 4 * (v & 3);
    const __m512i ql = ld2(g0, g1, 32 * (16 * h + 8 * (ci & 1) + t / 4));
    const __m512i qh = ld2(g0, g1, 1024 + 32 * (8 * h + t / 4));
    const __m512i lo = _mm512_and_si512(ci < 2 ? ql : _mm512_srli_epi16(ql, 4), _mm512_set1_epi8(0x0F));
    const __m512i hb = ci == 0 ? _mm512_slli_epi16(qh, 4) : ci == 1 ? _mm512_slli_epi16(qh, 2) : ci == 2 ? qh : _mm512_srli_epi16(qh, 2);
    return _mm512_or_si512(lo, _mm512_and_si512(hb, _mm512_set1_epi8(0x30)));
}

static inline AI T512 __m512i codes16_q5_0(const uint8_t *g0, const uint8_t *g1, int v)
{
    const int w = v >> 1, byte = 2 * (v & 1) + (w >> 1), nib = w & 1;
    const __m512i qs = ld2(g0, g1, 48 + 32 * w), qh = ld2(g0, g1, 16);
    const __m512i code = _mm512_and_si512(v & 1 ? _mm512_srli_epi16(qs, 4) : qs, _mm512_set1_epi8(0x0F));
    const __m512i spread = _mm512_shuffle_epi8(qh, _mm512_broadcast_i32x4(pat_spread(byte)));
    const __mmask64 hi = _mm512_test_epi8_mask(spread, _mm512_set1_epi32((int)(0x08040201u << (4 * nib))));
    return _mm512_mask_add_epi8(code, hi, code, _mm512_set1_epi8(0x10));
}

/* prefetch_decode for both streams, the block at offset pos of its group (g0 in group g, g1 in g + 1),
 * further ahead than the one-stream tiles: two streams get less from the hardware prefetcher. On a
 * Zen 5 VM (1 thread, cold 4096 x 4096, us; probe 38-40 GB/s) EK_PF16_FAR / EK_PF16_NEAR super-blocks
 * of 2 / 0.5 gave Q4_K 430-500, Q5_K 410-560, Q6_K 470-520, Q5_0 405-490; 4 / 0.5 310, 385-425,
 * 450-530, 380-410; 3 / 1 305-340, 355-425, 420-510, 370-410; 4 / 0 340-390, 460-530, 590, 375-390.
 * On a Xeon VM (AMX) 1 to 3 ahead and 1 near were within noise of 2 / 0.5. */
#ifndef EK_PF16_FAR
#define EK_PF16_FAR 3
#endif
#ifndef EK_PF16_NEAR
#define EK_PF16_NEAR 1
#endif
static inline AI T512 void prefetch_decode16(const uint8_t *g0, const uint8_t *g1, size_t pos, size_t sb, size_t GB, size_t group, int part, int parts)
{
    const size_t far = ek_pair_ahead(pos, EK_PF16_FAR * sb, group), near = ek_pair_ahead(pos, EK_PF16_NEAR * sb, group);
    prefetch_slice(g0 + far, GB, part, parts);
    prefetch_slice(g1 + far, GB, part, parts);
    prefetch_slice_l1(g0 + near, GB, part, parts);
    prefetch_slice_l1(g1 + near, GB, part, parts);
}

static inline AI T512 __m512i chains16(const __m512i s[R8_NC], const int T)
{
    return T == 1 ? _mm512_add_epi32(_mm512_add_epi32(s[0], s[1]), _mm512_add_epi32(s[2], s[3])) : s[0];
}

/* ub: the pair's unpacked codes (unpack_group_at), or NULL to unpack them here (M <= EK_TM) */
static inline AI T512 void tile16_q5_0(const ek_bctx *c, int g, int i0, const int T, const uint8_t *ub)
{
    const int nblk = c->k / 32;
    const size_t K = (size_t)c->k, GB = 176;
    const uint8_t *w0 = c->w + (size_t)g * nblk * GB, *w1 = w0 + (size_t)nblk * GB;
    __m512 acc[EK_TM16];
    TILE_ROWS(i) acc[i] = _mm512_setzero_ps();
    for (int b = 0; b < nblk; b++) {
        const uint8_t *g0 = w0 + (size_t)b * GB, *g1 = w1 + (size_t)b * GB, *ubb = ub ? ub + (size_t)b * 8 * 64 : NULL;
        if (!ub && i0 == 0) prefetch_decode16(g0, g1, (size_t)b * GB, 8 * GB, GB, (size_t)nblk * GB, 0, 1); /* 8 blocks: 256 elements */
        __m512i isum[EK_TM16];
        TILE_ROWS(i) isum[i] = _mm512_set1_epi32(c->xo[(size_t)(i0 + i) * nblk + b]);
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++) { /* v = 2w + hi: activations 4w .. or 16 + 4w .. */
            const __m512i code = ubb ? _mm512_load_si512((const void *)(ubb + 64 * v)) : codes16_q5_0(g0, g1, v);
            TILE_ROWS(i) {
                const int8_t *x = c->xq + (size_t)(i0 + i) * K + 32 * (size_t)b + 4 * (v >> 1) + 16 * (v & 1);
                isum[i] = _mm512_dpbusd_epi32(isum[i], code, bc4_512(x));
            }
        }
        const __m512 d = h16(g0, g1);
        TILE_ROWS(i) {
            const __m512 dx = _mm512_set1_ps(c->dx[(size_t)(i0 + i) * nblk + b]);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]), _mm512_mul_ps(d, dx), acc[i]);
        }
    }
    TILE_ROWS(i) _mm512_storeu_ps(c->y + (size_t)(i0 + i) * c->ldy + 8 * (size_t)g, acc[i]);
}

static inline AI T512 void tile16_k4(const ek_bctx *c, int g, int i0, const int T, const int Q5, const uint8_t *ub)
{
    const int nblk = c->k / EK_QK_K;
    const size_t K = (size_t)c->k, GB = Q5 ? 1408 : 1152;
    const uint8_t *w0 = c->w + (size_t)g * nblk * GB, *w1 = w0 + (size_t)nblk * GB;
    __m512 acc[EK_TM16];
    TILE_ROWS(i) acc[i] = _mm512_setzero_ps();
    for (int b = 0; b < nblk; b++) {
        const uint8_t *g0 = w0 + (size_t)b * GB, *g1 = w1 + (size_t)b * GB, *ubb = ub ? ub + (size_t)b * 64 * 64 : NULL;
        __m256i sl0, sh0, mp0[4], sl1, sh1, mp1[4];
        k4_scales(g0, &sl0, &sh0, mp0);
        k4_scales(g1, &sl1, &sh1, mp1);
        const __m512i sc_lo = cat(sl0, sl1), sc_hi = cat(sh0, sh1);
        __m512i isum[EK_TM16][R8_NC], imin[EK_TM16];
        TILE_ROWS(i) {
            const int16_t *xs = c->xs + (size_t)(i0 + i) * c->xs_stride + 8 * b;
            __m512i s = _mm512_madd_epi16(cat(mp0[0], mp1[0]), bc4_512(xs));
            for (int p = 1; p < 4; p++) s = _mm512_add_epi32(s, _mm512_madd_epi16(cat(mp0[p], mp1[p]), bc4_512(xs + 2 * p)));
            imin[i] = s;
            for (int j = 0; j < R8_NC; j++) isum[i][j] = _mm512_setzero_si512();
        }
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) {
            if (!ub && i0 == 0) prefetch_decode16(g0, g1, (size_t)b * GB, GB, GB, (size_t)nblk * GB, u, 8);
            const __m512i sc = _mm512_shuffle_epi8(u < 4 ? sc_lo : sc_hi, _mm512_broadcast_i32x4(pat_byte32(u & 3)));
            /* Q4 folds sums over 4 quads with vpdpwssd, as tile_k4 does */
            const int NQ = Q5 ? 8 : 4;
#pragma GCC unroll 2
            for (int q0 = 0; q0 < 8; q0 += NQ) {
                __m512i part[EK_TM16];
                TILE_ROWS(i) part[i] = _mm512_setzero_si512();
#pragma GCC unroll 8
                for (int q = q0; q < q0 + NQ; q++) {
                    const __m512i code = ubb ? _mm512_load_si512((const void *)(ubb + 64 * (8 * u + q))) : codes16_k4(g0, g1, 8 * u + q, Q5);
                    TILE_ROWS(i) part[i] = _mm512_dpbusd_epi32(part[i], code, bc4_512(c->xq + (size_t)(i0 + i) * K + 256 * (size_t)b + 32 * u + 4 * q));
                }
                const int f = R8_CHAIN(T, u * (8 / NQ) + q0 / NQ);
                TILE_ROWS(i) isum[i][f] = Q5 ? _mm512_add_epi32(isum[i][f], _mm512_mullo_epi32(part[i], sc)) : _mm512_dpwssd_epi32(isum[i][f], part[i], sc);
            }
        }
        const __m512 d = h16(g0, g1), dmin = h16(g0 + 16, g1 + 16);
        TILE_ROWS(i) {
            const __m512 dx = _mm512_set1_ps(c->dx[(size_t)(i0 + i) * nblk + b]);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(chains16(isum[i], T)), _mm512_mul_ps(d, dx), acc[i]);
            acc[i] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(imin[i]), _mm512_mul_ps(dmin, dx), acc[i]);
        }
    }
    TILE_ROWS(i) _mm512_storeu_ps(c->y + (size_t)(i0 + i) * c->ldy + 8 * (size_t)g, acc[i]);
}

/* Q6_K as tile_q6_k: int16 sums over two quads, folded with the scale by vpdpwssd */
static inline AI T512 void tile16_q6_k(const ek_bctx *c, int g, int i0, const int T, const uint8_t *ub)
{
    const int nblk = c->k / EK_QK_K;
    const size_t K = (size_t)c->k, GB = 1680;
    const uint8_t *w0 = c->w + (size_t)g * nblk * GB, *w1 = w0 + (size_t)nblk * GB;
    __m512 acc[EK_TM16];
    TILE_ROWS(i) acc[i] = _mm512_setzero_ps();
    for (int b = 0; b < nblk; b++) {
        const uint8_t *g0 = w0 + (size_t)b * GB, *g1 = w1 + (size_t)b * GB, *ubb = ub ? ub + (size_t)b * 64 * 64 : NULL;
        __m256i sp0[8], sp1[8];
        __m512i sp[8];
        q6_scales(g0, sp0);
        q6_scales(g1, sp1);
        for (int p = 0; p < 8; p++) sp[p] = cat(sp0[p], sp1[p]);
        __m512i isum[EK_TM16][R8_NC], ioff[EK_TM16];
        TILE_ROWS(i) {
            const int16_t *xs = c->xs + (size_t)(i0 + i) * c->xs_stride + 16 * b;
            __m512i s = _mm512_madd_epi16(sp[0], bc4_512(xs));
            for (int p = 1; p < 8; p++) s = _mm512_add_epi32(s, _mm512_madd_epi16(sp[p], bc4_512(xs + 2 * p)));
            ioff[i] = _mm512_slli_epi32(s, 5);
            for (int j = 0; j < R8_NC; j++) isum[i][j] = _mm512_setzero_si512();
        }
#pragma GCC unroll 16
        for (int s = 0; s < 16; s++) { /* sub-block s = 8h + 2ci + j: elements 16s .. 16s + 15 */
            if (!ub && i0 == 0) prefetch_decode16(g0, g1, (size_t)b * GB, GB, GB, (size_t)nblk * GB, s, 16);
            const __m512i sc = _mm512_shuffle_epi8(sp[2 * (s >> 2) + (s & 1)], _mm512_broadcast_i32x4(pat_half16((s >> 1) & 1)));
#pragma GCC unroll 2
            for (int q0 = 0; q0 < 4; q0 += 2) {
                __m512i part[EK_TM16];
                TILE_ROWS(i) part[i] = _mm512_setzero_si512();
#pragma GCC unroll 2
                for (int q = q0; q < q0 + 2; q++) {
                    const __m512i code = ubb ? _mm512_load_si512((const void *)(ubb + 64 * (4 * s + q))) : codes16_q6_k(g0, g1, 4 * s + q);
                    TILE_ROWS(i) part[i] = _mm512_add_epi16(part[i], _mm512_maddubs_epi16(code, bc4_512(c->xq + (size_t)(i0 + i) * K + 256 * (size_t)b + 16 * s + 4 * q)));
                }
                const int f = R8_CHAIN(T, 2 * s + q0 / 2);
                TILE_ROWS(i) isum[i][f] = _mm512_dpwssd_epi32(isum[i][f], part[i], sc);
            }
        }
        const __m512 d = h16(g0 + 1664, g1 + 1664);
        TILE_ROWS(i) {
            const __m512 dx = _mm512_set1_ps(c->dx[(size_t)(i0 + i) * nblk + b]);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(chains16(isum[i], T), ioff[i])), _mm512_mul_ps(d, dx), acc[i]);
        }
    }
    TILE_ROWS(i) _mm512_storeu_ps(c->y + (size_t)(i0 + i) * c->ldy + 8 * (size_t)g, acc[i]);
}

static inline AI T512 void tile16(const ek_bctx *c, int g, int i0, const int T, const int TY, const uint8_t *ub)
{
    if (TY == TY_Q5_0) tile16_q5_0(c, g, i0, T, ub);
    else if (TY == TY_Q6_K) tile16_q6_k(c, g, i0, T, ub);
    else tile16_k4(c, g, i0, T, TY == TY_Q5_K, ub);
}

/* activation rows per 16-row tile: the K-quants keep more vectors live per row (mins, offsets) */
#define TM16(TY) ((TY) == TY_Q5_0 ? EK_TM16 : 4)

static inline AI T512 void rows16(const ek_bctx *c, int r0, int r1, const int TY)
{
    _Alignas(64) uint8_t ub[2 * R8_UB];
    const int M = c->M, TM = TM16(TY), Mt = M / TM * TM;
    const size_t need = (size_t)(c->k / c->t->block) * R8_NV(TY) * 64;
    int g = r0 / 8;
    if (M <= EK_TM && !c->one_stream) /* decode-sized: the codes unpacked as they stream in, two groups at a time */
        for (; g + 2 <= r1 / 8; g += 2) switch (M) {
            case 4: tile16(c, g, 0, 4, TY, NULL); break;
            case 3: tile16(c, g, 0, 3, TY, NULL); break;
            case 2: tile16(c, g, 0, 2, TY, NULL); break;
            default: tile16(c, g, 0, 1, TY, NULL); break;
            }
    if (M > EK_TM && need <= sizeof ub)
        for (; g + 2 <= r1 / 8; g += 2) {
            unpack_group_at(c, g, ub, 64, TY);
            unpack_group_at(c, g + 1, ub + 32, 64, TY);
            for (int i0 = 0; i0 < Mt; i0 += TM) {
                prefetch_next_pair(c, g, i0 / TM, (M + TM - 1) / TM);
                tile16(c, g, i0, TM, TY, ub);
            }
            if (Mt < M) prefetch_next_pair(c, g, Mt / TM, Mt / TM + 1);
            switch (M - Mt) {
            case 7: tile16(c, g, Mt, 7, TY, ub); break;
            case 6: tile16(c, g, Mt, 6, TY, ub); break;
            case 5: tile16(c, g, Mt, 5, TY, ub); break;
            case 4: tile16(c, g, Mt, 4, TY, ub); break;
            case 3: tile16(c, g, Mt, 3, TY, ub); break;
            case 2: tile16(c, g, Mt, 2, TY, ub); break;
            case 1: tile16(c, g, Mt, 1, TY, ub); break;
            default: break;
            }
        }
    if (g < r1 / 8) rows8_of_avx512vnni(c->t->code)(c, 8 * g, r1); /* an odd group out, or K too large for ub */
}

static T512 void rows16_q4_k(const ek_bctx *c, int r0, int r1) { rows16(c, r0, r1, TY_Q4_K); }
static T512 void rows16_q5_k(const ek_bctx *c, int r0, int r1) { rows16(c, r0, r1, TY_Q5_K); }
static T512 void rows16_q6_k(const ek_bctx *c, int r0, int r1) { rows16(c, r0, r1, TY_Q6_K); }
static T512 void rows16_q5_0(const ek_bctx *c, int r0, int r1) { rows16(c, r0, r1, TY_Q5_0); }

static ek_blocks_fn rows8_of_512(int code)
{
    switch (code) {
    case 12: return rows16_q4_k;
    case 13: return rows16_q5_k;
    case 14: return rows16_q6_k;
    case 6: return rows16_q5_0;
    default: return NULL;
    }
}

ek_blocks_fn ek_rows8_avx512vnni(const ek_bctx *c) { return rows8_call(c) ? rows8_of_512(c->t->code) : NULL; }

/* -------------------------------------------------------------------- AMX tiles (Q5_0, Q4_K)
 * Prompt-sized M with AMX: tdpbssd multiplies 16 activation rows (xq as stored) by 16 weight rows'
 * codes - 16 over one 32-element block, into a 16 x 16 tile of int32: the block's exact sums, those
 * tile16_q5_0 starts at xo. The per-block scales keep each tile op at K = 32, and every tile is
 * stored and folded (convert, d * dx, FMA) into 16 accumulators, one per activation row of 16
 * outputs, in block order: the float operations, and so the bits, of the other paths. A block is
 * folded AMX_LAG blocks after its tile op, once its tile store has reached memory; tile registers
 * alternate by block so two ops are in flight. */
#define TA __attribute__((target(ISA_AMX)))
#ifndef AMX_LAG
#define AMX_LAG 2
#endif
#define AMX_RING (AMX_LAG + 2) /* stored tiles: AMX_LAG waiting for their fold and the 2 being made */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;

/* tmm0, 1: sums (R activation rows x 16 int32); tmm2, 3: activations (R rows x 32 bytes); tmm4, 5:
 * codes, as tdpbssd's second operand takes them (8 quads x 16 weight rows x 4 bytes) */
static inline AI TA void amx_config(int R)
{
    amx_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 2; t++) {
        cfg.rows[t] = cfg.rows[2 + t] = (uint8_t)R;
        cfg.colsb[t] = 64;
        cfg.colsb[2 + t] = 32;
        cfg.rows[4 + t] = 8;
        cfg.colsb[4 + t] = 64;
    }
    _tile_loadconfig(&cfg);
}

/* groups g, g + 1 as tmm4/5 load them, 512 bytes per block (quad j: elements 4j .., the low rows'
 * codes then the high rows'), and their scales as floats, 16 per block. Both groups at once in
 * 512-bit vectors: code - 16 as a signed byte is nib | 0xF0 (nib - 16), less 0xF0 where the fifth
 * bit is set; one vpternlogd, one vptestmb (the fifth bits), one masked vpsubb per 64 codes. */
static inline AI TA void amx_unpack_q5_0(const ek_bctx *c, int g, int8_t *ub, float *dq)
{
    const int nblk = c->k / 32;
    const size_t GB = 176;
    const uint8_t *w0 = c->w + (size_t)g * nblk * GB, *w1 = w0 + (size_t)nblk * GB;
    const __m512i lo4 = _mm512_set1_epi8(0x0F), f0 = _mm512_set1_epi8((char)0xF0);
    for (int b = 0; b < nblk; b++) {
        const uint8_t *g0 = w0 + (size_t)b * GB, *g1 = w1 + (size_t)b * GB;
        prefetch_block(g0, GB);
        prefetch_block(g1, GB);
        const __m512i qh = cat(ld(g0 + 16), ld(g1 + 16));
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            const __m512i qs = cat(ld(g0 + 48 + 32 * (j & 3)), ld(g1 + 48 + 32 * (j & 3)));
            const __m512i v = _mm512_ternarylogic_epi32(j < 4 ? qs : _mm512_srli_epi16(qs, 4), lo4, f0, 0xEA); /* (a & b) | c */
            const __mmask64 hi = _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh, _mm512_broadcast_i32x4(pat_spread(j >> 1))),
                                                       _mm512_set1_epi32((int)(0x08040201u << (4 * (j & 1)))));
            _mm512_store_si512((void *)(ub + 512 * (size_t)b + 64 * j), _mm512_mask_sub_epi8(v, hi, v, f0));
        }
        _mm256_store_ps(dq + 16 * (size_t)b, h8(g0));
        _mm256_store_ps(dq + 16 * (size_t)b + 8, h8(g1));
    }
}

/* block b's stored tile into the R accumulators of activation rows from dx's */
static inline AI TA void amx_fold(__m512 *acc, const int32_t *cb, const float *dq, const float *dx, int nblk, const int R)
{
    const __m512 d = _mm512_load_ps(dq);
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        if (i < R) acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512((const void *)(cb + 16 * i))), _mm512_mul_ps(d, _mm512_set1_ps(dx[(size_t)i * nblk])), acc[i]);
}

/* tile t: the sums of activations at xp (rows K bytes apart, in tile a) and codes at wp (tile w),
 * stored at dst */
#define AMX_OP(t, a, w, xp, wp, dst)                                         \
    do {                                                                     \
        _tile_zero(t);                                                       \
        _tile_loadd(a, xp, (long)K);                                         \
        _tile_loadd(w, wp, 64);                                              \
        _tile_dpbssd(t, a, w);                                               \
        _tile_stored(t, dst, 64);                                            \
    } while (0)
#define AMX_BLOCK(t, a, w, b) AMX_OP(t, a, w, xa + 32 * (size_t)(b), ub + 512 * (size_t)(b), cb[(b) % AMX_RING])

/* activation rows m0 .. m0 + R - 1 (R as configured) x groups g, g + 1 */
static inline AI TA void amx_tile_q5_0(const ek_bctx *c, int g, int m0, const int R, const int8_t *ub, const float *dq)
{
    const int nblk = c->k / 32;
    const size_t K = (size_t)c->k;
    const int8_t *xa = c->xq + (size_t)m0 * K;
    const float *dx = c->dx + (size_t)m0 * nblk;
    _Alignas(64) int32_t cb[AMX_RING][256];
    __m512 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
    int f = 0; /* blocks folded */
    for (int b = 0; b < nblk; b += 2) {
        AMX_BLOCK(0, 2, 4, b);
        if (b + 1 < nblk) AMX_BLOCK(1, 3, 5, b + 1);
        for (; f < b + 2 - AMX_LAG; f++) amx_fold(acc, cb[f % AMX_RING], dq + 16 * (size_t)f, dx + f, nblk, R);
    }
    for (; f < nblk; f++) amx_fold(acc, cb[f % AMX_RING], dq + 16 * (size_t)f, dx + f, nblk, R);
    for (int i = 0; i < R; i++) _mm512_storeu_ps(c->y + (size_t)(m0 + i) * c->ldy + 8 * (size_t)g, acc[i]);
}
#undef AMX_BLOCK

/* -------------------------------------------------------------------- AMX tiles (Q4_K)
 * One tile op per 32-element sub-block u, with codes - 8: a sum stays below 32 * 8 * 127 < 2^15,
 * so vpdpwssd folds it with the sub-block's scale in one uop, (sum, sign) x (scale, 0) as int16
 * pairs; the 8 of (code - 8) comes back as 8 * sum(scale * xs), and the mins as sum(m * xs), both
 * by vpdpwssd on ek_bctx.xs pairs. Those are tile16_k4's integers; its two FMAs per block follow. */
#define AMX_K4_AUX 18 /* per block: 8 scales as (scale, 0), 4 pairs of 8 * scale, 4 of mins, d, dmin */

static inline AI TA void amx_unpack_q4_k(const ek_bctx *c, int g, int8_t *ub, __m512i *aux)
{
    const int nblk = c->k / EK_QK_K;
    const size_t GB = 1152;
    const uint8_t *w0 = c->w + (size_t)g * nblk * GB, *w1 = w0 + (size_t)nblk * GB;
    const __m512i lo4 = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8), lo16 = _mm512_set1_epi32(0x00FF00FF);
    for (int b = 0; b < nblk; b++) {
        const uint8_t *g0 = w0 + (size_t)b * GB, *g1 = w1 + (size_t)b * GB;
        int8_t *ubb = ub + 4096 * (size_t)b;
        prefetch_block(g0, GB);
        prefetch_block(g1, GB);
#pragma GCC unroll 4
        for (int c2 = 0; c2 < 4; c2++) /* qs word 8 c2 + j: quad j of sub-blocks 2 c2 (low nibbles) and 2 c2 + 1 */
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                const __m512i qs = cat(ld(g0 + 128 + 32 * (8 * c2 + j)), ld(g1 + 128 + 32 * (8 * c2 + j)));
                _mm512_store_si512((void *)(ubb + 512 * (2 * c2) + 64 * j), _mm512_sub_epi8(_mm512_and_si512(qs, lo4), eight));
                _mm512_store_si512((void *)(ubb + 512 * (2 * c2 + 1) + 64 * j), _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(qs, 4), lo4), eight));
            }
        __m256i sl0, sh0, mp0[4], sl1, sh1, mp1[4];
        k4_scales(g0, &sl0, &sh0, mp0);
        k4_scales(g1, &sl1, &sh1, mp1);
        const __m512i sc_lo = cat(sl0, sl1), sc_hi = cat(sh0, sh1);
        __m512i *a = aux + (size_t)AMX_K4_AUX * b;
        for (int u = 0; u < 8; u++) a[u] = _mm512_shuffle_epi8(u < 4 ? sc_lo : sc_hi, _mm512_broadcast_i32x4(pat_byte32(u & 3)));
        for (int h = 0; h < 2; h++) { /* scales (0, 2), (1, 3), (4, 6), (5, 7): the pair order of xs */
            const __m512i v = h ? sc_hi : sc_lo;
            a[8 + 2 * h] = _mm512_slli_epi16(_mm512_and_si512(v, lo16), 3);
            a[9 + 2 * h] = _mm512_slli_epi16(_mm512_srli_epi16(v, 8), 3);
        }
        for (int p = 0; p < 4; p++) a[12 + p] = cat(mp0[p], mp1[p]);
        a[16] = _mm512_castps_si512(h16(g0, g1));
        a[17] = _mm512_castps_si512(h16(g0 + 16, g1 + 16));
    }
}

/* block f's 8 stored tiles into the R accumulators of activation rows m0 .. */
static inline AI TA void amx_fold_k4(__m512 *acc, const int32_t *cb, const __m512i *a, const ek_bctx *c, int m0, int f, const int R)
{
    const int nblk = c->k / EK_QK_K;
    const __m512 d = _mm512_castsi512_ps(a[16]), dmin = _mm512_castsi512_ps(a[17]);
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        if (i < R) {
            const int16_t *xs = c->xs + (size_t)(m0 + i) * c->xs_stride + 8 * (size_t)f;
            __m512i isum = _mm512_madd_epi16(a[8], bc4_512(xs)), imin = _mm512_madd_epi16(a[12], bc4_512(xs));
            for (int p = 1; p < 4; p++) {
                isum = _mm512_dpwssd_epi32(isum, a[8 + p], bc4_512(xs + 2 * p));
                imin = _mm512_dpwssd_epi32(imin, a[12 + p], bc4_512(xs + 2 * p));
            }
#pragma GCC unroll 8
            for (int u = 0; u < 8; u++) isum = _mm512_dpwssd_epi32(isum, _mm512_load_si512((const void *)(cb + 256 * u + 16 * i)), a[u]);
            const __m512 dx = _mm512_set1_ps(c->dx[(size_t)(m0 + i) * nblk + f]);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, dx), acc[i]);
            acc[i] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(imin), _mm512_mul_ps(dmin, dx), acc[i]);
        }
}

static inline AI TA void amx_tile_q4_k(const ek_bctx *c, int g, int m0, const int R, const int8_t *ub, const __m512i *aux)
{
    const int nblk = c->k / EK_QK_K;
    const size_t K = (size_t)c->k;
    const int8_t *xa = c->xq + (size_t)m0 * K;
    _Alignas(64) int32_t cb[2][8 * 256]; /* a block's 8 tiles while the one before is folded */
    __m512 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
    for (int b = 0; b < nblk; b++) {
        const int8_t *xb = xa + 256 * (size_t)b, *wb = ub + 4096 * (size_t)b;
        int32_t *dst = cb[b & 1];
#pragma GCC unroll 4
        for (int u = 0; u < 8; u += 2) {
            AMX_OP(0, 2, 4, xb + 32 * u, wb + 512 * u, dst + 256 * u);
            AMX_OP(1, 3, 5, xb + 32 * (u + 1), wb + 512 * (u + 1), dst + 256 * (u + 1));
        }
        if (b) amx_fold_k4(acc, cb[(b - 1) & 1], aux + (size_t)AMX_K4_AUX * (b - 1), c, m0, b - 1, R);
    }
    amx_fold_k4(acc, cb[(nblk - 1) & 1], aux + (size_t)AMX_K4_AUX * (nblk - 1), c, m0, nblk - 1, R);
    for (int i = 0; i < R; i++) _mm512_storeu_ps(c->y + (size_t)(m0 + i) * c->ldy + 8 * (size_t)g, acc[i]);
}

static inline AI TA void amx_unpack(const ek_bctx *c, int g, int8_t *ub, __m512i *aux, const int TY)
{
    if (TY == TY_Q5_0) amx_unpack_q5_0(c, g, ub, (float *)aux);
    else amx_unpack_q4_k(c, g, ub, aux);
}

static inline AI TA void amx_tile(const ek_bctx *c, int g, int m0, const int R, const int8_t *ub, const __m512i *aux, const int TY)
{
    if (TY == TY_Q5_0) amx_tile_q5_0(c, g, m0, R, ub, (const float *)aux);
    else amx_tile_q4_k(c, g, m0, R, ub, aux);
}

/* group pairs of [r0, r1) on AMX (M >= 16, K <= AMX_KMAX); the odd group out as rows8 */
#define AMX_KMAX (R8_UB * 2 / 512 * 32)
static inline AI TA void amx_rows(const ek_bctx *c, int r0, int r1, const int TY)
{
    _Alignas(64) int8_t ub[AMX_KMAX / 32 * 512];
    __m512i aux[AMX_KMAX / EK_QK_K * AMX_K4_AUX]; /* Q4_K's scales per block, or Q5_0's as floats */
    const int M = c->M, Mt = M / 16 * 16;
    int g = r0 / 8;
    amx_config(16);
    for (; g + 2 <= r1 / 8; g += 2) {
        amx_unpack(c, g, ub, aux, TY);
        for (int m0 = 0; m0 < Mt; m0 += 16) {
            prefetch_next_pair(c, g, m0 / 16, (M + 15) / 16);
            amx_tile(c, g, m0, 16, ub, aux, TY);
        }
        if (Mt < M) { /* the last rows: a tile of fewer rows */
            prefetch_next_pair(c, g, Mt / 16, Mt / 16 + 1);
            amx_config(M - Mt);
            amx_tile(c, g, Mt, M - Mt, ub, aux, TY);
            amx_config(16);
        }
    }
    _tile_release();
    if (g < r1 / 8) rows8_of_avx512vnni(c->t->code)(c, 8 * g, r1);
}

/* AMX where it runs (out of line: its stack buffers), else the 16-row zmm kernel */
#define AMX_FNS(TY, name)                                                                                   \
    static __attribute__((noinline)) TA void amx_rows_##name(const ek_bctx *c, int r0, int r1) { amx_rows(c, r0, r1, TY); } \
    static TA void rows_amx_##name(const ek_bctx *c, int r0, int r1)                                       \
    {                                                                                                       \
        if (c->M >= 16 && c->k <= AMX_KMAX) amx_rows_##name(c, r0, r1);                                    \
        else rows16_##name(c, r0, r1);                                                                      \
    }
AMX_FNS(TY_Q5_0, q5_0)
AMX_FNS(TY_Q4_K, q4_k)

ek_blocks_fn ek_rows8_amx(const ek_bctx *c)
{
    if (!rows8_call(c)) return NULL;
    return c->t->code == 6 ? rows_amx_q5_0 : c->t->code == 12 ? rows_amx_q4_k : rows8_of_512(c->t->code);
}
#endif
