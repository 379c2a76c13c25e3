/* objectives/sft.c: supervised fine-tuning's token loss: the mean
 * cross-entropy of the targets whose loss_mask is 1, normalised by the
 * number of such targets in the whole step (every micro-batch, every rank),
 * so accumulation and ranks equal one big batch. Items are the file's
 * sequences of seq_len tokens (token_batch.h), documents kept apart. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "objective.h"
#include "token_batch.h"

enum { PRE_TARGETS, PRE_COUNT };
enum { SUM_LOSS, SUM_TARGETS, SUM_COUNT };

static int sft_open(zen_objective *o, zen_dataset *d, const char *path, int vocab, int64_t *items) {
    int rc = zen_dataset_open(d, path, vocab);
    if (!rc) rc = zen_dataset_check_seq_len(d, o->T);
    if (rc) return rc;
    d->doc_mask = o->doc_mask;
    if (d->records != ZEN_RECORDS_TOKENS)
        return zen_fail(ZEN_ERR_INPUT, "%s holds %s: set objective to %s", path, zen_record_layout_of(d->records)->noun,
                        zen_objective_names_for(d->records));
    *items = zen_dataset_num_sequences(d, o->T);
    if (*items < 1)
        return zen_fail(ZEN_ERR_INPUT, "%s: %lld tokens, fewer than one sequence of %zu", path, (long long)d->n_tokens,
                        o->T);
    return 0;
}

static int sft_alloc(zen_objective *o) {
    zen_batch *b = zen_calloc((size_t)o->n_micro, sizeof(zen_batch));
    if (!b) return ZEN_ERR_INTERNAL;
    o->state = b;
    for (int j = 0; j < o->n_micro; j++)
        if (zen_batch_alloc(&b[j], o->B, o->T)) return ZEN_ERR_INTERNAL;
    return 0;
}

static void sft_free(zen_objective *o) {
    zen_batch *b = o->state;
    for (int j = 0; j < o->n_micro; j++) zen_batch_free(&b[j]);
    free(b);
}

/* n sequences; the rest of the batch (an evaluation's last) are rows of a
 * valid token that count nothing, one segment each */
static int sft_load(zen_objective *o, int j, const zen_dataset *d, const int64_t *ids, size_t n) {
    zen_batch *b = (zen_batch *)o->state + j;
    int rc = 0;
    for (size_t row = 0; row < o->B && !rc; row++) {
        if (row < n) {
            rc = zen_batch_read_row(b, d, row, ids[row]);
            continue;
        }
        memset(b->inputs + row * o->T, 0, o->T * sizeof(int32_t));
        memset(b->targets + row * o->T, 0, o->T * sizeof(int32_t));
        memset(b->mask + row * o->T, 0, o->T);
        for (size_t t = 0; t < o->T; t++) b->pos[row * o->T + t] = (int32_t)t, b->seg[row * o->T + t] = 0;
    }
    return rc;
}

static int sft_pre(zen_objective *o, int j, const zen_objective_env *e, double *pre) {
    (void)e;
    pre[PRE_TARGETS] = (double)zen_batch_mask_count((zen_batch *)o->state + j);
    return 0;
}

static int sft_run(zen_objective *o, int j, const zen_objective_env *e, uint64_t dropout_seed, int backward,
                   const double *totals, double *sums) {
    const zen_batch *b = (const zen_batch *)o->state + j;
    float scale = backward && totals[PRE_TARGETS] > 0 ? 1.0f / (float)totals[PRE_TARGETS] : 0.0f;
    sums[SUM_TARGETS] = (double)zen_batch_mask_count(b);
    return zen_batch_run(b, e->m, e->lo, e->a, scale, dropout_seed, &sums[SUM_LOSS]);
}

static void sft_values(const zen_objective *o, const double *sums, double *values) {
    (void)o;
    values[0] = sums[SUM_TARGETS] > 0 ? sums[SUM_LOSS] / sums[SUM_TARGETS] : NAN;
    values[1] = exp(values[0]);
}

static void sft_describe(const zen_objective *o, const char *reference, char *buf, size_t cap) {
    (void)reference;
    snprintf(buf, cap, "objective sft: the mean token loss of the targets with loss_mask 1%s",
             o->doc_mask ? ", documents kept apart" : " (documents read as one causal stream)");
}

static const char *const sft_metrics[] = {"loss", "ppl"};
static const zen_shown_metric sft_shown[] = {{"ppl", "ppl", "%.3f"}};

const zen_objective_ops zen_objective_sft = {
    .name = "sft",
    .summary = "supervised fine-tuning: the mean cross-entropy of the targets with loss_mask 1",
    .records = ZEN_RECORDS_TOKENS,
    .item = "sequences",
    .keys = NULL,
    .rows_per_item = 1,
    .shared_layout = 0,
    .per_sequence_logits = 1,
    .n_pre = PRE_COUNT,
    .n_sums = SUM_COUNT,
    .n_metrics = 2,
    .n_train = 1,
    .metrics = sft_metrics,
    .shown = sft_shown,
    .n_shown = 1,
    .open = sft_open,
    .alloc = sft_alloc,
    .free = sft_free,
    .load = sft_load,
    .pre = sft_pre,
    .run = sft_run,
    .values = sft_values,
    .describe = sft_describe,
};
