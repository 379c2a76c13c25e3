/* tests/test_safetensors.c: SafeTensors round trips (f32, f16, bf16, streamed in
 * pieces, sharded sets) and a set of broken files, each refused with its own
 * one-line error and never read out of bounds (the suite also runs under ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "util/error.h"
#include "util/file.h"

static char dir[256];

static char *path_of(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

/* writes a file of: u64 header length, header text, then data_len bytes of data */
static void write_raw(const char *name, const char *header, size_t data_len, int64_t length_override) {
    FILE *f = fopen(path_of(name), "wb");
    uint64_t n = length_override >= 0 ? (uint64_t)length_override : strlen(header);
    fwrite(&n, 8, 1, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < data_len; i++) fputc((int)i, f);
    fclose(f);
}

static void expect_refused(const char *name, const char *fragment) {
    st_file f;
    int rc = st_open(&f, path_of(name));
    if (rc != ZEN_ERR_INPUT || !strstr(zen_last_error(), fragment))
        fail_msg("%s: rc %d, message '%s' (expected to contain '%s')", name, rc, zen_last_error(), fragment);
    assert_non_null(strstr(zen_last_error(), name)); /* names the file */
    assert_null(strchr(zen_last_error(), '\n'));
}

static void test_roundtrip(void **state) {
    (void)state;
    float a[6] = {1, -2, 3.5f, 0.25f, 1e-3f, 7};
    uint16_t h[6], b[6];
    zen_narrow(h, a, ZEN_F16, 6);
    zen_narrow(b, a, ZEN_BF16, 6);
    st_entry e[4] = {{"a.f32", ZEN_F32, 2, {2, 3}}, {"b.f16", ZEN_F16, 1, {6}},
                     {"c.bf16", ZEN_BF16, 3, {1, 2, 3}}, {"empty", ZEN_F32, 1, {0}}};
    const char *meta[] = {"format", "pt", "loss", "1.25"};
    st_writer w;
    assert_int_equal(st_writer_open(&w, path_of("ok.safetensors"), e, 4, meta, 2), 0);
    assert_int_equal(st_writer_put(&w, a, 10), 0); /* a tensor in two pieces */
    assert_int_equal(st_writer_put(&w, (char *)a + 10, 14), 0);
    assert_int_equal(st_writer_put(&w, h, 12), 0);
    assert_int_equal(st_writer_put(&w, b, 12), 0);
    assert_int_equal(st_writer_close(&w), 0);
    assert_false(zen_file_exists(path_of("ok.safetensors.tmp")));

    st_file f;
    assert_int_equal(st_open(&f, path_of("ok.safetensors")), 0);
    assert_int_equal(f.count, 4);
    assert_string_equal(st_meta(&f, "loss"), "1.25");
    const st_tensor *t = st_find(&f, "a.f32");
    int64_t shape[2] = {2, 3};
    assert_int_equal(st_check_shape(&f, t, 2, shape), 0);
    assert_memory_equal(t->data, a, 24);
    zen_dtype dt;
    t = st_find(&f, "b.f16");
    assert_int_equal(st_float_dtype(&f, t, &dt), 0);
    assert_int_equal(dt, ZEN_F16);
    assert_memory_equal(t->data, h, 12);
    t = st_find(&f, "c.bf16");
    assert_int_equal(t->ndim, 3);
    assert_memory_equal(t->data, b, 12);
    assert_int_equal(st_find(&f, "empty")->nbytes, 0);
    int64_t wrong[2] = {3, 2};
    assert_int_equal(st_check_shape(&f, st_find(&f, "a.f32"), 2, wrong), ZEN_ERR_INPUT);
    assert_non_null(strstr(zen_last_error(), "[2, 3]"));
    st_close(&f);
}

static void test_writer_checks_sizes(void **state) {
    (void)state;
    st_entry e[1] = {{"x", ZEN_F32, 1, {4}}};
    st_writer w;
    assert_int_equal(st_writer_open(&w, path_of("short.safetensors"), e, 1, NULL, 0), 0);
    float x[4] = {0};
    assert_int_equal(st_writer_put(&w, x, 8), 0);
    assert_int_not_equal(st_writer_close(&w), 0); /* only half written: refused, nothing left behind */
    assert_false(zen_file_exists(path_of("short.safetensors")));
    assert_false(zen_file_exists(path_of("short.safetensors.tmp")));
}

static void test_sharded_set(void **state) {
    (void)state;
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    st_entry ea = {"alpha", ZEN_F32, 1, {2}}, eb = {"beta", ZEN_F32, 1, {3}};
    st_writer w;
    char sub[300];
    snprintf(sub, sizeof sub, "%s/sharded", dir);
    zen_mkdir_p(sub);
    assert_int_equal(st_writer_open(&w, path_of("sharded/model-00001-of-00002.safetensors"), &ea, 1, NULL, 0), 0);
    st_writer_put(&w, a, 8);
    assert_int_equal(st_writer_close(&w), 0);
    assert_int_equal(st_writer_open(&w, path_of("sharded/model-00002-of-00002.safetensors"), &eb, 1, NULL, 0), 0);
    st_writer_put(&w, b, 12);
    assert_int_equal(st_writer_close(&w), 0);
    FILE *f = fopen(path_of("sharded/model.safetensors.index.json"), "w");
    fputs("{\"metadata\": {\"total_size\": 20}, \"weight_map\": {\"alpha\": \"model-00001-of-00002.safetensors\","
          " \"beta\": \"model-00002-of-00002.safetensors\"}}", f);
    fclose(f);
    st_set s;
    assert_int_equal(st_set_open_dir(&s, sub), 0);
    assert_int_equal(s.count, 2);
    const st_file *which;
    const st_tensor *t = st_set_find(&s, "beta", &which);
    assert_non_null(t);
    assert_memory_equal(t->data, b, 12);
    st_set_close(&s);
    /* an index that places a tensor in the wrong shard is refused */
    f = fopen(path_of("sharded/model.safetensors.index.json"), "w");
    fputs("{\"weight_map\": {\"alpha\": \"model-00002-of-00002.safetensors\"}}", f);
    fclose(f);
    assert_int_equal(st_set_open_dir(&s, sub), ZEN_ERR_INPUT);
    assert_non_null(strstr(zen_last_error(), "alpha"));
}

static void test_broken_files(void **state) {
    (void)state;
    const char *good = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    write_raw("truncated.safetensors", good, 5, -1);
    expect_refused("truncated.safetensors", "past the end");
    write_raw("badjson.safetensors", "{\"x\":{\"dtype\":\"F32\",", 8, -1);
    expect_refused("badjson.safetensors", "not valid JSON");
    write_raw("offsets.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 8, -1);
    expect_refused("offsets.safetensors", "contiguous");
    write_raw("dtypesize.safetensors", "{\"x\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, -1);
    expect_refused("dtypesize.safetensors", "needs 4");
    write_raw("headerlen.safetensors", good, 8, 1 << 20);
    expect_refused("headerlen.safetensors", "header length");
    write_raw("tiny.safetensors", "", 0, -1);
    FILE *f = fopen(path_of("tiny.safetensors"), "wb");
    fputs("abc", f);
    fclose(f);
    expect_refused("tiny.safetensors", "too short");
    write_raw("dup.safetensors",
              "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, -1);
    expect_refused("dup.safetensors", "appears twice");
    write_raw("extra.safetensors", good, 12, -1);
    expect_refused("extra.safetensors", "file holds 12");
    write_raw("unknowndtype.safetensors", "{\"x\":{\"dtype\":\"Q9\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, -1);
    expect_refused("unknowndtype.safetensors", "unknown dtype");
    write_raw("negshape.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, -1);
    expect_refused("negshape.safetensors", "shape entry 0");
    write_raw("notobj.safetensors", "[1, 2, 3]", 0, -1);
    expect_refused("notobj.safetensors", "start with '{'");
    /* a valid file whose tensor has an integer dtype is readable, but not as a weight */
    write_raw("int.safetensors", "{\"x\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, -1);
    st_file sf;
    assert_int_equal(st_open(&sf, path_of("int.safetensors")), 0);
    zen_dtype dt;
    assert_int_equal(st_float_dtype(&sf, st_find(&sf, "x"), &dt), ZEN_ERR_INPUT);
    assert_non_null(strstr(zen_last_error(), "I32"));
    st_close(&sf);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/zen_test_st_%d", (int)getpid());
    zen_mkdir_p(dir);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_writer_checks_sizes),
        cmocka_unit_test(test_sharded_set),
        cmocka_unit_test(test_broken_files),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) rc |= 0;
    return rc;
}
