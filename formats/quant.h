/* formats/quant.h: ggml's tensor types, by their ggml.h ids, for GGUF files.
 * Their sizes come from the one table of type traits (kernels/dtype.h),
 * which names every type llama.cpp writes, so a GGUF reader can size any
 * tensor; zen converts to and from f32, f16, bf16 and the block
 * quantizations Q8_0, Q4_0 (kernels/quant_blocks.c) and Q4_K, Q5_K, Q6_K,
 * Q5_0, Q5_1 (quantised by kquant.c), byte for byte as ggml lays them out
 * (ggml-common.h; the reference quantizers of ggml-quants.c):
 *   Q8_0: blocks of 32: {f16 d; int8 qs[32]}, d = amax/127, q = round(x/d)
 *   Q4_0: blocks of 32: {f16 d; u8 qs[16]}, d = max/-8 (max = the value of
 *         largest magnitude, with its sign), q = min(15, (int)(x/d + 8.5)),
 *         qs[j] = q[j] | q[j+16] << 4 */
#ifndef ZEN_QUANT_H
#define ZEN_QUANT_H
#include <stddef.h>
#include <stdint.h>

#include "ggml_type.h"

/* 1 if t is a type of the table (a layout llama.cpp can hold), else 0 */
int ggml_type_known(uint32_t t);
/* 1 if zen converts to and from t (f32, f16, bf16, q8_0, q4_0, q5_0, q5_1, q4_k, q5_k, q6_k) */
int ggml_type_convertible(ggml_type_id t);
/* a convertible type's name ("q8_0", case-insensitive) -> type; -1 if unknown or not convertible */
int ggml_type_parse(const char *name, ggml_type_id *out);
const char *ggml_type_name(ggml_type_id t);   /* "Q4_K"; "?" for an unknown id */
/* bytes of n elements (n a multiple of the block size); 0 for an unknown id */
size_t ggml_type_bytes(ggml_type_id t, size_t n);
size_t ggml_type_block(ggml_type_id t); /* elements per block: 1, 32 or 256; 0 for an unknown id */

/* Converts n fp32 values into dst in type t (n a multiple of the block size;
 * t convertible). */
void ggml_quantize(void *dst, const float *src, size_t n, ggml_type_id t);
/* And back (for tests and zen info). */
void ggml_dequantize(float *dst, const void *src, size_t n, ggml_type_id t);

#endif
