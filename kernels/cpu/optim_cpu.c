/* kernels/cpu/optim_cpu.c: the optimizer's kernels on the fp32 LoRA state:
 * sum of squares (for the global gradient norm) and the AdamW update. */
#include <math.h>

#include "cpu_ops.h"

double cpu_sum_squares(zk_backend *be, const float *x, size_t n) {
    (void)be;
    double total = 0.0;
    /* fixed partition into 64 pieces so the sum does not depend on the thread count */
    enum { PIECES = 64 };
    double partial[PIECES];
#pragma omp parallel for schedule(static)
    for (int p = 0; p < PIECES; p++) {
        size_t lo = n * (size_t)p / PIECES, hi = n * (size_t)(p + 1) / PIECES;
        double s = 0.0;
        for (size_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
        partial[p] = s;
    }
    for (int p = 0; p < PIECES; p++) total += partial[p];
    return total;
}

void cpu_adamw(zk_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr,
               float beta1, float beta2, float eps, float weight_decay, float grad_scale, long step) {
    (void)be;
    double bc1 = 1.0 - pow((double)beta1, (double)step);
    double bc2 = 1.0 - pow((double)beta2, (double)step);
    float step_size = (float)((double)lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float decay = 1.0f - lr * weight_decay;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float grad = g[i] * grad_scale;
        p[i] *= decay;
        m[i] = beta1 * m[i] + (1.0f - beta1) * grad;
        v[i] = beta2 * v[i] + (1.0f - beta2) * grad * grad;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] -= step_size * m[i] / denom;
    }
}
