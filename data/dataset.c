/* data/dataset.c: reading and validating "zen-tokens-v1" HDF5 datasets.
 *
 * A file is checked once, completely, before anything trains on it: the
 * layout (object types, dtypes, ranks, lengths), the storage (every declared
 * element backed by stored data, so a 1 KB file cannot declare 2^36 sparse
 * tokens; no external or virtual storage; only deflate, shuffle and
 * fletcher32 filters; chunks of at most 64 MiB), the vocab_size attribute,
 * and every value (token ids below the file's vocab_size and the model's
 * vocabulary, mask values 0/1, document offsets rising from 0 to the token
 * count), streamed in 1M-element pieces.
 *
 * libhdf5 itself has memory-safety bugs on crafted files that no check
 * beforehand can avoid, so the check runs in a child process: a crash inside
 * the library becomes a one-line error naming the file. The parent then opens
 * the file (already known to be sound) to read batches. */
#include <errno.h>
#include <hdf5.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../util/error.h"
#include "dataset.h"

#define SCAN_CHUNK ((hsize_t)1 << 20)           /* elements per read while validating */
#define MAX_CHUNK_BYTES ((hsize_t)64 << 20)      /* largest HDF5 chunk accepted */
#define DEFLATE_MAX_RATIO 1100                   /* deflate expands at most ~1032:1 */

/* reads count elements from offset of a 1-D dataset, converted to mem_type */
static int read_range(const char *path, hid_t dset, hid_t mem_type, hsize_t offset, hsize_t count, void *out,
                      const char *name) {
    hid_t space = H5Dget_space(dset);
    hid_t mem = H5Screate_simple(1, &count, NULL);
    herr_t st = space < 0 || mem < 0 ? -1 : H5Sselect_hyperslab(space, H5S_SELECT_SET, &offset, NULL, &count, NULL);
    if (st >= 0) st = H5Dread(dset, mem_type, mem, space, H5P_DEFAULT, out);
    if (mem >= 0) H5Sclose(mem);
    if (space >= 0) H5Sclose(space);
    if (st < 0)
        return zen_fail(ZEN_ERR_INPUT, "%s: cannot read %s[%llu..%llu] (corrupt or truncated file?)", path, name,
                        (unsigned long long)offset, (unsigned long long)(offset + count));
    return 0;
}

/* ---------------- structure ---------------- */

/* 1 if `name` exists under the root and is a dataset */
static int is_dataset(hid_t file, const char *name) {
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) return 0;
    H5O_info_t info;
    if (H5Oget_info_by_name2(file, name, &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0) return -1;
    return info.type == H5O_TYPE_DATASET ? 1 : -1;
}

/* a 1-D integer dataset of at most max_size bytes per element (signed when
 * need_signed); returns its length */
static int check_1d_integer(const char *path, hid_t dset, const char *name, size_t max_size, int need_signed,
                            const char *expect, int64_t *length) {
    hid_t type = H5Dget_type(dset);
    H5T_class_t cls = type < 0 ? H5T_NO_CLASS : H5Tget_class(type);
    size_t size = type < 0 ? 0 : H5Tget_size(type);
    H5T_sign_t sign = type < 0 ? H5T_SGN_ERROR : H5Tget_sign(type);
    if (type >= 0) H5Tclose(type);
    if (cls != H5T_INTEGER || size < 1 || size > max_size || (size == max_size && need_signed && sign != H5T_SGN_2))
        return zen_fail(ZEN_ERR_INPUT, "%s: %s has the wrong dtype (expected %s)", path, name, expect);
    hid_t space = H5Dget_space(dset);
    int rank = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    hsize_t dims[H5S_MAX_RANK] = {0};
    if (rank == 1) H5Sget_simple_extent_dims(space, dims, NULL);
    if (space >= 0) H5Sclose(space);
    if (rank != 1) return zen_fail(ZEN_ERR_INPUT, "%s: %s has rank %d (expected 1-D)", path, name, rank);
    if (dims[0] > (hsize_t)INT64_MAX / 8)
        return zen_fail(ZEN_ERR_INPUT, "%s: %s declares %llu elements", path, name, (unsigned long long)dims[0]);
    *length = (int64_t)dims[0];
    return 0;
}

/* every declared element is backed by stored data: no sparse or missing
 * chunks, no storage outside the file, only filters whose expansion is
 * bounded, chunks of sane size */
static int check_storage(const char *path, hid_t dset, const char *name, int64_t n, size_t elem) {
    hid_t dcpl = H5Dget_create_plist(dset);
    if (dcpl < 0) return zen_fail(ZEN_ERR_INPUT, "%s: %s: cannot read its storage layout", path, name);
    int rc = 0;
    H5D_layout_t layout = H5Pget_layout(dcpl);
    int nfilters = H5Pget_nfilters(dcpl);
    if (H5Pget_external_count(dcpl) != 0)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: %s keeps its data in external files, which zen does not read", path, name);
    else if (layout != H5D_CONTIGUOUS && layout != H5D_CHUNKED && layout != H5D_COMPACT)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: %s has a storage layout zen does not read (virtual?)", path, name);
    else if (nfilters < 0)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: %s: cannot read its filters", path, name);
    for (int i = 0; !rc && i < nfilters; i++) {
        unsigned flags;
        size_t nvalues = 0;
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nvalues, NULL, 0, NULL, NULL);
        if (id != H5Z_FILTER_DEFLATE && id != H5Z_FILTER_SHUFFLE && id != H5Z_FILTER_FLETCHER32)
            rc = zen_fail(ZEN_ERR_INPUT, "%s: %s uses HDF5 filter %d (zen reads deflate/gzip, shuffle and fletcher32)",
                          path, name, (int)id);
    }
    hsize_t want = (hsize_t)n * elem, stored = H5Dget_storage_size(dset);
    if (!rc && layout == H5D_CHUNKED) {
        hsize_t chunk = 0;
        if (H5Pget_chunk(dcpl, 1, &chunk) != 1 || chunk == 0 || chunk * elem > MAX_CHUNK_BYTES) {
            rc = zen_fail(ZEN_ERR_INPUT, "%s: %s has chunks of %llu elements (at most %llu bytes are accepted)", path,
                          name, (unsigned long long)chunk, (unsigned long long)MAX_CHUNK_BYTES);
        } else {
            hsize_t expect = ((hsize_t)n + chunk - 1) / chunk, have = 0;
            hid_t space = H5Dget_space(dset);
            herr_t st = space < 0 ? -1 : H5Dget_num_chunks(dset, space, &have);
            if (space >= 0) H5Sclose(space);
            if (st < 0 || have != expect)
                rc = zen_fail(ZEN_ERR_INPUT, "%s: %s declares %lld elements in %llu chunks but stores %llu (a sparse or "
                              "truncated file)", path, name, (long long)n, (unsigned long long)expect,
                              (unsigned long long)have);
            else if (stored > 0 ? stored < want / DEFLATE_MAX_RATIO : want > 0)
                rc = zen_fail(ZEN_ERR_INPUT, "%s: %s declares %lld elements but stores only %llu bytes", path, name,
                              (long long)n, (unsigned long long)stored);
        }
    } else if (!rc && stored != want) { /* contiguous or compact: stored as is */
        rc = zen_fail(ZEN_ERR_INPUT, "%s: %s declares %lld elements (%llu bytes) but stores %llu bytes (a sparse or "
                      "truncated file)", path, name, (long long)n, (unsigned long long)want, (unsigned long long)stored);
    }
    H5Pclose(dcpl);
    return rc;
}

/* opens /name as a checked 1-D integer dataset; *dset < 0 when absent */
static int open_array(const char *path, hid_t file, const char *name, size_t max_size, int need_signed,
                      const char *expect, int required, hid_t *dset, int64_t *length) {
    *dset = -1;
    int kind = is_dataset(file, name);
    if (kind == 0 && !required) return 0;
    if (kind <= 0) return zen_fail(ZEN_ERR_INPUT, "%s: %s /%s", path, kind == 0 ? "missing dataset" : "not a dataset:", name);
    if ((*dset = H5Dopen2(file, name, H5P_DEFAULT)) < 0)
        return zen_fail(ZEN_ERR_INPUT, "%s: cannot open /%s (corrupt file?)", path, name);
    char label[32];
    snprintf(label, sizeof label, "/%s", name);
    int rc = check_1d_integer(path, *dset, label, max_size, need_signed, expect, length);
    if (!rc) {
        hid_t type = H5Dget_type(*dset);
        size_t elem = type < 0 ? 0 : H5Tget_size(type);
        if (type >= 0) H5Tclose(type);
        rc = check_storage(path, *dset, label, *length, elem);
    }
    return rc;
}

/* the root attribute `name` (which exists): one integer in [lo, hi] (range names it in the error) */
static int read_int_attr(const char *path, hid_t file, const char *name, long long lo, long long hi,
                         const char *range, int64_t *out) {
    hid_t attr = H5Aopen(file, name, H5P_DEFAULT);
    hid_t type = attr < 0 ? -1 : H5Aget_type(attr);
    hid_t space = attr < 0 ? -1 : H5Aget_space(attr);
    int ok = type >= 0 && space >= 0 && H5Tget_class(type) == H5T_INTEGER && H5Tget_size(type) <= 8 &&
             H5Sget_simple_extent_npoints(space) == 1;
    long long value = 0;
    if (ok) ok = H5Aread(attr, H5T_NATIVE_LLONG, &value) >= 0;
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (attr >= 0) H5Aclose(attr);
    if (!ok || value < lo || value > hi)
        return zen_fail(ZEN_ERR_INPUT, "%s: root attribute '%s' must be one integer in %s", path, name, range);
    *out = value;
    return 0;
}

/* the root attribute vocab_size: one integer in [1, 2^31) */
static int read_vocab_attr(const char *path, hid_t file, int64_t *out) {
    H5O_info_t info;
    if (H5Oget_info2(file, &info, H5O_INFO_NUM_ATTRS) < 0 || info.num_attrs == 0 ||
        H5Aexists(file, "vocab_size") <= 0)
        return zen_fail(ZEN_ERR_INPUT, "%s: missing root attribute 'vocab_size'", path);
    return read_int_attr(path, file, "vocab_size", 1, INT32_MAX, "[1, 2^31)", out);
}

/* the optional root attribute packed_seq_len (zen data --pack T): 0 if absent */
static int read_packed_attr(const char *path, hid_t file, int64_t *out) {
    *out = 0;
    if (H5Aexists(file, "packed_seq_len") <= 0) return 0;
    return read_int_attr(path, file, "packed_seq_len", 1, 1 << 20, "[1, 2^20]", out);
}

/* the optional root attribute counting records (data/records.h: at most one of the table's) */
static int read_records_attr(const char *path, hid_t file, zen_records *kind, int64_t *count) {
    *kind = ZEN_RECORDS_TOKENS;
    *count = 0;
    for (int k = 1; k < ZEN_RECORDS_COUNT; k++) {
        const char *name = zen_record_layout_of((zen_records)k)->attribute;
        if (H5Aexists(file, name) <= 0) continue;
        if (*kind != ZEN_RECORDS_TOKENS)
            return zen_fail(ZEN_ERR_INPUT, "%s: root attributes '%s' and '%s' name two record layouts", path,
                            zen_record_layout_of(*kind)->attribute, name);
        int rc = read_int_attr(path, file, name, 1, INT64_MAX / 4, "[1, 2^61)", count);
        if (rc) return rc;
        *kind = (zen_records)k;
    }
    return 0;
}

/* ---------------- values ---------------- */

typedef struct {
    const char *path;
    hid_t tokens, mask, offsets, labels, json, json_offsets;
    int64_t n_tokens, n_offsets, n_labels, n_json, n_json_offsets;
    int64_t vocab_attr;
} checked_file;

/* /record_json_offsets: rising from 0 to the bytes of /record_json, one more than the records */
static int scan_json_offsets(const checked_file *f, int64_t records) {
    if (f->n_json_offsets != records + 1)
        return zen_fail(ZEN_ERR_INPUT, "%s: /record_json_offsets has %lld entries for %lld records", f->path,
                        (long long)f->n_json_offsets, (long long)records);
    int64_t *v = malloc((size_t)f->n_json_offsets * sizeof(int64_t));
    int rc = v ? read_range(f->path, f->json_offsets, H5T_NATIVE_INT64, 0, (hsize_t)f->n_json_offsets, v,
                            "/record_json_offsets")
               : zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    for (int64_t i = 0; !rc && i <= records; i++)
        if ((i == 0 && v[i] != 0) || (i && v[i] < v[i - 1]) || v[i] > f->n_json || (i == records && v[i] != f->n_json))
            rc = zen_fail(ZEN_ERR_INPUT, "%s: /record_json_offsets[%lld] = %lld (offsets rise from 0 to the %lld bytes "
                          "of /record_json)", f->path, (long long)i, (long long)v[i], (long long)f->n_json);
    free(v);
    return rc;
}

/* /labels: one 0 or 1 per record */
static int scan_labels(const checked_file *f) {
    uint8_t *v = malloc(f->n_labels ? (size_t)f->n_labels : 1);
    int rc = v ? read_range(f->path, f->labels, H5T_NATIVE_UINT8, 0, (hsize_t)f->n_labels, v, "/labels")
               : zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    for (int64_t i = 0; !rc && i < f->n_labels; i++)
        if (v[i] > 1) rc = zen_fail(ZEN_ERR_INPUT, "%s: /labels[%lld] = %d (expected 0 or 1)", f->path, (long long)i, v[i]);
    free(v);
    return rc;
}

/* token ids, mask values, and the count of masked-in targets (positions >= 1) */
static int scan_tokens(const checked_file *f, int model_vocab, int64_t *masked) {
    hsize_t piece = (hsize_t)f->n_tokens < SCAN_CHUNK ? (hsize_t)f->n_tokens : SCAN_CHUNK;
    int32_t *tok = malloc(piece * sizeof(int32_t));
    uint8_t *msk = malloc(piece);
    int rc = (tok && msk) ? 0 : zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    int64_t limit = f->vocab_attr < model_vocab ? f->vocab_attr : model_vocab;
    const char *which = f->vocab_attr < model_vocab ? "the file's vocab_size" : "the model's vocab";
    *masked = 0;
    for (hsize_t off = 0; !rc && off < (hsize_t)f->n_tokens; off += SCAN_CHUNK) {
        hsize_t n = (hsize_t)f->n_tokens - off < SCAN_CHUNK ? (hsize_t)f->n_tokens - off : SCAN_CHUNK;
        rc = read_range(f->path, f->tokens, H5T_NATIVE_INT32, off, n, tok, "/tokens");
        for (hsize_t i = 0; !rc && i < n; i++)
            if (tok[i] < 0 || tok[i] >= limit)
                rc = zen_fail(ZEN_ERR_INPUT, "%s: /tokens[%llu] = %d is outside %s [0, %lld)", f->path,
                              (unsigned long long)(off + i), tok[i], which, (long long)limit);
        if (!rc && f->mask >= 0) {
            rc = read_range(f->path, f->mask, H5T_NATIVE_UINT8, off, n, msk, "/loss_mask");
            for (hsize_t i = 0; !rc && i < n; i++) {
                if (msk[i] > 1)
                    rc = zen_fail(ZEN_ERR_INPUT, "%s: /loss_mask[%llu] = %d (expected 0 or 1)", f->path,
                                  (unsigned long long)(off + i), msk[i]);
                else if (off + i > 0)
                    *masked += msk[i];
            }
        } else if (!rc) {
            *masked += (int64_t)n - (off == 0);
        }
    }
    free(tok);
    free(msk);
    return rc;
}

/* doc_offsets: off[0] = 0, never decreasing, off[last] = n_tokens */
static int scan_offsets(const checked_file *f) {
    if (f->n_offsets < 2)
        return zen_fail(ZEN_ERR_INPUT, "%s: /doc_offsets has %lld entries (expected num_docs + 1 >= 2)", f->path,
                        (long long)f->n_offsets);
    hsize_t piece = (hsize_t)f->n_offsets < SCAN_CHUNK ? (hsize_t)f->n_offsets : SCAN_CHUNK;
    int64_t *off = malloc(piece * sizeof(int64_t));
    if (!off) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    int rc = 0;
    int64_t prev = 0;
    for (hsize_t at = 0; !rc && at < (hsize_t)f->n_offsets; at += SCAN_CHUNK) {
        hsize_t n = (hsize_t)f->n_offsets - at < SCAN_CHUNK ? (hsize_t)f->n_offsets - at : SCAN_CHUNK;
        rc = read_range(f->path, f->offsets, H5T_NATIVE_INT64, at, n, off, "/doc_offsets");
        for (hsize_t i = 0; !rc && i < n; i++) {
            int64_t v = off[i];
            int64_t want_first = at + i == 0 ? 0 : prev;
            if ((at + i == 0 && v != 0) || v < want_first || v > f->n_tokens)
                rc = zen_fail(ZEN_ERR_INPUT, "%s: /doc_offsets[%llu] = %lld (offsets rise from 0 to the %lld tokens)",
                              f->path, (unsigned long long)(at + i), (long long)v, (long long)f->n_tokens);
            prev = v;
        }
    }
    if (!rc && prev != f->n_tokens)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: /doc_offsets ends at %lld but /tokens holds %lld", f->path, (long long)prev,
                      (long long)f->n_tokens);
    free(off);
    return rc;
}

/* the whole check of an open file; fills info */
static int check_file(const char *path, hid_t file, int model_vocab, zen_dataset_info *info) {
    checked_file f = {path, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0};
    int64_t mask_len = 0;
    int rc = open_array(path, file, "tokens", 4, 1, "int32", 1, &f.tokens, &f.n_tokens);
    if (!rc) rc = open_array(path, file, "loss_mask", 1, 0, "uint8", 0, &f.mask, &mask_len);
    if (!rc && f.mask >= 0 && mask_len != f.n_tokens)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: /loss_mask has %lld entries but /tokens has %lld", path, (long long)mask_len,
                      (long long)f.n_tokens);
    if (!rc) rc = open_array(path, file, "doc_offsets", 8, 1, "int64", 0, &f.offsets, &f.n_offsets);
    if (!rc) rc = read_vocab_attr(path, file, &f.vocab_attr);
    if (!rc) rc = read_packed_attr(path, file, &info->packed_seq_len);
    if (!rc) rc = read_records_attr(path, file, &info->records, &info->n_records);
    if (!rc) rc = open_array(path, file, "labels", 1, 0, "uint8", 0, &f.labels, &f.n_labels);
    if (!rc && zen_record_layout_of(info->records)->labelled != (f.labels >= 0))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: %s", path, f.labels >= 0 ? "/labels in a file whose records have no labels"
                                                                   : "its records need /labels, and it has none");
    if (!rc && f.labels >= 0 && f.n_labels != info->n_records)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: /labels has %lld entries for %lld records", path, (long long)f.n_labels,
                      (long long)info->n_records);
    if (!rc && f.labels >= 0) rc = scan_labels(&f);
    if (!rc) rc = open_array(path, file, "record_json", 1, 0, "uint8", 0, &f.json, &f.n_json);
    if (!rc) rc = open_array(path, file, "record_json_offsets", 8, 1, "int64", 0, &f.json_offsets, &f.n_json_offsets);
    if (!rc && (zen_record_layout_of(info->records)->fields != (f.json >= 0) || (f.json >= 0) != (f.json_offsets >= 0)))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: %s", path, f.json >= 0 || f.json_offsets >= 0
                      ? "/record_json and /record_json_offsets come together, in a file whose records keep their fields"
                      : "its records need /record_json and /record_json_offsets, and it has none");
    if (!rc && f.json >= 0) rc = scan_json_offsets(&f, info->n_records);
    if (!rc && f.n_tokens < 2)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: /tokens holds %lld tokens; at least 2 are needed", path, (long long)f.n_tokens);
    if (!rc && info->packed_seq_len && (f.n_tokens - 1) % info->packed_seq_len)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: packed_seq_len %lld, but /tokens holds %lld tokens, not a multiple of it plus one",
                      path, (long long)info->packed_seq_len, (long long)f.n_tokens);
    if (!rc) rc = scan_tokens(&f, model_vocab, &info->n_masked);
    if (!rc && f.offsets >= 0) rc = scan_offsets(&f);
    if (!rc) {
        info->n_tokens = f.n_tokens;
        info->has_mask = f.mask >= 0;
        info->vocab_size = f.vocab_attr;
        info->n_docs = f.offsets >= 0 ? f.n_offsets - 1 : -1;
    }
    if (f.tokens >= 0) H5Dclose(f.tokens);
    if (f.mask >= 0) H5Dclose(f.mask);
    if (f.offsets >= 0) H5Dclose(f.offsets);
    if (f.labels >= 0) H5Dclose(f.labels);
    if (f.json >= 0) H5Dclose(f.json);
    if (f.json_offsets >= 0) H5Dclose(f.json_offsets);
    return rc;
}

static int check_path(const char *path, int model_vocab, zen_dataset_info *info) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are reported as one line by us */
    FILE *probe = fopen(path, "rb");
    if (!probe) return zen_fail(ZEN_ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    fclose(probe);
    if (H5Fis_hdf5(path) <= 0) return zen_fail(ZEN_ERR_INPUT, "%s: not an HDF5 file", path);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return zen_fail(ZEN_ERR_INPUT, "%s: cannot open as HDF5 (truncated?)", path);
    int rc = check_file(path, file, model_vocab, info);
    H5Fclose(file);
    return rc;
}

int zen_dataset_check_image(const void *data, size_t size, int model_vocab, zen_dataset_info *info) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    memset(info, 0, sizeof *info);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return zen_fail(ZEN_ERR_INTERNAL, "HDF5: cannot create a file access list");
    int rc = 0;
    if (H5Pset_fapl_core(fapl, 1 << 16, 0) < 0 || H5Pset_file_image(fapl, (void *)data, size) < 0) {
        rc = zen_fail(ZEN_ERR_INTERNAL, "HDF5: cannot use a file image");
    } else {
        hid_t file = H5Fopen("image.h5", H5F_ACC_RDONLY, fapl);
        if (file < 0) rc = zen_fail(ZEN_ERR_INPUT, "image.h5: cannot open as HDF5");
        else {
            rc = check_file("image.h5", file, model_vocab, info);
            H5Fclose(file);
        }
    }
    H5Pclose(fapl);
    return rc;
}

/* ---------------- the check in a child process ---------------- */

typedef struct {
    int rc;
    zen_dataset_info info;
    char message[1024];
} check_reply;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* the check's deadline in ms: 30 s and 1 s per 16 MiB of file (it reads
 * every token), or ZEN_DATASET_CHECK_SECONDS */
static int check_deadline_ms(const char *path) {
    const char *env = getenv("ZEN_DATASET_CHECK_SECONDS");
    if (env && *env) return (int)(atof(env) * 1000);
    struct stat st;
    double mib = stat(path, &st) == 0 ? (double)st.st_size / (1 << 20) : 0;
    double ms = 30000 + mib / 16 * 1000;
    return ms > 3.6e6 ? 3600000 : (int)ms;
}

/* Runs check_path in a child process: libhdf5 crashing or looping on a
 * forged file is the file's fault, so it ends in one line and exit 2. The
 * child's stderr goes to a log file (a sanitizer's report, say), kept and
 * named in that line when the library failed, removed otherwise. */
static int check_isolated(const char *path, int model_vocab, zen_dataset_info *info) {
    int fds[2];
    fflush(stdout);
    fflush(stderr);
    if (pipe(fds) != 0) return check_path(path, model_vocab, info);
    const char *tmpdir = getenv("TMPDIR");
    char log_path[4096];
    snprintf(log_path, sizeof log_path, "%s/zen-dataset-check-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    int log_fd = mkstemp(log_path);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        if (log_fd >= 0) close(log_fd), unlink(log_path);
        return check_path(path, model_vocab, info); /* no process to spare: check here */
    }
    if (pid == 0) {
        close(fds[0]);
        if (log_fd >= 0) dup2(log_fd, STDERR_FILENO);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core); /* a crash of libhdf5 here leaves no core file */
        if (getenv("ZEN_FAULT_HDF5_CRASH")) { /* for the tests of this guard: a report, then a crash */
            fputs("zen: the dataset check crashes on purpose (ZEN_FAULT_HDF5_CRASH)\n", stderr);
            fflush(stderr);
            raise(SIGSEGV);
        }
        if (getenv("ZEN_FAULT_HDF5_HANG"))
            for (;;) pause();
        check_reply r;
        memset(&r, 0, sizeof r);
        r.rc = check_path(path, model_vocab, &r.info);
        snprintf(r.message, sizeof r.message, "%s", r.rc ? zen_last_error() : "");
        ssize_t wrote = write(fds[1], &r, sizeof r);
        _exit(wrote == (ssize_t)sizeof r ? 0 : 3);
    }
    close(fds[1]);
    if (log_fd >= 0) close(log_fd);
    int deadline_ms = check_deadline_ms(path), timed_out = 0;
    double start = now_ms();
    check_reply r;
    size_t got = 0;
    while (got < sizeof r) {
        int left = deadline_ms - (int)(now_ms() - start);
        struct pollfd p = {fds[0], POLLIN, 0};
        int ready = left > 0 ? poll(&p, 1, left) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready == 0) {
            timed_out = 1;
            kill(pid, SIGKILL);
            break;
        }
        ssize_t n = read(fds[0], (char *)&r + got, sizeof r - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (got == sizeof r) {
        if (log_fd >= 0) unlink(log_path);
        if (r.rc) return zen_fail(r.rc, "%s", r.message);
        *info = r.info;
        return 0;
    }
    struct stat log_st;
    int kept = log_fd >= 0 && stat(log_path, &log_st) == 0 && log_st.st_size > 0;
    if (log_fd >= 0 && !kept) unlink(log_path);
    char where[4200] = "";
    if (kept) snprintf(where, sizeof where, "; its report is in %s", log_path);
    if (timed_out)
        return zen_fail(ZEN_ERR_INPUT, "%s: malformed HDF5 file? the HDF5 library did not finish checking it in %.0f s "
                        "and was stopped (ZEN_DATASET_CHECK_SECONDS allows more)%s", path, deadline_ms / 1000.0, where);
    if (WIFSIGNALED(status))
        return zen_fail(ZEN_ERR_INPUT, "%s: malformed HDF5 file: the HDF5 library crashed reading it (signal %d)%s",
                        path, WTERMSIG(status), where);
    return zen_fail(ZEN_ERR_INPUT, "%s: malformed HDF5 file: the HDF5 library failed reading it (exit %d)%s", path,
                    WIFEXITED(status) ? WEXITSTATUS(status) : -1, where);
}

/* ---------------- reading ---------------- */

int zen_dataset_open(zen_dataset *d, const char *path, int model_vocab) {
    memset(d, 0, sizeof *d);
    if (!(d->path = strdup(path))) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    zen_dataset_info info;
    int rc = check_isolated(path, model_vocab, &info);
    if (!rc) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        d->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (d->file >= 0) d->tokens = H5Dopen2((hid_t)d->file, "tokens", H5P_DEFAULT);
        if (d->file >= 0 && info.has_mask) d->mask = H5Dopen2((hid_t)d->file, "loss_mask", H5P_DEFAULT);
        if (d->file < 0 || d->tokens < 0 || (info.has_mask && d->mask < 0))
            rc = zen_fail(ZEN_ERR_INPUT, "%s: cannot open (changed since it was checked?)", path);
    }
    if (!rc) {
        d->n_tokens = info.n_tokens;
        d->has_mask = info.has_mask;
        d->vocab_size = info.vocab_size;
        d->n_masked = info.n_masked;
        d->n_docs = info.n_docs;
        d->packed_seq_len = info.packed_seq_len;
        d->records = info.records;
        d->n_records = info.n_records;
        d->doc_mask = 1;
    }
    if (!rc && info.n_docs >= 0) { /* the documents, in memory (8 bytes each): checked above, so read whole */
        hid_t off = H5Dopen2((hid_t)d->file, "doc_offsets", H5P_DEFAULT);
        d->offsets = off >= 0 ? zen_malloc((size_t)(info.n_docs + 1) * sizeof(int64_t)) : NULL;
        rc = off < 0 ? zen_fail(ZEN_ERR_INPUT, "%s: cannot open /doc_offsets", path)
             : !d->offsets ? ZEN_ERR_INTERNAL
                           : read_range(path, off, H5T_NATIVE_INT64, 0, (hsize_t)info.n_docs + 1, d->offsets,
                                        "/doc_offsets");
        if (off >= 0) H5Dclose(off);
    }
    if (!rc && zen_record_layout_of(d->records)->labelled) { /* checked above: n_records 0/1 bytes */
        hid_t lab = H5Dopen2((hid_t)d->file, "labels", H5P_DEFAULT);
        d->labels = lab >= 0 ? zen_malloc((size_t)d->n_records) : NULL;
        rc = lab < 0 ? zen_fail(ZEN_ERR_INPUT, "%s: cannot open /labels", path)
             : !d->labels ? ZEN_ERR_INTERNAL
                          : read_range(path, lab, H5T_NATIVE_UINT8, 0, (hsize_t)d->n_records, d->labels, "/labels");
        if (lab >= 0) H5Dclose(lab);
    }
    if (!rc && zen_record_layout_of(d->records)->fields) { /* checked above: offsets rise over the bytes */
        hid_t off = H5Dopen2((hid_t)d->file, "record_json_offsets", H5P_DEFAULT);
        d->json_offsets = off >= 0 ? zen_malloc((size_t)(d->n_records + 1) * sizeof(int64_t)) : NULL;
        rc = off < 0 ? zen_fail(ZEN_ERR_INPUT, "%s: cannot open /record_json_offsets", path)
             : !d->json_offsets ? ZEN_ERR_INTERNAL
                                : read_range(path, off, H5T_NATIVE_INT64, 0, (hsize_t)d->n_records + 1,
                                             d->json_offsets, "/record_json_offsets");
        if (off >= 0) H5Dclose(off);
        hid_t js = rc ? -1 : H5Dopen2((hid_t)d->file, "record_json", H5P_DEFAULT);
        size_t bytes = rc ? 0 : (size_t)d->json_offsets[d->n_records];
        d->json = js >= 0 ? zen_malloc(bytes + 1) : NULL;
        if (!rc) rc = js < 0 ? zen_fail(ZEN_ERR_INPUT, "%s: cannot open /record_json", path)
                     : !d->json ? ZEN_ERR_INTERNAL
                                : read_range(path, js, H5T_NATIVE_UINT8, 0, (hsize_t)bytes, d->json, "/record_json");
        if (js >= 0) H5Dclose(js);
    }
    if (rc) zen_dataset_close(d);
    return rc;
}

int zen_record_json(const zen_dataset *d, int64_t r, const char **text, size_t *len) {
    if (!d->json || r < 0 || r >= d->n_records)
        return zen_fail(ZEN_ERR_INTERNAL, "%s: record %lld has no fields", d->path, (long long)r);
    *text = d->json + d->json_offsets[r];
    *len = (size_t)(d->json_offsets[r + 1] - d->json_offsets[r]);
    return 0;
}

void zen_dataset_close(zen_dataset *d) {
    if (!d->path) return; /* never opened (a zeroed struct) or already closed */
    if (d->mask > 0) H5Dclose((hid_t)d->mask);
    if (d->tokens > 0) H5Dclose((hid_t)d->tokens);
    if (d->file > 0) H5Fclose((hid_t)d->file);
    free(d->offsets);
    free(d->labels);
    free(d->json);
    free(d->json_offsets);
    free(d->path);
    memset(d, 0, sizeof *d);
}

int64_t zen_dataset_num_sequences(const zen_dataset *d, size_t T) {
    return d->n_tokens < 1 ? 0 : (d->n_tokens - 1) / (int64_t)T;
}

/* the documents of tokens [g0, g0 + T]: each row's segment start and RoPE
 * position, and mask 0 on a target that begins another document */
static void segment_rows(const zen_dataset *d, int64_t g0, size_t T, uint8_t *mask, int32_t *pos, int32_t *seg) {
    int64_t lo = 0, hi = d->n_docs; /* the document holding g0: off[j] <= g0 < off[j + 1] */
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (d->offsets[mid] <= g0) lo = mid;
        else hi = mid - 1;
    }
    int64_t j = lo;
    for (size_t t = 0; t < T; t++) {
        int64_t g = g0 + (int64_t)t;
        while (d->offsets[j + 1] <= g) j++; /* past the documents that end here (empty ones too) */
        int64_t start = d->offsets[j] > g0 ? d->offsets[j] - g0 : 0;
        seg[t] = (int32_t)start;
        pos[t] = (int32_t)((int64_t)t - start);
        if (g + 1 == d->offsets[j + 1]) mask[t] = 0; /* the next token starts another document */
    }
}

int zen_dataset_read(const zen_dataset *d, int64_t seq, size_t T, int32_t *inputs, int32_t *targets, uint8_t *mask,
                     int32_t *pos, int32_t *seg) {
    if (seq < 0 || seq >= zen_dataset_num_sequences(d, T))
        return zen_fail(ZEN_ERR_INPUT, "%s: sequence %lld is out of range (%lld sequences of %zu)", d->path,
                        (long long)seq, (long long)zen_dataset_num_sequences(d, T), T);
    int32_t *buf = malloc((T + 1) * sizeof(int32_t));
    if (!buf) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    hsize_t start = (hsize_t)seq * T;
    int rc = read_range(d->path, (hid_t)d->tokens, H5T_NATIVE_INT32, start, T + 1, buf, "/tokens");
    if (!rc) {
        memcpy(inputs, buf, T * sizeof(int32_t));
        memcpy(targets, buf + 1, T * sizeof(int32_t));
        if (d->has_mask)
            rc = read_range(d->path, (hid_t)d->mask, H5T_NATIVE_UINT8, start + 1, T, mask, "/loss_mask");
        else
            memset(mask, 1, T);
    }
    if (!rc && pos) {
        if (d->offsets && d->doc_mask) {
            segment_rows(d, (int64_t)start, T, mask, pos, seg);
        } else { /* one segment: positions 0..T-1, every key before */
            for (size_t t = 0; t < T; t++) pos[t] = (int32_t)t, seg[t] = 0;
        }
    }
    free(buf);
    return rc;
}

int zen_dataset_check_seq_len(const zen_dataset *d, size_t T) {
    if (d->packed_seq_len && (size_t)d->packed_seq_len != T)
        return zen_fail(ZEN_ERR_INPUT, "%s was packed for seq_len %lld (zen data --pack); use seq_len %lld or pack it "
                        "again for %zu", d->path, (long long)d->packed_seq_len, (long long)d->packed_seq_len, T);
    return 0;
}

int zen_dataset_read_range(const zen_dataset *d, int64_t start, size_t n, int32_t *tokens, uint8_t *mask) {
    if (start < 0 || n > (size_t)d->n_tokens || start > d->n_tokens - (int64_t)n)
        return zen_fail(ZEN_ERR_INPUT, "%s: tokens [%lld, %lld) are out of range (%lld tokens)", d->path,
                        (long long)start, (long long)start + (long long)n, (long long)d->n_tokens);
    int rc = read_range(d->path, (hid_t)d->tokens, H5T_NATIVE_INT32, (hsize_t)start, n, tokens, "/tokens");
    if (!rc && d->has_mask) rc = read_range(d->path, (hid_t)d->mask, H5T_NATIVE_UINT8, (hsize_t)start, n, mask, "/loss_mask");
    else if (!rc) memset(mask, 1, n);
    return rc;
}
