/* kernels/quant_blocks.c: block layouts, their dequantisers and the
 * Q8_0 / Q4_0 / NF4 quantisers (see quant_blocks.h). Built with
 * -ffp-contract=off: ggml's reference code rounds every product. */
#include <math.h>
#include <string.h>

#include "half.h"
#include "quant_blocks.h"

#define QK 32     /* elements per Q8_0 / Q4_0 / Q5_0 / Q5_1 block */
#define QK_K 256  /* elements per k-quant super-block */
#define QK_NF4 64 /* elements per NF4 block */

const float zk_nf4_levels[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
    0.7229568362236023f, 1.0f};

void zk_put_f16le(uint8_t *p, float v) {
    uint16_t h = zen_f32_to_f16(v);
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

float zk_get_f16le(const uint8_t *p) { return zen_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* j < 4: the low 6 bits of q[j], q[j+4]; j >= 4: split between the low /
 * high nibbles of q[j+4] and the top 2 bits of q[j-4], q[j] */
void zk_k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* ---------------- quantisers ---------------- */

void zk_quantize_q8_0(void *dst_, const float *x, size_t n) {
    uint8_t *dst = dst_;
    for (size_t b = 0; b < n / QK; b++, x += QK, dst += 34) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        zk_put_f16le(dst, d);
        for (int j = 0; j < QK; j++) dst[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

void zk_quantize_q4_0(void *dst_, const float *x, size_t n) {
    uint8_t *dst = dst_;
    for (size_t b = 0; b < n / QK; b++, x += QK, dst += 18) {
        float amax = 0.0f, max = 0.0f; /* max: the value of largest magnitude, with its sign */
        for (int j = 0; j < QK; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
        zk_put_f16le(dst, d);
        for (int j = 0; j < QK / 2; j++) {
            int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + QK / 2] * id + 8.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            dst[2 + j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

/* the NF4 code of a value in [-1, 1]: the level whose interval between
 * midpoints holds it, i.e. the number of midpoints below it (a value on a
 * midpoint takes the lower level); counted without branches */
static uint8_t nf4_code(float v, const float mid[15]) {
    int q = 0;
    for (int i = 0; i < 15; i++) q += v > mid[i];
    return (uint8_t)q;
}

void zk_quantize_nf4(void *dst_, const float *x, size_t n) {
    uint8_t *dst = dst_;
    float mid[15];
    for (int i = 0; i < 15; i++) mid[i] = 0.5f * (zk_nf4_levels[i] + zk_nf4_levels[i + 1]);
    for (size_t b = 0; b < n / QK_NF4; b++, x += QK_NF4, dst += 36) {
        float amax = 0.0f;
        for (int j = 0; j < QK_NF4; j++) amax = fmaxf(amax, fabsf(x[j]));
        float inv = amax > 0.0f ? 1.0f / amax : 0.0f;
        memcpy(dst, &amax, 4);
        for (int j = 0; j < QK_NF4 / 2; j++)
            dst[4 + j] = (uint8_t)(nf4_code(x[2 * j] * inv, mid) << 4 | nf4_code(x[2 * j + 1] * inv, mid));
    }
}

/* ---------------- dequantisers ---------------- */

void zk_dequantize_q8_0(float *y, const void *src, size_t n) {
    const uint8_t *blk = src;
    for (size_t b = 0; b < n / QK; b++, blk += 34) {
        float d = zk_get_f16le(blk);
        for (int j = 0; j < QK; j++) *y++ = (float)(int8_t)blk[2 + j] * d;
    }
}

void zk_dequantize_q4_0(float *y, const void *src, size_t n) {
    const uint8_t *blk = src;
    for (size_t b = 0; b < n / QK; b++, blk += 18, y += QK) {
        float d = zk_get_f16le(blk);
        for (int j = 0; j < QK / 2; j++) {
            y[j] = (float)((blk[2 + j] & 0x0f) - 8) * d;
            y[j + QK / 2] = (float)((blk[2 + j] >> 4) - 8) * d;
        }
    }
}

void zk_dequantize_q5_0(float *y, const void *src, size_t n) {
    const uint8_t *blk = src;
    for (size_t b = 0; b < n / QK; b++, blk += 22, y += QK) {
        float d = zk_get_f16le(blk);
        uint32_t qh = get_u32(blk + 2);
        for (int j = 0; j < 16; j++) {
            int x0 = (blk[6 + j] & 0x0F) | (int)(((qh >> j) << 4) & 0x10);
            int x1 = (blk[6 + j] >> 4) | (int)((qh >> (j + 12)) & 0x10);
            y[j] = (float)(x0 - 16) * d;
            y[j + 16] = (float)(x1 - 16) * d;
        }
    }
}

void zk_dequantize_q5_1(float *y, const void *src, size_t n) {
    const uint8_t *blk = src;
    for (size_t b = 0; b < n / QK; b++, blk += 24, y += QK) {
        float d = zk_get_f16le(blk), m = zk_get_f16le(blk + 2);
        uint32_t qh = get_u32(blk + 4);
        for (int j = 0; j < 16; j++) {
            int x0 = (blk[8 + j] & 0x0F) | (int)(((qh >> j) << 4) & 0x10);
            int x1 = (blk[8 + j] >> 4) | (int)((qh >> (j + 12)) & 0x10);
            y[j] = (float)x0 * d + m;
            y[j + 16] = (float)x1 * d + m;
        }
    }
}

void zk_dequantize_q4_k(float *y, const void *src, size_t n) {
    const uint8_t *blk = src;
    for (size_t b = 0; b < n / QK_K; b++, blk += 144) {
        float d = zk_get_f16le(blk), min = zk_get_f16le(blk + 2);
        const uint8_t *q = blk + 16;
        for (int j = 0, is = 0; j < QK_K; j += 64, q += 32, is += 2) {
            uint8_t sc, m;
            zk_k4_scale_min(is, blk + 4, &sc, &m);
            float d1 = d * sc, m1 = min * m;
            zk_k4_scale_min(is + 1, blk + 4, &sc, &m);
            float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

void zk_dequantize_q5_k(float *y, const void *src, size_t n) {
    const uint8_t *blk = src;
    for (size_t b = 0; b < n / QK_K; b++, blk += 176) {
        float d = zk_get_f16le(blk), min = zk_get_f16le(blk + 2);
        const uint8_t *qh = blk + 16, *ql = blk + 48;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < QK_K; j += 64, ql += 32, is += 2, u1 = (uint8_t)(u1 << 2), u2 = (uint8_t)(u2 << 2)) {
            uint8_t sc, m;
            zk_k4_scale_min(is, blk + 4, &sc, &m);
            float d1 = d * sc, m1 = min * m;
            zk_k4_scale_min(is + 1, blk + 4, &sc, &m);
            float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

void zk_dequantize_q6_k(float *y, const void *src, size_t n) {
    const uint8_t *blk = src;
    for (size_t b = 0; b < n / QK_K; b++, blk += 210) {
        float d = zk_get_f16le(blk + 208);
        const uint8_t *ql = blk, *qh = blk + 128;
        const int8_t *sc = (const int8_t *)(blk + 192);
        for (int s = 0; s < QK_K; s += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

void zk_dequantize_nf4(float *y, const void *src, size_t n) {
    const uint8_t *blk = src;
    for (size_t b = 0; b < n / QK_NF4; b++, blk += 36, y += QK_NF4) {
        float amax;
        memcpy(&amax, blk, 4);
        for (int j = 0; j < QK_NF4 / 2; j++) {
            y[2 * j] = zk_nf4_levels[blk[4 + j] >> 4] * amax;
            y[2 * j + 1] = zk_nf4_levels[blk[4 + j] & 15] * amax;
        }
    }
}
