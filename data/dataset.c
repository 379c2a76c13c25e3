/* data/dataset.c: reading and validating "zen-tokens-v1" HDF5 datasets. */
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "dataset.h"

#define SCAN_CHUNK ((hsize_t)1 << 20) /* tokens per read while validating */

/* reads count elements from offset of a 1-D dataset, converted to mem_type */
static int read_range(const zen_dataset *d, hid_t dset, hid_t mem_type, hsize_t offset,
                      hsize_t count, void *out, const char *name) {
    hid_t space = H5Dget_space(dset);
    hid_t mem = H5Screate_simple(1, &count, NULL);
    herr_t st = H5Sselect_hyperslab(space, H5S_SELECT_SET, &offset, NULL, &count, NULL);
    if (st >= 0) st = H5Dread(dset, mem_type, mem, space, H5P_DEFAULT, out);
    H5Sclose(mem);
    H5Sclose(space);
    if (st < 0)
        return zen_fail(ZEN_ERR_INPUT, "%s: cannot read %s[%llu..%llu] (corrupt or truncated file?)",
                        d->path, name, (unsigned long long)offset, (unsigned long long)(offset + count));
    return 0;
}

/* a 1-D integer dataset; returns its length */
static int check_1d_integer(const zen_dataset *d, hid_t dset, const char *name, int max_size,
                            int64_t *length) {
    hid_t type = H5Dget_type(dset);
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    H5T_sign_t sign = H5Tget_sign(type);
    H5Tclose(type);
    if (cls != H5T_INTEGER || (int)size > max_size || (size == 4 && sign != H5T_SGN_2))
        return zen_fail(ZEN_ERR_INPUT, "%s: %s has the wrong dtype (expected %s)", d->path, name,
                        max_size == 4 ? "int32" : "uint8");
    hid_t space = H5Dget_space(dset);
    int rank = H5Sget_simple_extent_ndims(space);
    hsize_t dims[8] = {0};
    if (rank == 1) H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    if (rank != 1)
        return zen_fail(ZEN_ERR_INPUT, "%s: %s has rank %d (expected 1-D)", d->path, name, rank);
    *length = (int64_t)dims[0];
    return 0;
}

static int read_vocab_attr(zen_dataset *d) {
    if (H5Aexists(d->file, "vocab_size") <= 0)
        return zen_fail(ZEN_ERR_INPUT, "%s: missing root attribute 'vocab_size'", d->path);
    hid_t attr = H5Aopen(d->file, "vocab_size", H5P_DEFAULT);
    hid_t type = H5Aget_type(attr);
    hid_t space = H5Aget_space(attr);
    int ok = H5Tget_class(type) == H5T_INTEGER && H5Sget_simple_extent_npoints(space) == 1;
    long long value = 0;
    if (ok) ok = H5Aread(attr, H5T_NATIVE_LLONG, &value) >= 0;
    H5Sclose(space);
    H5Tclose(type);
    H5Aclose(attr);
    if (!ok || value < 1)
        return zen_fail(ZEN_ERR_INPUT, "%s: root attribute 'vocab_size' must be one positive integer",
                        d->path);
    d->vocab_size = value;
    return 0;
}

/* streams through the file once: token ids in range, mask values 0/1 */
static int scan_values(zen_dataset *d, int model_vocab) {
    int32_t *tok = malloc(SCAN_CHUNK * sizeof(int32_t));
    uint8_t *msk = malloc(SCAN_CHUNK);
    int rc = (tok && msk) ? 0 : zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    for (hsize_t off = 0; !rc && off < (hsize_t)d->n_tokens; off += SCAN_CHUNK) {
        hsize_t n = (hsize_t)d->n_tokens - off < SCAN_CHUNK ? (hsize_t)d->n_tokens - off : SCAN_CHUNK;
        rc = read_range(d, (hid_t)d->tokens, H5T_NATIVE_INT32, off, n, tok, "/tokens");
        for (hsize_t i = 0; !rc && i < n; i++)
            if (tok[i] < 0 || tok[i] >= model_vocab)
                rc = zen_fail(ZEN_ERR_INPUT, "%s: /tokens[%llu] = %d is outside the model's vocab [0, %d)",
                              d->path, (unsigned long long)(off + i), tok[i], model_vocab);
        if (!rc && d->has_mask) {
            rc = read_range(d, (hid_t)d->mask, H5T_NATIVE_UINT8, off, n, msk, "/loss_mask");
            for (hsize_t i = 0; !rc && i < n; i++)
                if (msk[i] > 1)
                    rc = zen_fail(ZEN_ERR_INPUT, "%s: /loss_mask[%llu] = %d (expected 0 or 1)", d->path,
                                  (unsigned long long)(off + i), msk[i]);
        }
    }
    free(tok);
    free(msk);
    return rc;
}

int zen_dataset_open(zen_dataset *d, const char *path, int model_vocab) {
    memset(d, 0, sizeof *d);
    d->path = strdup(path);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are reported as one line by us */
    int rc = 0;
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s: cannot open", path);
        goto done;
    }
    fclose(probe);
    if (H5Fis_hdf5(path) <= 0) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s: not an HDF5 file", path);
        goto done;
    }
    d->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (d->file < 0) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s: cannot open as HDF5 (truncated?)", path);
        goto done;
    }
    if (H5Lexists((hid_t)d->file, "tokens", H5P_DEFAULT) <= 0 ||
        (d->tokens = H5Dopen2((hid_t)d->file, "tokens", H5P_DEFAULT)) < 0) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s: missing dataset /tokens", path);
        goto done;
    }
    if ((rc = check_1d_integer(d, (hid_t)d->tokens, "/tokens", 4, &d->n_tokens))) goto done;
    if (H5Lexists((hid_t)d->file, "loss_mask", H5P_DEFAULT) > 0) {
        int64_t mask_len = 0;
        d->mask = H5Dopen2((hid_t)d->file, "loss_mask", H5P_DEFAULT);
        if (d->mask < 0) {
            rc = zen_fail(ZEN_ERR_INPUT, "%s: /loss_mask is not a dataset", path);
            goto done;
        }
        if ((rc = check_1d_integer(d, (hid_t)d->mask, "/loss_mask", 1, &mask_len))) goto done;
        if (mask_len != d->n_tokens) {
            rc = zen_fail(ZEN_ERR_INPUT, "%s: /loss_mask has %lld entries but /tokens has %lld", path,
                          (long long)mask_len, (long long)d->n_tokens);
            goto done;
        }
        d->has_mask = 1;
    }
    if ((rc = read_vocab_attr(d))) goto done;
    if (d->n_tokens < 2) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s: /tokens holds %lld tokens; at least 2 are needed", path,
                      (long long)d->n_tokens);
        goto done;
    }
    rc = scan_values(d, model_vocab);
done:
    if (rc) zen_dataset_close(d);
    return rc;
}

void zen_dataset_close(zen_dataset *d) {
    if (!d->path) return; /* never opened (a zeroed struct) or already closed */
    if (d->mask > 0) H5Dclose((hid_t)d->mask);
    if (d->tokens > 0) H5Dclose((hid_t)d->tokens);
    if (d->file > 0) H5Fclose((hid_t)d->file);
    free(d->path);
    memset(d, 0, sizeof *d);
}

int64_t zen_dataset_num_sequences(const zen_dataset *d, size_t T) {
    return d->n_tokens < 1 ? 0 : (d->n_tokens - 1) / (int64_t)T;
}

int zen_dataset_read(const zen_dataset *d, int64_t seq, size_t T, int32_t *inputs,
                     int32_t *targets, uint8_t *mask) {
    if (seq < 0 || seq >= zen_dataset_num_sequences(d, T))
        return zen_fail(ZEN_ERR_INPUT, "%s: sequence %lld is out of range (%lld sequences of %zu)", d->path,
                        (long long)seq, (long long)zen_dataset_num_sequences(d, T), T);
    int32_t *buf = malloc((T + 1) * sizeof(int32_t));
    if (!buf) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    hsize_t start = (hsize_t)seq * T;
    int rc = read_range(d, (hid_t)d->tokens, H5T_NATIVE_INT32, start, T + 1, buf, "/tokens");
    if (!rc) {
        memcpy(inputs, buf, T * sizeof(int32_t));
        memcpy(targets, buf + 1, T * sizeof(int32_t));
        if (d->has_mask)
            rc = read_range(d, (hid_t)d->mask, H5T_NATIVE_UINT8, start + 1, T, mask, "/loss_mask");
        else
            memset(mask, 1, T);
    }
    free(buf);
    return rc;
}

int zen_dataset_read_range(const zen_dataset *d, int64_t start, size_t n, int32_t *tokens, uint8_t *mask) {
    if (start < 0 || start + (int64_t)n > d->n_tokens)
        return zen_fail(ZEN_ERR_INPUT, "%s: tokens [%lld, %lld) are out of range (%lld tokens)", d->path, (long long)start,
                        (long long)(start + (int64_t)n), (long long)d->n_tokens);
    int rc = read_range(d, (hid_t)d->tokens, H5T_NATIVE_INT32, (hsize_t)start, n, tokens, "/tokens");
    if (!rc && d->has_mask) rc = read_range(d, (hid_t)d->mask, H5T_NATIVE_UINT8, (hsize_t)start, n, mask, "/loss_mask");
    else if (!rc) memset(mask, 1, n);
    return rc;
}
