/* Exact fp32-activation tile, written so the compiler vectorizes the 16-row inner
 * loops; included once per target ISA with EK_TARGET / EK_NAME defined. */
static EK_TARGET void EK_NAME(const ek_ctx *c, int g, int m0, int mr, float *out)
{
    const ek_weight *w = c->w;
    const int S = c->S, spb = w->spb, bits = w->bits;
    const size_t sub = bits == 4 ? 256 : 512;
    const uint8_t *qg = w->q + (size_t)g * S * sub;
    const uint16_t *dg = w->d + (size_t)g * w->nblk * 16;
    const uint16_t *mg = w->m ? w->m + (size_t)g * w->nblk * 16 : NULL;
    const float off = (float)w->offset;
    float acc[EK_MR][16], wf[32][16], dv[16], mv[16], dot[16];
    memset(acc, 0, sizeof acc);
    memset(mv, 0, sizeof mv);
    for (int s = 0; s < S; s++) {
        const uint8_t *qs = qg + (size_t)s * sub;
        if (bits == 4) {
            for (int j = 0; j < 4; j++)
                for (int r = 0; r < 16; r++)
                    for (int t = 0; t < 4; t++) {
                        const uint8_t b = qs[64 * j + 4 * r + t];
                        wf[4 * j + t][r] = (float)(b & 15) - off;
                        wf[16 + 4 * j + t][r] = (float)(b >> 4) - off;
                    }
        } else {
            for (int j = 0; j < 8; j++)
                for (int r = 0; r < 16; r++)
                    for (int t = 0; t < 4; t++)
                        wf[4 * j + t][r] = (float)qs[64 * j + 4 * r + t] - off;
        }
        const int b = s / spb;
        for (int r = 0; r < 16; r++) dv[r] = ek_h2f(dg[b * 16 + r]);
        if (mg)
            for (int r = 0; r < 16; r++) mv[r] = ek_h2f(mg[b * 16 + r]);
        for (int i = 0; i < mr; i++) {
            const float *xv = c->xf + (size_t)(m0 + i) * c->Kp + (size_t)s * 32;
            const float xsum = c->xs[(size_t)(m0 + i) * S + s];
            for (int r = 0; r < 16; r++) dot[r] = 0.0f;
            for (int k = 0; k < 32; k++) {
                const float xk = xv[k];
                for (int r = 0; r < 16; r++) dot[r] += xk * wf[k][r];
            }
            for (int r = 0; r < 16; r++) acc[i][r] += dv[r] * dot[r];
            for (int r = 0; r < 16; r++) acc[i][r] += mv[r] * xsum;
        }
    }
    for (int i = 0; i < mr; i++) memcpy(out + 16 * i, acc[i], sizeof acc[i]);
}
