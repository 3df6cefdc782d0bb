/* Exact fp32-activation tile in plain C, written so compilers vectorize it over the 16
 * rows: each 64-byte line is read as 16 uint32 lanes (one per row) holding 4 codes, so
 * a shift and a mask give 16 rows' codes for one k (the same trick as the AVX-512 tile).
 * Included once per target ISA with EK_TARGET / EK_NAME defined. */
static EK_TARGET void EK_NAME(const ek_ctx *c, int g, int m0, int mr, float *out)
{
    const ek_weight *w = c->w;
    const int S = c->S, spb = w->spb, bits = w->bits;
    const size_t sub = bits == 4 ? 256 : 512;
    const uint8_t *qg = w->q + (size_t)g * S * sub;
    const uint16_t *dg = w->d + (size_t)g * w->nblk * 16;
    const uint16_t *mg = w->m ? w->m + (size_t)g * w->nblk * 16 : NULL;
    const float off = (float)w->offset;
    const uint32_t mask = bits == 4 ? 0x0Fu : 0xFFu;
    const int lines = bits == 4 ? 4 : 8, halves = bits == 4 ? 2 : 1;
    float acc[EK_MR][16], dv[16], mv[16], dot[EK_MR][16], wf[16];
    uint32_t v[16];
    memset(acc, 0, sizeof acc);
    memset(mv, 0, sizeof mv);
    for (int s = 0; s < S; s++) {
        const uint8_t *qs = qg + (size_t)s * sub;
        const int b = s / spb;
        for (int r = 0; r < 16; r++) dv[r] = ek_h2f(dg[b * 16 + r]);
        if (mg)
            for (int r = 0; r < 16; r++) mv[r] = ek_h2f(mg[b * 16 + r]);
        memset(dot, 0, sizeof dot);
        for (int j = 0; j < lines; j++) {
            memcpy(v, qs + 64 * j, 64);
            for (int t = 0; t < 4; t++)
                for (int h = 0; h < halves; h++) {
                    const int k = 16 * h + 4 * j + t, sh = 8 * t + 4 * h;
                    for (int r = 0; r < 16; r++) wf[r] = (float)((v[r] >> sh) & mask) - off;
                    for (int i = 0; i < mr; i++) {
                        const float xk = c->xf[(size_t)(m0 + i) * c->Kp + (size_t)s * 32 + k];
                        for (int r = 0; r < 16; r++) dot[i][r] += xk * wf[r];
                    }
                }
        }
        for (int i = 0; i < mr; i++) {
            const float xsum = c->xs[(size_t)(m0 + i) * S + s];
            for (int r = 0; r < 16; r++) acc[i][r] += dv[r] * dot[i][r];
            for (int r = 0; r < 16; r++) acc[i][r] += mv[r] * xsum;
        }
    }
    for (int i = 0; i < mr; i++) memcpy(out + 16 * i, acc[i], sizeof acc[i]);
}
