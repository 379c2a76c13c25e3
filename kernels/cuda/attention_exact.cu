/* kernels/cuda/attention_exact.cu: segmented causal GQA attention (query i sees
 * keys [seg_i, i], see kernels.h) in exact fp32, one
 * block per query row (the f32 compute mode, for checking against the CPU;
 * also the fallback for head sizes the flash kernels do not handle).
 * Slow at long sequences: bf16 compute uses flash_attention.cu. Every output
 * element has one writer that adds its terms in a fixed order (no atomics),
 * so the results are the same bits on every run, as resume needs. */
#include "cuda_common.cuh"


/* forward: one block per (b, h, i). The row's scores s_j (seg_i <= j <= i)
 * sit in shared memory (as many floats as the longest segment has rows:
 * the reserved plan's T), so the [T, T] matrix is never stored:
 *   p_j = exp(s_j - lse),  o[d] = sum_j p_j v_j[d]  (a thread per d)
 * backward, in two kernels:
 *   dq:    one block per (b, h, i): dp_j = do . v_j, D = sum_j p_j dp_j (saved
 *          per row), ds_j = p_j (dp_j - D) scale, dq[d] = sum_j ds_j k_j[d]
 *   dk,dv: one block per (b, g, j) key row: over the group's heads and the
 *          queries i >= j of the key's segment (seg_i <= j: they are
 *          contiguous, so the loop stops at the first query past it) in tiles
 *          of a block's threads, p_ij and ds_ij are
 *          recomputed from lse and D, then dk_j[d] += sum_i ds_ij q_i[d] and
 *          dv_j[d] += sum_i p_ij do_i[d], thread d adding in order of i */
__device__ static float dot_dev(const float *a, const float *b, size_t n) {
    float s = 0.0f;
    for (size_t d = 0; d < n; d++) s += a[d] * b[d];
    return s;
}

__device__ static inline int seg_start(const int32_t *seg, size_t b, size_t T, size_t i) {
    return seg ? seg[b * T + i] : 0;
}

__global__ static void attention_fwd_kernel(float *out, float *lse, const float *q, const float *k, const float *v,
                                            const int32_t *seg, size_t T, size_t keys, size_t nh, size_t nkv,
                                            size_t hd, float scale) {
    ZK_DYNAMIC_SMEM(smem);
    float *p = (float *)smem; /* [keys]: p[j - j0] for the keys j0 .. i */
    size_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (nh / nkv), j0 = (size_t)seg_start(seg, b, T, i);
    const float *qi = q + ((b * T + i) * nh + h) * hd;
    if (i + 1 - j0 > keys) { /* a segment longer than the plan (kernels.h): NaN, not a write past p */
        for (size_t d = threadIdx.x; d < hd; d += blockDim.x) out[((b * T + i) * nh + h) * hd + d] = NAN;
        return;
    }
    float m = -INFINITY;
    for (size_t j = j0 + threadIdx.x; j <= i; j += blockDim.x) {
        p[j - j0] = scale * dot_dev(qi, k + ((b * T + j) * nkv + g) * hd, hd);
        m = fmaxf(m, p[j - j0]);
    }
    m = block_max(m);
    double sum = 0.0;
    for (size_t j = j0 + threadIdx.x; j <= i; j += blockDim.x) {
        p[j - j0] = expf(p[j - j0] - m);
        sum += p[j - j0];
    }
    sum = block_sum(sum); /* also a barrier: every p[j] is written */
    float inv = (float)(1.0 / sum);
    if (threadIdx.x == 0) lse[(b * nh + h) * T + i] = m + (float)log(sum);
    float *oi = out + ((b * T + i) * nh + h) * hd;
    for (size_t d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (size_t j = j0; j <= i; j++) acc += p[j - j0] * v[((b * T + j) * nkv + g) * hd + d];
        oi[d] = acc * inv;
    }
}

__global__ static void attention_bwd_dq_kernel(float *dq, float *Drow, const float *dout, const float *lse,
                                               const float *q, const float *k, const float *v, const int32_t *seg,
                                               size_t T, size_t keys, size_t nh, size_t nkv, size_t hd, float scale) {
    ZK_DYNAMIC_SMEM(smem);
    float *shm = (float *)smem; /* p [keys] then ds [keys]: p[j - j0] for the keys j0 .. i of a segment */
    float *p = shm, *ds = shm + keys;
    size_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (nh / nkv), j0 = (size_t)seg_start(seg, b, T, i);
    size_t qrow = ((b * T + i) * nh + h) * hd;
    const float *qi = q + qrow, *doi = dout + qrow;
    if (i + 1 - j0 > keys) { /* a segment longer than the plan (kernels.h): NaN, not a write past p */
        for (size_t d = threadIdx.x; d < hd; d += blockDim.x) dq[qrow + d] = NAN;
        return;
    }
    float l = lse[(b * nh + h) * T + i];
    double D = 0.0;
    for (size_t j = j0 + threadIdx.x; j <= i; j += blockDim.x) {
        size_t kv = ((b * T + j) * nkv + g) * hd;
        p[j - j0] = expf(scale * dot_dev(qi, k + kv, hd) - l);
        ds[j - j0] = dot_dev(doi, v + kv, hd); /* dp for now */
        D += (double)p[j - j0] * ds[j - j0];
    }
    D = block_sum(D);
    if (threadIdx.x == 0) Drow[(b * nh + h) * T + i] = (float)D;
    for (size_t j = j0 + threadIdx.x; j <= i; j += blockDim.x) ds[j - j0] = p[j - j0] * (ds[j - j0] - (float)D) * scale;
    __syncthreads();
    for (size_t d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (size_t j = j0; j <= i; j++) acc += ds[j - j0] * k[((b * T + j) * nkv + g) * hd + d];
        dq[qrow + d] = acc;
    }
}

#define EXACT_BWD_THREADS 128

__global__ static void attention_bwd_dkv_kernel(float *dk, float *dv, const float *dout, const float *lse,
                                                const float *Drow, const float *q, const float *k, const float *v,
                                                const int32_t *seg, size_t T, size_t nh, size_t nkv, size_t hd,
                                                float scale) {
    __shared__ float p[EXACT_BWD_THREADS], ds[EXACT_BWD_THREADS];
    size_t j = blockIdx.x, g = blockIdx.y, b = blockIdx.z, group = nh / nkv;
    size_t kv = ((b * T + j) * nkv + g) * hd;
    const float *kj = k + kv, *vj = v + kv;
    /* the queries that see key j: i in [j, end), where end is the first row of
     * the next segment (seg_i > j there and after) */
    size_t end = j + 1;
    while (end < T && (size_t)seg_start(seg, b, T, end) <= j) end++;
    for (size_t h = g * group; h < (g + 1) * group; h++)
        for (size_t i0 = j; i0 < end; i0 += blockDim.x) {
            size_t i = i0 + threadIdx.x;
            if (i < end) { /* p_ij and ds_ij of this thread's query */
                size_t qrow = ((b * T + i) * nh + h) * hd;
                float pij = expf(scale * dot_dev(q + qrow, kj, hd) - lse[(b * nh + h) * T + i]);
                p[threadIdx.x] = pij;
                ds[threadIdx.x] = pij * (dot_dev(dout + qrow, vj, hd) - Drow[(b * nh + h) * T + i]) * scale;
            }
            __syncthreads();
            size_t n = end - i0 < blockDim.x ? end - i0 : blockDim.x;
            for (size_t d = threadIdx.x; d < hd; d += blockDim.x) {
                float ak = dk[kv + d], av = dv[kv + d];
                for (size_t t = 0; t < n; t++) {
                    size_t qrow = ((b * T + i0 + t) * nh + h) * hd;
                    ak += ds[t] * q[qrow + d];
                    av += p[t] * dout[qrow + d];
                }
                dk[kv + d] = ak;
                dv[kv + d] = av;
            }
            __syncthreads();
        }
}

/* the most keys a query sees: its segment's rows, at most T and at most the
 * reserved plan's T (kernels.h; a batch laid end to end passes a longer T) */
static size_t segment_bound(zk_backend *be, size_t T) {
    size_t s = ctx_of(be)->max_segment;
    return s && s < T ? s : T;
}

void cu_attention_exact_fwd(zk_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                            const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv, size_t hd) {
    dim3 grid((unsigned)T, (unsigned)nh, (unsigned)B);
    size_t keys = segment_bound(be, T), smem = keys * sizeof(float);
    if (!allow_smem(be, (const void *)attention_fwd_kernel, smem)) return;
    ZK_LAUNCH(attention_fwd_kernel, grid, 128, smem)((float *)out, lse, (const float *)q, (const float *)k, (const float *)v, seg,
                                              T, keys, nh, nkv, hd, 1.0f / sqrtf((float)hd));
    CUDA_CHECK(be, cudaGetLastError());
}

void cu_attention_exact_bwd(zk_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *out,
                            const float *lse, const void *q, const void *k, const void *v, const int32_t *seg, size_t B,
                            size_t T, size_t nh, size_t nkv, size_t hd) {
    (void)out;
    float *Drow = (float *)scratch(be, SCRATCH_ATT_D, B * nh * T * sizeof(float)); /* [B, nh, T] */
    if (!Drow) return;
    float scale = 1.0f / sqrtf((float)hd);
    dim3 grid((unsigned)T, (unsigned)nh, (unsigned)B);
    size_t keys = segment_bound(be, T), smem = 2 * keys * sizeof(float);
    if (!allow_smem(be, (const void *)attention_bwd_dq_kernel, smem)) return;
    ZK_LAUNCH(attention_bwd_dq_kernel, grid, 128, smem)((float *)dq, Drow, (const float *)dout, lse, (const float *)q,
                                                        (const float *)k, (const float *)v, seg, T, keys, nh, nkv, hd,
                                                        scale);
    CUDA_CHECK(be, cudaGetLastError());
    CUDA_CHECK(be, cudaMemset(dk, 0, B * T * nkv * hd * sizeof(float)));
    CUDA_CHECK(be, cudaMemset(dv, 0, B * T * nkv * hd * sizeof(float)));
    dim3 grid2((unsigned)T, (unsigned)nkv, (unsigned)B);
    ZK_LAUNCH(attention_bwd_dkv_kernel, grid2, EXACT_BWD_THREADS, 0)((float *)dk, (float *)dv, (const float *)dout, lse,
                                                                     Drow, (const float *)q, (const float *)k,
                                                                     (const float *)v, seg, T, nh, nkv, hd, scale);
    CUDA_CHECK(be, cudaGetLastError());
}

/* ---------------- generation: new query rows over a KV cache ---------------- */

/* each new row's k or v [n, kvd] (fp32) into its slot of the pages, in
 * their precision (bf16 rounded to nearest even) */
__global__ static void page_store_kernel(void *pages, const float *src, const int32_t *pos, const int32_t *table_of,
                                         const int32_t *tables, size_t n, size_t kvd, size_t page_rows, int bf16) {
    size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= n * kvd) return;
    size_t i = e / kvd, d = e % kvd, j = (size_t)pos[i];
    size_t at = ((size_t)tables[table_of[i] + j / page_rows] * page_rows + j % page_rows) * kvd + d;
    if (bf16) ((__nv_bfloat16 *)pages)[at] = __float2bfloat16_rn(src[e]);
    else ((float *)pages)[at] = src[e];
}

__device__ static inline float cache_at(const void *c, int bf16, size_t i) {
    return bf16 ? __bfloat162float(((const __nv_bfloat16 *)c)[i]) : ((const float *)c)[i];
}

__device__ static inline float round_if(int bf16, float x) {
    return bf16 ? __bfloat162float(__float2bfloat16_rn(x)) : x;
}

/* one block per (query row i, head h): scores of the pos[i] + 1 keys it
 * sees (through its page table) into p, their softmax (sum in double, as
 * the CPU does), then each thread one output element at a time; in bf16, q
 * and the probabilities are rounded to bf16 before they multiply, as on the
 * CPU */
__global__ static void paged_attention_kernel(float *out, const float *q, const void *k, const void *v, float *p_all,
                                              const int32_t *pos, const int32_t *table_of, const int32_t *tables,
                                              size_t page_rows, int nh, int nkv, int hd, size_t keys_cap, float scale,
                                              int bf16) {
    int i = (int)(blockIdx.x / nh), h = (int)(blockIdx.x % nh), kh = h / (nh / nkv);
    size_t keys = (size_t)pos[i] + 1;
    const int32_t *table = tables + table_of[i];
    const float *qi = q + ((size_t)i * nh + h) * hd;
    float *p = p_all + (size_t)blockIdx.x * keys_cap;
    float m = -INFINITY;
    for (size_t j = threadIdx.x; j < keys; j += blockDim.x) {
        size_t kj = (((size_t)table[j / page_rows] * page_rows + j % page_rows) * nkv + kh) * hd;
        float s = 0.0f;
        for (int d = 0; d < hd; d++) s += round_if(bf16, qi[d]) * cache_at(k, bf16, kj + d);
        p[j] = s * scale;
        m = fmaxf(m, p[j]);
    }
    m = block_max(m);
    double sum = 0.0;
    for (size_t j = threadIdx.x; j < keys; j += blockDim.x) sum += (p[j] = expf(p[j] - m));
    float inv = (float)(1.0 / block_sum(sum)); /* block_sum's barriers also publish p */
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (size_t j = 0; j < keys; j++) {
            size_t vj = (((size_t)table[j / page_rows] * page_rows + j % page_rows) * nkv + kh) * hd + d;
            acc += round_if(bf16, p[j] * inv) * cache_at(v, bf16, vj);
        }
        out[((size_t)i * nh + h) * hd + d] = acc;
    }
}

void cu_attention_paged_fwd(zk_backend *be, void *out, const void *q, const void *k_new, const void *v_new,
                            void *k_pages, void *v_pages, const int32_t *pos, const int32_t *table_of,
                            const int32_t *tables, size_t n, size_t keys_max, size_t page_rows, size_t nh,
                            size_t nkv, size_t hd) {
    int bf16 = be->compute == ZEN_BF16;
    size_t kvd = nkv * hd;
    ZK_LAUNCH(page_store_kernel, blocks_for(n * kvd, 256), 256, 0)(k_pages, (const float *)k_new, pos, table_of,
                                                                   tables, n, kvd, page_rows, bf16);
    ZK_LAUNCH(page_store_kernel, blocks_for(n * kvd, 256), 256, 0)(v_pages, (const float *)v_new, pos, table_of,
                                                                   tables, n, kvd, page_rows, bf16);
    CUDA_CHECK(be, cudaGetLastError());
    size_t keys_cap = keys_max; /* each row sees at most its position + 1 keys */
    float *p = (float *)scratch(be, SCRATCH_CACHE_SCORES, n * nh * keys_cap * sizeof(float));
    if (!p) return;
    ZK_LAUNCH(paged_attention_kernel, (unsigned)(n * nh), 128, 0)((float *)out, (const float *)q, k_pages, v_pages, p,
                                                                  pos, table_of, tables, page_rows, (int)nh, (int)nkv,
                                                                  (int)hd, keys_cap, 1.0f / sqrtf((float)hd), bf16);
    CUDA_CHECK(be, cudaGetLastError());
}
