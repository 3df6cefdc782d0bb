/* edgesdk LLM fused forward: decode, speculative verification and prefill chunks.
 *
 * One call runs every layer of a decoder-only transformer for T <= LLM_MAX_ROWS tokens: RMSNorm (also
 * per head: QK-norm; and after each block: sandwich norms), RoPE from one of the model's tables,
 * KV-cache store, grouped-query attention (optionally over a sliding window), SwiGLU or GeGLU and the
 * residual stream, and a LoRA adapter's low-rank terms beside the projections (never merged into
 * the weights, so adapters switch per call), each step switched by the layer/model fields
 * (edgesdk/llm/arch describes which an architecture needs), calling the weight matmul through
 * a function pointer (edgesdk._ckernels' ek_matmul, passed in by Python). Doing this per token in
 * numpy costs ~60 small array operations per layer; in C it costs nothing next to the matmuls.
 * Prefill attention also stays here: numpy would hand it to a multithreaded BLAS whose spinning
 * threads fight the kernel pool's for the same cores (15x slower prefills seen on 2 vCPUs).
 *
 * Every token row goes through exactly the same instructions whatever T is (the matmul kernel
 * computes rows independently), so verifying k draft tokens in one call yields bit-identical
 * logits to k one-token calls: greedy speculative decoding cannot change the output.
 */
#include "llm_decode.h"
#include "ek_cpu.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ISA_AVX2 "avx2,fma"
#define ISA_AVX2_F16C "avx2,fma,f16c"
#if defined(__x86_64__) && defined(__GNUC__)
#define LLM_X86 1
#define LLM_AVX2 __attribute__((target(ISA_AVX2)))
#define LLM_F16C __attribute__((target(ISA_AVX2_F16C)))
#define LLM_INLINE __attribute__((always_inline)) inline
#endif

#define QK8_0 32        /* values per Q8_0 block */
#define Q8_0_BYTES 34   /* its fp16 scale + 32 int8 codes, unpadded as in llama.cpp */

/* --- KV-cache rows ---------------------------------------------------------------------------
 * Keys/values are stored once per token and read S times per query head afterwards, so the
 * encoders are plain C on every path (they must also give numpy's bits exactly) while the
 * readers below are per-path. */

static float h2f(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    uint32_t u;
    if (e == 0x1f) u = sign | 0x7f800000u | mant << 13;
    else if (e) u = sign | (e + 112u) << 23 | mant << 13;
    else {
        const float f = (float)mant * 5.9604644775390625e-8f; /* subnormal: mant * 2^-24, exact */
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even, subnormals and overflow to inf included, as numpy's astype(float16) and
 * F16C's vcvtps2ph do (F. Giesen's float_to_half_fast3_rtne). */
static uint16_t f2h(float f)
{
    const uint32_t f16max = (127u + 16u) << 23, magic_bits = (127u - 15u + 23u - 10u + 1u) << 23;
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t sign = u & 0x80000000u;
    u ^= sign;
    uint16_t o;
    if (u >= f16max) o = u > 0x7f800000u ? 0x7e00 : 0x7c00;
    else if (u < 113u << 23) {
        /* below the smallest normal half: adding 0.5 lets the FPU round to the 2^-24 grid */
        float fu, magic;
        memcpy(&fu, &u, 4);
        memcpy(&magic, &magic_bits, 4);
        fu += magic;
        memcpy(&u, &fu, 4);
        o = (uint16_t)(u - magic_bits);
    } else {
        const uint32_t odd = (u >> 13) & 1u;
        u -= 112u << 23;
        u += 0xfffu + odd;
        o = (uint16_t)(u >> 13);
    }
    return (uint16_t)(o | sign >> 16);
}

long llm_kv_row_bytes(int kv_type, int n)
{
    if (n < 1) return -1;
    switch (kv_type) {
    case LLM_KV_F32: return 4L * n;
    case LLM_KV_F16: return 2L * n;
    case LLM_KV_Q8_0: return n % QK8_0 ? -1 : (long)(n / QK8_0) * Q8_0_BYTES;
    default: return -1;
    }
}

static void kv_encode(int kv_type, const float *x, int n, unsigned char *o)
{
    if (kv_type == LLM_KV_F32) {
        memcpy(o, x, (size_t)n * sizeof(float));
    } else if (kv_type == LLM_KV_F16) {
        for (int i = 0; i < n; i++) {
            const uint16_t h = f2h(x[i]);
            memcpy(o + 2 * i, &h, 2);
        }
    } else {
        for (int b = 0; b < n / QK8_0; b++, x += QK8_0, o += Q8_0_BYTES) {
            float amax = 0.f;
            for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
            const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
            const uint16_t h = f2h(d);
            memcpy(o, &h, 2);
            for (int j = 0; j < QK8_0; j++) {
                const float r = roundf(x[j] * id);
                o[2 + j] = (unsigned char)(int8_t)(r == r ? r : 0.f); /* NaN in: code 0, not UB */
            }
        }
    }
}

int llm_kv_encode(int kv_type, const float *x, int n, void *out)
{
    if (!x || !out || llm_kv_row_bytes(kv_type, n) < 0) return -1;
    kv_encode(kv_type, x, n, (unsigned char *)out);
    return 0;
}

/* Keys/values of one attention call: S positions from slot `start` of a ring of `cap` rows of hd
 * values, `row` bytes each as stored. */
typedef struct kv_span {
    const unsigned char *K, *V;
    int start, cap, S, hd;
    size_t row;
} kv_span;

static inline size_t slot(const kv_span *a, int s)
{
    const int i = a->start + s;
    return (size_t)(i >= a->cap ? i - a->cap : i) * a->row;
}

/* Portable readers: each value as float32 (exact for every stored type), then f32 arithmetic in
 * the same order for all types. */
static inline float kv_f32(const unsigned char *row, int i)
{
    float f;
    memcpy(&f, row + 4 * (size_t)i, 4);
    return f;
}

static inline float kv_f16(const unsigned char *row, int i)
{
    uint16_t h;
    memcpy(&h, row + 2 * (size_t)i, 2);
    return h2f(h);
}

static inline float kv_q8(const unsigned char *row, int i)
{
    const unsigned char *b = row + (size_t)(i / QK8_0) * Q8_0_BYTES;
    uint16_t h;
    memcpy(&h, b, 2);
    return h2f(h) * (float)(int8_t)b[2 + i % QK8_0];
}

typedef float (*kv_get_fn)(const unsigned char *row, int i);

static inline float dot_rows(const float *a, const unsigned char *row, int n, kv_get_fn get)
{
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * get(row, i);
        s1 += a[i + 1] * get(row, i + 1);
        s2 += a[i + 2] * get(row, i + 2);
        s3 += a[i + 3] * get(row, i + 3);
    }
    for (; i < n; i++) s0 += a[i] * get(row, i);
    return (s0 + s1) + (s2 + s3);
}

static inline void attend_rows(const float *q, const kv_span *a, float scale, float *sc, float *o, kv_get_fn get)
{
    const int S = a->S, hd = a->hd;
    float mx = -INFINITY;
    for (int s = 0; s < S; s++) {
        sc[s] = dot_rows(q, a->K + slot(a, s), hd, get) * scale;
        if (sc[s] > mx) mx = sc[s];
    }
    float sum = 0.f;
    for (int s = 0; s < S; s++) {
        sc[s] = expf(sc[s] - mx);
        sum += sc[s];
    }
    const float inv = 1.f / sum;
    memset(o, 0, hd * sizeof(float));
    for (int s = 0; s < S; s++) {
        const unsigned char *v = a->V + slot(a, s);
        const float p = sc[s];
        for (int i = 0; i < hd; i++) o[i] += p * get(v, i);
    }
    for (int i = 0; i < hd; i++) o[i] *= inv;
}

static void attend_portable(const float *q, const kv_span *a, float scale, float *sc, float *o) { attend_rows(q, a, scale, sc, o, kv_f32); }
static void attend_f16_portable(const float *q, const kv_span *a, float scale, float *sc, float *o) { attend_rows(q, a, scale, sc, o, kv_f16); }
static void attend_q8_portable(const float *q, const kv_span *a, float scale, float *sc, float *o) { attend_rows(q, a, scale, sc, o, kv_q8); }

/* A stored row as float32, the values every reader of its type gives (exact) */
static inline void widen_rows(const unsigned char *row, int n, float *out, kv_get_fn get)
{
    for (int i = 0; i < n; i++) out[i] = get(row, i);
}

static void widen_f16_portable(const unsigned char *row, int n, float *out) { widen_rows(row, n, out, kv_f16); }
static void widen_q8_portable(const unsigned char *row, int n, float *out) { widen_rows(row, n, out, kv_q8); }

static void silu_mul_portable(const float *g, const float *up, float *out, int n)
{
    for (int i = 0; i < n; i++) out[i] = g[i] / (1.f + expf(-g[i])) * up[i];
}

#define GELU_C 0.7978845608028654f /* sqrt(2 / pi) */

/* tanh-GELU as 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)): one exp, no tanh, and exact limits. */
static void gelu_mul_portable(const float *g, const float *up, float *out, int n)
{
    for (int i = 0; i < n; i++) {
        const float x = g[i], u = GELU_C * (x + 0.044715f * x * x * x);
        out[i] = x / (1.f + expf(-2.f * u)) * up[i];
    }
}

typedef void (*attend_fn)(const float *, const kv_span *, float, float *, float *);
/* two query heads of one KV group: (q0, q1, span, scale, sc0, sc1, o0, o1), the bits of two attend_fn calls */
typedef void (*attend2_fn)(const float *, const float *, const kv_span *, float, float *, float *, float *, float *);

/* LoRA terms: a row of A (k values) dotted with nt <= LORA_ROWS input rows (x, k apart), and u times a row
 * of B^T added to an output row. Each row's dot is the same instructions whatever nt is, so a token's
 * result does not depend on the call's T (speculative verification stays bit-identical). */
#define LORA_ROWS 4

static void lora_dot_portable(const float *a, const float *x, int k, int nt, float *u)
{
    for (int j = 0; j < nt; j++) u[j] = dot_rows(x + (size_t)j * k, (const unsigned char *)a, k, kv_f32);
}

static void lora_axpy_portable(float u, const float *b, float *y, int n)
{
    for (int i = 0; i < n; i++) y[i] += u * b[i];
}

#ifdef LLM_X86
#include <immintrin.h>

/* Stored values of a row as float32 (exact for every type): 8 from value i (a multiple of 8), and
 * 32 from i a multiple of 32, one Q8_0 block, so its scale is converted once, not per 8 values. */
typedef __m256 (*kv_ld8_fn)(const unsigned char *row, int i);
typedef void (*kv_ld32_fn)(const unsigned char *row, int i, __m256 *out);

static LLM_AVX2 inline __m256 ld8_f32(const unsigned char *row, int i) { return _mm256_loadu_ps((const float *)row + i); }

static LLM_F16C inline __m256 ld8_f16(const unsigned char *row, int i)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * (size_t)i)));
}

static LLM_F16C inline __m256 ld8_q8(const unsigned char *row, int i)
{
    const unsigned char *b = row + (size_t)(i / QK8_0) * Q8_0_BYTES;
    uint16_t h;
    memcpy(&h, b, 2);
    const __m256 codes = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + i % QK8_0))));
    return _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(h)), codes);
}

static LLM_AVX2 inline void ld32_f32(const unsigned char *row, int i, __m256 *out)
{
    for (int u = 0; u < 4; u++) out[u] = _mm256_loadu_ps((const float *)row + i + 8 * u);
}

static LLM_F16C inline void ld32_f16(const unsigned char *row, int i, __m256 *out)
{
    for (int u = 0; u < 4; u++) out[u] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * ((size_t)i + 8 * u))));
}

static LLM_F16C inline void ld32_q8(const unsigned char *row, int i, __m256 *out)
{
    const unsigned char *b = row + (size_t)(i / QK8_0) * Q8_0_BYTES;
    uint16_t h;
    memcpy(&h, b, 2);
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(h));
    for (int u = 0; u < 4; u++)
        out[u] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * u)))));
}

static LLM_AVX2 LLM_INLINE float hsum256(__m256 v)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

/* n a multiple of 8; two accumulators, as the f32 path has always summed. */
static LLM_AVX2 LLM_INLINE float dot_avx2(const float *q, const unsigned char *row, int n, kv_ld8_fn ld)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), ld(row, i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), ld(row, i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), ld(row, i), s0);
    return hsum256(_mm256_add_ps(s0, s1));
}

/* Cephes-style expf on 8 lanes (max rel. error ~2e-7); inputs clamped to the normal-float range. */
static LLM_AVX2 __m256 exp256(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.3762626647949f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* sc[0 .. S) -> exp(sc - max), in place; returns their sum */
static LLM_AVX2 LLM_INLINE float softmax_avx2(float *sc, const int S)
{
    int s;
    __m256 vmx = _mm256_set1_ps(-INFINITY);
    for (s = 0; s + 8 <= S; s += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(sc + s));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmx), _mm256_extractf128_ps(vmx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    float mx = _mm_cvtss_f32(m4);
    for (; s < S; s++) mx = sc[s] > mx ? sc[s] : mx;
    const __m256 vm = _mm256_set1_ps(mx);
    __m256 vs = _mm256_setzero_ps();
    for (s = 0; s + 8 <= S; s += 8) {
        const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(sc + s), vm));
        _mm256_storeu_ps(sc + s, e);
        vs = _mm256_add_ps(vs, e);
    }
    float total = hsum256(vs);
    for (; s < S; s++) {
        float tail[8] = {0};
        tail[0] = sc[s] - mx;
        _mm256_storeu_ps(tail, exp256(_mm256_loadu_ps(tail)));
        sc[s] = tail[0];
        total += tail[0];
    }
    return total;
}

/* One query head over S keys: 8 dot products per step reduced together (one transpose-add for 8
 * scores instead of a horizontal sum each), vector exp, and the output kept in registers. Inlined
 * into one function per stored type, whose target adds what its loader `ld` needs (F16C), so the
 * loads become plain conversions in the loop; `fallback` is that type's portable path. */
static LLM_AVX2 LLM_INLINE void attend_avx2_rows(const float *q, const kv_span *a, float scale, float *sc, float *o,
                                                 kv_ld8_fn ld, kv_ld32_fn ld32, attend_fn fallback)
{
    const int S = a->S, hd = a->hd;
    if (hd % 8 || hd > 256) {
        fallback(q, a, scale, sc, o);
        return;
    }
    const int nb = hd / 8;
    int s = 0;
    for (; s + 8 <= S; s += 8) {
        const unsigned char *kr[8];
        __m256 acc[8];
        for (int j = 0; j < 8; j++) {
            kr[j] = a->K + slot(a, s + j);
            acc[j] = _mm256_setzero_ps();
        }
        /* per key, the same FMAs in the same order whichever loader reads its values */
        int b = 0;
        for (; b + 4 <= nb; b += 4) {
            __m256 qv[4];
            for (int u = 0; u < 4; u++) qv[u] = _mm256_loadu_ps(q + 8 * (b + u));
            for (int j = 0; j < 8; j++) {
                __m256 kv[4];
                ld32(kr[j], 8 * b, kv);
                for (int u = 0; u < 4; u++) acc[j] = _mm256_fmadd_ps(qv[u], kv[u], acc[j]);
            }
        }
        for (; b < nb; b++) {
            const __m256 qv = _mm256_loadu_ps(q + 8 * b);
            for (int j = 0; j < 8; j++) acc[j] = _mm256_fmadd_ps(qv, ld(kr[j], 8 * b), acc[j]);
        }
        __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
        __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
        __m256 sum = _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
        _mm256_storeu_ps(sc + s, _mm256_mul_ps(sum, _mm256_set1_ps(scale)));
    }
    for (; s < S; s++) sc[s] = dot_avx2(q, a->K + slot(a, s), hd, ld) * scale;
    const float total = softmax_avx2(sc, S);
    /* 64 outputs per pass over the keys: their accumulators stay in registers (all hd of them
     * would spill), and each output still sums its keys in order. The ring's rows run in at most
     * two contiguous stretches. */
    const __m256 inv = _mm256_set1_ps(1.f / total);
    const int S1 = a->cap - a->start < S ? a->cap - a->start : S;
    for (int b0 = 0; b0 < nb; b0 += 8) {
        const int nu = nb - b0 < 8 ? nb - b0 : 8;
        __m256 out[8];
        for (int u = 0; u < 8; u++) out[u] = _mm256_setzero_ps();
        for (int part = 0; part < 2; part++) {
            const int lo = part ? S1 : 0, hi = part ? S : S1;
            const unsigned char *v = a->V + slot(a, lo);
            if (nu == 8)
                for (s = lo; s < hi; s++, v += a->row) {
                    const __m256 p = _mm256_set1_ps(sc[s]);
                    __m256 vv[8];
                    ld32(v, 8 * b0, vv);
                    ld32(v, 8 * b0 + 32, vv + 4);
                    for (int u = 0; u < 8; u++) out[u] = _mm256_fmadd_ps(p, vv[u], out[u]);
                }
            else
                for (s = lo; s < hi; s++, v += a->row) {
                    const __m256 p = _mm256_set1_ps(sc[s]);
                    for (int u = 0; u < nu; u++) out[u] = _mm256_fmadd_ps(p, ld(v, 8 * (b0 + u)), out[u]);
                }
        }
        for (int u = 0; u < nu; u++) _mm256_storeu_ps(o + 8 * (b0 + u), _mm256_mul_ps(out[u], inv));
    }
}

static LLM_AVX2 void attend_avx2(const float *q, const kv_span *a, float scale, float *sc, float *o)
{
    attend_avx2_rows(q, a, scale, sc, o, ld8_f32, ld32_f32, attend_portable);
}

/* v, loaded into a register: GCC would otherwise fold the load into each FMA that reads it, once
 * per head */
static LLM_AVX2 inline __m256 in_reg(__m256 v)
{
    __asm__("" : "+x"(v));
    return v;
}

/* Two query heads of one KV group over the same keys, f32 rows (a prompt chunk's widened cache):
 * attend_avx2's arithmetic for each head (a score's FMAs in the same order and the same horizontal
 * tree, an output's sum over the keys in order), with every key and value vector loaded once for
 * both: 4 keys x 2 heads per step and 32 outputs x 2 heads per pass keep both in AVX2's 16 registers. */
static LLM_AVX2 void attend2_avx2(const float *q0, const float *q1, const kv_span *a, float scale, float *sc0, float *sc1, float *o0, float *o1)
{
    const int S = a->S, hd = a->hd;
    if (hd % 8 || hd > 256) {
        attend_avx2(q0, a, scale, sc0, o0);
        attend_avx2(q1, a, scale, sc1, o1);
        return;
    }
    const int nb = hd / 8, S8 = S / 8 * 8;
    for (int s = 0; s < S8; s += 4) {
        const float *kr[4];
        __m256 acc[8]; /* keys s .. s + 3 of head 0, then of head 1: the lanes of the tree's result */
        for (int j = 0; j < 4; j++) {
            kr[j] = (const float *)(a->K + slot(a, s + j));
            acc[j] = acc[4 + j] = _mm256_setzero_ps();
        }
        int b = 0;
        for (; b + 4 <= nb; b += 4)
            for (int u = 0; u < 4; u += 2) {
                const __m256 a0 = _mm256_loadu_ps(q0 + 8 * (b + u)), a1 = _mm256_loadu_ps(q0 + 8 * (b + u + 1));
                const __m256 c0 = _mm256_loadu_ps(q1 + 8 * (b + u)), c1 = _mm256_loadu_ps(q1 + 8 * (b + u + 1));
                for (int j = 0; j < 4; j++) {
                    const __m256 k0 = in_reg(_mm256_loadu_ps(kr[j] + 8 * (b + u))), k1 = in_reg(_mm256_loadu_ps(kr[j] + 8 * (b + u + 1)));
                    acc[j] = _mm256_fmadd_ps(a1, k1, _mm256_fmadd_ps(a0, k0, acc[j]));
                    acc[4 + j] = _mm256_fmadd_ps(c1, k1, _mm256_fmadd_ps(c0, k0, acc[4 + j]));
                }
            }
        for (; b < nb; b++) {
            const __m256 a0 = _mm256_loadu_ps(q0 + 8 * b), c0 = _mm256_loadu_ps(q1 + 8 * b);
            for (int j = 0; j < 4; j++) {
                const __m256 k0 = _mm256_loadu_ps(kr[j] + 8 * b);
                acc[j] = _mm256_fmadd_ps(a0, k0, acc[j]);
                acc[4 + j] = _mm256_fmadd_ps(c0, k0, acc[4 + j]);
            }
        }
        __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
        __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
        const __m256 sum = _mm256_mul_ps(_mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31)), _mm256_set1_ps(scale));
        _mm_storeu_ps(sc0 + s, _mm256_castps256_ps128(sum));
        _mm_storeu_ps(sc1 + s, _mm256_extractf128_ps(sum, 1));
    }
    for (int s = S8; s < S; s++) {
        sc0[s] = dot_avx2(q0, a->K + slot(a, s), hd, ld8_f32) * scale;
        sc1[s] = dot_avx2(q1, a->K + slot(a, s), hd, ld8_f32) * scale;
    }
    const __m256 inv0 = _mm256_set1_ps(1.f / softmax_avx2(sc0, S)), inv1 = _mm256_set1_ps(1.f / softmax_avx2(sc1, S));
    const int S1 = a->cap - a->start < S ? a->cap - a->start : S;
    for (int b0 = 0; b0 < nb; b0 += 4) {
        const int nu = nb - b0 < 4 ? nb - b0 : 4;
        __m256 x0[4], x1[4];
        for (int u = 0; u < 4; u++) x0[u] = x1[u] = _mm256_setzero_ps();
        for (int part = 0; part < 2; part++) {
            const int lo = part ? S1 : 0, hi = part ? S : S1;
            const unsigned char *v = a->V + slot(a, lo);
            if (nu == 4)
                for (int s = lo; s < hi; s++, v += a->row) {
                    const __m256 p0 = _mm256_set1_ps(sc0[s]), p1 = _mm256_set1_ps(sc1[s]);
                    for (int u = 0; u < 4; u++) {
                        const __m256 vv = in_reg(ld8_f32(v, 8 * (b0 + u)));
                        x0[u] = _mm256_fmadd_ps(p0, vv, x0[u]);
                        x1[u] = _mm256_fmadd_ps(p1, vv, x1[u]);
                    }
                }
            else
                for (int s = lo; s < hi; s++, v += a->row) {
                    const __m256 p0 = _mm256_set1_ps(sc0[s]), p1 = _mm256_set1_ps(sc1[s]);
                    for (int u = 0; u < nu; u++) {
                        const __m256 vv = ld8_f32(v, 8 * (b0 + u));
                        x0[u] = _mm256_fmadd_ps(p0, vv, x0[u]);
                        x1[u] = _mm256_fmadd_ps(p1, vv, x1[u]);
                    }
                }
        }
        for (int u = 0; u < nu; u++) {
            _mm256_storeu_ps(o0 + 8 * (b0 + u), _mm256_mul_ps(x0[u], inv0));
            _mm256_storeu_ps(o1 + 8 * (b0 + u), _mm256_mul_ps(x1[u], inv1));
        }
    }
}

static LLM_F16C void attend_f16_avx2(const float *q, const kv_span *a, float scale, float *sc, float *o)
{
    attend_avx2_rows(q, a, scale, sc, o, ld8_f16, ld32_f16, attend_f16_portable);
}

static LLM_F16C void attend_q8_avx2(const float *q, const kv_span *a, float scale, float *sc, float *o)
{
    attend_avx2_rows(q, a, scale, sc, o, ld8_q8, ld32_q8, attend_q8_portable);
}

static LLM_F16C LLM_INLINE void widen_avx2(const unsigned char *row, int n, float *out, kv_ld8_fn ld, kv_get_fn get)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, ld(row, i));
    for (; i < n; i++) out[i] = get(row, i);
}

static LLM_F16C void widen_f16_avx2(const unsigned char *row, int n, float *out) { widen_avx2(row, n, out, ld8_f16, kv_f16); }
static LLM_F16C void widen_q8_avx2(const unsigned char *row, int n, float *out) { widen_avx2(row, n, out, ld8_q8, kv_q8); }

/* nt rows at once: each load of A serves them all (prefill), two accumulators a row as dot_avx2. */
static LLM_AVX2 LLM_INLINE void lora_dot_rows(const float *a, const float *x, int k, const int nt, float *u)
{
    __m256 s0[LORA_ROWS], s1[LORA_ROWS];
    for (int j = 0; j < nt; j++) s0[j] = s1[j] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        const __m256 a0 = _mm256_loadu_ps(a + i), a1 = _mm256_loadu_ps(a + i + 8);
        for (int j = 0; j < nt; j++) {
            s0[j] = _mm256_fmadd_ps(a0, _mm256_loadu_ps(x + (size_t)j * k + i), s0[j]);
            s1[j] = _mm256_fmadd_ps(a1, _mm256_loadu_ps(x + (size_t)j * k + i + 8), s1[j]);
        }
    }
    for (; i + 8 <= k; i += 8) {
        const __m256 a0 = _mm256_loadu_ps(a + i);
        for (int j = 0; j < nt; j++) s0[j] = _mm256_fmadd_ps(a0, _mm256_loadu_ps(x + (size_t)j * k + i), s0[j]);
    }
    for (int j = 0; j < nt; j++) {
        const float *xj = x + (size_t)j * k;
        float s = hsum256(_mm256_add_ps(s0[j], s1[j]));
        for (int q = i; q < k; q++) s += a[q] * xj[q];
        u[j] = s;
    }
}

static LLM_AVX2 void lora_dot_avx2(const float *a, const float *x, int k, int nt, float *u)
{
    switch (nt) { /* a constant nt keeps the accumulators in registers */
    case 4: lora_dot_rows(a, x, k, 4, u); break;
    case 3: lora_dot_rows(a, x, k, 3, u); break;
    case 2: lora_dot_rows(a, x, k, 2, u); break;
    default: lora_dot_rows(a, x, k, 1, u); break;
    }
}

static LLM_AVX2 void lora_axpy_avx2(float u, const float *b, float *y, int n)
{
    const __m256 vu = _mm256_set1_ps(u);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vu, _mm256_loadu_ps(b + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += u * b[i];
}

static LLM_AVX2 void silu_mul_avx2(const float *g, const float *up, float *out, int n)
{
    int i = 0;
    const __m256 one = _mm256_set1_ps(1.f);
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), x));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) out[i] = g[i] / (1.f + expf(-g[i])) * up[i];
}

static LLM_AVX2 void gelu_mul_avx2(const float *g, const float *up, float *out, int n)
{
    int i = 0;
    const __m256 one = _mm256_set1_ps(1.f), c = _mm256_set1_ps(-2.f * GELU_C), k = _mm256_set1_ps(0.044715f);
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
        const __m256 e = exp256(_mm256_mul_ps(c, _mm256_fmadd_ps(k, x3, x)));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    gelu_mul_portable(g + i, up + i, out + i, n - i);
}
#endif

static int runnable(unsigned allowed, const char *isa)
{
    const unsigned have = allowed & ek_cpu_features(), need = ek_cpu_parse(isa);
    return (have & need) == need;
}

/* The loop's own SIMD paths, in order of preference (see ek_cpu.h: a path's target string is what
 * it needs).  Each call takes the first one the caller allows and this CPU has. */
typedef struct loop_path {
    const char *name;
    const char *isa;
    void (*silu_mul)(const float *, const float *, float *, int);
    void (*gelu_mul)(const float *, const float *, float *, int);
    void (*lora_dot)(const float *, const float *, int, int, float *);
    void (*lora_axpy)(float, const float *, float *, int);
} loop_path;

static const loop_path paths[] = {
#ifdef LLM_X86
    {"avx2", ISA_AVX2, silu_mul_avx2, gelu_mul_avx2, lora_dot_avx2, lora_axpy_avx2},
#endif
    {"portable", "", silu_mul_portable, gelu_mul_portable, lora_dot_portable, lora_axpy_portable},
};

/* Attention per stored KV type, picked the same way: the reader of a type may need more than the
 * loop path (halves need F16C), and every type has a portable entry, so some entry always runs. */
typedef struct attend_path {
    const char *name;
    const char *isa;
    int kv_type;
    attend_fn attend;
    attend2_fn attend2; /* or NULL: heads one at a time */
    /* rows as float32 for a prompt chunk, whose every key meets many queries; NULL for f32 */
    void (*widen)(const unsigned char *row, int n, float *out);
} attend_path;

static const attend_path attends[] = {
#ifdef LLM_X86
    {"avx2", ISA_AVX2, LLM_KV_F32, attend_avx2, attend2_avx2, NULL},
    {"avx2+f16c", ISA_AVX2_F16C, LLM_KV_F16, attend_f16_avx2, NULL, widen_f16_avx2},
    {"avx2+f16c", ISA_AVX2_F16C, LLM_KV_Q8_0, attend_q8_avx2, NULL, widen_q8_avx2},
#endif
    {"portable", "", LLM_KV_F32, attend_portable, NULL, NULL},
    {"portable", "", LLM_KV_F16, attend_f16_portable, NULL, widen_f16_portable},
    {"portable", "", LLM_KV_Q8_0, attend_q8_portable, NULL, widen_q8_portable},
};

static const loop_path *pick(unsigned allowed)
{
    for (size_t i = 0; i + 1 < sizeof paths / sizeof paths[0]; i++)
        if (runnable(allowed, paths[i].isa)) return &paths[i];
    return &paths[sizeof paths / sizeof paths[0] - 1];
}

static const attend_path *pick_attend(unsigned allowed, int kv_type)
{
    for (size_t i = 0; i < sizeof attends / sizeof attends[0]; i++)
        if (attends[i].kv_type == kv_type && runnable(allowed, attends[i].isa)) return &attends[i];
    return NULL;
}

const char *llm_path(unsigned allowed) { return pick(allowed)->name; }

const char *llm_attend_path(unsigned allowed, int kv_type)
{
    const attend_path *p = pick_attend(allowed, kv_type);
    return p ? p->name : NULL;
}

/* Where one layer's attention reads its keys and values: per KV head a ring of `cap` rows of `rb`
 * bytes holding positions from `lo` on (the cache itself: lo 0), read with `attend` */
typedef struct kv_rows {
    attend_fn attend;
    attend2_fn attend2;
    const unsigned char *k, *v;
    int cap, lo;
    size_t rb;
} kv_rows;

/* One layer's attention for the tokens of a call: item it = t * nh + head, each independent once
 * the call's keys and values are stored; sc is a thread's two score rows (2 S_max floats). */
typedef struct attn_job {
    kv_rows kv;
    const llm_layer *L;
    const float *qkv;
    float *att;
    int pos0, nh, g, nqkv, nq, hd, S_max;
    float scale;
    int failed; /* set (atomically) when a chunk could not allocate its row */
} attn_job;

/* first position a query at position p attends to */
static inline int first_key(const llm_layer *L, int p) { return (L->window && p + 1 > L->window) ? p + 1 - L->window : 0; }

/* The layer's rows for positions [lo, hi) as float32 in out (per KV head hi - lo rows of hd): the
 * chunk's queries then read plain floats, each converted once instead of once per query head.
 * Same values, same arithmetic: outputs equal reading the cache directly. */
static kv_rows widen_layer(const attend_path *p, const attend_path *p32, const llm_layer *L, int nkv, int hd, size_t rb, int lo, int hi, float *out)
{
    const int n = hi - lo;
    for (int kvh = 0; kvh < nkv; kvh++)
        for (int s = lo; s < hi; s++) {
            const size_t at = ((size_t)kvh * L->kv_cap + (size_t)(s % L->kv_cap)) * rb;
            float *ko = out + ((size_t)kvh * n + (size_t)(s - lo)) * hd, *vo = ko + (size_t)nkv * n * hd;
            p->widen((const unsigned char *)L->k + at, hd, ko);
            p->widen((const unsigned char *)L->v + at, hd, vo);
        }
    const kv_rows r = {p32->attend, p32->attend2, (const unsigned char *)out, (const unsigned char *)(out + (size_t)nkv * n * hd), n, lo, sizeof(float) * (size_t)hd};
    return r;
}

/* sc: two score rows (2 S_max floats); a head and the next of its KV group go together where the
 * rows have a pair kernel (the same bits as one at a time) */
static void attend_items(attn_job *J, int lo, int hi, float *sc)
{
    const kv_rows *kv = &J->kv;
    for (int it = lo; it < hi; it++) {
        const int t = it / J->nh, head = it % J->nh;
        const int S = J->pos0 + t + 1, s0 = first_key(J->L, J->pos0 + t);
        const size_t base = (size_t)(head / J->g) * kv->cap * kv->rb;
        const kv_span span = {kv->k + base, kv->v + base, (s0 - kv->lo) % kv->cap, kv->cap, S - s0, J->hd, kv->rb};
        const float *q = J->qkv + (size_t)t * J->nqkv + (size_t)head * J->hd;
        float *o = J->att + (size_t)t * J->nq + (size_t)head * J->hd;
        if (kv->attend2 && it + 1 < hi && (head + 1) % J->g) {
            kv->attend2(q, q + J->hd, &span, J->scale, sc, sc + J->S_max, o, o + J->hd);
            it++;
        } else {
            kv->attend(q, &span, J->scale, sc, o);
        }
    }
}

static void attend_chunk(void *arg, int lo, int hi)
{
    attn_job *J = arg;
    float *sc = (float *)malloc(sizeof(float) * 2 * (size_t)J->S_max);
    if (!sc) {
        __atomic_store_n(&J->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    attend_items(J, lo, hi, sc);
    free(sc);
}

static void rms_norm(const float *x, const float *w, float *out, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float r = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

static void rope(float *v, int n_heads, int hd, int rope_dim, int neox, const float *cs, const float *sn)
{
    const int half = rope_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *x = v + (size_t)h * hd;
        for (int i = 0; i < half; i++) {
            float *a = neox ? x + i : x + 2 * i;
            float *b = neox ? x + i + half : x + 2 * i + 1;
            const float a0 = *a, b0 = *b;
            *a = a0 * cs[i] - b0 * sn[i];
            *b = a0 * sn[i] + b0 * cs[i];
        }
    }
}

/* The block output `y` (T rows of n), RMS-normed first when the layer has a post norm, added to x. */
/* x += y (a row of n), y normed first where the block has a post-norm (Gemma's sandwich) */
static void residual_add(float *x, float *y, const float *post_norm, int n, float eps)
{
    if (post_norm) rms_norm(y, post_norm, y, n, eps);
    for (int i = 0; i < n; i++) x[i] += y[i];
}

/* y (T rows of ldy values) += each LoRA term's scale * B (A x_t), x (T rows of ldx values): the
 * adapter beside a projection's weights. Single-threaded: rank (k + n) multiply-adds a row, next
 * to the projection's k n; rows go LORA_ROWS at a time through A, whose rows then stay in L1.
 * Returns -1, adding nothing, when a term does not fit the projection. */
static int lora_add(const loop_path *p, const llm_lora *terms, int n_terms, const float *x, int ldx, int T, float *y, int ldy)
{
    if (n_terms < 0 || (n_terms && !terms)) return -1;
    for (int i = 0; i < n_terms; i++) {
        const llm_lora *l = &terms[i];
        if (!l->a || !l->bt || l->rank < 1 || l->k != ldx || l->n < 1 || l->row0 < 0 || l->n > ldy - l->row0) return -1;
    }
    for (int t = 0; t < T; t += LORA_ROWS) {
        const int nt = T - t < LORA_ROWS ? T - t : LORA_ROWS;
        const float *xt = x + (size_t)t * ldx;
        float *yt = y + (size_t)t * ldy;
        for (int i = 0; i < n_terms; i++) {
            const llm_lora *l = &terms[i];
            for (int r = 0; r < l->rank; r++) {
                float u[LORA_ROWS];
                p->lora_dot(l->a + (size_t)r * ldx, xt, ldx, nt, u);
                for (int j = 0; j < nt; j++)
                    p->lora_axpy(l->scale * u[j], l->bt + (size_t)r * l->n, yt + (size_t)j * ldy + l->row0, l->n);
            }
        }
    }
    return 0;
}

/* A layer's per-token work (norms, Q/K post-processing, RoPE, KV stores, gating, residuals): rows of
 * a prompt chunk are independent, so they go to the kernels' pool like the attention's pairs. */
typedef struct layer_rows {
    const llm_model *m;
    const llm_layer *L;
    float *x, *h, *qkv, *gu, *act, *tmp;
    const float *lcs, *lsn;
    void (*gated)(const float *, const float *, float *, int);
    int pos0, half;
    size_t rb;
} layer_rows;

typedef void (*row_fn)(const layer_rows *c, int t);

static void row_attn_norm(const layer_rows *c, int t)
{
    const int d = c->m->n_embd;
    rms_norm(c->x + (size_t)t * d, c->L->attn_norm, c->h + (size_t)t * d, d, c->m->rms_eps);
}

/* bias, QK-norm, RoPE and the KV store of token t's fused Q|K|V row */
static void row_qkv(const layer_rows *c, int t)
{
    const llm_model *m = c->m;
    const llm_layer *L = c->L;
    const int nh = m->n_head, nkv = m->n_head_kv, hd = m->head_dim, nq = nh * hd, nk = nkv * hd, nqkv = nq + 2 * nk;
    float *row = c->qkv + (size_t)t * nqkv;
    if (L->bqkv)
        for (int i = 0; i < nqkv; i++) row[i] += L->bqkv[i];
    if (L->q_norm)
        for (int hh = 0; hh < nh + nkv; hh++) {
            float *v = row + (size_t)hh * hd;
            rms_norm(v, hh < nh ? L->q_norm : L->k_norm, v, hd, m->rms_eps);
        }
    rope(row, nh + nkv, hd, m->rope_dim, m->rope_neox, c->lcs + (size_t)t * c->half, c->lsn + (size_t)t * c->half);
    const int pos = c->pos0 + t;
    for (int kh = 0; kh < nkv; kh++) {
        const size_t at = ((size_t)kh * L->kv_cap + pos % L->kv_cap) * c->rb;
        kv_encode(m->kv_type, row + nq + (size_t)kh * hd, hd, (unsigned char *)L->k + at);
        kv_encode(m->kv_type, row + nq + nk + (size_t)kh * hd, hd, (unsigned char *)L->v + at);
    }
}

/* the attention block's residual, then the FFN's input norm */
static void row_attn_out(const layer_rows *c, int t)
{
    const int d = c->m->n_embd;
    residual_add(c->x + (size_t)t * d, c->tmp + (size_t)t * d, c->L->post_attn_norm, d, c->m->rms_eps);
    rms_norm(c->x + (size_t)t * d, c->L->ffn_norm, c->h + (size_t)t * d, d, c->m->rms_eps);
}

static void row_gate(const layer_rows *c, int t)
{
    const int ff = c->m->n_ff;
    c->gated(c->gu + (size_t)t * 2 * ff, c->gu + (size_t)t * 2 * ff + ff, c->act + (size_t)t * ff, ff);
}

static void row_ffn_out(const layer_rows *c, int t)
{
    const int d = c->m->n_embd;
    residual_add(c->x + (size_t)t * d, c->tmp + (size_t)t * d, c->L->post_ffn_norm, d, c->m->rms_eps);
}

typedef struct rows_job {
    const layer_rows *c;
    row_fn fn;
} rows_job;

static void rows_chunk(void *arg, int lo, int hi)
{
    const rows_job *j = arg;
    for (int t = lo; t < hi; t++) j->fn(j->c, t);
}

/* whether a call of T tokens runs its per-token work on the pool: prompt chunks do, one token's
 * work stays on this thread */
static int on_pool(const llm_model *m, int T, int nt) { return m->parallel && T > 1 && nt != 1; }

/* fn for rows 0..T-1: on the pool for a prompt chunk, else here */
static int for_rows(const layer_rows *c, int T, int nt, row_fn fn)
{
    if (on_pool(c->m, T, nt)) {
        const rows_job j = {c, fn};
        return c->m->parallel(rows_chunk, (void *)&j, T, T / 8 > 1 ? T / 8 : 1, nt);
    }
    for (int t = 0; t < T; t++) fn(c, t);
    return 0;
}

#define WIDE_MAX ((size_t)4 << 20) /* floats: 16 MiB */

int llm_forward(const llm_model *m, float *x, int T, int pos0, float *logits, int logits_from)
{
    if (!m || !x || T < 1 || T > LLM_MAX_ROWS || pos0 < 0 || pos0 + T > m->n_ctx || m->n_rope < 1) return -1;
    const loop_path *path = pick(m->cpu_allowed);
    const attend_path *attend = pick_attend(m->cpu_allowed, m->kv_type), *attend32 = pick_attend(m->cpu_allowed, LLM_KV_F32);
    const long row_bytes = llm_kv_row_bytes(m->kv_type, m->head_dim);
    if (!attend || !attend32 || row_bytes < 0) return -1;
    const size_t rb = (size_t)row_bytes;
    const int d = m->n_embd, nh = m->n_head, nkv = m->n_head_kv, hd = m->head_dim, ff = m->n_ff;
    const int g = nh / nkv, nq = nh * hd, nk = nkv * hd, nqkv = nq + 2 * nk, half = m->rope_dim / 2;
    const int S_max = pos0 + T, nrope = m->n_rope;
    const float scale = (float)(1.0 / sqrt((double)hd));
    const size_t tab = (size_t)T * half; /* one RoPE table's cos (or sin) values */
    /* a prompt chunk reads float32 copies of the keys and values it attends to (widen_layer), while
     * they fit in WIDE_MAX floats */
    const size_t wide = (T >= 8 && attend->widen && (size_t)2 * nkv * S_max * hd <= WIDE_MAX) ? (size_t)2 * nkv * S_max * hd : 0;
    const size_t need = (size_t)T * (d + nqkv + nq + 2 * ff + ff + d) + 2 * (size_t)S_max + tab * 2 * nrope + wide;
    float *buf = (float *)malloc(need * sizeof(float));
    if (!buf) return -3;
    float *h = buf, *qkv = h + (size_t)T * d, *att = qkv + (size_t)T * nqkv, *gu = att + (size_t)T * nq;
    float *act = gu + (size_t)T * 2 * ff, *tmp = act + (size_t)T * ff, *sc = tmp + (size_t)T * d;
    float *cs = sc + 2 * (size_t)S_max, *sn = cs + tab * nrope, *kv32 = sn + tab * nrope;
    int rc = 0;
    /* Up to 16 rows a matmul still costs about one pass over the weights (decode, verification). */
    const int nt = (T <= 16 && m->nthreads_decode > 0) ? m->nthreads_decode : m->nthreads;
    void (*gated)(const float *, const float *, float *, int) = m->act_gelu ? path->gelu_mul : path->silu_mul;

    for (int r = 0; r < nrope; r++)
        for (int t = 0; t < T; t++) {
            const double p = (double)(pos0 + t) / m->rope_scale[r];
            for (int i = 0; i < half; i++) {
                const double a = p * m->inv_freq[(size_t)r * half + i];
                cs[r * tab + (size_t)t * half + i] = (float)cos(a);
                sn[r * tab + (size_t)t * half + i] = (float)sin(a);
            }
        }
    for (int l = 0; l < m->n_layer && !rc; l++) {
        const llm_layer *L = &m->layers[l];
        const llm_lora_layer *A = m->lora ? &m->lora[l] : NULL;
        /* a ring must hold a call's keys and the window before its first query */
        if (L->rope < 0 || L->rope >= nrope || L->window < 0 || L->kv_cap < 1 || L->kv_cap > m->n_ctx ||
            (L->kv_cap < m->n_ctx && L->kv_cap < L->window + T - 1) || (!L->window && L->kv_cap != m->n_ctx)) {
            rc = -1;
            break;
        }
        const layer_rows R = {m, L, x, h, qkv, gu, act, tmp, cs + L->rope * tab, sn + L->rope * tab, gated, pos0, half, rb};
        if ((rc = for_rows(&R, T, nt, row_attn_norm))) break;
        if ((rc = m->matmul(L->wqkv, h, T, qkv, m->act_int8, nt))) break;
        if (A && (rc = lora_add(path, A->qkv, A->n_qkv, h, d, T, qkv, nqkv))) break;
        if ((rc = for_rows(&R, T, nt, row_qkv))) break;
        const kv_rows cache = {attend->attend, attend->attend2, (const unsigned char *)L->k, (const unsigned char *)L->v, L->kv_cap, 0, rb};
        attn_job J = {wide ? widen_layer(attend, attend32, L, nkv, hd, rb, first_key(L, pos0), S_max, kv32) : cache, L, qkv, att, pos0, nh, g, nqkv, nq, hd, S_max, scale, 0};
        if (on_pool(m, T, nt)) { /* (token, head) pairs */
            const int items = T * nh, chunk = items / 16 > 1 ? items / 16 : 1;
            if ((rc = m->parallel(attend_chunk, &J, items, chunk, nt)) || (rc = J.failed ? -3 : 0)) break;
        } else {
            attend_items(&J, 0, T * nh, sc);
        }
        if ((rc = m->matmul(L->wo, att, T, tmp, m->act_int8, nt))) break;
        if (A && (rc = lora_add(path, A->o, A->n_o, att, nq, T, tmp, d))) break;
        if ((rc = for_rows(&R, T, nt, row_attn_out))) break;
        if ((rc = m->matmul(L->wgu, h, T, gu, m->act_int8, nt))) break;
        if (A && (rc = lora_add(path, A->gu, A->n_gu, h, d, T, gu, 2 * ff))) break;
        if ((rc = for_rows(&R, T, nt, row_gate))) break;
        if ((rc = m->matmul(L->wdown, act, T, tmp, m->act_int8, nt))) break;
        if (A && (rc = lora_add(path, A->down, A->n_down, act, ff, T, tmp, d))) break;
        if ((rc = for_rows(&R, T, nt, row_ffn_out))) break;
    }
    if (!rc && logits && logits_from < T) {
        const int n = T - logits_from;
        for (int t = 0; t < n; t++) rms_norm(x + (size_t)(logits_from + t) * d, m->out_norm, h + (size_t)t * d, d, m->rms_eps);
        rc = m->matmul(m->lm_head, h, n, logits, m->act_int8, m->nthreads);
        if (!rc && m->n_lora_head) rc = lora_add(path, m->lora_head, m->n_lora_head, h, d, n, logits, m->n_vocab);
    }
    free(buf);
    return rc;
}
