/* formats/safetensors.c: SafeTensors reading (mmap + strict header validation),
 * sharded sets, and the streaming writer. Every malformed file is refused with
 * one line naming the file and what is wrong; nothing is read out of bounds. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "../util/json.h"
#include "safetensors.h"

#define ST_MAX_HEADER ((uint64_t)100 << 20)
#define ZEN_ST_ORIGIN 4200 /* room for a path and a word */

/* bytes per element of a SafeTensors dtype (the table of type traits), 0 if unknown */
static size_t dtype_elem_size(const char *d) {
    const zen_type_traits *t = zen_type_by_safetensors(d);
    return t ? t->block_bytes : 0;
}

/* a JSON number that is a non-negative integer representable exactly */
static int json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return -1;
    double v = item->valuedouble;
    if (!(v >= 0) || v > 9007199254740992.0 || v != (double)(uint64_t)v) return -1;
    *out = (uint64_t)v;
    return 0;
}

typedef struct { size_t begin, end; int index; } span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index - y->index;
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int parse_tensor(st_file *f, const cJSON *item, st_tensor *t, span *s) {
    const char *path = f->path, *name = item->string;
    if (!cJSON_IsObject(item))
        return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s': header entry is not an object", path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dtype) || strlen(dtype->valuestring) >= sizeof t->dtype)
        return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s': missing or bad 'dtype'", path, name);
    t->elem_size = dtype_elem_size(dtype->valuestring);
    if (!t->elem_size)
        return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s': unknown dtype '%s'", path, name,
                        dtype->valuestring);
    strcpy(t->dtype, dtype->valuestring);
    if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) > ST_MAX_DIMS)
        return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s': missing or bad 'shape'", path, name);
    t->ndim = cJSON_GetArraySize(shape);
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t dim;
        if (json_uint(cJSON_GetArrayItem(shape, d), &dim))
            return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s': shape entry %d is not a non-negative integer",
                            path, name, d);
        if (dim && numel > UINT64_MAX / dim / 8)
            return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s': shape too large", path, name);
        numel *= dim;
        t->shape[d] = (int64_t)dim;
    }
    t->numel = (int64_t)numel;
    uint64_t begin, end;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        json_uint(cJSON_GetArrayItem(offs, 0), &begin) || json_uint(cJSON_GetArrayItem(offs, 1), &end) ||
        end < begin)
        return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s': missing or bad 'data_offsets'", path, name);
    if (end - begin != numel * t->elem_size)
        return zen_fail(ZEN_ERR_INPUT,
                        "%s: tensor '%s': data_offsets span %llu bytes but shape x %s needs %llu",
                        path, name, (unsigned long long)(end - begin), t->dtype,
                        (unsigned long long)(numel * t->elem_size));
    t->nbytes = (size_t)(end - begin);
    t->name = strdup(name);
    if (!t->name) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    s->begin = (size_t)begin;
    s->end = (size_t)end;
    return 0;
}

static int parse_metadata(st_file *f, const cJSON *meta) {
    if (!cJSON_IsObject(meta))
        return zen_fail(ZEN_ERR_INPUT, "%s: '__metadata__' is not an object", f->path);
    if (f->meta_keys) /* strict parsing refuses a repeated key; never grow the arrays twice */
        return zen_fail(ZEN_ERR_INPUT, "%s: '__metadata__' appears twice in the header", f->path);
    int n = cJSON_GetArraySize(meta);
    f->meta_keys = zen_calloc((size_t)n, sizeof(char *));
    f->meta_values = zen_calloc((size_t)n, sizeof(char *));
    if (!f->meta_keys || !f->meta_values) return ZEN_ERR_INTERNAL;
    const cJSON *item;
    cJSON_ArrayForEach(item, meta) {
        if (f->meta_count == n) break; /* never past the arrays */
        if (!cJSON_IsString(item))
            return zen_fail(ZEN_ERR_INPUT, "%s: __metadata__ value of '%s' is not a string", f->path,
                            item->string);
        char *k = strdup(item->string), *v = strdup(item->valuestring);
        if (!k || !v) {
            free(k);
            free(v);
            return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        }
        f->meta_keys[f->meta_count] = k;
        f->meta_values[f->meta_count] = v;
        f->meta_count++;
    }
    return 0;
}

static int parse_header(st_file *f, const char *json, size_t json_len, size_t data_size) {
    char origin[ZEN_ST_ORIGIN];
    snprintf(origin, sizeof origin, "%s: header", f->path);
    cJSON *root = NULL;
    int rc = zen_json_parse(json, json_len, origin, &root);
    if (rc) return rc;
    span *spans = NULL;
    char **names = NULL;
    if (!cJSON_IsObject(root)) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s: header is not a JSON object", f->path);
        goto done;
    }
    int n = cJSON_GetArraySize(root);
    f->tensors = zen_calloc((size_t)n, sizeof(st_tensor));
    spans = zen_calloc((size_t)n, sizeof(span));
    names = zen_calloc((size_t)n, sizeof(char *));
    if (!f->tensors || !spans || !names) {
        rc = ZEN_ERR_INTERNAL;
        goto done;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (!strcmp(item->string, "__metadata__")) {
            if ((rc = parse_metadata(f, item))) goto done;
            continue;
        }
        int i = f->count;
        if (i == n) break; /* never past the arrays */
        if ((rc = parse_tensor(f, item, &f->tensors[i], &spans[i]))) goto done;
        spans[i].index = i;
        names[i] = f->tensors[i].name;
        f->count++;
    }
    /* no duplicate names */
    qsort(names, (size_t)f->count, sizeof(char *), name_cmp);
    for (int i = 1; i < f->count; i++)
        if (!strcmp(names[i - 1], names[i])) {
            rc = zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' appears twice in the header", f->path, names[i]);
            goto done;
        }
    /* contiguous from 0, ending exactly at the end of the file */
    qsort(spans, (size_t)f->count, sizeof(span), span_cmp);
    size_t expect = 0;
    for (int i = 0; i < f->count; i++) {
        const char *tname = f->tensors[spans[i].index].name;
        if (spans[i].begin != expect) {
            rc = zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' starts at byte %zu of the data, expected %zu "
                                         "(data must be contiguous)", f->path, tname, spans[i].begin, expect);
            goto done;
        }
        if (spans[i].end > data_size) {
            rc = zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' ends at byte %zu, past the end of the data "
                                         "(%zu bytes): file truncated?", f->path, tname, spans[i].end, data_size);
            goto done;
        }
        expect = spans[i].end;
    }
    if (expect != data_size) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s: tensors cover %zu bytes of data but the file holds %zu",
                      f->path, expect, data_size);
        goto done;
    }
    const char *data = (const char *)f->map + 8 + json_len;
    for (int i = 0; i < f->count; i++) f->tensors[spans[i].index].data = data + spans[i].begin;
done:
    free(spans);
    free(names);
    cJSON_Delete(root);
    return rc;
}

/* the header and tensor table of f->map[0..f->size) */
static int parse_file(st_file *f) {
    if (f->size < 8)
        return zen_fail(ZEN_ERR_INPUT, "%s: too short for a SafeTensors file (%zu bytes)", f->path, f->size);
    uint64_t header_len = 0;
    const unsigned char *bytes = f->map;
    for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | bytes[i];
    if (header_len > ST_MAX_HEADER || header_len > f->size - 8)
        return zen_fail(ZEN_ERR_INPUT, "%s: header length %llu is past the end of the file (%zu bytes)", f->path,
                        (unsigned long long)header_len, f->size);
    if (header_len < 2 || bytes[8] != '{')
        return zen_fail(ZEN_ERR_INPUT, "%s: header does not start with '{': not a SafeTensors file", f->path);
    return parse_header(f, (const char *)bytes + 8, (size_t)header_len, f->size - 8 - (size_t)header_len);
}

int st_open(st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path))) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    int rc = zen_map_file(path, 8, "SafeTensors file", &f->map, &f->size);
    if (!rc) {
        f->mapped = 1;
        rc = parse_file(f);
    }
    if (rc) st_close(f);
    return rc;
}

int st_open_memory(st_file *f, const void *data, size_t size, const char *name) {
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(name))) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    f->map = (void *)data;
    f->size = size;
    int rc = parse_file(f);
    if (rc) st_close(f);
    return rc;
}

void st_close(st_file *f) {
    for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->meta_count; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    if (f->map && f->mapped) munmap(f->map, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->count; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

void st_release(const void *data, size_t nbytes) {
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)data + (uintptr_t)page - 1) & ~((uintptr_t)page - 1); /* whole pages inside */
    uintptr_t end = ((uintptr_t)data + nbytes) & ~((uintptr_t)page - 1);
    if (end > start) madvise((void *)start, end - start, MADV_DONTNEED);
}

const char *st_meta(const st_file *f, const char *key) {
    for (int i = 0; i < f->meta_count; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
    return NULL;
}

int st_float_dtype(const st_file *f, const st_tensor *t, zen_dtype *out) {
    if (zen_dtype_parse_float(t->dtype, out) != 0 || strcmp(t->dtype, zen_dtype_name(*out)) != 0)
        return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' has dtype %s (expected F32, F16 or BF16)",
                        f->path, t->name, t->dtype);
    return 0;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

int st_check_shape(const st_file *f, const st_tensor *t, int ndim, const int64_t *shape) {
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (ok) return 0;
    char got[128], want[128];
    format_shape(got, sizeof got, t->ndim, t->shape);
    format_shape(want, sizeof want, ndim, shape);
    return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' has shape %s, expected %s", f->path, t->name, got,
                    want);
}

/* ---------------- sharded sets ---------------- */

static int set_add_file(st_set *s, const char *path) {
    for (int i = 0; i < s->count; i++)
        if (!strcmp(s->files[i].path, path)) return 0;
    st_file *grown = realloc(s->files, (size_t)(s->count + 1) * sizeof(st_file));
    if (!grown) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    s->files = grown;
    int rc = st_open(&s->files[s->count], path);
    if (rc) return rc;
    s->count++;
    return 0;
}

static int open_index(st_set *s, const char *dir, const char *index_path) {
    cJSON *root;
    int rc = zen_read_json_object(index_path, &root);
    if (rc) return rc;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(root);
        return zen_fail(ZEN_ERR_INPUT, "%s: missing object 'weight_map'", index_path);
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, map) {
        if (!cJSON_IsString(item) || strchr(item->valuestring, '/')) {
            rc = zen_fail(ZEN_ERR_INPUT, "%s: weight_map entry '%s' is not a file name in the directory",
                          index_path, item->string);
            break;
        }
        char *shard = zen_path_join(dir, item->valuestring);
        if (!shard) {
            rc = ZEN_ERR_INTERNAL;
            break;
        }
        rc = set_add_file(s, shard);
        if (!rc) {
            const st_file *f = NULL;
            for (int i = 0; i < s->count; i++)
                if (!strcmp(s->files[i].path, shard)) f = &s->files[i];
            if (!st_find(f, item->string))
                rc = zen_fail(ZEN_ERR_INPUT, "%s: weight_map puts tensor '%s' in %s, which lacks it",
                              index_path, item->string, item->valuestring);
        }
        free(shard);
        if (rc) break;
    }
    cJSON_Delete(root);
    return rc;
}

int st_set_open_dir(st_set *s, const char *dir) {
    memset(s, 0, sizeof *s);
    char *single = zen_path_join(dir, "model.safetensors");
    char *index = zen_path_join(dir, "model.safetensors.index.json");
    int rc;
    if (!single || !index) rc = ZEN_ERR_INTERNAL;
    else if (zen_file_exists(index)) rc = open_index(s, dir, index);
    else if (zen_file_exists(single)) rc = set_add_file(s, single);
    else rc = zen_fail(ZEN_ERR_INPUT, "%s: no model.safetensors or model.safetensors.index.json", dir);
    free(single);
    free(index);
    if (rc) st_set_close(s);
    return rc;
}

void st_set_close(st_set *s) {
    for (int i = 0; i < s->count; i++) st_close(&s->files[i]);
    free(s->files);
    memset(s, 0, sizeof *s);
}

const st_tensor *st_set_find(const st_set *s, const char *name, const st_file **file) {
    for (int i = 0; i < s->count; i++) {
        const st_tensor *t = st_find(&s->files[i], name);
        if (t) {
            if (file) *file = &s->files[i];
            return t;
        }
    }
    return NULL;
}

/* ---------------- writing ---------------- */

int st_writer_open(st_writer *w, const char *path, const st_entry *entries, int count,
                   const char *const *meta, int meta_pairs) {
    memset(w, 0, sizeof *w);
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    if (ok && meta_pairs > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; i < meta_pairs && ok; i++) ok = cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1]) != NULL;
    }
    w->nbytes = zen_calloc((size_t)(count ? count : 1), sizeof(size_t));
    ok = ok && w->nbytes;
    size_t offset = 0;
    for (int i = 0; i < count && ok; i++) {
        const st_entry *e = &entries[i];
        size_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= (size_t)e->shape[d];
        w->nbytes[i] = zen_dtype_bytes(e->dtype, numel);
        cJSON *t = cJSON_AddObjectToObject(root, e->name);
        cJSON *shape = t ? cJSON_AddArrayToObject(t, "shape") : NULL;
        cJSON *offs = t ? cJSON_AddArrayToObject(t, "data_offsets") : NULL;
        ok = t && shape && offs && cJSON_AddStringToObject(t, "dtype", zen_dtype_name(e->dtype));
        for (int d = 0; d < e->ndim && ok; d++) ok = cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->shape[d]));
        ok = ok && cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset)) &&
             cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offset + w->nbytes[i])));
        offset += w->nbytes[i];
    }
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json) {
        free(w->nbytes);
        w->nbytes = NULL;
        return zen_fail(ZEN_ERR_INTERNAL, "out of memory writing %s", path);
    }
    size_t len = strlen(json);
    size_t padded = (len + 7) & ~(size_t)7; /* header padded with spaces to 8 bytes */
    w->count = count;
    int rc = zen_atomic_open(&w->file, path);
    if (rc) {
        free(json);
        st_writer_abort(w);
        return rc;
    }
    unsigned char head[8 + 7];
    for (int i = 0; i < 8; i++) head[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memset(head + 8, ' ', 7);
    rc = zen_atomic_write(&w->file, head, 8);
    if (!rc) rc = zen_atomic_write(&w->file, json, len);
    if (!rc) rc = zen_atomic_write(&w->file, head + 8, padded - len);
    free(json);
    if (rc) {
        st_writer_abort(w);
        return rc;
    }
    while (w->current < w->count && w->nbytes[w->current] == 0) w->current++;
    return 0;
}

int st_writer_put(st_writer *w, const void *data, size_t nbytes) {
    const char *p = data;
    while (nbytes > 0) {
        if (w->current >= w->count)
            return zen_fail(ZEN_ERR_INTERNAL, "%s: more data written than the header declares", w->file.path);
        size_t room = w->nbytes[w->current] - w->written;
        size_t n = nbytes < room ? nbytes : room;
        int rc = zen_atomic_write(&w->file, p, n);
        if (rc) return rc;
        p += n;
        nbytes -= n;
        w->written += n;
        if (w->written == w->nbytes[w->current]) {
            w->current++;
            w->written = 0;
            while (w->current < w->count && w->nbytes[w->current] == 0) w->current++;
        }
    }
    return 0;
}

int st_writer_close(st_writer *w) {
    int rc;
    if (w->current != w->count) {
        rc = zen_fail(ZEN_ERR_INTERNAL, "%s: closed after %d of %d tensors", w->file.path, w->current, w->count);
        zen_atomic_abort(&w->file);
    } else {
        rc = zen_atomic_commit(&w->file); /* closes once, removes the temp file on failure */
    }
    free(w->nbytes);
    memset(w, 0, sizeof *w);
    return rc;
}

void st_writer_abort(st_writer *w) {
    zen_atomic_abort(&w->file);
    free(w->nbytes);
    memset(w, 0, sizeof *w);
}
