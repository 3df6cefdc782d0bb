/* edgesdk C kernels: block-quantized weight x fp32 activation matmul.
 *
 * This header is also fed to cffi's cdef(), so it holds only plain declarations
 * (no includes, no macros) — keep it that way.
 *
 * Weight layout "i16x32": rows are grouped 16 at a time (N padded to a multiple of
 * 16) and K is cut into 32-element sub-blocks (K padded to a multiple of 32).
 * For group g and sub-block s the bytes are contiguous:
 *   4-bit: 256 bytes, byte [j][r][t] (j<4, r<16, t<4) holds code k=4j+t of row r
 *          in its low nibble and code k=16+4j+t in its high nibble;
 *   8-bit: 512 bytes, byte [j][r][t] (j<8) holds code k=4j+t of row r, stored
 *          biased (unsigned = signed + 128).
 * One 64-byte line thus feeds one 16-row integer dot product of 4 k-values, the
 * shape of AVX-512 VNNI vpdpbusd with a broadcast activation quad.
 * Scales d (and mins m for asym) are IEEE fp16, laid out [g][block][16 rows].
 * Dequantized weight = d * (code - offset) + m   (m = 0 when mins == NULL).
 */
typedef struct ek_weight {
    const unsigned char *q;
    const unsigned short *d;
    const unsigned short *m;
    int n;        /* rows (output features) */
    int k;        /* reduction length */
    int bits;     /* 4 or 8 */
    int nblk;     /* scale blocks per row */
    int spb;      /* 32-element sub-blocks per scale block */
    int offset;   /* 8 (q4 sym), 128 (q8 sym), 0 (asym) */
    /* gtype 0: the i16x32 layout above; else a GGML type id (edgesdk/quant/_types.py) and q holds the
     * GGUF blocks row-major, n rows of k / block blocks (d, m, bits, nblk, spb, offset unused). */
    int gtype;
    /* nparts > 0: a fused projection of parts of any layouts and types with the same k, stacked
     * as rows (n = the sum of theirs); y gets each part's columns in turn. q, d, m unused then. */
    const struct ek_weight *parts;
    int nparts;
    /* GGUF blocks only. rows8 = 1: rows are interleaved 8 at a time (n a multiple of 8): for each
     * group of 8 rows and block index, the 8 rows' blocks are stored field by field, each field as
     * its words in turn, each word for the 8 rows in turn. fields[2i] is the bytes of field i of a
     * block, fields[2i + 1] its word size (edgesdk/quant/_types.py, QuantType.rows8, is the table). */
    int rows8;
    const unsigned short *fields;
    int nfields;
} ek_weight;

/* y[M][N] = x[M][K] @ W^T.  act_int8: 1 = quantize activations to int8 per 32-block
 * and use integer dot products; 0 = exact fp32 activations.  nthreads <= 0: pool size.
 * GGUF-block weights (gtype != 0) need K to be a multiple of the block and of 32; the caller
 * guarantees q holds n * k / block blocks.
 * Returns 0, or EK_EINVAL (-1), EK_ENONFINITE (-2), EK_ENOMEM (-3). */
int ek_matmul(const ek_weight *w, const float *x, int m, float *y, int act_int8, int nthreads);

/* The C side of the type table, for tests: block geometry of a GGML type (-1 when not decoded),
 * and one block decoded to codes q[block], scale and min (0 without mins) per sub-block. */
int ek_block_type(int type, int *block, int *nbytes);
/* 1 when the SIMD path in effect has kernels for GGML type `type` with rows interleaved 8 at a
 * time (ek_weight.rows8), so that layout is the faster one to hold weights in; 0 when only the
 * portable decoders would read it (they gather each row's block first: correct, slower). */
int ek_rows8_native(int type);
int ek_block_decode(int type, const unsigned char *b, signed char *q, float *sc, float *mn);

/* The activation quantizer used by the int8 path, exposed for tests:
 * xq[m][Kp], dx[m][S] (scale per 32-block), cs[m][S] = dx * sum(xq in block). */
int ek_quantize_act(const float *x, int m, int k, signed char *xq, float *dx, float *cs);
/* The same for K-quant weights: one scale per 256 (k a multiple of 256), xq[m][k], dx[m][k/256],
 * cs[m][k/32]. */
int ek_quantize_act256(const float *x, int m, int k, signed char *xq, float *dx, float *cs);

/* Streaming read of n bytes split over nthreads pool threads (memory-bandwidth probe
 * for the benchmark) with read loop `loop` of the current path (0 .. ek_stream_loops() - 1: its
 * load widths, widest first), each line prefetched into L2 `prefetch` bytes ahead (0: plain
 * loads); returns a checksum so the reads cannot be optimized away (0 for a bad loop). */
int ek_stream_loops(void);
unsigned long long ek_stream_read(const void *p, size_t n, int nthreads, int loop, size_t prefetch);

/* fn(arg, lo, hi) over [0, total), chunk items at a time, on nthreads of the kernels' pool (0: its
 * size); chunks go to whichever thread asks. fn must not call ek_matmul. 0, or -1 for bad arguments. */
int ek_parallel_for(void (*fn)(void *arg, int lo, int hi), void *arg, int total, int chunk, int nthreads);

/* Jobs that pool workers joined since load (diagnostics: did threads take part?) */
long ek_pool_joins(void);

int ek_set_threads(int n);
int ek_get_threads(void);
/* SIMD paths, indexed 0..ek_path_count()-1 in order of preference; the last is "portable".
 * A path is runnable when it is built for this architecture and the CPU has every feature it
 * needs (ek_path_needs: a mask over ek_cpu_feature_name).  Only runnable paths ever execute. */
int ek_path_count(void);
const char *ek_path_name(int path);
unsigned ek_path_needs(int path);
int ek_path_built(int path);
int ek_path_runnable(int path);
int ek_path_best(void);
int ek_path_get(void);
/* Runs `path` from now on when it is runnable, else the best one; returns the path in effect. */
int ek_path_set(int path);
const char *ek_build_info(void);
int ek_amx_usable(void);
/* How decode-sized matmuls (M <= 2) read their weights on x86: 0 "paired", AVX-512 tiles take two
 * row groups at once (two weight streams), each prefetched far into L2 and near into L1; 1
 * "single", one row group per tile (one stream), prefetched far ahead only. Either gives the same
 * bits. ek_read_default: single on AMD and Hygon CPUs (whose prefetch hints all fill L1), paired
 * elsewhere. ek_read_set(-1) restores the default; it returns the plan in effect (0 or 1). */
int ek_read_default(void);
int ek_read_get(void);
int ek_read_set(int plan);
