/* kernels/cpu/linear_cpu.c: frozen linear layers and the LoRA branch.
 * f32 compute: OpenBLAS sgemm; weights stored as bf16/f16 or block-quantised
 * (q8_0, q4_0, nf4, k-quants) are widened to fp32 a chunk of output rows at
 * a time, so no fp32 copy of a large matrix (the LM head) ever exists.
 * bf16 compute: the weights are bf16 (backend_cpu.c rounds f32/f16 ones at
 * load) or quantised; the fp32 input (x, or dy) is rounded into a bf16 copy
 * and oneDNN matmuls accumulate in fp32 into the fp32 output: one over the
 * whole bf16 weight, or one per chunk of rows dequantised to fp32 and
 * rounded to bf16.
 * A few rows (decoding, up to ZK_DECODE_ROWS) take one pass over the weight
 * instead, each row on its own in a fixed order (kernels.h): the kernel
 * variant's dot_rows kernels (simd_kernels.h), or for the types they lack
 * (and generic) linear_rows_gemv, with the same rounding.
 * The LoRA branch is in lora_cpu.c. */
#include <cblas.h>
#include <stdlib.h>
#include <omp.h>

#include "../../util/error.h"
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

/* ---- decoding: a few rows against a weight that is read once ---- */

/* sum_i x[i] w[i] for a bf16 w, in 32 partial sums (vectorised; a fixed order) */
static inline float dot_bf16(const float *x, const uint16_t *w, size_t n) {
    float acc[32] = {0};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 32; k++) acc[k] += x[i + k] * zen_bf16_to_f32(w[i + k]);
    for (; i < n; i++) acc[i % 32] += x[i] * zen_bf16_to_f32(w[i]);
    for (int width = 16; width > 0; width /= 2)
        for (int k = 0; k < width; k++) acc[k] += acc[k + width];
    return acc[0];
}

/* y[N, out] = x[N, in] W^T with one of the variant's dot_rows kernels
 * (simd_kernels.h; x is bf16 or fp32, x_bytes per element, W w_bytes):
 * blocks of CPU_DOT_ROWS output rows split over the threads, so each y
 * element has one fixed order of sums whichever thread computes it (guided:
 * half the blocks each first, the rest in shrinking chunks to whichever
 * thread is free, as the two cores of a VM do not keep the same pace while
 * streaming the weights); x rows four (whole blocks) or two at
 * a time where the variant has dot4 or dot2 (the same bits: each sum in the
 * one-row kernel's order) */
static void gemv_rows(float *y, const void *x, size_t x_bytes, const void *W, size_t w_bytes, size_t N, size_t in,
                      size_t out, dot_rows_fn dot_rows, dot_rows2_fn dot2, dot_rows4_fn dot4) {
    size_t blocks = (out + CPU_DOT_ROWS - 1) / CPU_DOT_ROWS;
#pragma omp parallel for schedule(guided)
    for (size_t b = 0; b < blocks; b++) {
        size_t o = b * CPU_DOT_ROWS;
        int rows = out - o < CPU_DOT_ROWS ? (int)(out - o) : CPU_DOT_ROWS;
        float r[CPU_DOT_ROWS], r1[CPU_DOT_ROWS];
        const char *wb = (const char *)W + o * in * w_bytes;
        size_t n = 0;
        for (; dot4 && rows == CPU_DOT_ROWS && n + 4 <= N; n += 4) {
            float r4[4][CPU_DOT_ROWS];
            const void *xs[4];
            float *rs[4];
            for (int a = 0; a < 4; a++) xs[a] = (const char *)x + (n + a) * in * x_bytes, rs[a] = r4[a];
            dot4(xs, wb, in, in, rs);
            for (int a = 0; a < 4; a++)
                for (int j = 0; j < rows; j++) y[(n + a) * out + o + j] = r4[a][j];
        }
        for (; dot2 && n + 2 <= N; n += 2) {
            dot2((const char *)x + n * in * x_bytes, (const char *)x + (n + 1) * in * x_bytes, wb, in, in, rows, r, r1);
            for (int j = 0; j < rows; j++) y[n * out + o + j] = r[j], y[(n + 1) * out + o + j] = r1[j];
        }
        for (; n < N; n++) {
            dot_rows((const char *)x + n * in * x_bytes, wb, in, in, rows, r);
            for (int j = 0; j < rows; j++) y[n * out + o + j] = r[j];
        }
    }
}


/* y[N, out] = x[N, in] W^T for N <= CPU_GEMV_ROWS: one pass over W, each
 * thread a block of output rows (so the result does not depend on the
 * thread count). Decoding is bound by reading the weights; a GEMM with one
 * row reads them at half this speed, and a chunk widened to fp32 first
 * reads and writes them three times. Where the kernel variant has a dot_rows
 * kernel for the types (gemv_rows above), it runs; otherwise a bf16 W is
 * widened in registers by the plain loop, and any other stored type a row
 * at a time into the thread's slice of the widen scratch (in bf16 compute
 * rounded to bf16, as the GEMM path rounds its dequantised chunks). In bf16
 * compute x arrives rounded to bf16 (exact products, fp32 sums: the GEMM's
 * contract). */
static void linear_rows_gemv(zk_backend *be, float *y, const float *x, const zk_weight *w, size_t N, size_t in,
                             size_t out) {
    int bf16w = w->dtype == ZEN_BF16, threads = omp_get_max_threads();
    float *rows = bf16w ? NULL : cpu_scratch(be, CPU_SCRATCH_WIDEN, (size_t)threads * in); /* [threads, in] */
    if (!bf16w && !rows) return;
    size_t row_bytes = zen_dtype_bytes(w->dtype, in);
    int round = be->compute == ZEN_BF16 && w->dtype != ZEN_F32;
#pragma omp parallel for schedule(static)
    for (size_t o = 0; o < out; o++) {
        const char *src = (const char *)w->data + o * row_bytes;
        const float *wo = NULL;
        if (!bf16w) {
            float *buf = rows + (size_t)omp_get_thread_num() * in;
            if (w->dtype == ZEN_F32) wo = (const float *)src;
            else {
                zen_widen(buf, src, w->dtype, in);
                if (round)
                    for (size_t i = 0; i < in; i++) buf[i] = zen_bf16_round(buf[i]);
                wo = buf;
            }
        }
        for (size_t n = 0; n < N; n++)
            y[n * out + o] = bf16w ? dot_bf16(x + n * in, (const uint16_t *)src, in)
                                   : cpu_dot_f32(x + n * in, wo, in);
    }
}

void cpu_linear_fwd(zk_backend *be, void *y_, const void *x_, const zk_weight *w, size_t N,
                    size_t in, size_t out) {
    float *y = y_;         /* [N, out] */
    const float *x = x_;   /* [N, in] */
    if (N <= CPU_GEMV_ROWS && !zen_dtype_is_quant(w->dtype)) { /* decoding: the variant's kernels */
        const cpu_kernel_set *ks = ((cpu_ctx *)be->ctx)->kernels;
        if (be->compute == ZEN_BF16 && w->dtype == ZEN_BF16 && ks->dot_bf16_bf16w) {
            uint16_t *xb = cpu_scratch_bf16(be, CPU_SCRATCH_BF16_IN, N * in); /* [N, in] */
            if (!xb) return;
            cpu_round_bf16(xb, x, N * in);
            gemv_rows(y, xb, sizeof(uint16_t), w->data, sizeof(uint16_t), N, in, out, ks->dot_bf16_bf16w,
                      ks->dot2_bf16_bf16w, ks->dot4_bf16_bf16w);
            return;
        }
        dot_rows_fn f32_kernel = w->dtype == ZEN_BF16 ? ks->dot_f32_bf16w
                               : w->dtype == ZEN_F16  ? ks->dot_f32_f16w
                                                      : ks->dot_f32_f32w;
        dot_rows2_fn f32_kernel2 = w->dtype == ZEN_BF16 ? ks->dot2_f32_bf16w
                                 : w->dtype == ZEN_F16  ? ks->dot2_f32_f16w
                                                        : ks->dot2_f32_f32w;
        if (be->compute == ZEN_F32 && f32_kernel) {
            gemv_rows(y, x, sizeof(float), w->data, zen_dtype_bytes(w->dtype, 1), N, in, out, f32_kernel, f32_kernel2,
                      NULL);
            return;
        }
    }
    if (N <= CPU_GEMV_ROWS) { /* decoding: each row on its own (kernels.h), the variant's kernels lacking */
        if (be->compute == ZEN_BF16) {
            float *xr = cpu_scratch(be, CPU_SCRATCH_BF16_IN, N * in); /* [N, in] x rounded to bf16 */
            if (!xr) return;
            for (size_t i = 0; i < N * in; i++) xr[i] = zen_bf16_round(x[i]);
            x = xr;
        }
        linear_rows_gemv(be, y, x, w, N, in, out);
        return;
    }
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

void cpu_scale_rows(zk_backend *be, void *x_, const float *s, size_t rows, size_t cols) {
    (void)be;
    float *x = x_;
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) x[r * cols + c] *= s[r];
}

void cpu_row_sq_norms(zk_backend *be, float *out, const zk_weight *w, size_t rows, size_t cols) {
    (void)be;
    size_t row_bytes = zen_dtype_bytes(w->dtype, cols);
#pragma omp parallel
    {
        float *buf = w->dtype == ZEN_F32 ? NULL : malloc(cols * sizeof(float)); /* one row widened */
#pragma omp for schedule(static)
        for (size_t r = 0; r < rows; r++) {
            const float *x = (const float *)w->data + r * cols;
            if (w->dtype != ZEN_F32) {
                if (!buf) continue;
                zen_widen(buf, (const char *)w->data + r * row_bytes, w->dtype, cols);
                x = buf;
            }
            double s = 0.0;
            for (size_t i = 0; i < cols; i++) s += (double)x[i] * x[i];
            out[r] = (float)s;
        }
        if (w->dtype != ZEN_F32 && !buf) zk_set_failed(be, ZEN_ERR_INTERNAL, "row norms: out of memory");
        free(buf);
    }
}

void cpu_scale_cols(zk_backend *be, void *y_, const void *x_, const float *s, size_t N, size_t cols, int accumulate) {
    (void)be;
    float *y = y_;
    const float *x = x_;
#pragma omp parallel for schedule(static) if (N * cols > 65536)
    for (size_t n = 0; n < N; n++)
        for (size_t o = 0; o < cols; o++) y[n * cols + o] = (accumulate ? y[n * cols + o] : 0.0f) + x[n * cols + o] * s[o];
}

void cpu_dropout(zk_backend *be, void *y_, const void *x_, const zk_dropout *drop, size_t n) {
    (void)be;
    float *y = y_;
    const float *x = x_;
    float keep_scale = 1.0f / (1.0f - drop->p);
    uint64_t threshold = zk_dropout_threshold(drop->p), seed = drop->seed;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] = x[i] * ((float)zk_dropout_keep(seed, i, threshold) * keep_scale);
}

void cpu_col_dot(zk_backend *be, float *out, const void *a_, const void *b_, const float *s, size_t N, size_t cols) {
    (void)be;
    const float *a = a_, *b = b_;
#pragma omp parallel for schedule(static) if (N * cols > 65536)
    for (size_t o = 0; o < cols; o++) {
        double acc = 0.0;
        for (size_t n = 0; n < N; n++) acc += (double)a[n * cols + o] * b[n * cols + o];
        out[o] += (float)(s[o] * acc);
    }
}

void cpu_add(zk_backend *be, void *y_, const void *a_, const void *b_, size_t n) {
    (void)be;
    float *y = y_;
    const float *a = a_, *b = b_;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}
