/* kernels/cuda/backend_cuda.h: the CUDA backend's constructor (built only when
 * CMake finds the CUDA toolkit; kernels/backend.c picks it for "cuda"). */
#ifndef ZEN_BACKEND_CUDA_H
#define ZEN_BACKEND_CUDA_H
#include "../kernels.h"

/* device scratch sizes, shared with the memory plan (zk_plan_scratch) */
#define ZK_CUDA_CUBLAS_WORKSPACE ((size_t)32 << 20)  /* cublasSetWorkspace */
#define ZK_CUDA_WIDEN_CHUNK_ELEMS ((size_t)1 << 24)  /* fp32 elements of one widened weight chunk (f32 compute) */

/* compute: ZEN_BF16 (bf16 tensor-core matmuls and attention, fp32
 * accumulation) or ZEN_F32 (exact fp32, for checking against the CPU).
 * NULL + zen_fail(ZEN_ERR_INPUT) when no GPU is visible. */
zk_backend *zk_cuda_create(zen_dtype compute);

#endif
