/* objectives/pref_step.h: one micro-batch of preference pairs through the
 * decoder: the reference's log-probabilities (computed, or given), the
 * policy's, each pair's loss (objectives/preference.h), and the backward of the
 * step's loss through per-row weights on the token losses. */
#ifndef ZEN_PREF_STEP_H
#define ZEN_PREF_STEP_H
#include "pair_batch.h"
#include "preference.h"

typedef struct {
    zen_pref_opts opts;
    const zen_lora *ref;      /* DPO's reference: a frozen adapter, or NULL: the base with the adapter off */
    const double *ref_logps;  /* DPO: the batch's precomputed reference [groups][2] (chosen, rejected), or NULL */
} zen_pref_ctx;

/* Runs the batch. The step's loss is sum(pair losses) / pairs_total (+ for
 * ORPO sum(NLL token losses) / nll_tokens_total); acc (not NULL) gets the
 * metric sums of the batch's pairs and its NLL. With backward, the gradient
 * of the batch's share of that loss is accumulated into lo->grads. */
int zen_pref_run(const zen_pref_ctx *c, const zen_pair_batch *b, const zen_model *m, const zen_lora *lo, zen_acts *a,
                 uint64_t dropout_seed, double pairs_total, double nll_tokens_total, int backward, zen_pref_sums *acc);

/* tokens the batch's NLL counts (ORPO): the chosen rows, and with
 * nll_prompt the prompt rows once */
double zen_pref_nll_tokens(const zen_pref_opts *o, const zen_pair_batch *b);

#endif
