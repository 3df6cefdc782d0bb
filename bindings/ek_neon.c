/* AArch64 path: NEON is part of the base ISA there (its feature is still checked through HWCAP,
 * like every path's).  Built everywhere; only its table entry off AArch64.  (Not exercised by CI on x86; keep it simple.) */
#include "ek_internal.h"
#if defined(__aarch64__)
#include <arm_neon.h>

/* Four rows' 4-code dot products from 16 weight bytes (rows r..r+3 x 4 codes)
 * against one activation quad: widening multiplies, then pairwise adds. */
static inline int32x4_t dot4rows(int8x16_t wv, int8x16_t xv)
{
    const int16x8_t lo = vmull_s8(vget_low_s8(wv), vget_low_s8(xv));
    const int16x8_t hi = vmull_s8(vget_high_s8(wv), vget_high_s8(xv));
    return vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi));
}

static void tile_i8_neon(const ek_ctx *c, int g, int m0, int mr, float *out)
{
    const ek_weight *w = c->w;
    const int S = c->S, spb = w->spb, Kp = c->Kp, bits = w->bits;
    const size_t sub = bits == 4 ? 256 : 512;
    const uint8_t *qg = w->q + (size_t)g * S * sub;
    const uint16_t *dg = w->d + (size_t)g * w->nblk * 16;
    const uint16_t *mg = w->m ? w->m + (size_t)g * w->nblk * 16 : NULL;
    /* 8-bit codes are used signed (xor 0x80), so only 4-bit sym needs the offset term */
    const float off = bits == 8 ? 0.0f : (float)w->offset;
    const uint8x16_t lo4 = vdupq_n_u8(0x0F), b80 = vdupq_n_u8(0x80);
    float32x4_t acc[EK_MR][4];
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < 4; q++) acc[i][q] = vdupq_n_f32(0.0f);
    for (int s = 0; s < S; s++) {
        const uint8_t *qs = qg + (size_t)s * sub;
        const int b = s / spb;
        float dv[16], cv[16];
        for (int r = 0; r < 16; r++) {
            dv[r] = ek_h2f(dg[16 * b + r]);
            cv[r] = mg ? ek_h2f(mg[16 * b + r]) : -off * dv[r];
        }
        for (int q = 0; q < 4; q++) { /* rows 4q..4q+3 */
            int8x16_t wv[8];
            for (int j = 0; j < (bits == 4 ? 4 : 8); j++) {
                const uint8x16_t v = vld1q_u8(qs + 64 * j + 16 * q);
                if (bits == 4) {
                    wv[j] = vreinterpretq_s8_u8(vandq_u8(v, lo4));
                    wv[j + 4] = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
                } else {
                    wv[j] = vreinterpretq_s8_u8(veorq_u8(v, b80));
                }
            }
            const float32x4_t dq = vld1q_f32(dv + 4 * q), cq = vld1q_f32(cv + 4 * q);
            for (int i = 0; i < mr; i++) {
                const int8_t *xq = c->xq + (size_t)(m0 + i) * Kp + (size_t)s * 32;
                int32x4_t a = vdupq_n_s32(0);
                for (int j = 0; j < 8; j++)
                    a = vaddq_s32(a, dot4rows(wv[j], vreinterpretq_s8_s32(vdupq_n_s32(ek_ld32(xq + 4 * j)))));
                const size_t xi = (size_t)(m0 + i) * S + s;
                acc[i][q] = vfmaq_f32(acc[i][q], vcvtq_f32_s32(a), vmulq_n_f32(dq, c->dx[xi]));
                acc[i][q] = vfmaq_n_f32(acc[i][q], cq, c->cs[xi]);
            }
        }
    }
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < 4; q++) vst1q_f32(out + 16 * i + 4 * q, acc[i][q]);
}

#define NEON(f) f
#define BUILT 1
#else
#define NEON(f) NULL
#define BUILT 0
#endif

/* the exact fp32 path uses the portable tile, which compilers vectorize for NEON themselves */
const ek_path ek_neon_path = {"neon", "neon", BUILT, {NEON(tile_i8_neon), NEON(tile_i8_neon)}, {NULL, NULL},
                              {NULL, NULL}, NULL, {NULL, NULL}, NULL};
