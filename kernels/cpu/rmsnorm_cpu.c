/* kernels/cpu/rmsnorm_cpu.c: RMSNorm over the last dimension, used for the
 * hidden state (dim = hidden) and per head for QK-norm (dim = head_dim).
 *
 * forward:  rstd = 1/sqrt(mean(x^2) + eps),  y = x * rstd * w
 * backward: with g = dy * w,
 *           dx = rstd * g - x * rstd^3 * sum(g * x) / dim
 *           dw = sum over rows of dy * x * rstd
 */
#include <math.h>

#include "cpu_ops.h"

void cpu_rmsnorm_fwd(zk_backend *be, void *y_, float *rstd, const void *x_, const float *w,
                     size_t rows, size_t dim, float eps) {
    (void)be;
    float *y = y_;       /* [rows, dim] */
    const float *x = x_; /* [rows, dim] */
#pragma omp parallel for schedule(static) if (rows * dim > 32768)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        double sum_sq = 0.0;
        for (size_t i = 0; i < dim; i++) sum_sq += (double)xr[i] * xr[i];
        float s = (float)(1.0 / sqrt(sum_sq / (double)dim + (double)eps));
        rstd[r] = s;
        for (size_t i = 0; i < dim; i++) yr[i] = xr[i] * s * w[i];
    }
}

void cpu_rmsnorm_bwd(zk_backend *be, void *dx_, float *dw, const void *dy_, const void *x_,
                     const float *rstd, const float *w, size_t rows, size_t dim, int accumulate) {
    (void)be;
    float *dx = dx_;       /* [rows, dim] */
    const float *dy = dy_; /* [rows, dim] */
    const float *x = x_;   /* [rows, dim] */
#pragma omp parallel for schedule(static) if (rows * dim > 32768)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim, *dyr = dy + r * dim;
        float *dxr = dx + r * dim;
        double s = rstd[r];
        double dot = 0.0; /* sum(dy * w * x) */
        for (size_t i = 0; i < dim; i++) dot += (double)dyr[i] * w[i] * xr[i];
        double c = s * s * s * dot / (double)dim;
        for (size_t i = 0; i < dim; i++) {
            float g = (float)(s * dyr[i] * w[i] - c * xr[i]);
            dxr[i] = accumulate ? dxr[i] + g : g;
        }
    }
    if (dw) { /* rarely needed (norm weights are frozen); serial to avoid races */
        for (size_t r = 0; r < rows; r++)
            for (size_t i = 0; i < dim; i++) dw[i] += dy[r * dim + i] * x[r * dim + i] * rstd[r];
    }
}
