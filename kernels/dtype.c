/* kernels/dtype.c: f16 conversions and bulk widening/narrowing. */
#include <math.h>
#include <strings.h>

#include "dtype.h"

const char *zen_dtype_name(zen_dtype t) {
    switch (t) {
    case ZEN_F32: return "F32";
    case ZEN_F16: return "F16";
    case ZEN_BF16: return "BF16";
    }
    return "?";
}

int zen_dtype_parse(const char *name, zen_dtype *out) {
    if (!strcasecmp(name, "F32")) *out = ZEN_F32;
    else if (!strcasecmp(name, "F16")) *out = ZEN_F16;
    else if (!strcasecmp(name, "BF16")) *out = ZEN_BF16;
    else return -1;
    return 0;
}

float zen_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: value = mant * 2^-24 */
            float f = (float)mant * (1.0f / 16777216.0f);
            memcpy(&bits, &f, 4);
            bits |= sign;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t zen_f32_to_f16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    float a = fabsf(f);
    if (isnan(f)) return (uint16_t)(sign | 0x7e00u);
    if (a >= 65520.0f) return (uint16_t)(sign | 0x7c00u); /* rounds to inf */
    if (a < 6.103515625e-05f) {
        /* subnormal range: quantum 2^-24; nearbyintf rounds half to even */
        return (uint16_t)(sign | (uint16_t)nearbyintf(a * 16777216.0f));
    }
    uint32_t abits = bits & 0x7fffffffu;
    /* round mantissa from 23 to 10 bits, nearest even */
    abits += 0xfffu + ((abits >> 13) & 1u);
    uint32_t exp = (abits >> 23) - 112u;
    uint32_t mant = (abits >> 13) & 0x3ffu;
    return (uint16_t)(sign | (exp << 10) | mant);
}

void zen_widen(float *dst, const void *src, zen_dtype t, size_t count) {
    if (t == ZEN_F32) {
        memcpy(dst, src, count * 4);
    } else if (t == ZEN_BF16) {
        const uint16_t *s = src;
        for (size_t i = 0; i < count; i++) dst[i] = zen_bf16_to_f32(s[i]);
    } else {
        const uint16_t *s = src;
        for (size_t i = 0; i < count; i++) dst[i] = zen_f16_to_f32(s[i]);
    }
}

void zen_narrow(void *dst, const float *src, zen_dtype t, size_t count) {
    if (t == ZEN_F32) {
        memcpy(dst, src, count * 4);
    } else if (t == ZEN_BF16) {
        uint16_t *d = dst;
        for (size_t i = 0; i < count; i++) d[i] = zen_f32_to_bf16(src[i]);
    } else {
        uint16_t *d = dst;
        for (size_t i = 0; i < count; i++) d[i] = zen_f32_to_f16(src[i]);
    }
}
