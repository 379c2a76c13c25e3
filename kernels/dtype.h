/* kernels/dtype.h: the storage types of weights (f32, f16, bf16) and exact
 * conversions between them and fp32. Computing is always fp32. */
#ifndef ZEN_DTYPE_H
#define ZEN_DTYPE_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum { ZEN_F32 = 0, ZEN_F16 = 1, ZEN_BF16 = 2 } zen_dtype;

static inline size_t zen_dtype_size(zen_dtype t) { return t == ZEN_F32 ? 4 : 2; }
/* "F32", "F16", "BF16" as SafeTensors spells them */
const char *zen_dtype_name(zen_dtype t);
/* parses "F32"/"F16"/"BF16" (also lower-case f32/f16/bf16); returns -1 if unknown */
int zen_dtype_parse(const char *name, zen_dtype *out);

static inline float zen_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* round to nearest even, NaN kept NaN (as PyTorch and ggml do) */
static inline uint16_t zen_f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

float zen_f16_to_f32(uint16_t h);
uint16_t zen_f32_to_f16(float f); /* round to nearest even, overflow to inf */

/* widen count elements of src (stored as t) into fp32 dst */
void zen_widen(float *dst, const void *src, zen_dtype t, size_t count);
/* narrow count fp32 elements into dst stored as t */
void zen_narrow(void *dst, const float *src, zen_dtype t, size_t count);

#endif
