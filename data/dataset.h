/* data/dataset.h: tokenized datasets in HDF5, layout "zen-tokens-v1":
 *   /tokens     int32 [n]     all documents concatenated
 *   /loss_mask  uint8 [n]     optional, 1 where predicting this token counts
 *   /doc_offsets int64 [d+1]  optional
 *   root attribute vocab_size (integer)
 * Sequence i of length T is tokens[i*T .. i*T+T] (T+1 tokens): inputs are the
 * first T, targets the last T, the mask is loss_mask of the targets; there are
 * floor((n-1)/T) sequences. Read through the HDF5 C library in pieces, never
 * the whole file. */
#ifndef ZEN_DATASET_H
#define ZEN_DATASET_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *path;
    int64_t file, tokens, mask; /* HDF5 handles (hid_t); 0 = not open */
    int64_t n_tokens;
    int has_mask;
    int64_t vocab_size;         /* the file's attribute */
} zen_dataset;

/* Opens and validates the file: layout, dtypes, ranks, lengths, and (streaming
 * through it once) every token id < model_vocab and every mask value 0 or 1.
 * Every problem is a one-line error naming the file and what is wrong. */
int zen_dataset_open(zen_dataset *d, const char *path, int model_vocab);
/* Safe on a zero-initialised dataset and on one already closed. */
void zen_dataset_close(zen_dataset *d);
int64_t zen_dataset_num_sequences(const zen_dataset *d, size_t T);
/* Reads sequence `seq`: inputs, targets [T] and mask [T] (all ones without /loss_mask). */
int zen_dataset_read(const zen_dataset *d, int64_t seq, size_t T, int32_t *inputs,
                     int32_t *targets, uint8_t *mask);

/* Reads tokens [start, start + n) and their loss mask (ones without /loss_mask). */
int zen_dataset_read_range(const zen_dataset *d, int64_t start, size_t n, int32_t *tokens, uint8_t *mask);

#endif
