/* kernels/cuda/lora_cuda.cu: the LoRA branch, y += scale * dropout(x) A^T B^T,
 * and its backward, in fp32 (in both compute precisions).
 *
 * The adapter's matmuls are thin (rank r), so their cost is memory traffic
 * over x [N, in] and dx, not FLOPs. For r <= ZK_CUDA_LORA_MAX_R two fused
 * kernels read them once each, with the dropout mask recomputed from its hash
 * (kernels.h) instead of a dropped copy of x being written and read back:
 *   forward   u = dropout(x) A^T: blocks of 64 rows x 96 columns of x (split
 *             over `in`), partial sums [chunk, N, r], then a fixed-order sum
 *   backward  dA += du^T dropout(x) and dx += dropout'(du A) in one pass over
 *             x and dx: blocks of 64 rows x 256 columns; dA's partial sums
 *             [row chunk, r, in] are added in a fixed order
 * so the results are deterministic (no atomics). y += scale u B^T, du and dB
 * stay on cuBLAS (they read y / dy, which no fusion avoids). Higher ranks use
 * cuBLAS throughout with a materialised dropout(x). */
#include "cuda_common.cuh"

#define LORA_THREADS 256
#define BWD_COLS 256 /* columns of x per backward block, one per thread */

/* the dropout of one run of the kernels: use = 0 keeps everything */
typedef struct {
    int use;
    unsigned long long seed, threshold;
    float keep_scale;
} drop_args;

static drop_args drop_of(const zk_dropout *d) {
    drop_args a = {0, 0, 0, 1.0f};
    if (d && d->p > 0.0f) a.use = 1, a.seed = d->seed, a.threshold = zk_dropout_threshold(d->p), a.keep_scale = 1.0f / (1.0f - d->p);
    return a;
}

/* ---------------- fused forward: u = dropout(x) A^T ---------------- */

#define FWD_ROWS 64
#define LDX (ZK_CUDA_LORA_K_TILE + 1) /* padded: rows of the tiles fall in different banks */

/* grid (ceil(N / 64), ceil(in / 96)); part[chunk][n][j] = sum over the
 * chunk's columns i of dropout(x)[n, i] A[j, i] */
__global__ static void lora_down_partial_kernel(float *part, const float *x, const float *A, size_t N, size_t in, int r,
                                                drop_args d) {
    ZK_DYNAMIC_SMEM(smem);
    float *xs = (float *)smem;      /* [64][LDX] dropout(x) tile */
    float *as = xs + FWD_ROWS * LDX; /* [r][LDX]  A tile */
    size_t n0 = (size_t)blockIdx.x * FWD_ROWS, i0 = (size_t)blockIdx.y * ZK_CUDA_LORA_K_TILE;
    for (int e = threadIdx.x; e < FWD_ROWS * ZK_CUDA_LORA_K_TILE; e += blockDim.x) {
        int rr = e / ZK_CUDA_LORA_K_TILE, c = e % ZK_CUDA_LORA_K_TILE;
        size_t n = n0 + rr, i = i0 + c;
        float v = 0.0f;
        if (n < N && i < in) {
            v = x[n * in + i];
            if (d.use) v = zk_dropout_keep(d.seed, n * in + i, d.threshold) ? v * d.keep_scale : 0.0f;
        }
        xs[rr * LDX + c] = v;
    }
    for (int e = threadIdx.x; e < r * ZK_CUDA_LORA_K_TILE; e += blockDim.x) {
        int j = e / ZK_CUDA_LORA_K_TILE, c = e % ZK_CUDA_LORA_K_TILE;
        size_t i = i0 + c;
        as[j * LDX + c] = i < in ? A[(size_t)j * in + i] : 0.0f;
    }
    __syncthreads();
    for (int o = threadIdx.x; o < FWD_ROWS * r; o += blockDim.x) {
        int rr = o / r, j = o % r;
        if (n0 + rr >= N) continue;
        float s = 0.0f;
        for (int c = 0; c < ZK_CUDA_LORA_K_TILE; c++) s += xs[rr * LDX + c] * as[j * LDX + c];
        part[((size_t)blockIdx.y * N + n0 + rr) * r + j] = s;
    }
}

/* out[e] (+)= sum over c of part[c * count + e], c in order */
__global__ static void sum_partials_kernel(float *out, const float *part, size_t chunks, size_t count, int accumulate) {
    size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= count) return;
    float s = 0.0f;
    for (size_t c = 0; c < chunks; c++) s += part[c * count + e];
    out[e] = accumulate ? out[e] + s : s;
}

/* ---------------- fused backward: dA += du^T dropout(x), dx += dropout'(du A) ---------------- */

/* grid (ceil(in / 256), ceil(N / 64)); a thread owns column i of x and dx
 * over the block's 64 rows. part[row chunk][j][i] = sum over the chunk's rows
 * n of du[n, j] dropout(x)[n, i] */
__global__ static void lora_up_grad_kernel(float *dx, float *part, const float *du, const float *x, const float *A,
                                           size_t N, size_t in, int r, drop_args d) {
    ZK_DYNAMIC_SMEM(smem);
    float *dus = (float *)smem;           /* [64][r] du rows */
    float *as = dus + ZK_CUDA_LORA_N_TILE * r; /* [r][256] A columns */
    size_t i0 = (size_t)blockIdx.x * BWD_COLS, n0 = (size_t)blockIdx.y * ZK_CUDA_LORA_N_TILE;
    size_t i = i0 + threadIdx.x;
    for (int e = threadIdx.x; e < ZK_CUDA_LORA_N_TILE * r; e += blockDim.x) {
        size_t n = n0 + (size_t)(e / r);
        dus[e] = n < N ? du[n * (size_t)r + (size_t)(e % r)] : 0.0f;
    }
    for (int e = threadIdx.x; e < r * BWD_COLS; e += blockDim.x) {
        int j = e / BWD_COLS, c = e % BWD_COLS;
        as[e] = i0 + c < in ? A[(size_t)j * in + i0 + c] : 0.0f;
    }
    __syncthreads();
    if (i >= in) return; /* no barrier follows */
    float acc[ZK_CUDA_LORA_MAX_R];
#pragma unroll
    for (int j = 0; j < ZK_CUDA_LORA_MAX_R; j++) acc[j] = 0.0f;
    size_t rows = N - n0 < ZK_CUDA_LORA_N_TILE ? N - n0 : ZK_CUDA_LORA_N_TILE;
    for (size_t rr = 0; rr < rows; rr++) {
        size_t at = (n0 + rr) * in + i;
        int keep = !d.use || zk_dropout_keep(d.seed, at, d.threshold);
        float xd = keep ? x[at] * d.keep_scale : 0.0f;
        const float *dur = dus + rr * (size_t)r;
        float g = 0.0f;
#pragma unroll
        for (int j = 0; j < ZK_CUDA_LORA_MAX_R; j++)
            if (j < r) {
                acc[j] += dur[j] * xd;
                g += dur[j] * as[j * BWD_COLS + threadIdx.x];
            }
        if (keep) dx[at] += g * d.keep_scale;
    }
#pragma unroll
    for (int j = 0; j < ZK_CUDA_LORA_MAX_R; j++)
        if (j < r) part[((size_t)blockIdx.y * r + j) * in + i] = acc[j];
}

/* ---------------- cuBLAS path (ranks above ZK_CUDA_LORA_MAX_R) ---------------- */

__global__ static void dropout_kernel(float *y, const float *x, size_t n, drop_args d, int accumulate) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = zk_dropout_keep(d.seed, i, d.threshold) ? x[i] * d.keep_scale : 0.0f;
    y[i] = accumulate ? y[i] + v : v;
}

/* the dropout op of kernels.h (DoRA with dropout materialises dropout(x)) */
void cu_dropout(zk_backend *be, void *y, const void *x, const zk_dropout *drop, size_t n) {
    if (!n) return;
    ZK_LAUNCH(dropout_kernel, blocks_for(n, 256), 256, 0)((float *)y, (const float *)x, n, drop_of(drop), 0);
    CUDA_CHECK(be, cudaGetLastError());
}

static const float *dropped(zk_backend *be, const float *x, size_t n, drop_args d) {
    if (!d.use) return x;
    float *xd = (float *)scratch(be, SCRATCH_DROPOUT_X, n * sizeof(float));
    if (!xd) return NULL;
    ZK_LAUNCH(dropout_kernel, blocks_for(n, 256), 256, 0)(xd, x, n, d, 0);
    CUDA_CHECK(be, cudaGetLastError());
    return xd;
}

/* ---------------- the ops ---------------- */

/* Decoding (N <= ZK_DECODE_ROWS): each row on its own in a fixed order (kernels.h): a warp per (row n, rank
 * k) for u = xd A^T, then a warp per (row n, output o) for y += scale u B^T, each lane a strided share and a
 * fixed shuffle tree */
__global__ static void decode_down_kernel(float *u, const float *x, const float *A, size_t N, size_t in, int r,
                                          drop_args d) {
    size_t item = (size_t)blockIdx.x * 4 + threadIdx.x / 32, n = item / (size_t)r, k = item % (size_t)r;
    int lane = threadIdx.x & 31;
    float v = 0.0f;
    if (n < N)
        for (size_t i = lane; i < in; i += 32) {
            float xv = x[n * in + i];
            if (d.use) xv = zk_dropout_keep(d.seed, n * in + i, d.threshold) ? xv * d.keep_scale : 0.0f;
            v += xv * A[k * in + i];
        }
    for (int s = 16; s > 0; s >>= 1) v += __shfl_down_sync(0xffffffffu, v, s);
    if (lane == 0 && n < N) u[n * r + k] = v;
}

__global__ static void decode_up_kernel(float *y, const float *u, const float *B, size_t N, size_t out, int r,
                                        float scale) {
    size_t item = (size_t)blockIdx.x * 4 + threadIdx.x / 32, n = item / out, o = item % out;
    int lane = threadIdx.x & 31;
    float v = 0.0f;
    if (n < N)
        for (int k = lane; k < r; k += 32) v += u[n * r + k] * B[o * r + k];
    for (int s = 16; s > 0; s >>= 1) v += __shfl_down_sync(0xffffffffu, v, s);
    if (lane == 0 && n < N) y[n * out + o] += scale * v;
}

void cu_lora_fwd(zk_backend *be, void *y, float *u, const void *x_, const float *A, const float *B, size_t N, size_t in,
                 size_t out, size_t r, float scale, const zk_dropout *drop) {
    const float *x = (const float *)x_;
    drop_args d = drop_of(drop);
    if (N <= ZK_DECODE_ROWS) {
        ZK_LAUNCH(decode_down_kernel, (unsigned)((N * r + 3) / 4), 128, 0)(u, x, A, N, in, (int)r, d);
        CUDA_CHECK(be, cudaGetLastError());
        ZK_LAUNCH(decode_up_kernel, (unsigned)((N * out + 3) / 4), 128, 0)((float *)y, u, B, N, out, (int)r, scale);
        CUDA_CHECK(be, cudaGetLastError());
        return;
    }
    if (r <= ZK_CUDA_LORA_MAX_R) {
        size_t chunks = (in + ZK_CUDA_LORA_K_TILE - 1) / ZK_CUDA_LORA_K_TILE;
        float *part = (float *)scratch(be, SCRATCH_LORA_PART, zk_cuda_lora_partial_elems(N, in, r) * sizeof(float));
        if (!part) return;
        dim3 grid((unsigned)((N + FWD_ROWS - 1) / FWD_ROWS), (unsigned)chunks);
        size_t smem = (size_t)(FWD_ROWS + r) * LDX * sizeof(float);
        ZK_LAUNCH(lora_down_partial_kernel, grid, LORA_THREADS, smem)(part, x, A, N, in, (int)r, d);
        CUDA_CHECK(be, cudaGetLastError());
        ZK_LAUNCH(sum_partials_kernel, blocks_for(N * r, 256), 256, 0)(u, part, chunks, N * r, 0);
        CUDA_CHECK(be, cudaGetLastError());
    } else {
        cuda_rm_gemm(be, 0, 1, N, r, in, 1.0f, dropped(be, x, N * in, d), in, A, in, 0.0f, u, r);
    }
    cuda_rm_gemm(be, 0, 1, N, out, r, scale, u, r, B, r, 1.0f, (float *)y, out);
}

void cu_lora_bwd(zk_backend *be, void *dx, float *dA, float *dB, float *du, const void *dy_, const void *x_,
                 const float *u, const float *A, const float *B, size_t N, size_t in, size_t out, size_t r, float scale,
                 const zk_dropout *drop) {
    const float *dy = (const float *)dy_, *x = (const float *)x_;
    drop_args d = drop_of(drop);
    cuda_rm_gemm(be, 0, 0, N, r, out, scale, dy, out, B, r, 0.0f, du, r);  /* du = scale dy B */
    cuda_rm_gemm(be, 1, 0, out, r, N, scale, dy, out, u, r, 1.0f, dB, r);  /* dB += scale dy^T u */
    if (r <= ZK_CUDA_LORA_MAX_R) {
        size_t chunks = (N + ZK_CUDA_LORA_N_TILE - 1) / ZK_CUDA_LORA_N_TILE;
        float *part = (float *)scratch(be, SCRATCH_LORA_PART, zk_cuda_lora_partial_elems(N, in, r) * sizeof(float));
        if (!part) return;
        dim3 grid((unsigned)((in + BWD_COLS - 1) / BWD_COLS), (unsigned)chunks);
        size_t smem = (size_t)(ZK_CUDA_LORA_N_TILE * r + r * BWD_COLS) * sizeof(float);
        ZK_LAUNCH(lora_up_grad_kernel, grid, BWD_COLS, smem)((float *)dx, part, du, x, A, N, in, (int)r, d);
        CUDA_CHECK(be, cudaGetLastError());
        ZK_LAUNCH(sum_partials_kernel, blocks_for(r * in, 256), 256, 0)(dA, part, chunks, r * in, 1);
        CUDA_CHECK(be, cudaGetLastError());
        return;
    }
    const float *xd = dropped(be, x, N * in, d);
    cuda_rm_gemm(be, 1, 0, r, in, N, 1.0f, du, r, xd, in, 1.0f, dA, in);  /* dA += du^T xd */
    if (!d.use) {
        cuda_rm_gemm(be, 0, 0, N, in, r, 1.0f, du, r, A, in, 1.0f, (float *)dx, in);
        return;
    }
    float *dxd = (float *)scratch(be, SCRATCH_DROPOUT_DX, N * in * sizeof(float));
    if (!dxd) return;
    cuda_rm_gemm(be, 0, 0, N, in, r, 1.0f, du, r, A, in, 0.0f, dxd, in);
    ZK_LAUNCH(dropout_kernel, blocks_for(N * in, 256), 256, 0)((float *)dx, dxd, N * in, d, 1);
    CUDA_CHECK(be, cudaGetLastError());
}
