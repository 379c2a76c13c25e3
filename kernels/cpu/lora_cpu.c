/* kernels/cpu/lora_cpu.c: the LoRA branch on the CPU, in fp32 (both computes).
 *   forward:  u[N,r] = xd A^T;  y[N,out] += scale * u B^T
 *   backward: du = scale * dy B;  dB += scale * dy^T u;  dA += du^T xd;
 *             dx += dropout'(du A)
 * with xd = dropout(x) regenerated from its hash (kernels.h), never stored.
 *
 * Rank r is small (8, 16), so four of the six products read a large matrix
 * (x or dy, [N, in or out]) to make or update a small one ([N, r] or
 * [r, in or out]). OpenBLAS runs those skinny shapes at 12-16 GB/s where
 * this machine reads 32, and the sgemm path also writes and rereads a
 * dropped copy of x and of dx. The fused path reads each large matrix once,
 * with the dropout mask made in registers, on the variant's kernels
 * (simd_kernels.h; avx2 and avx512 have them):
 *   - row passes (u = xd A^T, du = scale dy B): each thread owns whole rows,
 *     a few rows at a time, each row's 8 sums per rank in registers;
 *   - column passes (dB, and dA together with dx): each thread owns blocks of
 *     columns (a vector's width) of dB^T or dA and sums over the rows in
 *     order, a chunk of rows at a time;
 *   - du and dB walk dy chunk by chunk together, so the column pass rereads
 *     from cache what the row pass has just read.
 * y += scale u B^T stays on sgemm, which writes y at the memory's pace.
 * Decoding (at most ZK_DECODE_ROWS rows) computes each row on its own in a
 * fixed order instead (kernels.h).
 * Each fused output has one owner and one fixed order of sums, so its bits do
 * not depend on the thread count; they differ from sgemm's by rounding. The
 * fused path needs a variant with the kernels and r a multiple of 8;
 * otherwise (generic, neon), or with ZEN_LORA_SGEMM=1, the branch runs on
 * sgemm. */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "simd_kernels.h"

#define LORA_GROUP CPU_LORA_GROUP /* ranks summed together in registers */
#define LORA_CHUNK_ROWS 32 /* rows per chunk of a column pass */

/* ---- the sgemm path (r not a multiple of 8, or a variant without fused kernels) ---- */

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

static void lora_fwd_sgemm(zk_backend *be, float *y, float *u, const float *x_, const float *A, const float *B,
                           size_t N, size_t in, size_t out, size_t r, float scale, const zk_dropout *drop) {
    const float *x = dropped_input(be, x_, N * in, drop); /* [N, in] */
    if (!x) return;
    /* u[N,r] = x A^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)r, (int)in, 1.0f, x, (int)in, A, (int)in, 0.0f,
                u, (int)r);
    /* y += scale * u B^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)out, (int)r, scale, u, (int)r, B, (int)r, 1.0f,
                y, (int)out);
}

static void lora_bwd_sgemm(zk_backend *be, float *dx, float *dA, float *dB, float *du, const float *dy,
                           const float *x_, const float *u, const float *A, const float *B, size_t N, size_t in,
                           size_t out, size_t r, float scale, const zk_dropout *drop) {
    const float *x = dropped_input(be, x_, N * in, drop); /* [N, in] the same xd as forward */
    if (!x) return;
    /* du[N,r] = scale * dy B */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)r, (int)out, scale, dy, (int)out, B, (int)r,
                0.0f, du, (int)r);
    /* dB[out,r] += scale * dy^T u */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)r, (int)N, scale, dy, (int)out, u, (int)r,
                1.0f, dB, (int)r);
    /* dA[r,in] += du^T x */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)in, (int)N, 1.0f, du, (int)r, x, (int)in, 1.0f,
                dA, (int)in);
    if (!drop || drop->p <= 0.0f) {
        /* dx[N,in] += du A */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)in, (int)r, 1.0f, du, (int)r, A, (int)in,
                    1.0f, dx, (int)in);
        return;
    }
    /* dxd[N,in] = du A, then dx += dxd through the dropout mask */
    float *dxd = cpu_scratch(be, CPU_SCRATCH_DROP_DX, N * in);
    if (!dxd) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)in, (int)r, 1.0f, du, (int)r, A, (int)in, 0.0f,
                dxd, (int)in);
    float keep_scale = 1.0f / (1.0f - drop->p);
    uint64_t threshold = zk_dropout_threshold(drop->p), seed = drop->seed;
    size_t n = N * in;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) dx[i] += dxd[i] * ((float)zk_dropout_keep(seed, i, threshold) * keep_scale);
}

/* ---- the fused path: the variant's row and column passes (simd_kernels.h) ---- */

/* Wt[k*cols + c] = W[c*r + k]: B [out, r] as rows of a rank */
static void transpose_rows(float *Wt, const float *W, size_t cols, size_t r) {
#pragma omp parallel for schedule(static) if (cols * r > 65536)
    for (size_t c = 0; c < cols; c++)
        for (size_t k = 0; k < r; k++) Wt[k * cols + c] = W[c * r + k];
}

static lora_drop make_drop(const zk_dropout *drop, size_t ld) {
    lora_drop d = {0, 0, 0, 1.0f, ld};
    if (drop && drop->p > 0.0f) {
        d.on = 1;
        d.seed = drop->seed;
        d.threshold = zk_dropout_threshold(drop->p);
        d.keep_scale = 1.0f / (1.0f - drop->p);
    }
    return d;
}

/* Y[n0:n1, r] = scale * M[n0:n1, C] d W[r, C]^T, the groups of the
 * variant's rows shared over the threads of the enclosing parallel region */
static void row_pass(const cpu_kernel_set *ks, const float *M, size_t C, const float *W, float *Y, size_t r,
                     size_t n0, size_t n1, float scale, const lora_drop *d) {
    size_t rows = (size_t)ks->lora_rows, groups = (n1 - n0 + rows - 1) / rows;
#pragma omp for schedule(static) nowait
    for (size_t q = 0; q < groups; q++) {
        size_t a = n0 + q * rows, b = a + rows < n1 ? a + rows : n1;
        for (size_t g = 0; g < r; g += LORA_GROUP) ks->lora_row_pass8(M, C, C, W + g * C, C, Y + g, r, a, b, scale, d);
    }
}

static void lora_fwd_fused(zk_backend *be, float *y, float *u, const float *x, const float *A, const float *B,
                           size_t N, size_t in, size_t out, size_t r, float scale, const zk_dropout *drop) {
    const cpu_kernel_set *ks = ((cpu_ctx *)be->ctx)->kernels;
    lora_drop d = make_drop(drop, in);
    /* u[N,r] = xd A^T */
#pragma omp parallel if (N * in > 65536)
    row_pass(ks, x, in, A, u, r, 0, N, 1.0f, &d);
    /* y += scale * u B^T: sgemm reads and writes y at the memory's pace */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)out, (int)r, scale, u, (int)r, B, (int)r, 1.0f,
                y, (int)out);
}

/* the end of row chunk ch of N rows */
static size_t chunk_end(size_t ch, size_t N) {
    size_t n1 = (ch + 1) * LORA_CHUNK_ROWS;
    return n1 < N ? n1 : N;
}

static void lora_bwd_fused(zk_backend *be, float *dx, float *dA, float *dB, float *du, const float *dy,
                           const float *x, const float *u, const float *A, const float *B, size_t N, size_t in,
                           size_t out, size_t r, float scale, const zk_dropout *drop) {
    const cpu_kernel_set *ks = ((cpu_ctx *)be->ctx)->kernels;
    /* B^T [r, out], then this call's sums of dB^T [r, out] and dA [r, in] */
    float *Bt = cpu_scratch(be, CPU_SCRATCH_LORA, cpu_lora_scratch_elems(r, in, out));
    if (!Bt) return;
    float *GB = Bt + r * out, *GA = GB + r * out;
    transpose_rows(Bt, B, out, r);
    memset(GB, 0, r * (out + in) * sizeof(float));
    lora_drop none = make_drop(NULL, out), d = make_drop(drop, in);
    size_t chunks = (N + LORA_CHUNK_ROWS - 1) / LORA_CHUNK_ROWS, cols = (size_t)ks->lora_cols;
    size_t out_blocks = (out + cols - 1) / cols, in_blocks = (in + cols - 1) / cols;
#pragma omp parallel if (N * (in + out) > 65536)
    {
        /* du = scale * dy B (row groups) and GB = u^T dy (column blocks), a
         * chunk of dy's rows at a time; a static schedule gives each thread
         * the same rows and columns in every chunk, so no barrier is needed */
        for (size_t ch = 0; ch < chunks; ch++) {
            size_t n0 = ch * LORA_CHUNK_ROWS, n1 = chunk_end(ch, N);
            row_pass(ks, dy, out, Bt, du, r, n0, n1, scale, &none);
#pragma omp for schedule(static) nowait
            for (size_t blk = 0; blk < out_blocks; blk++)
                for (size_t g = 0; g < r; g += LORA_GROUP)
                    ks->lora_column_pass8(dy, out, blk, u + g, r, GB + g * out, n0, n1, &none, NULL, NULL, 0);
        }
#pragma omp barrier
        /* dB += scale * GB^T */
#pragma omp for schedule(static)
        for (size_t o = 0; o < out; o++)
            for (size_t k = 0; k < r; k++) dB[o * r + k] += scale * GB[k * out + o];
        /* GA = du^T xd and dx += dropout'(du A) (column blocks, chunk by chunk) */
        for (size_t ch = 0; ch < chunks; ch++) {
            size_t n0 = ch * LORA_CHUNK_ROWS, n1 = chunk_end(ch, N);
#pragma omp for schedule(static) nowait
            for (size_t blk = 0; blk < in_blocks; blk++)
                for (size_t g = 0; g < r; g += LORA_GROUP)
                    ks->lora_column_pass8(x, in, blk, du + g, r, GA + g * in, n0, n1, &d, g == 0 ? dx : NULL, A, r);
        }
#pragma omp barrier
        /* dA += GA */
#pragma omp for schedule(static)
        for (size_t i = 0; i < r * in; i++) dA[i] += GA[i];
    }
}

int cpu_lora_fused_available(void) {
    const char *force_sgemm = getenv("ZEN_LORA_SGEMM");
    return cpu_kernels()->lora_row_pass8 && !(force_sgemm && *force_sgemm && *force_sgemm != '0');
}

/* B^T [r, out], dB^T's sums [r, out] and dA's [r, in] */
size_t cpu_lora_scratch_elems(size_t r, size_t in, size_t out) { return r * (2 * out + in); }

static int use_fused(zk_backend *be, size_t r) {
    return ((cpu_ctx *)be->ctx)->lora_fused && r % LORA_GROUP == 0;
}

/* decoding (N <= ZK_DECODE_ROWS): each row on its own in a fixed order (kernels.h); each thread a block of
 * ranks, then of output columns */
static void lora_fwd_rows(zk_backend *be, float *y, float *u, const float *x_, const float *A, const float *B,
                          size_t N, size_t in, size_t out, size_t r, float scale, const zk_dropout *drop) {
    const float *x = dropped_input(be, x_, N * in, drop); /* [N, in] */
    if (!x) return;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (size_t k = 0; k < r; k++)
            for (size_t n = 0; n < N; n++) u[n * r + k] = cpu_dot_f32(x + n * in, A + k * in, in);
#pragma omp for schedule(static)
        for (size_t o = 0; o < out; o++)
            for (size_t n = 0; n < N; n++) y[n * out + o] += scale * cpu_dot_f32(u + n * r, B + o * r, r);
    }
}

void cpu_lora_fwd(zk_backend *be, void *y, float *u, const void *x, const float *A, const float *B, size_t N,
                  size_t in, size_t out, size_t r, float scale, const zk_dropout *drop) {
    /* y [N, out], u [N, r], x [N, in], A [r, in], B [out, r] */
    if (N <= ZK_DECODE_ROWS)
        lora_fwd_rows(be, y, u, x, A, B, N, in, out, r, scale, drop);
    else if (use_fused(be, r))
        lora_fwd_fused(be, y, u, x, A, B, N, in, out, r, scale, drop);
    else
        lora_fwd_sgemm(be, y, u, x, A, B, N, in, out, r, scale, drop);
}

void cpu_lora_bwd(zk_backend *be, void *dx, float *dA, float *dB, float *du, const void *dy, const void *x,
                  const float *u, const float *A, const float *B, size_t N, size_t in, size_t out, size_t r,
                  float scale, const zk_dropout *drop) {
    /* dx [N, in], dA [r, in], dB [out, r], du [N, r], dy [N, out] */
    if (use_fused(be, r))
        lora_bwd_fused(be, dx, dA, dB, du, dy, x, u, A, B, N, in, out, r, scale, drop);
    else
        lora_bwd_sgemm(be, dx, dA, dB, du, dy, x, u, A, B, N, in, out, r, scale, drop);
}
