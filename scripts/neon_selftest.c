/* Cross-check of the kernels on a foreign ISA (AArch64 NEON under qemu-user): the best
 * runnable SIMD path must match the portable path on random weights.
 * Built and run by scripts/neon_selftest.sh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ekern.h"

static unsigned long long rs = 88172645463325252ull;
static unsigned rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (unsigned)rs; }

int main(void)
{
    int fails = 0;
    /* the NEON path must be detected (HWCAP) and chosen: a portable-vs-portable run proves nothing */
    if (strcmp(ek_path_name(ek_path_best()), "neon") != 0) {
        printf("FAIL best path is %s, not neon\n", ek_path_name(ek_path_best()));
        return 1;
    }
    const int shapes[][3] = {{1, 16, 32}, {3, 37, 100}, {5, 70, 64}, {9, 33, 200}};
    for (int si = 0; si < 4; si++)
        for (int bits = 4; bits <= 8; bits += 4)
            for (int asym = 0; asym <= (bits == 4); asym++) {
                const int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
                const int G = (N + 15) / 16, S = (K + 31) / 32, sub = bits == 4 ? 256 : 512;
                unsigned char *q = malloc((size_t)G * S * sub);
                unsigned short *d = malloc((size_t)G * S * 16 * 2), *mn = malloc((size_t)G * S * 16 * 2);
                float *x = malloc(sizeof(float) * M * K), *y0 = malloc(sizeof(float) * M * N),
                      *y1 = malloc(sizeof(float) * M * N);
                for (int i = 0; i < G * S * sub; i++) q[i] = (unsigned char)rnd();
                for (int i = 0; i < G * S * 16; i++) {
                    d[i] = (unsigned short)(0x2000 + rnd() % 0x1000);   /* small positive fp16 */
                    mn[i] = (unsigned short)(0xA000 + rnd() % 0x1000);  /* small negative fp16 */
                }
                for (int i = 0; i < M * K; i++) x[i] = (float)((int)(rnd() % 2001) - 1000) / 300.0f;
                ek_weight w = {q, d, asym ? mn : NULL, N, K, bits, S, 1, asym ? 0 : (bits == 4 ? 8 : 128)};
                for (int act = 0; act <= 1; act++) {
                    ek_path_set(ek_path_count() - 1); /* portable */
                    ek_matmul(&w, x, M, y0, act, 1);
                    const int lvl = ek_path_set(ek_path_best());
                    ek_matmul(&w, x, M, y1, act, 2);
                    double worst = 0;
                    for (int i = 0; i < M * N; i++) {
                        const double e = fabs((double)y0[i] - y1[i]) / (fabs((double)y0[i]) + 1.0);
                        if (e > worst) worst = e;
                    }
                    const int bad = !(worst < 1e-4);
                    fails += bad;
                    printf("%s M=%d N=%d K=%d bits=%d %s act=%s: %s vs portable max rel %.2e\n", bad ? "FAIL" : "ok  ",
                           M, N, K, bits, asym ? "asym" : "sym", act ? "int8" : "f32", ek_path_name(lvl), worst);
                }
                free(q); free(d); free(mn); free(x); free(y0); free(y1);
            }
    printf("%s\n", fails ? "NEON selftest FAILED" : "NEON selftest passed");
    return fails != 0;
}
