/* kernels/cpu/lora_cpu.c: the LoRA branch on the CPU, in fp32 (both computes).
 *   forward:  u[N,r] = xd A^T;  y[N,out] += scale * u B^T
 *   backward: du = scale * dy B;  dB += scale * dy^T u;  dA += du^T xd;
 *             dx += dropout'(du A)
 * with xd = dropout(x) regenerated from its hash (kernels.h), never stored.
 *
 * Rank r is small (8, 16), so four of the six products read a large matrix
 * (x or dy, [N, in or out]) to make or update a small one ([N, r] or
 * [r, in or out]). OpenBLAS runs those skinny shapes at 12-16 GB/s where
 * this machine reads 32, and the sgemm path also writes and rereads a
 * dropped copy of x and of dx. The fused kernels here read each large
 * matrix once, with the dropout mask made in registers:
 *   - row passes (u = xd A^T, du = scale dy B): each thread owns whole rows,
 *     LORA_ROWS rows at a time, each row's 8 sums per rank in registers;
 *   - column passes (dB, and dA together with dx): each thread owns blocks of
 *     16 columns of dB^T or dA and sums over the rows in order, a chunk of
 *     rows at a time;
 *   - du and dB walk dy chunk by chunk together, so the column pass rereads
 *     from cache what the row pass has just read.
 * y += scale u B^T stays on sgemm, which writes y at the memory's pace.
 * Each fused output has one owner and one fixed order of sums, so its bits do
 * not depend on the thread count; they differ from sgemm's by rounding. The
 * fused kernels need AVX512F/DQ (checked at run time) and r a multiple of 8;
 * otherwise, or with ZEN_LORA_SGEMM=1, the branch runs on sgemm. */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

#define LORA_GROUP CPU_LORA_GROUP /* ranks summed together in registers */
#define LORA_COLS 16       /* columns per block of a column pass (one zmm) */
#define LORA_CHUNK_ROWS 32 /* rows per chunk of a column pass */
#define LORA_ROWS 3        /* rows per step of a row pass (3 x 8 sums fill 24 of 32 zmm) */

/* ---- the sgemm path (r not a multiple of 8, or no AVX512) ---- */

/* xd[N,in] = dropout(x) into a scratch buffer, or x itself without dropout */
static const float *dropped_input(zk_backend *be, const float *x, size_t n, const zk_dropout *drop) {
    if (!drop || drop->p <= 0.0f) return x;
    float *xd = cpu_scratch(be, CPU_SCRATCH_DROP_X, n);
    if (!xd) return NULL;
    float keep_scale = 1.0f / (1.0f - drop->p);
    uint64_t threshold = zk_dropout_threshold(drop->p), seed = drop->seed;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) xd[i] = x[i] * ((float)zk_dropout_keep(seed, i, threshold) * keep_scale);
    return xd;
}

static void lora_fwd_sgemm(zk_backend *be, float *y, float *u, const float *x_, const float *A, const float *B,
                           size_t N, size_t in, size_t out, size_t r, float scale, const zk_dropout *drop) {
    const float *x = dropped_input(be, x_, N * in, drop); /* [N, in] */
    if (!x) return;
    /* u[N,r] = x A^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)r, (int)in, 1.0f, x, (int)in, A, (int)in, 0.0f,
                u, (int)r);
    /* y += scale * u B^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)out, (int)r, scale, u, (int)r, B, (int)r, 1.0f,
                y, (int)out);
}

static void lora_bwd_sgemm(zk_backend *be, float *dx, float *dA, float *dB, float *du, const float *dy,
                           const float *x_, const float *u, const float *A, const float *B, size_t N, size_t in,
                           size_t out, size_t r, float scale, const zk_dropout *drop) {
    const float *x = dropped_input(be, x_, N * in, drop); /* [N, in] the same xd as forward */
    if (!x) return;
    /* du[N,r] = scale * dy B */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)r, (int)out, scale, dy, (int)out, B, (int)r,
                0.0f, du, (int)r);
    /* dB[out,r] += scale * dy^T u */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)r, (int)N, scale, dy, (int)out, u, (int)r,
                1.0f, dB, (int)r);
    /* dA[r,in] += du^T x */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)in, (int)N, 1.0f, du, (int)r, x, (int)in, 1.0f,
                dA, (int)in);
    if (!drop || drop->p <= 0.0f) {
        /* dx[N,in] += du A */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)in, (int)r, 1.0f, du, (int)r, A, (int)in,
                    1.0f, dx, (int)in);
        return;
    }
    /* dxd[N,in] = du A, then dx += dxd through the dropout mask */
    float *dxd = cpu_scratch(be, CPU_SCRATCH_DROP_DX, N * in);
    if (!dxd) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)in, (int)r, 1.0f, du, (int)r, A, (int)in, 0.0f,
                dxd, (int)in);
    float keep_scale = 1.0f / (1.0f - drop->p);
    uint64_t threshold = zk_dropout_threshold(drop->p), seed = drop->seed;
    size_t n = N * in;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) dx[i] += dxd[i] * ((float)zk_dropout_keep(seed, i, threshold) * keep_scale);
}

/* ---- the fused path ---- */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LORA_TARGET __attribute__((target("avx512f,avx512dq")))

/* the dropout of a matrix [rows, ld]: element (n, c) has flat index n*ld + c,
 * as in the sgemm path; on = 0 means no dropout */
typedef struct {
    int on;
    uint64_t seed, threshold;
    float keep_scale;
    size_t ld;
} lora_drop;

/* zk_dropout_keep of 16 consecutive flat indices i..i+15, as a lane mask */
LORA_TARGET static inline __mmask16 keep16(const lora_drop *d, size_t i) {
    const __m512i step = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    __m512i idx[2] = {_mm512_add_epi64(_mm512_set1_epi64((long long)i), step),
                      _mm512_add_epi64(_mm512_set1_epi64((long long)i + 8), step)};
    __mmask8 keep[2];
    for (int h = 0; h < 2; h++) {
        __m512i z = _mm512_add_epi64(_mm512_set1_epi64((long long)d->seed),
                                     _mm512_mullo_epi64(idx[h], _mm512_set1_epi64((long long)0x9e3779b97f4a7c15ull)));
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)),
                               _mm512_set1_epi64((long long)0xbf58476d1ce4e5b9ull));
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)),
                               _mm512_set1_epi64((long long)0x94d049bb133111ebull));
        z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
        keep[h] = _mm512_cmpge_epu64_mask(_mm512_srli_epi64(z, 40), _mm512_set1_epi64((long long)d->threshold));
    }
    return (__mmask16)(keep[0] | ((unsigned)keep[1] << 8));
}

/* the factor each of 16 elements is multiplied by: keep_scale or 0, as the
 * sgemm path's (float)keep * keep_scale */
LORA_TARGET static inline __m512 drop16(const lora_drop *d, size_t n, size_t c) {
    return _mm512_maskz_mov_ps(keep16(d, n * d->ld + c), _mm512_set1_ps(d->keep_scale));
}

/* lanes [0, count) of a 16-lane block */
static inline __mmask16 lanes(size_t count) { return count >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << count) - 1); }

/* Row pass, 8 ranks: Y[n*ldy + k] = scale * sum_c M[n*ldm + c] d(n,c) W[k*ldw + c]
 * for k < 8 and rows [n0, n1): LORA_ROWS rows at a time (each W load serves
 * them all), 16 lanes per rank and row, the lanes summed at the end
 * (_mm512_reduce_add_ps, a fixed order). Whole 16-column blocks load
 * unmasked, the tail block masked. */
LORA_TARGET static inline __attribute__((always_inline)) void
row_pass8_block(const float *const *m_rows, const size_t *row, size_t c, __mmask16 m, const float *W, size_t ldw,
                const lora_drop *d, __m512 acc[LORA_ROWS][LORA_GROUP], const int masked) {
    __m512 v[LORA_ROWS];
    for (int j = 0; j < LORA_ROWS; j++) {
        v[j] = masked ? _mm512_maskz_loadu_ps(m, m_rows[j] + c) : _mm512_loadu_ps(m_rows[j] + c);
        if (d->on) v[j] = _mm512_mul_ps(v[j], drop16(d, row[j], c));
    }
    for (int k = 0; k < LORA_GROUP; k++) {
        __m512 w = masked ? _mm512_maskz_loadu_ps(m, W + k * ldw + c) : _mm512_loadu_ps(W + k * ldw + c);
        for (int j = 0; j < LORA_ROWS; j++) acc[j][k] = _mm512_fmadd_ps(v[j], w, acc[j][k]);
    }
}

LORA_TARGET static void row_pass8(const float *M, size_t ldm, size_t C, const float *W, size_t ldw, float *Y,
                                  size_t ldy, size_t n0, size_t n1, float scale, const lora_drop *d) {
    size_t full = C / 16 * 16;
    for (size_t n = n0; n < n1; n += LORA_ROWS) {
        /* the last rows past n1 repeat row n1-1 (a fixed count of rows keeps
         * the sums in registers) and are not stored */
        size_t row[LORA_ROWS];
        const float *m_rows[LORA_ROWS];
        for (int j = 0; j < LORA_ROWS; j++) {
            row[j] = n + j < n1 ? n + j : n1 - 1;
            m_rows[j] = M + row[j] * ldm;
        }
        __m512 acc[LORA_ROWS][LORA_GROUP];
        for (int j = 0; j < LORA_ROWS; j++)
            for (int k = 0; k < LORA_GROUP; k++) acc[j][k] = _mm512_setzero_ps();
        for (size_t c = 0; c < full; c += 16) row_pass8_block(m_rows, row, c, 0xffff, W, ldw, d, acc, 0);
        if (full < C) row_pass8_block(m_rows, row, full, lanes(C - full), W, ldw, d, acc, 1);
        for (int j = 0; j < LORA_ROWS && n + j < n1; j++)
            for (int k = 0; k < LORA_GROUP; k++) Y[row[j] * ldy + k] = scale * _mm512_reduce_add_ps(acc[j][k]);
    }
}

/* Column pass, 8 ranks, one block of columns [c, c + 16) (lanes m):
 *   G[k*ldg + c..] += sum over rows [n0, n1), in order, of w[n*ldw + k] M[n,c] d(n,c)
 * and, where dX is given, with all r ranks of w and A:
 *   dX[n*ldm + c..] += d(n,c) sum_k w[n*ldw + k] A[k*lda + c..] */
LORA_TARGET static inline __attribute__((always_inline)) void
column_pass8_block(const float *M, size_t ldm, size_t c, __mmask16 m, const float *w, size_t ldw, float *G,
                   size_t ldg, size_t n0, size_t n1, const lora_drop *d, float *dX, const float *A, size_t lda,
                   size_t r, const int masked) {
#define LOAD(p) (masked ? _mm512_maskz_loadu_ps(m, (p)) : _mm512_loadu_ps(p))
    __m512 acc[LORA_GROUP];
    for (int k = 0; k < LORA_GROUP; k++) acc[k] = LOAD(G + k * ldg + c);
    for (size_t n = n0; n < n1; n++) {
        __m512 v = LOAD(M + n * ldm + c);
        __m512 keep = d->on ? drop16(d, n, c) : _mm512_set1_ps(1.0f);
        if (d->on) v = _mm512_mul_ps(v, keep);
        const float *wn = w + n * ldw;
        for (int k = 0; k < LORA_GROUP; k++) acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(wn[k]), v, acc[k]);
        if (dX) {
            __m512 s = _mm512_setzero_ps();
            for (size_t k = 0; k < r; k++) s = _mm512_fmadd_ps(_mm512_set1_ps(wn[k]), LOAD(A + k * lda + c), s);
            float *dxn = dX + n * ldm + c;
            __m512 old = LOAD(dxn);
            __m512 sum = d->on ? _mm512_fmadd_ps(s, keep, old) : _mm512_add_ps(old, s);
            if (masked)
                _mm512_mask_storeu_ps(dxn, m, sum);
            else
                _mm512_storeu_ps(dxn, sum);
        }
    }
    for (int k = 0; k < LORA_GROUP; k++) {
        if (masked)
            _mm512_mask_storeu_ps(G + k * ldg + c, m, acc[k]);
        else
            _mm512_storeu_ps(G + k * ldg + c, acc[k]);
    }
#undef LOAD
}

/* the column pass over block blk of a matrix with C columns */
LORA_TARGET static void column_pass8(const float *M, size_t C, size_t blk, const float *w, size_t ldw, float *G,
                                     size_t n0, size_t n1, const lora_drop *d, float *dX, const float *A, size_t r) {
    size_t c = blk * LORA_COLS;
    if (c + LORA_COLS <= C)
        column_pass8_block(M, C, c, 0xffff, w, ldw, G, C, n0, n1, d, dX, A, C, r, 0);
    else
        column_pass8_block(M, C, c, lanes(C - c), w, ldw, G, C, n0, n1, d, dX, A, C, r, 1);
}

/* Wt[k*cols + c] = W[c*r + k]: B [out, r] as rows of a rank */
static void transpose_rows(float *Wt, const float *W, size_t cols, size_t r) {
#pragma omp parallel for schedule(static) if (cols * r > 65536)
    for (size_t c = 0; c < cols; c++)
        for (size_t k = 0; k < r; k++) Wt[k * cols + c] = W[c * r + k];
}

static lora_drop make_drop(const zk_dropout *drop, size_t ld) {
    lora_drop d = {0, 0, 0, 1.0f, ld};
    if (drop && drop->p > 0.0f) {
        d.on = 1;
        d.seed = drop->seed;
        d.threshold = zk_dropout_threshold(drop->p);
        d.keep_scale = 1.0f / (1.0f - drop->p);
    }
    return d;
}

/* Y[n0:n1, r] = scale * M[n0:n1, C] d W[r, C]^T, the groups of LORA_ROWS
 * rows shared over the threads of the enclosing parallel region */
static void row_pass(const float *M, size_t C, const float *W, float *Y, size_t r, size_t n0, size_t n1, float scale,
                     const lora_drop *d) {
    size_t groups = (n1 - n0 + LORA_ROWS - 1) / LORA_ROWS;
#pragma omp for schedule(static) nowait
    for (size_t q = 0; q < groups; q++) {
        size_t a = n0 + q * LORA_ROWS, b = a + LORA_ROWS < n1 ? a + LORA_ROWS : n1;
        for (size_t g = 0; g < r; g += LORA_GROUP) row_pass8(M, C, C, W + g * C, C, Y + g, r, a, b, scale, d);
    }
}

static void lora_fwd_fused(zk_backend *be, float *y, float *u, const float *x, const float *A, const float *B,
                           size_t N, size_t in, size_t out, size_t r, float scale, const zk_dropout *drop) {
    (void)be;
    lora_drop d = make_drop(drop, in);
    /* u[N,r] = xd A^T */
#pragma omp parallel if (N * in > 65536)
    row_pass(x, in, A, u, r, 0, N, 1.0f, &d);
    /* y += scale * u B^T: sgemm reads and writes y at the memory's pace */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)out, (int)r, scale, u, (int)r, B, (int)r, 1.0f,
                y, (int)out);
}

/* the end of row chunk ch of N rows */
static size_t chunk_end(size_t ch, size_t N) {
    size_t n1 = (ch + 1) * LORA_CHUNK_ROWS;
    return n1 < N ? n1 : N;
}

static void lora_bwd_fused(zk_backend *be, float *dx, float *dA, float *dB, float *du, const float *dy,
                           const float *x, const float *u, const float *A, const float *B, size_t N, size_t in,
                           size_t out, size_t r, float scale, const zk_dropout *drop) {
    /* B^T [r, out], then this call's sums of dB^T [r, out] and dA [r, in] */
    float *Bt = cpu_scratch(be, CPU_SCRATCH_LORA, cpu_lora_scratch_elems(r, in, out));
    if (!Bt) return;
    float *GB = Bt + r * out, *GA = GB + r * out;
    transpose_rows(Bt, B, out, r);
    memset(GB, 0, r * (out + in) * sizeof(float));
    lora_drop none = make_drop(NULL, out), d = make_drop(drop, in);
    size_t chunks = (N + LORA_CHUNK_ROWS - 1) / LORA_CHUNK_ROWS;
    size_t out_blocks = (out + LORA_COLS - 1) / LORA_COLS, in_blocks = (in + LORA_COLS - 1) / LORA_COLS;
#pragma omp parallel if (N * (in + out) > 65536)
    {
        /* du = scale * dy B (row groups) and GB = u^T dy (column blocks), a
         * chunk of dy's rows at a time; a static schedule gives each thread
         * the same rows and columns in every chunk, so no barrier is needed */
        for (size_t ch = 0; ch < chunks; ch++) {
            size_t n0 = ch * LORA_CHUNK_ROWS, n1 = chunk_end(ch, N);
            row_pass(dy, out, Bt, du, r, n0, n1, scale, &none);
#pragma omp for schedule(static) nowait
            for (size_t blk = 0; blk < out_blocks; blk++)
                for (size_t g = 0; g < r; g += LORA_GROUP)
                    column_pass8(dy, out, blk, u + g, r, GB + g * out, n0, n1, &none, NULL, NULL, 0);
        }
#pragma omp barrier
        /* dB += scale * GB^T */
#pragma omp for schedule(static)
        for (size_t o = 0; o < out; o++)
            for (size_t k = 0; k < r; k++) dB[o * r + k] += scale * GB[k * out + o];
        /* GA = du^T xd and dx += dropout'(du A) (column blocks, chunk by chunk) */
        for (size_t ch = 0; ch < chunks; ch++) {
            size_t n0 = ch * LORA_CHUNK_ROWS, n1 = chunk_end(ch, N);
#pragma omp for schedule(static) nowait
            for (size_t blk = 0; blk < in_blocks; blk++)
                for (size_t g = 0; g < r; g += LORA_GROUP)
                    column_pass8(x, in, blk, du + g, r, GA + g * in, n0, n1, &d, g == 0 ? dx : NULL, A, r);
        }
#pragma omp barrier
        /* dA += GA */
#pragma omp for schedule(static)
        for (size_t i = 0; i < r * in; i++) dA[i] += GA[i];
    }
}

static int have_fused(void) { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"); }
#else
static void lora_fwd_fused(zk_backend *be, float *y, float *u, const float *x, const float *A, const float *B,
                           size_t N, size_t in, size_t out, size_t r, float scale, const zk_dropout *drop) {
    lora_fwd_sgemm(be, y, u, x, A, B, N, in, out, r, scale, drop); /* never called: have_fused() is 0 */
}
static void lora_bwd_fused(zk_backend *be, float *dx, float *dA, float *dB, float *du, const float *dy,
                           const float *x, const float *u, const float *A, const float *B, size_t N, size_t in,
                           size_t out, size_t r, float scale, const zk_dropout *drop) {
    lora_bwd_sgemm(be, dx, dA, dB, du, dy, x, u, A, B, N, in, out, r, scale, drop);
}
static int have_fused(void) { return 0; }
#endif

int cpu_lora_fused_available(void) {
    const char *force_sgemm = getenv("ZEN_LORA_SGEMM");
    return have_fused() && !(force_sgemm && *force_sgemm && *force_sgemm != '0');
}

/* B^T [r, out], dB^T's sums [r, out] and dA's [r, in] */
size_t cpu_lora_scratch_elems(size_t r, size_t in, size_t out) { return r * (2 * out + in); }

static int use_fused(zk_backend *be, size_t r) {
    return ((cpu_ctx *)be->ctx)->lora_fused && r % LORA_GROUP == 0;
}

void cpu_lora_fwd(zk_backend *be, void *y, float *u, const void *x, const float *A, const float *B, size_t N,
                  size_t in, size_t out, size_t r, float scale, const zk_dropout *drop) {
    /* y [N, out], u [N, r], x [N, in], A [r, in], B [out, r] */
    if (use_fused(be, r))
        lora_fwd_fused(be, y, u, x, A, B, N, in, out, r, scale, drop);
    else
        lora_fwd_sgemm(be, y, u, x, A, B, N, in, out, r, scale, drop);
}

void cpu_lora_bwd(zk_backend *be, void *dx, float *dA, float *dB, float *du, const void *dy, const void *x,
                  const float *u, const float *A, const float *B, size_t N, size_t in, size_t out, size_t r,
                  float scale, const zk_dropout *drop) {
    /* dx [N, in], dA [r, in], dB [out, r], du [N, r], dy [N, out] */
    if (use_fused(be, r))
        lora_bwd_fused(be, dx, dA, dB, du, dy, x, u, A, B, N, in, out, r, scale, drop);
    else
        lora_bwd_sgemm(be, dx, dA, dB, du, dy, x, u, A, B, N, in, out, r, scale, drop);
}
