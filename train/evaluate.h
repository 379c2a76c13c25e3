/* train/evaluate.h: an objective's loss and metrics over held-out items,
 * for zen train's validation and zen eval: the items in file order, in
 * batches of the objective's batch size, without dropout or backward, rank r
 * running batches r, r + ranks, ...; the batches' sums are added in file
 * order, so any number of ranks prints what one process prints. */
#ifndef ZEN_EVALUATE_H
#define ZEN_EVALUATE_H
#include "../objectives/objective.h"

/* Items [first, first + count) of d through o (its micro-batch 0): values
 * [n_metrics] (loss first), *tokens the targets that counted. a->logits_host,
 * when set, gets the logits of the first batch's first sequence. */
int zen_evaluate(zen_objective *o, const zen_objective_env *e, const zen_dataset *d, int64_t first, int64_t count,
                 double *values, double *tokens);

#endif
