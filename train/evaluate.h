/* train/evaluate.h: evaluation and batch assembly shared by `zen train` and
 * `zen eval`. */
#ifndef ZEN_EVALUATE_H
#define ZEN_EVALUATE_H
#include "../data/dataset.h"
#include "../data/seq_order.h"
#include "../model/decoder.h"

/* Host buffers of one micro-batch: [B*T] each; pos and seg are each row's
 * RoPE position and segment start (its document, see zen_dataset_read). */
typedef struct {
    size_t B, T;
    int32_t *inputs, *targets;
    uint8_t *mask;
    int32_t *pos, *seg;
    int32_t *run_buf;   /* [4 * B*T] the rows zen_batch_run runs: inputs, targets, pos, seg */
    uint8_t *run_mask;  /* [B*T] */
} zen_batch;

int zen_batch_alloc(zen_batch *b, size_t B, size_t T);
void zen_batch_free(zen_batch *b);
/* Row `row` of the batch from the file's sequence `seq`. */
int zen_batch_read_row(zen_batch *b, const zen_dataset *d, size_t row, int64_t seq);
size_t zen_batch_mask_count(const zen_batch *b);
/* zen_decoder_run on the batch, on the first T' <= T rows of each sequence:
 * the rows after every sequence's last masked-in target (a packed window's
 * padding) carry no loss and no earlier row attends to them, so they are not
 * run (T' = 0: nothing runs). Exact; a->T is T again on return. */
int zen_batch_run(const zen_batch *b, const zen_model *m, const zen_lora *lo, zen_acts *a, float grad_scale,
                  uint64_t dropout_seed, double *loss_sum);

/* Token-weighted mean masked loss over the sequences [first, first + count) of
 * d, in file order, in batches of a->B (the last one padded with masked-out
 * rows), without dropout. *tokens gets the number of counted targets. */
int zen_evaluate(const zen_model *m, const zen_lora *lo, zen_acts *a, const zen_dataset *d,
                 int64_t first, int64_t count, double *mean_loss, size_t *tokens);

#endif
