/* data/pairs.h: files of records (data/records.h), and preference pairs in
 * particular, in a zen-tokens-v1 file, as `zen data --format preference`
 * writes them:
 *   each pair is three consecutive documents of /doc_offsets: the prompt
 *   (loss_mask 0), the chosen completion and the rejected one (loss_mask 1);
 *   the root attribute preference_pairs holds their count (3 x pairs
 *   documents, none empty).
 * The prompt's tokens are stored once; a completion's sequence is the prompt
 * followed by it. */
#ifndef ZEN_PAIRS_H
#define ZEN_PAIRS_H
#include <stddef.h>
#include <stdint.h>

#include "dataset.h"

typedef struct {
    size_t prompt, chosen, rejected; /* tokens of each */
} zen_pair_lengths;

/* The file holds pairs laid out as above (a one-line error naming the file
 * otherwise: a token file without preference_pairs, a count that disagrees
 * with /doc_offsets, an empty document). *longest gets the longest
 * sequence, prompt + the longer completion. */
int zen_pairs_check(const zen_dataset *d, size_t *longest);
int64_t zen_pairs_count(const zen_dataset *d);
zen_pair_lengths zen_pair_lengths_of(const zen_dataset *d, int64_t pair);
/* tokens [prompt + chosen + rejected] of pair `pair`, in that order */
int zen_pair_read(const zen_dataset *d, int64_t pair, int32_t *tokens);

/* Any file of records (data/records.h): the layout is `kind` and every
 * record's documents are there and none is empty (a one-line error naming
 * the file otherwise). */
int zen_records_check(const zen_dataset *d, zen_records kind);
/* document k of record r: its length, and its tokens into tokens[len] */
size_t zen_record_doc_len(const zen_dataset *d, int64_t r, int k);
int zen_record_doc_read(const zen_dataset *d, int64_t r, int k, int32_t *tokens);

#endif
