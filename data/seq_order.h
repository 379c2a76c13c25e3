/* data/seq_order.h: which sequence of a dataset feeds each batch: a contiguous
 * range of sequence indices (the training split or the held-out split), in a
 * fresh seeded permutation per epoch (or in file order). Everything is a pure
 * function of (seed, epoch, index), so a resumed run needs only its step. */
#ifndef ZEN_SEQ_ORDER_H
#define ZEN_SEQ_ORDER_H
#include <stdint.h>

typedef struct {
    int64_t first, count; /* sequences [first, first + count) of the file */
    uint64_t seed;
    int shuffle;
    int64_t epoch;        /* epoch of the cached permutation, -1 if none */
    int64_t *perm;        /* [count] */
} zen_seq_order;

int zen_seq_order_init(zen_seq_order *o, int64_t first, int64_t count, uint64_t seed, int shuffle);
void zen_seq_order_free(zen_seq_order *o);
/* The file's sequence index of position i (0 <= i < count) in epoch e. */
int64_t zen_seq_order_get(zen_seq_order *o, int64_t epoch, int64_t i);

#endif
