/* kernels/cuda/backend_cuda.h: the CUDA backend's constructor (built only when
 * CMake finds the CUDA toolkit; kernels/backend.c picks it for "cuda"). */
#ifndef ZEN_BACKEND_CUDA_H
#define ZEN_BACKEND_CUDA_H
#include "../kernels.h"
#include "cuda_sizes.h"

/* compute: ZEN_BF16 (bf16 tensor-core matmuls and attention, fp32
 * accumulation) or ZEN_F32 (exact fp32, for checking against the CPU).
 * NULL + zen_fail(ZEN_ERR_INPUT) when no GPU is visible. */
zk_backend *zk_cuda_create(zen_dtype compute, int device_index);
/* GPUs visible to this process (0 if none or no driver) */
int zk_cuda_device_count(void);
/* the descriptor's plan_scratch (plan_cuda.c: plain C, in every build) */
size_t zk_cuda_plan_scratch(zen_dtype compute, const zk_reserve_plan *p);

#endif
