/* model/gguf.c: GGUF v3 writing (streamed) and reading (bounds-checked). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/error.h"
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

static int write_zeros(FILE *fp, size_t n) {
    static const unsigned char zeros[GGUF_ALIGNMENT] = {0};
    return fwrite(zeros, 1, n, fp) == n ? 0 : -1;
}

int gguf_begin(gguf_writer *w, const char *path) {
    if (w->failed) return zen_fail(ZEN_ERR_INTERNAL, "out of memory building the GGUF metadata of %s", path);
    size_t n = strlen(path);
    w->path = strdup(path);
    w->tmp_path = malloc(n + 5);
    if (!w->path || !w->tmp_path) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    snprintf(w->tmp_path, n + 5, "%s.tmp", path);
    w->fp = fopen(w->tmp_path, "wb");
    if (!w->fp) return zen_fail(ZEN_ERR_INPUT, "%s: cannot write: %s", w->tmp_path, strerror(errno));
    uint32_t magic = 0x46554747u, version = 3;
    int ok = fwrite(&magic, 4, 1, w->fp) == 1 && fwrite(&version, 4, 1, w->fp) == 1 &&
             fwrite(&w->tensor_count, 8, 1, w->fp) == 1 && fwrite(&w->kv_count, 8, 1, w->fp) == 1 &&
             fwrite(w->kv, 1, w->kv_len, w->fp) == w->kv_len && fwrite(w->info, 1, w->info_len, w->fp) == w->info_len;
    uint64_t header = 24 + w->kv_len + w->info_len;
    if (ok) ok = write_zeros(w->fp, (size_t)(pad_to(header) - header)) == 0;
    if (!ok) return zen_fail(ZEN_ERR_INTERNAL, "%s: write failed: %s", w->tmp_path, strerror(errno));
    while (w->current < w->tensor_count && w->tensor_bytes[w->current] == 0) w->current++;
    return 0;
}

int gguf_put(gguf_writer *w, const void *data, size_t n) {
    const unsigned char *p = data;
    while (n > 0) {
        if (w->current >= w->tensor_count)
            return zen_fail(ZEN_ERR_INTERNAL, "%s: more tensor data than declared", w->path);
        uint64_t room = w->tensor_bytes[w->current] - w->written;
        size_t k = n < room ? n : (size_t)room;
        if (fwrite(p, 1, k, w->fp) != k)
            return zen_fail(ZEN_ERR_INTERNAL, "%s: write failed: %s", w->tmp_path, strerror(errno));
        p += k;
        n -= k;
        w->written += k;
        if (w->written == w->tensor_bytes[w->current]) {
            if (write_zeros(w->fp, (size_t)(pad_to(w->written) - w->written)))
                return zen_fail(ZEN_ERR_INTERNAL, "%s: write failed", w->tmp_path);
            w->current++;
            w->written = 0;
        }
    }
    return 0;
}

int gguf_finish(gguf_writer *w) {
    if (w->current != w->tensor_count)
        return zen_fail(ZEN_ERR_INTERNAL, "%s: %llu of %llu tensors written", w->path,
                        (unsigned long long)w->current, (unsigned long long)w->tensor_count);
    int rc = fclose(w->fp);
    w->fp = NULL;
    if (rc != 0 || rename(w->tmp_path, w->path) != 0)
        return zen_fail(ZEN_ERR_INTERNAL, "%s: cannot finish: %s", w->path, strerror(errno));
    free(w->tmp_path);
    w->tmp_path = NULL;
    return 0;
}

void gguf_writer_free(gguf_writer *w) {
    if (w->fp) fclose(w->fp);
    if (w->tmp_path) remove(w->tmp_path);
    free(w->tmp_path);
    free(w->path);
    free(w->kv);
    free(w->info);
    free(w->tensor_bytes);
    memset(w, 0, sizeof *w);
}

/* ---------------- reading ---------------- */

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

static char *take_string(cursor *c) {
    uint64_t n = take_u64(c);
    const unsigned char *s = take(c, n);
    if (!s) return NULL;
    char *out = malloc(n + 1);
    if (!out) {
        c->bad = 1;
        return NULL;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

static uint64_t scalar_size(gguf_value_type t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

/* skips one value of type t (a string or a scalar) */
static void skip_value(cursor *c, gguf_value_type t) {
    if (t == GGUF_STRING) take(c, take_u64(c));
    else if (scalar_size(t)) take(c, scalar_size(t));
    else c->bad = 1;
}

int gguf_open(gguf_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return zen_fail(ZEN_ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 24) {
        close(fd);
        gguf_close(f);
        return zen_fail(ZEN_ERR_INPUT, "%s: too short for a GGUF file", path);
    }
    f->size = (size_t)st.st_size;
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        gguf_close(f);
        return zen_fail(ZEN_ERR_INTERNAL, "%s: cannot map", path);
    }
    cursor c = {f->map, f->map + f->size, 0};
    if (take_u32(&c) != 0x46554747u) {
        gguf_close(f);
        return zen_fail(ZEN_ERR_INPUT, "%s: not a GGUF file (bad magic)", path);
    }
    f->version = take_u32(&c);
    f->n_tensors = take_u64(&c);
    f->n_kv = take_u64(&c);
    if (f->version != 3 || f->n_kv > f->size || f->n_tensors > f->size) {
        gguf_close(f);
        return zen_fail(ZEN_ERR_INPUT, "%s: unsupported GGUF version %u or bad counts", path, f->version);
    }
    f->kvs = calloc(f->n_kv ? f->n_kv : 1, sizeof(gguf_kv));
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof(gguf_tensor_info));
    uint32_t alignment = GGUF_ALIGNMENT;
    for (uint64_t i = 0; i < f->n_kv && !c.bad; i++) {
        gguf_kv *kv = &f->kvs[i];
        kv->key = take_string(&c);
        kv->type = (gguf_value_type)take_u32(&c);
        kv->value = c.p;
        if (kv->type == GGUF_ARRAY) {
            kv->elem_type = (gguf_value_type)take_u32(&c);
            kv->count = take_u64(&c);
            kv->value = c.p;
            for (uint64_t k = 0; k < kv->count && !c.bad; k++) skip_value(&c, kv->elem_type);
        } else {
            kv->count = 1;
            skip_value(&c, kv->type);
        }
        if (!c.bad && kv->key && !strcmp(kv->key, "general.alignment") && kv->type == GGUF_U32)
            memcpy(&alignment, kv->value, 4);
    }
    for (uint64_t i = 0; i < f->n_tensors && !c.bad; i++) {
        gguf_tensor_info *t = &f->tensors[i];
        t->name = take_string(&c);
        t->n_dims = take_u32(&c);
        if (t->n_dims > 4) c.bad = 1;
        for (uint32_t d = 0; d < t->n_dims && !c.bad; d++) t->ne[d] = take_u64(&c);
        t->type = take_u32(&c);
        t->offset = take_u64(&c);
    }
    if (c.bad || alignment == 0) {
        gguf_close(f);
        return zen_fail(ZEN_ERR_INPUT, "%s: truncated or malformed GGUF header", path);
    }
    size_t data_start = ((size_t)(c.p - f->map) + alignment - 1) / alignment * alignment;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor_info *t = &f->tensors[i];
        uint64_t numel = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) numel *= t->ne[d];
        uint64_t bytes = ggml_type_bytes((ggml_type_id)t->type, numel);
        if (data_start + t->offset + bytes > f->size) {
            int rc = zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' data lies past the end of the file", path, t->name);
            gguf_close(f);
            return rc;
        }
        t->data = f->map + data_start + t->offset;
    }
    return 0;
}

void gguf_close(gguf_file *f) {
    for (uint64_t i = 0; f->kvs && i < f->n_kv; i++) free(f->kvs[i].key);
    for (uint64_t i = 0; f->tensors && i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kvs);
    free(f->tensors);
    if (f->map) munmap(f->map, f->size);
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
