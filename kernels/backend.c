/* kernels/backend.c: picks a backend by name at run time. The CUDA backend
 * is a module (libzencuda.so) loaded on first use, so CPU runs never load the
 * CUDA libraries; the emulator tests link it in instead (ZEN_CUDA_STATIC). */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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

#if defined(ZEN_HAVE_CUDA) && !defined(ZEN_CUDA_STATIC)
/* libzencuda.so beside the executable, else where the build put it */
static zk_backend *cuda_module_create(zen_dtype compute) {
    static void *module;
    if (!module) {
        char exe[4096], path[4200];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n > 0) {
            exe[n] = '\0';
            char *slash = strrchr(exe, '/');
            if (slash) *slash = '\0';
            snprintf(path, sizeof path, "%s/libzencuda.so", exe);
            if (access(path, F_OK) == 0) module = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        }
        if (!module) module = dlopen(ZEN_CUDA_MODULE, RTLD_NOW | RTLD_LOCAL);
        if (!module) {
            zen_fail(ZEN_ERR_INPUT, "device 'cuda': cannot load the CUDA backend (libzencuda.so): %s", dlerror());
            return NULL;
        }
    }
    zk_backend *(*create)(zen_dtype) = (zk_backend * (*)(zen_dtype)) dlsym(module, "zk_cuda_create");
    if (!create) {
        zen_fail(ZEN_ERR_INPUT, "device 'cuda': libzencuda.so has no zk_cuda_create: %s", dlerror());
        return NULL;
    }
    return create(compute);
}
#endif

zk_backend *zk_open(const char *device, const char *compute) {
    zen_dtype dt;
    if (zk_resolve_compute(device, compute, &dt)) return NULL;
    if (!strcmp(device, "cpu")) return zk_cpu_create();
#if defined(ZEN_HAVE_CUDA) && defined(ZEN_CUDA_STATIC)
    return zk_cuda_create(dt);
#elif defined(ZEN_HAVE_CUDA)
    return cuda_module_create(dt);
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
