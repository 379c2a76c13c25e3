/* kernels/cpu/attention_cpu.c: segmented causal grouped-query attention on
 * sgemm, a tile of query rows at a time, never storing the [T, T]
 * probabilities: the forward saves each row's log-sum-exp and the backward
 * recomputes p = exp(s - lse).
 *
 * Query i sees the keys [seg_i, i] (seg_i the first row of its document in the
 * sequence, non-decreasing in i). For query head h (kv head g = h / (nh/nkv))
 * and a tile of queries [i0, i1) inside one segment (a tile ends where a
 * segment does), keys [k0, i1) with k0 = seg_{i0} are the only ones its rows
 * may see (keys of earlier documents are skipped):
 *   S = scale * Q[i0:i1] K[k0:i1]^T,  P = softmax over seg_i <= j <= i,
 *   O[i0:i1] = P V[k0:i1]
 * backward, with D_i = sum_j P_ij dP_ij:
 *   dP = dO V^T,  dS = P (dP - D) scale,
 *   dQ[i0:i1] = dS K,  dK[k0:i1] += dS^T Q[i0:i1],  dV[k0:i1] += P^T dO[i0:i1]
 *
 * Layouts: q, out [B, T, nh, hd]; k, v [B, T, nkv, hd]; lse [B, nh, T]. One
 * head's rows are strided views (lda = nh*hd or nkv*hd), so no copies are made.
 * Each thread takes its tiles from one reserved scratch buffer.
 * Threads split (b, h) in the forward and (b, g) in the backward (the query
 * heads of a group are the only writers of its dK, dV); sgemm called inside
 * the parallel region runs single-threaded (OpenBLAS's OpenMP build), so the
 * results do not depend on the thread count. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "fast_exp.h"

#define QUERY_TILE CPU_ATTN_TILE

/* the first key query i of sequence b may see */
static inline size_t seg_of(const int32_t *seg, size_t b, size_t T, size_t i) {
    return seg ? (size_t)seg[b * T + i] : 0;
}

/* rows of the query tile that starts at i0: at most QUERY_TILE and none past
 * the end of i0's segment, so a tile never computes scores against keys of
 * an earlier document that only its first rows may see */
static inline size_t tile_rows(const int32_t *seg, size_t b, size_t T, size_t i0) {
    size_t end = T - i0 < QUERY_TILE ? T : i0 + QUERY_TILE;
    for (size_t i = i0 + 1; seg && i < end; i++)
        if (seg[b * T + i] != seg[b * T + i0]) return i - i0;
    return end - i0;
}

/* P[rows, nk] = softmax of S over the keys each row sees: row r is query
 * i0 + r, column c key k0 + c, and the row sees columns [first_r, i0 + r - k0];
 * writes lse for each row */
static void segment_softmax(float *P, size_t rows, size_t nk, size_t i0, size_t k0, const int32_t *seg, size_t b,
                            size_t T, float *lse_out) {
    for (size_t r = 0; r < rows; r++) {
        float *p = P + r * nk;
        size_t first = seg_of(seg, b, T, i0 + r) - k0, last = i0 + r - k0 + 1; /* columns [first, last) */
        float m = -INFINITY;
        for (size_t j = first; j < last; j++) m = p[j] > m ? p[j] : m;
        for (size_t j = first; j < last; j++) p[j] = zk_expf(p[j] - m);
        float sum = zk_sum(p + first, last - first);
        float inv = 1.0f / sum;
        for (size_t j = first; j < last; j++) p[j] *= inv;
        for (size_t j = 0; j < first; j++) p[j] = 0.0f;
        for (size_t j = last; j < nk; j++) p[j] = 0.0f;
        lse_out[r] = m + logf(sum);
    }
}

void cpu_attention_fwd(zk_backend *be, void *out_, float *lse, const void *q_, const void *k_,
                       const void *v_, const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv, size_t hd) {
    float *out = out_;
    const float *q = q_, *k = k_, *v = v_;
    size_t group = nh / nkv, qs = nh * hd, ks = nkv * hd; /* row strides */
    float scale = 1.0f / sqrtf((float)hd);
    int threads = omp_get_max_threads();
    float *tiles = cpu_scratch(be, CPU_SCRATCH_ATTN, (size_t)threads * 2 * QUERY_TILE * T); /* [threads, 2, tile, T] */
    if (!tiles) return;
#pragma omp parallel num_threads(threads)
    {
        float *S = tiles + (size_t)omp_get_thread_num() * 2 * QUERY_TILE * T; /* [tile, T] scores, then probabilities */
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (size_t b = 0; b < B; b++)
            for (size_t h = 0; h < nh; h++) {
                const float *qh = q + b * T * qs + h * hd;
                const float *kg = k + b * T * ks + (h / group) * hd;
                const float *vg = v + b * T * ks + (h / group) * hd;
                float *oh = out + b * T * qs + h * hd;
                for (size_t i0 = 0, rows; i0 < T; i0 += rows) {
                    rows = tile_rows(seg, b, T, i0);
                    size_t k0 = seg_of(seg, b, T, i0), nk = i0 + rows - k0;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)nk, (int)hd, scale,
                                qh + i0 * qs, (int)qs, kg + k0 * ks, (int)ks, 0.0f, S, (int)nk);
                    segment_softmax(S, rows, nk, i0, k0, seg, b, T, lse + (b * nh + h) * T + i0);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)hd, (int)nk, 1.0f, S,
                                (int)nk, vg + k0 * ks, (int)ks, 0.0f, oh + i0 * qs, (int)qs);
                }
            }
    }
}

void cpu_attention_bwd(zk_backend *be, void *dq_, void *dk_, void *dv_, const void *dout_,
                       const void *out_, const float *lse, const void *q_, const void *k_,
                       const void *v_, const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv, size_t hd) {
    (void)out_; /* D_i is formed from P and dP: sum_j P_ij dP_ij = dO_i . O_i */
    float *dq = dq_, *dk = dk_, *dv = dv_;
    const float *dout = dout_, *q = q_, *k = k_, *v = v_;
    size_t group = nh / nkv, qs = nh * hd, ks = nkv * hd;
    float scale = 1.0f / sqrtf((float)hd);
    int threads = omp_get_max_threads();
    float *tiles = cpu_scratch(be, CPU_SCRATCH_ATTN, (size_t)threads * 2 * QUERY_TILE * T); /* [threads, 2, tile, T] */
    if (!tiles) return;
#pragma omp parallel num_threads(threads)
    {
        float *P = tiles + (size_t)omp_get_thread_num() * 2 * QUERY_TILE * T; /* [tile, T] */
        float *dP = P + QUERY_TILE * T;                                         /* [tile, T] dP, then dS */
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (size_t b = 0; b < B; b++)
            for (size_t g = 0; g < nkv; g++) {
                const float *kg = k + b * T * ks + g * hd, *vg = v + b * T * ks + g * hd;
                float *dkg = dk + b * T * ks + g * hd, *dvg = dv + b * T * ks + g * hd;
                for (size_t j = 0; j < T; j++) {
                    memset(dkg + j * ks, 0, hd * sizeof(float));
                    memset(dvg + j * ks, 0, hd * sizeof(float));
                }
                for (size_t h = g * group; h < (g + 1) * group; h++) {
                    const float *qh = q + b * T * qs + h * hd, *doh = dout + b * T * qs + h * hd;
                    float *dqh = dq + b * T * qs + h * hd;
                    const float *lse_h = lse + (b * nh + h) * T;
                    for (size_t i0 = 0, rows; i0 < T; i0 += rows) {
                        rows = tile_rows(seg, b, T, i0);
                        size_t k0 = seg_of(seg, b, T, i0), nk = i0 + rows - k0;
                        /* P from the saved log-sum-exp */
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)nk, (int)hd, scale,
                                    qh + i0 * qs, (int)qs, kg + k0 * ks, (int)ks, 0.0f, P, (int)nk);
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)nk, (int)hd, 1.0f,
                                    doh + i0 * qs, (int)qs, vg + k0 * ks, (int)ks, 0.0f, dP, (int)nk);
                        for (size_t r = 0; r < rows; r++) {
                            float *p = P + r * nk, *dp = dP + r * nk;
                            size_t first = seg_of(seg, b, T, i0 + r) - k0, last = i0 + r - k0 + 1;
                            float l = lse_h[i0 + r];
                            for (size_t j = first; j < last; j++) p[j] = zk_expf(p[j] - l);
                            for (size_t j = first; j < last; j++) dp[j] *= p[j]; /* P * dP, summed to D */
                            float D = zk_sum(dp + first, last - first);
                            for (size_t j = first; j < last; j++) dp[j] = dp[j] - p[j] * D;
                            for (size_t j = first; j < last; j++) dp[j] *= scale;
                            for (size_t j = 0; j < first; j++) p[j] = dp[j] = 0.0f;
                            for (size_t j = last; j < nk; j++) p[j] = dp[j] = 0.0f;
                        }
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)hd, (int)nk, 1.0f,
                                    dP, (int)nk, kg + k0 * ks, (int)ks, 0.0f, dqh + i0 * qs, (int)qs);
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)hd, (int)rows, 1.0f, dP,
                                    (int)nk, qh + i0 * qs, (int)qs, 1.0f, dkg + k0 * ks, (int)ks);
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)hd, (int)rows, 1.0f, P,
                                    (int)nk, doh + i0 * qs, (int)qs, 1.0f, dvg + k0 * ks, (int)ks);
                    }
                }
            }
    }
}
