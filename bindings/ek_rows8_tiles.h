/* The tiles of ek_rows8_x86.c, compiled once per instruction set: included with R8_T (the target
 * attribute) and R8_SUFFIX defined, and for VNNI targets R8_DPBUSD / R8_DPWSSD (the target's
 * vpdpbusd / vpdpwssd intrinsics on 256-bit vectors, AVX-VNNI or AVX512-VNNI).
 *
 * Every form computes the same exact integer sums per sub-block, so outputs are bit-identical
 * across instruction sets. AVX2 sums a few quads of code * x products in int16 (as many as cannot
 * overflow: vpmaddubsw, vpaddw), then takes the sub-block's scale in vpmaddwd. With VNNI, a tile
 * that asks for `busd` sums a whole sub-block in int32 with vpdpbusd (one instruction per quad
 * instead of two) and takes the scale with one vpmulld; Q6_K, whose 16-element sub-blocks would
 * need a vpmulld every 4 quads (measured slower), keeps the int16 sums and folds the scale and the
 * sum in one vpdpwssd. */
#ifndef R8_CODES_Q5_0
#define R8_CODES_Q5_0 codes_q5_0 /* a target may give its own form of the same codes */
#endif
#define R8_CAT2(a, b) a##_##b
#define R8_CAT(a, b) R8_CAT2(a, b)
#define R8_FN(name) R8_CAT(name, R8_SUFFIX)
#ifdef R8_DPBUSD
#define R8_BUSD 1
#else
#define R8_BUSD 0
#endif

/* quads of code * x products per partial sum: an int16 one holds n16, an int32 one the sub-block */
#define R8_NQ(busd, n16, nsub) ((busd) ? (nsub) : (n16))

/* a += code . x: int32 lanes (busd) or int16 pairs */
static inline AI R8_T __m256i R8_FN(dot)(__m256i a, __m256i code, __m256i x, const int busd)
{
#ifdef R8_DPBUSD
    if (busd) return R8_DPBUSD(a, code, x);
#endif
    (void)busd;
    return _mm256_add_epi16(a, _mm256_maddubs_epi16(code, x));
}

/* s += a * sc per 32-bit lane; sc as R8_FN(scale8) shapes it */
static inline AI R8_T __m256i R8_FN(fold)(__m256i s, __m256i a, __m256i sc, const int busd)
{
#ifdef R8_DPBUSD
    return busd ? _mm256_add_epi32(s, _mm256_mullo_epi32(a, sc)) : R8_DPWSSD(s, a, sc);
#else
    (void)busd;
    return _mm256_add_epi32(s, _mm256_madd_epi16(a, sc));
#endif
}

/* s += a (a partial sum without a scale) */
static inline AI R8_T __m256i R8_FN(fold1)(__m256i s, __m256i a, const int busd)
{
    return busd ? _mm256_add_epi32(s, a) : R8_FN(fold)(s, a, _mm256_set1_epi16(1), 0);
}

static inline AI R8_T __m256i R8_FN(chains)(const __m256i s[R8_NC], const int T)
{
    return T == 1 ? _mm256_add_epi32(_mm256_add_epi32(s[0], s[1]), _mm256_add_epi32(s[2], s[3])) : s[0];
}

/* byte j of each lane as the scale R8_FN(fold) takes */
static inline AI R8_T __m256i R8_FN(scale8)(__m256i v, int j, const int busd) { return busd ? lane_byte32(v, j) : lane_byte16(v, j); }

/* -------------------------------------------------------------------- Q4_K / Q5_K
 * Group block: d[8] f16 | dmin[8] f16 | the 12 scale bytes as 3 words | (Q5_K: qh, 8 words) | qs, 32
 * words. qs word 8c + q holds elements 64c + 4q .. (low nibbles, sub-block 2c) and 64c + 32 + 4q ..
 * (high, 2c + 1); qh word q the fifth bits of elements 32u + 4q .. in bit u. Per sub-block u the
 * codes' sums take the 6-bit scale; the mins are sum(m * xs) in vpmaddwd pairs. */
static inline AI R8_T void R8_FN(tile_k4)(const ek_bctx *c, int g, int i0, const int T, const int Q5, const uint8_t *ub)
{
    const int nblk = c->k / EK_QK_K;
    const size_t K = (size_t)c->k, GB = Q5 ? 1408 : 1152;
    const uint8_t *base = c->w + (size_t)g * nblk * GB;
    __m256 acc[EK_TM];
    TILE_ROWS(i) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nblk; b++) {
        const uint8_t *gb = base + (size_t)b * GB, *ubb = ub ? ub + (size_t)b * 64 * 32 : NULL;
        __m256i sc_lo, sc_hi, mp[4];
        k4_scales(gb, &sc_lo, &sc_hi, mp);
        __m256i isum[EK_TM][R8_NC], imin[EK_TM];
        TILE_ROWS(i) {
            const int16_t *xs = c->xs + (size_t)(i0 + i) * c->xs_stride + 8 * b;
            __m256i s = _mm256_madd_epi16(mp[0], bc4(xs));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(mp[1], bc4(xs + 2)));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(mp[2], bc4(xs + 4)));
            imin[i] = _mm256_add_epi32(s, _mm256_madd_epi16(mp[3], bc4(xs + 6)));
            for (int j = 0; j < R8_NC; j++) isum[i][j] = _mm256_setzero_si256();
        }
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) {
            if (!ub && i0 == 0) prefetch_decode(c, gb, GB, GB, u, 8);
            const __m256i sc = R8_FN(scale8)(u < 4 ? sc_lo : sc_hi, u & 3, R8_BUSD);
            /* in int16, Q4 codes (<= 15) sum over 8 quads, Q5's (<= 31) over 4. With VNNI, Q4's int32 sums
             * over 4 quads stay below 2^15: their lanes read as int16 pairs (sum, sign), and vpdpwssd with
             * the scale in the low half folds one in a uop (vpmulld + add: three) */
            const int NQ = R8_NQ(R8_BUSD, Q5 ? 4 : 8, Q5 ? 8 : 4), FOLD_BUSD = R8_BUSD && Q5;
#pragma GCC unroll 2
            for (int q0 = 0; q0 < 8; q0 += NQ) {
                __m256i part[EK_TM];
                TILE_ROWS(i) part[i] = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int q = q0; q < q0 + NQ; q++) {
                    const __m256i code = ubb ? ld(ubb + 32 * (8 * u + q)) : codes_k4(gb, 8 * u + q, Q5);
                    TILE_ROWS(i) part[i] = keep(R8_FN(dot)(part[i], code, bc4(c->xq + (size_t)(i0 + i) * K + 256 * (size_t)b + 32 * u + 4 * q), R8_BUSD));
                }
                const int f = R8_CHAIN(T, u * (8 / NQ) + q0 / NQ);
                TILE_ROWS(i) isum[i][f] = R8_FN(fold)(isum[i][f], part[i], sc, FOLD_BUSD);
            }
        }
        const __m256 d = h8(gb), dmin = h8(gb + 16);
        TILE_ROWS(i) {
            const __m256 dx = _mm256_broadcast_ss(c->dx + (size_t)(i0 + i) * nblk + b);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(R8_FN(chains)(isum[i], T)), _mm256_mul_ps(d, dx), acc[i]);
            acc[i] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(imin[i]), _mm256_mul_ps(dmin, dx), acc[i]);
        }
    }
    TILE_ROWS(i) store8(c, i0 + i, g, acc[i]);
}

/* -------------------------------------------------------------------- Q6_K
 * Group block: ql, 32 words | qh, 16 words | the 16 int8 scales as 4 words | d[8] f16. Element
 * 128h + 32i + t: a nibble of ql byte 64h + 32(i & 1) + t (low for i < 2), bits 2i, 2i + 1 of qh byte
 * 32h + t. Codes as stored (0..63) sum over two quads in int16, then take the sub-block's scale;
 * the offset 32 comes off as 32 * sum(scale * xs) per block. */
static inline AI R8_T void R8_FN(tile_q6_k)(const ek_bctx *c, int g, int i0, const int T, const uint8_t *ub)
{
    const int nblk = c->k / EK_QK_K;
    const size_t K = (size_t)c->k, GB = 1680;
    const uint8_t *base = c->w + (size_t)g * nblk * GB;
    __m256 acc[EK_TM];
    TILE_ROWS(i) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nblk; b++) {
        const uint8_t *gb = base + (size_t)b * GB, *ubb = ub ? ub + (size_t)b * 64 * 32 : NULL;
        __m256i sp[8];
        q6_scales(gb, sp);
        __m256i isum[EK_TM][R8_NC], ioff[EK_TM];
        TILE_ROWS(i) {
            const int16_t *xs = c->xs + (size_t)(i0 + i) * c->xs_stride + 16 * b;
            __m256i s = _mm256_madd_epi16(sp[0], bc4(xs));
            for (int p = 1; p < 8; p++) s = _mm256_add_epi32(s, _mm256_madd_epi16(sp[p], bc4(xs + 2 * p)));
            ioff[i] = _mm256_slli_epi32(s, 5);
            for (int j = 0; j < R8_NC; j++) isum[i][j] = _mm256_setzero_si256();
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
#pragma GCC unroll 4
            for (int ci = 0; ci < 4; ci++)
#pragma GCC unroll 2
                for (int j = 0; j < 2; j++) {
                    const int s = 8 * h + 2 * ci + j; /* the sub-block: elements 128h + 32ci + 16j .. + 15 */
                    if (!ub && i0 == 0) prefetch_decode(c, gb, GB, GB, s, 16);
                    const __m256i sc = lane_half16(sp[2 * (s >> 2) + (s & 1)], (s >> 1) & 1);
#pragma GCC unroll 2
                    for (int q0 = 0; q0 < 4; q0 += 2) {
                        __m256i part[EK_TM];
                        TILE_ROWS(i) part[i] = _mm256_setzero_si256();
#pragma GCC unroll 2
                        for (int q = q0; q < q0 + 2; q++) {
                            const int t = 16 * j + 4 * q;
                            const __m256i code = ubb ? ld(ubb + 32 * (4 * s + q)) : codes_q6_k(gb, 4 * s + q);
                            TILE_ROWS(i) part[i] = keep(R8_FN(dot)(part[i], code, bc4(c->xq + (size_t)(i0 + i) * K + 256 * (size_t)b + 128 * h + 32 * ci + t), 0));
                        }
                        const int f = R8_CHAIN(T, 2 * s + q0 / 2);
                        TILE_ROWS(i) isum[i][f] = R8_FN(fold)(isum[i][f], part[i], sc, 0);
                    }
                }
        const __m256 d = h8(gb + 1664);
        TILE_ROWS(i) {
            const __m256 dx = _mm256_broadcast_ss(c->dx + (size_t)(i0 + i) * nblk + b);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(R8_FN(chains)(isum[i], T), ioff[i])), _mm256_mul_ps(d, dx), acc[i]);
        }
    }
    TILE_ROWS(i) store8(c, i0 + i, g, acc[i]);
}

/* -------------------------------------------------------------------- Q5_0
 * Group block: d[8] f16 | qh, one word | qs, 4 words. qs word w holds elements 4w .. (low nibbles)
 * and 16 + 4w .. (high); their fifth bits are bits 4w .. and 16 + 4w .. of qh. Codes as stored
 * (0..31); the offset 16 comes off as the sum's start, ek_bctx.xo. */

static inline AI R8_T void R8_FN(tile_q5_0)(const ek_bctx *c, int g, int i0, const int T, const uint8_t *ub)
{
    const int nblk = c->k / 32;
    const size_t K = (size_t)c->k, GB = 176;
    const uint8_t *base = c->w + (size_t)g * nblk * GB;
    __m256 acc[EK_TM];
    TILE_ROWS(i) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nblk; b++) {
        const uint8_t *gb = base + (size_t)b * GB, *ubb = ub ? ub + (size_t)b * 8 * 32 : NULL;
        if (!ub && i0 == 0) prefetch_decode(c, gb, 8 * GB, GB, 0, 1); /* 8 blocks: 256 elements */
        __m256i isum[EK_TM];
        TILE_ROWS(i) isum[i] = _mm256_set1_epi32(c->xo[(size_t)(i0 + i) * nblk + b]);
#pragma GCC unroll 2
        for (int half = 0; half < 2; half++) { /* codes <= 31: int16 sums over 4 quads */
            __m256i part[EK_TM];
            TILE_ROWS(i) part[i] = _mm256_setzero_si256();
#pragma GCC unroll 2
            for (int w = 2 * half; w < 2 * half + 2; w++) {
                const __m256i lo = ubb ? ld(ubb + 64 * w) : R8_CODES_Q5_0(gb, 2 * w);
                const __m256i hi = ubb ? ld(ubb + 64 * w + 32) : R8_CODES_Q5_0(gb, 2 * w + 1);
                TILE_ROWS(i) {
                    const int8_t *x = c->xq + (size_t)(i0 + i) * K + 32 * (size_t)b + 4 * w;
                    part[i] = keep(R8_FN(dot)(part[i], lo, bc4(x), R8_BUSD));
                    part[i] = keep(R8_FN(dot)(part[i], hi, bc4(x + 16), R8_BUSD));
                }
            }
            TILE_ROWS(i) isum[i] = R8_FN(fold1)(isum[i], part[i], R8_BUSD);
        }
        const __m256 d = h8(gb);
        TILE_ROWS(i) {
            const __m256 dx = _mm256_broadcast_ss(c->dx + (size_t)(i0 + i) * nblk + b);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i]), _mm256_mul_ps(d, dx), acc[i]);
        }
    }
    TILE_ROWS(i) store8(c, i0 + i, g, acc[i]);
}

/* -------------------------------------------------------------------- the loops around the tiles */
/* ub: the group's unpacked codes (unpack_group), or NULL to unpack them in the tile */
static inline AI R8_T void R8_FN(tile)(const ek_bctx *c, int g, int i0, const int T, const int TY, const uint8_t *ub)
{
    if (TY == TY_Q6_K) R8_FN(tile_q6_k)(c, g, i0, T, ub);
    else if (TY == TY_Q5_0) R8_FN(tile_q5_0)(c, g, i0, T, ub);
    else R8_FN(tile_k4)(c, g, i0, T, TY == TY_Q5_K, ub);
}

static inline AI R8_T void R8_FN(tiles)(const ek_bctx *c, int g, const int TY, const uint8_t *ub)
{
    const int M = c->M, Mt = M / EK_TM * EK_TM;
    for (int i0 = 0; i0 < Mt; i0 += EK_TM) R8_FN(tile)(c, g, i0, EK_TM, TY, ub);
    switch (M - Mt) {
    case 3: R8_FN(tile)(c, g, Mt, 3, TY, ub); break;
    case 2: R8_FN(tile)(c, g, Mt, 2, TY, ub); break;
    case 1: R8_FN(tile)(c, g, Mt, 1, TY, ub); break;
    default: break;
    }
}

/* Groups of rows [r0, r1) (multiples of 8) x every activation row: a group's weights stay in L1/L2
 * while the activation tiles pass over them */
static inline AI R8_T void R8_FN(rows8)(const ek_bctx *c, int r0, int r1, const int TY)
{
    _Alignas(32) uint8_t ub[R8_UB];
    const size_t need = (size_t)(c->k / c->t->block) * R8_NV(TY) * 32;
    if (c->M > EK_TM && need <= sizeof ub) {
        for (int g = r0 / 8; g < r1 / 8; g++) {
            unpack_group(c, g, ub, TY);
            R8_FN(tiles)(c, g, TY, ub);
        }
    } else {
        for (int g = r0 / 8; g < r1 / 8; g++) R8_FN(tiles)(c, g, TY, NULL);
    }
}

static R8_T void R8_FN(rows8_q4_k)(const ek_bctx *c, int r0, int r1) { R8_FN(rows8)(c, r0, r1, TY_Q4_K); }
static R8_T void R8_FN(rows8_q5_k)(const ek_bctx *c, int r0, int r1) { R8_FN(rows8)(c, r0, r1, TY_Q5_K); }
static R8_T void R8_FN(rows8_q6_k)(const ek_bctx *c, int r0, int r1) { R8_FN(rows8)(c, r0, r1, TY_Q6_K); }
static R8_T void R8_FN(rows8_q5_0)(const ek_bctx *c, int r0, int r1) { R8_FN(rows8)(c, r0, r1, TY_Q5_0); }

/* this instruction set's kernel of GGML type `code`, or NULL */
static ek_blocks_fn R8_FN(rows8_of)(int code)
{
    switch (code) {
    case 12: return R8_FN(rows8_q4_k);
    case 13: return R8_FN(rows8_q5_k);
    case 14: return R8_FN(rows8_q6_k);
    case 6: return R8_FN(rows8_q5_0);
    default: return NULL;
    }
}

#undef R8_CAT2
#undef R8_CAT
#undef R8_FN
#undef R8_BUSD
#undef R8_NQ
#undef R8_CODES_Q5_0
