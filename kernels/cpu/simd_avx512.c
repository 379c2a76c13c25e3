/* kernels/cpu/simd_avx512.c: the avx512 and avx512bf16 variants' kernels
 * (simd_kernels.h): the fused LoRA row and column passes, and decoding's
 * dot products of a few rows against bf16, f16 and fp32 weights; the
 * avx512bf16 set adds the bf16 x bf16 dot product (vdpbf16ps). Every
 * function carries the target attribute of its variant (cpu_isa.h). */
#include "cpu_isa.h"
#include "simd_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define LORA_ROWS 3 /* rows per row-pass step: 3 x 8 sums fill 24 of the 32 zmm */
#define LORA_COLS 16 /* columns per column-pass block: one zmm */

/* zk_dropout_keep of 16 consecutive flat indices i..i+15, as a lane mask */
CPU_TARGET_AVX512 static inline __mmask16 keep16(const lora_drop *d, size_t i) {
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
CPU_TARGET_AVX512 static inline __m512 drop16(const lora_drop *d, size_t n, size_t c) {
    return _mm512_maskz_mov_ps(keep16(d, n * d->ld + c), _mm512_set1_ps(d->keep_scale));
}

/* lanes [0, count) of a 16-lane block */
static inline __mmask16 lanes(size_t count) { return count >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << count) - 1); }

/* Row pass: LORA_ROWS rows at a time (each W load serves them all), 16
 * lanes per rank and row, the lanes summed at the end (_mm512_reduce_add_ps,
 * a fixed order). Whole 16-column blocks load unmasked, the tail masked. */
CPU_TARGET_AVX512 static inline __attribute__((always_inline)) void
row_pass8_block(const float *const *m_rows, const size_t *row, size_t c, __mmask16 m, const float *W, size_t ldw,
                const lora_drop *d, __m512 acc[LORA_ROWS][CPU_LORA_GROUP], const int masked) {
    __m512 v[LORA_ROWS];
    for (int j = 0; j < LORA_ROWS; j++) {
        v[j] = masked ? _mm512_maskz_loadu_ps(m, m_rows[j] + c) : _mm512_loadu_ps(m_rows[j] + c);
        if (d->on) v[j] = _mm512_mul_ps(v[j], drop16(d, row[j], c));
    }
    for (int k = 0; k < CPU_LORA_GROUP; k++) {
        __m512 w = masked ? _mm512_maskz_loadu_ps(m, W + k * ldw + c) : _mm512_loadu_ps(W + k * ldw + c);
        for (int j = 0; j < LORA_ROWS; j++) acc[j][k] = _mm512_fmadd_ps(v[j], w, acc[j][k]);
    }
}

CPU_TARGET_AVX512 static void row_pass8(const float *M, size_t ldm, size_t C, const float *W, size_t ldw, float *Y,
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
        __m512 acc[LORA_ROWS][CPU_LORA_GROUP];
        for (int j = 0; j < LORA_ROWS; j++)
            for (int k = 0; k < CPU_LORA_GROUP; k++) acc[j][k] = _mm512_setzero_ps();
        for (size_t c = 0; c < full; c += 16) row_pass8_block(m_rows, row, c, 0xffff, W, ldw, d, acc, 0);
        if (full < C) row_pass8_block(m_rows, row, full, lanes(C - full), W, ldw, d, acc, 1);
        for (int j = 0; j < LORA_ROWS && n + j < n1; j++)
            for (int k = 0; k < CPU_LORA_GROUP; k++) Y[row[j] * ldy + k] = scale * _mm512_reduce_add_ps(acc[j][k]);
    }
}

/* Column pass over one block of 16 columns [c, c + 16) (lanes m) */
CPU_TARGET_AVX512 static inline __attribute__((always_inline)) void
column_pass8_block(const float *M, size_t ldm, size_t c, __mmask16 m, const float *w, size_t ldw, float *G,
                   size_t ldg, size_t n0, size_t n1, const lora_drop *d, float *dX, const float *A, size_t lda,
                   size_t r, const int masked) {
#define LOAD(p) (masked ? _mm512_maskz_loadu_ps(m, (p)) : _mm512_loadu_ps(p))
    __m512 acc[CPU_LORA_GROUP];
    for (int k = 0; k < CPU_LORA_GROUP; k++) acc[k] = LOAD(G + k * ldg + c);
    for (size_t n = n0; n < n1; n++) {
        __m512 v = LOAD(M + n * ldm + c);
        __m512 keep = d->on ? drop16(d, n, c) : _mm512_set1_ps(1.0f);
        if (d->on) v = _mm512_mul_ps(v, keep);
        const float *wn = w + n * ldw;
        for (int k = 0; k < CPU_LORA_GROUP; k++) acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(wn[k]), v, acc[k]);
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
    for (int k = 0; k < CPU_LORA_GROUP; k++) {
        if (masked)
            _mm512_mask_storeu_ps(G + k * ldg + c, m, acc[k]);
        else
            _mm512_storeu_ps(G + k * ldg + c, acc[k]);
    }
#undef LOAD
}

CPU_TARGET_AVX512 static void column_pass8(const float *M, size_t C, size_t blk, const float *w, size_t ldw,
                                           float *G, size_t n0, size_t n1, const lora_drop *d, float *dX,
                                           const float *A, size_t r) {
    size_t c = blk * LORA_COLS;
    if (c + LORA_COLS <= C)
        column_pass8_block(M, C, c, 0xffff, w, ldw, G, C, n0, n1, d, dX, A, C, r, 0);
    else
        column_pass8_block(M, C, c, lanes(C - c), w, ldw, G, C, n0, n1, d, dX, A, C, r, 1);
}

/* ---- decoding: a few rows against a weight read once ----
 * Each x load serves every row, and several rows in flight keep more of the
 * memory bandwidth busy (4 rows: 29 GB/s of a measured 33 on 2 cores, 1 row:
 * 23). Two accumulators per row, the tail masked, the lanes summed in a
 * fixed order. Each kernel is compiled twice: for a whole block of
 * CPU_DOT_ROWS rows with its row loops unrolled, and for a short last block. */

/* bf16 x and W on AVX512-BF16: vdpbf16ps adds the exact products of 32 bf16
 * pairs into 16 fp32 lanes (the instruction oneDNN's bf16 GEMMs use here).
 * A row's sum: acc0 takes the 32-element piece at each multiple of 64 and
 * then every piece of the tail (masked), acc1 the piece 32 after each
 * multiple of 64; the result is the lanes of acc0 + acc1 summed. */
CPU_TARGET_AVX512BF16 static inline __attribute__((always_inline)) void
dot_bf16(const uint16_t *x, const uint16_t *W, size_t ldw, size_t n, const int rows, float *r) {
    /* x [n] bf16, W [rows, ldw] bf16 */
    __m512 acc[CPU_DOT_ROWS][2];
    for (int j = 0; j < rows; j++) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        /* the next block's rows, at the same place: each row is a short
         * stream that the hardware prefetcher would only find late */
        for (int j = 0; j < CPU_DOT_ROWS; j++)
            for (int line = 0; line < 2; line++)
                _mm_prefetch((const char *)(W + (CPU_DOT_ROWS + j) * ldw + i) + 64 * line, _MM_HINT_T0);
        for (int k = 0; k < 2; k++) {
            __m512bh xv = (__m512bh)_mm512_loadu_si512(x + i + 32 * k);
            for (int j = 0; j < rows; j++)
                acc[j][k] = _mm512_dpbf16_ps(acc[j][k], xv, (__m512bh)_mm512_loadu_si512(W + j * ldw + i + 32 * k));
        }
    }
    for (; i < n; i += 32) {
        __mmask32 m = n - i >= 32 ? 0xffffffffu : (((__mmask32)1 << (n - i)) - 1);
        __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, x + i);
        for (int j = 0; j < rows; j++)
            acc[j][0] = _mm512_dpbf16_ps(acc[j][0], xv, (__m512bh)_mm512_maskz_loadu_epi16(m, W + j * ldw + i));
    }
    for (int j = 0; j < rows; j++) r[j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]));
}

CPU_TARGET_AVX512BF16 static void dot_bf16_bf16w(const void *x, const void *W, size_t ldw, size_t n, int rows,
                                                  float *r) {
    if (rows == CPU_DOT_ROWS)
        dot_bf16(x, W, ldw, n, CPU_DOT_ROWS, r);
    else
        dot_bf16(x, W, ldw, n, rows, r);
}

/* two x rows: dot_bf16's sums for each, each W load serving both */
CPU_TARGET_AVX512BF16 static inline __attribute__((always_inline)) void
dot2_bf16(const uint16_t *x0, const uint16_t *x1, const uint16_t *W, size_t ldw, size_t n, const int rows, float *r0,
          float *r1) {
    __m512 a0[CPU_DOT_ROWS][2], a1[CPU_DOT_ROWS][2];
    for (int j = 0; j < rows; j++) a0[j][0] = a0[j][1] = a1[j][0] = a1[j][1] = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        for (int j = 0; j < CPU_DOT_ROWS; j++)
            for (int line = 0; line < 2; line++)
                _mm_prefetch((const char *)(W + (CPU_DOT_ROWS + j) * ldw + i) + 64 * line, _MM_HINT_T0);
        for (int k = 0; k < 2; k++) {
            __m512bh xv0 = (__m512bh)_mm512_loadu_si512(x0 + i + 32 * k);
            __m512bh xv1 = (__m512bh)_mm512_loadu_si512(x1 + i + 32 * k);
            for (int j = 0; j < rows; j++) {
                __m512bh wv = (__m512bh)_mm512_loadu_si512(W + j * ldw + i + 32 * k);
                a0[j][k] = _mm512_dpbf16_ps(a0[j][k], xv0, wv);
                a1[j][k] = _mm512_dpbf16_ps(a1[j][k], xv1, wv);
            }
        }
    }
    for (; i < n; i += 32) {
        __mmask32 m = n - i >= 32 ? 0xffffffffu : (((__mmask32)1 << (n - i)) - 1);
        __m512bh xv0 = (__m512bh)_mm512_maskz_loadu_epi16(m, x0 + i);
        __m512bh xv1 = (__m512bh)_mm512_maskz_loadu_epi16(m, x1 + i);
        for (int j = 0; j < rows; j++) {
            __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, W + j * ldw + i);
            a0[j][0] = _mm512_dpbf16_ps(a0[j][0], xv0, wv);
            a1[j][0] = _mm512_dpbf16_ps(a1[j][0], xv1, wv);
        }
    }
    for (int j = 0; j < rows; j++) {
        r0[j] = _mm512_reduce_add_ps(_mm512_add_ps(a0[j][0], a0[j][1]));
        r1[j] = _mm512_reduce_add_ps(_mm512_add_ps(a1[j][0], a1[j][1]));
    }
}

CPU_TARGET_AVX512BF16 static void dot2_bf16_bf16w(const void *x0, const void *x1, const void *W, size_t ldw,
                                                   size_t n, int rows, float *r0, float *r1) {
    if (rows == CPU_DOT_ROWS)
        dot2_bf16(x0, x1, W, ldw, n, CPU_DOT_ROWS, r0, r1);
    else
        dot2_bf16(x0, x1, W, ldw, n, rows, r0, r1);
}

/* four x rows against two W rows (w0 = W, w1 = W + ldw): dot_bf16's two
 * accumulators for each of the 8 pairs, 16 registers, in one pass */
CPU_TARGET_AVX512BF16 static inline __attribute__((always_inline)) void
dot4x2_bf16(const uint16_t *const *x, const uint16_t *W, size_t ldw, size_t n, float r[4][2]) {
    __m512 acc[4][2][2];
    for (int a = 0; a < 4; a++)
        for (int j = 0; j < 2; j++) acc[a][j][0] = acc[a][j][1] = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        /* these rows of the next block, as dot_bf16, but into L2: this block
         * and the x rows fill L1 (a 4B model at 8 rows: 3% faster than L1) */
        for (int j = 0; j < 2; j++)
            for (int line = 0; line < 2; line++)
                _mm_prefetch((const char *)(W + (CPU_DOT_ROWS + j) * ldw + i) + 64 * line, _MM_HINT_T1);
        for (int k = 0; k < 2; k++) {
            __m512bh w0 = (__m512bh)_mm512_loadu_si512(W + i + 32 * k);
            __m512bh w1 = (__m512bh)_mm512_loadu_si512(W + ldw + i + 32 * k);
            for (int a = 0; a < 4; a++) {
                __m512bh xv = (__m512bh)_mm512_loadu_si512(x[a] + i + 32 * k);
                acc[a][0][k] = _mm512_dpbf16_ps(acc[a][0][k], xv, w0);
                acc[a][1][k] = _mm512_dpbf16_ps(acc[a][1][k], xv, w1);
            }
        }
    }
    for (; i < n; i += 32) {
        __mmask32 m = n - i >= 32 ? 0xffffffffu : (((__mmask32)1 << (n - i)) - 1);
        __m512bh w0 = (__m512bh)_mm512_maskz_loadu_epi16(m, W + i);
        __m512bh w1 = (__m512bh)_mm512_maskz_loadu_epi16(m, W + ldw + i);
        for (int a = 0; a < 4; a++) {
            __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, x[a] + i);
            acc[a][0][0] = _mm512_dpbf16_ps(acc[a][0][0], xv, w0);
            acc[a][1][0] = _mm512_dpbf16_ps(acc[a][1][0], xv, w1);
        }
    }
    for (int a = 0; a < 4; a++)
        for (int j = 0; j < 2; j++) r[a][j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[a][j][0], acc[a][j][1]));
}

/* four x rows against a whole block of CPU_DOT_ROWS W rows: dot_bf16's sums
 * for each, each W load serving all four: two W rows at a time (4 x 4 rows
 * by two accumulators would take every register), the x rows read again
 * from L1 for the second pair */
CPU_TARGET_AVX512BF16 static void dot4_bf16_bf16w(const void *const *x_, const void *W_, size_t ldw, size_t n,
                                                   float *const *r) {
    const uint16_t *const *x = (const uint16_t *const *)x_, *W = W_; /* 4 x [n] bf16, [CPU_DOT_ROWS, ldw] bf16 */
    for (int j = 0; j < CPU_DOT_ROWS; j += 2) {
        float pair[4][2];
        dot4x2_bf16(x, W + j * ldw, ldw, n, pair);
        for (int a = 0; a < 4; a++) r[a][j] = pair[a][0], r[a][j + 1] = pair[a][1];
    }
}

/* 16 weights of type WT at p (lanes m, the rest 0) widened to fp32 */
#define WT_BF16 0
#define WT_F16 1
#define WT_F32 2
CPU_TARGET_AVX512 static inline __attribute__((always_inline)) __m512 load16(const void *p, __mmask16 m,
                                                                              const int masked, const int wt) {
    if (wt == WT_F32) return masked ? _mm512_maskz_loadu_ps(m, p) : _mm512_loadu_ps(p);
    __m256i h = masked ? _mm256_maskz_loadu_epi16(m, p) : _mm256_loadu_si256((const __m256i *)p);
    if (wt == WT_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); /* bf16: a shift */
}

/* fp32 x against W of type wt: each W element widened in a register and
 * fused-multiply-added */
CPU_TARGET_AVX512 static inline __attribute__((always_inline)) void
dot_f32(const float *x, const char *W, size_t w_bytes, size_t ldw, size_t n, int rows, float *r, const int wt) {
    __m512 acc[CPU_DOT_ROWS][2];
    for (int j = 0; j < rows; j++) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int j = 0; j < CPU_DOT_ROWS; j++) /* the next block's rows, as above */
            for (size_t line = 0; line < 32 * w_bytes; line += 64)
                _mm_prefetch(W + ((CPU_DOT_ROWS + j) * ldw + i) * w_bytes + line, _MM_HINT_T0);
        for (int k = 0; k < 2; k++) {
            __m512 xv = _mm512_loadu_ps(x + i + 16 * k);
            for (int j = 0; j < rows; j++)
                acc[j][k] = _mm512_fmadd_ps(xv, load16(W + (j * ldw + i + 16 * k) * w_bytes, 0xffff, 0, wt), acc[j][k]);
        }
    }
    for (; i < n; i += 16) {
        __mmask16 m = lanes(n - i);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        for (int j = 0; j < rows; j++)
            acc[j][0] = _mm512_fmadd_ps(xv, load16(W + (j * ldw + i) * w_bytes, m, 1, wt), acc[j][0]);
    }
    for (int j = 0; j < rows; j++) r[j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]));
}

/* two x rows: dot_f32's sums for each, each W element widened once for both */
CPU_TARGET_AVX512 static inline __attribute__((always_inline)) void
dot2_f32(const float *x0, const float *x1, const char *W, size_t w_bytes, size_t ldw, size_t n, int rows, float *r0,
         float *r1, const int wt) {
    __m512 a0[CPU_DOT_ROWS][2], a1[CPU_DOT_ROWS][2];
    for (int j = 0; j < rows; j++) a0[j][0] = a0[j][1] = a1[j][0] = a1[j][1] = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int j = 0; j < CPU_DOT_ROWS; j++)
            for (size_t line = 0; line < 32 * w_bytes; line += 64)
                _mm_prefetch(W + ((CPU_DOT_ROWS + j) * ldw + i) * w_bytes + line, _MM_HINT_T0);
        for (int k = 0; k < 2; k++) {
            __m512 xv0 = _mm512_loadu_ps(x0 + i + 16 * k), xv1 = _mm512_loadu_ps(x1 + i + 16 * k);
            for (int j = 0; j < rows; j++) {
                __m512 wv = load16(W + (j * ldw + i + 16 * k) * w_bytes, 0xffff, 0, wt);
                a0[j][k] = _mm512_fmadd_ps(xv0, wv, a0[j][k]);
                a1[j][k] = _mm512_fmadd_ps(xv1, wv, a1[j][k]);
            }
        }
    }
    for (; i < n; i += 16) {
        __mmask16 m = lanes(n - i);
        __m512 xv0 = _mm512_maskz_loadu_ps(m, x0 + i), xv1 = _mm512_maskz_loadu_ps(m, x1 + i);
        for (int j = 0; j < rows; j++) {
            __m512 wv = load16(W + (j * ldw + i) * w_bytes, m, 1, wt);
            a0[j][0] = _mm512_fmadd_ps(xv0, wv, a0[j][0]);
            a1[j][0] = _mm512_fmadd_ps(xv1, wv, a1[j][0]);
        }
    }
    for (int j = 0; j < rows; j++) {
        r0[j] = _mm512_reduce_add_ps(_mm512_add_ps(a0[j][0], a0[j][1]));
        r1[j] = _mm512_reduce_add_ps(_mm512_add_ps(a1[j][0], a1[j][1]));
    }
}

#define DOT2_F32(name, bytes, wt)                                                                                 \
    CPU_TARGET_AVX512 static void name(const void *x0, const void *x1, const void *W, size_t ldw, size_t n,      \
                                       int rows, float *r0, float *r1) {                                          \
        if (rows == CPU_DOT_ROWS) /* a whole block: the row loops unrolled */                                     \
            dot2_f32(x0, x1, W, bytes, ldw, n, CPU_DOT_ROWS, r0, r1, wt);                                         \
        else                                                                                                      \
            dot2_f32(x0, x1, W, bytes, ldw, n, rows, r0, r1, wt);                                                 \
    }
DOT2_F32(dot2_f32_bf16w, 2, WT_BF16)
DOT2_F32(dot2_f32_f16w, 2, WT_F16)
DOT2_F32(dot2_f32_f32w, 4, WT_F32)

CPU_TARGET_AVX512 static void dot_f32_bf16w(const void *x, const void *W, size_t ldw, size_t n, int rows, float *r) {
    if (rows == CPU_DOT_ROWS) /* a whole block: the row loops unrolled */
        dot_f32(x, W, 2, ldw, n, CPU_DOT_ROWS, r, WT_BF16);
    else
        dot_f32(x, W, 2, ldw, n, rows, r, WT_BF16);
}
CPU_TARGET_AVX512 static void dot_f32_f16w(const void *x, const void *W, size_t ldw, size_t n, int rows, float *r) {
    if (rows == CPU_DOT_ROWS) /* a whole block: the row loops unrolled */
        dot_f32(x, W, 2, ldw, n, CPU_DOT_ROWS, r, WT_F16);
    else
        dot_f32(x, W, 2, ldw, n, rows, r, WT_F16);
}
CPU_TARGET_AVX512 static void dot_f32_f32w(const void *x, const void *W, size_t ldw, size_t n, int rows, float *r) {
    if (rows == CPU_DOT_ROWS) /* a whole block: the row loops unrolled */
        dot_f32(x, W, 4, ldw, n, CPU_DOT_ROWS, r, WT_F32);
    else
        dot_f32(x, W, 4, ldw, n, rows, r, WT_F32);
}

const cpu_kernel_set cpu_kernels_avx512 = {row_pass8, LORA_ROWS, column_pass8, LORA_COLS,
                                           NULL, dot_f32_bf16w, dot_f32_f16w, dot_f32_f32w,
                                           NULL, dot2_f32_bf16w, dot2_f32_f16w, dot2_f32_f32w, NULL};
const cpu_kernel_set cpu_kernels_avx512bf16 = {row_pass8, LORA_ROWS, column_pass8, LORA_COLS,
                                               dot_bf16_bf16w, dot_f32_bf16w, dot_f32_f16w, dot_f32_f32w,
                                               dot2_bf16_bf16w, dot2_f32_bf16w, dot2_f32_f16w, dot2_f32_f32w,
                                               dot4_bf16_bf16w};
#endif
