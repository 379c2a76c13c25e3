/* formats/kquant.h: the reference quantizers of ggml's Q4_K, Q5_K, Q6_K
 * super-blocks and of Q5_0 / Q5_1 (kquant.c; their dequantisers are in
 * kernels/quant_blocks.c). Callers go through quant.h's ggml_quantize. */
#ifndef ZEN_KQUANT_H
#define ZEN_KQUANT_H
#include <stddef.h>

#include "ggml_type.h"

/* n fp32 values (a multiple of the type's block) into dst; -1 if t is not one of these five */
int kquant_quantize(void *dst, const float *src, size_t n, ggml_type_id t);

#endif
