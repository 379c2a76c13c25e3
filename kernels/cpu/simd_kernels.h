/* kernels/cpu/simd_kernels.h: the hand-written kernels of each CPU variant
 * (simd_avx2.c, simd_avx512.c), as one table per variant; a member is NULL
 * where the variant has no such kernel and the portable path runs instead.
 * The drivers (lora_cpu.c, linear_cpu.c) split the work over threads and
 * call these on their share; cpu_kernels() is the table of the variant in use
 * (cpu_isa.h). */
#ifndef ZEN_SIMD_KERNELS_H
#define ZEN_SIMD_KERNELS_H
#include <stddef.h>
#include <stdint.h>

/* the LoRA dropout of a matrix [rows, ld]: element (n, c) has flat index
 * n*ld + c (kernels.h's zk_dropout_keep); on = 0 means no dropout */
typedef struct {
    int on;
    uint64_t seed, threshold;
    float keep_scale;
    size_t ld;
} lora_drop;

#define CPU_LORA_GROUP 8 /* ranks a LoRA pass sums together in registers */

/* Row pass, 8 ranks: Y[n*ldy + k] = scale * sum_c M[n*ldm + c] d(n,c) W[k*ldw + c]
 * for k < 8 and the rows [n0, n1) (at most the table's lora_rows of them). */
typedef void (*lora_row_pass_fn)(const float *M, size_t ldm, size_t C, const float *W, size_t ldw, float *Y,
                                 size_t ldy, size_t n0, size_t n1, float scale, const lora_drop *d);
/* Column pass, 8 ranks, over block blk (the table's lora_cols columns) of a
 * matrix M [rows, C]:
 *   G[k*C + c] += sum over rows [n0, n1), in order, of w[n*ldw + k] M[n,c] d(n,c)
 * and, where dX is given, with all r ranks of w and A [r, C]:
 *   dX[n*C + c] += d(n,c) sum_k w[n*ldw + k] A[k*C + c] */
typedef void (*lora_column_pass_fn)(const float *M, size_t C, size_t blk, const float *w, size_t ldw, float *G,
                                    size_t n0, size_t n1, const lora_drop *d, float *dX, const float *A, size_t r);
/* Decoding: r[j] = sum_i x[i] W[j*ldw + i] for j < rows (at most CPU_DOT_ROWS),
 * i < n; x and W of the types the member's name says */
#define CPU_DOT_ROWS 4
typedef void (*dot_rows_fn)(const void *x, const void *W, size_t ldw, size_t n, int rows, float *r);
/* The same for two x rows at once (x0 -> r0, x1 -> r1), each W load serving both: every r the same bits
 * as the one-row kernel's (each sum in its order), so a row's result does not depend on its neighbour */
typedef void (*dot_rows2_fn)(const void *x0, const void *x1, const void *W, size_t ldw, size_t n, int rows, float *r0,
                             float *r1);
/* The same for four x rows (x[a] -> r[a]) against a whole block of CPU_DOT_ROWS W rows, with the same bits */
typedef void (*dot_rows4_fn)(const void *const *x, const void *W, size_t ldw, size_t n, float *const *r);

typedef struct {
    lora_row_pass_fn lora_row_pass8;
    int lora_rows; /* rows one row-pass call takes at once */
    lora_column_pass_fn lora_column_pass8;
    int lora_cols; /* columns in a column-pass block */
    dot_rows_fn dot_bf16_bf16w; /* bf16 x (bf16 compute): exact products, fp32 sums */
    dot_rows_fn dot_f32_bf16w;  /* fp32 x, bf16 W (f32 compute) */
    dot_rows_fn dot_f32_f16w;   /* fp32 x, f16 W */
    dot_rows_fn dot_f32_f32w;   /* fp32 x, fp32 W */
    /* two rows at once (NULL: the one-row kernels, row by row) */
    dot_rows2_fn dot2_bf16_bf16w, dot2_f32_bf16w, dot2_f32_f16w, dot2_f32_f32w;
    dot_rows4_fn dot4_bf16_bf16w; /* four rows at once, whole blocks (NULL: two at a time) */
} cpu_kernel_set;

extern const cpu_kernel_set cpu_kernels_avx2, cpu_kernels_avx512, cpu_kernels_avx512bf16;

/* the table of the variant in use (all NULL for generic) */
const cpu_kernel_set *cpu_kernels(void);

#endif
