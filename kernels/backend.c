/* kernels/backend.c: picks a backend by name at run time. */
#include <string.h>

#include "../util/error.h"
#include "cpu/cpu_ops.h"
#ifdef ZEN_HAVE_CUDA
#include "cuda/backend_cuda.h"
#endif
#include "kernels.h"

zk_backend *zk_open(const char *device) {
    if (!strcmp(device, "cpu")) return zk_cpu_create();
    if (!strcmp(device, "cuda")) {
#ifdef ZEN_HAVE_CUDA
        return zk_cuda_create();
#else
        zen_fail(ZEN_ERR_INPUT, "device 'cuda': this build has no CUDA backend (nvcc was not found); use --device cpu");
        return NULL;
#endif
    }
    zen_fail(ZEN_ERR_INPUT, "device '%s' is unknown (expected cpu or cuda)", device);
    return NULL;
}

void zk_close(zk_backend *be) {
    if (be) be->destroy(be);
}
