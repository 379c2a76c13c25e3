/* kernels/backend.c: picks a backend by name at run time. The CUDA backend
 * is a module (libzencuda.so) loaded on first use, so CPU runs never load the
 * CUDA libraries; the emulator tests link it in instead (ZEN_CUDA_STATIC). */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdlib.h>
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

void zk_set_failed(zk_backend *be, int code, const char *fmt, ...) {
    char msg[sizeof be->status_msg];
    va_list args;
    va_start(args, fmt);
    vsnprintf(msg, sizeof msg, fmt, args);
    va_end(args);
#pragma omp critical(zk_status)
    {
        if (!be->status) {
            memcpy(be->status_msg, msg, sizeof msg);
            be->status = code ? code : ZEN_ERR_INTERNAL;
        }
    }
}

int zk_status(zk_backend *be) {
    if (!be->status) return 0;
    return zen_fail(be->status, "%s", be->status_msg);
}

int zk_fault_hit(const char *name) {
    /* one counter per name (a handful of names at most), restarted whenever
     * the variable's value changes, so a test can arm it mid-process */
    static struct { const char *name; char value[32]; long target, count; } slots[8];
    int hit = 0;
#pragma omp critical(zk_fault)
    {
        int i = 0;
        while (i < 8 && slots[i].name && strcmp(slots[i].name, name)) i++;
        if (i < 8) {
            const char *v = getenv(name);
            if (!slots[i].name || strncmp(slots[i].value, v ? v : "", sizeof slots[i].value)) {
                slots[i].name = name;
                snprintf(slots[i].value, sizeof slots[i].value, "%s", v ? v : "");
                slots[i].target = v ? atol(v) : 0;
                slots[i].count = 0;
            }
            hit = slots[i].target > 0 && ++slots[i].count == slots[i].target;
        }
    }
    return hit;
}

void zk_close(zk_backend *be) {
    if (be) be->destroy(be);
}

size_t zk_plan_scratch(const char *device, zen_dtype compute, const zk_reserve_plan *p) {
    if (strcmp(device, "cuda")) { /* cpu: the buffers cpu_reserve allocates */
        size_t elems[4], rope;
        cpu_scratch_sizes(p, elems, &rope);
        return (elems[0] + elems[1] + elems[2] + elems[3] + rope) * sizeof(float);
    }
    /* kernels/cuda: cuBLAS workspace; LoRA: the fused kernels' partial sums
     * (ranks up to ZK_CUDA_LORA_MAX_R), else with dropout a dropped copy of x
     * and of dx (fp32); per precision either a bf16 copy of the widest matmul
     * input or one widened chunk of a 16-bit weight; attention's per-row
     * statistics; the RoPE tables */
    size_t bytes = ZK_CUDA_CUBLAS_WORKSPACE + 2 * p->T * (p->head_dim / 2) * sizeof(float);
    if (p->lora_r && p->lora_r <= ZK_CUDA_LORA_MAX_R)
        bytes += zk_cuda_lora_partial_elems(p->N, p->widest_in, p->lora_r) * sizeof(float);
    else if (p->lora_r && p->lora_dropout)
        bytes += 2 * p->N * p->widest_in * sizeof(float);
    bytes += p->B * p->heads * p->T * sizeof(float); /* attention's per-row statistics */
    if (compute == ZEN_BF16) bytes += p->matmul_elems * 2;
    else bytes += (p->widen_elems < ZK_CUDA_WIDEN_CHUNK_ELEMS ? p->widen_elems : ZK_CUDA_WIDEN_CHUNK_ELEMS) * sizeof(float);
    return bytes;
}

