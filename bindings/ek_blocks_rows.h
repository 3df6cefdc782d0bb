/* Row kernel over GGUF-native blocks, in plain C that compilers vectorize; included once per
 * target ISA with EK_TARGET / EK_NAME defined (like ek_tile_f32.h). Each block is decoded once
 * per tile of EK_MR activation rows; sums run per sub-block in integers (int8 path) or floats. */
EK_TARGET void EK_NAME(const ek_bctx *c, int r0, int r1)
{
    const ek_btype *t = c->t;
    const int B = t->block, sub = t->sub, ns = B / sub, nblk = c->k / B, S = c->k / 32;
    const size_t row_bytes = (size_t)nblk * t->nbytes;
    int8_t q[EK_QK_K];
    float sc[EK_QK_K / 16], mn[EK_QK_K / 16];
    for (int s = 0; s < ns; s++) mn[s] = 0.0f;
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = c->w + (size_t)r * row_bytes;
        for (int i0 = 0; i0 < c->M; i0 += EK_MR) {
            const int mt = c->M - i0 < EK_MR ? c->M - i0 : EK_MR;
            float acc[EK_MR] = {0};
            for (int b = 0; b < nblk; b++) {
                t->decode(row + (size_t)b * t->nbytes, q, sc, mn);
                for (int i = 0; i < mt; i++) {
                    const size_t e0 = (size_t)b * B;
                    float a = 0.0f;
                    if (c->act_int8) {
                        const int8_t *xq = c->xq + (size_t)(i0 + i) * c->k + e0;
                        const float *dx = c->dx + (size_t)(i0 + i) * S + e0 / 32;
                        for (int s = 0; s < ns; s++) {
                            int32_t dot = 0, xs = 0;
                            for (int e = 0; e < sub; e++) dot += (int32_t)q[s * sub + e] * xq[s * sub + e];
                            for (int e = 0; e < sub; e++) xs += xq[s * sub + e];
                            const float d = dx[s * sub / 32];
                            a += sc[s] * (d * (float)dot) + mn[s] * (d * (float)xs);
                        }
                    } else {
                        const float *xf = c->xf + (size_t)(i0 + i) * c->k + e0;
                        for (int s = 0; s < ns; s++) {
                            float dot = 0.0f, xs = 0.0f;
                            for (int e = 0; e < sub; e++) dot += (float)q[s * sub + e] * xf[s * sub + e];
                            for (int e = 0; e < sub; e++) xs += xf[s * sub + e];
                            a += sc[s] * dot + mn[s] * xs;
                        }
                    }
                    acc[i] += a;
                }
            }
            for (int i = 0; i < mt; i++) c->y[(size_t)(i0 + i) * c->ldy + r] = acc[i];
        }
    }
}
