/* objectives/pairwise.c: DPO and ORPO as objectives: the rows of the table
 * for preference pairs (data/pairs.h). A micro-batch is batch_size pairs in
 * the shared-prompt layout (pair_batch.h; pair_layout apart runs each pair's
 * two sequences whole), run by pref_step.h on TRL's definitions
 * (preference.h); DPO's reference is the base with the adapter off or a
 * frozen adapter, its log-probabilities computed in each step or, with
 * dpo.precompute_ref, once before step 1 (ref_logps.h). A step's loss is the
 * mean over its pairs (ORPO's NLL over its counted tokens), from counts made
 * before any forward pass, so accumulation and ranks equal one big batch. */
#include <stdlib.h>
#include <string.h>

#include "../data/pairs.h"
#include "../util/error.h"
#include "objective.h"
#include "pref_step.h"
#include "ref_logps.h"

enum { PRE_TOKENS, PRE_PAIRS, PRE_NLL_TOKENS, PRE_COUNT };
enum { SUM_PAIRS = ZEN_PM_COUNT, SUM_NLL_TOKENS, SUM_COUNT };

typedef struct {
    zen_pref_opts opts;
    zen_pair_batch *micro;          /* [n_micro] */
    const zen_dataset *table_of[2]; /* the datasets whose reference is precomputed ... */
    double *table[2];               /* ... [pairs][2] each (dpo.precompute_ref) */
    double *batch_ref;              /* [2 * B] the micro-batch's rows of a table */
} pairwise;

static zen_pref_opts pref_opts(const zen_objective *o) {
    zen_pref_opts p;
    memset(&p, 0, sizeof p);
    p.kind = !strcmp(o->ops->name, "orpo") ? ZEN_PREF_ORPO : ZEN_PREF_DPO;
    zen_dpo_loss_parse(o->opts.dpo_loss, &p.loss);
    p.beta = o->opts.beta;
    p.label_smoothing = o->opts.label_smoothing;
    p.nll_prompt = o->opts.orpo_nll_prompt;
    return p;
}

static int check(const zen_objective_opts *o, const char **key) {
    zen_dpo_loss loss;
    if (zen_dpo_loss_parse(o->dpo_loss, &loss))
        return *key = "dpo.loss", zen_fail(ZEN_ERR_INPUT, "'%s' is not sigmoid, ipo, robust or hinge", o->dpo_loss);
    if (strcmp(o->pair_layout, "shared") && strcmp(o->pair_layout, "apart"))
        return *key = "pair_layout", zen_fail(ZEN_ERR_INPUT, "'%s' is not shared or apart", o->pair_layout);
    if (o->label_smoothing > 0 && loss != ZEN_DPO_ROBUST)
        return *key = "label_smoothing", zen_fail(ZEN_ERR_INPUT, "it is the robust loss's epsilon; it needs dpo.loss "
                                                  "robust");
    return 0;
}

static int uses_reference(const zen_objective_opts *o) {
    (void)o;
    return 1;
}

static int no_reference(const zen_objective_opts *o) {
    (void)o;
    return 0;
}

static int open_pairs(zen_objective *o, zen_dataset *d, const char *path, int vocab, int64_t *items) {
    size_t longest;
    int rc = zen_dataset_open(d, path, vocab);
    if (!rc) rc = zen_pairs_check(d, &longest);
    if (!rc && longest > o->T)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: pairs up to %zu tokens (prompt + completion) do not fit seq_len %zu; raise "
                      "seq_len or prepare the data with zen data --max-length %zu", path, longest, o->T, o->T);
    *items = rc ? 0 : zen_pairs_count(d);
    return rc;
}

static int alloc(zen_objective *o) {
    pairwise *p = zen_calloc(1, sizeof *p);
    if (!p) return ZEN_ERR_INTERNAL;
    o->state = p;
    p->opts = pref_opts(o);
    p->micro = zen_calloc((size_t)o->n_micro, sizeof(zen_pair_batch));
    p->batch_ref = zen_calloc(2 * o->B + 1, sizeof(double));
    if (!p->micro || !p->batch_ref) return ZEN_ERR_INTERNAL;
    for (int j = 0; j < o->n_micro; j++)
        if (zen_pair_batch_alloc(&p->micro[j], zen_objective_rows(o), zen_objective_att_rows(o),
                                 !strcmp(o->opts.pair_layout, "shared")))
            return ZEN_ERR_INTERNAL;
    return 0;
}

static void release(zen_objective *o) {
    pairwise *p = o->state;
    for (int j = 0; p->micro && j < o->n_micro; j++) zen_pair_batch_free(&p->micro[j]);
    free(p->micro);
    free(p->batch_ref);
    free(p->table[0]);
    free(p->table[1]);
    free(p);
}

static int add_pair(void *ctx, zen_pair_batch *b, int64_t item) {
    return zen_pair_batch_add_pair(b, ctx, item, 0);
}

/* dpo.precompute_ref: one reference pass over the training and validation pairs, kept beside the data */
static int prepare(zen_objective *o, const zen_objective_env *e, const char *model_path, const zen_dataset *train,
                   const zen_dataset *val, FILE *say) {
    pairwise *p = o->state;
    if (!o->opts.precompute_ref) return 0;
    const zen_dataset *sets[2] = {train, val && val != train ? val : NULL};
    int rc = 0;
    for (int i = 0; i < 2 && !rc; i++) {
        if (!sets[i]) continue;
        p->table_of[i] = sets[i];
        zen_ref_spec spec = {zen_pairs_count(sets[i]), 2, 0, "pairs", add_pair, (void *)sets[i]};
        rc = zen_ref_logps_get(e->m, model_path, e->ref, e->a, sets[i], &p->micro[0], o->B, o->ranks, &spec,
                               &p->table[i], say);
    }
    return rc;
}

static int load(zen_objective *o, int j, const zen_dataset *d, const int64_t *ids, size_t n) {
    pairwise *p = o->state;
    zen_pair_batch *b = &p->micro[j];
    int prompt_loss = p->opts.kind == ZEN_PREF_ORPO && p->opts.nll_prompt;
    zen_pair_batch_clear(b);
    b->source = d;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) rc = zen_pair_batch_add_pair(b, d, ids[i], prompt_loss);
    return rc;
}

static int pre(zen_objective *o, int j, const zen_objective_env *e, double *out) {
    (void)e;
    pairwise *p = o->state;
    const zen_pair_batch *b = &p->micro[j];
    out[PRE_TOKENS] = 0.0;
    for (size_t i = 0; i < b->N; i++) out[PRE_TOKENS] += b->row_kind[i] >= 0;
    out[PRE_PAIRS] = (double)b->groups;
    out[PRE_NLL_TOKENS] = zen_pref_nll_tokens(&p->opts, b);
    return 0;
}

/* the batch's reference log-probabilities from a precomputed table (NULL: computed in the step) */
static const double *batch_ref(pairwise *p, const zen_pair_batch *b) {
    const double *table = b->source == p->table_of[0] ? p->table[0] : b->source == p->table_of[1] ? p->table[1] : NULL;
    if (!table) return NULL;
    for (size_t g = 0; g < b->groups; g++)
        p->batch_ref[2 * g] = table[2 * b->group_id[g]], p->batch_ref[2 * g + 1] = table[2 * b->group_id[g] + 1];
    return p->batch_ref;
}

static int run(zen_objective *o, int j, const zen_objective_env *e, uint64_t dropout_seed, int backward,
               const double *totals, double *sums) {
    pairwise *p = o->state;
    const zen_pair_batch *b = &p->micro[j];
    zen_pref_ctx ctx = {p->opts, e->ref, p->opts.kind == ZEN_PREF_DPO ? batch_ref(p, b) : NULL};
    zen_pref_sums s;
    memset(&s, 0, sizeof s);
    int rc = zen_pref_run(&ctx, b, e->m, e->lo, e->a, dropout_seed, totals[PRE_PAIRS], totals[PRE_NLL_TOKENS], backward,
                          &s);
    memcpy(sums, s.sum, sizeof s.sum);
    sums[SUM_PAIRS] = s.pairs;
    sums[SUM_NLL_TOKENS] = s.nll_tokens;
    return rc;
}

static void values(const zen_objective *o, const double *sums, double *out) {
    const pairwise *p = o->state;
    zen_pref_sums s;
    memcpy(s.sum, sums, sizeof s.sum);
    s.pairs = sums[SUM_PAIRS];
    s.nll_tokens = sums[SUM_NLL_TOKENS];
    const char *names[ZEN_PM_COUNT];
    zen_pref_metrics(&p->opts, &s, names, out);
}

static void describe(const zen_objective *o, const char *reference, char *buf, size_t cap) {
    const char *prompt = strcmp(o->opts.pair_layout, "shared") ? "run for each completion" : "run once per pair";
    if (!strcmp(o->ops->name, "dpo"))
        snprintf(buf, cap, "objective dpo (%s, beta %g); reference: %s%s; the prompt %s", o->opts.dpo_loss, o->opts.beta,
                 reference,
                 o->opts.precompute_ref ? ", precomputed before step 1" : ", run in each step", prompt);
    else
        snprintf(buf, cap, "objective orpo (beta %g; NLL over %s); the prompt %s", o->opts.beta,
                 o->opts.orpo_nll_prompt ? "prompt + chosen" : "the chosen completion", prompt);
}

static const char *const dpo_keys[] = {"beta", "dpo.loss", "label_smoothing", "dpo.precompute_ref", "pair_layout",
                                       NULL};
static const char *const orpo_keys[] = {"beta", "orpo.nll_prompt", "pair_layout", NULL};
/* zen_pref_metrics' order (preference.h) */
static const char *const metric_names[] = {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                                           "rewards/margins", "logps/chosen", "logps/rejected", "nll_loss",
                                           "log_odds_ratio", "log_odds_chosen"};
static const zen_shown_metric shown[] = {{"rewards/accuracies", "acc", "%.3f"}, {"rewards/margins", "margin", "%.4f"}};

const zen_objective_ops zen_objective_dpo = {
    .name = "dpo",
    .summary = "direct preference optimisation on pairs (TRL's sigmoid, ipo, robust, hinge losses)",
    .records = ZEN_RECORDS_PREFERENCE,
    .item = "pairs",
    .keys = dpo_keys,
    .rows_per_item = 2,
    .shared_layout = 1,
    .n_pre = PRE_COUNT,
    .n_sums = SUM_COUNT,
    .n_metrics = 7,
    .n_train = 7,
    .metrics = metric_names,
    .shown = shown,
    .n_shown = 2,
    .check = check,
    .uses_reference = uses_reference,
    .open = open_pairs,
    .alloc = alloc,
    .free = release,
    .prepare = prepare,
    .load = load,
    .pre = pre,
    .run = run,
    .values = values,
    .describe = describe,
};

const zen_objective_ops zen_objective_orpo = {
    .name = "orpo",
    .summary = "odds-ratio preference optimisation on pairs (TRL's ORPO: the chosen NLL and the log-odds term)",
    .records = ZEN_RECORDS_PREFERENCE,
    .item = "pairs",
    .keys = orpo_keys,
    .rows_per_item = 2,
    .shared_layout = 1,
    .n_pre = PRE_COUNT,
    .n_sums = SUM_COUNT,
    .n_metrics = ZEN_PM_COUNT,
    .n_train = ZEN_PM_COUNT,
    .metrics = metric_names,
    .shown = shown,
    .n_shown = 2,
    .check = check,
    .uses_reference = no_reference,
    .open = open_pairs,
    .alloc = alloc,
    .free = release,
    .load = load,
    .pre = pre,
    .run = run,
    .values = values,
    .describe = describe,
};
