/* Portable int8-activation tile (integer block dot products, float accumulation);
 * included once per target ISA with EK_TARGET / EK_NAME defined. */
static EK_TARGET void EK_NAME(const ek_ctx *c, int g, int m0, int mr, float *out)
{
    const ek_weight *w = c->w;
    const int S = c->S, spb = w->spb, bits = w->bits;
    const size_t sub = bits == 4 ? 256 : 512;
    const uint8_t *qg = w->q + (size_t)g * S * sub;
    const uint16_t *dg = w->d + (size_t)g * w->nblk * 16;
    const uint16_t *mg = w->m ? w->m + (size_t)g * w->nblk * 16 : NULL;
    const float noff = -(float)w->offset;
    float acc[EK_MR][16], dv[16], cv[16];
    int32_t wq[32][16], dot[16];
    memset(acc, 0, sizeof acc);
    for (int s = 0; s < S; s++) {
        const uint8_t *qs = qg + (size_t)s * sub;
        if (bits == 4) {
            for (int j = 0; j < 4; j++)
                for (int r = 0; r < 16; r++)
                    for (int t = 0; t < 4; t++) {
                        const uint8_t b = qs[64 * j + 4 * r + t];
                        wq[4 * j + t][r] = b & 15;
                        wq[16 + 4 * j + t][r] = b >> 4;
                    }
        } else {
            for (int j = 0; j < 8; j++)
                for (int r = 0; r < 16; r++)
                    for (int t = 0; t < 4; t++) wq[4 * j + t][r] = qs[64 * j + 4 * r + t];
        }
        const int b = s / spb;
        for (int r = 0; r < 16; r++) dv[r] = ek_h2f(dg[b * 16 + r]);
        for (int r = 0; r < 16; r++) cv[r] = mg ? ek_h2f(mg[b * 16 + r]) : dv[r] * noff;
        for (int i = 0; i < mr; i++) {
            const int8_t *xv = c->xq + (size_t)(m0 + i) * c->Kp + (size_t)s * 32;
            const float sx = c->dx[(size_t)(m0 + i) * S + s];
            const float csum = c->cs[(size_t)(m0 + i) * S + s];
            for (int r = 0; r < 16; r++) dot[r] = 0;
            for (int k = 0; k < 32; k++) {
                const int32_t xk = xv[k];
                for (int r = 0; r < 16; r++) dot[r] += xk * wq[k][r];
            }
            for (int r = 0; r < 16; r++) acc[i][r] += (float)dot[r] * (dv[r] * sx);
            for (int r = 0; r < 16; r++) acc[i][r] += cv[r] * csum;
        }
    }
    for (int i = 0; i < mr; i++) memcpy(out + 16 * i, acc[i], sizeof acc[i]);
}
