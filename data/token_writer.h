/* data/token_writer.h: writes a "zen-tokens-v1" HDF5 file as a stream of
 * documents: /tokens (int32), /loss_mask (uint8), /doc_offsets (int64) and
 * the vocab_size attribute, chunked and deflate-compressed, appended in
 * pieces (inputs far larger than memory work), into FILE.tmp renamed at the
 * end, so a failed run leaves no partial file. */
#ifndef ZEN_TOKEN_WRITER_H
#define ZEN_TOKEN_WRITER_H
#include <stddef.h>
#include <stdint.h>

#include "records.h"

typedef struct {
    char *path, *tmp_path;
    int64_t file, tokens, mask, offsets; /* HDF5 handles */
    int32_t *tok_buf;
    uint8_t *mask_buf;
    size_t buf_len;
    int64_t *off_buf;
    size_t off_len;
    int64_t n_tokens, n_docs, n_masked, n_written_offsets;
    int64_t packed_seq_len; /* set by zen data --pack: written as the root attribute at close (0: none) */
    zen_records records;    /* set by a zen data --format of records (data/records.h): its attribute, */
    int64_t n_records;      /* the record count, is written at close */
    uint8_t *labels;        /* [n_labels] a labelled layout's labels (zen_token_writer_label), /labels at close */
    size_t n_labels, cap_labels;
    char *json;             /* a layout with fields: the records' JSON (zen_token_writer_json), at close */
    size_t json_len, json_cap;
    int64_t *json_offsets;  /* [n_json + 1] */
    size_t n_json, cap_json;
} zen_token_writer;

int zen_token_writer_open(zen_token_writer *w, const char *path, int32_t vocab_size);
/* Appends tokens (and their loss mask) to the current document. */
int zen_token_writer_append(zen_token_writer *w, const int32_t *ids, const uint8_t *mask, size_t n);
/* Ends the current document (records its end in /doc_offsets). */
int zen_token_writer_end_doc(zen_token_writer *w);
/* append + end_doc */
int zen_token_writer_add(zen_token_writer *w, const int32_t *ids, const uint8_t *mask, size_t n);
/* The JSON of the next record of a layout with fields (data/records.h): /record_json and
 * /record_json_offsets at close. */
int zen_token_writer_json(zen_token_writer *w, const char *json, size_t len);
/* The label (0 or 1) of the next record of a labelled layout (data/records.h). */
int zen_token_writer_label(zen_token_writer *w, int label);
int zen_token_writer_close(zen_token_writer *w);    /* flush, close, rename */
void zen_token_writer_abort(zen_token_writer *w);   /* close and remove the temporary file */

#endif
