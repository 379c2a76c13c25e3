/* formats/quant.c: ggml's tensor types for GGUF files, as lookups into the one
 * table of type traits (kernels/dtype.c), and conversion to and from them:
 * the plain types and Q8_0 / Q4_0 through the table, the k-quants and
 * Q5_0 / Q5_1 through kquant.c's reference quantisers. */
#include <string.h>
#include <strings.h>

#include "../kernels/dtype.h"
#include "kquant.h"
#include "quant.h"

int ggml_type_known(uint32_t t) { return zen_type_by_ggml(t) != NULL; }

/* zen converts both ways: it computes with the type and writes it (here or in kquant.c) */
int ggml_type_convertible(ggml_type_id t) {
    const zen_type_traits *tr = zen_type_by_ggml((uint32_t)t);
    return tr && tr->dtype >= 0 && tr->to_f32;
}

int ggml_type_parse(const char *name, ggml_type_id *out) {
    zen_dtype t;
    if (zen_dtype_parse(name, &t) || zen_dtype_traits(t)->ggml < 0) return -1;
    *out = (ggml_type_id)zen_dtype_traits(t)->ggml;
    return 0;
}

const char *ggml_type_name(ggml_type_id t) {
    const zen_type_traits *tr = zen_type_by_ggml((uint32_t)t);
    return tr ? tr->name : "?";
}

size_t ggml_type_block(ggml_type_id t) {
    const zen_type_traits *tr = zen_type_by_ggml((uint32_t)t);
    return tr ? tr->block : 0;
}

size_t ggml_type_bytes(ggml_type_id t, size_t n) {
    const zen_type_traits *tr = zen_type_by_ggml((uint32_t)t);
    return tr ? n / tr->block * tr->block_bytes : 0;
}

void ggml_quantize(void *dst, const float *src, size_t n, ggml_type_id t) {
    const zen_type_traits *tr = zen_type_by_ggml((uint32_t)t);
    if (tr && tr->from_f32) tr->from_f32(dst, src, n);
    else kquant_quantize(dst, src, n, t); /* the rest; callers check ggml_type_convertible */
}

void ggml_dequantize(float *dst, const void *src, size_t n, ggml_type_id t) {
    const zen_type_traits *tr = zen_type_by_ggml((uint32_t)t);
    if (tr && tr->to_f32) tr->to_f32(dst, src, n);
    else memset(dst, 0, n * sizeof(float)); /* not convertible */
}
