/* formats/gguf.c: GGUF v3 writing (streamed) and reading (bounds-checked). */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "gguf.h"

/* ---------------- writing ---------------- */

static void grow(gguf_writer *w, unsigned char **buf, size_t *len, size_t *cap, const void *data, size_t n) {
    if (w->failed) return;
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < *len + n) c *= 2;
        unsigned char *b = realloc(*buf, c);
        if (!b) {
            w->failed = 1;
            return;
        }
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
}

static void kv_bytes(gguf_writer *w, const void *d, size_t n) { grow(w, &w->kv, &w->kv_len, &w->kv_cap, d, n); }
static void info_bytes(gguf_writer *w, const void *d, size_t n) { grow(w, &w->info, &w->info_len, &w->info_cap, d, n); }

/* little-endian scalars (this code assumes a little-endian host, as ggml does) */
static void kv_u32(gguf_writer *w, uint32_t v) { kv_bytes(w, &v, 4); }
static void kv_u64(gguf_writer *w, uint64_t v) { kv_bytes(w, &v, 8); }
static void kv_str(gguf_writer *w, const char *s) {
    uint64_t n = strlen(s);
    kv_u64(w, n);
    kv_bytes(w, s, n);
}
static void kv_key(gguf_writer *w, const char *key, gguf_value_type type) {
    kv_str(w, key);
    kv_u32(w, (uint32_t)type);
    w->kv_count++;
}

void gguf_writer_init(gguf_writer *w) { memset(w, 0, sizeof *w); }

void gguf_add_u32(gguf_writer *w, const char *key, uint32_t v) {
    kv_key(w, key, GGUF_U32);
    kv_u32(w, v);
}

void gguf_add_i32(gguf_writer *w, const char *key, int32_t v) {
    kv_key(w, key, GGUF_I32);
    kv_bytes(w, &v, 4);
}

void gguf_add_f32(gguf_writer *w, const char *key, float v) {
    kv_key(w, key, GGUF_F32);
    kv_bytes(w, &v, 4);
}

void gguf_add_bool(gguf_writer *w, const char *key, int v) {
    kv_key(w, key, GGUF_BOOL);
    unsigned char b = v ? 1 : 0;
    kv_bytes(w, &b, 1);
}

void gguf_add_string(gguf_writer *w, const char *key, const char *v) {
    kv_key(w, key, GGUF_STRING);
    kv_str(w, v);
}

void gguf_add_string_array(gguf_writer *w, const char *key, const char *const *v, size_t n) {
    kv_key(w, key, GGUF_ARRAY);
    kv_u32(w, GGUF_STRING);
    kv_u64(w, n);
    for (size_t i = 0; i < n; i++) kv_str(w, v[i]);
}

void gguf_add_i32_array(gguf_writer *w, const char *key, const int32_t *v, size_t n) {
    kv_key(w, key, GGUF_ARRAY);
    kv_u32(w, GGUF_I32);
    kv_u64(w, n);
    kv_bytes(w, v, 4 * n);
}

static uint64_t pad_to(uint64_t x) { return (x + GGUF_ALIGNMENT - 1) / GGUF_ALIGNMENT * GGUF_ALIGNMENT; }

void gguf_add_tensor(gguf_writer *w, const char *name, int n_dims, const uint64_t *ne, ggml_type_id type) {
    uint64_t len = strlen(name), numel = 1;
    info_bytes(w, &len, 8);
    info_bytes(w, name, len);
    uint32_t nd = (uint32_t)n_dims, t = (uint32_t)type;
    info_bytes(w, &nd, 4);
    for (int d = 0; d < n_dims; d++) {
        info_bytes(w, &ne[d], 8);
        numel *= ne[d];
    }
    info_bytes(w, &t, 4);
    info_bytes(w, &w->data_offset, 8);
    uint64_t bytes = ggml_type_bytes(type, numel);
    uint64_t *grown = realloc(w->tensor_bytes, (w->tensor_count + 1) * sizeof(uint64_t));
    if (!grown) {
        w->failed = 1;
        return;
    }
    w->tensor_bytes = grown;
    w->tensor_bytes[w->tensor_count++] = bytes;
    w->data_offset += pad_to(bytes);
}

static int write_zeros(gguf_writer *w, size_t n) {
    static const unsigned char zeros[GGUF_ALIGNMENT] = {0};
    return zen_atomic_write(&w->file, zeros, n);
}

int gguf_begin(gguf_writer *w, const char *path) {
    if (w->failed) return zen_fail(ZEN_ERR_INTERNAL, "out of memory building the GGUF metadata of %s", path);
    int rc = zen_atomic_open(&w->file, path);
    if (rc) return rc;
    uint32_t magic = 0x46554747u, version = 3;
    uint64_t header = 24 + w->kv_len + w->info_len;
    if (!(rc = zen_atomic_write(&w->file, &magic, 4)) && !(rc = zen_atomic_write(&w->file, &version, 4)) &&
        !(rc = zen_atomic_write(&w->file, &w->tensor_count, 8)) && !(rc = zen_atomic_write(&w->file, &w->kv_count, 8)) &&
        !(rc = zen_atomic_write(&w->file, w->kv, w->kv_len)) && !(rc = zen_atomic_write(&w->file, w->info, w->info_len)))
        rc = write_zeros(w, (size_t)(pad_to(header) - header));
    if (rc) return rc;
    while (w->current < w->tensor_count && w->tensor_bytes[w->current] == 0) w->current++;
    return 0;
}

int gguf_put(gguf_writer *w, const void *data, size_t n) {
    const unsigned char *p = data;
    while (n > 0) {
        if (w->current >= w->tensor_count)
            return zen_fail(ZEN_ERR_INTERNAL, "%s: more tensor data than declared", w->file.path);
        uint64_t room = w->tensor_bytes[w->current] - w->written;
        size_t k = n < room ? n : (size_t)room;
        int rc = zen_atomic_write(&w->file, p, k);
        if (rc) return rc;
        p += k;
        n -= k;
        w->written += k;
        if (w->written == w->tensor_bytes[w->current]) {
            if ((rc = write_zeros(w, (size_t)(pad_to(w->written) - w->written)))) return rc;
            w->current++;
            w->written = 0;
        }
    }
    return 0;
}

int gguf_finish(gguf_writer *w) {
    if (w->current != w->tensor_count)
        return zen_fail(ZEN_ERR_INTERNAL, "%s: %llu of %llu tensors written", w->file.path,
                        (unsigned long long)w->current, (unsigned long long)w->tensor_count);
    return zen_atomic_commit(&w->file); /* fsync, close once, rename; the temp file goes on failure */
}

void gguf_writer_free(gguf_writer *w) {
    zen_atomic_abort(&w->file);
    free(w->kv);
    free(w->info);
    free(w->tensor_bytes);
    memset(w, 0, sizeof *w);
}

/* ---------------- reading ----------------
 * Everything the header says is checked before it is used, as strictly as
 * ggml's own reader (gguf.cpp) or more: version 3; counts and string lengths
 * inside the file; known value types, no nested arrays, no key given twice;
 * general.alignment a u32 power of two; tensors of 1-4 dims whose element
 * count fits in int64, of a known ggml type with whole blocks per row, no
 * name given twice, each at the offset ggml expects (the padded running sum,
 * so none overlap or are misaligned) and inside the file. */

typedef struct {
    const unsigned char *p, *end;
    int bad;
} cursor;

static const unsigned char *take(cursor *c, uint64_t n) {
    if (c->bad || n > (uint64_t)(c->end - c->p)) {
        c->bad = 1;
        return NULL;
    }
    const unsigned char *r = c->p;
    c->p += n;
    return r;
}

static uint64_t take_u64(cursor *c) {
    const unsigned char *p = take(c, 8);
    uint64_t v = 0;
    if (p) memcpy(&v, p, 8);
    return v;
}

static uint32_t take_u32(cursor *c) {
    const unsigned char *p = take(c, 4);
    uint32_t v = 0;
    if (p) memcpy(&v, p, 4);
    return v;
}

static char *take_string(cursor *c, int *oom) {
    uint64_t n = take_u64(c);
    const unsigned char *s = take(c, n);
    if (!s) return NULL;
    char *out = malloc(n + 1);
    if (!out) {
        *oom = 1;
        c->bad = 1;
        return NULL;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

uint64_t gguf_scalar_size(gguf_value_type t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

/* skips count values of type t (strings or scalars) */
static void skip_values(cursor *c, gguf_value_type t, uint64_t count) {
    uint64_t size = gguf_scalar_size(t);
    if (t == GGUF_STRING) {
        for (uint64_t k = 0; k < count && !c->bad; k++) take(c, take_u64(c));
    } else if (size) {
        if (count > UINT64_MAX / size) c->bad = 1;
        else take(c, count * size);
    } else {
        c->bad = 1; /* an unknown type, or an array inside an array */
    }
}

/* grows *arr (of elem-byte items) to hold n + 1 */
static int grow_array(void **arr, uint64_t *cap, uint64_t n, size_t elem) {
    if (n < *cap) return 0;
    uint64_t c = *cap ? 2 * *cap : 16;
    void *a = realloc(*arr, (size_t)c * elem);
    if (!a) return -1;
    memset((char *)a + (size_t)*cap * elem, 0, (size_t)(c - *cap) * elem);
    *arr = a;
    *cap = c;
    return 0;
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* a printable copy of a name from the file for messages (control bytes as ?) */
static const char *printable(const char *s, char *buf, size_t cap) {
    size_t i = 0;
    for (; s && s[i] && i + 1 < cap; i++) buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    buf[i] = '\0';
    return buf;
}

/* refuses a name given twice among n items of `stride` bytes whose char *
 * name sits at `offset` in each (keys, tensor infos) */
static int refuse_duplicates(const char *path, const char *what, const void *items, uint64_t n, size_t stride,
                             size_t offset) {
    if (n < 2) return 0;
    char **names = malloc((size_t)n * sizeof *names), buf[128];
    if (!names) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    for (uint64_t i = 0; i < n; i++) memcpy(&names[i], (const char *)items + i * stride + offset, sizeof(char *));
    qsort(names, (size_t)n, sizeof *names, name_cmp);
    int rc = 0;
    for (uint64_t i = 1; i < n && !rc; i++)
        if (!strcmp(names[i - 1], names[i]))
            rc = zen_fail(ZEN_ERR_INPUT, "%s: %s '%s' appears twice", path, what, printable(names[i], buf, sizeof buf));
    free(names);
    return rc;
}

static int parse_kvs(gguf_file *f, cursor *c, uint32_t *alignment) {
    const char *path = f->path;
    uint64_t cap = 0;
    int oom = 0;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        if (grow_array((void **)&f->kvs, &cap, i, sizeof(gguf_kv))) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        gguf_kv *kv = &f->kvs[i];
        kv->key = take_string(c, &oom);
        if (kv->key) f->kv_loaded = i + 1;
        kv->type = (gguf_value_type)take_u32(c);
        kv->value = c->p;
        if (!c->bad && kv->type == GGUF_ARRAY) {
            kv->elem_type = (gguf_value_type)take_u32(c);
            kv->count = take_u64(c);
            kv->value = c->p;
            if (!c->bad && kv->elem_type != GGUF_STRING && !gguf_scalar_size(kv->elem_type))
                return zen_fail(ZEN_ERR_INPUT, "%s: key %llu has arrays of unknown type %u", path,
                                (unsigned long long)i, (unsigned)kv->elem_type);
            skip_values(c, kv->elem_type, kv->count);
        } else if (!c->bad) {
            if (kv->type != GGUF_STRING && !gguf_scalar_size(kv->type))
                return zen_fail(ZEN_ERR_INPUT, "%s: key %llu has unknown value type %u", path, (unsigned long long)i,
                                (unsigned)kv->type);
            kv->count = 1;
            skip_values(c, kv->type, 1);
        }
        if (oom) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        if (c->bad)
            return zen_fail(ZEN_ERR_INPUT, "%s: key/value %llu of %llu runs past the end of the file (truncated?)",
                            path, (unsigned long long)i, (unsigned long long)f->n_kv);
        if (!strcmp(kv->key, "general.alignment")) {
            uint32_t a = 0;
            if (kv->type != GGUF_U32)
                return zen_fail(ZEN_ERR_INPUT, "%s: general.alignment must be u32, not %s", path, gguf_type_name(kv->type));
            memcpy(&a, kv->value, 4);
            if (a == 0 || (a & (a - 1)) != 0)
                return zen_fail(ZEN_ERR_INPUT, "%s: general.alignment %u is not a power of 2", path, a);
            *alignment = a;
        }
    }
    return refuse_duplicates(path, "key", f->kvs, f->n_kv, sizeof(gguf_kv), offsetof(gguf_kv, key));
}

static int parse_tensor_infos(gguf_file *f, cursor *c) {
    const char *path = f->path;
    uint64_t cap = 0;
    int oom = 0;
    char buf[128];
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        if (grow_array((void **)&f->tensors, &cap, i, sizeof(gguf_tensor_info)))
            return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        gguf_tensor_info *t = &f->tensors[i];
        t->name = take_string(c, &oom);
        if (t->name) f->tensors_loaded = i + 1;
        t->n_dims = take_u32(c);
        if (!c->bad && (t->n_dims < 1 || t->n_dims > 4))
            return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' has %u dimensions (1 to 4 allowed)", path,
                            printable(t->name, buf, sizeof buf), t->n_dims);
        for (uint32_t d = 0; d < t->n_dims && !c->bad; d++) t->ne[d] = take_u64(c);
        for (uint32_t d = t->n_dims; d < 4; d++) t->ne[d] = 1;
        t->type = take_u32(c);
        t->offset = take_u64(c);
        if (oom) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        if (c->bad)
            return zen_fail(ZEN_ERR_INPUT, "%s: tensor info %llu of %llu runs past the end of the file (truncated?)",
                            path, (unsigned long long)i, (unsigned long long)f->n_tensors);
        const char *name = printable(t->name, buf, sizeof buf);
        uint64_t numel = 1;
        for (uint32_t d = 0; d < 4; d++) {
            if (t->ne[d] > (uint64_t)INT64_MAX || (t->ne[d] && numel > (uint64_t)INT64_MAX / t->ne[d]))
                return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' has dimensions whose product overflows", path, name);
            numel *= t->ne[d];
        }
        if (!ggml_type_known(t->type))
            return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' has unknown ggml type %u", path, name, t->type);
        size_t block = ggml_type_block((ggml_type_id)t->type);
        if (t->ne[0] % block != 0)
            return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' has rows of %llu elements, not a multiple of %s's block of %zu",
                            path, name, (unsigned long long)t->ne[0], ggml_type_name((ggml_type_id)t->type), block);
        /* bytes = numel / block * bytes per block, checked against overflow */
        uint64_t blocks = numel / block, per_block = ggml_type_bytes((ggml_type_id)t->type, block);
        if (blocks && per_block > UINT64_MAX / 2 / blocks)
            return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' is too large", path, name);
        t->nbytes = blocks * per_block;
    }
    return refuse_duplicates(path, "tensor", f->tensors, f->n_tensors, sizeof(gguf_tensor_info),
                             offsetof(gguf_tensor_info, name));
}

/* the data section: each tensor at the padded running offset, inside the file */
static int place_tensors(gguf_file *f, size_t header_end, uint32_t alignment) {
    uint64_t data_start = ((uint64_t)header_end + alignment - 1) / alignment * alignment;
    if (data_start > f->size && f->n_tensors)
        return zen_fail(ZEN_ERR_INPUT, "%s: the data section starts past the end of the file", f->path);
    uint64_t expect = 0, room = f->size - (data_start < f->size ? data_start : f->size);
    char buf[128];
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor_info *t = &f->tensors[i];
        const char *name = printable(t->name, buf, sizeof buf);
        if (t->offset != expect)
            return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' has offset %llu, expected %llu (tensors must follow one "
                            "another in order, each padded to the alignment of %u)", f->path, name,
                            (unsigned long long)t->offset, (unsigned long long)expect, alignment);
        if (t->nbytes > room || t->offset > room - t->nbytes)
            return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' data lies past the end of the file (truncated?)", f->path,
                            name);
        t->data = f->map + data_start + t->offset;
        uint64_t padded = (t->nbytes + alignment - 1) / alignment * alignment;
        if (padded < t->nbytes || expect > UINT64_MAX - padded)
            return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' is too large", f->path, name);
        expect += padded;
    }
    f->data_offset = data_start;
    return 0;
}

static int parse_gguf(gguf_file *f) {
    const char *path = f->path;
    cursor c = {f->map, f->map + f->size, 0};
    if (f->size < 24) return zen_fail(ZEN_ERR_INPUT, "%s: too short for a GGUF file (%zu bytes)", path, f->size);
    if (take_u32(&c) != 0x46554747u) return zen_fail(ZEN_ERR_INPUT, "%s: not a GGUF file (bad magic)", path);
    f->version = take_u32(&c);
    if (f->version != 3)
        return zen_fail(ZEN_ERR_INPUT, "%s: GGUF version %u is not supported (only version 3)", path, f->version);
    f->n_tensors = take_u64(&c);
    f->n_kv = take_u64(&c);
    /* each key/value takes at least 13 bytes and each tensor info 24 */
    if (f->n_kv > (f->size - 24) / 13 || f->n_tensors > (f->size - 24) / 24)
        return zen_fail(ZEN_ERR_INPUT, "%s: header declares %llu keys and %llu tensors, more than a file of %zu bytes "
                        "can hold", path, (unsigned long long)f->n_kv, (unsigned long long)f->n_tensors, f->size);
    uint32_t alignment = GGUF_ALIGNMENT;
    int rc = parse_kvs(f, &c, &alignment);
    if (!rc) rc = parse_tensor_infos(f, &c);
    if (!rc) rc = place_tensors(f, (size_t)(c.p - f->map), alignment);
    f->alignment = alignment;
    return rc;
}

int gguf_open(gguf_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path))) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    void *map;
    int rc = zen_map_file(path, 24, "GGUF file", &map, &f->size);
    if (!rc) {
        f->map = map;
        f->mapped = 1;
        rc = parse_gguf(f);
    }
    if (rc) gguf_close(f);
    return rc;
}

int gguf_open_memory(gguf_file *f, const void *data, size_t size, const char *name) {
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(name))) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    f->map = (unsigned char *)data;
    f->size = size;
    int rc = parse_gguf(f);
    if (rc) gguf_close(f);
    return rc;
}

void gguf_close(gguf_file *f) {
    for (uint64_t i = 0; f->kvs && i < f->kv_loaded; i++) free(f->kvs[i].key);
    for (uint64_t i = 0; f->tensors && i < f->tensors_loaded; i++) free(f->tensors[i].name);
    free(f->kvs);
    free(f->tensors);
    if (f->map && f->mapped) munmap(f->map, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (f->kvs[i].key && !strcmp(f->kvs[i].key, key)) return &f->kvs[i];
    return NULL;
}

const gguf_tensor_info *gguf_find_tensor(const gguf_file *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].name && !strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

char *gguf_string(const gguf_kv *kv, uint64_t i) {
    const unsigned char *p = kv->value;
    if (!(kv->type == GGUF_STRING && i == 0) && !(kv->type == GGUF_ARRAY && kv->elem_type == GGUF_STRING && i < kv->count))
        return NULL;
    for (uint64_t k = 0; k < i; k++) {
        uint64_t n;
        memcpy(&n, p, 8);
        p += 8 + n;
    }
    uint64_t n;
    memcpy(&n, p, 8);
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, p + 8, n);
        out[n] = '\0';
    }
    return out;
}

const char *gguf_type_name(gguf_value_type t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

/* ---------------- typed reads of keys (gguf.h) ---------------- */

char *gguf_get_string(const gguf_file *f, const char *key) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    return kv && kv->type == GGUF_STRING ? gguf_string(kv, 0) : NULL;
}

const gguf_kv *gguf_get_array(const gguf_file *f, const char *key, gguf_value_type t) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    return kv && kv->type == GGUF_ARRAY && kv->elem_type == t ? kv : NULL;
}

int32_t gguf_get_id(const gguf_file *f, const char *key) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv || (kv->type != GGUF_U32 && kv->type != GGUF_I32)) return -1;
    int32_t v;
    memcpy(&v, kv->value, 4);
    return v;
}

int32_t gguf_array_i32(const gguf_kv *kv, uint64_t i) {
    int32_t v;
    memcpy(&v, kv->value + 4 * i, 4);
    return v;
}

int gguf_get_uint(const gguf_file *f, const char *key, uint64_t *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return -1;
    const unsigned char *v = kv->value;
    int64_t s = 0;
    switch (kv->type) {
    case GGUF_U8: *out = v[0]; return 0;
    case GGUF_U16: *out = (uint64_t)v[0] | (uint64_t)v[1] << 8; return 0;
    case GGUF_U32: *out = (uint64_t)v[0] | (uint64_t)v[1] << 8 | (uint64_t)v[2] << 16 | (uint64_t)v[3] << 24; return 0;
    case GGUF_U64: memcpy(out, v, 8); return 0;
    case GGUF_I32: {
        int32_t i;
        memcpy(&i, v, 4);
        s = i;
        break;
    }
    case GGUF_I64: memcpy(&s, v, 8); break;
    default: return zen_fail(ZEN_ERR_INPUT, "%s: key '%s' is %s, expected an integer", f->path, key, gguf_type_name(kv->type));
    }
    if (s < 0) return zen_fail(ZEN_ERR_INPUT, "%s: key '%s' is negative (%lld)", f->path, key, (long long)s);
    *out = (uint64_t)s;
    return 0;
}

int gguf_get_float(const gguf_file *f, const char *key, double *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return -1;
    if (kv->type == GGUF_F32) {
        float v;
        memcpy(&v, kv->value, 4);
        *out = v;
    } else if (kv->type == GGUF_F64) {
        memcpy(out, kv->value, 8);
    } else {
        return zen_fail(ZEN_ERR_INPUT, "%s: key '%s' is %s, expected a float", f->path, key, gguf_type_name(kv->type));
    }
    return 0;
}
