/* model/quant.c: ggml storage types, the Q8_0 / Q4_0 reference quantizers,
 * and the dispatch to the k-quant ones (kquant.c). */
#include <math.h>
#include <string.h>
#include <strings.h>

#include "../kernels/dtype.h"
#include "kquant.h"
#include "quant.h"

/* every ggml type: id, name, elements per block, bytes per block (ggml.c's
 * type_traits; the block layouts of ggml-common.h), and whether zen converts it */
static const struct {
    ggml_type_id id;
    const char *name;
    uint32_t block, bytes;
    int convertible;
} TYPES[] = {
    {GGML_F32, "F32", 1, 4, 1},         {GGML_F16, "F16", 1, 2, 1},          {GGML_Q4_0, "Q4_0", 32, 18, 1},
    {GGML_Q4_1, "Q4_1", 32, 20, 0},     {GGML_Q5_0, "Q5_0", 32, 22, 1},      {GGML_Q5_1, "Q5_1", 32, 24, 1},
    {GGML_Q8_0, "Q8_0", 32, 34, 1},     {GGML_Q8_1, "Q8_1", 32, 36, 0},      {GGML_Q2_K, "Q2_K", 256, 84, 0},
    {GGML_Q3_K, "Q3_K", 256, 110, 0},   {GGML_Q4_K, "Q4_K", 256, 144, 1},    {GGML_Q5_K, "Q5_K", 256, 176, 1},
    {GGML_Q6_K, "Q6_K", 256, 210, 1},   {GGML_Q8_K, "Q8_K", 256, 292, 0},    {GGML_IQ2_XXS, "IQ2_XXS", 256, 66, 0},
    {GGML_IQ2_XS, "IQ2_XS", 256, 74, 0}, {GGML_IQ3_XXS, "IQ3_XXS", 256, 98, 0}, {GGML_IQ1_S, "IQ1_S", 256, 50, 0},
    {GGML_IQ4_NL, "IQ4_NL", 32, 18, 0}, {GGML_IQ3_S, "IQ3_S", 256, 110, 0},  {GGML_IQ2_S, "IQ2_S", 256, 82, 0},
    {GGML_IQ4_XS, "IQ4_XS", 256, 136, 0}, {GGML_I8, "I8", 1, 1, 0},          {GGML_I16, "I16", 1, 2, 0},
    {GGML_I32, "I32", 1, 4, 0},         {GGML_I64, "I64", 1, 8, 0},          {GGML_F64, "F64", 1, 8, 0},
    {GGML_IQ1_M, "IQ1_M", 256, 56, 0},  {GGML_BF16, "BF16", 1, 2, 1},        {GGML_TQ1_0, "TQ1_0", 256, 54, 0},
    {GGML_TQ2_0, "TQ2_0", 256, 66, 0},  {GGML_MXFP4, "MXFP4", 32, 17, 0},
};
#define NTYPES (sizeof TYPES / sizeof TYPES[0])

static int find_type(uint32_t t) {
    for (size_t i = 0; i < NTYPES; i++)
        if ((uint32_t)TYPES[i].id == t) return (int)i;
    return -1;
}

int ggml_type_known(uint32_t t) { return find_type(t) >= 0; }

int ggml_type_convertible(ggml_type_id t) {
    int i = find_type((uint32_t)t);
    return i >= 0 && TYPES[i].convertible;
}

int ggml_type_parse(const char *name, ggml_type_id *out) {
    for (size_t i = 0; i < NTYPES; i++)
        if (TYPES[i].convertible && !strcasecmp(name, TYPES[i].name)) {
            *out = TYPES[i].id;
            return 0;
        }
    return -1;
}

const char *ggml_type_name(ggml_type_id t) {
    int i = find_type((uint32_t)t);
    return i >= 0 ? TYPES[i].name : "?";
}

size_t ggml_type_block(ggml_type_id t) {
    int i = find_type((uint32_t)t);
    return i >= 0 ? TYPES[i].block : 0;
}

size_t ggml_type_bytes(ggml_type_id t, size_t n) {
    int i = find_type((uint32_t)t);
    return i >= 0 ? n / TYPES[i].block * TYPES[i].bytes : 0;
}

void ggml_put_f16(uint8_t *p, float v) {
    uint16_t h = zen_f32_to_f16(v);
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

float ggml_get_f16(const uint8_t *p) { return zen_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static void quantize_q8_0(uint8_t *dst, const float *x, size_t n) {
    for (size_t b = 0; b < n / GGML_QK; b++, x += GGML_QK, dst += 34) {
        float amax = 0.0f;
        for (int j = 0; j < GGML_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        ggml_put_f16(dst, d);
        for (int j = 0; j < GGML_QK; j++) dst[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

static void quantize_q4_0(uint8_t *dst, const float *x, size_t n) {
    for (size_t b = 0; b < n / GGML_QK; b++, x += GGML_QK, dst += 18) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < GGML_QK; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
        ggml_put_f16(dst, d);
        for (int j = 0; j < GGML_QK / 2; j++) {
            int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + GGML_QK / 2] * id + 8.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            dst[2 + j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

void ggml_quantize(void *dst, const float *src, size_t n, ggml_type_id t) {
    switch (t) {
    case GGML_F32: memcpy(dst, src, 4 * n); break;
    case GGML_F16: zen_narrow(dst, src, ZEN_F16, n); break;
    case GGML_BF16: zen_narrow(dst, src, ZEN_BF16, n); break;
    case GGML_Q8_0: quantize_q8_0(dst, src, n); break;
    case GGML_Q4_0: quantize_q4_0(dst, src, n); break;
    default: kquant_quantize(dst, src, n, t); break; /* the rest; callers check ggml_type_convertible */
    }
}

void ggml_dequantize(float *dst, const void *src_, size_t n, ggml_type_id t) {
    const uint8_t *src = src_;
    switch (t) {
    case GGML_F32: memcpy(dst, src, 4 * n); break;
    case GGML_F16: zen_widen(dst, src, ZEN_F16, n); break;
    case GGML_BF16: zen_widen(dst, src, ZEN_BF16, n); break;
    case GGML_Q8_0:
        for (size_t b = 0; b < n / GGML_QK; b++, src += 34) {
            float d = ggml_get_f16(src);
            for (int j = 0; j < GGML_QK; j++) *dst++ = (float)(int8_t)src[2 + j] * d;
        }
        break;
    case GGML_Q4_0:
        for (size_t b = 0; b < n / GGML_QK; b++, src += 18, dst += GGML_QK) {
            float d = ggml_get_f16(src);
            for (int j = 0; j < GGML_QK / 2; j++) {
                dst[j] = (float)((src[2 + j] & 0x0f) - 8) * d;
                dst[j + GGML_QK / 2] = (float)((src[2 + j] >> 4) - 8) * d;
            }
        }
        break;
    default:
        if (kquant_dequantize(dst, src, n, t)) memset(dst, 0, n * sizeof(float)); /* not convertible */
        break;
    }
}
