/* kernels/cpu/simd_avx2.c: the avx2 variant's kernels (simd_kernels.h), for
 * x86-64 CPUs with AVX2, FMA and F16C but no AVX-512 (Haswell and later
 * Intel client cores, AMD Zen 1-3): the fused LoRA row and column passes and
 * decoding's dot products against bf16, f16 and fp32 weights. The same
 * arithmetic as simd_avx512.c on 8 lanes instead of 16: the column passes
 * (dB, dA, dx; one lane per column, sums over rows in order) give the same
 * bits, the row passes and dot products (sums across lanes) agree to fp32
 * rounding. Every function carries CPU_TARGET_AVX2 (cpu_isa.h). */
#include "cpu_isa.h"
#include "simd_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define LORA_ROWS 1 /* rows per row-pass step: 8 rank sums use 8 of the 16 ymm */
#define LORA_COLS 8 /* columns per column-pass block: one ymm */

/* lanes [0, count) of an 8-lane block, as maskload/maskstore take them */
CPU_TARGET_AVX2 static inline __m256i lanes8(size_t count) {
    const __m256i idx = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(count < 8 ? count : 8)), idx);
}

/* the low 64 bits of a * b for 4 lanes (AVX2 has no 64-bit multiply) */
CPU_TARGET_AVX2 static inline __m256i mullo64(__m256i a, uint64_t b) {
    __m256i b_lo = _mm256_set1_epi64x((long long)(b & 0xffffffffu)), b_hi = _mm256_set1_epi64x((long long)(b >> 32));
    __m256i lo = _mm256_mul_epu32(a, b_lo);
    __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), b_lo), _mm256_mul_epu32(a, b_hi));
    return _mm256_add_epi64(lo, _mm256_slli_epi64(cross, 32));
}

/* 1 (all bits) in the 64-bit lanes whose index i+lane is dropped */
CPU_TARGET_AVX2 static inline __m256i dropped4(const lora_drop *d, size_t i) {
    __m256i z = _mm256_add_epi64(_mm256_set1_epi64x((long long)i), _mm256_set_epi64x(3, 2, 1, 0));
    z = _mm256_add_epi64(_mm256_set1_epi64x((long long)d->seed), mullo64(z, 0x9e3779b97f4a7c15ull));
    z = mullo64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), 0xbf58476d1ce4e5b9ull);
    z = mullo64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), 0x94d049bb133111ebull);
    z = _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
    /* (z >> 40) < threshold, both below 2^24: a signed compare is exact */
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)d->threshold), _mm256_srli_epi64(z, 40));
}

/* the factor each of 8 elements (flat indices i..i+7) is multiplied by:
 * keep_scale or 0, as the sgemm path's (float)keep * keep_scale */
CPU_TARGET_AVX2 static inline __m256 drop8(const lora_drop *d, size_t n, size_t c) {
    size_t i = n * d->ld + c;
    __m256 lo = _mm256_castsi256_ps(dropped4(d, i)), hi = _mm256_castsi256_ps(dropped4(d, i + 4));
    /* the low 32 bits of each 64-bit lane, in order: 0 2 | 4 6 of lo, then of hi */
    __m256 packed = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    __m256 dropped = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(packed), _MM_SHUFFLE(3, 1, 2, 0)));
    return _mm256_andnot_ps(dropped, _mm256_set1_ps(d->keep_scale));
}

/* the sum of 8 lanes in a fixed order */
CPU_TARGET_AVX2 static inline float reduce8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Row pass: one row at a time, 8 lanes per rank, the tail masked */
CPU_TARGET_AVX2 static void row_pass8(const float *M, size_t ldm, size_t C, const float *W, size_t ldw, float *Y,
                                      size_t ldy, size_t n0, size_t n1, float scale, const lora_drop *d) {
    size_t full = C / 8 * 8;
    for (size_t n = n0; n < n1; n++) {
        const float *m = M + n * ldm;
        __m256 acc[CPU_LORA_GROUP];
        for (int k = 0; k < CPU_LORA_GROUP; k++) acc[k] = _mm256_setzero_ps();
        for (size_t c = 0; c < full; c += 8) {
            __m256 v = _mm256_loadu_ps(m + c);
            if (d->on) v = _mm256_mul_ps(v, drop8(d, n, c));
            for (int k = 0; k < CPU_LORA_GROUP; k++)
                acc[k] = _mm256_fmadd_ps(v, _mm256_loadu_ps(W + k * ldw + c), acc[k]);
        }
        if (full < C) {
            __m256i mask = lanes8(C - full);
            __m256 v = _mm256_maskload_ps(m + full, mask);
            if (d->on) v = _mm256_mul_ps(v, drop8(d, n, full));
            for (int k = 0; k < CPU_LORA_GROUP; k++)
                acc[k] = _mm256_fmadd_ps(v, _mm256_maskload_ps(W + k * ldw + full, mask), acc[k]);
        }
        for (int k = 0; k < CPU_LORA_GROUP; k++) Y[n * ldy + k] = scale * reduce8(acc[k]);
    }
}

/* Column pass over one block of 8 columns [c, c + 8) (mask: its lanes) */
CPU_TARGET_AVX2 static inline __attribute__((always_inline)) void
column_pass8_block(const float *M, size_t C, size_t c, __m256i mask, const float *w, size_t ldw, float *G, size_t n0,
                   size_t n1, const lora_drop *d, float *dX, const float *A, size_t r, const int masked) {
#define LOAD(p) (masked ? _mm256_maskload_ps((p), mask) : _mm256_loadu_ps(p))
#define STORE(p, v) (masked ? _mm256_maskstore_ps((p), mask, (v)) : _mm256_storeu_ps((p), (v)))
    __m256 acc[CPU_LORA_GROUP];
    for (int k = 0; k < CPU_LORA_GROUP; k++) acc[k] = LOAD(G + k * C + c);
    for (size_t n = n0; n < n1; n++) {
        __m256 v = LOAD(M + n * C + c);
        __m256 keep = d->on ? drop8(d, n, c) : _mm256_set1_ps(1.0f);
        if (d->on) v = _mm256_mul_ps(v, keep);
        const float *wn = w + n * ldw;
        for (int k = 0; k < CPU_LORA_GROUP; k++) acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(wn[k]), v, acc[k]);
        if (dX) {
            __m256 s = _mm256_setzero_ps();
            for (size_t k = 0; k < r; k++) s = _mm256_fmadd_ps(_mm256_set1_ps(wn[k]), LOAD(A + k * C + c), s);
            float *dxn = dX + n * C + c;
            __m256 old = LOAD(dxn);
            STORE(dxn, d->on ? _mm256_fmadd_ps(s, keep, old) : _mm256_add_ps(old, s));
        }
    }
    for (int k = 0; k < CPU_LORA_GROUP; k++) STORE(G + k * C + c, acc[k]);
#undef LOAD
#undef STORE
}

CPU_TARGET_AVX2 static void column_pass8(const float *M, size_t C, size_t blk, const float *w, size_t ldw, float *G,
                                         size_t n0, size_t n1, const lora_drop *d, float *dX, const float *A,
                                         size_t r) {
    size_t c = blk * LORA_COLS;
    if (c + LORA_COLS <= C)
        column_pass8_block(M, C, c, _mm256_setzero_si256(), w, ldw, G, n0, n1, d, dX, A, r, 0);
    else
        column_pass8_block(M, C, c, lanes8(C - c), w, ldw, G, n0, n1, d, dX, A, r, 1);
}

/* ---- decoding: fp32 x against a few rows of W, each W element widened
 * in a register; 4 rows x 2 accumulators, the tail (fewer than 8 elements)
 * through a zero-padded copy ---- */
#define WT_BF16 0
#define WT_F16 1
#define WT_F32 2

/* 8 weights of type wt at p, widened to fp32 */
CPU_TARGET_AVX2 static inline __attribute__((always_inline)) __m256 load8(const void *p, const int wt) {
    if (wt == WT_F32) return _mm256_loadu_ps(p);
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (wt == WT_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); /* bf16: a shift */
}

CPU_TARGET_AVX2 static inline __attribute__((always_inline)) void
dot_f32(const float *x, const char *W, size_t w_bytes, size_t ldw, size_t n, int rows, float *r, const int wt) {
    __m256 acc[CPU_DOT_ROWS][2];
    for (int j = 0; j < rows; j++) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        /* the next block's rows, at the same place: each row is a short
         * stream that the hardware prefetcher would only find late */
        for (int j = 0; j < CPU_DOT_ROWS; j++)
            for (size_t line = 0; line < 16 * w_bytes; line += 64)
                _mm_prefetch(W + ((CPU_DOT_ROWS + j) * ldw + i) * w_bytes + line, _MM_HINT_T0);
        for (int k = 0; k < 2; k++) {
            __m256 xv = _mm256_loadu_ps(x + i + 8 * k);
            for (int j = 0; j < rows; j++)
                acc[j][k] = _mm256_fmadd_ps(xv, load8(W + (j * ldw + i + 8 * k) * w_bytes, wt), acc[j][k]);
        }
    }
    for (; i < n; i += 8) {
        size_t count = n - i < 8 ? n - i : 8;
        float xt[8] = {0};
        for (size_t e = 0; e < count; e++) xt[e] = x[i + e];
        __m256 xv = _mm256_loadu_ps(xt);
        for (int j = 0; j < rows; j++) {
            _Alignas(32) unsigned char wt_copy[32] = {0};
            const char *src = W + (j * ldw + i) * w_bytes;
            for (size_t e = 0; e < count * w_bytes; e++) wt_copy[e] = (unsigned char)src[e];
            acc[j][0] = _mm256_fmadd_ps(xv, load8(wt_copy, wt), acc[j][0]);
        }
    }
    for (int j = 0; j < rows; j++) r[j] = reduce8(_mm256_add_ps(acc[j][0], acc[j][1]));
}

CPU_TARGET_AVX2 static void dot_f32_bf16w(const void *x, const void *W, size_t ldw, size_t n, int rows, float *r) {
    if (rows == CPU_DOT_ROWS) /* a whole block: the row loops unrolled */
        dot_f32(x, W, 2, ldw, n, CPU_DOT_ROWS, r, WT_BF16);
    else
        dot_f32(x, W, 2, ldw, n, rows, r, WT_BF16);
}
CPU_TARGET_AVX2 static void dot_f32_f16w(const void *x, const void *W, size_t ldw, size_t n, int rows, float *r) {
    if (rows == CPU_DOT_ROWS) /* a whole block: the row loops unrolled */
        dot_f32(x, W, 2, ldw, n, CPU_DOT_ROWS, r, WT_F16);
    else
        dot_f32(x, W, 2, ldw, n, rows, r, WT_F16);
}
CPU_TARGET_AVX2 static void dot_f32_f32w(const void *x, const void *W, size_t ldw, size_t n, int rows, float *r) {
    if (rows == CPU_DOT_ROWS) /* a whole block: the row loops unrolled */
        dot_f32(x, W, 4, ldw, n, CPU_DOT_ROWS, r, WT_F32);
    else
        dot_f32(x, W, 4, ldw, n, rows, r, WT_F32);
}

const cpu_kernel_set cpu_kernels_avx2 = {row_pass8, LORA_ROWS, column_pass8, LORA_COLS,
                                         NULL, dot_f32_bf16w, dot_f32_f16w, dot_f32_f32w,
                                         NULL, NULL, NULL, NULL, NULL};
#endif
