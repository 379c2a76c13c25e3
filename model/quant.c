/* model/quant.c: ggml storage types and the Q8_0 / Q4_0 reference quantizers. */
#include <math.h>
#include <string.h>

#include "../kernels/dtype.h"
#include "quant.h"

int ggml_type_parse(const char *name, ggml_type_id *out) {
    static const struct { const char *name; ggml_type_id t; } table[] = {
        {"f32", GGML_F32}, {"f16", GGML_F16}, {"bf16", GGML_BF16}, {"q8_0", GGML_Q8_0}, {"q4_0", GGML_Q4_0}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(name, table[i].name)) {
            *out = table[i].t;
            return 0;
        }
    return -1;
}

const char *ggml_type_name(ggml_type_id t) {
    switch (t) {
    case GGML_F32: return "F32";
    case GGML_F16: return "F16";
    case GGML_BF16: return "BF16";
    case GGML_Q8_0: return "Q8_0";
    case GGML_Q4_0: return "Q4_0";
    }
    return "?";
}

size_t ggml_type_block(ggml_type_id t) { return t == GGML_Q8_0 || t == GGML_Q4_0 ? GGML_QK : 1; }

size_t ggml_type_bytes(ggml_type_id t, size_t n) {
    switch (t) {
    case GGML_F32: return 4 * n;
    case GGML_F16:
    case GGML_BF16: return 2 * n;
    case GGML_Q8_0: return n / GGML_QK * 34;
    case GGML_Q4_0: return n / GGML_QK * 18;
    }
    return 0;
}

uint32_t ggml_file_type(ggml_type_id t) {
    switch (t) {
    case GGML_F32: return 0;   /* LLAMA_FTYPE_ALL_F32 */
    case GGML_F16: return 1;   /* MOSTLY_F16 */
    case GGML_Q4_0: return 2;  /* MOSTLY_Q4_0 */
    case GGML_Q8_0: return 7;  /* MOSTLY_Q8_0 */
    case GGML_BF16: return 32; /* MOSTLY_BF16 */
    }
    return 0;
}

static void put_f16(uint8_t *p, float v) {
    uint16_t h = zen_f32_to_f16(v);
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

static float get_f16(const uint8_t *p) { return zen_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static void quantize_q8_0(uint8_t *dst, const float *x, size_t n) {
    for (size_t b = 0; b < n / GGML_QK; b++, x += GGML_QK, dst += 34) {
        float amax = 0.0f;
        for (int j = 0; j < GGML_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        put_f16(dst, d);
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
        put_f16(dst, d);
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
            float d = get_f16(src);
            for (int j = 0; j < GGML_QK; j++) *dst++ = (float)(int8_t)src[2 + j] * d;
        }
        break;
    case GGML_Q4_0:
        for (size_t b = 0; b < n / GGML_QK; b++, src += 18, dst += GGML_QK) {
            float d = get_f16(src);
            for (int j = 0; j < GGML_QK / 2; j++) {
                dst[j] = (float)((src[2 + j] & 0x0f) - 8) * d;
                dst[j + GGML_QK / 2] = (float)((src[2 + j] >> 4) - 8) * d;
            }
        }
        break;
    }
}
