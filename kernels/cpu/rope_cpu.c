/* kernels/cpu/rope_cpu.c: rotary position embedding, rotate-half (NEOX) form as in
 * Hugging Face Qwen3: for i < hd/2 with angle a = pos * theta^(-2i/hd) (pos the
 * row's position in its document),
 *   y[i]        = x[i] cos a - x[i+hd/2] sin a
 *   y[i+hd/2]   = x[i+hd/2] cos a + x[i] sin a
 * The backward is the inverse rotation (angle -a). Angles are computed in double
 * and cached per (max position, hd, theta). */
#include <math.h>
#include <stdlib.h>

#include "../../util/error.h"

#include "cpu_ops.h"

int cpu_rope_tables(zk_backend *be, size_t T, size_t hd, double theta, const float **cos_out, const float **sin_out) {
    cpu_ctx *ctx = be->ctx;
    size_t half = hd / 2;
    if (!(ctx->rope_cos && ctx->rope_T >= T && ctx->rope_hd == hd && ctx->rope_theta == theta)) {
        free(ctx->rope_cos);
        free(ctx->rope_sin);
        ctx->rope_cos = malloc(T * half * sizeof(float)); /* [T, hd/2] */
        ctx->rope_sin = malloc(T * half * sizeof(float));
        if (!ctx->rope_cos || !ctx->rope_sin) {
            free(ctx->rope_cos);
            free(ctx->rope_sin);
            ctx->rope_cos = ctx->rope_sin = NULL;
            zk_set_failed(be, ZEN_ERR_INTERNAL, "out of memory allocating RoPE tables for %zu positions on cpu", T);
            return -1;
        }
        for (size_t i = 0; i < half; i++) {
            double inv_freq = pow(theta, -2.0 * (double)i / (double)hd);
            for (size_t t = 0; t < T; t++) {
                double a = (double)t * inv_freq;
                ctx->rope_cos[t * half + i] = (float)cos(a);
                ctx->rope_sin[t * half + i] = (float)sin(a);
            }
        }
        ctx->rope_T = T;
        ctx->rope_hd = hd;
        ctx->rope_theta = theta;
    }
    *cos_out = ctx->rope_cos;
    *sin_out = ctx->rope_sin;
    return 0;
}

/* direction +1 rotates by +a (forward), -1 by -a (backward) */
static void rope_apply(zk_backend *be, float *x, const int32_t *pos, size_t N, size_t max_pos, size_t H, size_t hd,
                       double theta, float direction) {
    const float *cos_t, *sin_t;
    if (be->status || cpu_rope_tables(be, max_pos, hd, theta, &cos_t, &sin_t)) return;
    size_t half = hd / 2;
#pragma omp parallel for schedule(static) if (N * H * hd > 32768)
    for (size_t row = 0; row < N; row++) {
        size_t t = (size_t)pos[row];
        const float *c = cos_t + t * half, *s = sin_t + t * half;
        for (size_t h = 0; h < H; h++) {
            float *xh = x + (row * H + h) * hd; /* [hd] */
            for (size_t i = 0; i < half; i++) {
                float x1 = xh[i], x2 = xh[i + half];
                float sn = direction * s[i];
                xh[i] = x1 * c[i] - x2 * sn;
                xh[i + half] = x2 * c[i] + x1 * sn;
            }
        }
    }
}

void cpu_rope_fwd(zk_backend *be, void *x, const int32_t *pos, size_t N, size_t max_pos, size_t H, size_t hd,
                  double theta) {
    rope_apply(be, x, pos, N, max_pos, H, hd, theta, 1.0f);
}

void cpu_rope_bwd(zk_backend *be, void *dx, const int32_t *pos, size_t N, size_t max_pos, size_t H, size_t hd,
                  double theta) {
    rope_apply(be, dx, pos, N, max_pos, H, hd, theta, -1.0f);
}
