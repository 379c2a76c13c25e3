/* kernels/kernels.h: the one kernel interface. Model code calls these operations
 * through a backend chosen at run time (zk_open("cpu"), later "cuda"); it never
 * dereferences device memory and never contains backend #ifdefs.
 *
 * Conventions
 * - Buffers are device memory from be->alloc. Activation buffers ("act") hold
 *   be->act_bytes bytes per element (fp32 on every backend); LoRA
 *   parameters, their gradients, norm weights, rstd, lse and losses are always
 *   fp32.
 * - be->compute is the precision of the large matmuls and of attention, on
 *   either backend: ZEN_F32 (OpenBLAS sgemm on the CPU; cuBLAS fp32 on CUDA,
 *   for checking) or ZEN_BF16 (bf16 inputs, fp32 accumulation, fp32 outputs:
 *   oneDNN on a CPU with native bf16 arithmetic, cuBLAS on CUDA; softmax,
 *   norms, LoRA and the optimizer stay fp32).
 * - On the CPU, zen's own hand kernels come in variants per ISA (generic C,
 *   avx2, avx512, avx512bf16; neon), picked at run time (kernels/cpu/cpu_isa.h).
 * - Row-major everywhere. N = B*T token rows. Shapes are written beside each
 *   argument; [out, in] weights are PyTorch nn.Linear layout.
 * - "accumulate" flags choose dx += ... (1) or dx = ... (0). Parameter-gradient
 *   outputs (dA, dB, dw, dW) always accumulate (+=), as in llm.c.
 * - Every op has a forward and a backward; base weights are frozen, so their
 *   backward gives only the input gradient.
 * - Ops return nothing and never exit: an op that cannot run (scratch it
 *   could not get, a device error) records a sticky failure with
 *   zk_set_failed and does no further harm; the caller reads it once per
 *   step with zk_status. Scratch is reserved up front (be->reserve) from the
 *   same sizes the memory plan prints, so a step does not allocate.
 */
#ifndef ZEN_KERNELS_H
#define ZEN_KERNELS_H
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "dtype.h"

/* A frozen weight matrix on the device, row-major, in its storage dtype. */
typedef struct {
    const void *data;
    zen_dtype dtype;
} zk_weight;

/* LoRA dropout (PEFT: lora_B(lora_A(dropout(x)))): element i of x is kept with
 * probability 1-p and scaled by 1/(1-p); the keep mask is a pure function of
 * (seed, i), so backward (and recompute) regenerate it instead of storing it.
 * p = 0 means no dropout. */
typedef struct {
    float p;
    uint64_t seed;
} zk_dropout;

/* host and device (nvcc) alike */
#ifdef __CUDACC__
#define ZK_HOST_DEVICE __host__ __device__
#else
#define ZK_HOST_DEVICE
#endif

/* the 24-bit threshold below which a hash drops an element (probability p) */
static inline uint64_t zk_dropout_threshold(float p) { return (uint64_t)(p * 16777216.0f); }

/* 1 if element i survives dropout with this seed and threshold (a splitmix64
 * hash of seed + i, whose top 24 bits are compared with the threshold); the
 * CUDA kernels call this same function */
ZK_HOST_DEVICE static inline int zk_dropout_keep(uint64_t seed, size_t i, uint64_t threshold) {
    uint64_t z = seed + (uint64_t)i * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (z >> 40) >= threshold;
}

/* the rows up to which linear_fwd and lora_fwd compute each row on its own (see linear_fwd) */
#define ZK_DECODE_ROWS 16

typedef struct zk_backend zk_backend;

/* The largest shapes a run's ops will see, for reserving scratch up front. */
typedef struct {
    size_t N;              /* token rows per batch (B * T) */
    size_t B, T;           /* batch and sequence length (attention): no segment a call sees is
                            * longer than T, nor any position past it */
    size_t heads, kv_heads, head_dim;
    double rope_theta;
    size_t widest_in;      /* the widest projection input (LoRA dropout copies) */
    size_t matmul_elems;   /* the largest matmul input or output gradient */
    size_t widen_elems;    /* the largest weight matrix not stored as fp32 (0 if none) */
    size_t quant_elems;    /* the largest block-quantised weight matrix (q8_0, q4_0, nf4; 0 if none) */
    size_t lora_r;         /* 0 without LoRA */
    int lora_dropout;
} zk_reserve_plan;

struct zk_backend {
    const char *name; /* "cpu", "cuda" */
    char info[192];   /* what computes, for the summary line: "bf16 on oneDNN (avx512_core_bf16)", ... */
    char note[256];   /* "" or one line the user should read (a slow library setup and its fix) */
    size_t act_bytes; /* bytes per activation element */
    zen_dtype compute; /* ZEN_F32 or ZEN_BF16, see above */
    void *ctx;        /* backend-private state */
    int status;       /* sticky: 0, or the error code of the first op that failed */
    char status_msg[512];

    /* --- memory --- */
    void *(*alloc)(zk_backend *be, size_t bytes); /* NULL + zen_fail on failure */
    void (*free)(zk_backend *be, void *ptr);
    void (*upload)(zk_backend *be, void *dst, const void *host_src, size_t bytes);
    void (*download)(zk_backend *be, void *host_dst, const void *src, size_t bytes);
    void (*zero)(zk_backend *be, void *dst, size_t bytes);
    void (*copy)(zk_backend *be, void *dst, const void *src, size_t bytes); /* device to device */
    /* Makes a device weight from host memory (which stays valid while in use:
     * the CPU backend aliases it, e.g. a memory-mapped file, without copying,
     * unless it converts it to bf16 or moves it to a 64-byte boundary). Where
     * out->data != host the weight is a copy, and host may be let go. */
    int (*weight_create)(zk_backend *be, zk_weight *out, const void *host, zen_dtype dtype,
                         size_t numel);
    void (*weight_destroy)(zk_backend *be, zk_weight *w);
    /* fp32 host -> act device buffer, and back (tests, inputs, readback) */
    void (*upload_act)(zk_backend *be, void *dst, const float *host_src, size_t count);
    void (*download_act)(zk_backend *be, float *host_dst, const void *src, size_t count);
    void (*destroy)(zk_backend *be);
    /* peak bytes of device memory this backend has held at once (allocations
     * and its own scratch), or NULL where the OS measures it (cpu: peak RSS) */
    size_t (*memory_peak)(zk_backend *be);
    /* bytes free on the device and held by this backend now, or NULL (cpu) */
    void (*memory_info)(zk_backend *be, size_t *free_bytes, size_t *in_use);
    /* allocates every scratch buffer the plan's ops need (0, or an error) */
    int (*reserve)(zk_backend *be, const zk_reserve_plan *plan);

    /* --- linear algebra --- */
    /* y[N,out] = x[N,in] W[out,in]^T. On at most ZK_DECODE_ROWS rows
     * (decoding) each row is computed on its own in one fixed order of sums
     * (one pass over W for all of them): its bits do not depend on the other
     * rows, their number, its place among them or the thread count; so does
     * lora_fwd's. Generation relies on it: a sample's numbers are the same
     * whatever decodes beside it. */
    void (*linear_fwd)(zk_backend *be, void *y, const void *x, const zk_weight *w, size_t N,
                       size_t in, size_t out);
    /* dx[N,in] (+)= dy[N,out] W[out,in] */
    void (*linear_bwd)(zk_backend *be, void *dx, const void *dy, const zk_weight *w, size_t N,
                       size_t in, size_t out, int accumulate);
    /* LoRA branch, with xd = dropout(x) (xd = x when drop is NULL or p = 0):
     * u[N,r] = xd[N,in] A[r,in]^T;  y[N,out] += scale * u B[out,r]^T */
    void (*lora_fwd)(zk_backend *be, void *y, float *u, const void *x, const float *A,
                     const float *B, size_t N, size_t in, size_t out, size_t r, float scale,
                     const zk_dropout *drop);
    /* du[N,r] = scale * dy B;  dB += scale * dy^T u;  dA += du^T xd;
     * dx[N,in] += dropout'(du A) (the same mask and 1/(1-p) as the forward) */
    void (*lora_bwd)(zk_backend *be, void *dx, float *dA, float *dB, float *du, const void *dy,
                     const void *x, const float *u, const float *A, const float *B, size_t N,
                     size_t in, size_t out, size_t r, float scale, const zk_dropout *drop);
    /* y[n] = a[n] + b[n] (residual stream) */
    void (*add)(zk_backend *be, void *y, const void *a, const void *b, size_t n);
    /* x[r, :] *= s[r] for r < rows (x: act [rows, cols]; s: device fp32 [rows]) */
    void (*scale_rows)(zk_backend *be, void *x, const float *s, size_t rows, size_t cols);

    /* --- DoRA (weight-decomposed LoRA) --- */
    /* out[o] = sum_i W[o, i]^2 for o < rows (device fp32 [rows], summed in double), W [rows, cols] as the
     * matmuls read it (dequantised) */
    void (*row_sq_norms)(zk_backend *be, float *out, const zk_weight *w, size_t rows, size_t cols);
    /* y[n, o] (+)= x[n, o] s[o] (y, x: act [N, cols], y may be x when not accumulating; s: device fp32 [cols]) */
    void (*scale_cols)(zk_backend *be, void *y, const void *x, const float *s, size_t N, size_t cols,
                       int accumulate);
    /* y[i] = x[i] * keep(i) / (1 - p) for i < n with LoRA dropout's mask (zk_dropout_keep, element i of the
     * flattened [N, in] input, as lora_fwd draws it); y may be x */
    void (*dropout)(zk_backend *be, void *y, const void *x, const zk_dropout *drop, size_t n);
    /* out[o] += s[o] * sum_n a[n, o] b[n, o] (a, b: act [N, cols]; out, s: device fp32 [cols]) */
    void (*col_dot)(zk_backend *be, float *out, const void *a, const void *b, const float *s, size_t N, size_t cols);

    /* --- normalisation and position --- */
    /* y[rows,dim] = x * rstd * w,  rstd[rows] = 1/sqrt(mean(x^2) + eps) */
    void (*rmsnorm_fwd)(zk_backend *be, void *y, float *rstd, const void *x, const float *w,
                        size_t rows, size_t dim, float eps);
    /* dx (+)= d/dx;  dw (may be NULL) += sum over rows of dy * x * rstd */
    void (*rmsnorm_bwd)(zk_backend *be, void *dx, float *dw, const void *dy, const void *x,
                        const float *rstd, const float *w, size_t rows, size_t dim,
                        int accumulate);
    /* rotate-half (NEOX) RoPE in place on x[N, H, hd]: row n is at position
     * pos[n] (device int32 [N], each in [0, max_pos)); inv_freq[i] =
     * theta^(-2i/hd). Backward applies the inverse rotation to dx. */
    void (*rope_fwd)(zk_backend *be, void *x, const int32_t *pos, size_t N, size_t max_pos, size_t H, size_t hd,
                     double theta);
    void (*rope_bwd)(zk_backend *be, void *dx, const int32_t *pos, size_t N, size_t max_pos, size_t H, size_t hd,
                     double theta);

    /* --- attention --- */
    /* segmented causal GQA: q[B,T,nh,hd], k,v[B,T,nkv,hd] -> out[B,T,nh,hd],
     * lse[B,nh,T]; query head h reads kv head h / (nh/nkv); scale
     * 1/sqrt(hd). Query t of sequence b sees the keys [seg[b*T+t], t]:
     * seg (device int32 [B*T]) is the first row of each row's segment (its
     * document) within the sequence, so seg[t] <= t and seg never decreases
     * along a sequence; NULL is one segment (plain causal). A batch may come
     * laid end to end as one sequence (B = 1, T = all its rows, seg counted
     * from its first row): the same computation, bit for bit, as long as no
     * segment is longer than the reserved plan's T. */
    void (*attention_fwd)(zk_backend *be, void *out, float *lse, const void *q, const void *k,
                          const void *v, const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv, size_t hd);
    /* generation over a paged KV cache (optional: NULL where a backend has
     * none). A layer's cache is pages of page_rows positions, k_pages and
     * v_pages [pages, page_rows, nkv, hd] in the compute precision
     * (zk_cache_bytes per element); a sequence is a list of pages, its page
     * table: position j is row j % page_rows of page table[j / page_rows].
     * The n new rows may belong to several sequences: row i is at position
     * pos[i] of the sequence whose page table starts at tables[table_of[i]]
     * (pos, table_of, tables: device int32; keys_max: 1 + the largest pos[i],
     * which the caller knows on the host). First every row's k_new, v_new
     * [n, nkv, hd] (fp32) is stored at its slot (bf16 rounded once), then
     * each query row q[n, nh, hd] sees its sequence's keys 0 .. pos[i] ->
     * out[n, nh, hd]; GQA and scale as above; in bf16 the scores take q
     * rounded to bf16 and the weighted sum the probabilities rounded to bf16,
     * as attention_fwd's bf16 products do; softmax fp32. Each (row, head) is
     * computed on its own, in an order no other row changes, so a sequence's
     * numbers do not depend on what shares its batch. Rows that are one whole
     * prompt (a single sequence, positions 0 .. n - 1, n >= 8) may run as
     * attention_fwd does instead, the same for a prompt alone or batched. */
    void (*attention_paged_fwd)(zk_backend *be, void *out, const void *q, const void *k_new, const void *v_new,
                                void *k_pages, void *v_pages, const int32_t *pos, const int32_t *table_of,
                                const int32_t *tables, size_t n, size_t keys_max, size_t page_rows, size_t nh,
                                size_t nkv, size_t hd);
    /* dq, dk, dv are overwritten */
    void (*attention_bwd)(zk_backend *be, void *dq, void *dk, void *dv, const void *dout,
                          const void *out, const float *lse, const void *q, const void *k,
                          const void *v, const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv, size_t hd);

    /* --- elementwise --- */
    /* h = silu(g) * u */
    void (*swiglu_fwd)(zk_backend *be, void *h, const void *g, const void *u, size_t n);
    /* dg, du overwritten */
    void (*swiglu_bwd)(zk_backend *be, void *dg, void *du, const void *dh, const void *g,
                       const void *u, size_t n);

    /* --- optimizer (fp32 LoRA state) --- */
    /* sum of squares of x[n], accumulated in double */
    double (*sum_squares)(zk_backend *be, const float *x, size_t n);
    /* AdamW (PyTorch semantics) on n parameters; g is multiplied by grad_scale
     * first (clipping); step is the 1-based update count for bias correction:
     *   p -= lr * wd * p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
     *   p -= lr * (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps) */
    void (*adamw)(zk_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                  long step);

    /* --- rows of activations --- */
    /* dst[n, :] = src[idx[n], :] for n < N (rows of C elements; idx: device int32 [N]) */
    void (*gather_rows)(zk_backend *be, void *dst, const void *src, const int32_t *idx, size_t N, size_t C);
    /* dst[idx[n], :] = src[n, :] for n < N (idx distinct); the other rows of dst are left as they are */
    void (*scatter_rows)(zk_backend *be, void *dst, const void *src, const int32_t *idx, size_t N, size_t C);

    /* --- embedding and loss --- */
    /* out[N,C] = W[tokens[n], :]  (tokens: device int32 [N]) */
    void (*embedding_fwd)(zk_backend *be, void *out, const int32_t *tokens, const zk_weight *w,
                          size_t N, size_t C);
    /* dW[V,C] += scatter of dout by token */
    void (*embedding_bwd)(zk_backend *be, float *dW, const void *dout, const int32_t *tokens,
                          size_t N, size_t C);
    /* Softmax + cross-entropy over rows of logits[rows,V] divided by
     * temperature t (1: as they are; sampling's temperature, for GRPO):
     * losses[r] = logsumexp(z_r / t) - z_r[targets[r]] / t (unweighted);
     * entropy (NULL: not wanted) [rows] gets the entropy of softmax(z_r / t).
     * If grad_scale != 0, logits is overwritten by the gradient with respect
     * to z: (softmax(z / t) - onehot) * weights[r] * grad_scale / t; weights
     * is the loss mask. With t = 1 and no entropy the sums are those of the
     * plain cross-entropy, bit for bit. */
    void (*xent)(zk_backend *be, void *logits, float *losses, float *entropy, const int32_t *targets,
                 const float *weights, size_t rows, size_t V, float t, float grad_scale);

    /* --- sums across data-parallel ranks, device to device (optional: NULL
     * where the backend has none; CUDA with NCCL) --- */
    /* rank 0 makes the id (ZK_COMM_ID_BYTES) that the caller hands to every rank */
    int (*comm_make_id)(zk_backend *be, void *id);
    /* every rank joins with the same id; sums of up to max_n floats follow */
    int (*comm_join)(zk_backend *be, const void *id, int rank, int size, size_t max_n);
    /* collective: v[n] (fp32, device) becomes the sum over the ranks in the
     * pairs of kernels/tree_sum.h, the sums a host does in that order */
    int (*comm_tree_sum)(zk_backend *be, float *v, size_t n);
};

#define ZK_COMM_ID_BYTES 128 /* NCCL's unique id */

/* Records the first failure of an op (safe from any thread; later ones are
 * kept out so the first cause is the one reported). */
void zk_set_failed(zk_backend *be, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* 0, or the sticky failure (its message set with zen_fail). */
int zk_status(zk_backend *be);
/* bytes of one KV-cache element (attention_paged_fwd): the compute precision's */
static inline size_t zk_cache_bytes(const zk_backend *be) { return zen_dtype_bytes(be->compute, 1); }
/* Fault injection for tests: 1 on the N-th call with this name when the
 * environment sets name=N (e.g. ZEN_FAULT_SCRATCH=40), else 0. */
int zk_fault_hit(const char *name);

/* The CPU's kernel variant: reads ZEN_CPU_ISA (generic|avx2|avx512|avx512bf16
 * on x86-64, generic|neon on aarch64), which caps zen's kernels, oneDNN and
 * (by starting argv again with OPENBLAS_CORETYPE set, when argv is given and
 * the user has not set it) OpenBLAS at that level. Call first thing in main.
 * ZEN_ERR_INPUT with one line for an unknown level or one above this CPU. */
int zk_cpu_isa_setup(char **argv);
/* the kernel variant this run uses ("avx2", ...), for summary lines */
const char *zk_cpu_kernels_name(void);
/* what the CPU runs, for `zen info --cpu`: one line per kernel level of
 * this architecture (supported or not), the level in use and why, OpenBLAS's
 * core, oneDNN's ISA and what --dtype auto picks */
void zk_cpu_describe(FILE *out);
/* the CPU libraries' versions and the kernel levels, for `zen --version`:
 * oneDNN's version and ISA, OpenBLAS's configuration and core, this
 * architecture's levels that the CPU supports and the one in use */
void zk_cpu_versions(FILE *out);

/* What generic code knows of a backend without opening it: one descriptor
 * per backend, in one table (kernels/backend.c); no other generic code
 * names a backend or holds a formula of one. */
typedef struct {
    const char *name;      /* "cpu", "cuda" */
    int default_recompute; /* what recompute "auto" means there */
    /* 0 if it can compute in dt in this build and on this machine, else a
     * one-line error (ZEN_ERR_INPUT) saying why and what to use */
    int (*supports)(zen_dtype dt);
    /* the precision "auto" picks here; *why (static text) says why */
    zen_dtype (*auto_compute)(const char **why);
    /* bytes the backend holds beside the model's buffers during a step:
     * exactly the scratch its reserve allocates for these shapes, and its
     * fixed workspaces (for the printed memory plan) */
    size_t (*plan_scratch)(zen_dtype compute, const zk_reserve_plan *p);
    int (*device_count)(void); /* devices it can use (0 where unavailable) */
    /* device_index: which of device_count() devices (one per rank on a
     * machine); backends with one device ignore it */
    zk_backend *(*create)(zen_dtype compute, int device_index);
} zk_backend_desc;

/* The descriptor of a backend by name; NULL + zen_fail(ZEN_ERR_INPUT) if unknown. */
const zk_backend_desc *zk_backend_find(const char *device);

/* Opens a backend by name ("cpu" or "cuda") with a compute precision: "auto"
 * (or NULL: what the backend's auto_compute picks), "f32" or "bf16"; NULL +
 * zen_fail(ZEN_ERR_INPUT) when the name or precision is unknown, the backend
 * is unavailable in this build / machine, or it lacks that precision. The
 * backend's info says what computes (and, for auto, why). */
zk_backend *zk_open(const char *device, const char *compute);
/* The same on device number device_index of that kind (the GPU of a rank). */
zk_backend *zk_open_index(const char *device, const char *compute, int device_index);
/* The precision zk_open would pick (or the same one-line error), without
 * opening; *why (may be NULL) gets the reason for an "auto" choice, else "". */
int zk_resolve_compute(const char *device, const char *compute, zen_dtype *out, const char **why);
void zk_close(zk_backend *be);

/* The descriptor's plan_scratch for device (0 for an unknown device). */
size_t zk_plan_scratch(const char *device, zen_dtype compute, const zk_reserve_plan *p);

#endif
