/* kernels/cuda/cuda_common.cuh: what the CUDA backend's files share: the
 * backend's private state (cuBLAS handle, RoPE tables, reusable scratch
 * buffers, allocation accounting), error checks, launch helpers and block
 * reductions.
 *
 * CUDA and cuBLAS errors, and scratch that cannot be allocated, are recorded
 * as the backend's sticky failure (zk_set_failed): nothing here exits, the
 * op that cannot run returns early, and the caller reads the status once a
 * step (zk_status) and ends the run with one line.
 *
 * Kernels are launched with ZK_LAUNCH(kernel, grid, block, smem)(args...) and
 * take dynamic shared memory through ZK_DYNAMIC_SMEM, so the same sources
 * also build as C++ against tests/emu/cuda_emu.h (ZEN_CUDA_EMU), which runs
 * the whole backend on the CPU in tests/emu. */
#ifndef ZEN_CUDA_COMMON_CUH
#define ZEN_CUDA_COMMON_CUH
#ifdef ZEN_CUDA_EMU
/* the emulator's translation unit (tests/emu) has included its cuda_emu.h before these sources */
#else
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define ZK_LAUNCH(kernel, grid, block, smem) kernel<<<(grid), (block), (smem)>>>
#define ZK_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" {
#include "../../util/error.h"
#include "../kernels.h"
#include "cuda_sizes.h" /* ZK_CUDA_CUBLAS_WORKSPACE, ZK_CUDA_WIDEN_CHUNK_ELEMS, the LoRA tiles */
}

/* 1 if the call succeeded; else records the first failure and returns 0 */
static inline int cuda_ok(zk_backend *be, cudaError_t e, const char *what, const char *file, int line) {
    if (e == cudaSuccess) return 1;
    zk_set_failed(be, ZEN_ERR_INTERNAL, "CUDA error: %s (%s at %s:%d)", cudaGetErrorString(e), what, file, line);
    return 0;
}
static inline int cublas_ok(zk_backend *be, cublasStatus_t s, const char *what, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return 1;
    zk_set_failed(be, ZEN_ERR_INTERNAL, "cuBLAS error %d (%s at %s:%d)", (int)s, what, file, line);
    return 0;
}
#define CUDA_CHECK(be, call) cuda_ok((be), (call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(be, call) cublas_ok((be), (call), #call, __FILE__, __LINE__)

/* reusable scratch buffers, one per purpose, grown on demand and kept */
enum {
    SCRATCH_DROPOUT_X,  /* fp32 [N, in]  dropout(x) for the LoRA branch */
    SCRATCH_DROPOUT_DX, /* fp32 [N, in]  LoRA input gradient before the mask */
    SCRATCH_WIDE_W,     /* fp32 chunk of a widened weight (f32 compute) */
    SCRATCH_BF16_ACT,   /* bf16 [N, width] an activation rounded for a bf16 matmul */
    SCRATCH_ATT_D,      /* fp32 [B, nh, T]  rowsum(dO * O) for attention backward */
    SCRATCH_LORA_PART,  /* fp32 partial sums of the fused LoRA kernels (lora_cuda.cu) */
    SCRATCH_DEQUANT_W,  /* bf16 [out, in] one block-quantised weight dequantised (bf16 compute) */
    SCRATCH_CACHE_SCORES, /* fp32 [n * nh, keys] generation's attention scores over the KV cache */
    SCRATCH_SLOTS
};


typedef struct {
    void *ptr;
    size_t bytes;
} cuda_alloc_entry;

typedef struct {
    cublasHandle_t blas;
    void *blas_workspace;
    float *rope_cos, *rope_sin; /* device [T, hd/2] for the cached (T, hd, theta) */
    size_t rope_T, rope_hd;
    double rope_theta;
    void *scratch[SCRATCH_SLOTS];
    size_t scratch_cap[SCRATCH_SLOTS]; /* bytes */
    double *reduce;                    /* [ZK_CUDA_REDUCE_BLOCKS] per-block partial sums of sum_squares */
    /* every live device allocation, for the in-use and peak byte counts */
    cuda_alloc_entry *allocs;
    size_t n_allocs, cap_allocs;
    size_t bytes_in_use, bytes_peak;
    void *comm;          /* ncclComm_t once joined (NULL alone) */
    float *comm_scratch; /* [max_n / 2 + 1] halves received from the partner */
    size_t max_segment;  /* the reserved plan's T: no attention segment is longer (0: not reserved) */
} cuda_ctx;

static inline cuda_ctx *ctx_of(zk_backend *be) { return (cuda_ctx *)be->ctx; }

static inline unsigned blocks_for(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

#define ZK_CUDA_REDUCE_BLOCKS 256 /* blocks of the two-pass sum_squares */

/* device memory with accounting (backend_cuda.cu) for an op: NULL with the
 * sticky failure set when it cannot be had */
void *cuda_alloc_op(zk_backend *be, size_t bytes);
void cuda_free_tracked(zk_backend *be, void *p);

/* the NCCL ops (comm_cuda.cu), where the toolkit has NCCL */
#ifdef ZEN_HAVE_NCCL
void cu_comm_install(zk_backend *be);
void cu_comm_destroy(zk_backend *be);
#else
static inline void cu_comm_install(zk_backend *be) { (void)be; }
static inline void cu_comm_destroy(zk_backend *be) { (void)be; }
#endif

/* scratch buffer `slot` with at least `bytes` bytes (reserved up front by
 * cu_reserve, grown if a caller needs more); NULL once the backend has failed */
static inline void *scratch(zk_backend *be, int slot, size_t bytes) {
    cuda_ctx *c = ctx_of(be);
    if (be->status) return NULL;
    int injected = zk_fault_hit("ZEN_FAULT_SCRATCH");
    if (bytes > c->scratch_cap[slot] || injected) {
        if (c->scratch[slot]) cuda_free_tracked(be, c->scratch[slot]);
        c->scratch[slot] = NULL;
        c->scratch_cap[slot] = 0;
        if (injected) {
            zk_set_failed(be, ZEN_ERR_INTERNAL, "out of GPU memory allocating %zu bytes of scratch (injected by "
                          "ZEN_FAULT_SCRATCH)", bytes);
            return NULL;
        }
        if (!(c->scratch[slot] = cuda_alloc_op(be, bytes))) return NULL;
        c->scratch_cap[slot] = bytes;
    }
    return c->scratch[slot];
}

/* element i of a tensor stored as dtype (ZEN_F32, ZEN_F16 or ZEN_BF16), as fp32 */
/* NF4's levels (kernels/quant_blocks.c's zk_nf4_levels) */
__device__ static const float nf4_levels_dev[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
    0.7229568362236023f, 1.0f};

__device__ static inline float half_bits(unsigned short h) { return __half2float(__ushort_as_half(h)); }
__device__ static inline float half_at(const unsigned char *p) { return half_bits((unsigned short)(p[0] | p[1] << 8)); }

/* the 6-bit scale and min of sub-block j of a Q4_K / Q5_K block's 12 packed bytes (zk_k4_scale_min) */
__device__ static inline void k4_scale_min(int j, const unsigned char *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* element j (0..255) of a Q4_K (five = 0) or Q5_K (five = 1) super-block:
 * (d sc) q - (dmin m), each product rounded once as on the CPU */
__device__ static inline float k45_element(const unsigned char *blk, int j, int five) {
    int c = j / 64, hi = (j % 64) >= 32, l = j % 32, sc, m;
    const unsigned char *qs = blk + (five ? 48 : 16);
    int q = hi ? qs[c * 32 + l] >> 4 : qs[c * 32 + l] & 0xF;
    if (five && (blk[16 + l] & (1 << (2 * c + hi)))) q += 16;
    k4_scale_min(2 * c + hi, blk + 4, &sc, &m);
    return __fsub_rn(__fmul_rn(__fmul_rn(half_at(blk), (float)sc), (float)q),
                     __fmul_rn(half_at(blk + 2), (float)m));
}

/* element j (0..255) of a Q6_K super-block: d sc (q - 32) */
__device__ static inline float q6k_element(const unsigned char *blk, int j) {
    int h = j / 128, w = j % 128, g = w / 32, l = w % 32;
    const unsigned char *ql = blk + 64 * h, *qh = blk + 128 + 32 * h;
    const signed char *sc = (const signed char *)(blk + 192) + 8 * h;
    int low = g & 1 ? ql[l + 32] : ql[l];
    int q = ((g < 2 ? low & 0xF : low >> 4) | (((qh[l] >> (2 * g)) & 3) << 4)) - 32;
    return __fmul_rn(__fmul_rn(half_at(blk + 208), (float)sc[l / 16 + 2 * g]), (float)q);
}

/* element j (0..31) of a Q5_0 (one = 0: d (x - 16)) or Q5_1 (one = 1: d x + m) block */
__device__ static inline float q5_element(const unsigned char *blk, int j, int one) {
    const unsigned char *p = blk + (one ? 4 : 2), *qs = blk + (one ? 8 : 6);
    unsigned qh = (unsigned)p[0] | (unsigned)p[1] << 8 | (unsigned)p[2] << 16 | (unsigned)p[3] << 24;
    int x = j < 16 ? (qs[j] & 0x0F) | (int)(((qh >> j) << 4) & 0x10)
                   : (qs[j - 16] >> 4) | (int)((qh >> (j - 16 + 12)) & 0x10);
    float d = half_at(blk);
    return one ? __fadd_rn(__fmul_rn((float)x, d), half_at(blk + 2)) : __fmul_rn((float)(x - 16), d);
}

/* element i of a row-major matrix stored as dtype (rows of whole blocks, so
 * element i lies in block i / block of the flat array), as the CPU's
 * dequantisers compute it (kernels/quant_blocks.c) */
__device__ static inline float load_as_float(const void *src, int dtype, size_t i) {
    const unsigned char *b = (const unsigned char *)src;
    switch (dtype) {
    case ZEN_F32: return ((const float *)src)[i];
    case ZEN_BF16: return __uint_as_float((unsigned)((const unsigned short *)src)[i] << 16);
    case ZEN_F16: return half_bits(((const unsigned short *)src)[i]);
    case ZEN_Q8_0: { /* {f16 d; int8 q[32]} */
        const unsigned char *blk = b + i / 32 * 34;
        return (float)(signed char)blk[2 + i % 32] * half_bits(*(const unsigned short *)blk);
    }
    case ZEN_Q4_0: { /* {f16 d; u8 qs[16]}: q[j] low nibbles, q[j + 16] high nibbles */
        const unsigned char *blk = b + i / 32 * 18;
        int j = (int)(i % 32), q = j < 16 ? (blk[2 + j] & 15) : (blk[2 + j - 16] >> 4);
        return (float)(q - 8) * half_bits(*(const unsigned short *)blk);
    }
    case ZEN_NF4: { /* {f32 absmax; u8 qs[32]}: element 2j high nibble, 2j + 1 low */
        const unsigned char *blk = b + i / 64 * 36;
        int j = (int)(i % 64), byte = blk[4 + j / 2];
        return nf4_levels_dev[j & 1 ? byte & 15 : byte >> 4] * *(const float *)blk;
    }
    case ZEN_Q5_0: return q5_element(b + i / 32 * 22, (int)(i % 32), 0);
    case ZEN_Q5_1: return q5_element(b + i / 32 * 24, (int)(i % 32), 1);
    case ZEN_Q4_K: return k45_element(b + i / 256 * 144, (int)(i % 256), 0);
    case ZEN_Q5_K: return k45_element(b + i / 256 * 176, (int)(i % 256), 1);
    case ZEN_Q6_K: return q6k_element(b + i / 256 * 210, (int)(i % 256));
    }
    return 0.0f; /* no other type reaches the device (cu_weight_create) */
}

/* lets `kernel` take `bytes` of dynamic shared memory (needed above 48 KiB); 0 on failure */
static inline int allow_smem(zk_backend *be, const void *kernel, size_t bytes) {
    if (bytes <= 48 * 1024) return 1;
    return CUDA_CHECK(be, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

/* sum over the block (blockDim.x a multiple of 32, at most 1024) */
__device__ static inline double block_sum(double v) {
    __shared__ double warp_sums[32];
    __shared__ double total;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    v = threadIdx.x < (blockDim.x >> 5) ? warp_sums[lane] : 0.0;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) total = v;
    __syncthreads();
    double r = total;
    __syncthreads();
    return r;
}

__device__ static inline float block_max(float v) {
    __shared__ float warp_max[32];
    __shared__ float total;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_max[warp] = v;
    __syncthreads();
    v = threadIdx.x < (blockDim.x >> 5) ? warp_max[lane] : -INFINITY;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    if (threadIdx.x == 0) total = v;
    __syncthreads();
    float r = total;
    __syncthreads();
    return r;
}

/* row-major C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C on cuBLAS, fp32 (linear_cuda.cu) */
void cuda_rm_gemm(zk_backend *be, int transA, int transB, size_t M, size_t N, size_t K, float alpha, const float *A,
                  size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);

/* the ops each file defines (all take the arguments kernels.h documents) */
void cu_linear_fwd(zk_backend *be, void *y, const void *x, const zk_weight *w, size_t N, size_t in, size_t out);
void cu_linear_bwd(zk_backend *be, void *dx, const void *dy, const zk_weight *w, size_t N, size_t in, size_t out,
                   int accumulate);
void cu_dropout(zk_backend *be, void *y, const void *x, const zk_dropout *drop, size_t n);
void cu_lora_fwd(zk_backend *be, void *y, float *u, const void *x, const float *A, const float *B, size_t N, size_t in,
                 size_t out, size_t r, float scale, const zk_dropout *drop);
void cu_lora_bwd(zk_backend *be, void *dx, float *dA, float *dB, float *du, const void *dy, const void *x,
                 const float *u, const float *A, const float *B, size_t N, size_t in, size_t out, size_t r, float scale,
                 const zk_dropout *drop);
/* exact fp32 attention (one block per query row) */
int cu_reserve(zk_backend *be, const zk_reserve_plan *p);
/* the RoPE tables for (T, hd, theta) on the device; 0, or -1 (sticky failure set) */
int cuda_rope_tables(zk_backend *be, size_t T, size_t hd, double theta);
void cu_attention_paged_fwd(zk_backend *be, void *out, const void *q, const void *k_new, const void *v_new,
                            void *k_pages, void *v_pages, const int32_t *pos, const int32_t *table_of,
                            const int32_t *tables, size_t n, size_t keys_max, size_t page_rows, size_t nh,
                            size_t nkv, size_t hd);
void cu_attention_exact_fwd(zk_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                            const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv, size_t hd);
void cu_attention_exact_bwd(zk_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *out,
                            const float *lse, const void *q, const void *k, const void *v, const int32_t *seg, size_t B,
                            size_t T, size_t nh, size_t nkv, size_t hd);
/* flash attention on bf16 tensor cores; returns 0 when hd is not supported
 * (multiples of 16 up to 128 are), and the caller uses the exact kernels */
int cu_flash_attention_fwd(zk_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                           const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv, size_t hd);
int cu_flash_attention_bwd(zk_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *out,
                           const float *lse, const void *q, const void *k, const void *v, const int32_t *seg, size_t B,
                           size_t T, size_t nh, size_t nkv, size_t hd);

#endif
