/* kernels/dtype.c: the table of type traits, f16 conversions, and bulk
 * widening / narrowing through the table. */
#include <math.h>
#include <strings.h>

#include "dtype.h"
#include "quant_blocks.h"

static void f32_to_f32(float *dst, const void *src, size_t n) { memcpy(dst, src, n * sizeof(float)); }
static void f16_to_f32(float *dst, const void *src, size_t n) {
    const uint16_t *s = src;
    for (size_t i = 0; i < n; i++) dst[i] = zen_f16_to_f32(s[i]);
}
static void bf16_to_f32(float *dst, const void *src, size_t n) {
    const uint16_t *s = src;
    for (size_t i = 0; i < n; i++) dst[i] = zen_bf16_to_f32(s[i]);
}
static void f32_from_f32(void *dst, const float *src, size_t n) { memcpy(dst, src, n * sizeof(float)); }
static void f16_from_f32(void *dst, const float *src, size_t n) {
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++) d[i] = zen_f32_to_f16(src[i]);
}
static void bf16_from_f32(void *dst, const float *src, size_t n) {
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++) d[i] = zen_f32_to_bf16(src[i]);
}

/* Every type: first the zen_dtypes, in enum order, then the types files name
 * that zen only sizes (ggml.c's type_traits and ggml-common.h's layouts;
 * SafeTensors' dtypes). ggml ids 4, 5, 31-33 and 36-38 are retired layouts. */
static const zen_type_traits TYPES[] = {
    {"F32", ZEN_F32, 0, 1, 1, 4, f32_to_f32, f32_from_f32},
    {"F16", ZEN_F16, 1, 1, 1, 2, f16_to_f32, f16_from_f32},
    {"BF16", ZEN_BF16, 30, 1, 1, 2, bf16_to_f32, bf16_from_f32},
    {"Q8_0", ZEN_Q8_0, 8, 0, 32, 34, zk_dequantize_q8_0, zk_quantize_q8_0},
    {"Q4_0", ZEN_Q4_0, 2, 0, 32, 18, zk_dequantize_q4_0, zk_quantize_q4_0},
    {"Q5_0", ZEN_Q5_0, 6, 0, 32, 22, zk_dequantize_q5_0, NULL},
    {"Q5_1", ZEN_Q5_1, 7, 0, 32, 24, zk_dequantize_q5_1, NULL},
    {"Q4_K", ZEN_Q4_K, 12, 0, 256, 144, zk_dequantize_q4_k, NULL},
    {"Q5_K", ZEN_Q5_K, 13, 0, 256, 176, zk_dequantize_q5_k, NULL},
    {"Q6_K", ZEN_Q6_K, 14, 0, 256, 210, zk_dequantize_q6_k, NULL},
    {"NF4", ZEN_NF4, -1, 0, 64, 36, zk_dequantize_nf4, zk_quantize_nf4},
    /* sized only */
    {"Q4_1", -1, 3, 0, 32, 20, NULL, NULL},      {"Q8_1", -1, 9, 0, 32, 36, NULL, NULL},
    {"Q2_K", -1, 10, 0, 256, 84, NULL, NULL},    {"Q3_K", -1, 11, 0, 256, 110, NULL, NULL},
    {"Q8_K", -1, 15, 0, 256, 292, NULL, NULL},   {"IQ2_XXS", -1, 16, 0, 256, 66, NULL, NULL},
    {"IQ2_XS", -1, 17, 0, 256, 74, NULL, NULL},  {"IQ3_XXS", -1, 18, 0, 256, 98, NULL, NULL},
    {"IQ1_S", -1, 19, 0, 256, 50, NULL, NULL},   {"IQ4_NL", -1, 20, 0, 32, 18, NULL, NULL},
    {"IQ3_S", -1, 21, 0, 256, 110, NULL, NULL},  {"IQ2_S", -1, 22, 0, 256, 82, NULL, NULL},
    {"IQ4_XS", -1, 23, 0, 256, 136, NULL, NULL}, {"I8", -1, 24, 1, 1, 1, NULL, NULL},
    {"I16", -1, 25, 1, 1, 2, NULL, NULL},        {"I32", -1, 26, 1, 1, 4, NULL, NULL},
    {"I64", -1, 27, 1, 1, 8, NULL, NULL},        {"F64", -1, 28, 1, 1, 8, NULL, NULL},
    {"IQ1_M", -1, 29, 0, 256, 56, NULL, NULL},   {"TQ1_0", -1, 34, 0, 256, 54, NULL, NULL},
    {"TQ2_0", -1, 35, 0, 256, 66, NULL, NULL},   {"MXFP4", -1, 39, 0, 32, 17, NULL, NULL},
    {"U8", -1, -1, 1, 1, 1, NULL, NULL},         {"U16", -1, -1, 1, 1, 2, NULL, NULL},
    {"U32", -1, -1, 1, 1, 4, NULL, NULL},        {"U64", -1, -1, 1, 1, 8, NULL, NULL},
    {"BOOL", -1, -1, 1, 1, 1, NULL, NULL},       {"F8_E4M3", -1, -1, 1, 1, 1, NULL, NULL},
    {"F8_E5M2", -1, -1, 1, 1, 1, NULL, NULL},
};
#define NTYPES (sizeof TYPES / sizeof TYPES[0])

const zen_type_traits *zen_dtype_traits(zen_dtype t) {
    return (unsigned)t < ZEN_NUM_DTYPES ? &TYPES[t] : &TYPES[ZEN_F32];
}

const zen_type_traits *zen_type_by_ggml(uint32_t id) {
    for (size_t i = 0; i < NTYPES; i++)
        if (TYPES[i].ggml >= 0 && (uint32_t)TYPES[i].ggml == id) return &TYPES[i];
    return NULL;
}

const zen_type_traits *zen_type_by_safetensors(const char *name) {
    for (size_t i = 0; i < NTYPES; i++)
        if (TYPES[i].safetensors && !strcmp(TYPES[i].name, name)) return &TYPES[i];
    return NULL;
}

int zen_dtype_parse(const char *name, zen_dtype *out) {
    for (int i = 0; i < ZEN_NUM_DTYPES; i++)
        if (!strcasecmp(name, TYPES[i].name)) {
            *out = (zen_dtype)i;
            return 0;
        }
    return -1;
}

int zen_dtype_parse_float(const char *name, zen_dtype *out) {
    zen_dtype t;
    if (zen_dtype_parse(name, &t) || zen_dtype_is_quant(t)) return -1;
    *out = t;
    return 0;
}

const char *zen_dtype_name(zen_dtype t) { return (unsigned)t < ZEN_NUM_DTYPES ? TYPES[t].name : "?"; }


void zen_widen(float *dst, const void *src, zen_dtype t, size_t count) { zen_dtype_traits(t)->to_f32(dst, src, count); }

void zen_narrow(void *dst, const float *src, zen_dtype t, size_t count) { zen_dtype_traits(t)->from_f32(dst, src, count); }
