/* kernels/cuda/cuda_sizes.h: the CUDA backend's fixed sizes, shared by its
 * kernels and by the memory plan (plan_cuda.c), which counts the scratch they
 * take in every build, with or without nvcc. */
#ifndef ZEN_CUDA_SIZES_H
#define ZEN_CUDA_SIZES_H
#include <stddef.h>

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

#endif
