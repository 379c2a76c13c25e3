/* objectives/pair_batch.h: a micro-batch of preference pairs (or multiple-choice
 * records: a context and its choices) as decoder rows.
 *
 * A pair (prompt p of P tokens, chosen c of C, rejected r of R) is two
 * sequences, p+c and p+r. Row j of a sequence reads token j and predicts
 * token j+1, so the completion's log-probability comes from the rows
 * P-1 .. P+C-2; the rows before (the prompt's first P-1) are the same in
 * both sequences.
 * - shared (the default): the prompt's P-1 rows are run once; the attention
 *   sees [prompt rows, c's rows] and [prompt rows again, r's rows] as two
 *   segments (model/decoder.h, zen_shared_layout). Rows: all prompts first
 *   (the rows read twice), then each pair's chosen and rejected rows.
 * - apart: the two sequences laid end to end as documents, the prompt run
 *   twice (what TRL, Unsloth and torchtune do; for tests and benchmarks).
 * Each row is tagged with its group (pair) and kind: prompt, or which
 * continuation (0 = chosen, 1 = rejected; choice k of a record). */
#ifndef ZEN_PAIR_BATCH_H
#define ZEN_PAIR_BATCH_H
#include <stddef.h>
#include <stdint.h>

#include "../data/dataset.h"
#include "../model/decoder.h"

#define ZEN_ROW_PROMPT (-1) /* kind of a prompt row */

typedef struct {
    size_t cap_rows;         /* rows it can hold */
    int shared;              /* layout: shared prompt (1) or apart (0) */
    size_t N;                /* rows laid out */
    size_t groups;           /* pairs (records) in the batch */
    int32_t *inputs, *targets, *pos, *seg; /* [cap_rows]; seg only apart */
    uint8_t *mask;           /* [cap_rows] rows whose token loss is read: completion rows, and prompt rows
                              * with prompt_loss */
    int32_t *row_group;      /* [cap_rows] */
    int32_t *row_kind;       /* [cap_rows] ZEN_ROW_PROMPT or the continuation's index */
    size_t cap_att;          /* the shared layout's attention rows (a prompt once per continuation): at least cap_rows */
    int32_t *att_seg, *att_from, *att_out, *att_again; /* [cap_att] the shared layout's arrays */
    zen_shared_layout layout;
    int64_t *group_id;       /* [cap_rows] the caller's id of each group (the pair's index in its file) */
    const zen_dataset *source; /* the file its groups were read from (a caller's note; NULL if none) */
} zen_pair_batch;

/* cap_rows rows, and cap_att attention rows (0: cap_rows) */
int zen_pair_batch_alloc(zen_pair_batch *b, size_t cap_rows, size_t cap_att, int shared);
void zen_pair_batch_free(zen_pair_batch *b);
void zen_pair_batch_clear(zen_pair_batch *b);
/* Adds a group: the prompt's tokens [P >= 1] and k continuations (tokens
 * and lengths, each >= 1). With prompt_loss, the prompt's rows (p[1..P-1]
 * predicted) are in the mask: in the shared layout once, apart in the first
 * continuation's sequence only. ZEN_ERR_INTERNAL when it does not fit. */
int zen_pair_batch_add(zen_pair_batch *b, const int32_t *prompt, size_t P, const int32_t *const *cont,
                       const size_t *cont_len, int k, int prompt_loss);
/* Adds pair `pair` of a preference file (data/pairs.h) as a group with id pair. */
int zen_pair_batch_add_pair(zen_pair_batch *b, const zen_dataset *d, int64_t pair, int prompt_loss);
/* rows the group would take */
size_t zen_pair_batch_rows(int shared, size_t P, const size_t *cont_len, int k);
/* Runs the decoder forward on the batch: row_loss [N] gets each masked-in
 * row's token loss (model/decoder.h, zen_decoder_forward). */
int zen_pair_batch_forward(const zen_pair_batch *b, const zen_model *m, const zen_lora *lo, zen_acts *a,
                           uint64_t dropout_seed, float *row_loss);
/* The summed log-probability of each group's continuations 0 .. k-1 from
 * the row losses: logps [groups][k] = -sum of their rows' losses, counts
 * (may be NULL) [groups][k] their rows (tokens). */
void zen_pair_batch_sums(const zen_pair_batch *b, const float *row_loss, int k, double *logps, double *counts);
/* The summed log-probability of each group's continuations 0 .. k-1 under
 * adapter lo (NULL: the base): the forward, then zen_pair_batch_sums. */
int zen_pair_batch_logps(const zen_pair_batch *b, const zen_model *m, const zen_lora *lo, zen_acts *a,
                         uint64_t dropout_seed, int k, double *logps, double *counts);
/* after zen_pair_batch_forward on the same batch: the gradient of sum row_weight[n] * loss[n] */
int zen_pair_batch_backward(const zen_pair_batch *b, const zen_model *m, const zen_lora *lo, zen_acts *a,
                            const float *row_weight);

#endif
