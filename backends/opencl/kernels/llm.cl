/* OpenCL C kernels of the LLM forward pass (OpenCL C 1.2, no extensions).
 *
 * Written for mobile GPUs (Adreno, Mali) first: weights are stored struct-of-arrays (packed nibbles
 * or int8 codes in one buffer, fp16 block scales in another) so a block's codes are one aligned
 * 16- or 32-byte vector load and scales are read with vload_half (no cl_khr_fp16 needed); GEMV rows
 * are reduced in local memory by a few lanes each, so several rows share one work-group; GEMM (prompt
 * processing) stages 16x32 tiles of activations and dequantized weights in local memory.
 *
 * Weight formats: Q4_0 (d * (q - 8)), Q4_1 (d * q + m), Q8_0 (d * q), F32 (plain floats; F16 files are
 * widened on upload), and for every other type of edgesdk's quant-type table (K-quants, Q5_0/Q5_1,
 * IQ4_NL) its decoded form: I8F (int8 codes, a float scale and min per 32: s * q + m) for types whose
 * sub-blocks are 32 wide, I8F2 (two of each per 32, one per 16 elements) for 16-wide ones. Those two
 * read d and m as float arrays through the same half pointers. Blocks of 32 along K; GGUF's nibble order: byte j holds element j (low nibble)
 * and element j + 16 (high nibble). Every format kernel has the same signature, (qs, d, m, ...), where
 * d/m are unused by the formats that have no scale/min.
 *
 * Activations are fp32 throughout, accumulation fp32: the arithmetic of the CPU backend's exact path.
 */

#ifndef GEMV_MAX_WG
#define GEMV_MAX_WG 256 /* largest GEMV work-group (lanes x rows), chosen per device at launch */
#endif
#ifndef RED_LS
#define RED_LS 64 /* work-group size of row reductions (RMSNorm, attention) */
#endif
#ifndef MAX_HD
#define MAX_HD 256 /* largest head dimension attention supports */
#endif
#define TILE 16 /* GEMM tile: 16 x 16 outputs; one packed Q4 block row is 16 bytes */

inline float hsum16(float16 v)
{
    const float8 a = v.lo + v.hi;
    const float4 b = a.lo + a.hi;
    return (b.s0 + b.s1) + (b.s2 + b.s3);
}

/* --- one block (32 weights) times 32 activations ------------------------------------------------ */

inline float dot_Q4_0(global const uchar *qs, global const half *d, global const half *m, size_t blk, global const float *x)
{
    const uchar16 q = vload16(blk, qs);
    const float16 lo = convert_float16(q & (uchar16)(0x0F)) - 8.0f;
    const float16 hi = convert_float16(q >> (uchar16)(4)) - 8.0f;
    return vload_half(blk, d) * hsum16(lo * vload16(0, x) + hi * vload16(1, x));
}

inline float dot_Q4_1(global const uchar *qs, global const half *d, global const half *m, size_t blk, global const float *x)
{
    const uchar16 q = vload16(blk, qs);
    const float16 x0 = vload16(0, x), x1 = vload16(1, x);
    const float16 lo = convert_float16(q & (uchar16)(0x0F));
    const float16 hi = convert_float16(q >> (uchar16)(4));
    return vload_half(blk, d) * hsum16(lo * x0 + hi * x1) + vload_half(blk, m) * hsum16(x0 + x1);
}

inline float dot_Q8_0(global const uchar *qs, global const half *d, global const half *m, size_t blk, global const float *x)
{
    global const char *c = (global const char *)qs;
    const float16 a = convert_float16(vload16(2 * blk, c));
    const float16 b = convert_float16(vload16(2 * blk + 1, c));
    return vload_half(blk, d) * hsum16(a * vload16(0, x) + b * vload16(1, x));
}

inline float dot_F32(global const uchar *qs, global const half *d, global const half *m, size_t blk, global const float *x)
{
    global const float *w = (global const float *)qs;
    return hsum16(vload16(2 * blk, w) * vload16(0, x) + vload16(2 * blk + 1, w) * vload16(1, x));
}

inline float dot_I8F(global const uchar *qs, global const half *d, global const half *m, size_t blk, global const float *x)
{
    global const char *c = (global const char *)qs;
    const float16 x0 = vload16(0, x), x1 = vload16(1, x);
    const float16 a = convert_float16(vload16(2 * blk, c)), b = convert_float16(vload16(2 * blk + 1, c));
    return ((global const float *)d)[blk] * hsum16(a * x0 + b * x1) + ((global const float *)m)[blk] * hsum16(x0 + x1);
}

inline float dot_I8F2(global const uchar *qs, global const half *d, global const half *m, size_t blk, global const float *x)
{
    global const char *c = (global const char *)qs;
    global const float *s = (global const float *)d + 2 * blk, *mn = (global const float *)m + 2 * blk;
    const float16 x0 = vload16(0, x), x1 = vload16(1, x);
    const float16 a = convert_float16(vload16(2 * blk, c)), b = convert_float16(vload16(2 * blk + 1, c));
    return s[0] * hsum16(a * x0) + s[1] * hsum16(b * x1) + mn[0] * hsum16(x0) + mn[1] * hsum16(x1);
}

/* --- elements j and j + 16 (j < 16) of one block, dequantized (GEMM tile loads) ----------------- */

inline float2 pair_Q4_0(global const uchar *qs, global const half *d, global const half *m, size_t blk, int j)
{
    const uchar q = qs[blk * 16 + j];
    return vload_half(blk, d) * ((float2)((float)(q & 0x0F), (float)(q >> 4)) - 8.0f);
}

inline float2 pair_Q4_1(global const uchar *qs, global const half *d, global const half *m, size_t blk, int j)
{
    const uchar q = qs[blk * 16 + j];
    return vload_half(blk, d) * (float2)((float)(q & 0x0F), (float)(q >> 4)) + vload_half(blk, m);
}

inline float2 pair_Q8_0(global const uchar *qs, global const half *d, global const half *m, size_t blk, int j)
{
    global const char *c = (global const char *)qs + blk * 32;
    return vload_half(blk, d) * (float2)((float)c[j], (float)c[j + 16]);
}

inline float2 pair_F32(global const uchar *qs, global const half *d, global const half *m, size_t blk, int j)
{
    global const float *w = (global const float *)qs + blk * 32;
    return (float2)(w[j], w[j + 16]);
}

inline float2 pair_I8F(global const uchar *qs, global const half *d, global const half *m, size_t blk, int j)
{
    global const char *c = (global const char *)qs + blk * 32;
    return ((global const float *)d)[blk] * (float2)((float)c[j], (float)c[j + 16]) + ((global const float *)m)[blk];
}

inline float2 pair_I8F2(global const uchar *qs, global const half *d, global const half *m, size_t blk, int j)
{
    global const char *c = (global const char *)qs + blk * 32;
    global const float *s = (global const float *)d + 2 * blk, *mn = (global const float *)m + 2 * blk;
    return (float2)(s[0] * (float)c[j] + mn[0], s[1] * (float)c[j + 16] + mn[1]);
}

/* --- one block as 32 floats: elements 0..15 in lo, 16..31 in hi (register-tiled GEMM) ------------ */

inline void deq_Q4_0(global const uchar *qs, global const half *d, global const half *m, size_t blk, float16 *lo, float16 *hi)
{
    const uchar16 q = vload16(blk, qs);
    const float s = vload_half(blk, d);
    *lo = (convert_float16(q & (uchar16)(0x0F)) - 8.0f) * s;
    *hi = (convert_float16(q >> (uchar16)(4)) - 8.0f) * s;
}

inline void deq_Q4_1(global const uchar *qs, global const half *d, global const half *m, size_t blk, float16 *lo, float16 *hi)
{
    const uchar16 q = vload16(blk, qs);
    const float s = vload_half(blk, d), mn = vload_half(blk, m);
    *lo = convert_float16(q & (uchar16)(0x0F)) * s + mn;
    *hi = convert_float16(q >> (uchar16)(4)) * s + mn;
}

inline void deq_Q8_0(global const uchar *qs, global const half *d, global const half *m, size_t blk, float16 *lo, float16 *hi)
{
    global const char *c = (global const char *)qs;
    const float s = vload_half(blk, d);
    *lo = convert_float16(vload16(2 * blk, c)) * s;
    *hi = convert_float16(vload16(2 * blk + 1, c)) * s;
}

inline void deq_F32(global const uchar *qs, global const half *d, global const half *m, size_t blk, float16 *lo, float16 *hi)
{
    global const float *w = (global const float *)qs;
    *lo = vload16(2 * blk, w);
    *hi = vload16(2 * blk + 1, w);
}

inline void deq_I8F(global const uchar *qs, global const half *d, global const half *m, size_t blk, float16 *lo, float16 *hi)
{
    global const char *c = (global const char *)qs;
    const float s = ((global const float *)d)[blk], mn = ((global const float *)m)[blk];
    *lo = convert_float16(vload16(2 * blk, c)) * s + mn;
    *hi = convert_float16(vload16(2 * blk + 1, c)) * s + mn;
}

inline void deq_I8F2(global const uchar *qs, global const half *d, global const half *m, size_t blk, float16 *lo, float16 *hi)
{
    global const char *c = (global const char *)qs;
    global const float *s = (global const float *)d + 2 * blk, *mn = (global const float *)m + 2 * blk;
    *lo = convert_float16(vload16(2 * blk, c)) * s[0] + mn[0];
    *hi = convert_float16(vload16(2 * blk + 1, c)) * s[1] + mn[1];
}

/* y[t, y_off + n] (+)= sum_k W[n, k] * x[t, k]. Local size (lanes, rows): `lanes` work-items share one
 * output row (strided over its blocks, then a local-memory tree reduction; a power of two), so a
 * work-group covers `rows` rows. GPUs want 16-64 lanes for memory parallelism; a CPU device wants 1
 * lane and many rows (no reduction, few work-groups). Global size (lanes, N rounded up to rows, M). */
#define GEMV(F)                                                                                                  \
    kernel void gemv_##F(global const uchar *qs, global const half *d, global const half *m,                    \
                         global const float *x, int ldx, global float *y, int ldy, int y_off, int K, int N,     \
                         int accumulate)                                                                         \
    {                                                                                                            \
        local float part[GEMV_MAX_WG];                                                                           \
        const int lanes = get_local_size(0), lane = get_local_id(0);                                             \
        const int slot = get_local_id(1) * lanes, row = get_global_id(1), t = get_global_id(2);                  \
        const int nb = K / 32;                                                                                   \
        global const float *xt = x + (size_t)t * ldx;                                                            \
        global float *o = y + (size_t)t * ldy + y_off + row;                                                     \
        /* The old value is read before any barrier and the store is base + sum: running the tail twice    */  \
        /* (PoCL 3.1 does, for work-item 0, with a local size of 1 in dim 0) cannot accumulate twice.       */  \
        const float base = (accumulate && lane == 0 && row < N) ? *o : 0.0f;                                     \
        float s = 0.0f;                                                                                          \
        if (row < N)                                                                                             \
            for (int b = lane; b < nb; b += lanes) s += dot_##F(qs, d, m, (size_t)row * nb + b, xt + 32 * b);    \
        part[slot + lane] = s;                                                                                   \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                            \
        for (int w = lanes / 2; w > 0; w >>= 1) {                                                                \
            if (lane < w) part[slot + lane] += part[slot + lane + w];                                            \
            barrier(CLK_LOCAL_MEM_FENCE);                                                                        \
        }                                                                                                        \
        s = part[slot];                                                                                          \
        if (lane == 0 && row < N) *o = base + s;                                                                 \
    }

/* Y[t, y_off + n] (+)= sum_k W[n, k] * X[t, k] for many rows t. Global size (N, M) rounded up to TILE. */
#define GEMM(F)                                                                                                  \
    kernel __attribute__((reqd_work_group_size(TILE, TILE, 1))) void gemm_##F(                                   \
        global const uchar *qs, global const half *d, global const half *m, global const float *x, int ldx,      \
        global float *y, int ldy, int y_off, int K, int N, int M, int accumulate)                                \
    {                                                                                                            \
        local float xs[TILE][33];                                                                                \
        local float ws[TILE][33];                                                                                \
        const int tn = get_local_id(0), tm = get_local_id(1);                                                    \
        const int n = get_global_id(0), t = get_global_id(1);                                                    \
        const int xr = get_group_id(1) * TILE + tm, wr = get_group_id(0) * TILE + tm;                             \
        const int nb = K / 32;                                                                                   \
        global float *o = y + (size_t)t * ldy + y_off + n;                                                       \
        const float base = (accumulate && t < M && n < N) ? *o : 0.0f; /* before any barrier, as in GEMV */     \
        float acc = 0.0f;                                                                                        \
        for (int b = 0; b < nb; b++) {                                                                           \
            float2 xv = (float2)(0.0f), wv = (float2)(0.0f);                                                     \
            if (xr < M) {                                                                                        \
                global const float *xp = x + (size_t)xr * ldx + 32 * b;                                          \
                xv = (float2)(xp[tn], xp[tn + 16]);                                                              \
            }                                                                                                    \
            if (wr < N) wv = pair_##F(qs, d, m, (size_t)wr * nb + b, tn);                                        \
            xs[tm][tn] = xv.x;                                                                                   \
            xs[tm][tn + 16] = xv.y;                                                                              \
            ws[tm][tn] = wv.x;                                                                                   \
            ws[tm][tn + 16] = wv.y;                                                                              \
            barrier(CLK_LOCAL_MEM_FENCE);                                                                        \
            for (int k = 0; k < 32; k++) acc = fma(xs[tm][k], ws[tn][k], acc);                                   \
            barrier(CLK_LOCAL_MEM_FENCE);                                                                        \
        }                                                                                                        \
        if (t < M && n < N) *o = base + acc;                                                                     \
    }

/* Register-tiled GEMM: one work-item per output column n and RT_ROWS activation rows, each weight block
 * dequantized once into registers and used RT_ROWS times. No local memory and no barriers: what a
 * CPU-type device (PoCL) runs well, where the local-memory tiles above serialize on barriers.
 * Global size (N, ceil(M / RT_ROWS)). */
#define RT_ROWS 8
#define GEMM_RT(F)                                                                                               \
    kernel void gemm_rt_##F(global const uchar *qs, global const half *d, global const half *m,                 \
                            global const float *x, int ldx, global float *y, int ldy, int y_off, int K, int N,  \
                            int M, int accumulate)                                                               \
    {                                                                                                            \
        const int n = get_global_id(0), t0 = get_global_id(1) * RT_ROWS, nb = K / 32;                           \
        if (n >= N || t0 >= M) return;                                                                           \
        const int rows = min(RT_ROWS, M - t0);                                                                   \
        float acc[RT_ROWS];                                                                                      \
        for (int r = 0; r < RT_ROWS; r++) acc[r] = 0.0f;                                                         \
        for (int b = 0; b < nb; b++) {                                                                           \
            float16 lo, hi;                                                                                      \
            deq_##F(qs, d, m, (size_t)n * nb + b, &lo, &hi);                                                     \
            for (int r = 0; r < rows; r++) {                                                                     \
                global const float *xp = x + (size_t)(t0 + r) * ldx + 32 * b;                                    \
                acc[r] += hsum16(lo * vload16(0, xp) + hi * vload16(1, xp));                                     \
            }                                                                                                    \
        }                                                                                                        \
        for (int r = 0; r < rows; r++) {                                                                         \
            global float *o = y + (size_t)(t0 + r) * ldy + y_off + n;                                            \
            *o = (accumulate ? *o : 0.0f) + acc[r];                                                              \
        }                                                                                                        \
    }

GEMV(Q4_0)
GEMV(Q4_1)
GEMV(Q8_0)
GEMV(F32)
GEMV(I8F)
GEMV(I8F2)
GEMM(Q4_0)
GEMM(Q4_1)
GEMM(Q8_0)
GEMM(F32)
GEMM(I8F)
GEMM(I8F2)
GEMM_RT(Q4_0)
GEMM_RT(Q4_1)
GEMM_RT(Q8_0)
GEMM_RT(F32)
GEMM_RT(I8F)
GEMM_RT(I8F2)

/* out[r] (+)= x[row0 + r] / sqrt(mean(x^2) + eps) * w. One work-group of RED_LS per row. `accumulate`
 * is the post norm of a sandwich-norm block (x is the block output, out the residual stream): one
 * launch instead of a norm into scratch plus an add. */
kernel __attribute__((reqd_work_group_size(RED_LS, 1, 1))) void rms_norm(
    global const float *x, int row0, global const float *w, global float *out, int n, float eps, int accumulate)
{
    local float part[RED_LS];
    const int j = get_local_id(0), r = get_group_id(1);
    global const float *xr = x + (size_t)(row0 + r) * n;
    float s = 0.0f;
    for (int i = j; i < n; i += RED_LS) s = fma(xr[i], xr[i], s);
    part[j] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k = RED_LS / 2; k > 0; k >>= 1) {
        if (j < k) part[j] += part[j + k];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float inv = 1.0f / sqrt(part[0] / (float)n + eps);
    global float *o = out + (size_t)r * n;
    if (accumulate)
        for (int i = j; i < n; i += RED_LS) o[i] += xr[i] * inv * w[i];
    else
        for (int i = j; i < n; i += RED_LS) o[i] = xr[i] * inv * w[i];
}

/* QK-norm, in place: RMS norm of each of the first n_q + n_k heads (hd values) of each qkv row, Q heads
 * with wq and K heads with wk. The head's values are held in registers from before the reduction, so
 * the writes depend on nothing this work-group overwrites. One work-group of RED_LS per (head, row);
 * global size (RED_LS, n_q + n_k, T). */
kernel __attribute__((reqd_work_group_size(RED_LS, 1, 1))) void head_norm(
    global float *qkv, int ld, int hd, int n_q, global const float *wq, global const float *wk, float eps)
{
    local float part[RED_LS];
    const int j = get_local_id(0), h = get_group_id(1), t = get_group_id(2);
    global float *x = qkv + (size_t)t * ld + (size_t)h * hd;
    global const float *w = h < n_q ? wq : wk;
    float v[MAX_HD / RED_LS];
    float s = 0.0f;
    for (int e = 0, i = j; e < MAX_HD / RED_LS && i < hd; e++, i += RED_LS) {
        v[e] = x[i];
        s = fma(v[e], v[e], s);
    }
    part[j] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k = RED_LS / 2; k > 0; k >>= 1) {
        if (j < k) part[j] += part[j + k];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float inv = 1.0f / sqrt(part[0] / (float)hd + eps);
    for (int e = 0, i = j; e < MAX_HD / RED_LS && i < hd; e++, i += RED_LS) x[i] = v[e] * inv * w[i];
}

/* y[t, i] += b[i] (Q/K/V biases). Global size (n, T). */
kernel void add_bias(global float *y, int ld, global const float *b)
{
    const int i = get_global_id(0), t = get_global_id(1);
    y[(size_t)t * ld + i] += b[i];
}

/* Rotate the first n_heads heads of each row of qkv (Q then K are adjacent) by the angles of positions
 * pos0 + t, read from host-computed cos/sin tables (rope_dim / 2 per position): no fp64 on the device.
 * neox pairs (i, i + rope_dim / 2), otherwise adjacent pairs (2i, 2i + 1). Global size (rope_dim / 2, n_heads, T). */
kernel void rope(global float *qkv, int ld, int hd, int rope_dim, int neox, global const float *cs,
                 global const float *sn, int pos0)
{
    const int i = get_global_id(0), h = get_global_id(1), t = get_global_id(2), half_dim = rope_dim / 2;
    global float *x = qkv + (size_t)t * ld + (size_t)h * hd;
    const size_t p = (size_t)(pos0 + t) * half_dim + i;
    const float c = cs[p], s = sn[p];
    const int ia = neox ? i : 2 * i, ib = neox ? i + half_dim : 2 * i + 1;
    const float a = x[ia], b = x[ib];
    x[ia] = a * c - b * s;
    x[ib] = a * s + b * c;
}

/* Append rows' K and V heads to one layer's caches ([kv head][n_ctx][hd]). Global size (hd, n_head_kv, T). */
kernel void kv_store(global const float *qkv, int ld, int nq, int nk, global float *kc, global float *vc, int n_ctx, int pos0)
{
    const int i = get_global_id(0), kh = get_global_id(1), t = get_global_id(2), hd = get_global_size(0);
    global const float *row = qkv + (size_t)t * ld + (size_t)kh * hd + i;
    const size_t at = ((size_t)kh * n_ctx + pos0 + t) * hd + i;
    kc[at] = row[nq];
    vc[at] = row[nq + nk];
}

/* Causal attention of query row t (position pos0 + t) of head h over cached keys 0..pos0 + t, or over
 * its last `window` keys only (sliding-window layers; 0: all of them). One work-group per (head, row).
 * Keys are taken RED_LS at a time: each work-item scores one key (vector loads of q and k), then every
 * work-item updates the running softmax and the output dims it owns (h-th dims j, j + RED_LS, ...): V is
 * read row by row, coalesced, with no scratch in global memory.
 * GQA: query head h reads KV head h / (n_head / n_head_kv). Global size (RED_LS * n_head, T). */
kernel __attribute__((reqd_work_group_size(RED_LS, 1, 1))) void attention(
    global const float *qkv, int ld, global const float *kc, global const float *vc, global float *out, int ldo,
    int n_head, int n_head_kv, int hd, int n_ctx, int pos0, float scale, int window)
{
    local float q[MAX_HD];
    local float sc[RED_LS];
    const int j = get_local_id(0), h = get_group_id(0), t = get_group_id(1);
    const int kh = h / (n_head / n_head_kv), S = pos0 + t + 1, s0 = (window && S > window) ? S - window : 0;
    global const float *qp = qkv + (size_t)t * ld + (size_t)h * hd;
    for (int i = j; i < hd; i += RED_LS) q[i] = qp[i];
    barrier(CLK_LOCAL_MEM_FENCE);
    global const float *K = kc + (size_t)kh * n_ctx * hd;
    global const float *V = vc + (size_t)kh * n_ctx * hd;
    float acc[MAX_HD / RED_LS];
    for (int i = 0; i < MAX_HD / RED_LS; i++) acc[i] = 0.0f;
    float mx = -INFINITY, l = 0.0f;
    for (int c0 = s0; c0 < S; c0 += RED_LS) {
        float s = -INFINITY;
        if (c0 + j < S) {
            global const float *k = K + (size_t)(c0 + j) * hd;
            float4 a = (float4)(0.0f);
            for (int i = 0; i < hd; i += 4) a = fma(vload4(0, q + i), vload4(0, k + i), a);
            s = ((a.s0 + a.s1) + (a.s2 + a.s3)) * scale;
        }
        sc[j] = s;
        barrier(CLK_LOCAL_MEM_FENCE);
        const int cnt = min(RED_LS, S - c0);
        float cm = mx;
        for (int i = 0; i < cnt; i++) cm = fmax(cm, sc[i]);
        const float corr = exp(mx - cm);
        l *= corr;
        for (int i = 0; i < MAX_HD / RED_LS; i++) acc[i] *= corr;
        for (int i = 0; i < cnt; i++) {
            const float p = exp(sc[i] - cm);
            l += p;
            global const float *v = V + (size_t)(c0 + i) * hd;
            for (int e = 0, dim = j; e < MAX_HD / RED_LS && dim < hd; e++, dim += RED_LS) acc[e] = fma(p, v[dim], acc[e]);
        }
        mx = cm;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    global float *o = out + (size_t)t * ldo + (size_t)h * hd;
    for (int e = 0, dim = j; e < MAX_HD / RED_LS && dim < hd; e++, dim += RED_LS) o[dim] = acc[e] / l;
}

/* out[t, i] = silu(gu[t, i]) * gu[t, ff + i] (gate and up are one fused projection). Global size (ff, T). */
kernel void swiglu(global const float *gu, global float *out, int ff)
{
    const int i = get_global_id(0), t = get_global_id(1);
    const float g = gu[(size_t)t * 2 * ff + i];
    out[(size_t)t * ff + i] = g / (1.0f + exp(-g)) * gu[(size_t)t * 2 * ff + ff + i];
}

/* out[t, i] = gelu_tanh(gu[t, i]) * gu[t, ff + i] (GeGLU). 0.5 g (1 + tanh(u)) is written g / (1 + exp(-2u)),
 * as the CPU loop does: one exp, and exact limits where tanh saturates. Global size (ff, T). */
kernel void geglu(global const float *gu, global float *out, int ff)
{
    const int i = get_global_id(0), t = get_global_id(1);
    const float g = gu[(size_t)t * 2 * ff + i];
    const float u = 0.7978845608028654f * (g + 0.044715f * g * g * g);
    out[(size_t)t * ff + i] = g / (1.0f + exp(-2.0f * u)) * gu[(size_t)t * 2 * ff + ff + i];
}
