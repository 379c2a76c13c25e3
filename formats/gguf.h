/* formats/gguf.h: GGUF v3 files (llama.cpp's format): a streaming writer
 * (key/values and tensor infos first, then each tensor's data in order, each
 * padded to the alignment, to a temporary name renamed at the end) and a
 * bounds-checked reader for `zen info` and tests. All values little-endian. */
#ifndef ZEN_GGUF_H
#define ZEN_GGUF_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../util/atomic_file.h"
#include "quant.h"

#define GGUF_ALIGNMENT 32

typedef enum {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
    GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10,
    GGUF_I64 = 11, GGUF_F64 = 12
} gguf_value_type;

/* ---- writing ---- */
typedef struct {
    /* metadata is built in memory (the tokenizer arrays are the largest part) */
    unsigned char *kv;
    size_t kv_len, kv_cap;
    uint64_t kv_count;
    unsigned char *info;
    size_t info_len, info_cap;
    uint64_t tensor_count;
    uint64_t data_offset;   /* running offset of the next tensor's data */
    uint64_t *tensor_bytes; /* [tensor_count] */
    /* streaming */
    zen_atomic_file file;   /* PATH.tmp until gguf_finish renames it */
    uint64_t current, written;
    int failed;
} gguf_writer;

void gguf_writer_init(gguf_writer *w);
void gguf_add_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_add_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_add_f32(gguf_writer *w, const char *key, float v);
void gguf_add_bool(gguf_writer *w, const char *key, int v);
void gguf_add_string(gguf_writer *w, const char *key, const char *v);
void gguf_add_string_array(gguf_writer *w, const char *key, const char *const *v, size_t n);
void gguf_add_i32_array(gguf_writer *w, const char *key, const int32_t *v, size_t n);
/* A tensor with ne[0] the fastest-varying dimension (PyTorch [out, in] -> ne {in, out}). */
void gguf_add_tensor(gguf_writer *w, const char *name, int n_dims, const uint64_t *ne, ggml_type_id type);
/* Writes the header, metadata and infos to path.tmp; then gguf_put streams the
 * data of each tensor in the order added; gguf_finish pads, checks and renames. */
int gguf_begin(gguf_writer *w, const char *path);
int gguf_put(gguf_writer *w, const void *data, size_t n);
int gguf_finish(gguf_writer *w);
void gguf_writer_free(gguf_writer *w); /* also removes the temporary file of an unfinished write */

/* ---- reading ---- */
typedef struct {
    char *key;
    gguf_value_type type;     /* for arrays: GGUF_ARRAY, with elem_type and count */
    gguf_value_type elem_type;
    uint64_t count;
    const unsigned char *value; /* raw bytes in the file */
} gguf_kv;

typedef struct {
    char *name;
    uint32_t n_dims;          /* 1..4 */
    uint64_t ne[4];           /* ne[0] fastest; unused dims are 1 */
    uint32_t type;            /* a known ggml type (formats/quant.h) */
    uint64_t offset;          /* relative to the data section */
    uint64_t nbytes;
    const unsigned char *data;
} gguf_tensor_info;

typedef struct {
    char *path;
    unsigned char *map;
    size_t size;
    int mapped;               /* map is ours (mmap), else the caller's memory */
    uint32_t version, alignment;
    uint64_t n_kv, n_tensors;
    uint64_t kv_loaded, tensors_loaded; /* entries whose strings are allocated */
    uint64_t data_offset;     /* start of the data section in the file */
    gguf_kv *kvs;
    gguf_tensor_info *tensors;
} gguf_file;

/* Opens and checks a GGUF file (see gguf.c for every check); errors name the
 * file and what is wrong. */
int gguf_open(gguf_file *f, const char *path);
/* The same on a file already in memory (data must outlive f); for the fuzzer. */
int gguf_open_memory(gguf_file *f, const void *data, size_t size, const char *name);
/* bytes of one value of a scalar type (0 for strings, arrays and unknown types) */
uint64_t gguf_scalar_size(gguf_value_type t);
void gguf_close(gguf_file *f);
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);
const gguf_tensor_info *gguf_find_tensor(const gguf_file *f, const char *name);
/* a string value or array element i as a malloc'd C string */
char *gguf_string(const gguf_kv *kv, uint64_t i);
/* Typed reads of a key. A string (malloc'd), an array of elements of type
 * elem, a u32 or i32 id: NULL or -1 when absent or of another type. */
char *gguf_get_string(const gguf_file *f, const char *key);
const gguf_kv *gguf_get_array(const gguf_file *f, const char *key, gguf_value_type elem);
int32_t gguf_get_id(const gguf_file *f, const char *key);
/* the i-th int32 of an I32 array */
int32_t gguf_array_i32(const gguf_kv *kv, uint64_t i);
/* An unsigned integer (any integer type) or a float (f32, f64) key: 0, -1
 * when absent, or a one-line error naming the file and key (another type, a
 * negative integer). */
int gguf_get_uint(const gguf_file *f, const char *key, uint64_t *out);
int gguf_get_float(const gguf_file *f, const char *key, double *out);
const char *gguf_type_name(gguf_value_type t);

#endif
