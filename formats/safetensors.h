/* formats/safetensors.h: SafeTensors files: memory-mapped reading with a strict
 * header check, single files and sharded sets (model.safetensors.index.json),
 * and a streaming writer (tensor by tensor, temp name then rename).
 *
 * Format: u64 LE header length N, N bytes of JSON
 *   {"name": {"dtype": "BF16", "shape": [...], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "value"}}
 * then the data; offsets are relative to the data start, contiguous from 0. */
#ifndef ZEN_SAFETENSORS_H
#define ZEN_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../kernels/dtype.h"
#include "../util/atomic_file.h"

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    char dtype[8];                 /* as written: "F32", "BF16", "I64", ... */
    size_t elem_size;              /* bytes per element */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
    const void *data;              /* into the mapping */
} st_tensor;

typedef struct {
    char *path;
    void *map;                     /* the whole file, read-only */
    size_t size;
    int mapped;                    /* map is ours (mmap), else the caller's memory */
    int count;
    st_tensor *tensors;            /* [count] in header order */
    int meta_count;
    char **meta_keys, **meta_values; /* __metadata__ (string values) */
} st_file;

int st_open(st_file *f, const char *path);
/* The same checks on a SafeTensors file already in memory (data must outlive
 * f); name stands for the file in errors. For tests and the fuzzer. */
int st_open_memory(st_file *f, const void *data, size_t size, const char *name);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
/* Tells the kernel that the mapped bytes [data, data + nbytes) of a tensor are
 * no longer needed, so a pass over a whole model (export) does not keep every
 * page it read resident; a later access reads them from the file again. */
void st_release(const void *data, size_t nbytes);
const char *st_meta(const st_file *f, const char *key);
/* The tensor's dtype as a floating zen_dtype, or an error naming file and tensor. */
int st_float_dtype(const st_file *f, const st_tensor *t, zen_dtype *out);
/* Checks the tensor has exactly the given shape (error names file, tensor, shapes). */
int st_check_shape(const st_file *f, const st_tensor *t, int ndim, const int64_t *shape);

/* A model directory's weights: model.safetensors, or the shards listed by
 * model.safetensors.index.json. */
typedef struct {
    int count;
    st_file *files;
} st_set;

int st_set_open_dir(st_set *s, const char *dir);
void st_set_close(st_set *s);
/* finds a tensor by name in any file of the set; *file (optional) gets its file */
const st_tensor *st_set_find(const st_set *s, const char *name, const st_file **file);

/* --- writing --- */
typedef struct {
    const char *name;
    zen_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
} st_entry;

typedef struct {
    zen_atomic_file file;          /* PATH.tmp until st_writer_close renames it */
    int count, current;
    size_t *nbytes;                /* [count] */
    size_t written;                /* bytes written of the current tensor */
} st_writer;

/* Writes the header for `entries` (in that order) and metadata pairs
 * meta[0]=key0, meta[1]=value0, ... (meta_pairs pairs). */
int st_writer_open(st_writer *w, const char *path, const st_entry *entries, int count,
                   const char *const *meta, int meta_pairs);
/* Appends bytes of the current tensor (a whole tensor or a piece of one). */
int st_writer_put(st_writer *w, const void *data, size_t nbytes);
/* Checks every tensor was written in full, then commits the temp file (fsync, rename). */
int st_writer_close(st_writer *w);
void st_writer_abort(st_writer *w);

/* ---- writing a model directory's weights ---- */
/* Writes entries[0..count) as model.safetensors, or as shards
 * model-0000k-of-0000n.safetensors + model.safetensors.index.json when they
 * exceed shard_bytes; tensors stay in order and a new shard starts when the next
 * tensor would pass the limit. produce(ctx, i, w) streams tensor i's bytes. */
typedef int (*st_produce_fn)(void *ctx, int index, st_writer *w);
int st_write_model_dir(const char *dir, const st_entry *entries, int count, uint64_t shard_bytes,
                       st_produce_fn produce, void *ctx);

#endif
