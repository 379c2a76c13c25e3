/* objectives/objective.c: the table of objectives, their options' defaults
 * and the checks and set-up every objective shares (see objective.h). */
#include <string.h>

#include "../util/error.h"
#include "objective.h"

extern const zen_objective_ops zen_objective_sft, zen_objective_dpo, zen_objective_orpo, zen_objective_kto;

/* every objective, in the order they are listed */
static const zen_objective_ops *const table[] = {&zen_objective_sft, &zen_objective_dpo, &zen_objective_orpo,
                                                 &zen_objective_kto};
#define N_OBJECTIVES ((int)(sizeof table / sizeof table[0]))

void zen_objective_opts_defaults(zen_objective_opts *o) {
    memset(o, 0, sizeof *o);
    o->beta = 0.1;
    strcpy(o->dpo_loss, "sigmoid");
    o->orpo_nll_prompt = 1;
    strcpy(o->pair_layout, "shared");
    o->kto_desirable_weight = o->kto_undesirable_weight = 1.0;
    strcpy(o->kto_loss_type, "kto");
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
    return 1;
}
static const char *const all_keys[] = {"beta", "dpo.loss", "label_smoothing", "orpo.nll_prompt",
                                       "dpo.precompute_ref", "pair_layout", "kto.desirable_weight",
                                       "kto.undesirable_weight", "kto.loss_type", "kto.precompute_ref", NULL};

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
    o->n_micro = n_micro;
    o->doc_mask = doc_mask;
    return ops->alloc(o);
}

void zen_objective_free(zen_objective *o) {
    if (o->ops && o->state) o->ops->free(o);
    memset(o, 0, sizeof *o);
}

size_t zen_objective_rows(const zen_objective *o) { return (size_t)o->ops->rows_per_item * o->B * o->T; }

int zen_objective_make_acts(const zen_objective *o, const zen_model *m, const zen_lora *lo, int recompute,
                            zen_acts *a) {
    size_t B = (size_t)o->ops->rows_per_item * o->B;
    return o->ops->shared_layout ? zen_acts_create_shared(a, m, lo, B, o->T, recompute)
                                 : zen_acts_create(a, m, lo, B, o->T, recompute);
}

size_t zen_objective_scratch_bytes(const zen_objective *o, const zen_config *cfg) {
    return o->ops->shared_layout ? zen_shared_scratch_bytes(cfg, zen_objective_rows(o)) : 0;
}

int zen_objective_metric(const zen_objective *o, const char *name) {
    for (int i = 0; i < o->ops->n_metrics; i++)
        if (!strcmp(o->ops->metrics[i], name)) return i;
    return -1;
}
