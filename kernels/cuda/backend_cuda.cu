/* kernels/cuda/backend_cuda.cu: the CUDA backend of the kernel interface
 * (kernels/kernels.h): memory (with in-use and peak accounting), weights,
 * the elementwise, normalisation, RoPE, embedding, loss and optimizer kernels,
 * and the table of ops. The matmuls are in linear_cuda.cu, attention in
 * flash_attention.cu (bf16 compute) and attention_exact.cu (f32 compute).
 *
 * Compute precision (be->compute): bf16 (default) runs the projections and
 * attention on bf16 tensor cores with fp32 accumulation; f32 mirrors the CPU
 * backend op for op (same RoPE tables, dropout hash, masks) for checking.
 * Activations, norms, softmax, LoRA and AdamW are fp32 in both.
 *
 * NOT YET RUN ON A GPU: these files compile in CI; their tests
 * (tests/test_cuda.c, scripts/gpu_check, scripts/bench_gpu) skip without a
 * device and are owed a GPU run. */
#include <string.h>

#include "cuda_common.cuh"
extern "C" {
#include "backend_cuda.h" /* zk_cuda_create, zk_cuda_device_count: defined here */
}


/* ---------------- memory ---------------- */

/* records a live allocation (grows the table as needed); -1 when the host
 * is out of memory for the table */
static int track(cuda_ctx *c, void *p, size_t bytes) {
    if (c->n_allocs == c->cap_allocs) {
        size_t cap = c->cap_allocs ? 2 * c->cap_allocs : 256;
        cuda_alloc_entry *t = (cuda_alloc_entry *)realloc(c->allocs, cap * sizeof *t);
        if (!t) return -1;
        c->allocs = t, c->cap_allocs = cap;
    }
    c->allocs[c->n_allocs].ptr = p;
    c->allocs[c->n_allocs++].bytes = bytes;
    c->bytes_in_use += bytes;
    if (c->bytes_in_use > c->bytes_peak) c->bytes_peak = c->bytes_in_use;
    return 0;
}

static void *cu_alloc(zk_backend *be, size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky-free error state */
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        zen_fail(ZEN_ERR_INTERNAL, "out of GPU memory allocating %zu bytes (%zu of %zu bytes free; %zu in use by zen)",
                 bytes, free_b, total_b, ctx_of(be)->bytes_in_use);
        return NULL;
    }
    if (track(ctx_of(be), p, bytes)) {
        cudaFree(p);
        zen_fail(ZEN_ERR_INTERNAL, "out of host memory tracking GPU allocations");
        return NULL;
    }
    return p;
}

void *cuda_alloc_op(zk_backend *be, size_t bytes) {
    void *p = cu_alloc(be, bytes);
    if (!p) zk_set_failed(be, ZEN_ERR_INTERNAL, "%s", zen_last_error());
    return p;
}

void cuda_free_tracked(zk_backend *be, void *p) {
    if (!p) return;
    cuda_ctx *c = ctx_of(be);
    for (size_t i = c->n_allocs; i-- > 0;)
        if (c->allocs[i].ptr == p) {
            c->bytes_in_use -= c->allocs[i].bytes;
            c->allocs[i] = c->allocs[--c->n_allocs];
            break;
        }
    CUDA_CHECK(be, cudaFree(p));
}

static void cu_free(zk_backend *be, void *p) { cuda_free_tracked(be, p); }

static size_t cu_memory_peak(zk_backend *be) { return ctx_of(be)->bytes_peak; }

static void cu_memory_info(zk_backend *be, size_t *free_bytes, size_t *in_use) {
    size_t total = 0;
    *free_bytes = 0;
    if (!CUDA_CHECK(be, cudaMemGetInfo(free_bytes, &total))) *free_bytes = 0;
    *in_use = ctx_of(be)->bytes_in_use;
}

static void cu_upload(zk_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) CUDA_CHECK(be, cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

static void cu_download(zk_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) CUDA_CHECK(be, cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

static void cu_copy(zk_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) CUDA_CHECK(be, cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}

static void cu_zero(zk_backend *be, void *dst, size_t bytes) {
    (void)be;
    if (bytes) CUDA_CHECK(be, cudaMemset(dst, 0, bytes));
}

__global__ static void to_bf16_kernel(__nv_bfloat16 *dst, const void *src, int dtype, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    dst[i] = __float2bfloat16_rn(load_as_float(src, dtype, i));
}

/* Weights go to the device tensor by tensor (no host copy of the model): as
 * stored in f32 compute; as bf16 in bf16 compute (f32/f16 files are rounded
 * once here, on the GPU, through a temporary of the stored size). */
static int cu_weight_create(zk_backend *be, zk_weight *out, const void *host, zen_dtype dtype, size_t numel) {
    size_t bytes = zen_dtype_bytes(dtype, numel);
    if ((unsigned)dtype >= ZEN_NUM_DTYPES) /* every zen_dtype is decoded by load_as_float (cuda_common.cuh) */
        return zen_fail(ZEN_ERR_INTERNAL, "device 'cuda': unknown weight type %d", (int)dtype);
    if (be->compute == ZEN_BF16 && dtype != ZEN_BF16 && !zen_dtype_is_quant(dtype)) {
        void *tmp = cu_alloc(be, bytes), *dev = tmp ? cu_alloc(be, zen_dtype_bytes(ZEN_BF16, numel)) : NULL;
        if (!dev) {
            cu_free(be, tmp);
            return ZEN_ERR_INTERNAL;
        }
        cu_upload(be, tmp, host, bytes);
        ZK_LAUNCH(to_bf16_kernel, blocks_for(numel, 256), 256, 0)((__nv_bfloat16 *)dev, tmp, (int)dtype, numel);
        CUDA_CHECK(be, cudaGetLastError());
        cu_free(be, tmp);
        out->data = dev;
        out->dtype = ZEN_BF16;
        return 0;
    }
    void *dev = cu_alloc(be, bytes);
    if (!dev) return ZEN_ERR_INTERNAL;
    cu_upload(be, dev, host, bytes);
    out->data = dev;
    out->dtype = dtype;
    return 0;
}

static void cu_weight_destroy(zk_backend *be, zk_weight *w) {
    cu_free(be, (void *)w->data);
    w->data = NULL;
}

static void cu_upload_act(zk_backend *be, void *dst, const float *src, size_t n) { cu_upload(be, dst, src, n * 4); }
static void cu_download_act(zk_backend *be, float *dst, const void *src, size_t n) { cu_download(be, dst, src, n * 4); }

/* ---------------- residual ---------------- */

__global__ static void add_kernel(float *y, const float *a, const float *b, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a[i] + b[i];
}

static void cu_add(zk_backend *be, void *y, const void *a, const void *b, size_t n) {
    (void)be;
    ZK_LAUNCH(add_kernel, blocks_for(n, 256), 256, 0)((float *)y, (const float *)a, (const float *)b, n);
    CUDA_CHECK(be, cudaGetLastError());
}

__global__ static void scale_rows_kernel(float *x, const float *s, size_t cols, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s[i / cols];
}

static void cu_scale_rows(zk_backend *be, void *x, const float *s, size_t rows, size_t cols) {
    size_t n = rows * cols;
    if (!n) return;
    ZK_LAUNCH(scale_rows_kernel, blocks_for(n, 256), 256, 0)((float *)x, s, cols, n);
    CUDA_CHECK(be, cudaGetLastError());
}

/* ---------------- DoRA ---------------- */

static unsigned row_threads(size_t dim);

__global__ static void row_sq_norms_kernel(float *out, const void *w, int dtype, size_t cols) {
    size_t r = blockIdx.x;
    double ss = 0.0;
    for (size_t i = threadIdx.x; i < cols; i += blockDim.x) {
        double v = load_as_float(w, dtype, r * cols + i);
        ss += v * v;
    }
    ss = block_sum(ss);
    if (threadIdx.x == 0) out[r] = (float)ss;
}

static void cu_row_sq_norms(zk_backend *be, float *out, const zk_weight *w, size_t rows, size_t cols) {
    if (!rows) return;
    ZK_LAUNCH(row_sq_norms_kernel, (unsigned)rows, row_threads(cols), 0)(out, w->data, (int)w->dtype, cols);
    CUDA_CHECK(be, cudaGetLastError());
}

__global__ static void scale_cols_kernel(float *y, const float *x, const float *s, size_t cols, size_t n, int accumulate) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = (accumulate ? y[i] : 0.0f) + x[i] * s[i % cols];
}

static void cu_scale_cols(zk_backend *be, void *y, const void *x, const float *s, size_t N, size_t cols, int accumulate) {
    size_t n = N * cols;
    if (!n) return;
    ZK_LAUNCH(scale_cols_kernel, blocks_for(n, 256), 256, 0)((float *)y, (const float *)x, s, cols, n, accumulate);
    CUDA_CHECK(be, cudaGetLastError());
}


__global__ static void col_dot_kernel(float *out, const float *a, const float *b, const float *s, size_t N, size_t cols) {
    size_t o = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= cols) return;
    double acc = 0.0;
    for (size_t n = 0; n < N; n++) acc += (double)a[n * cols + o] * b[n * cols + o];
    out[o] += (float)(s[o] * acc);
}

static void cu_col_dot(zk_backend *be, float *out, const void *a, const void *b, const float *s, size_t N, size_t cols) {
    if (!cols) return;
    ZK_LAUNCH(col_dot_kernel, blocks_for(cols, 256), 256, 0)(out, (const float *)a, (const float *)b, s, N, cols);
    CUDA_CHECK(be, cudaGetLastError());
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
    ZK_LAUNCH(rmsnorm_fwd_kernel, (unsigned)rows, row_threads(dim), 0)((float *)y, rstd, (const float *)x, w, dim, eps);
    CUDA_CHECK(be, cudaGetLastError());
}

static void cu_rmsnorm_bwd(zk_backend *be, void *dx, float *dw, const void *dy, const void *x, const float *rstd,
                           const float *w, size_t rows, size_t dim, int accumulate) {
    (void)be;
    if (dw) { /* before dx: dx may alias nothing here, but keep the CPU order */
        ZK_LAUNCH(rmsnorm_dw_kernel, blocks_for(dim, 256), 256, 0)(dw, (const float *)dy, (const float *)x, rstd, rows, dim);
        CUDA_CHECK(be, cudaGetLastError());
    }
    ZK_LAUNCH(rmsnorm_bwd_kernel, (unsigned)rows, row_threads(dim), 0)((float *)dx, (const float *)dy, (const float *)x, rstd, w,
                                                            dim, accumulate);
    CUDA_CHECK(be, cudaGetLastError());
}

/* ---------------- RoPE ---------------- */

/* the CPU's tables (angles in double on the host), uploaded once per (T, hd, theta) */
int cuda_rope_tables(zk_backend *be, size_t T, size_t hd, double theta) {
    cuda_ctx *c = ctx_of(be);
    if (c->rope_cos && c->rope_T >= T && c->rope_hd == hd && c->rope_theta == theta) return 0;
    size_t half = hd / 2;
    float *cs = (float *)malloc(T * half * sizeof(float)), *sn = (float *)malloc(T * half * sizeof(float));
    cuda_free_tracked(be, c->rope_cos);
    cuda_free_tracked(be, c->rope_sin);
    c->rope_cos = c->rope_sin = NULL;
    c->rope_T = 0;
    if (!cs || !sn) zk_set_failed(be, ZEN_ERR_INTERNAL, "out of host memory building RoPE tables for %zu positions", T);
    else if ((c->rope_cos = (float *)cuda_alloc_op(be, T * half * sizeof(float))) &&
             (c->rope_sin = (float *)cuda_alloc_op(be, T * half * sizeof(float)))) {
        for (size_t i = 0; i < half; i++) {
            double inv_freq = pow(theta, -2.0 * (double)i / (double)hd);
            for (size_t t = 0; t < T; t++) {
                cs[t * half + i] = (float)cos((double)t * inv_freq);
                sn[t * half + i] = (float)sin((double)t * inv_freq);
            }
        }
        cu_upload(be, c->rope_cos, cs, T * half * sizeof(float));
        cu_upload(be, c->rope_sin, sn, T * half * sizeof(float));
        c->rope_T = T, c->rope_hd = hd, c->rope_theta = theta;
    }
    free(cs);
    free(sn);
    return c->rope_T ? 0 : -1;
}

__global__ static void rope_kernel(float *x, const float *cs, const float *sn, const int32_t *pos, size_t rows, size_t H,
                                   size_t hd, float direction) {
    size_t half = hd / 2;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; /* over rows * H * half */
    if (idx >= rows * H * half) return;
    size_t i = idx % half, rh = idx / half, row = rh / H;
    size_t t = (size_t)pos[row];
    float *xh = x + rh * hd;
    float c = cs[t * half + i], s = direction * sn[t * half + i];
    float x1 = xh[i], x2 = xh[i + half];
    xh[i] = x1 * c - x2 * s;
    xh[i + half] = x2 * c + x1 * s;
}

static void rope_apply(zk_backend *be, void *x, const int32_t *pos, size_t N, size_t max_pos, size_t H, size_t hd,
                       double theta, float dir) {
    if (be->status || cuda_rope_tables(be, max_pos, hd, theta)) return;
    size_t n = N * H * (hd / 2);
    ZK_LAUNCH(rope_kernel, blocks_for(n, 256), 256, 0)((float *)x, ctx_of(be)->rope_cos, ctx_of(be)->rope_sin, pos, N, H,
                                                       hd, dir);
    CUDA_CHECK(be, cudaGetLastError());
}

static void cu_rope_fwd(zk_backend *be, void *x, const int32_t *pos, size_t N, size_t max_pos, size_t H, size_t hd,
                        double theta) {
    rope_apply(be, x, pos, N, max_pos, H, hd, theta, 1.0f);
}

static void cu_rope_bwd(zk_backend *be, void *dx, const int32_t *pos, size_t N, size_t max_pos, size_t H, size_t hd,
                        double theta) {
    rope_apply(be, dx, pos, N, max_pos, H, hd, theta, -1.0f);
}

/* ---------------- attention ---------------- */

static void cu_attention_fwd(zk_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                             const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv, size_t hd) {
    if (be->compute == ZEN_BF16 && cu_flash_attention_fwd(be, out, lse, q, k, v, seg, B, T, nh, nkv, hd)) return;
    cu_attention_exact_fwd(be, out, lse, q, k, v, seg, B, T, nh, nkv, hd);
}

static void cu_attention_bwd(zk_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *out,
                             const float *lse, const void *q, const void *k, const void *v, const int32_t *seg, size_t B,
                             size_t T, size_t nh, size_t nkv, size_t hd) {
    if (be->compute == ZEN_BF16 &&
        cu_flash_attention_bwd(be, dq, dk, dv, dout, out, lse, q, k, v, seg, B, T, nh, nkv, hd))
        return;
    cu_attention_exact_bwd(be, dq, dk, dv, dout, out, lse, q, k, v, seg, B, T, nh, nkv, hd);
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
    ZK_LAUNCH(swiglu_fwd_kernel, blocks_for(n, 256), 256, 0)((float *)h, (const float *)g, (const float *)u, n);
    CUDA_CHECK(be, cudaGetLastError());
}

static void cu_swiglu_bwd(zk_backend *be, void *dg, void *du, const void *dh, const void *g, const void *u, size_t n) {
    (void)be;
    ZK_LAUNCH(swiglu_bwd_kernel, blocks_for(n, 256), 256, 0)((float *)dg, (float *)du, (const float *)dh, (const float *)g,
                                                   (const float *)u, n);
    CUDA_CHECK(be, cudaGetLastError());
}

/* one thread per element of the N gathered (scattered) rows */
__global__ static void move_rows_kernel(float *dst, const float *src, const int32_t *idx, size_t N, size_t C,
                                        int scatter) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C) return;
    size_t n = i / C, c = i % C, far = (size_t)idx[n] * C + c;
    if (scatter) dst[far] = src[i];
    else dst[i] = src[far];
}

static void cu_gather_rows(zk_backend *be, void *dst, const void *src, const int32_t *idx, size_t N, size_t C) {
    if (N == 0) return;
    ZK_LAUNCH(move_rows_kernel, blocks_for(N * C, 256), 256, 0)((float *)dst, (const float *)src, idx, N, C, 0);
    CUDA_CHECK(be, cudaGetLastError());
}

static void cu_scatter_rows(zk_backend *be, void *dst, const void *src, const int32_t *idx, size_t N, size_t C) {
    if (N == 0) return;
    ZK_LAUNCH(move_rows_kernel, blocks_for(N * C, 256), 256, 0)((float *)dst, (const float *)src, idx, N, C, 1);
    CUDA_CHECK(be, cudaGetLastError());
}

__global__ static void embedding_fwd_kernel(float *out, const int32_t *tok, const void *w, int dtype, size_t N,
                                            size_t C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C) return;
    out[i] = load_as_float(w, dtype, (size_t)tok[i / C] * C + i % C);
}

/* one thread per column c adds the rows in order: deterministic, no atomics */
__global__ static void embedding_bwd_kernel(float *dW, const float *dout, const int32_t *tok, size_t N, size_t C) {
    size_t c = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (size_t n = 0; n < N; n++) dW[(size_t)tok[n] * C + c] += dout[n * C + c];
}

static void cu_embedding_fwd(zk_backend *be, void *out, const int32_t *tokens, const zk_weight *w, size_t N, size_t C) {
    (void)be;
    ZK_LAUNCH(embedding_fwd_kernel, blocks_for(N * C, 256), 256, 0)((float *)out, tokens, w->data, (int)w->dtype, N, C);
    CUDA_CHECK(be, cudaGetLastError());
}

static void cu_embedding_bwd(zk_backend *be, float *dW, const void *dout, const int32_t *tokens, size_t N, size_t C) {
    (void)be;
    ZK_LAUNCH(embedding_bwd_kernel, blocks_for(C, 256), 256, 0)(dW, (const float *)dout, tokens, N, C);
    CUDA_CHECK(be, cudaGetLastError());
}

/* ---------------- softmax + cross-entropy ---------------- */

__global__ static void xent_kernel(float *logits, float *losses, float *entropy, const int32_t *targets,
                                   const float *weights, size_t V, float t, float grad_scale) {
    float *z = logits + (size_t)blockIdx.x * V;
    float m = -INFINITY, inv_t = 1.0f / t;
    int plain = t == 1.0f && !entropy; /* the plain cross-entropy's sums, as before the temperature */
    for (size_t j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, z[j]);
    m = block_max(m);
    double sum = 0.0, spread = 0.0; /* sum_j e_j and sum_j e_j d_j, e_j = exp(d_j), d_j = (z_j - m) / t */
    for (size_t j = threadIdx.x; j < V; j += blockDim.x) {
        float d = plain ? z[j] - m : (z[j] - m) * inv_t;
        double e = (double)expf(d);
        sum += e;
        if (entropy) spread += e * (double)d;
    }
    sum = block_sum(sum);
    if (entropy) spread = block_sum(spread);
    double lse = plain ? (double)m + log(sum) : (double)m * (double)inv_t + log(sum);
    int32_t tg = targets[blockIdx.x];
    if (threadIdx.x == 0) {
        losses[blockIdx.x] = (float)(plain ? lse - (double)z[tg] : lse - (double)z[tg] * (double)inv_t);
        if (entropy) entropy[blockIdx.x] = (float)(log(sum) - spread / sum);
    }
    __syncthreads();
    if (grad_scale != 0.0f) {
        float coeff = weights[blockIdx.x] * grad_scale * (plain ? 1.0f : inv_t);
        for (size_t j = threadIdx.x; j < V; j += blockDim.x) {
            float e = plain ? expf(z[j] - (float)lse) : expf(z[j] * inv_t - (float)lse);
            z[j] = coeff == 0.0f ? 0.0f : e * coeff - (j == (size_t)tg ? coeff : 0.0f);
        }
    }
}

static void cu_xent(zk_backend *be, void *logits, float *losses, float *entropy, const int32_t *targets,
                    const float *weights, size_t rows, size_t V, float t, float grad_scale) {
    (void)be;
    ZK_LAUNCH(xent_kernel, (unsigned)rows, 1024, 0)((float *)logits, losses, entropy, targets, weights, V, t,
                                                    grad_scale);
    CUDA_CHECK(be, cudaGetLastError());
}

/* ---------------- optimizer ---------------- */

/* block b sums a fixed strided share of x into part[b]; the host adds the
 * blocks' sums in order, so the result never depends on scheduling */
__global__ static void sum_squares_kernel(double *part, const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * x[i];
    s = block_sum(s);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

static double cu_sum_squares(zk_backend *be, const float *x, size_t n) {
    cuda_ctx *c = ctx_of(be);
    ZK_LAUNCH(sum_squares_kernel, ZK_CUDA_REDUCE_BLOCKS, 256, 0)(c->reduce, x, n);
    CUDA_CHECK(be, cudaGetLastError());
    double part[ZK_CUDA_REDUCE_BLOCKS], r = 0.0;
    cu_download(be, part, c->reduce, sizeof part);
    for (int b = 0; b < ZK_CUDA_REDUCE_BLOCKS; b++) r += part[b];
    return r;
}

/* decay = 1 - lr wd; step_size = lr / (1 - b1^t); bc2_sqrt = sqrt(1 - b2^t) */
__global__ static void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, float b1, float b2,
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
    ZK_LAUNCH(adamw_kernel, blocks_for(n, 256), 256, 0)(p, g, m, v, n, beta1, beta2, eps, 1.0f - lr * weight_decay,
                                                        grad_scale, (float)((double)lr / bc1), (float)sqrt(bc2));
    CUDA_CHECK(be, cudaGetLastError());
}

/* ---------------- scratch reserved up front ---------------- */

/* every scratch buffer the plan's ops use, at the sizes zk_plan_scratch counts */
int cu_reserve(zk_backend *be, const zk_reserve_plan *p) {
    ctx_of(be)->max_segment = p->T;
    if (p->lora_r && p->lora_r <= ZK_CUDA_LORA_MAX_R)
        scratch(be, SCRATCH_LORA_PART, zk_cuda_lora_partial_elems(p->N, p->widest_in, p->lora_r) * sizeof(float));
    else if (p->lora_r && p->lora_dropout) {
        scratch(be, SCRATCH_DROPOUT_X, p->N * p->widest_in * sizeof(float));
        scratch(be, SCRATCH_DROPOUT_DX, p->N * p->widest_in * sizeof(float));
    }
    scratch(be, SCRATCH_ATT_D, p->B * p->heads * p->T * sizeof(float)); /* both attentions' row statistics */
    if (be->compute == ZEN_BF16) {
        scratch(be, SCRATCH_BF16_ACT, zen_dtype_bytes(ZEN_BF16, p->matmul_elems));
        if (p->quant_elems) scratch(be, SCRATCH_DEQUANT_W, zen_dtype_bytes(ZEN_BF16, p->quant_elems));
    } else if (p->widen_elems) {
        size_t w = p->widen_elems < ZK_CUDA_WIDEN_CHUNK_ELEMS ? p->widen_elems : ZK_CUDA_WIDEN_CHUNK_ELEMS;
        scratch(be, SCRATCH_WIDE_W, w * sizeof(float));
    }
    if (p->T && p->head_dim) cuda_rope_tables(be, p->T, p->head_dim, p->rope_theta);
    return zk_status(be);
}

/* ---------------- the backend ---------------- */

static void cu_destroy(zk_backend *be) {
    cuda_ctx *c = ctx_of(be);
    cu_comm_destroy(be);
    cublasDestroy(c->blas);
    cudaFree(c->blas_workspace);
    cudaFree(c->rope_cos);
    cudaFree(c->rope_sin);
    for (int i = 0; i < SCRATCH_SLOTS; i++) cudaFree(c->scratch[i]);
    cudaFree(c->reduce);
    free(c->allocs);
    free(c);
    free(be);
}

extern "C" int zk_cuda_device_count(void) {
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

extern "C" zk_backend *zk_cuda_create(zen_dtype compute, int device_index) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        zen_fail(ZEN_ERR_INPUT, "device 'cuda': no CUDA GPU is visible on this machine (use --device cpu)");
        return NULL;
    }
    /* one GPU per rank of this machine: never two ranks on one GPU */
    if (device_index < 0 || device_index >= count || cudaSetDevice(device_index) != cudaSuccess) {
        zen_fail(ZEN_ERR_INPUT, "device 'cuda': GPU %d is wanted (this machine's rank %d) but %d GPU%s visible; run at "
                 "most as many ranks per machine as it has GPUs", device_index, device_index, count,
                 count == 1 ? " is" : "s are");
        return NULL;
    }
    cudaDeviceProp prop = {};
    if (cudaGetDeviceProperties(&prop, device_index) == cudaSuccess && prop.major < 8) {
        zen_fail(ZEN_ERR_INPUT, "device 'cuda': %s has compute capability %d.%d; zen needs 8.0 or newer (Ampere+)",
                 prop.name, prop.major, prop.minor);
        return NULL;
    }
    zk_backend *be = (zk_backend *)calloc(1, sizeof *be);
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    if (!be || !c || cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS) {
        free(be);
        free(c);
        zen_fail(ZEN_ERR_INTERNAL, "device 'cuda': cannot initialise cuBLAS");
        return NULL;
    }
    be->ctx = c;
    be->compute = compute;
    c->reduce = (double *)cu_alloc(be, ZK_CUDA_REDUCE_BLOCKS * sizeof(double));
    c->blas_workspace = c->reduce ? cu_alloc(be, ZK_CUDA_CUBLAS_WORKSPACE) : NULL;
    /* f32: exact fp32 sgemm, no TF32 (NVIDIA_TF32_OVERRIDE=0 is also honoured) */
    if (!c->blas_workspace ||
        cublasSetWorkspace(c->blas, c->blas_workspace, ZK_CUDA_CUBLAS_WORKSPACE) != CUBLAS_STATUS_SUCCESS ||
        cublasSetMathMode(c->blas, compute == ZEN_F32 ? CUBLAS_PEDANTIC_MATH : CUBLAS_DEFAULT_MATH) !=
            CUBLAS_STATUS_SUCCESS) {
        if (c->blas_workspace) zen_fail(ZEN_ERR_INTERNAL, "device 'cuda': cannot set up cuBLAS");
        cu_destroy(be);
        return NULL;
    }
    be->name = "cuda";
    snprintf(be->info, sizeof be->info, "%s on %.100s (compute capability %d.%d)",
             compute == ZEN_BF16 ? "bf16 tensor cores, flash attention" : "f32 (exact attention, no TF32)", prop.name,
             prop.major, prop.minor);
    be->act_bytes = sizeof(float);
    be->memory_peak = cu_memory_peak;
    be->memory_info = cu_memory_info;
    be->alloc = cu_alloc;
    be->free = cu_free;
    be->upload = cu_upload;
    be->download = cu_download;
    be->zero = cu_zero;
    be->copy = cu_copy;
    be->weight_create = cu_weight_create;
    be->weight_destroy = cu_weight_destroy;
    be->upload_act = cu_upload_act;
    be->download_act = cu_download_act;
    be->destroy = cu_destroy;
    be->reserve = cu_reserve;
    be->linear_fwd = cu_linear_fwd;
    be->linear_bwd = cu_linear_bwd;
    be->lora_fwd = cu_lora_fwd;
    be->lora_bwd = cu_lora_bwd;
    be->add = cu_add;
    be->scale_rows = cu_scale_rows;
    be->row_sq_norms = cu_row_sq_norms;
    be->scale_cols = cu_scale_cols;
    be->dropout = cu_dropout;
    be->col_dot = cu_col_dot;
    be->rmsnorm_fwd = cu_rmsnorm_fwd;
    be->rmsnorm_bwd = cu_rmsnorm_bwd;
    be->rope_fwd = cu_rope_fwd;
    be->rope_bwd = cu_rope_bwd;
    be->attention_fwd = cu_attention_fwd;
    be->attention_paged_fwd = cu_attention_paged_fwd;
    be->attention_bwd = cu_attention_bwd;
    be->swiglu_fwd = cu_swiglu_fwd;
    be->swiglu_bwd = cu_swiglu_bwd;
    be->gather_rows = cu_gather_rows;
    be->scatter_rows = cu_scatter_rows;
    be->embedding_fwd = cu_embedding_fwd;
    be->embedding_bwd = cu_embedding_bwd;
    be->xent = cu_xent;
    be->sum_squares = cu_sum_squares;
    be->adamw = cu_adamw;
    cu_comm_install(be);
    return be;
}
