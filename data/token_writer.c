/* data/token_writer.c: streaming zen-tokens-v1 writer over HDF5. */
#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "token_writer.h"

#define BUF_TOKENS ((size_t)1 << 20)
#define CHUNK ((hsize_t)1 << 16)

static hid_t make_dataset(hid_t file, const char *name, hid_t type) {
    hsize_t dims = 0, maxdims = H5S_UNLIMITED, chunk = CHUNK;
    hid_t space = H5Screate_simple(1, &dims, &maxdims);
    hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(plist, 1, &chunk);
    H5Pset_shuffle(plist);
    H5Pset_deflate(plist, 4);
    hid_t d = H5Dcreate2(file, name, type, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    H5Pclose(plist);
    H5Sclose(space);
    return d;
}

static int append(hid_t dset, hid_t mem_type, const void *data, hsize_t start, hsize_t n) {
    if (n == 0) return 0;
    hsize_t size = start + n;
    if (H5Dset_extent(dset, &size) < 0) return -1;
    hid_t space = H5Dget_space(dset);
    hid_t mem = H5Screate_simple(1, &n, NULL);
    herr_t st = H5Sselect_hyperslab(space, H5S_SELECT_SET, &start, NULL, &n, NULL);
    if (st >= 0) st = H5Dwrite(dset, mem_type, mem, space, H5P_DEFAULT, data);
    H5Sclose(mem);
    H5Sclose(space);
    return st < 0 ? -1 : 0;
}

static int flush(zen_token_writer *w) {
    errno = 0;
    hsize_t start = (hsize_t)(w->n_tokens - (int64_t)w->buf_len);
    if (append((hid_t)w->tokens, H5T_NATIVE_INT32, w->tok_buf, start, w->buf_len) ||
        append((hid_t)w->mask, H5T_NATIVE_UINT8, w->mask_buf, start, w->buf_len) ||
        append((hid_t)w->offsets, H5T_NATIVE_INT64, w->off_buf, (hsize_t)w->n_written_offsets, w->off_len))
        return zen_fail(ZEN_ERR_INTERNAL, "%s: HDF5 write failed: %s", w->path, errno ? strerror(errno) : "disk full?");
    w->n_written_offsets += (int64_t)w->off_len;
    w->buf_len = w->off_len = 0;
    return 0;
}

/* a scalar int64 root attribute */
static int write_attr(zen_token_writer *w, const char *name, int64_t value) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2((hid_t)w->file, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    long long v = value;
    int ok = attr >= 0 && H5Awrite(attr, H5T_NATIVE_LLONG, &v) >= 0;
    if (attr >= 0) ok &= H5Aclose(attr) >= 0;
    H5Sclose(space);
    return ok ? 0 : zen_fail(ZEN_ERR_INTERNAL, "%s: cannot write the attribute %s", w->path, name);
}

int zen_token_writer_open(zen_token_writer *w, const char *path, int32_t vocab_size) {
    memset(w, 0, sizeof *w);
    w->file = w->tokens = w->mask = w->offsets = -1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int rc = zen_atomic_tmp_name(path, &w->tmp_path);
    if (rc) return rc;
    if ((rc = zen_mkdir_parents(path))) {
        free(w->tmp_path);
        w->tmp_path = NULL;
        return rc;
    }
    w->path = strdup(path);
    w->tok_buf = malloc(BUF_TOKENS * sizeof(int32_t));
    w->mask_buf = malloc(BUF_TOKENS);
    w->off_buf = malloc(BUF_TOKENS * sizeof(int64_t));
    if (!w->path || !w->tmp_path || !w->tok_buf || !w->mask_buf || !w->off_buf) {
        zen_token_writer_abort(w);
        return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    }
    w->file = H5Fcreate(w->tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s: cannot create", w->tmp_path);
        zen_token_writer_abort(w);
        return rc;
    }
    w->tokens = make_dataset((hid_t)w->file, "tokens", H5T_STD_I32LE);
    w->mask = make_dataset((hid_t)w->file, "loss_mask", H5T_STD_U8LE);
    w->offsets = make_dataset((hid_t)w->file, "doc_offsets", H5T_STD_I64LE);
    if (w->tokens < 0 || w->mask < 0 || w->offsets < 0) {
        zen_token_writer_abort(w);
        return zen_fail(ZEN_ERR_INTERNAL, "%s: cannot create the datasets", path);
    }
    if ((rc = write_attr(w, "vocab_size", vocab_size))) {
        zen_token_writer_abort(w);
        return rc;
    }
    w->off_buf[w->off_len++] = 0; /* doc_offsets starts at 0 */
    return 0;
}

int zen_token_writer_append(zen_token_writer *w, const int32_t *ids, const uint8_t *mask, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = n - i < BUF_TOKENS - w->buf_len ? n - i : BUF_TOKENS - w->buf_len;
        memcpy(w->tok_buf + w->buf_len, ids + i, k * sizeof(int32_t));
        memcpy(w->mask_buf + w->buf_len, mask + i, k);
        for (size_t j = 0; j < k; j++) w->n_masked += mask[i + j];
        w->buf_len += k;
        w->n_tokens += (int64_t)k;
        i += k;
        if (w->buf_len == BUF_TOKENS || w->off_len == BUF_TOKENS) {
            int rc = flush(w);
            if (rc) return rc;
        }
    }
    return 0;
}

int zen_token_writer_end_doc(zen_token_writer *w) {
    w->off_buf[w->off_len++] = w->n_tokens;
    w->n_docs++;
    return w->off_len == BUF_TOKENS ? flush(w) : 0;
}

int zen_token_writer_label(zen_token_writer *w, int label) {
    if (w->n_labels == w->cap_labels) {
        size_t cap = w->cap_labels ? 2 * w->cap_labels : 4096;
        uint8_t *more = realloc(w->labels, cap);
        if (!more) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        w->labels = more, w->cap_labels = cap;
    }
    w->labels[w->n_labels++] = label != 0;
    return 0;
}

int zen_token_writer_json(zen_token_writer *w, const char *json, size_t len) {
    if (w->json_len + len > w->json_cap) {
        size_t cap = w->json_cap ? 2 * w->json_cap : 65536;
        while (cap < w->json_len + len) cap *= 2;
        char *more = realloc(w->json, cap);
        if (!more) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        w->json = more, w->json_cap = cap;
    }
    if (w->n_json + 2 > w->cap_json) {
        size_t cap = w->cap_json ? 2 * w->cap_json : 4096;
        int64_t *more = realloc(w->json_offsets, cap * sizeof(int64_t));
        if (!more) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        w->json_offsets = more, w->cap_json = cap;
    }
    if (!w->n_json) w->json_offsets[0] = 0;
    memcpy(w->json + w->json_len, json, len);
    w->json_len += len;
    w->json_offsets[++w->n_json] = (int64_t)w->json_len;
    return 0;
}

/* /record_json and /record_json_offsets, whole, at close */
static int write_json(zen_token_writer *w) {
    if (!w->n_json) w->json_offsets = calloc(1, sizeof(int64_t));
    hid_t d = make_dataset((hid_t)w->file, "record_json", H5T_STD_U8LE);
    int bad = !w->json_offsets || d < 0 || append(d, H5T_NATIVE_UINT8, w->json ? w->json : "", 0, (hsize_t)w->json_len);
    if (d >= 0) bad |= H5Dclose(d) < 0;
    hid_t o = bad ? -1 : make_dataset((hid_t)w->file, "record_json_offsets", H5T_STD_I64LE);
    bad |= o < 0 || append(o, H5T_NATIVE_INT64, w->json_offsets, 0, (hsize_t)w->n_json + 1);
    if (o >= 0) bad |= H5Dclose(o) < 0;
    return bad ? zen_fail(ZEN_ERR_INTERNAL, "%s: HDF5 write failed: %s", w->path, errno ? strerror(errno) : "disk full?")
               : 0;
}

/* /labels, whole, at close */
static int write_labels(zen_token_writer *w) {
    hid_t d = make_dataset((hid_t)w->file, "labels", H5T_STD_U8LE);
    int bad = d < 0 || append(d, H5T_NATIVE_UINT8, w->labels, 0, (hsize_t)w->n_labels);
    if (d >= 0) bad |= H5Dclose(d) < 0;
    return bad ? zen_fail(ZEN_ERR_INTERNAL, "%s: HDF5 write failed: %s", w->path, errno ? strerror(errno) : "disk full?")
               : 0;
}

int zen_token_writer_add(zen_token_writer *w, const int32_t *ids, const uint8_t *mask, size_t n) {
    int rc = zen_token_writer_append(w, ids, mask, n);
    return rc ? rc : zen_token_writer_end_doc(w);
}

/* closes every handle (all of them, whatever fails); 0 when all closed
 * cleanly. HDF5 writes cached chunks and metadata at close, so a full disk
 * often shows only here. */
static int close_handles(zen_token_writer *w) {
    int bad = 0;
    if (w->tokens >= 0) bad |= H5Dclose((hid_t)w->tokens) < 0;
    if (w->mask >= 0) bad |= H5Dclose((hid_t)w->mask) < 0;
    if (w->offsets >= 0) bad |= H5Dclose((hid_t)w->offsets) < 0;
    if (w->file >= 0) bad |= H5Fclose((hid_t)w->file) < 0;
    w->file = w->tokens = w->mask = w->offsets = -1;
    return bad ? -1 : 0;
}

static void free_buffers(zen_token_writer *w) {
    free(w->path);
    free(w->tmp_path);
    free(w->tok_buf);
    free(w->mask_buf);
    free(w->off_buf);
    free(w->labels);
    w->labels = NULL;
    free(w->json);
    free(w->json_offsets);
    w->json = NULL, w->json_offsets = NULL;
    w->path = w->tmp_path = NULL;
    w->tok_buf = NULL;
    w->mask_buf = NULL;
    w->off_buf = NULL;
}

int zen_token_writer_close(zen_token_writer *w) {
    int rc = flush(w);
    if (!rc && w->packed_seq_len) rc = write_attr(w, "packed_seq_len", w->packed_seq_len);
    if (!rc && w->records != ZEN_RECORDS_TOKENS)
        rc = write_attr(w, zen_record_layout_of(w->records)->attribute, w->n_records);
    if (!rc && zen_record_layout_of(w->records)->labelled) rc = write_labels(w);
    if (!rc && zen_record_layout_of(w->records)->fields) rc = write_json(w);
    errno = 0;
    if (!rc && H5Fflush((hid_t)w->file, H5F_SCOPE_GLOBAL) < 0)
        rc = zen_fail(ZEN_ERR_INTERNAL, "%s: HDF5 write failed: %s", w->path, errno ? strerror(errno) : "disk full?");
    if (close_handles(w) && !rc) rc = zen_fail(ZEN_ERR_INTERNAL, "%s: HDF5 close failed: %s", w->path, errno ? strerror(errno) : "disk full?");
    if (!rc) rc = zen_atomic_commit_path(w->tmp_path, w->path); /* fsync, rename; removes the temp file on failure */
    else remove(w->tmp_path);
    free_buffers(w);
    return rc;
}

void zen_token_writer_abort(zen_token_writer *w) {
    close_handles(w);
    if (w->tmp_path) remove(w->tmp_path);
    free_buffers(w);
}
