/* kernels/half.h: the scalar conversions between f32 and the 16-bit floats
 * (bf16: inline; f16: kernels/half.c), rounding to nearest even, NaN kept
 * NaN, as PyTorch and ggml round. */
#ifndef ZEN_HALF_H
#define ZEN_HALF_H
#include <stdint.h>
#include <string.h>

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

/* x rounded to the nearest bf16, as a float */
static inline float zen_bf16_round(float x) { return zen_bf16_to_f32(zen_f32_to_bf16(x)); }

float zen_f16_to_f32(uint16_t h);
uint16_t zen_f32_to_f16(float f); /* round to nearest even, overflow to inf */

#endif
