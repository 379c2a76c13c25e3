/* kernels/cuda/linear_cuda.cu: the frozen projections on cuBLAS (the LoRA
 * branch is in lora_cuda.cu).
 *
 * Two precisions (be->compute):
 * - ZEN_BF16: weights are bf16 on the device; the fp32 activation is rounded
 *   to bf16 into a scratch buffer and cublasGemmEx multiplies bf16 x bf16 with
 *   fp32 accumulation into an fp32 output (tensor cores).
 * - ZEN_F32: weights stay as stored and are widened to fp32 a chunk of rows
 *   at a time before cublasSgemm, exactly as the CPU backend does (checking).
 *
 * Decoding (at most ZK_DECODE_ROWS rows) runs a kernel of its own instead,
 * each row on its own (kernels.h).
 *
 * cuBLAS is column-major: a row-major C[M,N] = op(A) op(B) is the column-major
 * C^T = op(B)^T op(A)^T, which cuda_rm_gemm / rm_gemm_bf16 spell out once. */
#include "cuda_common.cuh"

/* row-major C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C, fp32 */
void cuda_rm_gemm(zk_backend *be, int transA, int transB, size_t M, size_t N, size_t K, float alpha, const float *A,
                    size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    if (!A || !B) return; /* an input the backend could not make (failure recorded) */
    CUBLAS_CHECK(be, cublasSgemm(ctx_of(be)->blas, transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N,
                             (int)N, (int)M, (int)K, &alpha, B, (int)ldb, A, (int)lda, &beta, C, (int)ldc));
}

/* the same with bf16 A and B, fp32 accumulation and fp32 C */
static void rm_gemm_bf16(zk_backend *be, int transA, int transB, size_t M, size_t N, size_t K, const void *A,
                         size_t lda, const void *B, size_t ldb, float beta, float *C, size_t ldc) {
    float alpha = 1.0f;
    if (!A || !B) return;
    CUBLAS_CHECK(be, cublasGemmEx(ctx_of(be)->blas, transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N,
                              (int)N, (int)M, (int)K, &alpha, B, CUDA_R_16BF, (int)ldb, A, CUDA_R_16BF, (int)lda, &beta,
                              C, CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* ---------------- bf16 compute ---------------- */

/* dst[n] = bf16(src[n]), round to nearest even; four at a time where aligned */
__global__ static void round_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    size_t i4 = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i4 + 4 <= n && ((size_t)src & 15) == 0) {
        float4 v = *(const float4 *)(src + i4);
        *(__nv_bfloat162 *)(dst + i4) = __floats2bfloat162_rn(v.x, v.y);
        *(__nv_bfloat162 *)(dst + i4 + 2) = __floats2bfloat162_rn(v.z, v.w);
    } else {
        for (size_t i = i4; i < n; i++) dst[i] = __float2bfloat16_rn(src[i]);
    }
}

/* an fp32 activation [n] rounded to bf16 in the scratch buffer */
static const __nv_bfloat16 *as_bf16(zk_backend *be, const float *x, size_t n) {
    __nv_bfloat16 *xb = (__nv_bfloat16 *)scratch(be, SCRATCH_BF16_ACT, n * sizeof(__nv_bfloat16));
    if (!xb) return NULL;
    ZK_LAUNCH(round_bf16_kernel, blocks_for((n + 3) / 4, 256), 256, 0)(xb, x, n);
    CUDA_CHECK(be, cudaGetLastError());
    return xb;
}

/* ---------------- f32 compute: weights widened a chunk of rows at a time ---------------- */

__global__ static void widen_kernel(float *dst, const void *src, int dtype, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = load_as_float(src, dtype, i);
}

/* rows [o0, o0 + rows) of W[out, in] as fp32 on the device */
static const float *weight_rows(zk_backend *be, const zk_weight *w, size_t o0, size_t rows, size_t in) {
    if (w->dtype == ZEN_F32) return (const float *)w->data + o0 * in;
    float *dst = (float *)scratch(be, SCRATCH_WIDE_W, rows * in * sizeof(float));
    if (!dst) return NULL;
    ZK_LAUNCH(widen_kernel, blocks_for(rows * in, 256), 256, 0)(dst, (const char *)w->data + zen_dtype_bytes(w->dtype, o0 * in), (int)w->dtype, rows * in);
    CUDA_CHECK(be, cudaGetLastError());
    return dst;
}

static size_t chunk_rows(const zk_weight *w, size_t in, size_t out) {
    if (w->dtype == ZEN_F32) return out;
    size_t rows = ZK_CUDA_WIDEN_CHUNK_ELEMS / (in ? in : 1);
    return rows < 1 ? 1 : rows < out ? rows : out;
}

/* ---------------- the ops ---------------- */

__global__ static void dequant_bf16_kernel(__nv_bfloat16 *dst, const void *src, int dtype, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = __float2bfloat16_rn(load_as_float(src, dtype, i));
}

/* a weight as bf16 for a bf16 GEMM: bf16 ones in place; a block-quantised
 * one dequantised whole into the scratch (one matrix at a time) */
static const void *weight_bf16(zk_backend *be, const zk_weight *w, size_t in, size_t out) {
    if (!zen_dtype_is_quant(w->dtype)) return w->data;
    __nv_bfloat16 *dst = (__nv_bfloat16 *)scratch(be, SCRATCH_DEQUANT_W, in * out * sizeof(__nv_bfloat16));
    if (!dst) return NULL;
    ZK_LAUNCH(dequant_bf16_kernel, blocks_for(in * out, 256), 256, 0)(dst, w->data, (int)w->dtype, in * out);
    CUDA_CHECK(be, cudaGetLastError());
    return dst;
}

/* Decoding (N <= ZK_DECODE_ROWS): a warp per output row o reads W[o] once
 * (coalesced, widened from its stored type; in bf16 compute a dequantised
 * weight and x rounded to bf16, as the GEMM path takes them) for all N
 * rows; each lane sums its strided share of every row, then a fixed
 * shuffle tree adds the lanes. A row's sum never sees the other rows: the
 * same bits for any N, any place among them (kernels.h). */
#define DECODE_WARPS 4
__global__ static void decode_rows_kernel(float *y, const float *x, const void *W, int dtype, size_t N, size_t in,
                                          size_t out, int bf16) {
    size_t o = (size_t)blockIdx.x * DECODE_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    float acc[ZK_DECODE_ROWS];
#pragma unroll
    for (int n = 0; n < ZK_DECODE_ROWS; n++) acc[n] = 0.0f;
    if (o < out) {
        for (size_t k = lane; k < in; k += 32) {
            float wv = load_as_float(W, dtype, o * in + k);
            if (bf16) wv = __bfloat162float(__float2bfloat16_rn(wv));
#pragma unroll
            for (int n = 0; n < ZK_DECODE_ROWS; n++) {
                if ((size_t)n >= N) break;
                float xv = x[n * in + k];
                if (bf16) xv = __bfloat162float(__float2bfloat16_rn(xv));
                acc[n] += xv * wv;
            }
        }
    }
#pragma unroll
    for (int n = 0; n < ZK_DECODE_ROWS; n++) {
        if ((size_t)n >= N) break; /* N is the same for the whole warp: every lane takes the shuffles */
        float v = acc[n];
        for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);
        if (lane == 0 && o < out) y[n * out + o] = v;
    }
}

/* y[N,out] = x[N,in] W[out,in]^T */
void cu_linear_fwd(zk_backend *be, void *y, const void *x, const zk_weight *w, size_t N, size_t in, size_t out) {
    if (N <= ZK_DECODE_ROWS) {
        ZK_LAUNCH(decode_rows_kernel, (unsigned)((out + DECODE_WARPS - 1) / DECODE_WARPS), 32 * DECODE_WARPS, 0)(
            (float *)y, (const float *)x, w->data, (int)w->dtype, N, in, out, be->compute == ZEN_BF16);
        CUDA_CHECK(be, cudaGetLastError());
        return;
    }
    if (be->compute == ZEN_BF16) { /* weights are bf16 or block-quantised in this mode (cu_weight_create) */
        const void *wb = weight_bf16(be, w, in, out);
        rm_gemm_bf16(be, 0, 1, N, out, in, as_bf16(be, (const float *)x, N * in), in, wb, in, 0.0f, (float *)y,
                     out);
        return;
    }
    size_t step = chunk_rows(w, in, out);
    for (size_t o0 = 0; o0 < out; o0 += step) {
        size_t rows = out - o0 < step ? out - o0 : step;
        cuda_rm_gemm(be, 0, 1, N, rows, in, 1.0f, (const float *)x, in, weight_rows(be, w, o0, rows, in), in, 0.0f,
                (float *)y + o0, out);
    }
}

/* dx[N,in] (+)= dy[N,out] W[out,in] */
void cu_linear_bwd(zk_backend *be, void *dx, const void *dy, const zk_weight *w, size_t N, size_t in, size_t out,
                   int accumulate) {
    if (be->compute == ZEN_BF16) {
        const void *wb = weight_bf16(be, w, in, out);
        rm_gemm_bf16(be, 0, 0, N, in, out, as_bf16(be, (const float *)dy, N * out), out, wb, in,
                     accumulate ? 1.0f : 0.0f, (float *)dx, in);
        return;
    }
    size_t step = chunk_rows(w, in, out);
    for (size_t o0 = 0; o0 < out; o0 += step) {
        size_t rows = out - o0 < step ? out - o0 : step;
        float beta = (o0 == 0 && !accumulate) ? 0.0f : 1.0f;
        cuda_rm_gemm(be, 0, 0, N, in, rows, 1.0f, (const float *)dy + o0, out, weight_rows(be, w, o0, rows, in), in, beta,
                (float *)dx, in);
    }
}
