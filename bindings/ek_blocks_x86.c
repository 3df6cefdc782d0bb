/* x86 row kernels over GGUF-native blocks (see ek_blocks.h).
 *
 * The plain-C kernel (ek_blocks_rows.h) is compiled for AVX2 and AVX-512; on the int8-activation
 * path Q4_K, Q5_K, Q6_K and Q5_0 (what Q4_K_M / Q5_K_M files are made of) get hand-written AVX2
 * kernels: codes unpack to unsigned bytes, vpmaddubsw multiplies them with the int8 activations,
 * sums are exact integers within a block (Q6_K's and Q5_0's offsets come off there, from activation
 * sums), and each block adds to the output's 8 float lanes by FMA, in block order; one horizontal
 * sum ends the row.
 *
 * One tile function per type computes an output, whatever the loops around it: T activation rows
 * share each unpacked block. Prompt-sized M runs tiles of EK_GM rows over passes of weight rows
 * decoded once into a stack buffer (a tile's activations stay in L1, the pass in L2); the rows of M
 * left over, and token generation, run tiles of 4 and one of 1..3 a weight row at a time. Integer
 * sums are exact, so their order is free; an output's float operations are the same for every T,
 * M and thread count, and so are its bits: verifying k draft tokens in one matmul gives the logits
 * of k single-token steps. */
#include "ek_blocks.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define T2 __attribute__((target(ISA_AVX2)))
#define T512 __attribute__((target(ISA512)))
#define AI __attribute__((always_inline))

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

#define EK_GM 8                 /* activation rows per tile when M >= EK_GM */
#define EK_GBUF 3072            /* __m256i of a GEMM's stack buffer (96 KiB): tile sums, decoded rows */
#define EK_GPASS (160 * 1024)   /* weight bytes per pass where not one row fits decoded */
#define EK_XBUF 1024            /* __m256i of activation sums of the rows left over (32 KiB) */

static inline T2 float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* fp16 at byte offset `at` by the F16C instruction (the portable ek_h2f costs ~20 scalar ops) */
static inline T2 float h2f_at(const uint8_t *b, int at)
{
    uint16_t h;
    memcpy(&h, b + at, 2);
    return _cvtsh_ss(h);
}

/* int16 lane j of each 128-bit half of v, in every lane of that half */
static inline AI T2 __m256i bcast16(__m256i v, int j)
{
    return _mm256_shuffle_epi8(v, _mm256_set1_epi16((short)(0x0100 + 0x0202 * j)));
}

static inline uint16_t ld16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline AI T2 __m256i ld(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* v, as a register the compiler may not reassociate through: without it GCC turns a tile's sums
 * over sub-blocks into trees of all T x 8 products, spilled to the stack */
static inline AI T2 __m256i keep(__m256i v)
{
    __asm__("" : "+x"(v));
    return v;
}

static inline AI T2 __m256i sum_pairs(__m256i v) { return _mm256_madd_epi16(v, _mm256_set1_epi16(1)); }

/* Two vectors of 8 int32 partial sums -> one of 8 sums of two neighbours each, a's then b's within
 * each 128-bit half; exact while every sum fits in int16 (packssdw saturates) */
static inline AI T2 __m256i fold2(__m256i a, __m256i b) { return sum_pairs(_mm256_packs_epi32(a, b)); }

/* the T activation rows of a tile: T is a constant in every instance, which keeps the per-row
 * vectors in registers */
#define TILE_ROWS(i) for (int i = 0; i < T; i++)

/* -------------------------------------------------------------------- Q4_K / Q5_K
 * Activations per 256 (dx per block, cs per 32): each 32-element sub-block's dot is weighted by its
 * 6-bit scale in vpmaddwd, one FMA of d * dx per block and one of the mins (-dmin * m) with cs. */

/* the eight 6-bit scales as int16 in both 128-bit halves, and *mnv = -(dmin * m) per sub-block (the
 * arithmetic of k_scale_min); the 12 bytes unpack as 32-bit words, scales then mins */
static inline AI T2 __m256i k4_scales(const uint8_t *blk, __m256 *mnv)
{
    uint32_t u[4];
    memcpy(u, blk + 4, 12);
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    u[3] = ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4);
    const uint32_t mins_lo = u[1] & m6;
    u[1] = (u[2] & m4) | (((u[0] >> 6) & m2) << 4);
    u[2] = mins_lo;
    u[0] &= m6;
    const __m128i v = _mm_loadu_si128((const __m128i *)u);
    *mnv = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(_mm256_set1_ps(h2f_at(blk, 2)),
                                                            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8)))));
    return _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(v));
}

/* codes of elements 32u .. 32u + 31 (sub-block u): the low (u even) or high nibbles of qs bytes
 * 32 (u / 2) .., with Q5 their fifth bit, bit u of qh byte t (shifted within bytes: 16-bit shifts
 * never carry a neighbour's bit into bit 4 here) */
static inline AI T2 __m256i k4_codes(const uint8_t *blk, int u, const int Q5)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), v = ld(blk + (Q5 ? 48 : 16) + 32 * (u >> 1));
    __m256i q = _mm256_and_si256(u & 1 ? _mm256_srli_epi16(v, 4) : v, m4);
    if (Q5) {
        const __m256i qh = ld(blk + 16);
        const __m256i hb = u < 4 ? _mm256_slli_epi16(qh, 4 - u) : u > 4 ? _mm256_srli_epi16(qh, u - 4) : qh;
        q = _mm256_or_si256(q, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
    }
    return q;
}

/* a decoded Q4_K / Q5_K block: the codes of its 8 sub-blocks, k4_scales, mnv, d */
#define K4_DEC 11

static inline AI T2 void k4_decode(const ek_bctx *c, int r0, int n, const int Q5, __m256i *dec)
{
    const int nblk = c->k / EK_QK_K;
    const size_t nbytes = (size_t)c->t->nbytes;
    for (size_t j = 0; j < (size_t)n * nblk; j++) {
        const uint8_t *blk = c->w + ((size_t)r0 * nblk + j) * nbytes;
        __m256i *o = dec + j * K4_DEC;
        __m256 mnv;
        for (int u = 0; u < 8; u++) o[u] = k4_codes(blk, u, Q5);
        o[8] = k4_scales(blk, &mnv);
        o[9] = _mm256_castps_si256(mnv);
        o[10] = _mm256_castps_si256(_mm256_set1_ps(h2f_at(blk, 0)));
    }
}

/* weight row r x activation rows i0 .. i0 + T - 1; with DEC the row's blocks come decoded in dec */
static inline AI T2 void tile_k4(const ek_bctx *c, int r, int i0, const int T, const int Q5, const int DEC, const __m256i *dec)
{
    const int nblk = c->k / EK_QK_K;
    const size_t K = (size_t)c->k, S32 = K / 32, nbytes = (size_t)c->t->nbytes;
    const uint8_t *row = c->w + (size_t)r * nblk * nbytes;
    const int8_t *x = c->xq + (size_t)i0 * K;
    const float *dx = c->dx + (size_t)i0 * nblk, *cs = c->cs + (size_t)i0 * S32;
    __m256 acc[EK_GM];
    for (int i = 0; i < T; i++) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nblk; b++) {
        const uint8_t *blk = row + (size_t)b * nbytes;
        const __m256i *db = DEC ? dec + (size_t)b * K4_DEC : NULL;
        const int8_t *xb = x + (size_t)b * EK_QK_K;
        __m256 mnv, d;
        __m256i sc;
        if (DEC) {
            sc = db[8];
            mnv = _mm256_castsi256_ps(db[9]);
            d = _mm256_castsi256_ps(db[10]);
        } else {
            sc = k4_scales(blk, &mnv);
            d = _mm256_set1_ps(h2f_at(blk, 0));
        }
        __m256i sum[EK_GM];
        for (int i = 0; i < T; i++) sum[i] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) {
            const __m256i q = DEC ? db[u] : k4_codes(blk, u, Q5), s = bcast16(sc, u);
            TILE_ROWS(i) sum[i] = keep(_mm256_add_epi32(sum[i], _mm256_madd_epi16(_mm256_maddubs_epi16(q, ld(xb + i * K + 32 * u)), s)));
        }
        TILE_ROWS(i) {
            const __m256 dd = _mm256_mul_ps(d, _mm256_broadcast_ss(dx + (size_t)i * nblk + b));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[i]), dd, acc[i]);
            acc[i] = _mm256_fmadd_ps(mnv, _mm256_loadu_ps(cs + (size_t)i * S32 + 8 * b), acc[i]); /* min term */
        }
    }
    TILE_ROWS(i) c->y[(size_t)(i0 + i) * c->ldy + r] = hsum8(acc[i]);
}

#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* -------------------------------------------------------------------- Q6_K
 * Activations per 256: codes as stored, q + 32 (0..63), each 16-element sub-block's dot weighted by
 * its int8 scale in vpmaddwd; the offset comes off in integers as 32 * sum(scale * sum(x)) over the
 * sub-blocks, from per-sub-block activation sums made once per tile. One FMA of d * dx per block. */

/* the 16 sub-block sums of a 256-element activation block as int16: sub-blocks 0, 2, .., 14 in the
 * low 128-bit half, 1, 3, .., 15 in the high one (the order of q6_scales) */
static inline AI T2 __m256i q6_xsums(const int8_t *x)
{
    const __m256i one = _mm256_set1_epi8(1);
    __m256i v[8];
    for (int u = 0; u < 8; u++) v[u] = sum_pairs(_mm256_maddubs_epi16(one, ld(x + 32 * u)));
    return _mm256_packs_epi32(fold2(fold2(v[0], v[1]), fold2(v[2], v[3])), fold2(fold2(v[4], v[5]), fold2(v[6], v[7])));
}

/* the 16 int8 scales as int16 in q6_xsums' order; lane u of either half is then chunk u's scale */
static inline AI T2 __m256i q6_scales(const uint8_t *blk)
{
    const __m128i order = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(blk + 192)), order));
}

/* codes + 32 of elements 32u .. 32u + 31, u = 4h + g: a nibble of ql bytes 64h + 32(g & 1) .. (low
 * for g < 2), bits 2g, 2g + 1 of qh bytes 128 + 32h .. above it (moved to bits 4, 5 within bytes) */
static inline AI T2 __m256i q6_codes(const uint8_t *blk, int u)
{
    const int h = u >> 2, g = u & 3;
    const __m256i ql = ld(blk + 64 * h + 32 * (g & 1)), qh = ld(blk + 128 + 32 * h);
    const __m256i lo = _mm256_and_si256(g < 2 ? ql : _mm256_srli_epi16(ql, 4), _mm256_set1_epi8(0x0F));
    const __m256i hb = g == 0 ? _mm256_slli_epi16(qh, 4) : g == 1 ? _mm256_slli_epi16(qh, 2) : g == 2 ? qh : _mm256_srli_epi16(qh, 2);
    return _mm256_or_si256(lo, _mm256_and_si256(hb, _mm256_set1_epi8(0x30)));
}

/* a decoded Q6_K block: the codes of its 8 chunks of 32, q6_scales, d */
#define Q6_DEC 10

static inline AI T2 void q6_decode(const ek_bctx *c, int r0, int n, __m256i *dec)
{
    const int nblk = c->k / EK_QK_K;
    const size_t nbytes = (size_t)c->t->nbytes;
    for (size_t j = 0; j < (size_t)n * nblk; j++) {
        const uint8_t *blk = c->w + ((size_t)r0 * nblk + j) * nbytes;
        __m256i *o = dec + j * Q6_DEC;
        for (int u = 0; u < 8; u++) o[u] = q6_codes(blk, u);
        o[8] = q6_scales(blk);
        o[9] = _mm256_castps_si256(_mm256_set1_ps(h2f_at(blk, 208)));
    }
}

/* xs: [T][nblk] q6_xsums of the tile's rows, or NULL to make them here; dec as tile_k4's */
static inline AI T2 void tile_q6_k(const ek_bctx *c, int r, int i0, const int T, const __m256i *xs, const int DEC,
                                   const __m256i *dec)
{
    const int nblk = c->k / EK_QK_K;
    const size_t K = (size_t)c->k, nbytes = (size_t)c->t->nbytes;
    const uint8_t *row = c->w + (size_t)r * nblk * nbytes;
    const int8_t *x = c->xq + (size_t)i0 * K;
    const float *dx = c->dx + (size_t)i0 * nblk;
    __m256 acc[EK_GM];
    for (int i = 0; i < T; i++) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nblk; b++) {
        const uint8_t *blk = row + (size_t)b * nbytes;
        const __m256i *db = DEC ? dec + (size_t)b * Q6_DEC : NULL;
        const int8_t *xb = x + (size_t)b * EK_QK_K;
        const __m256i sc = DEC ? db[8] : q6_scales(blk), sc32 = _mm256_slli_epi16(sc, 5);
        const __m256 d = DEC ? _mm256_castsi256_ps(db[9]) : _mm256_set1_ps(h2f_at(blk, 208));
        __m256i sum[EK_GM];
        for (int i = 0; i < T; i++) sum[i] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) {
            const __m256i q = DEC ? db[u] : q6_codes(blk, u), s = bcast16(sc, u);
            TILE_ROWS(i) sum[i] = keep(_mm256_add_epi32(sum[i], _mm256_madd_epi16(_mm256_maddubs_epi16(q, ld(xb + i * K + 32 * u)), s)));
        }
        TILE_ROWS(i) {
            const __m256i xsum = xs ? xs[(size_t)i * nblk + b] : q6_xsums(xb + i * K);
            const __m256i dot = _mm256_sub_epi32(sum[i], _mm256_madd_epi16(sc32, xsum));
            const __m256 dd = _mm256_mul_ps(d, _mm256_broadcast_ss(dx + (size_t)i * nblk + b));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), dd, acc[i]);
        }
    }
    TILE_ROWS(i) c->y[(size_t)(i0 + i) * c->ldy + r] = hsum8(acc[i]);
}

/* q6_xsums of activation rows [i0, i0 + n) into xs, or 0 where they do not fit in cap */
static T2 int q6_prep(const ek_bctx *c, int i0, int n, __m256i *xs, size_t cap)
{
    const int nblk = c->k / EK_QK_K;
    if ((size_t)n * nblk > cap) return 0;
    for (int i = 0; i < n; i++)
        for (int b = 0; b < nblk; b++) xs[(size_t)i * nblk + b] = q6_xsums(c->xq + (size_t)(i0 + i) * c->k + (size_t)b * EK_QK_K);
    return 1;
}

/* -------------------------------------------------------------------- Q5_0
 * Activations per 32 (dx per block): blocks go four at a time through one vector of 8 float lanes,
 * lane j (j + 4) the first (second) 16 elements of block j, so the per-block float work (convert,
 * d * dx, FMA) is shared by four blocks. Codes as stored, q + 16 (0..31); the offset comes off in
 * int16 as 16 * sum(x) per 8 elements, made once per tile in the same lane order. */

/* 32 bits -> 32 bytes, 0xFF where the bit is set (element j = bit j) */
static inline AI T2 __m256i bits_to_bytes(uint32_t bits)
{
    const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x7fbfdfeff7fbfdfeull);
    return _mm256_cmpeq_epi8(_mm256_or_si256(v, bit), _mm256_set1_epi64x(-1));
}

/* codes + 16 of a block: the 16 qs bytes in both halves, the high half's shifted to its high nibbles */
static inline AI T2 __m256i q5_0_codes(const uint8_t *blk)
{
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 6)));
    const __m256i nib = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F));
    return _mm256_or_si256(nib, _mm256_and_si256(bits_to_bytes(le32(blk + 2)), _mm256_set1_epi8(0x10)));
}

/* n (1..4) blocks' products of u (unsigned bytes) and x -> int16 sums of 8 products, within each
 * 128-bit half two per block, blocks 0..3 (0 past n). The folds are shuffles and 16-bit adds, which
 * leave the multiply pipes to vpmaddubsw; a block's sums of 8 stay below 8 * 31 * 127 < 2^15. */
static inline AI T2 __m256i q5_0_fold(const __m256i *u, const int8_t *x, int n)
{
    __m256i p[4];
    for (int k = 0; k < 4; k++) p[k] = k < n ? _mm256_maddubs_epi16(u[k], ld(x + 32 * k)) : _mm256_setzero_si256();
    const __m256i a = _mm256_add_epi16(_mm256_unpacklo_epi32(p[0], p[1]), _mm256_unpackhi_epi32(p[0], p[1]));
    const __m256i b = _mm256_add_epi16(_mm256_unpacklo_epi32(p[2], p[3]), _mm256_unpackhi_epi32(p[2], p[3]));
    return _mm256_add_epi16(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
}

/* the offset term of a group of n blocks of activations x: 16 * sum(x) per 8 elements, lane order
 * of q5_0_fold */
static inline AI T2 __m256i q5_0_xsums(const int8_t *x, int n)
{
    const __m256i sixteen[4] = {_mm256_set1_epi8(16), _mm256_set1_epi8(16), _mm256_set1_epi8(16), _mm256_set1_epi8(16)};
    return q5_0_fold(sixteen, x, n);
}

/* acc plus one activation row's dot with a group of n blocks: u their codes, d their scales in
 * lanes j, j + 4 (0 past n); x, dx: the row's from the group's first block; off: its q5_0_xsums or
 * NULL. Past n nothing is read. */
static inline AI T2 __m256 q5_0_row(__m256 acc, const __m256i *u, __m256 d, const int8_t *x, const float *dx,
                                    const __m256i *off, int n)
{
    const __m256i o = off ? *off : q5_0_xsums(x, n);
    const __m256i dot = sum_pairs(_mm256_sub_epi16(q5_0_fold(u, x, n), o)); /* exact: |sum q x| < 2^15 per 8 */
    __m128 dx4;
    if (n == 4) {
        dx4 = _mm_loadu_ps(dx);
    } else {
        float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int k = 0; k < n; k++) t[k] = dx[k];
        dx4 = _mm_loadu_ps(t);
    }
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(d, _mm256_set_m128(dx4, dx4)), acc);
}

/* the codes of a group's n blocks (u[k], zero past n) and their scales in lanes k, k + 4 */
static inline AI T2 __m256 q5_0_group(const uint8_t *blk, size_t nbytes, int n, __m256i *u)
{
    uint64_t h = 0;
    for (int k = 0; k < 4; k++) {
        u[k] = k < n ? q5_0_codes(blk + k * nbytes) : _mm256_setzero_si256();
        if (k < n) h |= (uint64_t)ld16(blk + k * nbytes) << (16 * k);
    }
    const __m128 d4 = _mm_cvtph_ps(_mm_cvtsi64_si128((long long)h));
    return _mm256_set_m128(d4, d4);
}

/* a decoded Q5_0 group of four blocks: their codes, then their scales (q5_0_group) */
#define Q50_DEC 5

static inline AI T2 void q5_0_decode(const ek_bctx *c, int r0, int n, __m256i *dec)
{
    const int nblk = c->k / 32, ng = (nblk + 3) / 4;
    const size_t nbytes = (size_t)c->t->nbytes;
    for (int r = 0; r < n; r++)
        for (int g = 0; g < ng; g++) {
            __m256i *o = dec + ((size_t)r * ng + g) * Q50_DEC;
            const uint8_t *blk = c->w + ((size_t)(r0 + r) * nblk + 4 * g) * nbytes;
            o[4] = _mm256_castps_si256(q5_0_group(blk, nbytes, MIN(4, nblk - 4 * g), o));
        }
}

/* xs: [T][groups] q5_0_xsums of the tile's rows, or NULL to make them here; dec as tile_k4's */
static inline AI T2 void tile_q5_0(const ek_bctx *c, int r, int i0, const int T, const __m256i *xs, const int DEC,
                                   const __m256i *dec)
{
    const int nblk = c->k / 32, ng = (nblk + 3) / 4;
    const size_t K = (size_t)c->k, nbytes = (size_t)c->t->nbytes;
    const uint8_t *row = c->w + (size_t)r * nblk * nbytes;
    const int8_t *x = c->xq + (size_t)i0 * K;
    const float *dx = c->dx + (size_t)i0 * nblk;
    __m256 acc[EK_GM];
    for (int i = 0; i < T; i++) acc[i] = _mm256_setzero_ps();
    for (int g = 0; g < ng; g++) {
        const int b = 4 * g, n = MIN(4, nblk - b);
        __m256i uu[4];
        const __m256i *u = DEC ? dec + (size_t)g * Q50_DEC : uu;
        const __m256 d = DEC ? _mm256_castsi256_ps(u[4]) : q5_0_group(row + (size_t)b * nbytes, nbytes, n, uu);
        const int8_t *xg = x + (size_t)b * 32;
        if (n == 4) {
            TILE_ROWS(i) acc[i] = q5_0_row(acc[i], u, d, xg + i * K, dx + (size_t)i * nblk + b, xs ? xs + (size_t)i * ng + g : NULL, 4);
        } else {
            TILE_ROWS(i) acc[i] = q5_0_row(acc[i], u, d, xg + i * K, dx + (size_t)i * nblk + b, xs ? xs + (size_t)i * ng + g : NULL, n);
        }
    }
    TILE_ROWS(i) c->y[(size_t)(i0 + i) * c->ldy + r] = hsum8(acc[i]);
}

/* q5_0_xsums of activation rows [i0, i0 + n) into xs, or 0 where they do not fit in cap */
static T2 int q5_0_prep(const ek_bctx *c, int i0, int n, __m256i *xs, size_t cap)
{
    const int nblk = c->k / 32, ng = (nblk + 3) / 4;
    if ((size_t)n * ng > cap) return 0;
    for (int i = 0; i < n; i++)
        for (int g = 0; g < ng; g++)
            xs[(size_t)i * ng + g] = q5_0_xsums(c->xq + (size_t)(i0 + i) * c->k + (size_t)g * 128, MIN(4, nblk - 4 * g));
    return 1;
}

/* -------------------------------------------------------------------- the loops around the tiles */
enum { TY_Q4_K, TY_Q5_K, TY_Q6_K, TY_Q5_0 };

static inline AI T2 void tile(const ek_bctx *c, int r, int i0, const int T, const int TY, const __m256i *xs, const int DEC,
                              const __m256i *dec)
{
    if (TY == TY_Q6_K) tile_q6_k(c, r, i0, T, xs, DEC, dec);
    else if (TY == TY_Q5_0) tile_q5_0(c, r, i0, T, xs, DEC, dec);
    else tile_k4(c, r, i0, T, TY == TY_Q5_K, DEC, dec);
}

/* __m256i per decoded row, and of activation sums per activation row (made once per tile) */
static inline AI size_t dec_row(const ek_bctx *c, const int TY)
{
    return TY == TY_Q5_0 ? (size_t)(c->k / 32 + 3) / 4 * Q50_DEC : (size_t)(c->k / EK_QK_K) * (TY == TY_Q6_K ? Q6_DEC : K4_DEC);
}

static inline AI size_t xs_row(const ek_bctx *c, const int TY)
{
    return TY == TY_Q6_K ? (size_t)(c->k / EK_QK_K) : TY == TY_Q5_0 ? (size_t)(c->k / 32 + 3) / 4 : 0;
}

/* the activation sums of rows [i0, i0 + n) into xs; 0 where they do not fit in cap (tiles then
 * make them where used) */
static inline AI T2 int prep(const ek_bctx *c, int i0, int n, const int TY, __m256i *xs, size_t cap)
{
    if (TY == TY_Q6_K) return q6_prep(c, i0, n, xs, cap);
    if (TY == TY_Q5_0) return q5_0_prep(c, i0, n, xs, cap);
    return 1;
}

static inline AI T2 void decode(const ek_bctx *c, int r0, int n, const int TY, __m256i *dec)
{
    if (TY == TY_Q6_K) q6_decode(c, r0, n, dec);
    else if (TY == TY_Q5_0) q5_0_decode(c, r0, n, dec);
    else k4_decode(c, r0, n, TY == TY_Q5_K, dec);
}

/* Activation rows [0, Mg), a multiple of EK_GM. Rows are decoded once per pass into the stack
 * buffer (after one tile's activation sums) and read by every tile; a tile's activations stay in
 * L1 across the pass. Where not one decoded row fits, tiles decode in registers and a pass is
 * EK_GPASS bytes of weights, which stay in L2. */
static inline AI T2 void gemm(const ek_bctx *c, int r0, int r1, int Mg, const int TY)
{
    __m256i buf[EK_GBUF];
    const size_t drow = dec_row(c, TY), xs_n = EK_GM * xs_row(c, TY);
    const size_t row_bytes = (size_t)(c->k / c->t->block) * (size_t)c->t->nbytes;
    const int R = xs_n + drow <= EK_GBUF ? (int)((EK_GBUF - xs_n) / drow) : 0;
    const int pass = R ? R : EK_GPASS / row_bytes > 1 ? (int)(EK_GPASS / row_bytes) : 1;
    __m256i *const dec = buf + xs_n;
    for (int rp = r0; rp < r1; rp += pass) {
        const int n = MIN(pass, r1 - rp);
        if (R) decode(c, rp, n, TY, dec);
        for (int i0 = 0; i0 < Mg; i0 += EK_GM) {
            const __m256i *xs = prep(c, i0, EK_GM, TY, buf, EK_GBUF) ? buf : NULL;
            for (int r = rp; r < rp + n; r++) {
                if (R) tile(c, r, i0, EK_GM, TY, xs, 1, dec + (size_t)(r - rp) * drow);
                else tile(c, r, i0, EK_GM, TY, xs, 0, NULL);
            }
        }
    }
}

/* Activation rows [a0, M), fewer than EK_GM: a weight row at a time, in tiles of 4 and one of the
 * 1..3 rows left, each tile its own instance (a constant T) */
static inline AI T2 void rest(const ek_bctx *c, int r0, int r1, int a0, const int TY)
{
    __m256i xs[EK_XBUF];
    const size_t xr = xs_row(c, TY);
    const int M = c->M, pre = prep(c, a0, M - a0, TY, xs, EK_XBUF);
    for (int r = r0; r < r1; r++)
        for (int i0 = a0; i0 < M; i0 += 4) {
            const __m256i *x = pre ? xs + (size_t)(i0 - a0) * xr : NULL;
            switch (MIN(4, M - i0)) {
            case 4: tile(c, r, i0, 4, TY, x, 0, NULL); break;
            case 3: tile(c, r, i0, 3, TY, x, 0, NULL); break;
            case 2: tile(c, r, i0, 2, TY, x, 0, NULL); break;
            default: tile(c, r, i0, 1, TY, x, 0, NULL); break;
            }
        }
}

/* Out of line, so that neither stack buffer is reserved where its loop does not run (the GEMM's
 * 96 KiB in token generation, the rest's 32 KiB under the GEMM) */
#define TYPE_FNS(TY, name)                                                                              \
    static __attribute__((noinline)) T2 void gemm_##name(const ek_bctx *c, int r0, int r1, int Mg)     \
    {                                                                                                   \
        gemm(c, r0, r1, Mg, TY);                                                                        \
    }                                                                                                   \
    static __attribute__((noinline)) T2 void rest_##name(const ek_bctx *c, int r0, int r1, int a0)     \
    {                                                                                                   \
        rest(c, r0, r1, a0, TY);                                                                        \
    }                                                                                                   \
    static T2 void rows_##name(const ek_bctx *c, int r0, int r1)                                       \
    {                                                                                                   \
        const int Mg = c->M / EK_GM * EK_GM;                                                            \
        if (Mg) gemm_##name(c, r0, r1, Mg);                                                             \
        if (Mg < c->M) rest_##name(c, r0, r1, Mg);                                                      \
    }
TYPE_FNS(TY_Q4_K, q4_k)
TYPE_FNS(TY_Q5_K, q5_k)
TYPE_FNS(TY_Q6_K, q6_k)
TYPE_FNS(TY_Q5_0, q5_0)

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

/* The kernel for c's weight: rows interleaved 8 at a time (with the instruction set's own dot
 * product), or one row at a time; NULL: none. */
static ek_blocks_fn kernel_of(const ek_bctx *c, ek_blocks_fn (*rows8)(const ek_bctx *)) { return c->rows8 ? rows8(c) : avx2_dot(c); }

T2 void ek_blocks_rows_avx2(const ek_bctx *c, int r0, int r1)
{
    const ek_blocks_fn f = kernel_of(c, ek_rows8_avx2);
    if (f) f(c, r0, r1);
    else generic_avx2(c, r0, r1);
}

__attribute__((target(ISA_AVXVNNI))) void ek_blocks_rows_avxvnni(const ek_bctx *c, int r0, int r1)
{
    const ek_blocks_fn f = kernel_of(c, ek_rows8_avxvnni);
    if (f) f(c, r0, r1);
    else generic_avx2(c, r0, r1);
}

/* AVX-512 CPUs run the AVX2 row-by-row kernels (their needs are a subset of the path's) */
T512 void ek_blocks_rows_avx512(const ek_bctx *c, int r0, int r1)
{
    const ek_blocks_fn f = kernel_of(c, ek_rows8_avx512vnni);
    if (f) f(c, r0, r1);
    else generic_avx512(c, r0, r1);
}

__attribute__((target(ISA_AMX))) void ek_blocks_rows_amx(const ek_bctx *c, int r0, int r1)
{
    const ek_blocks_fn f = kernel_of(c, ek_rows8_amx);
    if (f) f(c, r0, r1);
    else generic_avx512(c, r0, r1);
}
#endif
