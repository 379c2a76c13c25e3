/* objectives/token_batch.h: a micro-batch of token sequences as SFT (and
 * zen eval's loss) runs them: B sequences of T tokens read from a
 * zen-tokens-v1 file, their documents kept apart, and the rows its loss
 * needs laid end to end. */
#ifndef ZEN_TOKEN_BATCH_H
#define ZEN_TOKEN_BATCH_H
#include "../data/dataset.h"
#include "../model/decoder.h"

/* Host buffers of one micro-batch: [B*T] each; pos and seg are each row's
 * RoPE position and segment start (its document, see zen_dataset_read). */
typedef struct {
    size_t B, T;
    int32_t *inputs, *targets;
    uint8_t *mask;
    int32_t *pos, *seg;
    int32_t *run_buf;   /* [4 * B*T] the rows zen_batch_run runs, end to end: inputs, targets, pos, seg */
    uint8_t *run_mask;  /* [B*T] */
} zen_batch;

int zen_batch_alloc(zen_batch *b, size_t B, size_t T);
void zen_batch_free(zen_batch *b);
/* Row `row` of the batch from the file's sequence `seq`. */
int zen_batch_read_row(zen_batch *b, const zen_dataset *d, size_t row, int64_t seq);
size_t zen_batch_mask_count(const zen_batch *b);
/* Lays the rows the batch's loss needs end to end into run_buf and run_mask:
 * of each segment (a maximal run of rows with one segment start), its rows
 * up to its last masked-in target. A row after that carries no loss, and
 * only later rows of its own segment attend to it, so leaving it out changes
 * no loss and no gradient. seg becomes each row's segment start among the
 * rows laid out; positions stay. Returns how many rows were laid out. */
size_t zen_batch_gather_live(const zen_batch *b);
/* zen_decoder_run on the rows of the batch its loss needs: of each segment
 * (document piece), the rows up to its last masked-in target, laid end to
 * end as one sequence when any are left out (a packed window's padding, a
 * prompt cut off by the window's end, a sequence with no loss). Exact: a
 * row left out has no loss, and only later rows of its own segment attend
 * to it. a->B and a->T are the batch's again on return. */
int zen_batch_run(const zen_batch *b, const zen_model *m, const zen_lora *lo, zen_acts *a, float grad_scale,
                  uint64_t dropout_seed, double *loss_sum);

#endif
