/* kernels/cuda/plan_cuda.c: the CUDA backend's memory plan (plain C, built
 * with or without the CUDA toolkit, so a plan can be printed anywhere). */
#include "backend_cuda.h"

/* cuBLAS workspace; LoRA: the fused kernels' partial sums (ranks up to
 * ZK_CUDA_LORA_MAX_R), else with dropout a dropped copy of x and of dx (fp32);
 * per precision either a bf16 copy of the widest matmul input or one widened
 * chunk of a 16-bit or quantised weight (in bf16 compute: one quantised
 * matrix dequantised to bf16); attention's per-row statistics; the RoPE tables */
size_t zk_cuda_plan_scratch(zen_dtype compute, const zk_reserve_plan *p) {
    size_t bytes = ZK_CUDA_CUBLAS_WORKSPACE + 2 * p->T * (p->head_dim / 2) * sizeof(float);
    if (p->lora_r && p->lora_r <= ZK_CUDA_LORA_MAX_R)
        bytes += zk_cuda_lora_partial_elems(p->N, p->widest_in, p->lora_r) * sizeof(float);
    else if (p->lora_r && p->lora_dropout)
        bytes += 2 * p->N * p->widest_in * sizeof(float);
    bytes += p->B * p->heads * p->T * sizeof(float); /* attention's per-row statistics */
    if (compute == ZEN_BF16) /* a bf16 copy of a matmul input, and one dequantised matrix */
        bytes += zen_dtype_bytes(ZEN_BF16, p->matmul_elems) + zen_dtype_bytes(ZEN_BF16, p->quant_elems);
    else bytes += (p->widen_elems < ZK_CUDA_WIDEN_CHUNK_ELEMS ? p->widen_elems : ZK_CUDA_WIDEN_CHUNK_ELEMS) * sizeof(float);
    return bytes;
}
