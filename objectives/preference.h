/* objectives/preference.h: the preference objectives as TRL defines them
 * (trl/trainer/dpo_trainer.py, trl/experimental/orpo), per pair, from its
 * log-probabilities; and the metrics TRL logs for them.
 *
 * DPO, with Δ = (logπ(c) - logπref(c)) - (logπ(r) - logπref(r)), each
 * log-probability summed over the completion's tokens:
 *   sigmoid  -log σ(βΔ)
 *   ipo      (Δ' - 1/(2β))², Δ' with each log-ratio divided by its completion's tokens
 *   robust   [-(1-ε) log σ(βΔ) + ε log σ(-βΔ)] / (1-2ε)
 *   hinge    relu(1 - βΔ)
 * ORPO: the chosen sequence's NLL (mean over its counted tokens, the prompt's
 * included by default) - β log σ(log-odds), the log-odds on each
 * completion's mean token log-probability ℓ: (ℓc - ℓr) - (log(1-e^ℓc) - log(1-e^ℓr)).
 * A step's loss is the mean over its pairs (the NLL: over all its counted
 * tokens), so gradient accumulation and ranks equal one big batch. */
#ifndef ZEN_PREFERENCE_H
#define ZEN_PREFERENCE_H
#include <stddef.h>

typedef enum { ZEN_PREF_DPO, ZEN_PREF_ORPO } zen_pref_kind;
typedef enum { ZEN_DPO_SIGMOID, ZEN_DPO_IPO, ZEN_DPO_ROBUST, ZEN_DPO_HINGE } zen_dpo_loss;

typedef struct {
    zen_pref_kind kind;
    zen_dpo_loss loss;
    double beta;            /* 0.1 */
    double label_smoothing; /* ε of robust, in [0, 0.5) */
    int nll_prompt;         /* ORPO: the NLL covers the prompt's tokens too (TRL); 0: the completion only */
} zen_pref_opts;

/* "sigmoid", "ipo", "robust", "hinge"; -1 if unknown */
int zen_dpo_loss_parse(const char *name, zen_dpo_loss *out);

/* one pair's log-probabilities */
typedef struct {
    double chosen, rejected;         /* policy, summed over each completion's tokens */
    double n_chosen, n_rejected;     /* completion tokens */
    double ref_chosen, ref_rejected; /* DPO: the reference's sums */
} zen_pair_logps;

/* The metrics TRL logs, summed over pairs (divide by pairs for the means). */
enum {
    ZEN_PM_LOSS, ZEN_PM_REWARDS_CHOSEN, ZEN_PM_REWARDS_REJECTED, ZEN_PM_REWARDS_ACCURACIES, ZEN_PM_REWARDS_MARGINS,
    ZEN_PM_LOGPS_CHOSEN, ZEN_PM_LOGPS_REJECTED, ZEN_PM_NLL_LOSS, ZEN_PM_LOG_ODDS_RATIO, ZEN_PM_LOG_ODDS_CHOSEN,
    ZEN_PM_COUNT
};
typedef struct {
    double sum[ZEN_PM_COUNT]; /* per-pair terms; NLL_LOSS holds the summed token losses */
    double pairs, nll_tokens;
} zen_pref_sums;

/* The metric names (TRL's: "rewards/chosen", ...) an objective logs, and the
 * means of sums: n_out names and values; loss = the step's loss. */
int zen_pref_metrics(const zen_pref_opts *o, const zen_pref_sums *s, const char **names, double *values);

/* One pair's loss term (to be divided by the step's pairs) and its
 * derivatives by the summed log-probabilities of the chosen and rejected
 * completions; adds the pair's metrics to acc (NULL: none). */
double zen_pref_pair(const zen_pref_opts *o, const zen_pair_logps *lp, double *d_chosen, double *d_rejected,
                     zen_pref_sums *acc);

#endif
