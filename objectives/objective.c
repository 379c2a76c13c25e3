/* objectives/objective.c: the table of objectives, their options' defaults
 * and the checks and set-up every objective shares (see objective.h). */
#include <math.h>
#include <string.h>

#include "../util/error.h"
#include "objective.h"

extern const zen_objective_ops zen_objective_sft, zen_objective_dpo, zen_objective_orpo, zen_objective_kto,
    zen_objective_grpo;

/* every objective, in the order they are listed */
static const zen_objective_ops *const table[] = {&zen_objective_sft, &zen_objective_dpo, &zen_objective_orpo,
                                                 &zen_objective_kto, &zen_objective_grpo};
#define N_OBJECTIVES ((int)(sizeof table / sizeof table[0]))

void zen_objective_opts_defaults(zen_objective_opts *o) {
    memset(o, 0, sizeof *o);
    o->beta = 0.1;
    strcpy(o->dpo_loss, "sigmoid");
    o->orpo_nll_prompt = 1;
    strcpy(o->pair_layout, "shared");
    o->kto_desirable_weight = o->kto_undesirable_weight = 1.0;
    strcpy(o->kto_loss_type, "kto");
    o->grpo_num_generations = 8;
    o->grpo_max_completion_length = 512;
    o->grpo_temperature = o->grpo_top_p = 1.0;
    strcpy(o->grpo_scale_rewards, "group");
    o->grpo_epsilon = 0.2;
    strcpy(o->grpo_importance_sampling_level, "token");
    o->grpo_num_iterations = 1;
    strcpy(o->grpo_loss_type, "dapo");
}

/* the option keys, and whether each is at its default */
static int at_default(const zen_objective_opts *o, const char *key) {
    zen_objective_opts d;
    zen_objective_opts_defaults(&d);
    if (!strcmp(key, "beta")) return o->beta == d.beta;
    if (!strcmp(key, "dpo.loss")) return !strcmp(o->dpo_loss, d.dpo_loss);
    if (!strcmp(key, "label_smoothing")) return o->label_smoothing == d.label_smoothing;
    if (!strcmp(key, "orpo.nll_prompt")) return o->orpo_nll_prompt == d.orpo_nll_prompt;
    if (!strcmp(key, "dpo.precompute_ref")) return o->precompute_ref == d.precompute_ref;
    if (!strcmp(key, "pair_layout")) return !strcmp(o->pair_layout, d.pair_layout);
    if (!strcmp(key, "kto.desirable_weight")) return o->kto_desirable_weight == d.kto_desirable_weight;
    if (!strcmp(key, "kto.undesirable_weight")) return o->kto_undesirable_weight == d.kto_undesirable_weight;
    if (!strcmp(key, "kto.loss_type")) return !strcmp(o->kto_loss_type, d.kto_loss_type);
    if (!strcmp(key, "kto.precompute_ref")) return o->kto_precompute_ref == d.kto_precompute_ref;
#define SAME(k, f) \
    if (!strcmp(key, k)) return o->f == d.f;
#define SAME_STR(k, f) \
    if (!strcmp(key, k)) return !strcmp(o->f, d.f);
    SAME("grpo.num_generations", grpo_num_generations)
    SAME("grpo.max_completion_length", grpo_max_completion_length)
    SAME("grpo.temperature", grpo_temperature)
    SAME("grpo.top_p", grpo_top_p)
    SAME("grpo.top_k", grpo_top_k)
    SAME("grpo.min_p", grpo_min_p)
    SAME_STR("grpo.scale_rewards", grpo_scale_rewards)
    SAME("grpo.epsilon", grpo_epsilon)
    SAME("grpo.epsilon_high", grpo_epsilon_high)
    SAME("grpo.delta", grpo_delta)
    SAME_STR("grpo.importance_sampling_level", grpo_importance_sampling_level)
    SAME("grpo.num_iterations", grpo_num_iterations)
    SAME("grpo.beta", grpo_beta)
    SAME_STR("grpo.loss_type", grpo_loss_type)
    SAME("grpo.mask_truncated_completions", grpo_mask_truncated_completions)
    SAME_STR("rewards", rewards)
    SAME_STR("reward.weights", reward_weights)
#undef SAME
#undef SAME_STR
    return 1;
}
static const char *const all_keys[] = {"beta", "dpo.loss", "label_smoothing", "orpo.nll_prompt",
                                       "dpo.precompute_ref", "pair_layout", "kto.desirable_weight",
                                       "kto.undesirable_weight", "kto.loss_type", "kto.precompute_ref",
                                       "grpo.num_generations", "grpo.max_completion_length", "grpo.temperature",
                                       "grpo.top_p", "grpo.top_k", "grpo.min_p", "grpo.scale_rewards",
                                       "grpo.epsilon", "grpo.epsilon_high", "grpo.delta",
                                       "grpo.importance_sampling_level", "grpo.num_iterations", "grpo.beta",
                                       "grpo.loss_type", "grpo.mask_truncated_completions", "rewards",
                                       "reward.weights", NULL};

int zen_objective_is_option(const char *key) {
    for (const char *const *k = all_keys; *k; k++)
        if (!strcmp(*k, key)) return 1;
    return 0;
}

const char *zen_objective_option_keys(void) {
    static char buf[512];
    buf[0] = '\0';
    for (const char *const *k = all_keys; *k; k++) {
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof buf - len, "%s%s", k == all_keys ? "" : ", ", *k);
    }
    return buf;
}

int zen_objective_reads(const zen_objective_ops *ops, const char *key) {
    for (const char *const *k = ops->keys; k && *k; k++)
        if (!strcmp(*k, key)) return 1;
    return 0;
}

const zen_objective_ops *zen_objective_find(const char *name) {
    for (int i = 0; i < N_OBJECTIVES; i++)
        if (!strcmp(table[i]->name, name)) return table[i];
    return NULL;
}

/* "a, b or c" of the objectives that pass keep (all when keep is NULL) */
static const char *list(char *buf, size_t cap, int (*keep)(const zen_objective_ops *, const void *), const void *arg) {
    const char *names[16];
    int n = 0;
    for (int i = 0; i < N_OBJECTIVES && n < 16; i++)
        if (!keep || keep(table[i], arg)) names[n++] = table[i]->name;
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        size_t len = strlen(buf);
        snprintf(buf + len, cap - len, "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ", names[i]);
    }
    return buf;
}

const char *zen_objective_choices(void) {
    static char buf[256];
    buf[0] = '\0';
    for (int i = 0; i < N_OBJECTIVES; i++) {
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof buf - len, "%s%s", i ? "|" : "", table[i]->name);
    }
    return buf;
}

const char *zen_objective_names(void) {
    static char buf[256];
    return list(buf, sizeof buf, NULL, NULL);
}

static int reads_records(const zen_objective_ops *ops, const void *arg) {
    return ops->records == *(const zen_records *)arg;
}

const char *zen_objective_names_for(zen_records records) {
    static char buf[256];
    return list(buf, sizeof buf, reads_records, &records);
}

static int reads_key(const zen_objective_ops *ops, const void *arg) { return zen_objective_reads(ops, arg); }

const char *zen_objective_readers(const char *key) {
    static char buf[256];
    return list(buf, sizeof buf, reads_key, key);
}

int zen_objective_check(const zen_objective_ops *ops, const zen_objective_opts *o, const char **key) {
    *key = NULL;
    for (const char *const *k = all_keys; *k; k++)
        if (!zen_objective_reads(ops, *k) && !at_default(o, *k)) {
            *key = *k;
            return zen_fail(ZEN_ERR_INPUT, "it needs objective %s (this one is %s)", zen_objective_readers(*k),
                            ops->name);
        }
    return ops->check ? ops->check(o, key) : 0;
}

int zen_objective_init(zen_objective *o, const zen_objective_ops *ops, const zen_objective_opts *opts,
                       const zen_ranks *ranks, size_t B, size_t T, int n_micro, int doc_mask) {
    memset(o, 0, sizeof *o);
    o->ops = ops;
    o->opts = *opts;
    o->ranks = ranks;
    o->B = B;
    o->T = T;
    o->n_micro = n_micro + 1;
    o->eval_slot = n_micro;
    o->doc_mask = doc_mask;
    o->n_metrics = ops->n_metrics, o->n_train = ops->n_train, o->metrics = ops->metrics;
    return ops->alloc(o);
}

void zen_objective_add_sums(const zen_objective *o, double *total, const double *sums) {
    int n = o->ops->n_sums, first_max = n - o->ops->n_sums_max;
    for (int k = 0; k < n; k++)
        total[k] = k < first_max ? total[k] + sums[k] : sums[k] > total[k] ? sums[k] : total[k];
}

void zen_objective_zero_sums(const zen_objective *o, double *total) {
    int n = o->ops->n_sums, first_max = n - o->ops->n_sums_max;
    for (int k = 0; k < n; k++) total[k] = k < first_max ? 0.0 : -INFINITY;
}

void zen_objective_free(zen_objective *o) {
    if (o->ops && o->state) o->ops->free(o);
    memset(o, 0, sizeof *o);
}

int zen_objective_seqs_per_item(const zen_objective_ops *ops, const zen_objective_opts *opts, size_t T, int *att) {
    int rows = ops->rows_per_item_of ? ops->rows_per_item_of(opts, T, att) : (*att = ops->rows_per_item);
    if (*att < rows) *att = rows;
    return rows;
}

static size_t rows_per_item(const zen_objective *o) {
    int att;
    return (size_t)zen_objective_seqs_per_item(o->ops, &o->opts, o->T, &att);
}

size_t zen_objective_rows(const zen_objective *o) { return rows_per_item(o) * o->B * o->T; }

size_t zen_objective_att_rows(const zen_objective *o) {
    int att;
    zen_objective_seqs_per_item(o->ops, &o->opts, o->T, &att);
    return (size_t)att * o->B * o->T;
}

int zen_objective_make_acts(const zen_objective *o, const zen_model *m, const zen_lora *lo, int recompute,
                            zen_acts *a) {
    size_t B = rows_per_item(o) * o->B;
    return o->ops->shared_layout ? zen_acts_create_shared(a, m, lo, B, o->T, zen_objective_att_rows(o), recompute)
                                 : zen_acts_create(a, m, lo, B, o->T, recompute);
}

size_t zen_objective_scratch_bytes(const zen_objective *o, const zen_config *cfg) {
    return o->ops->shared_layout ? zen_shared_scratch_bytes(cfg, zen_objective_rows(o), zen_objective_att_rows(o)) : 0;
}

void zen_objective_generation_bytes(const zen_objective_ops *ops, const zen_objective_opts *opts,
                                    const zen_config *cfg, zen_dtype compute, size_t items, size_t T, size_t *cache,
                                    size_t *logits) {
    *cache = *logits = 0;
    if (ops->generation_bytes) ops->generation_bytes(opts, cfg, compute, items, T, cache, logits);
}

int zen_objective_metric(const zen_objective *o, const char *name) {
    for (int i = 0; i < o->n_metrics; i++)
        if (!strcmp(o->metrics[i], name)) return i;
    return -1;
}
