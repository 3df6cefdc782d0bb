/* Row kernel over GGUF-native blocks, in plain C that compilers vectorize; included once per
 * target ISA with EK_TARGET (its target attribute), EK_LINK (static or empty) and EK_NAME defined. Each block is decoded once
 * per tile of EK_MR activation rows; sums run per sub-block in integers (int8 path) or floats.
 * The body is instantiated per (sub-block size, has mins, int8 activations) so every inner loop
 * has a constant trip count. */
#define EK_BODY_NAME EK_CAT(EK_NAME, _body)
#define EK_CAT(a, b) EK_CAT2(a, b)
#define EK_CAT2(a, b) a##b

static inline __attribute__((always_inline)) EK_TARGET void
EK_BODY_NAME(const ek_bctx *c, int r0, int r1, const int SUBN, const int HAS_MIN, const int A8)
{
    const ek_btype *t = c->t;
    const int B = t->block, ns = B / SUBN, nblk = c->k / B, S = c->k / c->ab;
    const size_t row_bytes = (size_t)nblk * t->nbytes;
    int8_t q[EK_QK_K] __attribute__((aligned(32)));
    uint8_t blk[EK_QK_K];
    float sc[EK_QK_K / 16], mn[EK_QK_K / 16];
    for (int s = 0; s < ns; s++) mn[s] = 0.0f;
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = c->w + (size_t)r * row_bytes;
        for (int i0 = 0; i0 < c->M; i0 += EK_MR) {
            const int mt = c->M - i0 < EK_MR ? c->M - i0 : EK_MR;
            float acc[EK_MR] = {0};
            for (int b = 0; b < nblk; b++) {
                t->decode(c->rows8 ? ek_rows8_block(c, r, b, blk) : row + (size_t)b * t->nbytes, q, sc, mn);
                const size_t e0 = (size_t)b * B;
                for (int i = 0; i < mt; i++) {
                    float a = 0.0f;
                    if (A8) {
                        const int8_t *xq = c->xq + (size_t)(i0 + i) * c->k + e0;
                        const float *dx = c->dx + (size_t)(i0 + i) * S + e0 / c->ab;
                        for (int s = 0; s < ns; s++) {
                            int32_t dot = 0, xs = 0;
                            for (int e = 0; e < SUBN; e++) dot += (int32_t)q[s * SUBN + e] * xq[s * SUBN + e];
                            const float d = dx[s * SUBN / c->ab];
                            a += sc[s] * (d * (float)dot);
                            if (HAS_MIN) {
                                for (int e = 0; e < SUBN; e++) xs += xq[s * SUBN + e];
                                a += mn[s] * (d * (float)xs);
                            }
                        }
                    } else {
                        const float *xf = c->xf + (size_t)(i0 + i) * c->k + e0;
                        for (int s = 0; s < ns; s++) {
                            float dot = 0.0f, xs = 0.0f;
                            for (int e = 0; e < SUBN; e++) dot += (float)q[s * SUBN + e] * xf[s * SUBN + e];
                            a += sc[s] * dot;
                            if (HAS_MIN) {
                                for (int e = 0; e < SUBN; e++) xs += xf[s * SUBN + e];
                                a += mn[s] * xs;
                            }
                        }
                    }
                    acc[i] += a;
                }
            }
            for (int i = 0; i < mt; i++) c->y[(size_t)(i0 + i) * c->ldy + r] = acc[i];
        }
    }
}

EK_LINK EK_TARGET void EK_NAME(const ek_bctx *c, int r0, int r1)
{
    const int key = (c->t->sub == 16) << 2 | c->t->has_min << 1 | c->act_int8;
    switch (key) {
    case 0: EK_BODY_NAME(c, r0, r1, 32, 0, 0); break;
    case 1: EK_BODY_NAME(c, r0, r1, 32, 0, 1); break;
    case 2: EK_BODY_NAME(c, r0, r1, 32, 1, 0); break;
    case 3: EK_BODY_NAME(c, r0, r1, 32, 1, 1); break;
    case 4: EK_BODY_NAME(c, r0, r1, 16, 0, 0); break;
    case 5: EK_BODY_NAME(c, r0, r1, 16, 0, 1); break;
    case 6: EK_BODY_NAME(c, r0, r1, 16, 1, 0); break;
    default: EK_BODY_NAME(c, r0, r1, 16, 1, 1); break;
    }
}
#undef EK_BODY_NAME
