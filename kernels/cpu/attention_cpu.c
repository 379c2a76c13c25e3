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
 * The tiles of a call are listed once (attn_tiles); each thread takes its
 * [tile, keys] buffers from one reserved scratch buffer, keys being the
 * longest segment, so a batch laid end to end as one long sequence (B = 1,
 * T = all its rows) needs no more scratch than its longest segment does.
 * Threads split (tile, h) in the forward and (segment, g) in the backward
 * (the query heads of a group are the only writers of its dK, dV rows, and a
 * segment's keys are its own); sgemm called inside the parallel region runs
 * single-threaded (OpenBLAS's OpenMP build), so the results do not depend on
 * the thread count.
 *
 * bf16 compute: the products run on oneDNN with bf16 operands and fp32
 * accumulation, as CUDA's flash attention rounds them: Q, K, V and dO are
 * rounded once per call into bf16 copies, and P and dS per tile before
 * they multiply; the softmax, its scale, lse and D stay fp32. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../../util/error.h"
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

/* One query tile: rows [i0, i0 + rows) of sequence b, all in the segment that
 * starts at k0, so its keys are [k0, i0 + rows). */
typedef struct {
    size_t b, i0, rows, k0;
} attn_tile;

/* The tiles of a call, in order (a segment's tiles are consecutive), and the
 * segments as runs of them: segment s is tiles [first[s], first[s + 1]). */
typedef struct {
    attn_tile *tile;  /* [n_tiles] */
    size_t n_tiles;
    size_t *first;    /* [n_segments + 1] */
    size_t n_segments;
    size_t max_keys;  /* the most keys a tile sees: the longest segment's rows */
} attn_tiles;

static void attn_tiles_free(attn_tiles *t) {
    free(t->tile);
    free(t->first);
}

/* 0, or -1 with the backend's sticky failure set (out of memory). Two passes
 * over the rows: one counts the tiles, the other lists them. */
static int attn_tiles_make(zk_backend *be, attn_tiles *t, const int32_t *seg, size_t B, size_t T) {
    memset(t, 0, sizeof *t);
    size_t n = 0, ns = 0;
    for (size_t b = 0; b < B; b++)
        for (size_t i0 = 0; i0 < T; n++) i0 += tile_rows(seg, b, T, i0);
    t->tile = malloc((n ? n : 1) * sizeof *t->tile);
    t->first = malloc((n + 1) * sizeof *t->first);
    if (!t->tile || !t->first) {
        attn_tiles_free(t);
        zk_set_failed(be, ZEN_ERR_INTERNAL, "out of memory listing the attention tiles of %zu x %zu rows", B, T);
        return -1;
    }
    n = 0;
    for (size_t b = 0; b < B; b++)
        for (size_t i0 = 0, rows; i0 < T; i0 += rows) {
            rows = tile_rows(seg, b, T, i0);
            size_t k0 = seg_of(seg, b, T, i0);
            if (n == 0 || t->tile[n - 1].b != b || t->tile[n - 1].k0 != k0) t->first[ns++] = n;
            t->tile[n++] = (attn_tile){b, i0, rows, k0};
            if (i0 + rows - k0 > t->max_keys) t->max_keys = i0 + rows - k0;
        }
    t->first[ns] = n;
    t->n_tiles = n, t->n_segments = ns;
    return 0;
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

/* The products of a tile, in f32 on sgemm or in bf16 on oneDNN. The bf16
 * operand copies share the layouts of q, k, v and dout. */
typedef struct {
    int bf16;
    const float *q, *k, *v, *dout;          /* fp32 operands */
    const uint16_t *qb, *kb, *vb, *dob;     /* their bf16 copies (bf16 only) */
    const void *ab_t, *ab, *at_b_acc;       /* oneDNN primitives: A B^T, A B, and A^T B accumulated */
    size_t qs, ks;                          /* row strides of q/dout and k/v */
} tile_ops;

size_t cpu_attention_bf16_elems(size_t N, size_t keys, size_t q_width, size_t kv_width) {
    size_t halves = 2 * N * q_width + 2 * N * kv_width +                        /* q, dout; k, v */
                    (size_t)omp_get_max_threads() * 2 * CPU_ATTN_TILE * keys;  /* each thread's P and dS */
    return (halves + 1) / 2;
}

/* the bf16 copies of q, k, v (and dout, if given) and the primitives; 0, or -1 (sticky failure set) */
static int tile_ops_init(zk_backend *be, tile_ops *ops, const float *q, const float *k, const float *v,
                         const float *dout, size_t N, size_t keys, size_t qs, size_t ks, uint16_t **tiles) {
    memset(ops, 0, sizeof *ops);
    ops->q = q, ops->k = k, ops->v = v, ops->dout = dout, ops->qs = qs, ops->ks = ks;
    if (be->compute != ZEN_BF16) return 0;
    ops->bf16 = 1;
    uint16_t *buf = cpu_scratch_bf16(be, CPU_SCRATCH_ATTN_BF16, 2 * cpu_attention_bf16_elems(N, keys, qs, ks));
    if (!buf) return -1;
    uint16_t *qb = buf, *dob = qb + N * qs, *kb = dob + N * qs, *vb = kb + N * ks;
    cpu_round_bf16(qb, q, N * qs);
    cpu_round_bf16(kb, k, N * ks);
    cpu_round_bf16(vb, v, N * ks);
    if (dout) cpu_round_bf16(dob, dout, N * qs);
    ops->qb = qb, ops->kb = kb, ops->vb = vb, ops->dob = dob;
    *tiles = vb + N * ks; /* [threads, 2, tile, keys] */
    ops->ab_t = cpu_bf16_tile_gemm_prepare(be, 0, 1, 0);
    ops->ab = cpu_bf16_tile_gemm_prepare(be, 0, 0, 0);
    ops->at_b_acc = cpu_bf16_tile_gemm_prepare(be, 1, 0, 1);
    return ops->ab_t && ops->ab && ops->at_b_acc ? 0 : -1;
}

/* S[rows, nk] = scale * X[i0:i0+rows] Y[k0:k0+nk]^T for X, Y = (q, k) or (dout, v) */
static void product_abt(zk_backend *be, const tile_ops *o, int dout_v, float scale, size_t rows, size_t nk, size_t hd,
                        size_t xoff, size_t yoff, float *S) {
    if (!o->bf16) {
        const float *X = dout_v ? o->dout : o->q, *Y = dout_v ? o->v : o->k;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)nk, (int)hd, scale, X + xoff, (int)o->qs,
                    Y + yoff, (int)o->ks, 0.0f, S, (int)nk);
        return;
    }
    const uint16_t *X = dout_v ? o->dob : o->qb, *Y = dout_v ? o->vb : o->kb;
    cpu_bf16_tile_gemm(be, o->ab_t, rows, nk, hd, X + xoff, o->qs, Y + yoff, o->ks, S, nk);
    if (scale != 1.0f)
        for (size_t i = 0; i < rows * nk; i++) S[i] *= scale;
}

/* OUT[rows, hd] = P[rows, nk] Y[k0:k0+nk] for Y = v (the output) or k (dQ);
 * Pb: a bf16 tile for P's rounding (bf16 only) */
static void product_ab(zk_backend *be, const tile_ops *o, int use_k, const float *P, uint16_t *Pb, size_t rows,
                       size_t nk, size_t hd, size_t yoff, float *out) {
    if (!o->bf16) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)hd, (int)nk, 1.0f, P, (int)nk,
                    (use_k ? o->k : o->v) + yoff, (int)o->ks, 0.0f, out, (int)o->qs);
        return;
    }
    for (size_t i = 0; i < rows * nk; i++) Pb[i] = zen_f32_to_bf16(P[i]);
    cpu_bf16_tile_gemm(be, o->ab, rows, hd, nk, Pb, nk, (use_k ? o->kb : o->vb) + yoff, o->ks, out, o->qs);
}

/* D[nk, hd] += P[rows, nk]^T X[i0:i0+rows] for X = q (dK) or dout (dV);
 * Pb already holds P rounded (bf16 only) */
static void product_atb_acc(zk_backend *be, const tile_ops *o, int use_dout, const float *P, const uint16_t *Pb,
                            size_t rows, size_t nk, size_t hd, size_t xoff, float *D) {
    if (!o->bf16) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)hd, (int)rows, 1.0f, P, (int)nk,
                    (use_dout ? o->dout : o->q) + xoff, (int)o->qs, 1.0f, D, (int)o->ks);
        return;
    }
    cpu_bf16_tile_gemm(be, o->at_b_acc, nk, hd, rows, Pb, nk, (use_dout ? o->dob : o->qb) + xoff, o->qs, D, o->ks);
}

void cpu_attention_fwd(zk_backend *be, void *out_, float *lse, const void *q_, const void *k_,
                       const void *v_, const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv, size_t hd) {
    float *out = out_;
    size_t group = nh / nkv, qs = nh * hd, ks = nkv * hd; /* row strides */
    float scale = 1.0f / sqrtf((float)hd);
    int threads = omp_get_max_threads();
    attn_tiles tl;
    if (attn_tiles_make(be, &tl, seg, B, T)) return;
    size_t W = tl.max_keys; /* columns of a thread's score tile */
    float *tiles = cpu_scratch(be, CPU_SCRATCH_ATTN, (size_t)threads * 2 * QUERY_TILE * W); /* [threads, 2, tile, W] */
    tile_ops ops;
    uint16_t *btiles = NULL; /* [threads, 2, tile, W] bf16 */
    if (!tiles || tile_ops_init(be, &ops, q_, k_, v_, NULL, B * T, W, qs, ks, &btiles)) {
        attn_tiles_free(&tl);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        int me = omp_get_thread_num();
        float *S = tiles + (size_t)me * 2 * QUERY_TILE * W; /* [tile, nk] scores, then probabilities */
        uint16_t *Pb = btiles ? btiles + (size_t)me * 2 * QUERY_TILE * W : NULL;
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (size_t ti = 0; ti < tl.n_tiles; ti++)
            for (size_t h = 0; h < nh; h++) {
                const attn_tile *t = &tl.tile[ti];
                size_t b = t->b, i0 = t->i0, rows = t->rows, k0 = t->k0, nk = i0 + rows - k0;
                size_t qoff = b * T * qs + h * hd, kvoff = b * T * ks + (h / group) * hd;
                product_abt(be, &ops, 0, scale, rows, nk, hd, qoff + i0 * qs, kvoff + k0 * ks, S);
                segment_softmax(S, rows, nk, i0, k0, seg, b, T, lse + (b * nh + h) * T + i0);
                product_ab(be, &ops, 0, S, Pb, rows, nk, hd, kvoff + k0 * ks, out + qoff + i0 * qs);
            }
    }
    attn_tiles_free(&tl);
}

void cpu_attention_bwd(zk_backend *be, void *dq_, void *dk_, void *dv_, const void *dout_,
                       const void *out_, const float *lse, const void *q_, const void *k_,
                       const void *v_, const int32_t *seg, size_t B, size_t T, size_t nh, size_t nkv, size_t hd) {
    (void)out_; /* D_i is formed from P and dP: sum_j P_ij dP_ij = dO_i . O_i */
    float *dq = dq_, *dk = dk_, *dv = dv_;
    size_t group = nh / nkv, qs = nh * hd, ks = nkv * hd;
    float scale = 1.0f / sqrtf((float)hd);
    int threads = omp_get_max_threads();
    attn_tiles tl;
    if (attn_tiles_make(be, &tl, seg, B, T)) return;
    size_t W = tl.max_keys;
    float *tiles = cpu_scratch(be, CPU_SCRATCH_ATTN, (size_t)threads * 2 * QUERY_TILE * W); /* [threads, 2, tile, W] */
    tile_ops ops;
    uint16_t *btiles = NULL; /* [threads, 2, tile, W] bf16: P and dS rounded */
    if (!tiles || tile_ops_init(be, &ops, q_, k_, v_, dout_, B * T, W, qs, ks, &btiles)) {
        attn_tiles_free(&tl);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        int me = omp_get_thread_num();
        float *P = tiles + (size_t)me * 2 * QUERY_TILE * W; /* [tile, nk] */
        float *dP = P + QUERY_TILE * W;                      /* [tile, nk] dP, then dS */
        uint16_t *Pb = btiles ? btiles + (size_t)me * 2 * QUERY_TILE * W : NULL, *dSb = Pb ? Pb + QUERY_TILE * W : NULL;
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (size_t si = 0; si < tl.n_segments; si++)
            for (size_t g = 0; g < nkv; g++) {
                const attn_tile *first = &tl.tile[tl.first[si]], *end = &tl.tile[tl.first[si + 1]];
                size_t b = first->b, k0 = first->k0, kvoff = b * T * ks + g * hd;
                for (size_t j = k0; j < end[-1].i0 + end[-1].rows; j++) { /* the segment's key rows */
                    memset(dk + kvoff + j * ks, 0, hd * sizeof(float));
                    memset(dv + kvoff + j * ks, 0, hd * sizeof(float));
                }
                for (size_t h = g * group; h < (g + 1) * group; h++) {
                    size_t qoff = b * T * qs + h * hd;
                    const float *lse_h = lse + (b * nh + h) * T;
                    for (const attn_tile *t = first; t < end; t++) {
                        size_t i0 = t->i0, rows = t->rows, nk = i0 + rows - k0;
                        /* P from the saved log-sum-exp; dP = dO V^T */
                        product_abt(be, &ops, 0, scale, rows, nk, hd, qoff + i0 * qs, kvoff + k0 * ks, P);
                        product_abt(be, &ops, 1, 1.0f, rows, nk, hd, qoff + i0 * qs, kvoff + k0 * ks, dP);
                        for (size_t r = 0; r < rows; r++) {
                            float *p = P + r * nk, *dp = dP + r * nk;
                            size_t first_key = seg_of(seg, b, T, i0 + r) - k0, last = i0 + r - k0 + 1;
                            float l = lse_h[i0 + r];
                            for (size_t j = first_key; j < last; j++) p[j] = zk_expf(p[j] - l);
                            for (size_t j = first_key; j < last; j++) dp[j] *= p[j]; /* P * dP, summed to D */
                            float D = zk_sum(dp + first_key, last - first_key);
                            for (size_t j = first_key; j < last; j++) dp[j] = dp[j] - p[j] * D;
                            for (size_t j = first_key; j < last; j++) dp[j] *= scale;
                            for (size_t j = 0; j < first_key; j++) p[j] = dp[j] = 0.0f;
                            for (size_t j = last; j < nk; j++) p[j] = dp[j] = 0.0f;
                        }
                        /* dQ = dS K (dS rounded into dSb), dK += dS^T Q, dV += P^T dO (P rounded into Pb) */
                        product_ab(be, &ops, 1, dP, dSb, rows, nk, hd, kvoff + k0 * ks, dq + qoff + i0 * qs);
                        product_atb_acc(be, &ops, 0, dP, dSb, rows, nk, hd, qoff + i0 * qs, dk + kvoff + k0 * ks);
                        if (ops.bf16)
                            for (size_t i = 0; i < rows * nk; i++) Pb[i] = zen_f32_to_bf16(P[i]);
                        product_atb_acc(be, &ops, 1, P, Pb, rows, nk, hd, qoff + i0 * qs, dv + kvoff + k0 * ks);
                    }
                }
            }
    }
    attn_tiles_free(&tl);
}

/* Generation: the new rows into the cache, in the compute precision (bf16
 * rounded once, here), then each (query row, head): scores against the keys
 * it sees, their softmax (zk_expf, as the training attention's), the
 * weighted values. In bf16 the scores take q rounded to bf16 and the
 * weighted sum the probabilities rounded to bf16, where the training
 * attention rounds them. Each (row, head) is computed on its own in a fixed
 * order, so a row's result does not depend on the rows beside it. */
static inline float round_if(int bf16, float x) { return bf16 ? zen_bf16_round(x) : x; }

#define CACHED_PROMPT_ROWS 8 /* a whole prompt of at least this many rows runs on the training forward */
/* the slot of position j of the sequence whose page table is table */
static inline size_t slot_of(const int32_t *table, size_t j, size_t page_rows) {
    return (size_t)table[j / page_rows] * page_rows + j % page_rows;
}

/* the keys a page at a time: page j0 / page_rows holds keys j0 .. j0 + *n - 1 of
 * the keys, in slots from the returned one on */
static inline size_t page_keys(const int32_t *table, size_t j0, size_t keys, size_t page_rows, size_t *n) {
    *n = keys - j0 < page_rows ? keys - j0 : page_rows;
    return (size_t)table[j0 / page_rows] * page_rows;
}

#define KEY_LANES 16         /* partial sums of a score: one vector of 16 floats */
#define HEAD_DIM_MAX 256     /* heads up to this wide sum their output in a local array (Qwen3: 128) */

/* q . key: 16 partial sums, element d into sum d % 16 (the last piece of an
 * hd that is not a multiple of 16 too), added in a fixed tree */
static inline __attribute__((always_inline)) float dot_key(const float *q, const void *cache, int bf16, size_t at,
                                                           const size_t hd) {
    float acc[KEY_LANES] = {0};
    size_t d = 0;
    if (bf16) {
        const uint16_t *k = (const uint16_t *)cache + at;
        for (; d + KEY_LANES <= hd; d += KEY_LANES)
            for (int l = 0; l < KEY_LANES; l++) acc[l] += q[d + l] * zen_bf16_to_f32(k[d + l]);
        for (; d < hd; d++) acc[d % KEY_LANES] += q[d] * zen_bf16_to_f32(k[d]);
    } else {
        const float *k = (const float *)cache + at;
        for (; d + KEY_LANES <= hd; d += KEY_LANES)
            for (int l = 0; l < KEY_LANES; l++) acc[l] += q[d + l] * k[d + l];
        for (; d < hd; d++) acc[d % KEY_LANES] += q[d] * k[d];
    }
    /* the tree: halves added lane by lane, 16 -> 8 -> 4 -> 2 -> 1 */
    float a8[8], a4[4];
    for (int l = 0; l < 8; l++) a8[l] = acc[l] + acc[l + 8];
    for (int l = 0; l < 4; l++) a4[l] = a8[l] + a8[l + 4];
    return (a4[0] + a4[2]) + (a4[1] + a4[3]);
}

/* one (row, head) of generation's attention: p [keys] scores, then weights;
 * qi [hd] the query (rounded in bf16); o [hd] the output. hd is a constant
 * where the caller can make it one (64, 128), so the output's running sums
 * stay in registers across the keys. */
static inline __attribute__((always_inline)) void
attend(float *o, float *p, const float *qi, const void *k_pages, const void *v_pages, int bf16,
       const int32_t *table, size_t keys, size_t page_rows, size_t nkv, size_t kh, float scale, const size_t hd) {
    float m = -INFINITY;
    for (size_t j0 = 0, n; j0 < keys; j0 += page_rows) { /* key j0 + r sits in slot base + r */
        size_t base = page_keys(table, j0, keys, page_rows, &n);
        for (size_t r = 0; r < n; r++) {
            float s = dot_key(qi, k_pages, bf16, ((base + r) * nkv + kh) * hd, hd) * scale;
            p[j0 + r] = s;
            m = s > m ? s : m;
        }
    }
    for (size_t j = 0; j < keys; j++) p[j] = zk_expf(p[j] - m); /* vectorised */
    double sum = 0.0;
    for (size_t j = 0; j < keys; j++) sum += p[j];
    /* the running sums: in a local array the compiler keeps in registers, or for a head wider than it
     * in o itself */
    float inv = (float)(1.0 / sum), local[HEAD_DIM_MAX], *acc = hd <= HEAD_DIM_MAX ? local : o;
    for (size_t d = 0; d < hd; d++) acc[d] = 0.0f;
    for (size_t j0 = 0, n; j0 < keys; j0 += page_rows) {
        size_t base = page_keys(table, j0, keys, page_rows, &n);
        for (size_t r = 0; r < n; r++) {
            float w = round_if(bf16, p[j0 + r] * inv);
            size_t at = ((base + r) * nkv + kh) * hd;
            if (bf16) {
                const uint16_t *v = (const uint16_t *)v_pages + at;
                for (size_t d = 0; d < hd; d++) acc[d] += w * zen_bf16_to_f32(v[d]);
            } else {
                const float *v = (const float *)v_pages + at;
                for (size_t d = 0; d < hd; d++) acc[d] += w * v[d];
            }
        }
    }
    if (acc != o)
        for (size_t d = 0; d < hd; d++) o[d] = acc[d];
}


void cpu_attention_paged_fwd(zk_backend *be, void *out_, const void *q_, const void *k_new_, const void *v_new_,
                             void *k_pages, void *v_pages, const int32_t *pos, const int32_t *table_of,
                             const int32_t *tables, size_t n, size_t keys_max, size_t page_rows, size_t nh,
                             size_t nkv, size_t hd) {
    float *out = out_;                                   /* [n, nh, hd] */
    const float *q = q_, *k_new = k_new_, *v_new = v_new_; /* q [n, nh, hd]; k_new, v_new [n, nkv, hd] */
    int bf16 = be->compute == ZEN_BF16;                  /* pages [pages, page_rows, nkv, hd]: bf16 or f32 */
    size_t group = nh / nkv, kvd = nkv * hd;
    int one_prompt = n >= CACHED_PROMPT_ROWS;
    for (size_t i = 0; i < n; i++) {
        size_t at = slot_of(tables + table_of[i], (size_t)pos[i], page_rows) * kvd;
        if (bf16) {
            cpu_round_bf16((uint16_t *)k_pages + at, k_new + i * kvd, kvd);
            cpu_round_bf16((uint16_t *)v_pages + at, v_new + i * kvd, kvd);
        } else {
            memcpy((float *)k_pages + at, k_new + i * kvd, kvd * sizeof(float));
            memcpy((float *)v_pages + at, v_new + i * kvd, kvd * sizeof(float));
        }
        one_prompt &= pos[i] == (int32_t)i && table_of[i] == table_of[0];
    }
    if (one_prompt) {
        /* a whole prompt: the training forward's tiles (matrix products
         * over blocks of queries and keys, the same rounding points), not a
         * dot product per query and key */
        float *lse = malloc(nh * n * sizeof(float)); /* [nh, n] unused here */
        if (!lse) {
            zk_set_failed(be, ZEN_ERR_INTERNAL, "out of memory in attention (generation)");
            return;
        }
        cpu_attention_fwd(be, out, lse, q, k_new, v_new, NULL, 1, n, nh, nkv, hd);
        free(lse);
        return;
    }
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel
    {
        float *p = malloc((keys_max + hd) * sizeof(float)); /* [keys] this task's scores, then [hd] its query */
#pragma omp for collapse(2) schedule(static)
        for (size_t i = 0; i < n; i++)
            for (size_t h = 0; h < nh; h++) {
                if (!p) continue;
                const int32_t *table = tables + table_of[i];
                size_t keys = (size_t)pos[i] + 1, kh = h / group;
                float *qi = p + keys_max, *o = out + (i * nh + h) * hd;
                for (size_t d = 0; d < hd; d++) qi[d] = round_if(bf16, q[(i * nh + h) * hd + d]);
                if (hd == 128)
                    attend(o, p, qi, k_pages, v_pages, bf16, table, keys, page_rows, nkv, kh, scale, 128);
                else if (hd == 64)
                    attend(o, p, qi, k_pages, v_pages, bf16, table, keys, page_rows, nkv, kh, scale, 64);
                else
                    attend(o, p, qi, k_pages, v_pages, bf16, table, keys, page_rows, nkv, kh, scale, hd);
            }
        if (!p) zk_set_failed(be, ZEN_ERR_INTERNAL, "out of memory in attention (generation)");
        free(p);
    }
}
