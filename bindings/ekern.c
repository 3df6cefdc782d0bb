/* Core of the edgesdk kernels: thread pool, activation preparation, dispatch,
 * run-time ISA selection and the portable tiles that always build. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <math.h>
#include <float.h>
#include "ek_internal.h"
#include "ek_blocks.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EK_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define EK_RELAX() __asm__ __volatile__("yield")
#else
#define EK_RELAX() ((void)0)
#endif

/* ---------------------------------------------------------------- portable tiles */
#define EK_TARGET
#define EK_NAME tile_f32_portable
#include "ek_tile_f32.h"
#undef EK_NAME
#define EK_NAME tile_i8_portable
#include "ek_tile_i8.h"
#undef EK_NAME
#undef EK_TARGET


/* ---------------------------------------------------------------- thread pool */
#define EK_MAXT 256
/* The caller spins this many relax-iterations waiting for joined workers before
 * yielding.  Workers spin EK_SPIN_US before sleeping: decode issues a matmul every few
 * microseconds, and a futex wake costs more than that. */
#define EK_SPIN 20000
/* how long an idle worker spins before sleeping on the condition variable */
#define EK_SPIN_US 500.0

#include <time.h>
static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

typedef void (*ek_job_fn)(void *arg, int tid);

/* A job is open for joining until the caller finishes its own share; the caller then
 * closes it and waits only for workers that joined.  A worker that wakes late (slept,
 * descheduled on a busy machine) finds the job closed and never delays the caller.
 * ticket = gen << 32 | closed << 31 | joined. */
#define EK_CLOSED (1ull << 31)

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th[EK_MAXT];
    int nworkers;                /* threads besides the caller */
    atomic_int gen;
    _Atomic unsigned long long ticket;
    atomic_int finished;
    ek_job_fn fn;
    void *arg;
    int active;                  /* at most active-1 workers join */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

/* Serializes matmul calls: the pool and the scratch buffers are shared. */
static pthread_mutex_t call_mu = PTHREAD_MUTEX_INITIALIZER;
static int pool_size = 1;        /* threads a call uses by default, caller included */

static atomic_long pool_joins;

long ek_pool_joins(void) { return atomic_load(&pool_joins); }

static void worker_join(unsigned g)
{
    unsigned long long t = atomic_load_explicit(&pool.ticket, memory_order_acquire);
    for (;;) {
        if ((unsigned)(t >> 32) != g || (t & EK_CLOSED)) return;
        const int joined = (int)(t & 0x7fffffffu);
        if (joined + 1 >= pool.active) return;
        if (atomic_compare_exchange_weak_explicit(&pool.ticket, &t, t + 1, memory_order_acq_rel,
                                                  memory_order_acquire))
            break;
    }
    pool.fn(pool.arg, (int)(t & 0x7fffffffu) + 1);
    atomic_fetch_add_explicit(&pool.finished, 1, memory_order_release);
    atomic_fetch_add_explicit(&pool_joins, 1, memory_order_relaxed);
}

static void *worker_main(void *p)
{
    (void)p;
    int seen = atomic_load(&pool.gen);
    for (;;) {
        int g = seen;
        /* spin by time, not iterations: pause costs 10-150 cycles depending on the core */
        const double until = now_us() + EK_SPIN_US;
        for (int i = 1; (g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen; i++) {
            EK_RELAX();
            if ((i & 63) == 0 && now_us() > until) break;
        }
        if (g == seen) {
            pthread_mutex_lock(&pool.mu);
            while ((g = atomic_load(&pool.gen)) == seen) pthread_cond_wait(&pool.cv, &pool.mu);
            pthread_mutex_unlock(&pool.mu);
        }
        seen = g;
        worker_join((unsigned)g);
    }
    return NULL;
}

static void atfork_child(void)
{
    /* threads do not survive fork(); start over lazily in the child */
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.cv, NULL);
    pthread_mutex_init(&call_mu, NULL);
    pool.nworkers = 0;
}

static int pool_grow(int nthreads)
{
    static int atfork_done = 0;
    if (!atfork_done) {
        pthread_atfork(NULL, NULL, atfork_child);
        atfork_done = 1;
    }
    while (pool.nworkers + 1 < nthreads && pool.nworkers + 1 < EK_MAXT) {
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 256 * 1024);
        int rc = pthread_create(&pool.th[pool.nworkers], &at, worker_main, NULL);
        pthread_attr_destroy(&at);
        if (rc != 0) return EK_ENOMEM;
        pthread_detach(pool.th[pool.nworkers]);
        pool.nworkers++;
    }
    return 0;
}

/* Runs fn(arg, tid) on the caller (tid 0) and on up to nthreads-1 workers that join in
 * time; fn must split its work dynamically (atomic counters), never by tid. */
static void pool_run(ek_job_fn fn, void *arg, int nthreads)
{
    if (nthreads <= 1 || pool.nworkers == 0) {
        fn(arg, 0);
        return;
    }
    pool.fn = fn;
    pool.arg = arg;
    pool.active = nthreads;
    atomic_store_explicit(&pool.finished, 0, memory_order_relaxed);
    const unsigned g = (unsigned)atomic_load(&pool.gen) + 1u;
    atomic_store_explicit(&pool.ticket, (unsigned long long)g << 32, memory_order_release);
    pthread_mutex_lock(&pool.mu);
    atomic_store_explicit(&pool.gen, (int)g, memory_order_release);
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    fn(arg, 0);
    const unsigned long long t = atomic_fetch_or_explicit(&pool.ticket, EK_CLOSED, memory_order_acq_rel);
    const int joined = (int)(t & 0x7fffffffu);
    for (long i = 0; atomic_load_explicit(&pool.finished, memory_order_acquire) < joined; i++) {
        if (i < EK_SPIN) EK_RELAX();
        else sched_yield();
    }
}

int ek_set_threads(int n)
{
    if (n < 1) n = 1;
    if (n > EK_MAXT) n = EK_MAXT;
    pthread_mutex_lock(&call_mu);
    pool_size = n; /* workers start with the first call that uses them (threads_for), not at import */
    pthread_mutex_unlock(&call_mu);
    return 0;
}

int ek_get_threads(void) { return pool_size; }

/* ---------------------------------------------------------------- SIMD paths */
static int quant_rows(const float *x, int m0, int m1, int k, int Kp, int8_t *xq, float *dx, float *cs);
static uint64_t stream_portable(const uint8_t *p, size_t n, size_t pf);

static const ek_path portable_path = {"portable", "", 1, {tile_i8_portable, tile_i8_portable}, {NULL, NULL},
                                      {tile_f32_portable, tile_f32_portable}, quant_rows, {stream_portable, NULL},
                                      ek_blocks_rows_portable};

/* Every path, in order of preference (fastest first); the portable one runs anywhere. */
static const ek_path *const paths[] = {&ek_x86_paths[0], &ek_x86_paths[1], &ek_x86_paths[2], &ek_x86_paths[3],
                                       &ek_neon_path, &portable_path};
#define NPATHS ((int)(sizeof paths / sizeof paths[0]))
_Static_assert(EK_X86_NPATHS == 4, "list every x86 path above");

int ek_path_count(void) { return NPATHS; }

const char *ek_path_name(int i) { return i >= 0 && i < NPATHS ? paths[i]->name : NULL; }

unsigned ek_path_needs(int i) { return i >= 0 && i < NPATHS ? ek_cpu_parse(paths[i]->isa) : EK_CPU_UNKNOWN; }

int ek_path_built(int i) { return i >= 0 && i < NPATHS && paths[i]->built; }

int ek_path_runnable(int i)
{
    const unsigned need = ek_path_needs(i);
    return ek_path_built(i) && (ek_cpu_features() & need) == need;
}

int ek_path_best(void)
{
    for (int i = 0; i < NPATHS; i++)
        if (ek_path_runnable(i)) return i;
    return NPATHS - 1;
}

/* The path matmuls run; read under call_mu.  Only ever a runnable one. */
static const ek_path *cur_path;
static int cur_index = -1;

static const ek_path *path_now(void)
{
    if (!cur_path) {
        cur_index = ek_path_best();
        cur_path = paths[cur_index];
    }
    return cur_path;
}

int ek_path_get(void)
{
    pthread_mutex_lock(&call_mu);
    path_now();
    const int i = cur_index;
    pthread_mutex_unlock(&call_mu);
    return i;
}

int ek_path_set(int i)
{
    if (!ek_path_runnable(i)) i = ek_path_best();
    pthread_mutex_lock(&call_mu);
    cur_index = i;
    cur_path = paths[i];
    pthread_mutex_unlock(&call_mu);
    return i;
}

const char *ek_build_info(void)
{
    return "cc=" __VERSION__
#if defined(__x86_64__)
           " arch=x86_64"
#elif defined(__aarch64__)
           " arch=aarch64"
#endif
#if defined(__SANITIZE_ADDRESS__)
           " asan=1"
#endif
        ;
}

/* the read plan (ekern.h); read under call_mu */
static int read_plan = -1;

int ek_read_default(void) { return ek_cpu_amd() ? 1 : 0; }

static int read_now(void)
{
    if (read_plan < 0) read_plan = ek_read_default();
    return read_plan;
}

int ek_read_get(void)
{
    pthread_mutex_lock(&call_mu);
    const int p = read_now();
    pthread_mutex_unlock(&call_mu);
    return p;
}

int ek_read_set(int plan)
{
    pthread_mutex_lock(&call_mu);
    read_plan = plan == 0 || plan == 1 ? plan : ek_read_default();
    const int p = read_plan;
    pthread_mutex_unlock(&call_mu);
    return p;
}

/* whether an M-row matmul reads one weight stream per tile (the "single" plan acts at M <= EK_READ_M) */
static int one_stream(int m) { return m <= EK_READ_M && read_now(); }

int ek_amx_usable(void)
{
    const unsigned amx = ek_cpu_parse("amx-tile,amx-int8");
    return (ek_cpu_features() & amx) == amx;
}

/* ---------------------------------------------------------------- activations */
static int nonfinite(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return (u & 0x7f800000u) == 0x7f800000u;
}

/* amax / 127 of n activations (the block's scale) and the multiplier 127 / amax making the codes
 * (0 for an all-zero block); EK_ENONFINITE on NaN/Inf. `half`: the scale is rounded to fp16, as
 * llama.cpp's Q8_0 stores it (its Q8_K, for K-quants, keeps it in f32), so the int8 path computes
 * llama.cpp's numbers. Same arithmetic as edgesdk/_kernels_ref.py:quantize_activations. */
static int block_scale(const float *x, int n, int half, float *d, float *id)
{
    float amax = 0.0f;
    int bad = 0;
    for (int t = 0; t < n; t++) {
        const float a = fabsf(x[t]);
        bad |= nonfinite(a);
        amax = a > amax ? a : amax;
    }
    if (bad) return EK_ENONFINITE;
    *d = amax / 127.0f;
    if (half && *d < 65504.0f) *d = ek_round_f16(*d);
    *id = amax > 0.0f ? 127.0f / amax : 0.0f;
    return 0;
}

/* One int8 code: rint(x * id) (round-half-even) clamped to +-127 */
static inline int8_t quant1(float x, float id)
{
    const float v = nearbyintf(x * id);
    return (int8_t)(v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v));
}

/* Activations per 32-block, bit for bit the reference: dx[m][S] scales, cs[m][S] = dx * sum(xq). */
static int quant_rows(const float *x, int m0, int m1, int k, int Kp, int8_t *xq, float *dx, float *cs)
{
    const int S = Kp / 32;
    for (int i = m0; i < m1; i++) {
        const float *xr = x + (size_t)i * k;
        for (int s = 0; s < S; s++) {
            const int k0 = s * 32, n = k - k0 < 32 ? k - k0 : 32;
            float d, id;
            if (block_scale(xr + k0, n, 1, &d, &id)) return EK_ENONFINITE;
            int8_t *q = xq + (size_t)i * Kp + k0;
            int32_t sum = 0;
            for (int t = 0; t < 32; t++) {
                q[t] = t < n ? quant1(xr[k0 + t], id) : 0;
                sum += q[t];
            }
            dx[(size_t)i * S + s] = d;
            cs[(size_t)i * S + s] = d * (float)sum;
        }
    }
    return 0;
}

/* Activations of K-quant matmuls: one scale per 256 elements (what llama.cpp's Q8_K uses), so a
 * super-block's sub-block dots add up in integers; same rounding as quant_rows. dx[m][k/256],
 * cs[m][k/32] = dx * sum(xq) per 32 elements (the min terms). k is a multiple of 256. */
static int quant_rows_super(const float *x, int m, int k, int8_t *xq, float *dx, float *cs)
{
    const int nb = k / 256;
    for (int i = 0; i < m; i++)
        for (int b = 0; b < nb; b++) {
            const float *xr = x + (size_t)i * k + 256 * b;
            float d, id;
            if (block_scale(xr, 256, 0, &d, &id)) return EK_ENONFINITE;
            int8_t *q = xq + (size_t)i * k + 256 * b;
            for (int s = 0; s < 8; s++) {
                int32_t sum = 0;
                for (int t = 32 * s; t < 32 * s + 32; t++) {
                    q[t] = quant1(xr[t], id);
                    sum += q[t];
                }
                cs[(size_t)i * (k / 32) + 8 * b + s] = d * (float)sum;
            }
            dx[(size_t)i * nb + b] = d;
        }
    return 0;
}

static int copy_rows(const float *x, int m0, int m1, int k, int Kp, float *xf, float *xs)
{
    const int S = Kp / 32;
    for (int i = m0; i < m1; i++) {
        const float *xr = x + (size_t)i * k;
        float *o = xf + (size_t)i * Kp;
        int bad = 0;
        for (int t = 0; t < k; t++) bad |= nonfinite(xr[t]);
        if (bad) return EK_ENONFINITE;
        memcpy(o, xr, sizeof(float) * (size_t)k);
        memset(o + k, 0, sizeof(float) * (size_t)(Kp - k));
        for (int s = 0; s < S; s++) {
            float sum = 0.0f;
            for (int t = 0; t < 32; t++) sum += o[s * 32 + t];
            xs[(size_t)i * S + s] = sum;
        }
    }
    return 0;
}

int ek_quantize_act(const float *x, int m, int k, signed char *xq, float *dx, float *cs)
{
    if (!x || !xq || !dx || !cs || m < 0 || k <= 0) return EK_EINVAL;
    pthread_mutex_lock(&call_mu);
    const ek_quant_fn q = path_now()->quant ? path_now()->quant : quant_rows;
    const int rc = q(x, 0, m, k, (k + 31) / 32 * 32, (int8_t *)xq, dx, cs);
    pthread_mutex_unlock(&call_mu);
    return rc;
}

int ek_rows8_native(int type)
{
#if defined(__x86_64__) && defined(__GNUC__)
    pthread_mutex_lock(&call_mu);
    const int simd = path_now() != &portable_path;
    pthread_mutex_unlock(&call_mu);
    return simd && ek_rows8_has(type);
#else
    (void)type;
    return 0;
#endif
}

int ek_quantize_act256(const float *x, int m, int k, signed char *xq, float *dx, float *cs)
{
    if (!x || !xq || !dx || !cs || m < 0 || k <= 0 || k % 256) return EK_EINVAL;
    pthread_mutex_lock(&call_mu);
    const ek_path *path = path_now();
    const int rc = (path->quant256 ? path->quant256 : quant_rows_super)(x, m, k, (int8_t *)xq, dx, cs);
    pthread_mutex_unlock(&call_mu);
    return rc;
}

/* ---------------------------------------------------------------- scratch */
static void *scratch[6];
static size_t scratch_cap[6];

static void *scratch_get(int i, size_t bytes)
{
    if (bytes == 0) bytes = 64;
    if (scratch_cap[i] < bytes) {
        void *p = NULL;
        if (posix_memalign(&p, 64, bytes) != 0) return NULL;
        free(scratch[i]);
        scratch[i] = p;
        scratch_cap[i] = bytes;
    }
    return scratch[i];
}

/* The pool's work split: items [0, total) handed out `chunk` at a time to whichever thread asks
 * (dynamic, never by thread id). Every job struct (probe, matmuls) starts with one. */
typedef struct ek_range {
    atomic_int next;
    int chunk, total;
    void (*run)(const void *job, int lo, int hi);
} ek_range;

static void range_main(void *arg, int tid)
{
    ek_range *r = arg;
    (void)tid;
    for (;;) {
        const int lo = atomic_fetch_add_explicit(&r->next, r->chunk, memory_order_relaxed);
        if (lo >= r->total) break;
        r->run(arg, lo, lo + r->chunk < r->total ? lo + r->chunk : r->total);
    }
}

/* Runs `job` (whose first member is r) over [0, total) on nt threads, chunk items at a time (>= 1). */
static void range_run(ek_range *r, int total, int chunk, void (*run)(const void *, int, int), int nt)
{
    r->total = total;
    r->chunk = chunk < 1 ? 1 : chunk;
    r->run = run;
    atomic_store(&r->next, 0);
    pool_run(range_main, r, nt);
}

/* nt threads (caller included) for `units` work items, at most EK_MAXT, with the workers started;
 * fewer when the pool cannot grow */
static int pool_threads(int nt, int units)
{
    if (nt > EK_MAXT) nt = EK_MAXT;
    if (nt > units) nt = units;
    if (nt > 1 && pool_grow(nt) != 0) nt = pool.nworkers + 1;
    return nt;
}

/* ---------------------------------------------------------------- parallel-for for other modules */
typedef struct {
    ek_range range;
    void (*fn)(void *, int, int);
    void *arg;
} ek_task_job;

static void run_task(const void *job, int lo, int hi)
{
    const ek_task_job *j = job;
    j->fn(j->arg, lo, hi);
}

int ek_parallel_for(void (*fn)(void *arg, int lo, int hi), void *arg, int total, int chunk, int nthreads)
{
    if (!fn || total < 0 || chunk < 1 || nthreads < 0) return EK_EINVAL;
    if (total == 0) return 0;
    pthread_mutex_lock(&call_mu);
    const int nt = pool_threads(nthreads > 0 ? nthreads : pool_size, (total - 1) / chunk + 1);
    ek_task_job j;
    memset(&j, 0, sizeof j);
    j.fn = fn;
    j.arg = arg;
    range_run(&j.range, total, chunk, run_task, nt);
    pthread_mutex_unlock(&call_mu);
    return 0;
}

/* ---------------------------------------------------------------- bandwidth probe */
#define EK_STREAM_PIECE (1 << 20) /* bytes per work item */
typedef struct {
    ek_range range;       /* over 1 MiB pieces */
    const uint8_t *p;
    ek_stream_fn read;
    size_t n, pf;
    _Atomic uint64_t sum;
} ek_stream_job;

static uint64_t stream_portable(const uint8_t *p, size_t n, size_t pf)
{
    uint64_t a[8] = {0}, v, s = 0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        if (pf) __builtin_prefetch(p + i + pf, 0, 2);
        for (int k = 0; k < 8; k++) {
            memcpy(&v, p + i + 8 * k, 8);
            a[k] ^= v;
        }
    }
    for (int k = 0; k < 8; k++) s ^= a[k];
    for (; i < n; i++) s += p[i];
    return s;
}

static void run_stream(const void *job, int lo, int hi)
{
    ek_stream_job *j = (ek_stream_job *)job;
    const size_t a = (size_t)lo * EK_STREAM_PIECE, b = (size_t)hi * EK_STREAM_PIECE < j->n ? (size_t)hi * EK_STREAM_PIECE : j->n;
    atomic_fetch_xor_explicit(&j->sum, j->read(j->p + a, b - a, j->pf), memory_order_relaxed);
}

int ek_stream_loops(void)
{
    const ek_path *pt = path_now();
    return pt->stream[0] && pt->stream[1] ? 2 : 1;
}

unsigned long long ek_stream_read(const void *p, size_t n, int nthreads, int loop, size_t prefetch)
{
    static ek_stream_job j;
    if (!p || loop < 0 || loop >= ek_stream_loops()) return 0;
    pthread_mutex_lock(&call_mu);
    int nt = nthreads > 0 ? nthreads : pool_size;
    if (nt > EK_MAXT) nt = EK_MAXT;
    if (nt > 1 && pool_grow(nt) != 0) nt = pool.nworkers + 1;
    j.p = p;
    j.read = path_now()->stream[0] ? path_now()->stream[loop] : stream_portable;
    j.n = n;
    j.pf = prefetch;
    atomic_store(&j.sum, 0);
    range_run(&j.range, (int)((n + EK_STREAM_PIECE - 1) / EK_STREAM_PIECE), 1, run_stream, nt);
    const uint64_t s = atomic_load(&j.sum);
    pthread_mutex_unlock(&call_mu);
    return s;
}

/* ---------------------------------------------------------------- matmul */
typedef struct {
    ek_range range;      /* over row groups */
    ek_ctx c;
    ek_tile_fn tile;
    ek_tile_fn tile2;    /* two row groups at once, or NULL */
} ek_job;

static void run_groups(const void *job, int g0, int g1)
{
    const ek_job *j = job;
    const ek_ctx *c = &j->c;
    const int N = c->w->n, M = c->M;
    float out[2 * EK_MR * 16];
    /* m outer within a chunk: the chunk's weights stay in L2 while each
     * activation tile is streamed once per chunk */
    for (int m0 = 0; m0 < M; m0 += EK_MR) {
        const int mr = M - m0 < EK_MR ? M - m0 : EK_MR;
        for (int g = g0; g < g1;) {
            const int ng = (j->tile2 && g + 1 < g1) ? 2 : 1;
            if (ng == 2) j->tile2(c, g, m0, mr, out);
            else j->tile(c, g, m0, mr, out);
            for (int h = 0; h < ng; h++, g++) {
                const int n0 = g * 16, nr = N - n0 < 16 ? N - n0 : 16;
                for (int i = 0; i < mr; i++)
                    memcpy(c->y + (size_t)(m0 + i) * c->ldy + n0, out + (h * EK_MR + i) * 16, sizeof(float) * (size_t)nr);
            }
        }
    }
}

/* Activation rows are independent: a prompt's are quantized on the pool (done serially, this was
 * about a tenth of a 2-thread prompt matmul). Kp 0: one scale per 256 elements (quant256). */
typedef struct quant_job {
    ek_range range;
    const ek_path *path;
    const float *x;
    int k, Kp;
    int8_t *xq;
    float *dx, *cs;
    atomic_int rc;
} quant_job;

static void run_quant(const void *job, int lo, int hi)
{
    quant_job *q = (quant_job *)job;
    const ek_path *p = q->path;
    const size_t k = (size_t)q->k;
    const int rc = q->Kp ? (p->quant ? p->quant : quant_rows)(q->x, lo, hi, q->k, q->Kp, q->xq, q->dx, q->cs)
                         : (p->quant256 ? p->quant256 : quant_rows_super)(q->x + lo * k, hi - lo, q->k, q->xq + lo * k, q->dx + lo * (k / 256), q->cs + lo * (k / 32));
    if (rc) atomic_store(&q->rc, rc);
}

static int quantize_acts(const ek_path *path, const float *x, int m, int k, int Kp, int8_t *xq, float *dx, float *cs, int nt)
{
    quant_job q = {.path = path, .x = x, .k = k, .Kp = Kp, .xq = xq, .dx = dx, .cs = cs};
    atomic_init(&q.rc, 0);
    if (nt > 1 && m >= 8) range_run(&q.range, m, (m + 4 * nt - 1) / (4 * nt), run_quant, nt);
    else run_quant(&q, 0, m);
    return atomic_load(&q.rc);
}

/* Activations for a call (scratch buffers, under call_mu): int8 per 32-block (xq, dx, cs) or the
 * exact fp32 copy with block sums (xf, xs). K is padded to Kp. */
static int prepare_acts(const ek_path *path, const float *x, int m, int k, int Kp, int act_int8, int8_t **xq,
                        float **dx, float **cs, float **xf, float **xs, int nt)
{
    const int S = Kp / 32;
    if (act_int8) {
        *xq = scratch_get(0, (size_t)m * Kp);
        *dx = scratch_get(1, sizeof(float) * (size_t)m * S);
        *cs = scratch_get(2, sizeof(float) * (size_t)m * S);
        if (!*xq || !*dx || !*cs) return EK_ENOMEM;
        return quantize_acts(path, x, m, k, Kp, *xq, *dx, *cs, nt);
    }
    *xf = scratch_get(3, sizeof(float) * (size_t)m * Kp);
    *xs = scratch_get(1, sizeof(float) * (size_t)m * S);
    if (!*xf || !*xs) return EK_ENOMEM;
    return copy_rows(x, 0, m, k, Kp, *xf, *xs);
}

/* Threads for a call reading weight_bytes per pass over `units` work items (pool started). */
static int threads_for(int nthreads, size_t weight_bytes, int m, int units)
{
    int nt = nthreads > 0 ? nthreads : pool_size;
    /* below ~64 KiB of weight traffic a second thread costs more than it saves */
    const size_t work = weight_bytes * (size_t)(m < 8 ? m : 8), per_thread = 64 * 1024;
    if ((size_t)nt > work / per_thread) nt = (int)(work / per_thread) > 1 ? (int)(work / per_thread) : 1;
    return pool_threads(nt, units);
}

static int matmul_blocks(const ek_weight *wt, const float *x, int m, float *y, int ldy, int act_int8, int nthreads);
static int matmul_one(const ek_weight *w, const float *x, int m, float *y, int ldy, int act_int8, int nthreads);

int ek_matmul(const ek_weight *w, const float *x, int m, float *y, int act_int8, int nthreads)
{
    if (!w || w->nparts < 0) return EK_EINVAL;
    if (w->nparts == 0) return matmul_one(w, x, m, y, w->n, act_int8, nthreads);
    int n = 0;
    if (!w->parts) return EK_EINVAL;
    for (int p = 0; p < w->nparts; p++) {
        const ek_weight *pw = &w->parts[p];
        if (pw->nparts || pw->k != w->k || pw->n <= 0) return EK_EINVAL;
        n += pw->n;
    }
    if (n != w->n || !y) return EK_EINVAL;
    for (int p = 0, col = 0; p < w->nparts; col += w->parts[p].n, p++) {
        const int rc = matmul_one(&w->parts[p], x, m, y + col, w->n, act_int8, nthreads);
        if (rc) return rc;
    }
    return 0;
}

static int matmul_one(const ek_weight *w, const float *x, int m, float *y, int ldy, int act_int8, int nthreads)
{
    if (w->gtype) return matmul_blocks(w, x, m, y, ldy, act_int8, nthreads);
    if (!w || !x || !y || !w->q || !w->d || m <= 0 || w->n <= 0 || w->k <= 0) return EK_EINVAL;
    if ((w->bits != 4 && w->bits != 8) || w->spb <= 0 || w->nblk <= 0) return EK_EINVAL;
    const int Kp = (w->k + 31) / 32 * 32, S = Kp / 32;
    if ((S + w->spb - 1) / w->spb != w->nblk) return EK_EINVAL;

    pthread_mutex_lock(&call_mu);
    const ek_path *path = path_now();
    int rc = 0;
    ek_job j;
    memset(&j, 0, sizeof j);
    j.c.w = w;
    j.c.M = m;
    j.c.Kp = Kp;
    j.c.S = S;
    j.c.G = (w->n + 15) / 16;
    j.c.y = y;
    j.c.ldy = ldy;
    j.c.act_int8 = act_int8 ? 1 : 0;
    const int nt = threads_for(nthreads, (size_t)w->n * Kp * (size_t)w->bits / 8, m, j.c.G);
    {
        int8_t *xq = NULL;
        float *dx = NULL, *cs = NULL, *xf = NULL, *xs = NULL;
        rc = prepare_acts(path, x, m, w->k, Kp, act_int8, &xq, &dx, &cs, &xf, &xs, nt);
        j.c.xq = xq; j.c.dx = dx; j.c.cs = cs; j.c.xf = xf; j.c.xs = xs;
    }
    if (rc) goto done;
    {
        const int b8 = w->bits == 8;
        const ek_tile_fn t = act_int8 ? path->i8[b8] : path->f32[b8];
        j.tile = t ? t : (act_int8 ? portable_path.i8[b8] : portable_path.f32[b8]);
        j.tile2 = act_int8 && !one_stream(m) ? path->i8x2[b8] : NULL;
    }

    /* ~4 work items per thread balances load without hurting weight streaming */
    int chunk = j.c.G / (nt * 4);
    if (m > 1) {
        /* keep a chunk's weights (reused by every activation tile) within ~512 KiB of L2 */
        const int cap = (int)((512 * 1024) / ((size_t)16 * Kp * (size_t)w->bits / 8));
        if (chunk > cap) chunk = cap;
    }
    range_run(&j.range, j.c.G, chunk > 64 ? 64 : chunk, run_groups, nt);
done:
    pthread_mutex_unlock(&call_mu);
    return rc;
}

/* ---------------------------------------------------------------- GGUF-native block rows */
typedef struct {
    ek_range range;      /* over weight rows */
    ek_bctx c;
    ek_blocks_fn rows;
} ek_bjob;

/* An interleaved weight: whole groups of 8 rows, and a field table that covers a block exactly */
static int rows8_valid(const ek_weight *w, const ek_btype *t)
{
    if (w->n % 8 || !w->fields || w->nfields <= 0 || w->nfields > 16) return 0;
    int total = 0;
    for (int f = 0; f < w->nfields; f++) {
        const int size = w->fields[2 * f], word = w->fields[2 * f + 1];
        if (word <= 0 || size <= 0 || size % word) return 0;
        total += size;
    }
    return total == t->nbytes;
}

/* ek_bctx.xs: exact sums of the int8 activations per `sub` elements, in vpmaddwd pair order */
static inline __attribute__((always_inline)) int16_t sum_of(const int8_t *x, const int n)
{
    int s = 0;
    for (int e = 0; e < n; e++) s += x[e];
    return (int16_t)s; /* |s| <= 32 * 127 */
}

typedef struct sums_job {
    ek_range range; /* over activation rows */
    const ek_bctx *c;
    int16_t *xs;
    int32_t *xo;
} sums_job;

static void run_sums(const void *job, int lo, int hi)
{
    const sums_job *j = job;
    const ek_bctx *c = j->c;
    const int sub = c->t->sub, J = c->k / sub, stride = c->xs_stride, nb = c->k / 32;
    for (int i = lo; i < hi; i++) {
        const int8_t *x = c->xq + (size_t)i * c->k;
        int16_t *o = j->xs + (size_t)i * stride;
        for (int q = J; q < stride; q++) o[ek_xs_index(q)] = 0;
        for (int q = 0; q < J; q++) o[ek_xs_index(q)] = sub == 16 ? sum_of(x + 16 * q, 16) : sum_of(x + (size_t)sub * q, 32);
        if (j->xo) /* Q5_0: each block's integer dot starts at -16 * sum(xq), its code offset */
            for (int b = 0; b < nb; b++) j->xo[(size_t)i * nb + b] = -16 * o[ek_xs_index(b)];
    }
}

static int sums_per_sub(ek_bctx *c, int nt)
{
    const int J = c->k / c->t->sub, stride = (J + 3) / 4 * 4;
    const int q5_0 = c->t->code == 6;
    sums_job j = {.c = c, .xs = scratch_get(4, sizeof(int16_t) * (size_t)c->M * stride)};
    if (q5_0) j.xo = scratch_get(5, sizeof(int32_t) * (size_t)c->M * (c->k / 32));
    if (!j.xs || (q5_0 && !j.xo)) return EK_ENOMEM;
    c->xs_stride = stride;
    if (nt > 1 && c->M >= 8) range_run(&j.range, c->M, (c->M + 4 * nt - 1) / (4 * nt), run_sums, nt);
    else run_sums(&j, 0, c->M);
    c->xs = j.xs;
    c->xo = j.xo;
    return 0;
}

static void run_rows(const void *job, int r0, int r1)
{
    const ek_bjob *j = job;
    j->rows(&j->c, r0, r1);
}

static int matmul_blocks(const ek_weight *wt, const float *x, int m, float *y, int ldy, int act_int8, int nthreads)
{
    const ek_btype *t = ek_btype_of(wt->gtype);
    const uint8_t *w = wt->q;
    const int n = wt->n, k = wt->k;
    if (!t || !w || !x || !y || n <= 0 || k <= 0 || m <= 0 || k % t->block || k % 32) return EK_EINVAL;
    if (wt->rows8 && !rows8_valid(wt, t)) return EK_EINVAL;
    pthread_mutex_lock(&call_mu);
    const ek_path *path = path_now();
    int rc = 0;
    ek_bjob j;
    memset(&j, 0, sizeof j);
    j.c = (ek_bctx){.t = t, .w = w, .n = n, .k = k, .M = m, .y = y, .ldy = ldy, .act_int8 = act_int8 ? 1 : 0,
                    .rows8 = wt->rows8 ? 1 : 0, .fields = wt->fields, .nfields = wt->nfields, .one_stream = one_stream(m)};
    j.c.ab = t->block >= 256 ? 256 : 32; /* activations are quantized per weight block */
    const int nt = threads_for(nthreads, (size_t)n * (k / t->block) * (size_t)t->nbytes, m, n);
    if (act_int8 && j.c.ab == 256) {
        int8_t *xq = scratch_get(0, (size_t)m * k);
        float *dx = scratch_get(1, sizeof(float) * (size_t)m * (k / 256));
        float *cs = scratch_get(2, sizeof(float) * (size_t)m * (k / 32));
        rc = (!xq || !dx || !cs) ? EK_ENOMEM : quantize_acts(path, x, m, k, 0, xq, dx, cs, nt);
        j.c.xq = xq; j.c.dx = dx; j.c.cs = cs;
    } else {
        int8_t *xq = NULL;
        float *dx = NULL, *cs = NULL, *xf = NULL, *xs = NULL;
        rc = prepare_acts(path, x, m, k, k, act_int8, &xq, &dx, &cs, &xf, &xs, nt);
        j.c.xq = xq; j.c.dx = dx; j.c.cs = cs; j.c.xf = xf;
    }
    if (rc) goto done;
    if (wt->rows8 && act_int8) rc = sums_per_sub(&j.c, nt);
    if (rc) goto done;
    j.rows = path->blocks ? path->blocks : ek_blocks_rows_portable;
    int chunk = n / (nt * 4);
    chunk = chunk > 256 ? 256 : chunk;
    if (wt->rows8) chunk = chunk < 8 ? 8 : chunk / 8 * 8; /* whole groups of 8 rows */
    range_run(&j.range, n, chunk, run_rows, nt);
done:
    pthread_mutex_unlock(&call_mu);
    return rc;
}
