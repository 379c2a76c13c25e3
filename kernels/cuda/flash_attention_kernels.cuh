/* kernels/cuda/flash_attention_kernels.cuh: the device code of the flash
 * attention kernels (the algorithm is described in flash_attention.cu).
 * It is included by flash_attention.cu under nvcc, and by
 * tests/emu/test_flash_emu.cpp under a small CUDA emulator (tests/emu/cuda_emu.h:
 * a block's threads as cooperative fibers, barriers and shuffles as such,
 * wmma fragments spread over the lanes as on the hardware), which runs these
 * very kernels on the CPU against the CPU backend's attention, so their
 * indexing, masking and barrier placement are tested without a GPU. */
#ifndef ZEN_FLASH_ATTENTION_KERNELS_CUH
#define ZEN_FLASH_ATTENTION_KERNELS_CUH

#ifndef ZEN_CUDA_EMU
#include <mma.h>
using namespace nvcuda;
#endif


typedef __nv_bfloat16 bf16;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> frag_b;
/* B = X^T for X stored row-major [n][k]: X read as a column-major [k][n] */
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> frag_bt;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag_c;

#define FA_THREADS 128 /* 4 warps */
#define FA_BR 64       /* query rows of a forward / dQ block (16 per warp) */
#define FA_BC 32       /* keys per tile in forward / dQ: one per lane */
#define FA_BKV 64      /* key rows of a dK/dV block (16 per warp) */
#define FA_BQ 32       /* queries per tile in dK/dV: one per lane */
#define PAD_H 8        /* bf16 row padding, elements */
#define PAD_F 4        /* fp32 row padding, elements */

/* rows [0, rows) of a tile into bf16 shared memory [rows][HD + PAD_H]; row r
 * of the source is src + r * stride (fp32, 16-byte aligned); rows >= valid are 0 */
template <int HD>
__device__ static void load_tile(bf16 *dst, const float *src, size_t stride, int rows, int valid) {
    const int vecs = HD / 4;
    for (int idx = threadIdx.x; idx < rows * vecs; idx += blockDim.x) {
        int r = idx / vecs, c = (idx % vecs) * 4;
        float4 x = r < valid ? *(const float4 *)(src + (size_t)r * stride + c) : make_float4(0.f, 0.f, 0.f, 0.f);
        bf16 *d = dst + r * (HD + PAD_H) + c;
        *(__nv_bfloat162 *)d = __floats2bfloat162_rn(x.x, x.y);
        *(__nv_bfloat162 *)(d + 2) = __floats2bfloat162_rn(x.z, x.w);
    }
}

/* C[16][16 * NT] (fp32, ld ldc) = A[16][K] B^T, with A row-major (ld lda) and
 * B stored row-major [16 * NT][K] (ld ldb): the warp's score-like products */
template <int K, int NT>
__device__ static void warp_gemm_abt(float *C, int ldc, const bf16 *A, int lda, const bf16 *B, int ldb) {
#pragma unroll
    for (int n = 0; n < NT; n++) {
        frag_c acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < K / 16; kk++) {
            frag_a a;
            frag_bt bt;
            wmma::load_matrix_sync(a, A + kk * 16, lda);
            wmma::load_matrix_sync(bt, B + n * 16 * ldb + kk * 16, ldb);
            wmma::mma_sync(acc, a, bt, acc);
        }
        wmma::store_matrix_sync(C + n * 16, acc, ldc, wmma::mem_row_major);
    }
}

/* acc[n] += A[16][K] B[K][16n..16n+16) with A and B row-major */
template <int K, int NT>
__device__ static void warp_gemm_ab_acc(frag_c *acc, const bf16 *A, int lda, const bf16 *B, int ldb) {
#pragma unroll
    for (int n = 0; n < NT; n++) {
#pragma unroll
        for (int kk = 0; kk < K / 16; kk++) {
            frag_a a;
            frag_b bm;
            wmma::load_matrix_sync(a, A + kk * 16, lda);
            wmma::load_matrix_sync(bm, B + kk * 16 * ldb + n * 16, ldb);
            wmma::mma_sync(acc[n], a, bm, acc[n]);
        }
    }
}

/* writes the warp's 16 x (16 NT) fp32 accumulators to rows row0.. of a global
 * [.., stride] tensor (rows >= T skipped), staging each 16x16 fragment in the
 * warp's own shared area stage (at least 16 rows of ld floats) */
template <int NT>
__device__ static void warp_store_rows(float *dst, size_t stride, int row0, int T, frag_c *acc, float *stage, int ld) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int n = 0; n < NT; n++) {
        __syncwarp();
        wmma::store_matrix_sync(stage, acc[n], ld, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
            int r = e / 16, c = e % 16;
            if (row0 + r < T) dst[(size_t)(row0 + r) * stride + n * 16 + c] = stage[r * ld + c];
        }
    }
    __syncwarp();
}

__device__ static inline float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ static inline float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---------------- forward ---------------- */

template <int HD>
static size_t fwd_smem_bytes() {
    return (size_t)(FA_BR + 2 * FA_BC) * (HD + PAD_H) * sizeof(bf16) + (size_t)FA_BR * (FA_BC + PAD_F) * sizeof(float) +
           (size_t)FA_BR * (FA_BC + PAD_H) * sizeof(bf16) + (size_t)FA_BR * (HD + PAD_F) * sizeof(float);
}

/* grid (ceil(T / 64), nh, B) */
template <int HD>
__global__ static void __launch_bounds__(FA_THREADS)
    flash_fwd_kernel(float *out, float *lse, const float *q, const float *k, const float *v, const int *seg, int T,
                     int nh, int nkv, float scale) {
    ZK_DYNAMIC_SMEM(smem);
    const int LDH = HD + PAD_H, LDS = FA_BC + PAD_F, LDP = FA_BC + PAD_H, LDO = HD + PAD_F;
    bf16 *Qs = (bf16 *)smem;                      /* [BR][LDH] */
    bf16 *Ks = Qs + FA_BR * LDH;                  /* [BC][LDH] */
    bf16 *Vs = Ks + FA_BC * LDH;                  /* [BC][LDH] */
    float *Ss = (float *)(Vs + FA_BC * LDH);      /* [BR][LDS] scores */
    bf16 *Ps = (bf16 *)(Ss + FA_BR * LDS);        /* [BR][LDP] probabilities */
    float *Os = (float *)(Ps + FA_BR * LDP);      /* [BR][LDO] unnormalised output */
    const int q0 = blockIdx.x * FA_BR, h = blockIdx.y, b = blockIdx.z, g = h / (nh / nkv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t qs = (size_t)nh * HD, ks = (size_t)nkv * HD; /* row strides */
    const float *qb = q + ((size_t)b * T * nh + h) * HD, *kb = k + ((size_t)b * T * nkv + g) * HD;
    const float *vb = v + ((size_t)b * T * nkv + g) * HD;

    load_tile<HD>(Qs, qb + (size_t)q0 * qs, qs, FA_BR, min(FA_BR, T - q0));
    for (int i = threadIdx.x; i < FA_BR * LDO; i += blockDim.x) Os[i] = 0.0f;
    const bf16 *Qw = Qs + warp * 16 * LDH;
    float *Sw = Ss + warp * 16 * LDS, *Ow = Os + warp * 16 * LDO;
    bf16 *Pw = Ps + warp * 16 * LDP;
    float m_row[16], l_row[16]; /* every lane holds the same running max and sum */
    int seg_r[16];              /* the first key each row sees (its segment's start) */
#pragma unroll
    for (int r = 0; r < 16; r++) {
        int i = q0 + warp * 16 + r;
        m_row[r] = -INFINITY, l_row[r] = 0.0f, seg_r[r] = seg && i < T ? seg[(size_t)b * T + i] : 0;
    }

    /* causal: keys < kv_end; segments: no row of the block sees a key before
     * its first row's segment start, so whole tiles before it are skipped */
    const int kv_end = min(T, q0 + FA_BR), kv_begin = seg ? seg[(size_t)b * T + q0] / FA_BC * FA_BC : 0;
    for (int j0 = kv_begin; j0 < kv_end; j0 += FA_BC) {
        __syncthreads(); /* the previous tile is no longer read */
        load_tile<HD>(Ks, kb + (size_t)j0 * ks, ks, FA_BC, min(FA_BC, T - j0));
        load_tile<HD>(Vs, vb + (size_t)j0 * ks, ks, FA_BC, min(FA_BC, T - j0));
        __syncthreads();
        warp_gemm_abt<HD, FA_BC / 16>(Sw, LDS, Qw, LDH, Ks, LDH);
        __syncwarp();
#pragma unroll
        for (int r = 0; r < 16; r++) {
            int i = q0 + warp * 16 + r, j = j0 + lane;
            float s = (j <= i && j < T && j >= seg_r[r]) ? Sw[r * LDS + lane] * scale : -INFINITY;
            float m_new = fmaxf(m_row[r], warp_max(s));
            float p = s == -INFINITY ? 0.0f : __expf(s - m_new);
            float alpha = m_row[r] == -INFINITY ? 0.0f : __expf(m_row[r] - m_new);
            l_row[r] = l_row[r] * alpha + warp_sum(p);
            m_row[r] = m_new;
            Pw[r * LDP + lane] = __float2bfloat16_rn(p);
            for (int d = lane; d < HD; d += 32) Ow[r * LDO + d] *= alpha;
        }
        __syncwarp();
        frag_c acc[HD / 16];
#pragma unroll
        for (int n = 0; n < HD / 16; n++) wmma::load_matrix_sync(acc[n], Ow + n * 16, LDO, wmma::mem_row_major);
        warp_gemm_ab_acc<FA_BC, HD / 16>(acc, Pw, LDP, Vs, LDH);
#pragma unroll
        for (int n = 0; n < HD / 16; n++) wmma::store_matrix_sync(Ow + n * 16, acc[n], LDO, wmma::mem_row_major);
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < 16; r++) {
        int i = q0 + warp * 16 + r;
        if (i < T) {
            float inv = 1.0f / l_row[r];
            float *orow = out + ((size_t)(b * T + i) * nh + h) * HD;
            for (int d = lane; d < HD; d += 32) orow[d] = Ow[r * LDO + d] * inv;
            if (lane == 0) lse[((size_t)b * nh + h) * T + i] = m_row[r] + logf(l_row[r]);
        }
    }
}

/* ---------------- backward ---------------- */

/* D[(b nh + h) T + i] = sum_d dO[b,i,h,d] O[b,i,h,d]; one warp per row */
__global__ static void attn_rowdot_kernel(float *D, const float *dout, const float *out, int T, int nh, int hd,
                                          size_t rows) {
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    size_t i = row % (size_t)T, bh = row / (size_t)T, h = bh % (size_t)nh, b = bh / (size_t)nh;
    size_t at = ((b * T + i) * nh + h) * hd;
    float s = 0.0f;
    for (int c = lane; c < hd; c += 32) s += dout[at + c] * out[at + c];
    s = warp_sum(s);
    if (lane == 0) D[row] = s;
}

template <int HD>
static size_t dq_smem_bytes() {
    return (size_t)(2 * FA_BR + 2 * FA_BC) * (HD + PAD_H) * sizeof(bf16) +
           (size_t)2 * FA_BR * (FA_BC + PAD_F) * sizeof(float) + (size_t)FA_BR * (FA_BC + PAD_H) * sizeof(bf16);
}

/* grid (ceil(T / 64), nh, B): dq of 64 query rows of one head */
template <int HD>
__global__ static void __launch_bounds__(FA_THREADS)
    flash_bwd_dq_kernel(float *dq, const float *dout, const float *lse, const float *Drow, const float *q,
                        const float *k, const float *v, const int *seg, int T, int nh, int nkv, float scale) {
    ZK_DYNAMIC_SMEM(smem);
    const int LDH = HD + PAD_H, LDS = FA_BC + PAD_F, LDP = FA_BC + PAD_H;
    bf16 *Qs = (bf16 *)smem;                  /* [BR][LDH] */
    bf16 *dOs = Qs + FA_BR * LDH;             /* [BR][LDH] */
    bf16 *Ks = dOs + FA_BR * LDH;             /* [BC][LDH] */
    bf16 *Vs = Ks + FA_BC * LDH;              /* [BC][LDH] */
    float *Ss = (float *)(Vs + FA_BC * LDH);  /* [BR][LDS] scores */
    float *dPs = Ss + FA_BR * LDS;            /* [BR][LDS] dO V^T */
    bf16 *dSs = (bf16 *)(dPs + FA_BR * LDS);  /* [BR][LDP] */
    const int q0 = blockIdx.x * FA_BR, h = blockIdx.y, b = blockIdx.z, g = h / (nh / nkv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t qs = (size_t)nh * HD, ks = (size_t)nkv * HD;
    const size_t qoff = ((size_t)b * T * nh + h) * HD, koff = ((size_t)b * T * nkv + g) * HD;

    load_tile<HD>(Qs, q + qoff + (size_t)q0 * qs, qs, FA_BR, min(FA_BR, T - q0));
    load_tile<HD>(dOs, dout + qoff + (size_t)q0 * qs, qs, FA_BR, min(FA_BR, T - q0));
    const bf16 *Qw = Qs + warp * 16 * LDH, *dOw = dOs + warp * 16 * LDH;
    float *Sw = Ss + warp * 16 * LDS, *dPw = dPs + warp * 16 * LDS;
    bf16 *dSw = dSs + warp * 16 * LDP;
    float lse_r[16], D_r[16];
    int seg_r[16];
#pragma unroll
    for (int r = 0; r < 16; r++) {
        int i = q0 + warp * 16 + r;
        size_t at = ((size_t)b * nh + h) * T + i;
        lse_r[r] = i < T ? lse[at] : 0.0f;
        D_r[r] = i < T ? Drow[at] : 0.0f;
        seg_r[r] = seg && i < T ? seg[(size_t)b * T + i] : 0;
    }
    frag_c acc[HD / 16];
#pragma unroll
    for (int n = 0; n < HD / 16; n++) wmma::fill_fragment(acc[n], 0.0f);

    const int kv_end = min(T, q0 + FA_BR), kv_begin = seg ? seg[(size_t)b * T + q0] / FA_BC * FA_BC : 0;
    for (int j0 = kv_begin; j0 < kv_end; j0 += FA_BC) {
        __syncthreads();
        load_tile<HD>(Ks, k + koff + (size_t)j0 * ks, ks, FA_BC, min(FA_BC, T - j0));
        load_tile<HD>(Vs, v + koff + (size_t)j0 * ks, ks, FA_BC, min(FA_BC, T - j0));
        __syncthreads();
        warp_gemm_abt<HD, FA_BC / 16>(Sw, LDS, Qw, LDH, Ks, LDH);
        warp_gemm_abt<HD, FA_BC / 16>(dPw, LDS, dOw, LDH, Vs, LDH);
        __syncwarp();
#pragma unroll
        for (int r = 0; r < 16; r++) {
            int i = q0 + warp * 16 + r, j = j0 + lane;
            float ds = 0.0f;
            if (j <= i && i < T && j >= seg_r[r]) {
                float p = __expf(Sw[r * LDS + lane] * scale - lse_r[r]);
                ds = p * (dPw[r * LDS + lane] - D_r[r]) * scale;
            }
            dSw[r * LDP + lane] = __float2bfloat16_rn(ds);
        }
        __syncwarp();
        warp_gemm_ab_acc<FA_BC, HD / 16>(acc, dSw, LDP, Ks, LDH);
    }
    warp_store_rows<HD / 16>(dq + qoff, qs, q0 + warp * 16, T, acc, Sw, LDS);
}

template <int HD>
static size_t dkv_smem_bytes() {
    return (size_t)(2 * FA_BKV + 2 * FA_BQ) * (HD + PAD_H) * sizeof(bf16) +
           (size_t)2 * FA_BKV * (FA_BQ + PAD_F) * sizeof(float) + (size_t)2 * FA_BKV * (FA_BQ + PAD_H) * sizeof(bf16) +
           (size_t)3 * FA_BQ * sizeof(float);
}

/* grid (ceil(T / 64), nkv, B): dk, dv of 64 key rows of one kv head, summed
 * over the nh / nkv query heads that read it */
template <int HD>
__global__ static void __launch_bounds__(FA_THREADS)
    flash_bwd_dkv_kernel(float *dk, float *dv, const float *dout, const float *lse, const float *Drow, const float *q,
                         const float *k, const float *v, const int *seg, int T, int nh, int nkv, float scale) {
    ZK_DYNAMIC_SMEM(smem);
    const int LDH = HD + PAD_H, LDT = FA_BQ + PAD_F, LDPT = FA_BQ + PAD_H;
    bf16 *Ks = (bf16 *)smem;                    /* [BKV][LDH] */
    bf16 *Vs = Ks + FA_BKV * LDH;               /* [BKV][LDH] */
    bf16 *Qs = Vs + FA_BKV * LDH;               /* [BQ][LDH] */
    bf16 *dOs = Qs + FA_BQ * LDH;               /* [BQ][LDH] */
    float *STs = (float *)(dOs + FA_BQ * LDH);  /* [BKV][LDT] scores, transposed (key rows) */
    float *dPTs = STs + FA_BKV * LDT;           /* [BKV][LDT] V dO^T */
    bf16 *PTs = (bf16 *)(dPTs + FA_BKV * LDT);  /* [BKV][LDPT] */
    bf16 *dSTs = PTs + FA_BKV * LDPT;           /* [BKV][LDPT] */
    float *lse_s = (float *)(dSTs + FA_BKV * LDPT), *D_s = lse_s + FA_BQ; /* [BQ] each */
    int *seg_s = (int *)(D_s + FA_BQ);                                     /* [BQ] */
    const int k0 = blockIdx.x * FA_BKV, g = blockIdx.y, b = blockIdx.z, group = nh / nkv;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t qs = (size_t)nh * HD, ks = (size_t)nkv * HD;
    const size_t koff = ((size_t)b * T * nkv + g) * HD;

    load_tile<HD>(Ks, k + koff + (size_t)k0 * ks, ks, FA_BKV, min(FA_BKV, T - k0));
    load_tile<HD>(Vs, v + koff + (size_t)k0 * ks, ks, FA_BKV, min(FA_BKV, T - k0));
    const bf16 *Kw = Ks + warp * 16 * LDH, *Vw = Vs + warp * 16 * LDH;
    float *STw = STs + warp * 16 * LDT, *dPTw = dPTs + warp * 16 * LDT;
    bf16 *PTw = PTs + warp * 16 * LDPT, *dSTw = dSTs + warp * 16 * LDPT;
    frag_c dk_acc[HD / 16], dv_acc[HD / 16];
#pragma unroll
    for (int n = 0; n < HD / 16; n++) wmma::fill_fragment(dk_acc[n], 0.0f), wmma::fill_fragment(dv_acc[n], 0.0f);

    for (int hh = 0; hh < group; hh++) {
        const int h = g * group + hh;
        const size_t qoff = ((size_t)b * T * nh + h) * HD, row_at = ((size_t)b * nh + h) * T;
        for (int i0 = k0; i0 < T; i0 += FA_BQ) { /* causal: queries i >= k0 (k0 is a multiple of BQ) */
            /* segments never restart backwards: once a query tile's first row
             * starts past the block's last key, no later query sees the block */
            if (seg && seg[(size_t)b * T + i0] > min(T, k0 + FA_BKV) - 1) break;
            __syncthreads();
            load_tile<HD>(Qs, q + qoff + (size_t)i0 * qs, qs, FA_BQ, min(FA_BQ, T - i0));
            load_tile<HD>(dOs, dout + qoff + (size_t)i0 * qs, qs, FA_BQ, min(FA_BQ, T - i0));
            if (threadIdx.x < FA_BQ) {
                int i = i0 + threadIdx.x;
                lse_s[threadIdx.x] = i < T ? lse[row_at + i] : 0.0f;
                D_s[threadIdx.x] = i < T ? Drow[row_at + i] : 0.0f;
                seg_s[threadIdx.x] = seg && i < T ? seg[(size_t)b * T + i] : 0;
            }
            __syncthreads();
            warp_gemm_abt<HD, FA_BQ / 16>(STw, LDT, Kw, LDH, Qs, LDH);
            warp_gemm_abt<HD, FA_BQ / 16>(dPTw, LDT, Vw, LDH, dOs, LDH);
            __syncwarp();
#pragma unroll
            for (int r = 0; r < 16; r++) {
                int j = k0 + warp * 16 + r, i = i0 + lane;
                float p = 0.0f, ds = 0.0f;
                if (j <= i && i < T && j < T && j >= seg_s[lane]) {
                    p = __expf(STw[r * LDT + lane] * scale - lse_s[lane]);
                    ds = p * (dPTw[r * LDT + lane] - D_s[lane]) * scale;
                }
                PTw[r * LDPT + lane] = __float2bfloat16_rn(p);
                dSTw[r * LDPT + lane] = __float2bfloat16_rn(ds);
            }
            __syncwarp();
            warp_gemm_ab_acc<FA_BQ, HD / 16>(dv_acc, PTw, LDPT, dOs, LDH);
            warp_gemm_ab_acc<FA_BQ, HD / 16>(dk_acc, dSTw, LDPT, Qs, LDH);
        }
    }
    warp_store_rows<HD / 16>(dk + koff, ks, k0 + warp * 16, T, dk_acc, STw, LDT);
    warp_store_rows<HD / 16>(dv + koff, ks, k0 + warp * 16, T, dv_acc, STw, LDT);
}

#endif
