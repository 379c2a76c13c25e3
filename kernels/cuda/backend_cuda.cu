/* kernels/cuda/backend_cuda.cu: the CUDA backend of the kernel interface
 * (kernels/kernels.h), first version: fp32 activations; weights stay on the
 * device in their stored dtype (bf16 for Zen-nano, so 8 GB rather than 16) and
 * are widened to fp32 a chunk of rows at a time before each cuBLAS sgemm, as
 * the CPU backend does, so results match the CPU's; and
 * plain kernels for everything else, written to mirror the CPU backend op for
 * op (same RoPE tables, same dropout hash, same masks). bf16 storage and the
 * fused/flash kernels come next (issue 6).
 *
 * NOT YET RUN ON A GPU: this file compiles in CI; its tests (tests/test_cuda.c,
 * scripts/gpu_check) skip without a device and are owed a GPU run.
 *
 * Row-major conventions as on CPU. cuBLAS is column-major: a row-major
 * C[M,N] = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T, which
 * rm_gemm below spells out once. CUDA errors are internal failures: the
 * first one is printed and the process exits 1 (model code has no error path
 * per op). */
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "../../util/error.h"
#include "../kernels.h"
#include "backend_cuda.h"
}

#define CUDA_CHECK(call)                                                                                  \
    do {                                                                                                  \
        cudaError_t e_ = (call);                                                                          \
        if (e_ != cudaSuccess) {                                                                          \
            fprintf(stderr, "zen: CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
            exit(1);                                                                                      \
        }                                                                                                 \
    } while (0)
#define CUBLAS_CHECK(call)                                                                  \
    do {                                                                                    \
        cublasStatus_t s_ = (call);                                                         \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                  \
            fprintf(stderr, "zen: cuBLAS error %d at %s:%d\n", (int)s_, __FILE__, __LINE__); \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

typedef struct {
    cublasHandle_t blas;
    float *rope_cos, *rope_sin; /* device [T, hd/2] for the cached (T, hd, theta) */
    size_t rope_T, rope_hd;
    double rope_theta;
    float *scratch[3];          /* dropout x, dropout dx, a widened weight chunk */
    size_t scratch_cap[3];
    double *reduce;             /* one double for sum_squares */
} cuda_ctx;

static cuda_ctx *ctx_of(zk_backend *be) { return (cuda_ctx *)be->ctx; }

static float *scratch(zk_backend *be, int slot, size_t n) {
    cuda_ctx *c = ctx_of(be);
    if (n > c->scratch_cap[slot]) {
        if (c->scratch[slot]) CUDA_CHECK(cudaFree(c->scratch[slot]));
        CUDA_CHECK(cudaMalloc(&c->scratch[slot], n * sizeof(float)));
        c->scratch_cap[slot] = n;
    }
    return c->scratch[slot];
}

static unsigned blocks_for(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

/* row-major C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C */
static void rm_gemm(zk_backend *be, int transA, int transB, size_t M, size_t N, size_t K, float alpha, const float *A,
                    size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    CUBLAS_CHECK(cublasSgemm(ctx_of(be)->blas, transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N,
                             (int)N, (int)M, (int)K, &alpha, B, (int)ldb, A, (int)lda, &beta, C, (int)ldc));
}

/* ---------------- memory ---------------- */

static void *cu_alloc(zk_backend *be, size_t bytes) {
    (void)be;
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        zen_fail(ZEN_ERR_INTERNAL, "out of GPU memory allocating %zu bytes", bytes);
        return NULL;
    }
    return p;
}

static void cu_free(zk_backend *be, void *p) {
    (void)be;
    if (p) CUDA_CHECK(cudaFree(p));
}

static void cu_upload(zk_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

static void cu_download(zk_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

static void cu_zero(zk_backend *be, void *dst, size_t bytes) {
    (void)be;
    if (bytes) CUDA_CHECK(cudaMemset(dst, 0, bytes));
}

/* weights go to the device as stored (tensor by tensor, no host copy of the model) */
static int cu_weight_create(zk_backend *be, zk_weight *out, const void *host, zen_dtype dtype, size_t numel) {
    size_t bytes = numel * zen_dtype_size(dtype);
    void *dev = cu_alloc(be, bytes);
    if (!dev) return ZEN_ERR_INTERNAL;
    cu_upload(be, dev, host, bytes);
    out->data = dev;
    out->dtype = dtype;
    return 0;
}

__global__ static void widen_kernel(float *dst, const void *src, int dtype, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned short *h = (const unsigned short *)src;
    if (dtype == ZEN_BF16) dst[i] = __uint_as_float((unsigned)h[i] << 16);
    else dst[i] = __half2float(__ushort_as_half(h[i]));
}

/* rows [o0, o0 + rows) of W[out, in] as fp32 on the device */
static const float *weight_rows(zk_backend *be, const zk_weight *w, size_t o0, size_t rows, size_t in) {
    if (w->dtype == ZEN_F32) return (const float *)w->data + o0 * in;
    float *dst = scratch(be, 2, rows * in);
    widen_kernel<<<blocks_for(rows * in, 256), 256>>>(dst, (const char *)w->data + o0 * in * 2, (int)w->dtype, rows * in);
    CUDA_CHECK(cudaGetLastError());
    return dst;
}

#define WIDEN_CHUNK_ELEMS ((size_t)1 << 24) /* fp32 elements of one widened weight chunk (64 MiB) */

static size_t chunk_rows(const zk_weight *w, size_t in, size_t out) {
    if (w->dtype == ZEN_F32) return out;
    size_t rows = WIDEN_CHUNK_ELEMS / (in ? in : 1);
    return rows < 1 ? 1 : rows < out ? rows : out;
}

static void cu_weight_destroy(zk_backend *be, zk_weight *w) {
    cu_free(be, (void *)w->data);
    w->data = NULL;
}

static void cu_upload_act(zk_backend *be, void *dst, const float *src, size_t n) { cu_upload(be, dst, src, n * 4); }
static void cu_download_act(zk_backend *be, float *dst, const void *src, size_t n) { cu_download(be, dst, src, n * 4); }

/* ---------------- linear and LoRA ---------------- */

static void cu_linear_fwd(zk_backend *be, void *y, const void *x, const zk_weight *w, size_t N, size_t in, size_t out) {
    size_t step = chunk_rows(w, in, out);
    for (size_t o0 = 0; o0 < out; o0 += step) {
        size_t rows = out - o0 < step ? out - o0 : step;
        rm_gemm(be, 0, 1, N, rows, in, 1.0f, (const float *)x, in, weight_rows(be, w, o0, rows, in), in, 0.0f,
                (float *)y + o0, out);
    }
}

static void cu_linear_bwd(zk_backend *be, void *dx, const void *dy, const zk_weight *w, size_t N, size_t in, size_t out,
                          int accumulate) {
    size_t step = chunk_rows(w, in, out);
    for (size_t o0 = 0; o0 < out; o0 += step) {
        size_t rows = out - o0 < step ? out - o0 : step;
        float beta = (o0 == 0 && !accumulate) ? 0.0f : 1.0f;
        rm_gemm(be, 0, 0, N, in, rows, 1.0f, (const float *)dy + o0, out, weight_rows(be, w, o0, rows, in), in, beta,
                (float *)dx, in);
    }
}

__device__ static int keep_dev(unsigned long long seed, size_t i, unsigned long long threshold) {
    unsigned long long z = seed + (unsigned long long)i * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (z >> 40) >= threshold;
}

__global__ static void dropout_kernel(float *y, const float *x, size_t n, unsigned long long seed,
                                      unsigned long long threshold, float keep_scale, int accumulate) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = keep_dev(seed, i, threshold) ? x[i] * keep_scale : 0.0f;
    y[i] = accumulate ? y[i] + v : v;
}

static const float *dropped(zk_backend *be, const float *x, size_t n, const zk_dropout *d) {
    if (!d || d->p <= 0.0f) return x;
    float *xd = scratch(be, 0, n);
    dropout_kernel<<<blocks_for(n, 256), 256>>>(xd, x, n, d->seed, zk_dropout_threshold(d->p), 1.0f / (1.0f - d->p), 0);
    CUDA_CHECK(cudaGetLastError());
    return xd;
}

static void cu_lora_fwd(zk_backend *be, void *y, float *u, const void *x_, const float *A, const float *B, size_t N,
                        size_t in, size_t out, size_t r, float scale, const zk_dropout *drop) {
    const float *x = dropped(be, (const float *)x_, N * in, drop);
    rm_gemm(be, 0, 1, N, r, in, 1.0f, x, in, A, in, 0.0f, u, r);
    rm_gemm(be, 0, 1, N, out, r, scale, u, r, B, r, 1.0f, (float *)y, out);
}

static void cu_lora_bwd(zk_backend *be, void *dx, float *dA, float *dB, float *du, const void *dy_, const void *x_,
                        const float *u, const float *A, const float *B, size_t N, size_t in, size_t out, size_t r,
                        float scale, const zk_dropout *drop) {
    const float *dy = (const float *)dy_;
    const float *x = dropped(be, (const float *)x_, N * in, drop);
    rm_gemm(be, 0, 0, N, r, out, scale, dy, out, B, r, 0.0f, du, r);
    rm_gemm(be, 1, 0, out, r, N, scale, dy, out, u, r, 1.0f, dB, r);
    rm_gemm(be, 1, 0, r, in, N, 1.0f, du, r, x, in, 1.0f, dA, in);
    if (!drop || drop->p <= 0.0f) {
        rm_gemm(be, 0, 0, N, in, r, 1.0f, du, r, A, in, 1.0f, (float *)dx, in);
        return;
    }
    float *dxd = scratch(be, 1, N * in);
    rm_gemm(be, 0, 0, N, in, r, 1.0f, du, r, A, in, 0.0f, dxd, in);
    dropout_kernel<<<blocks_for(N * in, 256), 256>>>((float *)dx, dxd, N * in, drop->seed,
                                                     zk_dropout_threshold(drop->p), 1.0f / (1.0f - drop->p), 1);
    CUDA_CHECK(cudaGetLastError());
}

__global__ static void add_kernel(float *y, const float *a, const float *b, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a[i] + b[i];
}

static void cu_add(zk_backend *be, void *y, const void *a, const void *b, size_t n) {
    (void)be;
    add_kernel<<<blocks_for(n, 256), 256>>>((float *)y, (const float *)a, (const float *)b, n);
    CUDA_CHECK(cudaGetLastError());
}

/* ---------------- block reductions ---------------- */

/* sum over the block (blockDim.x a multiple of 32, at most 1024) */
__device__ static double block_sum(double v) {
    __shared__ double warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    v = threadIdx.x < (blockDim.x >> 5) ? warp_sums[lane] : 0.0;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    __shared__ double total;
    if (threadIdx.x == 0) total = v;
    __syncthreads();
    double r = total;
    __syncthreads();
    return r;
}

__device__ static float block_max(float v) {
    __shared__ float warp_max[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_max[warp] = v;
    __syncthreads();
    v = threadIdx.x < (blockDim.x >> 5) ? warp_max[lane] : -INFINITY;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    __shared__ float total;
    if (threadIdx.x == 0) total = v;
    __syncthreads();
    float r = total;
    __syncthreads();
    return r;
}

/* ---------------- RMSNorm ---------------- */

__global__ static void rmsnorm_fwd_kernel(float *y, float *rstd, const float *x, const float *w, size_t dim, float eps) {
    const float *xr = x + blockIdx.x * dim;
    float *yr = y + blockIdx.x * dim;
    double ss = 0.0;
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x) ss += (double)xr[i] * xr[i];
    ss = block_sum(ss);
    float s = (float)(1.0 / sqrt(ss / (double)dim + (double)eps));
    if (threadIdx.x == 0) rstd[blockIdx.x] = s;
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * s * w[i];
}

__global__ static void rmsnorm_bwd_kernel(float *dx, const float *dy, const float *x, const float *rstd, const float *w,
                                          size_t dim, int accumulate) {
    const float *xr = x + blockIdx.x * dim, *dyr = dy + blockIdx.x * dim;
    float *dxr = dx + blockIdx.x * dim;
    double s = rstd[blockIdx.x], dot = 0.0;
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x) dot += (double)dyr[i] * w[i] * xr[i];
    dot = block_sum(dot);
    double c = s * s * s * dot / (double)dim;
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x) {
        float g = (float)(s * dyr[i] * w[i] - c * xr[i]);
        dxr[i] = accumulate ? dxr[i] + g : g;
    }
}

__global__ static void rmsnorm_dw_kernel(float *dw, const float *dy, const float *x, const float *rstd, size_t rows,
                                         size_t dim) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= dim) return;
    float acc = 0.0f;
    for (size_t r = 0; r < rows; r++) acc += dy[r * dim + i] * x[r * dim + i] * rstd[r];
    dw[i] += acc;
}

static unsigned row_threads(size_t dim) { return dim >= 1024 ? 1024 : dim >= 256 ? 256 : 64; }

static void cu_rmsnorm_fwd(zk_backend *be, void *y, float *rstd, const void *x, const float *w, size_t rows, size_t dim,
                           float eps) {
    (void)be;
    rmsnorm_fwd_kernel<<<(unsigned)rows, row_threads(dim)>>>((float *)y, rstd, (const float *)x, w, dim, eps);
    CUDA_CHECK(cudaGetLastError());
}

static void cu_rmsnorm_bwd(zk_backend *be, void *dx, float *dw, const void *dy, const void *x, const float *rstd,
                           const float *w, size_t rows, size_t dim, int accumulate) {
    (void)be;
    if (dw) { /* before dx: dx may alias nothing here, but keep the CPU order */
        rmsnorm_dw_kernel<<<blocks_for(dim, 256), 256>>>(dw, (const float *)dy, (const float *)x, rstd, rows, dim);
        CUDA_CHECK(cudaGetLastError());
    }
    rmsnorm_bwd_kernel<<<(unsigned)rows, row_threads(dim)>>>((float *)dx, (const float *)dy, (const float *)x, rstd, w,
                                                            dim, accumulate);
    CUDA_CHECK(cudaGetLastError());
}

/* ---------------- RoPE ---------------- */

/* the CPU's tables (angles in double on the host), uploaded once per (T, hd, theta) */
static void rope_tables(zk_backend *be, size_t T, size_t hd, double theta) {
    cuda_ctx *c = ctx_of(be);
    if (c->rope_cos && c->rope_T >= T && c->rope_hd == hd && c->rope_theta == theta) return;
    size_t half = hd / 2;
    float *cs = (float *)malloc(T * half * sizeof(float)), *sn = (float *)malloc(T * half * sizeof(float));
    for (size_t i = 0; i < half; i++) {
        double inv_freq = pow(theta, -2.0 * (double)i / (double)hd);
        for (size_t t = 0; t < T; t++) {
            cs[t * half + i] = (float)cos((double)t * inv_freq);
            sn[t * half + i] = (float)sin((double)t * inv_freq);
        }
    }
    if (c->rope_cos) cu_free(be, c->rope_cos);
    if (c->rope_sin) cu_free(be, c->rope_sin);
    CUDA_CHECK(cudaMalloc(&c->rope_cos, T * half * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&c->rope_sin, T * half * sizeof(float)));
    cu_upload(be, c->rope_cos, cs, T * half * sizeof(float));
    cu_upload(be, c->rope_sin, sn, T * half * sizeof(float));
    free(cs);
    free(sn);
    c->rope_T = T, c->rope_hd = hd, c->rope_theta = theta;
}

__global__ static void rope_kernel(float *x, const float *cs, const float *sn, size_t rows, size_t T, size_t H, size_t hd,
                                   float direction) {
    size_t half = hd / 2;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; /* over rows * H * half */
    if (idx >= rows * H * half) return;
    size_t i = idx % half, rh = idx / half, row = rh / H;
    size_t t = row % T;
    float *xh = x + rh * hd;
    float c = cs[t * half + i], s = direction * sn[t * half + i];
    float x1 = xh[i], x2 = xh[i + half];
    xh[i] = x1 * c - x2 * s;
    xh[i + half] = x2 * c + x1 * s;
}

static void rope_apply(zk_backend *be, void *x, size_t B, size_t T, size_t H, size_t hd, double theta, float dir) {
    rope_tables(be, T, hd, theta);
    size_t n = B * T * H * (hd / 2);
    rope_kernel<<<blocks_for(n, 256), 256>>>((float *)x, ctx_of(be)->rope_cos, ctx_of(be)->rope_sin, B * T, T, H, hd, dir);
    CUDA_CHECK(cudaGetLastError());
}

static void cu_rope_fwd(zk_backend *be, void *x, size_t B, size_t T, size_t H, size_t hd, double theta) {
    rope_apply(be, x, B, T, H, hd, theta, 1.0f);
}

static void cu_rope_bwd(zk_backend *be, void *dx, size_t B, size_t T, size_t H, size_t hd, double theta) {
    rope_apply(be, dx, B, T, H, hd, theta, -1.0f);
}

/* ---------------- attention (first version: a block per query row) ---------------- */

/* One block per (b, h, i). The row's scores s_j (j <= i) sit in shared memory
 * (T floats), so the [T, T] matrix is never stored:
 *   forward:  p_j = exp(s_j - lse),  o[d] = sum_j p_j v_j[d]  (a thread per d)
 *   backward: dp_j = do . v_j, D = sum_j p_j dp_j, ds_j = p_j (dp_j - D) scale,
 *             dq[d] = sum_j ds_j k_j[d];  dk_j += ds_j q, dv_j += p_j do (atomic) */
__device__ static float dot_dev(const float *a, const float *b, size_t n) {
    float s = 0.0f;
    for (size_t d = 0; d < n; d++) s += a[d] * b[d];
    return s;
}

__global__ static void attention_fwd_kernel(float *out, float *lse, const float *q, const float *k, const float *v,
                                            size_t T, size_t nh, size_t nkv, size_t hd, float scale) {
    extern __shared__ float p[]; /* [i + 1] */
    size_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (nh / nkv);
    const float *qi = q + ((b * T + i) * nh + h) * hd;
    float m = -INFINITY;
    for (size_t j = threadIdx.x; j <= i; j += blockDim.x) {
        p[j] = scale * dot_dev(qi, k + ((b * T + j) * nkv + g) * hd, hd);
        m = fmaxf(m, p[j]);
    }
    m = block_max(m);
    double sum = 0.0;
    for (size_t j = threadIdx.x; j <= i; j += blockDim.x) {
        p[j] = expf(p[j] - m);
        sum += p[j];
    }
    sum = block_sum(sum); /* also a barrier: every p[j] is written */
    float inv = (float)(1.0 / sum);
    if (threadIdx.x == 0) lse[(b * nh + h) * T + i] = m + (float)log(sum);
    float *oi = out + ((b * T + i) * nh + h) * hd;
    for (size_t d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (size_t j = 0; j <= i; j++) acc += p[j] * v[((b * T + j) * nkv + g) * hd + d];
        oi[d] = acc * inv;
    }
}

__global__ static void attention_bwd_kernel(float *dq, float *dk, float *dv, const float *dout, const float *lse,
                                            const float *q, const float *k, const float *v, size_t T, size_t nh,
                                            size_t nkv, size_t hd, float scale) {
    extern __shared__ float shm[]; /* p [T] then ds [T] */
    float *p = shm, *ds = shm + T;
    size_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (nh / nkv);
    size_t qrow = ((b * T + i) * nh + h) * hd;
    const float *qi = q + qrow, *doi = dout + qrow;
    float l = lse[(b * nh + h) * T + i];
    double D = 0.0;
    for (size_t j = threadIdx.x; j <= i; j += blockDim.x) {
        size_t kv = ((b * T + j) * nkv + g) * hd;
        p[j] = expf(scale * dot_dev(qi, k + kv, hd) - l);
        ds[j] = dot_dev(doi, v + kv, hd); /* dp for now */
        D += (double)p[j] * ds[j];
    }
    D = block_sum(D);
    for (size_t j = threadIdx.x; j <= i; j += blockDim.x) ds[j] = p[j] * (ds[j] - (float)D) * scale;
    __syncthreads();
    for (size_t d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (size_t j = 0; j <= i; j++) acc += ds[j] * k[((b * T + j) * nkv + g) * hd + d];
        dq[qrow + d] = acc;
    }
    for (size_t j = threadIdx.x; j <= i; j += blockDim.x) {
        size_t kv = ((b * T + j) * nkv + g) * hd;
        for (size_t d = 0; d < hd; d++) {
            atomicAdd(&dk[kv + d], ds[j] * qi[d]);
            atomicAdd(&dv[kv + d], p[j] * doi[d]);
        }
    }
}

/* shared memory for a row of T scores (two rows in backward), above 48 KiB allowed where the GPU has it */
static void attention_smem(const void *kernel, size_t bytes) {
    if (bytes > 48 * 1024) CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

static void cu_attention_fwd(zk_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                             size_t B, size_t T, size_t nh, size_t nkv, size_t hd) {
    (void)be;
    dim3 grid((unsigned)T, (unsigned)nh, (unsigned)B);
    size_t smem = T * sizeof(float);
    attention_smem((const void *)attention_fwd_kernel, smem);
    attention_fwd_kernel<<<grid, 128, smem>>>((float *)out, lse, (const float *)q, (const float *)k, (const float *)v, T,
                                              nh, nkv, hd, 1.0f / sqrtf((float)hd));
    CUDA_CHECK(cudaGetLastError());
}

static void cu_attention_bwd(zk_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *out,
                             const float *lse, const void *q, const void *k, const void *v, size_t B, size_t T,
                             size_t nh, size_t nkv, size_t hd) {
    (void)out;
    cu_zero(be, dk, B * T * nkv * hd * sizeof(float));
    cu_zero(be, dv, B * T * nkv * hd * sizeof(float));
    dim3 grid((unsigned)T, (unsigned)nh, (unsigned)B);
    size_t smem = 2 * T * sizeof(float);
    attention_smem((const void *)attention_bwd_kernel, smem);
    attention_bwd_kernel<<<grid, 128, smem>>>((float *)dq, (float *)dk, (float *)dv, (const float *)dout, lse,
                                              (const float *)q, (const float *)k, (const float *)v, T, nh, nkv, hd,
                                              1.0f / sqrtf((float)hd));
    CUDA_CHECK(cudaGetLastError());
}

/* ---------------- elementwise, embedding ---------------- */

__global__ static void swiglu_fwd_kernel(float *h, const float *g, const float *u, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float sig = 1.0f / (1.0f + expf(-g[i]));
    h[i] = g[i] * sig * u[i];
}

__global__ static void swiglu_bwd_kernel(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float sig = 1.0f / (1.0f + expf(-g[i])), silu = g[i] * sig;
    dg[i] = dh[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
    du[i] = dh[i] * silu;
}

static void cu_swiglu_fwd(zk_backend *be, void *h, const void *g, const void *u, size_t n) {
    (void)be;
    swiglu_fwd_kernel<<<blocks_for(n, 256), 256>>>((float *)h, (const float *)g, (const float *)u, n);
    CUDA_CHECK(cudaGetLastError());
}

static void cu_swiglu_bwd(zk_backend *be, void *dg, void *du, const void *dh, const void *g, const void *u, size_t n) {
    (void)be;
    swiglu_bwd_kernel<<<blocks_for(n, 256), 256>>>((float *)dg, (float *)du, (const float *)dh, (const float *)g,
                                                   (const float *)u, n);
    CUDA_CHECK(cudaGetLastError());
}

__global__ static void embedding_fwd_kernel(float *out, const int32_t *tok, const void *w, int dtype, size_t N,
                                            size_t C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C) return;
    size_t at = (size_t)tok[i / C] * C + i % C;
    const unsigned short *h = (const unsigned short *)w;
    out[i] = dtype == ZEN_F32 ? ((const float *)w)[at]
             : dtype == ZEN_BF16 ? __uint_as_float((unsigned)h[at] << 16) : __half2float(__ushort_as_half(h[at]));
}

__global__ static void embedding_bwd_kernel(float *dW, const float *dout, const int32_t *tok, size_t N, size_t C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C) return;
    atomicAdd(&dW[(size_t)tok[i / C] * C + i % C], dout[i]);
}

static void cu_embedding_fwd(zk_backend *be, void *out, const int32_t *tokens, const zk_weight *w, size_t N, size_t C) {
    (void)be;
    embedding_fwd_kernel<<<blocks_for(N * C, 256), 256>>>((float *)out, tokens, w->data, (int)w->dtype, N, C);
    CUDA_CHECK(cudaGetLastError());
}

static void cu_embedding_bwd(zk_backend *be, float *dW, const void *dout, const int32_t *tokens, size_t N, size_t C) {
    (void)be;
    embedding_bwd_kernel<<<blocks_for(N * C, 256), 256>>>(dW, (const float *)dout, tokens, N, C);
    CUDA_CHECK(cudaGetLastError());
}

/* ---------------- softmax + cross-entropy ---------------- */

__global__ static void xent_kernel(float *logits, float *losses, const int32_t *targets, const float *weights, size_t V,
                                   float grad_scale) {
    float *z = logits + (size_t)blockIdx.x * V;
    float m = -INFINITY;
    for (size_t j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, z[j]);
    m = block_max(m);
    double sum = 0.0;
    for (size_t j = threadIdx.x; j < V; j += blockDim.x) sum += exp((double)(z[j] - m));
    sum = block_sum(sum);
    double lse = (double)m + log(sum);
    int32_t t = targets[blockIdx.x];
    if (threadIdx.x == 0) losses[blockIdx.x] = (float)(lse - (double)z[t]);
    __syncthreads();
    if (grad_scale != 0.0f) {
        float coeff = weights[blockIdx.x] * grad_scale;
        for (size_t j = threadIdx.x; j < V; j += blockDim.x)
            z[j] = coeff == 0.0f ? 0.0f : (float)exp((double)z[j] - lse) * coeff - (j == (size_t)t ? coeff : 0.0f);
    }
}

static void cu_xent(zk_backend *be, void *logits, float *losses, const int32_t *targets, const float *weights,
                    size_t rows, size_t V, float grad_scale) {
    (void)be;
    xent_kernel<<<(unsigned)rows, 1024>>>((float *)logits, losses, targets, weights, V, grad_scale);
    CUDA_CHECK(cudaGetLastError());
}

/* ---------------- optimizer ---------------- */

__global__ static void sum_squares_kernel(double *out, const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * x[i];
    s = block_sum(s);
    if (threadIdx.x == 0) atomicAdd(out, s);
}

static double cu_sum_squares(zk_backend *be, const float *x, size_t n) {
    cuda_ctx *c = ctx_of(be);
    CUDA_CHECK(cudaMemset(c->reduce, 0, sizeof(double)));
    sum_squares_kernel<<<256, 256>>>(c->reduce, x, n);
    CUDA_CHECK(cudaGetLastError());
    double r;
    cu_download(be, &r, c->reduce, sizeof(double));
    return r;
}

__global__ static void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2,
                                    float eps, float decay, float grad_scale, float step_size, float bc2_sqrt) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float grad = g[i] * grad_scale;
    p[i] *= decay;
    m[i] = b1 * m[i] + (1.0f - b1) * grad;
    v[i] = b2 * v[i] + (1.0f - b2) * grad * grad;
    p[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
}

static void cu_adamw(zk_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                     float beta2, float eps, float weight_decay, float grad_scale, long step) {
    (void)be;
    double bc1 = 1.0 - pow((double)beta1, (double)step), bc2 = 1.0 - pow((double)beta2, (double)step);
    adamw_kernel<<<blocks_for(n, 256), 256>>>(p, g, m, v, n, lr, beta1, beta2, eps, 1.0f - lr * weight_decay, grad_scale,
                                              (float)((double)lr / bc1), (float)sqrt(bc2));
    CUDA_CHECK(cudaGetLastError());
}

/* ---------------- the backend ---------------- */

static void cu_destroy(zk_backend *be) {
    cuda_ctx *c = ctx_of(be);
    cublasDestroy(c->blas);
    cudaFree(c->rope_cos);
    cudaFree(c->rope_sin);
    for (int i = 0; i < 3; i++) cudaFree(c->scratch[i]);
    cudaFree(c->reduce);
    free(c);
    free(be);
}

extern "C" zk_backend *zk_cuda_create(void) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        zen_fail(ZEN_ERR_INPUT, "device 'cuda': no CUDA GPU is visible on this machine (use --device cpu)");
        return NULL;
    }
    zk_backend *be = (zk_backend *)calloc(1, sizeof *be);
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    if (!be || !c || cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS || cudaMalloc(&c->reduce, sizeof(double)) != cudaSuccess) {
        free(be);
        free(c);
        zen_fail(ZEN_ERR_INTERNAL, "device 'cuda': cannot initialise cuBLAS");
        return NULL;
    }
    /* fp32 mode: exact fp32 sgemm, no TF32 */
    cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH);
    be->name = "cuda";
    be->act_bytes = sizeof(float);
    be->ctx = c;
    be->alloc = cu_alloc;
    be->free = cu_free;
    be->upload = cu_upload;
    be->download = cu_download;
    be->zero = cu_zero;
    be->weight_create = cu_weight_create;
    be->weight_destroy = cu_weight_destroy;
    be->upload_act = cu_upload_act;
    be->download_act = cu_download_act;
    be->destroy = cu_destroy;
    be->linear_fwd = cu_linear_fwd;
    be->linear_bwd = cu_linear_bwd;
    be->lora_fwd = cu_lora_fwd;
    be->lora_bwd = cu_lora_bwd;
    be->add = cu_add;
    be->rmsnorm_fwd = cu_rmsnorm_fwd;
    be->rmsnorm_bwd = cu_rmsnorm_bwd;
    be->rope_fwd = cu_rope_fwd;
    be->rope_bwd = cu_rope_bwd;
    be->attention_fwd = cu_attention_fwd;
    be->attention_bwd = cu_attention_bwd;
    be->swiglu_fwd = cu_swiglu_fwd;
    be->swiglu_bwd = cu_swiglu_bwd;
    be->embedding_fwd = cu_embedding_fwd;
    be->embedding_bwd = cu_embedding_bwd;
    be->xent = cu_xent;
    be->sum_squares = cu_sum_squares;
    be->adamw = cu_adamw;
    return be;
}
