/* kernels/cuda/flash_attention.cu: causal GQA attention, flash-attention style,
 * on bf16 tensor cores (nvcuda::wmma 16x16x16, sm_80+), used in bf16 compute.
 *
 * Never forms the [T, T] scores: a block owns a tile of rows and streams the
 * other side through shared memory in tiles. Segments (documents, see
 * kernels.h): a query sees keys from its segment's start; the forward and dQ
 * skip key tiles before the block's first segment start and the dK/dV kernel
 * stops at the first query tile that starts past its keys, so short documents
 * cost little.
 *   forward   block = 64 queries (16 per warp) of one (b, h); key tiles of 32:
 *             S = Q K^T (bf16 in, fp32 out), online softmax in fp32 (running
 *             max m and sum l per row), O = O * exp(m_old - m_new) + P V;
 *             out = O / l, lse = m + log l saved for backward.
 *   backward  D = rowsum(dO * O) (fp32), then two kernels, each writing its
 *             outputs once (deterministic, no atomics):
 *             dQ:    block = 64 queries; per key tile P = exp(S - lse),
 *                    dP = dO V^T, dS = P (dP - D) scale, dQ += dS K
 *             dK,dV: block = 64 keys of one kv head (16 per warp); loops over
 *                    the query heads of its group and query tiles of 32:
 *                    dV += P^T dO, dK += dS^T Q (accumulated in registers)
 * Inputs are the fp32 activations, rounded to bf16 as tiles are loaded;
 * outputs fp32. Head sizes 32, 64 and 128; others use attention_exact.cu.
 *
 * The device code is in flash_attention_kernels.cuh (also run on the CPU by
 * the emulator test); this file launches it.
 *
 * wmma rules followed there: 16-bit tiles have leading dimensions that are
 * multiples of 8 elements, fp32 tiles multiples of 4, and every fragment
 * pointer is 32-byte aligned (each shared region is a multiple of 16 padded
 * rows, so of 32 bytes). */
#include "cuda_common.cuh"
#include "flash_attention_kernels.cuh"

/* ---------------- launchers ---------------- */

template <int HD>
static void fwd_launch(zk_backend *be, float *out, float *lse, const float *q, const float *k, const float *v,
                       const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv) {
    size_t smem = fwd_smem_bytes<HD>();
    if (!allow_smem(be, (const void *)flash_fwd_kernel<HD>, smem)) return;
    dim3 grid((unsigned)((T + FA_BR - 1) / FA_BR), (unsigned)nh, (unsigned)B);
    ZK_LAUNCH(flash_fwd_kernel<HD>, grid, FA_THREADS, smem)(out, lse, q, k, v, seg, (int)T, (int)nh, (int)nkv,
                                                     1.0f / sqrtf((float)HD));
    CUDA_CHECK(be, cudaGetLastError());
}

template <int HD>
static void bwd_launch(zk_backend *be, float *dq, float *dk, float *dv, const float *dout, const float *lse, const float *D,
                       const float *q, const float *k, const float *v, const int32_t *seg, size_t B, size_t T, size_t nh,
                       size_t nkv) {
    float scale = 1.0f / sqrtf((float)HD);
    size_t smem = dq_smem_bytes<HD>();
    if (!allow_smem(be, (const void *)flash_bwd_dq_kernel<HD>, smem)) return;
    dim3 grid((unsigned)((T + FA_BR - 1) / FA_BR), (unsigned)nh, (unsigned)B);
    ZK_LAUNCH(flash_bwd_dq_kernel<HD>, grid, FA_THREADS, smem)(dq, dout, lse, D, q, k, v, seg, (int)T, (int)nh, (int)nkv, scale);
    CUDA_CHECK(be, cudaGetLastError());
    smem = dkv_smem_bytes<HD>();
    if (!allow_smem(be, (const void *)flash_bwd_dkv_kernel<HD>, smem)) return;
    dim3 grid2((unsigned)((T + FA_BKV - 1) / FA_BKV), (unsigned)nkv, (unsigned)B);
    ZK_LAUNCH(flash_bwd_dkv_kernel<HD>, grid2, FA_THREADS, smem)(dk, dv, dout, lse, D, q, k, v, seg, (int)T, (int)nh, (int)nkv,
                                                           scale);
    CUDA_CHECK(be, cudaGetLastError());
}

int cu_flash_attention_fwd(zk_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                           const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv, size_t hd) {
    const float *qf = (const float *)q, *kf = (const float *)k, *vf = (const float *)v;
    switch (hd) {
    case 32: fwd_launch<32>(be, (float *)out, lse, qf, kf, vf, seg, B, T, nh, nkv); return 1;
    case 64: fwd_launch<64>(be, (float *)out, lse, qf, kf, vf, seg, B, T, nh, nkv); return 1;
    case 128: fwd_launch<128>(be, (float *)out, lse, qf, kf, vf, seg, B, T, nh, nkv); return 1;
    default: return 0;
    }
}

int cu_flash_attention_bwd(zk_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *out,
                           const float *lse, const void *q, const void *k, const void *v, const int32_t *seg, size_t B,
                           size_t T, size_t nh, size_t nkv, size_t hd) {
    if (hd != 32 && hd != 64 && hd != 128) return 0;
    size_t rows = B * nh * T;
    float *D = (float *)scratch(be, SCRATCH_ATT_D, rows * sizeof(float));
    if (!D) return 1; /* the backend has failed: nothing more to do */
    ZK_LAUNCH(attn_rowdot_kernel, blocks_for(rows, 8), 256, 0)(D, (const float *)dout, (const float *)out, (int)T, (int)nh,
                                                      (int)hd, rows);
    CUDA_CHECK(be, cudaGetLastError());
    const float *qf = (const float *)q, *kf = (const float *)k, *vf = (const float *)v, *df = (const float *)dout;
    switch (hd) {
    case 32: bwd_launch<32>(be, (float *)dq, (float *)dk, (float *)dv, df, lse, D, qf, kf, vf, seg, B, T, nh, nkv); break;
    case 64: bwd_launch<64>(be, (float *)dq, (float *)dk, (float *)dv, df, lse, D, qf, kf, vf, seg, B, T, nh, nkv); break;
    default: bwd_launch<128>(be, (float *)dq, (float *)dk, (float *)dv, df, lse, D, qf, kf, vf, seg, B, T, nh, nkv); break;
    }
    return 1;
}
