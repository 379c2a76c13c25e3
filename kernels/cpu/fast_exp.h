/* kernels/cpu/fast_exp.h: expf that GCC vectorises (Cephes' polynomial with a
 * Cody-Waite reduction; within 2 ulp of the true value for |x| < 87, checked
 * in tests/test_kernels.c). libm's expf is a scalar call per element, and the
 * softmax loops of attention and cross-entropy spend most of their time there. */
#ifndef ZEN_FAST_EXP_H
#define ZEN_FAST_EXP_H
#include <stddef.h>
#include <stdint.h>

static inline float zk_expf(float x_in) {
    /* clamp so 2^n stays a normal float; written so that NaN also lands inside
     * (a NaN must not reach the float -> int conversion) and is restored below */
    float x = x_in > -87.0f ? x_in : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    /* x = n ln2 + r, |r| <= ln2 / 2, with ln2 split in a high and a low part */
    /* n = round(x / ln2): adding and subtracting 1.5 * 2^23 rounds to an integer
     * with plain arithmetic, which vectorises where floorf does not */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        uint32_t i;
        float f;
    } scale;
    scale.i = (uint32_t)((int32_t)n + 127) << 23; /* 2^n, n in [-126, 127] */
    return x_in == x_in ? p * scale.f : x_in;    /* NaN in, NaN out */
}

/* sum of x[0..n) with 16 partial sums: vectorises (a single running float sum
 * cannot be reordered by the compiler) and loses less precision */
static inline float zk_sum(const float *x, size_t n) {
    float acc[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) acc[k] += x[i + k];
    for (; i < n; i++) acc[i % 16] += x[i];
    double total = 0.0;
    for (int k = 0; k < 16; k++) total += acc[k];
    return (float)total;
}

/* sum of exp(x[j] - shift) over j < n, in blocks through a small buffer */
static inline float zk_sum_exp(const float *x, size_t n, float shift) {
    float buf[256];
    double total = 0.0;
    for (size_t j0 = 0; j0 < n; j0 += 256) {
        size_t m = n - j0 < 256 ? n - j0 : 256;
        for (size_t j = 0; j < m; j++) buf[j] = zk_expf(x[j0 + j] - shift);
        total += zk_sum(buf, m);
    }
    return (float)total;
}

#endif
