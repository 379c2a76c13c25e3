/* tests/test_export.c: ggml's Q8_0 and Q4_0 blocks against hand-worked bytes,
 * and GGUF writing read back (header, key types, tensor infos, aligned data). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/gguf.h"
#include "formats/quant.h"

/* Q8_0, d = amax / 127 with amax = 7.9375 = 127 * 2^-4, so d = 0.0625 (f16 0x2C00):
 *   7.9375 -> 127 (0x7F); -0.03125 = -0.5 d -> roundf(-0.5) = -1 (0xFF);
 *   0.09375 = 1.5 d -> 2; 1.0 = 16 d -> 16 (0x10); zeros -> 0 */
static void test_q8_0_block(void **state) {
    (void)state;
    float x[32] = {7.9375f, -0.03125f, 0.09375f, 1.0f};
    unsigned char b[34];
    ggml_quantize(b, x, 32, GGML_Q8_0);
    unsigned char expect[34] = {0x00, 0x2C, 0x7F, 0xFF, 0x02, 0x10};
    assert_memory_equal(b, expect, 34);
    float back[32];
    ggml_dequantize(back, b, 32, GGML_Q8_0);
    assert_true(back[0] == 7.9375f && back[1] == -0.0625f && back[2] == 0.125f && back[3] == 1.0f && back[4] == 0.0f);
    assert_int_equal(ggml_type_bytes(GGML_Q8_0, 64), 68);
}

/* Q4_0, the value of largest magnitude is -2.0, so d = -2 / -8 = 0.25 (f16 0x3400),
 * 1/d = 4, q = min(15, (int)(x * 4 + 8.5)):
 *   x[0] = -2.0 -> 0;  x[16] = 1.75 -> 15;  x[1] = 0.1 -> 8;  x[17] = -0.3 -> 7;  0 -> 8
 * byte j holds element j in its low nibble and element j + 16 in its high one:
 *   qs[0] = 0 | 15 << 4 = 0xF0, qs[1] = 8 | 7 << 4 = 0x78, the rest 0x88 */
static void test_q4_0_block(void **state) {
    (void)state;
    float x[32] = {0};
    x[0] = -2.0f, x[16] = 1.75f, x[1] = 0.1f, x[17] = -0.3f;
    unsigned char b[18];
    ggml_quantize(b, x, 32, GGML_Q4_0);
    unsigned char expect[18] = {0x00, 0x34, 0xF0, 0x78};
    for (int j = 2; j < 16; j++) expect[2 + j] = 0x88;
    assert_memory_equal(b, expect, 18);
    float back[32];
    ggml_dequantize(back, b, 32, GGML_Q4_0);
    assert_true(back[0] == -2.0f && back[16] == 1.75f && back[1] == 0.0f && back[17] == -0.25f && back[5] == 0.0f);
    assert_int_equal(ggml_type_bytes(GGML_Q4_0, 64), 36);
}

static void test_gguf_roundtrip(void **state) {
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "/tmp/zen_test_gguf_%d.gguf", (int)getpid());
    gguf_writer w;
    gguf_writer_init(&w);
    gguf_add_string(&w, "general.architecture", "qwen3");
    gguf_add_u32(&w, "qwen3.block_count", 36);
    gguf_add_f32(&w, "qwen3.rope.freq_base", 1e6f);
    const char *toks[3] = {"a", "bc", "[PAD2]"};
    gguf_add_string_array(&w, "tokenizer.ggml.tokens", toks, 3);
    int32_t types[3] = {1, 3, 5};
    gguf_add_i32_array(&w, "tokenizer.ggml.token_type", types, 3);
    uint64_t ne_a[2] = {3, 2}, ne_b[1] = {5};
    gguf_add_tensor(&w, "a.weight", 2, ne_a, GGML_F32);
    gguf_add_tensor(&w, "b.weight", 1, ne_b, GGML_F16);
    assert_int_equal(gguf_begin(&w, path), 0);
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[5] = {1, 2, 3, 4, 5};
    assert_int_equal(gguf_put(&w, a, 12), 0); /* in two pieces */
    assert_int_equal(gguf_put(&w, a + 3, 12), 0);
    assert_int_equal(gguf_put(&w, b, 10), 0);
    assert_int_equal(gguf_finish(&w), 0);
    gguf_writer_free(&w);

    gguf_file f;
    assert_int_equal(gguf_open(&f, path), 0);
    assert_int_equal(f.version, 3);
    const gguf_kv *kv = gguf_find_kv(&f, "qwen3.block_count");
    assert_non_null(kv);
    assert_int_equal(kv->type, GGUF_U32); /* counts must be u32 for llama.cpp */
    uint32_t v;
    memcpy(&v, kv->value, 4);
    assert_int_equal(v, 36);
    assert_int_equal(gguf_find_kv(&f, "qwen3.rope.freq_base")->type, GGUF_F32);
    kv = gguf_find_kv(&f, "tokenizer.ggml.tokens");
    assert_int_equal(kv->count, 3);
    char *s = gguf_string(kv, 1);
    assert_string_equal(s, "bc");
    free(s);
    const gguf_tensor_info *t = gguf_find_tensor(&f, "a.weight");
    assert_int_equal(t->ne[0], 3);
    assert_int_equal(t->ne[1], 2);
    assert_memory_equal(t->data, a, 24);
    t = gguf_find_tensor(&f, "b.weight");
    assert_int_equal(t->offset % GGUF_ALIGNMENT, 0); /* each tensor starts aligned */
    assert_int_equal(t->offset, 32);
    assert_memory_equal(t->data, b, 10);
    gguf_close(&f);
    /* a truncated file is refused */
    assert_int_equal(truncate(path, 100), 0);
    assert_int_not_equal(gguf_open(&f, path), 0);
    remove(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8_0_block),
        cmocka_unit_test(test_q4_0_block),
        cmocka_unit_test(test_gguf_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
