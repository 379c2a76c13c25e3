/* tests/test_kquant.c: zen's Q4_K, Q5_K, Q6_K, Q5_0 and Q5_1 blocks.
 * - Layout: hand-built blocks dequantize to hand-computed values (where each
 *   bit of a scale, a min and a level sits).
 * - Against llama.cpp itself: libggml-base.so from node-llama-cpp (the path
 *   in ZEN_GGML_BASE, set by CMake) is loaded with dlopen and its
 *   quantize_row_*_ref / dequantize_row_* run on the same rows as zen's:
 *   random normal, uniform and heavy-tailed rows, all-zero and constant
 *   sub-blocks, single spikes, tiny and large magnitudes. Every byte must
 *   agree, and both dequantizers must give the same floats. Skipped, with the
 *   reason, where the library is not installed (scripts/test installs it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/quant.h"

/* Q4_K layout: d = 1 (f16 0x3C00), dmin = 0.5 (0x3800); sub-block 0 has
 * scale 2 and min 3 (scales[0] = 2, scales[4] = 3), sub-block 5 scale 33 and
 * min 17: its low nibbles sit in scales[9] = 0x1 | 0x1 << 4 and its top two
 * bits in scales[1] >> 6 (scale, 2: 0x80) and scales[5] >> 6 (min, 1: 0x40).
 * Levels: qs[l] low nibble = element l of sub-block 0, high nibble = element
 * l of sub-block 1; sub-block 5 is the high nibble of qs[64..95].
 * So x[0] = 1*2*q - 0.5*3 with q = 7 -> 12.5; x[5*32 + 1] = 33*q - 8.5, q = 9 -> 288.5 */
static void test_q4_k_layout(void **state) {
    (void)state;
    uint8_t b[144] = {0};
    b[0] = 0x00, b[1] = 0x3C; /* d = 1 */
    b[2] = 0x00, b[3] = 0x38; /* dmin = 0.5 */
    uint8_t *sc = b + 4, *qs = b + 16;
    sc[0] = 2, sc[4] = 3;
    sc[9] = 0x11, sc[1] = 0x80, sc[5] = 0x40;
    qs[0] = 0x07;
    qs[64 + 1] = 0x90;
    float y[256];
    ggml_dequantize(y, b, 256, GGML_Q4_K);
    assert_true(y[0] == 12.5f);
    assert_true(y[1] == -1.5f);          /* q 0: -dmin*m */
    assert_true(y[5 * 32 + 1] == 288.5f); /* 33 * 9 - 0.5 * 17 */
    assert_true(y[5 * 32] == -8.5f);
    assert_true(y[32] == 0.0f);           /* sub-block 1: scale 0, min 0 */
}

/* Q6_K layout: ql[128], qh[64], scales[16] (int8), d (f16) last.
 * Element 0: low 4 bits ql[0] & 0xF, high 2 bits qh[0] & 3, minus 32, times
 * d * scales[0]. Element 96 (third quarter of the first half, sub-block 6):
 * ql[32] >> 4 and (qh[0] >> 6) & 3. d = 0.5 (0x3800), scales[0] = 3,
 * scales[6] = -2: q0 = 5 | 2 << 4 = 37 -> 0.5*3*(37-32) = 7.5;
 * q96 = 1 | 3 << 4 = 49 -> 0.5*(-2)*(49-32) = -17 */
static void test_q6_k_layout(void **state) {
    (void)state;
    uint8_t b[210] = {0};
    b[208] = 0x00, b[209] = 0x38;
    int8_t *sc = (int8_t *)(b + 192);
    sc[0] = 3, sc[6] = -2;
    b[0] = 0x05;                /* ql[0] low nibble */
    b[32] = 0x10;               /* ql[32] high nibble: element 96 */
    b[128] = (uint8_t)(2 | 3 << 6); /* qh[0]: element 0 bits 0-1, element 96 bits 6-7 */
    float y[256];
    ggml_dequantize(y, b, 256, GGML_Q6_K);
    assert_true(y[0] == 7.5f);
    assert_true(y[96] == -17.0f);
    assert_true(y[1] == 0.5f * 3 * -32); /* level 0 */
}

/* ---- against libggml-base ---- */

typedef void (*quantize_fn)(const float *x, void *y, int64_t k);
typedef void (*dequantize_fn)(const void *x, float *y, int64_t k);

static void *ggml_lib(void) {
    static void *lib;
    static int tried;
    if (!tried) {
        tried = 1;
        const char *path = getenv("ZEN_GGML_BASE");
        if (path) lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!lib) fprintf(stderr, "test_kquant: llama.cpp's libggml-base.so not loaded (%s); the comparisons "
                                  "are skipped (scripts/test installs node-llama-cpp)\n",
                          path ? dlerror() : "ZEN_GGML_BASE not set");
    }
    return lib;
}

/* rows of 2048 values, kind by kind */
static void fill_row(float *x, int n, int kind, uint64_t *seed) {
    for (int i = 0; i < n; i++) {
        *seed = *seed * 6364136223846793005ULL + 1442695040888963407ULL;
        double u = ((*seed >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
        *seed = *seed * 6364136223846793005ULL + 1442695040888963407ULL;
        double v = ((*seed >> 11) + 0.5) / 9007199254740992.0;
        double g = sqrt(-2 * log(u)) * cos(6.283185307179586 * v); /* normal */
        switch (kind) {
        case 0: x[i] = (float)(0.02 * g); break;                       /* trained-weight-like */
        case 1: x[i] = (float)(2 * u - 1); break;                      /* uniform */
        case 2: x[i] = (float)(0.01 * g / (v * v + 0.01)); break;      /* heavy tails */
        case 3: x[i] = (i / 32) % 3 == 0 ? 0.0f : (float)(0.05 * g); break; /* zero sub-blocks */
        case 4: x[i] = (i / 16) % 2 ? 0.25f : -0.125f; break;          /* constant sub-blocks */
        case 5: x[i] = i % 97 == 5 ? (float)(40 * g) : (float)(1e-3 * g); break; /* spikes */
        case 6: x[i] = (float)(1e-7 * g); break;                       /* tiny: f16 scales go subnormal */
        case 7: x[i] = (float)(300 * g); break;                        /* large */
        case 8: x[i] = (float)(fabs(0.1 * g) + 0.05); break;           /* all positive */
        default: x[i] = (float)(-fabs(0.1 * g)); break;                /* all negative */
        }
    }
}

static void compare_type(ggml_type_id t, const char *qname, const char *dqname) {
    void *lib = ggml_lib();
    if (!lib) {
        skip();
        return;
    }
    quantize_fn ref_q = (quantize_fn)dlsym(lib, qname);
    dequantize_fn ref_dq = (dequantize_fn)dlsym(lib, dqname);
    assert_non_null(ref_q);
    assert_non_null(ref_dq);
    enum { N = 2048, ROWS_PER_KIND = 24, KINDS = 10 };
    size_t bytes = ggml_type_bytes(t, N), block_bytes = ggml_type_bytes(t, ggml_type_block(t));
    uint8_t *mine = malloc(bytes), *theirs = malloc(bytes);
    float *x = malloc(N * sizeof(float)), *y1 = malloc(N * sizeof(float)), *y2 = malloc(N * sizeof(float));
    uint64_t seed = 42 + (uint64_t)t;
    size_t blocks = 0, differ = 0;
    for (int kind = 0; kind < KINDS; kind++)
        for (int r = 0; r < ROWS_PER_KIND; r++) {
            fill_row(x, N, kind, &seed);
            ggml_quantize(mine, x, N, t);
            ref_q(x, theirs, N);
            for (size_t b = 0; b < bytes / block_bytes; b++, blocks++)
                if (memcmp(mine + b * block_bytes, theirs + b * block_bytes, block_bytes)) {
                    if (differ++ < 3) fprintf(stderr, "%s: kind %d row %d block %zu differs\n", qname, kind, r, b);
                }
            ggml_dequantize(y1, theirs, N, t);
            ref_dq(theirs, y2, N);
            assert_memory_equal(y1, y2, N * sizeof(float));
        }
    fprintf(stderr, "%s: %zu of %zu blocks byte-identical to llama.cpp's\n", ggml_type_name(t), blocks - differ,
            blocks);
    assert_int_equal(differ, 0);
    free(mine);
    free(theirs);
    free(x);
    free(y1);
    free(y2);
}

static void test_q4_k_llama(void **state) { (void)state; compare_type(GGML_Q4_K, "quantize_row_q4_K_ref", "dequantize_row_q4_K"); }
static void test_q5_k_llama(void **state) { (void)state; compare_type(GGML_Q5_K, "quantize_row_q5_K_ref", "dequantize_row_q5_K"); }
static void test_q6_k_llama(void **state) { (void)state; compare_type(GGML_Q6_K, "quantize_row_q6_K_ref", "dequantize_row_q6_K"); }
static void test_q5_0_llama(void **state) { (void)state; compare_type(GGML_Q5_0, "quantize_row_q5_0_ref", "dequantize_row_q5_0"); }
static void test_q5_1_llama(void **state) { (void)state; compare_type(GGML_Q5_1, "quantize_row_q5_1_ref", "dequantize_row_q5_1"); }
static void test_q8_0_llama(void **state) { (void)state; compare_type(GGML_Q8_0, "quantize_row_q8_0_ref", "dequantize_row_q8_0"); }
static void test_q4_0_llama(void **state) { (void)state; compare_type(GGML_Q4_0, "quantize_row_q4_0_ref", "dequantize_row_q4_0"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q4_k_layout), cmocka_unit_test(test_q6_k_layout),
        cmocka_unit_test(test_q4_k_llama),  cmocka_unit_test(test_q5_k_llama),
        cmocka_unit_test(test_q6_k_llama),  cmocka_unit_test(test_q5_0_llama),
        cmocka_unit_test(test_q5_1_llama),  cmocka_unit_test(test_q8_0_llama),
        cmocka_unit_test(test_q4_0_llama),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
