/* kernels/cpu/cpu_ops.h: the CPU backend's operations: f32 compute on
 * OpenBLAS sgemm, or bf16 compute (matmul inputs rounded to bf16, fp32
 * accumulation and outputs) on oneDNN (dnnl_cpu.c); OpenMP loops for the
 * rest. Wired into a zk_backend by backend_cpu.c; see kernels/kernels.h for
 * the meaning and shapes of every argument. */
#ifndef ZEN_CPU_OPS_H
#define ZEN_CPU_OPS_H
#include "../kernels.h"
#include "simd_kernels.h"

typedef struct cpu_dnnl cpu_dnnl; /* oneDNN's engine, streams and primitives (dnnl_cpu.c) */

/* scratch slots: a widened (dequantised) weight chunk, the two LoRA dropout
 * buffers, attention's per-thread score tiles, a bf16 copy of a matmul input,
 * attention's bf16 operands and tiles, and the bf16 copy of a dequantised
 * weight chunk (bf16 compute on block-quantised weights) */
enum {
    CPU_SCRATCH_WIDEN = 0,
    CPU_SCRATCH_DROP_X = 1,
    CPU_SCRATCH_DROP_DX = 2,
    CPU_SCRATCH_ATTN = 3,
    CPU_SCRATCH_BF16_IN = 4,
    CPU_SCRATCH_ATTN_BF16 = 5,
    CPU_SCRATCH_BF16_W = 6,
    CPU_SCRATCH_LORA = 7,
    CPU_SCRATCH_SLOTS = 8
};

/* backend-private state */
typedef struct {
    float *scratch[CPU_SCRATCH_SLOTS];      /* reusable buffers, see CPU_SCRATCH_* */
    size_t scratch_capacity[CPU_SCRATCH_SLOTS]; /* fp32 elements */
    float *rope_cos, *rope_sin; /* [T, hd/2] tables for the cached (T, hd, theta) */
    size_t rope_T, rope_hd;
    double rope_theta;
    cpu_dnnl *dnnl;             /* bf16 compute only */
    const cpu_kernel_set *kernels; /* the kernel variant's, fixed when the backend is made */
    int lora_fused;             /* 1: the LoRA branch runs on lora_cpu.c's fused kernels where r allows */
    void **owned;               /* bf16 copies of f32/f16 weights, freed with them */
    size_t n_owned, cap_owned;
} cpu_ctx;
/* slot's buffer of at least elems floats: reserved up front (cpu_reserve),
 * grown if a caller needs more; NULL with the backend's sticky failure set
 * when memory runs out (the op then does nothing) */
float *cpu_scratch(zk_backend *be, int slot, size_t elems);

/* the same slot as n bf16 elements */
static inline uint16_t *cpu_scratch_bf16(zk_backend *be, int slot, size_t n) {
    return (uint16_t *)cpu_scratch(be, slot, (n + 1) / 2);
}

/* sum_i x[i] w[i] in 32 partial sums added in a fixed order (vectorised by the compiler): decoding's rows,
 * each on its own (kernels.h) */
static inline float cpu_dot_f32(const float *x, const float *w, size_t n) {
    float acc[32] = {0};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 32; k++) acc[k] += x[i + k] * w[i + k];
    for (; i < n; i++) acc[i % 32] += x[i] * w[i];
    for (int width = 16; width > 0; width /= 2)
        for (int k = 0; k < width; k++) acc[k] += acc[k + width];
    return acc[0];
}

/* the sizes cpu_reserve allocates, in floats, per slot (and the RoPE tables) */
#define CPU_WIDEN_CHUNK_ELEMS ((size_t)4 << 20) /* 16 MiB of fp32 per widened weight chunk */
#define CPU_ATTN_TILE 64                         /* query rows per attention tile */
#define CPU_GEMV_ROWS ZK_DECODE_ROWS             /* linear_fwd on at most this many rows: one pass over W */
void cpu_scratch_sizes(const zk_reserve_plan *p, zen_dtype compute, size_t elems[CPU_SCRATCH_SLOTS],
                       size_t *rope_elems);
/* attention's bf16 slot: rounded q, k, v, dout [N, heads*hd] each (k and v
 * may be narrower), then each thread's two bf16 tiles [tile, keys] (keys: the
 * longest segment, at most the plan's T) */
size_t cpu_attention_bf16_elems(size_t N, size_t keys, size_t q_width, size_t kv_width);

/* ---- oneDNN (dnnl_cpu.c) ---- */
#define CPU_DNNL_CACHE 128 /* primitives kept, the least recently used replaced */
/* the ISA oneDNN dispatches to ("avx512_core_amx_bf16", "avx2", ...);
 * *native_bf16 (may be NULL) = 1 with native bf16 matrix arithmetic */
const char *cpu_dnnl_isa(int *native_bf16);
/* oneDNN's version, "2.7.3" */
const char *cpu_dnnl_version(void);
int cpu_dnnl_open(cpu_ctx *ctx);
void cpu_dnnl_close(cpu_ctx *ctx);
/* C[M,N] (+= if accumulate) op(A)[M,K] op(B)[K,N], bf16 inputs and fp32 C,
 * row-major with leading dimensions; op(X) = X^T if tX. A primitive per
 * shape, made once; called from one thread (it runs on all of them). */
void cpu_bf16_gemm(zk_backend *be, int ta, int tb, size_t M, size_t N, size_t K, const uint16_t *A, size_t lda,
                   const uint16_t *B, size_t ldb, float *C, size_t ldc, int accumulate);
/* The same for shapes that change every call (attention tiles): prepare
 * (outside parallel regions) one primitive per (ta, tb, accumulate), then
 * call it from any thread. NULL (sticky failure set) if it cannot be made. */
const void *cpu_bf16_tile_gemm_prepare(zk_backend *be, int ta, int tb, int accumulate);
void cpu_bf16_tile_gemm(zk_backend *be, const void *prepared, size_t M, size_t N, size_t K, const uint16_t *A,
                        size_t lda, const uint16_t *B, size_t ldb, float *C, size_t ldc);
/* dst[n] = src[n] rounded to bf16 (nearest even), on all threads */
void cpu_round_bf16(uint16_t *dst, const float *src, size_t n);
int cpu_reserve(zk_backend *be, const zk_reserve_plan *p);
/* the RoPE tables for (T, hd, theta), built if needed; 0, or -1 (sticky failure set) */
int cpu_rope_tables(zk_backend *be, size_t T, size_t hd, double theta, const float **cos_out, const float **sin_out);

void cpu_linear_fwd(zk_backend *be, void *y, const void *x, const zk_weight *w, size_t N,
                    size_t in, size_t out);
void cpu_linear_bwd(zk_backend *be, void *dx, const void *dy, const zk_weight *w, size_t N,
                    size_t in, size_t out, int accumulate);
/* 1 if the kernel variant in use has the fused LoRA kernels (avx2, avx512;
 * simd_kernels.h), which need r a multiple of CPU_LORA_GROUP; the
 * environment variable ZEN_LORA_SGEMM=1 keeps the sgemm path (for comparing
 * the two) */
int cpu_lora_fused_available(void);
/* the fused kernels' scratch, in floats, for rank r and a projection in -> out */
size_t cpu_lora_scratch_elems(size_t r, size_t in, size_t out);
void cpu_lora_fwd(zk_backend *be, void *y, float *u, const void *x, const float *A,
                  const float *B, size_t N, size_t in, size_t out, size_t r, float scale,
                  const zk_dropout *drop);
void cpu_lora_bwd(zk_backend *be, void *dx, float *dA, float *dB, float *du, const void *dy,
                  const void *x, const float *u, const float *A, const float *B, size_t N,
                  size_t in, size_t out, size_t r, float scale, const zk_dropout *drop);
double cpu_sum_squares(zk_backend *be, const float *x, size_t n);
void cpu_adamw(zk_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr,
               float beta1, float beta2, float eps, float weight_decay, float grad_scale, long step);
void cpu_add(zk_backend *be, void *y, const void *a, const void *b, size_t n);
void cpu_scale_rows(zk_backend *be, void *x, const float *s, size_t rows, size_t cols);
void cpu_row_sq_norms(zk_backend *be, float *out, const zk_weight *w, size_t rows, size_t cols);
void cpu_scale_cols(zk_backend *be, void *y, const void *x, const float *s, size_t N, size_t cols, int accumulate);
void cpu_dropout(zk_backend *be, void *y, const void *x, const zk_dropout *drop, size_t n);
void cpu_col_dot(zk_backend *be, float *out, const void *a, const void *b, const float *s, size_t N, size_t cols);

void cpu_rmsnorm_fwd(zk_backend *be, void *y, float *rstd, const void *x, const float *w,
                     size_t rows, size_t dim, float eps);
void cpu_rmsnorm_bwd(zk_backend *be, void *dx, float *dw, const void *dy, const void *x,
                     const float *rstd, const float *w, size_t rows, size_t dim, int accumulate);
void cpu_rope_fwd(zk_backend *be, void *x, const int32_t *pos, size_t N, size_t max_pos, size_t H, size_t hd,
                  double theta);
void cpu_rope_bwd(zk_backend *be, void *dx, const int32_t *pos, size_t N, size_t max_pos, size_t H, size_t hd,
                  double theta);

void cpu_attention_paged_fwd(zk_backend *be, void *out, const void *q, const void *k_new, const void *v_new,
                             void *k_pages, void *v_pages, const int32_t *pos, const int32_t *table_of,
                             const int32_t *tables, size_t n, size_t keys_max, size_t page_rows, size_t nh,
                             size_t nkv, size_t hd);
void cpu_attention_fwd(zk_backend *be, void *out, float *lse, const void *q, const void *k,
                       const void *v, const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv, size_t hd);
void cpu_attention_bwd(zk_backend *be, void *dq, void *dk, void *dv, const void *dout,
                       const void *out, const float *lse, const void *q, const void *k,
                       const void *v, const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv, size_t hd);

void cpu_swiglu_fwd(zk_backend *be, void *h, const void *g, const void *u, size_t n);
void cpu_swiglu_bwd(zk_backend *be, void *dg, void *du, const void *dh, const void *g,
                    const void *u, size_t n);

void cpu_gather_rows(zk_backend *be, void *dst, const void *src, const int32_t *idx, size_t N, size_t C);
void cpu_scatter_rows(zk_backend *be, void *dst, const void *src, const int32_t *idx, size_t N, size_t C);
void cpu_embedding_fwd(zk_backend *be, void *out, const int32_t *tokens, const zk_weight *w,
                       size_t N, size_t C);
void cpu_embedding_bwd(zk_backend *be, float *dW, const void *dout, const int32_t *tokens,
                       size_t N, size_t C);
void cpu_xent(zk_backend *be, void *logits, float *losses, float *entropy, const int32_t *targets,
              const float *weights, size_t rows, size_t V, float t, float grad_scale);

/* the CPU's descriptor (kernels/backend.c's table) */
zk_backend *zk_cpu_create(zen_dtype compute, int device_index);
int zk_cpu_supports(zen_dtype dt);
zen_dtype zk_cpu_auto_compute(const char **why);
size_t zk_cpu_plan_scratch(zen_dtype compute, const zk_reserve_plan *p);
int zk_cpu_device_count(void);

#endif
