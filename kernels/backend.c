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

/* ---------------- the backends ---------------- */

#if defined(ZEN_HAVE_CUDA) && !defined(ZEN_CUDA_STATIC)
/* libzencuda.so beside the executable, else where the build put it; NULL +
 * zen_fail when it cannot be loaded */
static void *cuda_module(void) {
    static void *module;
    if (module) return module;
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
    if (!module) zen_fail(ZEN_ERR_INPUT, "device 'cuda': cannot load the CUDA backend (libzencuda.so): %s", dlerror());
    return module;
}

static void *cuda_symbol(const char *name) {
    void *module = cuda_module(), *sym = module ? dlsym(module, name) : NULL;
    if (module && !sym) zen_fail(ZEN_ERR_INPUT, "device 'cuda': libzencuda.so has no %s: %s", name, dlerror());
    return sym;
}
#endif

static zk_backend *cuda_create(zen_dtype compute, int device_index) {
#if defined(ZEN_HAVE_CUDA) && defined(ZEN_CUDA_STATIC)
    return zk_cuda_create(compute, device_index);
#elif defined(ZEN_HAVE_CUDA)
    zk_backend *(*create)(zen_dtype, int) = (zk_backend * (*)(zen_dtype, int)) cuda_symbol("zk_cuda_create");
    return create ? create(compute, device_index) : NULL;
#else
    (void)compute;
    (void)device_index;
    zen_fail(ZEN_ERR_INPUT, "device 'cuda': this build has no CUDA backend (nvcc was not found); use --device cpu");
    return NULL;
#endif
}

static int cuda_device_count(void) {
#if defined(ZEN_HAVE_CUDA) && defined(ZEN_CUDA_STATIC)
    return zk_cuda_device_count();
#elif defined(ZEN_HAVE_CUDA)
    int (*count)(void) = (int (*)(void))cuda_symbol("zk_cuda_device_count");
    return count ? count() : 0;
#else
    return 0;
#endif
}

/* CUDA computes in both; whether the GPU can is checked when it opens */
static int cuda_supports(zen_dtype dt) {
    (void)dt;
    return 0;
}

static zen_dtype cuda_auto_compute(const char **why) {
    *why = "auto: bf16 tensor cores";
    return ZEN_BF16;
}

static const zk_backend_desc BACKENDS[] = {
    {"cpu", 0, zk_cpu_supports, zk_cpu_auto_compute, zk_cpu_plan_scratch, zk_cpu_device_count, zk_cpu_create},
    {"cuda", 1, cuda_supports, cuda_auto_compute, zk_cuda_plan_scratch, cuda_device_count, cuda_create},
};

const zk_backend_desc *zk_backend_find(const char *device) {
    for (size_t i = 0; i < sizeof BACKENDS / sizeof BACKENDS[0]; i++)
        if (device && !strcmp(device, BACKENDS[i].name)) return &BACKENDS[i];
    zen_fail(ZEN_ERR_INPUT, "device '%s' is unknown (expected cpu or cuda)", device ? device : "");
    return NULL;
}

int zk_resolve_compute(const char *device, const char *compute, zen_dtype *out, const char **why) {
    const zk_backend_desc *d = zk_backend_find(device);
    const char *reason = "";
    if (!d) return ZEN_ERR_INPUT;
    if (!compute || !strcmp(compute, "auto")) *out = d->auto_compute(&reason);
    else if (!strcmp(compute, "f32")) *out = ZEN_F32;
    else if (!strcmp(compute, "bf16")) *out = ZEN_BF16;
    else return zen_fail(ZEN_ERR_INPUT, "dtype '%s' is unknown (expected auto, f32 or bf16)", compute);
    if (why) *why = reason;
    return d->supports(*out);
}

zk_backend *zk_open(const char *device, const char *compute) { return zk_open_index(device, compute, 0); }

zk_backend *zk_open_index(const char *device, const char *compute, int device_index) {
    zen_dtype dt;
    const char *why;
    if (zk_resolve_compute(device, compute, &dt, &why)) return NULL;
    zk_backend *be = zk_backend_find(device)->create(dt, device_index);
    if (be && *why) {
        size_t n = strlen(be->info);
        snprintf(be->info + n, sizeof be->info - n, " (%s)", why);
    }
    return be;
}

size_t zk_plan_scratch(const char *device, zen_dtype compute, const zk_reserve_plan *p) {
    const zk_backend_desc *d = zk_backend_find(device);
    return d ? d->plan_scratch(compute, p) : 0;
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
