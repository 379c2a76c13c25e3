/* kernels/cpu/elementwise_cpu.c: SwiGLU, gathering and scattering rows, the
 * embedding lookup, and rounding to bf16.
 *
 * SwiGLU: h = silu(g) * u, silu(g) = g * sigmoid(g)
 *   dg = dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),  du = dh * silu(g)
 */
#include <math.h>
#include <string.h>

#include "cpu_ops.h"
#include "fast_exp.h"

void cpu_swiglu_fwd(zk_backend *be, void *h_, const void *g_, const void *u_, size_t n) {
    (void)be;
    float *h = h_;
    const float *g = g_, *u = u_;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float sig = 1.0f / (1.0f + zk_expf(-g[i]));
        h[i] = g[i] * sig * u[i];
    }
}

void cpu_swiglu_bwd(zk_backend *be, void *dg_, void *du_, const void *dh_, const void *g_,
                    const void *u_, size_t n) {
    (void)be;
    float *dg = dg_, *du = du_;
    const float *dh = dh_, *g = g_, *u = u_;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float sig = 1.0f / (1.0f + zk_expf(-g[i]));
        float silu = g[i] * sig;
        dg[i] = dh[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
        du[i] = dh[i] * silu;
    }
}

void cpu_round_bf16(uint16_t *dst, const float *src, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) dst[i] = zen_f32_to_bf16(src[i]);
}

void cpu_gather_rows(zk_backend *be, void *dst_, const void *src_, const int32_t *idx, size_t N, size_t C) {
    (void)be;
    float *dst = dst_; /* [N, C] */
    const float *src = src_;
#pragma omp parallel for schedule(static) if (N * C > 65536)
    for (size_t n = 0; n < N; n++) memcpy(dst + n * C, src + (size_t)idx[n] * C, C * sizeof(float));
}

void cpu_scatter_rows(zk_backend *be, void *dst_, const void *src_, const int32_t *idx, size_t N, size_t C) {
    (void)be;
    float *dst = dst_;
    const float *src = src_; /* [N, C] */
#pragma omp parallel for schedule(static) if (N * C > 65536)
    for (size_t n = 0; n < N; n++) memcpy(dst + (size_t)idx[n] * C, src + n * C, C * sizeof(float));
}

void cpu_embedding_fwd(zk_backend *be, void *out_, const int32_t *tokens, const zk_weight *w,
                       size_t N, size_t C) {
    (void)be;
    float *out = out_; /* [N, C] */
#pragma omp parallel for schedule(static) if (N * C > 65536)
    for (size_t n = 0; n < N; n++) { /* a row of any type: whole blocks (C a multiple of the block) */
        const char *row = (const char *)w->data + zen_dtype_bytes(w->dtype, (size_t)tokens[n] * C);
        zen_widen(out + n * C, row, w->dtype, C);
    }
}

void cpu_embedding_bwd(zk_backend *be, float *dW, const void *dout_, const int32_t *tokens,
                       size_t N, size_t C) {
    (void)be;
    const float *dout = dout_; /* [N, C] */
    /* serial: two rows may share a token */
    for (size_t n = 0; n < N; n++) {
        float *row = dW + (size_t)tokens[n] * C;
        for (size_t c = 0; c < C; c++) row[c] += dout[n * C + c];
    }
}
