/* data/dataset.h: tokenized datasets in HDF5, layout "zen-tokens-v1":
 *   /tokens     int32 [n]     all documents concatenated
 *   /loss_mask  uint8 [n]     optional, 1 where predicting this token counts
 *   /doc_offsets int64 [d+1]  optional
 *   /labels     uint8 [r]     a labelled record layout's (data/records.h): one 0/1 per record
 *   /record_json uint8, /record_json_offsets int64 [r + 1]: a layout with fields: each record's JSON
 *   root attribute vocab_size (integer)
 * Sequence i of length T is tokens[i*T .. i*T+T] (T+1 tokens): inputs are the
 * first T, targets the last T, the mask is loss_mask of the targets; there are
 * floor((n-1)/T) sequences. Read through the HDF5 C library in pieces, never
 * the whole file. */
#ifndef ZEN_DATASET_H
#define ZEN_DATASET_H
#include <stddef.h>
#include <stdint.h>

#include "records.h"

/* what the check of a file found */
typedef struct {
    int64_t n_tokens;
    int has_mask;
    int64_t vocab_size;         /* the file's attribute */
    int64_t n_masked;           /* targets (positions >= 1) whose mask is 1 */
    int64_t n_docs;             /* documents in /doc_offsets, -1 without it */
    int64_t packed_seq_len;     /* the root attribute of a packed file (zen data --pack T), else 0 */
    zen_records records;        /* the record layout its root attributes name (data/records.h) */
    int64_t n_records;          /* their count (0 for a plain token stream) */
} zen_dataset_info;

typedef struct {
    char *path;
    int64_t file, tokens, mask; /* HDF5 handles (hid_t); 0 = not open */
    int64_t n_tokens;
    int has_mask;
    int64_t vocab_size;         /* the file's attribute */
    int64_t n_masked;           /* targets whose mask is 1, in the whole file */
    int64_t n_docs;             /* -1 without /doc_offsets */
    int64_t *offsets;           /* [n_docs + 1] document boundaries in memory, NULL without /doc_offsets */
    int64_t packed_seq_len;     /* 0 unless written by zen data --pack T */
    zen_records records;        /* ZEN_RECORDS_TOKENS, or the records zen data --format F wrote (data/records.h) */
    int64_t n_records;          /* their count (0 for tokens) */
    uint8_t *labels;            /* [n_records] a labelled layout's /labels (0 or 1), in memory; else NULL */
    char *json;                 /* a layout with fields: /record_json, in memory; else NULL */
    int64_t *json_offsets;      /* [n_records + 1] record r's JSON is json[off[r], off[r+1]) */
    int doc_mask;               /* 1 (the default): documents are kept apart when read; 0: one segment */
} zen_dataset;

/* Opens and validates the file (see dataset.c: layout, storage, attribute,
 * and, streaming through it once, every token id below the file's vocab_size
 * and model_vocab, every mask value 0 or 1, the document offsets). The check
 * runs in a child process, so even a crash of libhdf5 on a hostile file is a
 * one-line error naming the file and what is wrong. */
int zen_dataset_open(zen_dataset *d, const char *path, int model_vocab);
/* The same check, in this process, on a file image in memory (the fuzzer). */
int zen_dataset_check_image(const void *data, size_t size, int model_vocab, zen_dataset_info *info);
/* Record r's fields as the JSON object zen data kept (a layout with fields, data/records.h): not
 * NUL-terminated, *len bytes. */
int zen_record_json(const zen_dataset *d, int64_t r, const char **text, size_t *len);
/* Safe on a zero-initialised dataset and on one already closed. */
void zen_dataset_close(zen_dataset *d);
int64_t zen_dataset_num_sequences(const zen_dataset *d, size_t T);
/* Reads sequence `seq`: inputs, targets [T] and mask [T] (all ones without
 * /loss_mask), and (pos and seg may be NULL) its documents: with
 * /doc_offsets and doc_mask, each row's segment start seg[t] (the first row
 * of its document in the sequence), its RoPE position pos[t] = t - seg[t],
 * and mask 0 where the target begins another document; else one segment
 * (seg 0, pos t). */
int zen_dataset_read(const zen_dataset *d, int64_t seq, size_t T, int32_t *inputs, int32_t *targets, uint8_t *mask,
                     int32_t *pos, int32_t *seg);
/* A packed file (packed_seq_len) read with another sequence length is a one-line error. */
int zen_dataset_check_seq_len(const zen_dataset *d, size_t T);

/* Reads tokens [start, start + n) and their loss mask (ones without /loss_mask). */
int zen_dataset_read_range(const zen_dataset *d, int64_t start, size_t n, int32_t *tokens, uint8_t *mask);

#endif
