/* edgesdk._cllm: fused decoder forward (decode, verification and prefill chunks). Also fed to cffi's cdef():
 * plain declarations only (no includes, no expressions in array sizes). */
typedef int (*llm_matmul_fn)(const void *w, const float *x, int m, float *y, int act_int8, int nthreads);
/* Runs fn(arg, lo, hi) over [0, total) in chunks on nthreads threads (0: the pool's size); returns
 * 0 or a negative error. fn must not call matmul (both hold the kernels' call lock). */
typedef int (*llm_parallel_fn)(void (*fn)(void *arg, int lo, int hi), void *arg, int total, int chunk, int nthreads);

/* A LoRA term: y[t, row0 .. row0 + n) += scale * B (A x_t) for input rows x_t of k values. A is
 * (rank, k) and B is stored transposed, bt (rank, n), both row-major float32: both products are
 * rank contiguous passes (dot products over x_t, then axpys into y_t). */
typedef struct llm_lora {
    const float *a;
    const float *bt;
    float scale;
    int rank;
    int k;
    int n;
    int row0;
} llm_lora;

/* The LoRA terms a layer's projections add: arrays of n_* terms (a fused projection has one per
 * adapted part), NULL when n_* is 0. */
typedef struct llm_lora_layer {
    const llm_lora *qkv;
    const llm_lora *o;
    const llm_lora *gu;
    const llm_lora *down;
    int n_qkv;
    int n_o;
    int n_gu;
    int n_down;
} llm_lora_layer;

typedef struct llm_layer {
    const void *wqkv;        /* fused Q|K|V rows, opaque weight descriptor for matmul */
    const void *wo;
    const void *wgu;         /* fused gate|up rows */
    const void *wdown;
    const float *attn_norm;
    const float *ffn_norm;
    const float *bqkv;       /* Q|K|V bias (n_head + 2 n_head_kv) * head_dim, or NULL */
    const float *q_norm;     /* per-head RMS norm weights of Q and K (head_dim each) before RoPE, or NULL */
    const float *k_norm;
    const float *post_attn_norm; /* RMS norm of the attention / FFN output before the residual add, or NULL */
    const float *post_ffn_norm;
    int window;              /* keys attended: the last `window` positions incl. the query's own; 0 = all */
    int rope;                /* which RoPE table (row of llm_model.inv_freq) */
    void *k;                 /* this layer's key cache, (n_head_kv, kv_cap) rows stored as kv_type: position p in slot p % kv_cap */
    void *v;
    int kv_cap;              /* positions the cache holds: n_ctx, or a ring of >= window + LLM_MAX_ROWS */
} llm_layer;

typedef struct llm_model {
    int n_layer;
    int n_embd;
    int n_ff;
    int n_head;
    int n_head_kv;
    int head_dim;
    int rope_dim;
    int n_ctx;
    int rope_neox;           /* 0: rotate pairs (2i, 2i+1); 1: rotate (i, i + rope_dim/2) */
    int act_gelu;            /* FFN activation of the gate: 0 SiLU (SwiGLU), 1 tanh-GELU (GeGLU) */
    float rms_eps;
    int n_rope;              /* RoPE tables: distinct (base, scale) pairs used by the layers */
    const double *inv_freq;  /* n_rope x rope_dim / 2 frequencies */
    const float *rope_scale; /* n_rope: positions are divided by this (linear scaling) */
    const llm_layer *layers;
    const void *lm_head;
    const float *out_norm;
    llm_matmul_fn matmul;
    llm_parallel_fn parallel; /* prompt chunks' attention over (token, head) pairs; NULL: one thread */
    int nthreads;            /* passed to matmul; 0 = its pool size */
    int nthreads_decode;     /* layer matmuls of steps of <= 16 tokens (0 = nthreads): see _model.py */
    int act_int8;            /* passed to matmul: 1 = int8 activations, 0 = exact fp32 */
    unsigned cpu_allowed;    /* CPU features (ek_cpu.h bits) the loop's SIMD code may use: the kernels' path needs */
    int kv_type;             /* LLM_KV_*: how every layer's k/v rows are stored */
    int n_vocab;             /* LM head rows (bounds its LoRA terms) */
    const llm_lora_layer *lora; /* n_layer entries: a LoRA adapter's terms, added beside the weights; NULL: none */
    const llm_lora *lora_head;  /* the LM head's terms (n_lora_head of them; NULL when 0) */
    int n_lora_head;
} llm_model;

/* KV-cache storage types. A row of head_dim values is head_dim floats (F32), head_dim IEEE halves
 * (F16), or head_dim / 32 blocks of llama.cpp's block_q8_0 (Q8_0: an fp16 scale d, then 32 int8
 * codes; 34 bytes, not padded). Attention reads the stored type back as float32. */
#define LLM_KV_F32 0
#define LLM_KV_F16 1
#define LLM_KV_Q8_0 2

/* x: (T, n_embd) token embeddings in, residual stream out. Appends T tokens at positions
 * pos0.. to the KV cache. logits: (T - logits_from, n_vocab) or NULL.
 * Returns 0, -1 (bad arguments, a LoRA term that does not fit its projection included), -3 (out of
 * memory) or the matmul's error code. */
int llm_forward(const llm_model *m, float *x, int T, int pos0, float *logits, int logits_from);

/* Name of the SIMD path the loop runs (SwiGLU/GeGLU; attention: llm_attend_path) when allowed these
 * features: the first of its paths whose needs are all allowed and present on this CPU ("portable" when none). */
const char *llm_path(unsigned allowed);

/* Name of the attention path that reads a cache of kv_type with these features allowed (its own
 * table: the half-precision readers need F16C on top of AVX2). NULL for an unknown kv_type. */
const char *llm_attend_path(unsigned allowed, int kv_type);

/* Bytes of one stored row of n values (-1: n does not fit the type), and the row encoder the loop
 * stores keys/values with: round-to-nearest-even halves; Q8_0 exactly as llama.cpp's
 * quantize_row_q8_0_ref (d = amax / 127, codes roundf(x * (1 / d))). Returns 0, or -1 for bad arguments. */
long llm_kv_row_bytes(int kv_type, int n);
int llm_kv_encode(int kv_type, const float *x, int n, void *out);

#define LLM_MAX_ROWS 512
