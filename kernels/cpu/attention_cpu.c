/* kernels/cpu/attention_cpu.c: causal grouped-query attention, one query row at a
 * time, never storing the [T, T] probabilities: the forward saves the row's
 * log-sum-exp and the backward recomputes p = exp(s - lse) from q and k.
 *
 *   s_j  = scale * q_i . k_j  (j <= i),   p_j = exp(s_j - lse_i)
 *   o_i  = sum_j p_j v_j
 * backward, with D_i = sum_j p_j (do_i . v_j):
 *   ds_j = p_j (do_i . v_j - D_i)
 *   dq_i = scale * sum_j ds_j k_j,  dk_j += scale * ds_j q_i,  dv_j += p_j do_i
 *
 * Layouts: q, out [B, T, nh, hd]; k, v [B, T, nkv, hd]; lse [B, nh, T].
 * Query head h reads kv head h / (nh / nkv).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

static float dot(const float *a, const float *b, size_t n) {
    float s = 0.0f;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void cpu_attention_fwd(zk_backend *be, void *out_, float *lse, const void *q_, const void *k_,
                       const void *v_, size_t B, size_t T, size_t nh, size_t nkv, size_t hd) {
    (void)be;
    float *out = out_;
    const float *q = q_, *k = k_, *v = v_;
    size_t group = nh / nkv;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel
    {
        float *scores = malloc(T * sizeof(float)); /* [T] one query row */
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (size_t b = 0; b < B; b++) {
            for (size_t h = 0; h < nh; h++) {
                size_t kvh = h / group;
                for (size_t i = 0; i < T; i++) {
                    const float *qi = q + ((b * T + i) * nh + h) * hd;
                    float m = -INFINITY;
                    for (size_t j = 0; j <= i; j++) {
                        scores[j] = scale * dot(qi, k + ((b * T + j) * nkv + kvh) * hd, hd);
                        if (scores[j] > m) m = scores[j];
                    }
                    double sum = 0.0;
                    for (size_t j = 0; j <= i; j++) {
                        scores[j] = expf(scores[j] - m);
                        sum += scores[j];
                    }
                    float inv = (float)(1.0 / sum);
                    float *oi = out + ((b * T + i) * nh + h) * hd;
                    memset(oi, 0, hd * sizeof(float));
                    for (size_t j = 0; j <= i; j++) {
                        const float *vj = v + ((b * T + j) * nkv + kvh) * hd;
                        float p = scores[j] * inv;
                        for (size_t d = 0; d < hd; d++) oi[d] += p * vj[d];
                    }
                    lse[(b * nh + h) * T + i] = m + (float)log(sum);
                }
            }
        }
        free(scores);
    }
}

void cpu_attention_bwd(zk_backend *be, void *dq_, void *dk_, void *dv_, const void *dout_,
                       const void *out_, const float *lse, const void *q_, const void *k_,
                       const void *v_, size_t B, size_t T, size_t nh, size_t nkv, size_t hd) {
    (void)be;
    float *dq = dq_, *dk = dk_, *dv = dv_;
    const float *dout = dout_, *out = out_, *q = q_, *k = k_, *v = v_;
    size_t group = nh / nkv;
    float scale = 1.0f / sqrtf((float)hd);
    /* parallel over (b, kv head): the query heads of one group are the only
     * writers of that kv head's dk, dv rows, so no two threads collide */
#pragma omp parallel
    {
        float *p = malloc(T * sizeof(float));  /* [T] probabilities of one row */
        float *dp = malloc(T * sizeof(float)); /* [T] do_i . v_j */
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (size_t b = 0; b < B; b++) {
            for (size_t kvh = 0; kvh < nkv; kvh++) {
                for (size_t j = 0; j < T; j++) {
                    memset(dk + ((b * T + j) * nkv + kvh) * hd, 0, hd * sizeof(float));
                    memset(dv + ((b * T + j) * nkv + kvh) * hd, 0, hd * sizeof(float));
                }
                for (size_t h = kvh * group; h < (kvh + 1) * group; h++) {
                    for (size_t i = 0; i < T; i++) {
                        size_t qrow = ((b * T + i) * nh + h) * hd;
                        const float *qi = q + qrow, *doi = dout + qrow;
                        float l = lse[(b * nh + h) * T + i];
                        double D = 0.0;
                        for (size_t j = 0; j <= i; j++) {
                            size_t kvrow = ((b * T + j) * nkv + kvh) * hd;
                            p[j] = expf(scale * dot(qi, k + kvrow, hd) - l);
                            dp[j] = dot(doi, v + kvrow, hd);
                            D += (double)p[j] * dp[j];
                        }
                        (void)out; /* D is recomputed from p and dp: sum_j p_j dp_j = do_i . o_i */
                        float *dqi = dq + qrow;
                        memset(dqi, 0, hd * sizeof(float));
                        for (size_t j = 0; j <= i; j++) {
                            size_t kvrow = ((b * T + j) * nkv + kvh) * hd;
                            float ds = p[j] * (dp[j] - (float)D) * scale;
                            const float *kj = k + kvrow;
                            float *dkj = dk + kvrow, *dvj = dv + kvrow;
                            for (size_t d = 0; d < hd; d++) {
                                dqi[d] += ds * kj[d];
                                dkj[d] += ds * qi[d];
                                dvj[d] += p[j] * doi[d];
                            }
                        }
                    }
                }
            }
        }
        free(p);
        free(dp);
    }
}
