/* model/quant.h: ggml's storage types for export: f32, f16, bf16 and the block
 * quantizations Q8_0 and Q4_0, byte for byte as ggml lays them out
 * (ggml-common.h, reference quantizers of ggml-quants.c):
 *   Q8_0: blocks of 32: {f16 d; int8 qs[32]}, d = amax/127, q = round(x/d)
 *   Q4_0: blocks of 32: {f16 d; u8 qs[16]}, d = max/-8 (max = the value of
 *         largest magnitude, with its sign), q = min(15, (int)(x/d + 8.5)),
 *         qs[j] = q[j] | q[j+16] << 4 */
#ifndef ZEN_QUANT_H
#define ZEN_QUANT_H
#include <stddef.h>
#include <stdint.h>

/* ggml_type ids */
typedef enum {
    GGML_F32 = 0,
    GGML_F16 = 1,
    GGML_Q4_0 = 2,
    GGML_Q8_0 = 8,
    GGML_BF16 = 30
} ggml_type_id;

#define GGML_QK 32 /* elements per Q8_0 / Q4_0 block */

/* "f32", "f16", "bf16", "q8_0", "q4_0" -> type; -1 if unknown */
int ggml_type_parse(const char *name, ggml_type_id *out);
const char *ggml_type_name(ggml_type_id t);
/* bytes of n elements (n a multiple of the block size for quantized types) */
size_t ggml_type_bytes(ggml_type_id t, size_t n);
size_t ggml_type_block(ggml_type_id t); /* 1 or 32 */
/* llama.cpp's general.file_type for a model stored mostly in t */
uint32_t ggml_file_type(ggml_type_id t);

/* Converts n fp32 values into dst in type t (n a multiple of the block size). */
void ggml_quantize(void *dst, const float *src, size_t n, ggml_type_id t);
/* And back (for tests and zen info). */
void ggml_dequantize(float *dst, const void *src, size_t n, ggml_type_id t);

#endif
