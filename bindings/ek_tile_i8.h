/* Portable int8-activation tile (integer block dot products, float accumulation), in
 * the same vectorizable lane form as ek_tile_f32.h; included once per target ISA with
 * EK_TARGET / EK_NAME defined. */
static EK_TARGET void EK_NAME(const ek_ctx *c, int g, int m0, int mr, float *out)
{
    const ek_weight *w = c->w;
    const int S = c->S, spb = w->spb, bits = w->bits;
    const size_t sub = bits == 4 ? 256 : 512;
    const uint8_t *qg = w->q + (size_t)g * S * sub;
    const uint16_t *dg = w->d + (size_t)g * w->nblk * 16;
    const uint16_t *mg = w->m ? w->m + (size_t)g * w->nblk * 16 : NULL;
    const float noff = -(float)w->offset;
    const uint32_t mask = bits == 4 ? 0x0Fu : 0xFFu;
    const int lines = bits == 4 ? 4 : 8, halves = bits == 4 ? 2 : 1;
    float acc[EK_MR][16], dv[16], cv[16];
    int32_t dot[EK_MR][16], wq[16];
    uint32_t v[16];
    memset(acc, 0, sizeof acc);
    for (int s = 0; s < S; s++) {
        const uint8_t *qs = qg + (size_t)s * sub;
        const int b = s / spb;
        for (int r = 0; r < 16; r++) dv[r] = ek_h2f(dg[b * 16 + r]);
        for (int r = 0; r < 16; r++) cv[r] = mg ? ek_h2f(mg[b * 16 + r]) : dv[r] * noff;
        memset(dot, 0, sizeof dot);
        for (int j = 0; j < lines; j++) {
            memcpy(v, qs + 64 * j, 64);
            for (int t = 0; t < 4; t++)
                for (int h = 0; h < halves; h++) {
                    const int k = 16 * h + 4 * j + t, sh = 8 * t + 4 * h;
                    for (int r = 0; r < 16; r++) wq[r] = (int32_t)((v[r] >> sh) & mask);
                    for (int i = 0; i < mr; i++) {
                        const int32_t xk = c->xq[(size_t)(m0 + i) * c->Kp + (size_t)s * 32 + k];
                        for (int r = 0; r < 16; r++) dot[i][r] += xk * wq[r];
                    }
                }
        }
        for (int i = 0; i < mr; i++) {
            const size_t xi = (size_t)(m0 + i) * S + s;
            const float sx = c->dx[xi], csum = c->cs[xi];
            for (int r = 0; r < 16; r++) acc[i][r] += (float)dot[i][r] * (dv[r] * sx);
            for (int r = 0; r < 16; r++) acc[i][r] += cv[r] * csum;
        }
    }
    for (int i = 0; i < mr; i++) memcpy(out + 16 * i, acc[i], sizeof acc[i]);
}
