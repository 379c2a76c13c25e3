/* kernels/backend.c: picks a backend by name at run time. */
#include <string.h>

#include "../util/error.h"
#include "cpu/cpu_ops.h"
#include "cuda/backend_cuda.h" /* declarations and sizes only; defined when ZEN_HAVE_CUDA */
#include "kernels.h"

int zk_resolve_compute(const char *device, const char *compute, zen_dtype *out) {
    int is_cuda = !strcmp(device, "cuda");
    if (!is_cuda && strcmp(device, "cpu"))
        return zen_fail(ZEN_ERR_INPUT, "device '%s' is unknown (expected cpu or cuda)", device);
    if (!compute || !strcmp(compute, "auto")) *out = is_cuda ? ZEN_BF16 : ZEN_F32;
    else if (!strcmp(compute, "f32")) *out = ZEN_F32;
    else if (!strcmp(compute, "bf16")) *out = ZEN_BF16;
    else return zen_fail(ZEN_ERR_INPUT, "dtype '%s' is unknown (expected auto, f32 or bf16)", compute);
    if (!is_cuda && *out != ZEN_F32)
        return zen_fail(ZEN_ERR_INPUT, "dtype '%s' is not available on device cpu (it computes in f32; bf16 is for "
                                       "--device cuda)", compute);
    return 0;
}

zk_backend *zk_open(const char *device, const char *compute) {
    zen_dtype dt;
    if (zk_resolve_compute(device, compute, &dt)) return NULL;
    if (!strcmp(device, "cpu")) return zk_cpu_create();
#ifdef ZEN_HAVE_CUDA
    return zk_cuda_create(dt);
#else
    zen_fail(ZEN_ERR_INPUT, "device 'cuda': this build has no CUDA backend (nvcc was not found); use --device cpu");
    return NULL;
#endif
}

void zk_close(zk_backend *be) {
    if (be) be->destroy(be);
}

size_t zk_plan_scratch(const char *device, zen_dtype compute, size_t matmul_elems, size_t N, size_t lora_in, size_t r,
                       int dropout, size_t attention_rows, size_t widen_elems) {
    if (strcmp(device, "cuda")) return 0;
    /* kernels/cuda: cuBLAS workspace; LoRA: the fused kernels' partial sums
     * (ranks up to ZK_CUDA_LORA_MAX_R), else with dropout a dropped copy of x
     * and of dx (fp32); per precision either a bf16 copy of the widest matmul
     * input plus attention's rowsum(dO * O), or one widened chunk of a 16-bit
     * weight */
    size_t bytes = ZK_CUDA_CUBLAS_WORKSPACE;
    if (r <= ZK_CUDA_LORA_MAX_R) bytes += zk_cuda_lora_partial_elems(N, lora_in, r) * sizeof(float);
    else if (dropout) bytes += 2 * N * lora_in * sizeof(float);
    if (compute == ZEN_BF16) bytes += matmul_elems * 2 + attention_rows * sizeof(float);
    else bytes += (widen_elems < ZK_CUDA_WIDEN_CHUNK_ELEMS ? widen_elems : ZK_CUDA_WIDEN_CHUNK_ELEMS) * sizeof(float);
    return bytes;
}
