/* 256-bit int8-activation tile; included with EK_T256 (target), EK_VNNI (0: AVX2
 * maddubs, 1: AVX-VNNI vpdpbusd) and EK_NAME256 defined. */
#if EK_VNNI
#define EK_DOT(acc, wv, xv) _mm256_dpbusd_avx_epi32((acc), (wv), (xv))
#else
#define EK_DOT(acc, wv, xv) _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((wv), (xv)), ones16))
#endif

static inline __attribute__((always_inline)) EK_T256 void
EK_NAME256(const ek_ctx *c, int g, int m0, const int MR, const int BITS, float *out)
{
    const ek_weight *w = c->w;
    const int S = c->S, spb = w->spb, Kp = c->Kp;
    const size_t sub = BITS == 4 ? 256 : 512;
    const uint8_t *qg = w->q + (size_t)g * S * sub;
    const uint16_t *dg = w->d + (size_t)g * w->nblk * 16;
    const uint16_t *mg = w->m ? w->m + (size_t)g * w->nblk * 16 : NULL;
    const __m256i lo4 = _mm256_set1_epi8(0x0F);
    const __m256i ones16 = _mm256_set1_epi16(1);
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    (void)ones16; (void)bias;
    /* maddubs saturates at 2*255*127, so AVX2 takes 8-bit codes signed (|w| <= 128)
     * via abs/sign and needs no offset correction */
    const int signed8 = BITS == 8 && !EK_VNNI;
    const __m256 noff = _mm256_set1_ps(signed8 ? 0.0f : -(float)w->offset);
    __m256 acc[EK_MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int s = 0; s < S; s++) {
        const uint8_t *qs = qg + (size_t)s * sub;
        const int b = s / spb;
        for (size_t p = 0; p < sub; p += 64) _mm_prefetch((const char *)qs + EK_PF + p, EK_PF_HINT);
        for (int h = 0; h < 2; h++) {
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dg + 16 * b + 8 * h)));
            const __m256 cw = mg ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(mg + 16 * b + 8 * h)))
                                 : _mm256_mul_ps(dw, noff);
            __m256i wv[8];
            if (BITS == 4) {
                for (int j = 0; j < 4; j++) {
                    const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 64 * j + 32 * h));
                    wv[j] = _mm256_and_si256(v, lo4);
                    wv[j + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
                }
            } else {
                for (int j = 0; j < 8; j++) {
                    wv[j] = _mm256_loadu_si256((const __m256i *)(qs + 64 * j + 32 * h));
                    if (signed8) wv[j] = _mm256_xor_si256(wv[j], bias);
                }
            }
            for (int i = 0; i < MR; i++) {
                const int8_t *xq = c->xq + (size_t)(m0 + i) * Kp + (size_t)s * 32;
                __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
                for (int j = 0; j < 8; j += 2) {
                    __m256i x0 = _mm256_set1_epi32(ek_ld32(xq + 4 * j));
                    __m256i x1 = _mm256_set1_epi32(ek_ld32(xq + 4 * j + 4));
                    if (signed8) {
                        a0 = EK_DOT(a0, _mm256_abs_epi8(wv[j]), _mm256_sign_epi8(x0, wv[j]));
                        a1 = EK_DOT(a1, _mm256_abs_epi8(wv[j + 1]), _mm256_sign_epi8(x1, wv[j + 1]));
                    } else {
                        a0 = EK_DOT(a0, wv[j], x0);
                        a1 = EK_DOT(a1, wv[j + 1], x1);
                    }
                }
                const size_t xi = (size_t)(m0 + i) * S + s;
                const __m256 sc = _mm256_mul_ps(dw, _mm256_set1_ps(c->dx[xi]));
                acc[i][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a0, a1)), sc, acc[i][h]);
                acc[i][h] = _mm256_fmadd_ps(cw, _mm256_set1_ps(c->cs[xi]), acc[i][h]);
            }
        }
    }
    for (int i = 0; i < MR; i++) {
        _mm256_storeu_ps(out + 16 * i, acc[i][0]);
        _mm256_storeu_ps(out + 16 * i + 8, acc[i][1]);
    }
}
#undef EK_DOT

#if !EK_VNNI
/* Exact fp32 path, 256-bit: like tile512f, rows 0-7 and 8-15 handled as two halves.
 * Two partial sums per (row, half) when MR <= 2 keep the FMA chains short for decode. */
static inline __attribute__((always_inline)) EK_T256 void
tile256f(const ek_ctx *c, int g, int m0, const int MR, const int BITS, float *out)
{
    const ek_weight *w = c->w;
    const int S = c->S, spb = w->spb, Kp = c->Kp;
    const int P = MR <= 2 ? 2 : 1;
    const size_t sub = BITS == 4 ? 256 : 512;
    const uint8_t *qs = w->q + (size_t)g * S * sub;
    const uint16_t *dg = w->d + (size_t)g * w->nblk * 16;
    const uint16_t *mg = w->m ? w->m + (size_t)g * w->nblk * 16 : NULL;
    const __m256i mask = _mm256_set1_epi32(BITS == 4 ? 0x0F : 0xFF);
    const __m256 off = _mm256_set1_ps((float)w->offset);
    __m256 acc[EK_MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int s = 0; s < S; s++, qs += sub) {
        const int b = s / spb;
        for (size_t p = 0; p < sub; p += 64) _mm_prefetch((const char *)qs + EK_PF + p, EK_PF_HINT);
        for (int h = 0; h < 2; h++) {
            __m256 dot[EK_MR][2];
            for (int i = 0; i < MR; i++) dot[i][0] = dot[i][1] = _mm256_setzero_ps();
            for (int j = 0; j < (BITS == 4 ? 4 : 8); j++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 64 * j + 32 * h));
                for (int t = 0; t < 4; t++)
                    for (int hh = 0; hh < (BITS == 4 ? 2 : 1); hh++) {
                        const int k = 16 * hh + 4 * j + t;
                        const __m256 wf = _mm256_sub_ps(
                            _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, 8 * t + 4 * hh), mask)), off);
                        for (int i = 0; i < MR; i++) {
                            const float xk = c->xf[(size_t)(m0 + i) * Kp + (size_t)s * 32 + k];
                            const int pi = P == 2 ? (t & 1) : 0;
                            dot[i][pi] = _mm256_fmadd_ps(wf, _mm256_set1_ps(xk), dot[i][pi]);
                        }
                    }
            }
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dg + 16 * b + 8 * h)));
            const __m256 mw = mg ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(mg + 16 * b + 8 * h)))
                                 : _mm256_setzero_ps();
            for (int i = 0; i < MR; i++) {
                const __m256 d = P == 2 ? _mm256_add_ps(dot[i][0], dot[i][1]) : dot[i][0];
                acc[i][h] = _mm256_fmadd_ps(dw, d, acc[i][h]);
                acc[i][h] = _mm256_fmadd_ps(mw, _mm256_set1_ps(c->xs[(size_t)(m0 + i) * S + s]), acc[i][h]);
            }
        }
    }
    for (int i = 0; i < MR; i++) {
        _mm256_storeu_ps(out + 16 * i, acc[i][0]);
        _mm256_storeu_ps(out + 16 * i + 8, acc[i][1]);
    }
}
#endif
