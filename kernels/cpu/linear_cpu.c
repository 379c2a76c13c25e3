/* kernels/cpu/linear_cpu.c: frozen linear layers and the LoRA branch.
 * f32 compute: OpenBLAS sgemm; weights stored as bf16/f16 or block-quantised
 * (q8_0, q4_0, nf4, k-quants) are widened to fp32 a chunk of output rows at
 * a time, so no fp32 copy of a large matrix (the LM head) ever exists.
 * bf16 compute: the weights are bf16 (backend_cpu.c rounds f32/f16 ones at
 * load) or quantised; the fp32 input (x, or dy) is rounded into a bf16 copy
 * and oneDNN matmuls accumulate in fp32 into the fp32 output: one over the
 * whole bf16 weight, or one per chunk of rows dequantised to fp32 and
 * rounded to bf16.
 * The LoRA branch is fp32 (sgemm) in both. */
#include <cblas.h>

#include "cpu_ops.h"

/* rows of W[out,in] per chunk, and the fp32 view of rows [o0, o0+rows) */
static size_t chunk_rows(size_t in, size_t out) {
    size_t rows = CPU_WIDEN_CHUNK_ELEMS / (in ? in : 1);
    if (rows < 1) rows = 1;
    return rows < out ? rows : out;
}

static const float *weight_rows(zk_backend *be, const zk_weight *w, size_t o0, size_t rows,
                                size_t in) {
    if (w->dtype == ZEN_F32) return (const float *)w->data + o0 * in;
    float *scratch = cpu_scratch(be, CPU_SCRATCH_WIDEN, rows * in);
    if (!scratch) return NULL;
    /* rows of whole blocks (in is a multiple of the block), on every thread */
    const char *src = (const char *)w->data + zen_dtype_bytes(w->dtype, o0 * in);
    size_t row_bytes = zen_dtype_bytes(w->dtype, in);
#pragma omp parallel for schedule(static) if (rows * in > 65536)
    for (size_t r = 0; r < rows; r++) zen_widen(scratch + r * in, src + r * row_bytes, w->dtype, in);
    return scratch;
}

/* rows [o0, o0+rows) of a quantised W as bf16 (dequantised, then rounded) */
static const uint16_t *weight_rows_bf16(zk_backend *be, const zk_weight *w, size_t o0, size_t rows, size_t in) {
    const float *wide = weight_rows(be, w, o0, rows, in);
    uint16_t *b = wide ? cpu_scratch_bf16(be, CPU_SCRATCH_BF16_W, rows * in) : NULL;
    if (b) cpu_round_bf16(b, wide, rows * in);
    return b;
}

void cpu_linear_fwd(zk_backend *be, void *y_, const void *x_, const zk_weight *w, size_t N,
                    size_t in, size_t out) {
    float *y = y_;         /* [N, out] */
    const float *x = x_;   /* [N, in] */
    if (be->compute == ZEN_BF16) {
        uint16_t *xb = cpu_scratch_bf16(be, CPU_SCRATCH_BF16_IN, N * in); /* [N, in] */
        if (!xb) return;
        cpu_round_bf16(xb, x, N * in);
        if (!zen_dtype_is_quant(w->dtype)) {
            /* y = xb W^T: W [out, in] read as [in, out] */
            cpu_bf16_gemm(be, 0, 1, N, out, in, xb, in, w->data, in, y, out, 0);
            return;
        }
        size_t step = chunk_rows(in, out);
        for (size_t o0 = 0; o0 < out; o0 += step) {
            size_t rows = out - o0 < step ? out - o0 : step;
            const uint16_t *W = weight_rows_bf16(be, w, o0, rows, in); /* [rows, in] */
            if (!W) return;
            /* y[:, o0:o0+rows] = xb W^T */
            cpu_bf16_gemm(be, 0, 1, N, rows, in, xb, in, W, in, y + o0, out, 0);
        }
        return;
    }
    size_t step = w->dtype == ZEN_F32 ? out : chunk_rows(in, out);
    for (size_t o0 = 0; o0 < out; o0 += step) {
        size_t rows = out - o0 < step ? out - o0 : step;
        const float *W = weight_rows(be, w, o0, rows, in); /* [rows, in] */
        if (!W) return;
        /* y[:, o0:o0+rows] = x W^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)rows, (int)in, 1.0f, x,
                    (int)in, W, (int)in, 0.0f, y + o0, (int)out);
    }
}

void cpu_linear_bwd(zk_backend *be, void *dx_, const void *dy_, const zk_weight *w, size_t N,
                    size_t in, size_t out, int accumulate) {
    float *dx = dx_;         /* [N, in] */
    const float *dy = dy_;   /* [N, out] */
    if (be->compute == ZEN_BF16) {
        uint16_t *dyb = cpu_scratch_bf16(be, CPU_SCRATCH_BF16_IN, N * out); /* [N, out] */
        if (!dyb) return;
        cpu_round_bf16(dyb, dy, N * out);
        if (!zen_dtype_is_quant(w->dtype)) {
            /* dx (+)= dyb W */
            cpu_bf16_gemm(be, 0, 0, N, in, out, dyb, out, w->data, in, dx, in, accumulate);
            return;
        }
        size_t step = chunk_rows(in, out);
        for (size_t o0 = 0; o0 < out; o0 += step) {
            size_t rows = out - o0 < step ? out - o0 : step;
            const uint16_t *W = weight_rows_bf16(be, w, o0, rows, in);
            if (!W) return;
            /* dx (+)= dyb[:, o0:o0+rows] W[o0:o0+rows, :] */
            cpu_bf16_gemm(be, 0, 0, N, in, rows, dyb + o0, out, W, in, dx, in, accumulate || o0 > 0);
        }
        return;
    }
    size_t step = w->dtype == ZEN_F32 ? out : chunk_rows(in, out);
    for (size_t o0 = 0; o0 < out; o0 += step) {
        size_t rows = out - o0 < step ? out - o0 : step;
        const float *W = weight_rows(be, w, o0, rows, in);
        if (!W) return;
        float beta = (o0 == 0 && !accumulate) ? 0.0f : 1.0f;
        /* dx += dy[:, o0:o0+rows] W[o0:o0+rows, :] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)in, (int)rows, 1.0f,
                    dy + o0, (int)out, W, (int)in, beta, dx, (int)in);
    }
}

/* xd[N,in] = dropout(x) into a scratch buffer, or x itself without dropout */
static const float *dropped_input(zk_backend *be, const float *x, size_t n, const zk_dropout *drop) {
    if (!drop || drop->p <= 0.0f) return x;
    float *xd = cpu_scratch(be, CPU_SCRATCH_DROP_X, n);
    if (!xd) return NULL;
    float keep_scale = 1.0f / (1.0f - drop->p);
    uint64_t threshold = zk_dropout_threshold(drop->p), seed = drop->seed;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) xd[i] = x[i] * ((float)zk_dropout_keep(seed, i, threshold) * keep_scale);
    return xd;
}

void cpu_lora_fwd(zk_backend *be, void *y_, float *u, const void *x_, const float *A,
                  const float *B, size_t N, size_t in, size_t out, size_t r, float scale,
                  const zk_dropout *drop) {
    float *y = y_;                                             /* [N, out] */
    const float *x = dropped_input(be, x_, N * in, drop);      /* [N, in] */
    if (!x) return;
    /* u[N,r] = x A^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)r, (int)in, 1.0f, x,
                (int)in, A, (int)in, 0.0f, u, (int)r);
    /* y += scale * u B^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)out, (int)r, scale, u,
                (int)r, B, (int)r, 1.0f, y, (int)out);
}

void cpu_lora_bwd(zk_backend *be, void *dx_, float *dA, float *dB, float *du, const void *dy_,
                  const void *x_, const float *u, const float *A, const float *B, size_t N,
                  size_t in, size_t out, size_t r, float scale, const zk_dropout *drop) {
    float *dx = dx_;                                         /* [N, in] */
    const float *dy = dy_;                                   /* [N, out] */
    const float *x = dropped_input(be, x_, N * in, drop);    /* [N, in] the same xd as forward */
    if (!x) return;
    /* du[N,r] = scale * dy B */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)r, (int)out, scale, dy,
                (int)out, B, (int)r, 0.0f, du, (int)r);
    /* dB[out,r] += scale * dy^T u */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)r, (int)N, scale, dy,
                (int)out, u, (int)r, 1.0f, dB, (int)r);
    /* dA[r,in] += du^T x */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)in, (int)N, 1.0f, du,
                (int)r, x, (int)in, 1.0f, dA, (int)in);
    if (!drop || drop->p <= 0.0f) {
        /* dx[N,in] += du A */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)in, (int)r, 1.0f, du,
                    (int)r, A, (int)in, 1.0f, dx, (int)in);
        return;
    }
    /* dxd[N,in] = du A, then dx += dxd through the dropout mask */
    float *dxd = cpu_scratch(be, CPU_SCRATCH_DROP_DX, N * in);
    if (!dxd) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)in, (int)r, 1.0f, du,
                (int)r, A, (int)in, 0.0f, dxd, (int)in);
    float keep_scale = 1.0f / (1.0f - drop->p);
    uint64_t threshold = zk_dropout_threshold(drop->p), seed = drop->seed;
    size_t n = N * in;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) dx[i] += dxd[i] * ((float)zk_dropout_keep(seed, i, threshold) * keep_scale);
}

void cpu_add(zk_backend *be, void *y_, const void *a_, const void *b_, size_t n) {
    (void)be;
    float *y = y_;
    const float *a = a_, *b = b_;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}
