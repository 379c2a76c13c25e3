/* formats/kquant.c: ggml's k-quant super-blocks (Q4_K, Q5_K, Q6_K) and the
 * 32-element Q5_0 / Q5_1 blocks that llama.cpp falls back to when a row is
 * not a multiple of 256, each with the reference quantizer of ggml-quants.c
 * (what llama-quantize runs without an importance matrix); their
 * dequantisers are kernels/quant_blocks.c's, which zen computes with. The arithmetic follows ggml's step for step in fp32 (same
 * operations in the same order, no fused multiply-add), so the bytes equal
 * llama.cpp's; tests/reference/test_kquant.py checks them against
 * libggml-base's own functions.
 *
 * Layouts (little-endian, f16 = IEEE half):
 *   Q4_K, 144 bytes per 256: f16 d, f16 dmin, u8 scales[12], u8 qs[128]
 *         eight sub-blocks of 32, each x ~ d*sc*q - dmin*m with 6-bit sc, m
 *         packed in scales[] (zk_k4_scale_min) and 4-bit q
 *   Q5_K, 176 bytes: f16 d, f16 dmin, scales[12], u8 qh[32], u8 qs[128]
 *         as Q4_K with a fifth bit per q in qh
 *   Q6_K, 210 bytes: u8 ql[128], u8 qh[64], i8 scales[16], f16 d
 *         sixteen sub-blocks of 16, x ~ d*sc*(q-32), 6-bit q
 *   Q5_0, 22 bytes per 32: f16 d, u32 qh, u8 qs[16]   x ~ d*(q-16)
 *   Q5_1, 24 bytes per 32: f16 d, f16 m, u32 qh, u8 qs[16]   x ~ d*q + m */
#include <float.h>
#include <math.h>
#include <string.h>

#include "../kernels/dtype.h"
#include "../kernels/quant_blocks.h"
#include "kquant.h"

#define QK_K 256
#define GROUP_MAX_EPS 1e-15f

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

/* round to nearest, ties to even, for |v| < 2^22: adding 1.5 * 2^23 leaves
 * the integer in the low mantissa bits (ggml's nearest_int) */
static int nearest_int(float v) {
    float shifted = v + 12582912.f;
    int32_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    return (bits & 0x007fffff) - 0x00400000;
}

/* Symmetric levels for n values in [-nmax, nmax): the scale found by trying
 * 19 candidate inverse scales around -nmax/max and keeping the one with the
 * best weighted least-squares fit (weights x^2: ggml's rmse_type 1). L gets
 * the levels + nmax. */
static float symmetric_levels(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i]))));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Levels 0..nmax with an offset: x ~ scale * L - min (min >= 0 returned in
 * *the_min). Starts from the min/max grid, then tries nstep+1 inverse scales
 * (rmin + rdelta*is + nmax)/(max - min), each with the weighted
 * least-squares scale and offset for its levels, keeping the lowest weighted
 * squared error (ggml's make_qkx2_quants, use_mad false). */
static float offset_levels(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                           uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * L[i] + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = imax(0, imin(nmax, nearest_int(iscale * (x[i] - min))));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Q4_K / Q5_K share everything but the level count (15 or 31), the search
 * parameters and how the levels are packed */
static void quantize_k_offset(uint8_t *blk, const float *x, int nmax, float rmin, float rdelta, int nstep,
                              uint8_t *scales_out, uint8_t L[QK_K]) {
    float mins[QK_K / 32], scales[QK_K / 32], weights[32];
    uint8_t Laux[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = offset_levels(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, rdelta, nstep);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(scales_out, 0, 12);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            scales_out[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales_out[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    zk_put_f16le(blk, max_scale / 63.f);
    zk_put_f16le(blk + 2, max_min / 63.f);
    float d_all = zk_get_f16le(blk), dmin_all = zk_get_f16le(blk + 2);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        zk_k4_scale_min(j, scales_out, &sc, &m);
        const float d = d_all * sc;
        if (!d) continue;
        const float dm = dmin_all * m;
        for (int ii = 0; ii < 32; ii++)
            L[32 * j + ii] = (uint8_t)imax(0, imin(nmax, nearest_int((x[32 * j + ii] + dm) / d)));
    }
}

static void quantize_q4_k(uint8_t *dst, const float *x, size_t n) {
    uint8_t L[QK_K];
    for (size_t b = 0; b < n / QK_K; b++, x += QK_K, dst += 144) {
        quantize_k_offset(dst, x, 15, -1.f, 0.1f, 20, dst + 4, L);
        uint8_t *q = dst + 16; /* [128]: low nibble sub-block 2i, high 2i+1 */
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void quantize_q5_k(uint8_t *dst, const float *x, size_t n) {
    uint8_t L[QK_K];
    for (size_t b = 0; b < n / QK_K; b++, x += QK_K, dst += 176) {
        quantize_k_offset(dst, x, 31, -0.5f, 0.1f, 15, dst + 4, L);
        uint8_t *qh = dst + 16, *ql = dst + 48; /* qh [32]: bit 2i / 2i+1 for pair i; ql [128] */
        memset(qh, 0, 32);
        uint8_t m1 = 1, m2 = 2;
        for (int s = 0; s < QK_K; s += 64, ql += 32, m1 = (uint8_t)(m1 << 2), m2 = (uint8_t)(m2 << 2)) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[s + j], l2 = L[s + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
        }
    }
}

static void quantize_q6_k(uint8_t *dst, const float *x, size_t n) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (size_t b = 0; b < n / QK_K; b++, x += QK_K, dst += 210) {
        uint8_t *ql = dst, *qh = dst + 128;
        int8_t *sc = (int8_t *)(dst + 192);
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ib++) {
            scales[ib] = symmetric_levels(16, 32, x + 16 * ib, L + 16 * ib);
            float abs_scale = fabsf(scales[ib]);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scales[ib];
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(dst, 0, 210);
            continue;
        }
        float iscale = -128.f / max_scale;
        zk_put_f16le(dst + 208, 1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ib++) sc[ib] = (int8_t)imin(127, nearest_int(iscale * scales[ib]));
        float d_all = zk_get_f16le(dst + 208);
        for (int j = 0; j < QK_K / 16; j++) {
            float d = d_all * sc[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ii++)
                L[16 * j + ii] = (int8_t)(imax(-32, imin(31, nearest_int(x[16 * j + ii] / d))) + 32);
        }
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF,
                        q4 = L[j + l + 96] & 0xF;
                ql[l] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                  ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void quantize_q5_0(uint8_t *dst, const float *x, size_t n) {
    for (size_t b = 0; b < n / 32; b++, x += 32, dst += 22) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        const float d = max / -16, id = d ? 1.0f / d : 0.0f;
        zk_put_f16le(dst, d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            uint8_t xi0 = (uint8_t)imin(31, (int8_t)(x[j] * id + 16.5f));
            uint8_t xi1 = (uint8_t)imin(31, (int8_t)(x[j + 16] * id + 16.5f));
            dst[6 + j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= (uint32_t)((xi0 & 0x10u) >> 4) << j;
            qh |= (uint32_t)((xi1 & 0x10u) >> 4) << (j + 16);
        }
        put_u32(dst + 2, qh);
    }
}

static void quantize_q5_1(uint8_t *dst, const float *x, size_t n) {
    for (size_t b = 0; b < n / 32; b++, x += 32, dst += 24) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 31, id = d ? 1.0f / d : 0.0f;
        zk_put_f16le(dst, d);
        zk_put_f16le(dst + 2, min);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            uint8_t xi0 = (uint8_t)((x[j] - min) * id + 0.5f), xi1 = (uint8_t)((x[j + 16] - min) * id + 0.5f);
            dst[8 + j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= (uint32_t)((xi0 & 0x10u) >> 4) << j;
            qh |= (uint32_t)((xi1 & 0x10u) >> 4) << (j + 16);
        }
        put_u32(dst + 4, qh);
    }
}

int kquant_quantize(void *dst, const float *src, size_t n, ggml_type_id t) {
    switch (t) {
    case GGML_Q4_K: quantize_q4_k(dst, src, n); return 0;
    case GGML_Q5_K: quantize_q5_k(dst, src, n); return 0;
    case GGML_Q6_K: quantize_q6_k(dst, src, n); return 0;
    case GGML_Q5_0: quantize_q5_0(dst, src, n); return 0;
    case GGML_Q5_1: quantize_q5_1(dst, src, n); return 0;
    default: return -1;
    }
}
