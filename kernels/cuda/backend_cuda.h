/* kernels/cuda/backend_cuda.h: the CUDA backend's constructor (built only when
 * CMake finds the CUDA toolkit; kernels/backend.c picks it for "cuda"). */
#ifndef ZEN_BACKEND_CUDA_H
#define ZEN_BACKEND_CUDA_H
#include "../kernels.h"

/* device scratch sizes, shared with the memory plan (zk_plan_scratch) */
#define ZK_CUDA_CUBLAS_WORKSPACE ((size_t)32 << 20)  /* cublasSetWorkspace */
#define ZK_CUDA_WIDEN_CHUNK_ELEMS ((size_t)1 << 24)  /* fp32 elements of one widened weight chunk (f32 compute) */

/* The fused LoRA kernels (lora_cuda.cu) handle ranks up to ZK_CUDA_LORA_MAX_R;
 * their tiles: the forward splits `in` into chunks of ZK_CUDA_LORA_K_TILE
 * (64 rows a block), the backward splits N into chunks of ZK_CUDA_LORA_N_TILE
 * (256 columns a block); partial sums go to a scratch buffer of this many
 * floats and are added in a fixed order (deterministic). */
#define ZK_CUDA_LORA_MAX_R 32
#define ZK_CUDA_LORA_K_TILE 96
#define ZK_CUDA_LORA_N_TILE 64
static inline size_t zk_cuda_lora_partial_elems(size_t N, size_t in, size_t r) {
    size_t fwd = (in + ZK_CUDA_LORA_K_TILE - 1) / ZK_CUDA_LORA_K_TILE * N * r;
    size_t bwd = (N + ZK_CUDA_LORA_N_TILE - 1) / ZK_CUDA_LORA_N_TILE * r * in;
    return fwd > bwd ? fwd : bwd;
}

/* compute: ZEN_BF16 (bf16 tensor-core matmuls and attention, fp32
 * accumulation) or ZEN_F32 (exact fp32, for checking against the CPU).
 * NULL + zen_fail(ZEN_ERR_INPUT) when no GPU is visible. */
zk_backend *zk_cuda_create(zen_dtype compute, int device_index);
/* GPUs visible to this process (0 if none or no driver) */
int zk_cuda_device_count(void);
/* the descriptor's plan_scratch (plan_cuda.c: plain C, in every build) */
size_t zk_cuda_plan_scratch(zen_dtype compute, const zk_reserve_plan *p);

#endif
