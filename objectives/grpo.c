/* objectives/grpo.c: GRPO as TRL v1.9 defines it (trl/trainer/grpo_trainer.py,
 * grpo_config.py; ../shared/notes/grpo-and-kto.md section 1), a row of the
 * objective table.
 *
 * An item is a prompt with its G completions (a group); batch_size counts
 * prompts (TRL's per_device_train_batch_size / num_generations). The
 * completions come from a completions file (zen grad --completions: token
 * ids, rewards, optionally the old per-token log-probabilities), or are
 * drawn from the policy (objectives/grpo_rollout.c, training).
 *
 * Each micro-batch runs its groups in the shared-prompt layout
 * (objectives/pair_batch.h): a prompt's rows once, its G completions as G
 * segments that attend to it. The log-probabilities are those of the logits
 * divided by grpo.temperature (TRL's logits.div_(temperature)), with their
 * entropy. With r_i a completion's reward (NaN: none), per group
 *   A_i = (r_i - mean_g) / (std_g + 1e-4)   scale_rewards group (std with n - 1)
 *         (r_i - mean_g) / (std_batch + 1e-4) batch (the step's rewards)
 *         r_i - mean_g                         none
 * (A = 0 where r is NaN), rho = exp(l - l_old) per token, or per sequence
 * exp(mean over the completion of l - l_old) (GSPO), and per token
 *   L = -min(rho~ A, clip(rho, 1 - eps, 1 + eps_high) A) + beta K,
 *   K = exp(l_ref - l) - (l_ref - l) - 1 (k3),
 * summed as grpo.loss_type says over the step (objective.h's totals):
 *   dapo:    sum m L / (completion tokens of the step, all ranks)
 *   grpo:    sum_i [sum_t m L / max(1, sum_t m)] / (completions of the step)
 *   bnpo:    sum m L / max(1, the micro-batch's tokens) / (micro-batches of the step)
 *   dr_grpo: sum m L / (completions of the step x max_completion_length)
 * which is TRL's step over its per-device micro-batches and ranks. l_old
 * is l itself (rho = 1, only the gradient) unless the file gives it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "../data/pairs.h"
#include "../data/tokenizer.h"
#include "../model/generate_batch.h"
#include "../util/error.h"
#include "../util/json.h"
#include "grpo.h"
#include "objective.h"
#include "pair_batch.h"
#include "rewards.h"

#define MAX_NAMED 8 /* reward functions with their own metrics */

/* where a step's time goes, per micro-batch slot: logged as timing/NAME_s (scripts/bench_grpo) */
enum { TIME_GENERATION, TIME_REWARDS, TIME_OLD_LOGPS, TIME_REFERENCE, TIME_TRAIN, N_TIMES };

enum { PRE_TOKENS, PRE_SEQS, PRE_MICROS, PRE_R_SUM, PRE_R_SQ, PRE_R_N, PRE_COUNT };
enum {
    SUM_LOSS, SUM_TOKENS, SUM_SEQS, SUM_R, SUM_R_N, SUM_RSTD, SUM_GROUPS, SUM_ZERO_STD, SUM_KL, SUM_ENT, SUM_LOW,
    SUM_HIGH, SUM_REGION, SUM_LEN, SUM_TRUNC, SUM_TIME, /* N_TIMES seconds */
    SUM_NAMED = SUM_TIME + N_TIMES, /* MAX_NAMED x (sum, sum of squares, count) */
    SUM_MAX_LEN = SUM_NAMED + 3 * MAX_NAMED, SUM_NEG_MIN_LEN, SUM_COUNT
};
#define N_MAX_SUMS 2 /* SUM_MAX_LEN, SUM_NEG_MIN_LEN: maxima */

/* one completion */
typedef struct {
    int32_t *ids;
    size_t n;
    float *old;             /* [n] the old log-probabilities, or NULL (rho = 1) */
    double reward;          /* NaN: none */
    double named[MAX_NAMED];
    int truncated;          /* ended by the length limit (mask_truncated_completions masks it) */
} completion;

/* a prompt and its G completions */
typedef struct {
    int32_t *prompt;
    size_t P;
    completion *c;          /* [G] */
} group;

typedef struct {
    int G, eval_slot;
    group *file;            /* the completions file's groups (n_file), or NULL: completions drawn from the policy */
    size_t n_file;
    zen_rewards *rewards;   /* drawing: the reward functions */
    const zen_dataset *prompts; /* drawing: the prompts file of the loaded micro-batches */
    int64_t *micro_ids;     /* [n_micro * B] drawing: each loaded micro-batch's prompt records */
    group *drawn;           /* [n_micro * B] drawing: their groups, with the completions drawn */
    int *drawn_ok;          /* [n_micro] the micro-batch's completions are drawn */
    long *drawn_batch;      /* [n_micro] the generation batch (step / num_iterations) they were drawn for */
    float **old;            /* [n_micro] [rows] num_iterations > 1: the rows' losses under the policy that drew
                             * them (the old log-probabilities, negated) */
    char *names[MAX_NAMED]; /* the reward functions' names (rewards/NAME/mean, /std) */
    int n_named;
    char **metric_names;    /* [n_metrics] */
    int n_metrics;
    const group **micro_groups; /* [n_micro * B] the groups of each loaded micro-batch */
    size_t *micro_n;        /* [n_micro] */
    zen_pair_batch *micro;  /* [n_micro] */
    float **ref;            /* [n_micro] [rows] the reference's per-row log-probabilities (beta > 0) */
    float *row_loss, *row_w, *entropy; /* [rows] */
    int32_t *row_t;         /* [rows] a continuation row's token index in its completion */
    double (*seconds)[N_TIMES]; /* [n_micro] this step's seconds in each part, per slot */
} grpo;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------- the per-token term ---------------- */

double zen_grpo_clip_term(double rho, double adv, double eps_low, double eps_high, double delta, double *dl_drho,
                          int *low, int *high) {
    double rt = delta > 0 && rho > delta ? delta : rho;          /* rho~ */
    double drt = delta > 0 && rho > delta ? 0.0 : 1.0;           /* drho~/drho */
    double lo = 1.0 - eps_low, hi = 1.0 + eps_high;
    double rc = rho < lo ? lo : rho > hi ? hi : rho, drc = rho < lo || rho > hi ? 0.0 : 1.0;
    double u = rt * adv, c = rc * adv;
    /* -min(u, c): torch.minimum gives the smaller branch the gradient, each half of it on a tie */
    *dl_drho = u < c ? -drt * adv : c < u ? -drc * adv : -0.5 * (drt + drc) * adv;
    *low = rho < lo && adv < 0;
    *high = rho > hi && adv > 0;
    return -(u < c ? u : c);
}

/* ---------------- the completions file ---------------- */

static void free_groups(group *g, size_t n, int G) {
    for (size_t i = 0; g && i < n; i++) {
        free(g[i].prompt);
        for (int k = 0; g[i].c && k < G; k++) {
            free(g[i].c[k].ids);
            free(g[i].c[k].old);
        }
        free(g[i].c);
    }
    free(g);
}

/* an array of ids (non-empty), or of numbers for old */
static int read_ints(const cJSON *a, const char *where, const char *what, int32_t **out, size_t *n) {
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) < 1)
        return zen_fail(ZEN_ERR_INPUT, "%s: '%s' must be a non-empty list of token ids", where, what);
    *n = (size_t)cJSON_GetArraySize(a);
    if (!(*out = zen_malloc(*n * sizeof(int32_t)))) return ZEN_ERR_INTERNAL;
    size_t i = 0;
    for (const cJSON *v = a->child; v; v = v->next, i++) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
            v->valuedouble > INT32_MAX)
            return zen_fail(ZEN_ERR_INPUT, "%s: '%s'[%zu] is not a token id", where, what, i);
        (*out)[i] = (int32_t)v->valuedouble;
    }
    return 0;
}

static double reward_of(const cJSON *v, const char *where, const char *what, int *rc) {
    if (!v || cJSON_IsNull(v)) return NAN;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        *rc = zen_fail(ZEN_ERR_INPUT, "%s: '%s' must be a number or null", where, what);
        return NAN;
    }
    return v->valuedouble;
}

static int read_completion(grpo *p, const cJSON *o, const char *where, completion *c) {
    char what[96];
    if (!cJSON_IsObject(o)) return zen_fail(ZEN_ERR_INPUT, "%s: a completion must be a JSON object", where);
    int rc = read_ints(cJSON_GetObjectItemCaseSensitive(o, "ids"), where, "ids", &c->ids, &c->n);
    if (rc) return rc;
    c->reward = reward_of(cJSON_GetObjectItemCaseSensitive(o, "reward"), where, "reward", &rc);
    if (!rc && !cJSON_GetObjectItemCaseSensitive(o, "reward"))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: a completion needs 'reward' (a number, or null for none)", where);
    for (int k = 0; k < MAX_NAMED; k++) c->named[k] = NAN;
    const cJSON *named = cJSON_GetObjectItemCaseSensitive(o, "rewards");
    if (!rc && named && !cJSON_IsObject(named))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: 'rewards' must be an object of named rewards", where);
    for (const cJSON *v = named ? named->child : NULL; v && !rc; v = v->next) {
        int k = 0;
        while (k < p->n_named && strcmp(p->names[k], v->string)) k++;
        if (k == p->n_named) {
            if (k == MAX_NAMED)
                return zen_fail(ZEN_ERR_INPUT, "%s: more than %d named rewards", where, MAX_NAMED);
            if (!(p->names[p->n_named++] = strdup(v->string))) return ZEN_ERR_INTERNAL;
        }
        snprintf(what, sizeof what, "rewards.%s", v->string);
        c->named[k] = reward_of(v, where, what, &rc);
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "truncated");
    if (!rc && t && !cJSON_IsBool(t)) rc = zen_fail(ZEN_ERR_INPUT, "%s: 'truncated' must be true or false", where);
    c->truncated = t && cJSON_IsTrue(t);
    const cJSON *old = cJSON_GetObjectItemCaseSensitive(o, "old_logps");
    if (!rc && old) {
        if (!cJSON_IsArray(old) || (size_t)cJSON_GetArraySize(old) != c->n)
            return zen_fail(ZEN_ERR_INPUT, "%s: 'old_logps' must be a list of %zu numbers (one per id)", where, c->n);
        if (!(c->old = zen_malloc(c->n * sizeof(float)))) return ZEN_ERR_INTERNAL;
        size_t i = 0;
        for (const cJSON *v = old->child; v; v = v->next, i++) {
            if (!cJSON_IsNumber(v) || !(v->valuedouble <= 0))
                return zen_fail(ZEN_ERR_INPUT, "%s: 'old_logps'[%zu] must be a log-probability (<= 0)", where, i);
            c->old[i] = (float)v->valuedouble;
        }
    }
    return rc;
}

/* zen grad's completions file: a line per group, {"prompt_ids", "completions": [G of {"ids", "reward",
 * "rewards"?, "old_logps"?, "truncated"?}]} */
static int read_file(zen_objective *o, const char *path, int vocab) {
    grpo *p = o->state;
    FILE *f = fopen(path, "r");
    if (!f) return zen_fail(ZEN_ERR_INPUT, "%s: cannot open", path);
    char *line = NULL, where[1200];
    size_t cap = 0, room = 0;
    ssize_t len;
    long lineno = 0;
    int rc = 0;
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (!len) continue;
        snprintf(where, sizeof where, "%s:%ld", path, lineno);
        cJSON *rec = NULL;
        if ((rc = zen_json_parse(line, (size_t)len, where, &rec))) break;
        if (p->n_file == room) {
            size_t more = room ? 2 * room : 16;
            group *g = realloc(p->file, more * sizeof(group));
            if (!g) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
            else memset(g + room, 0, (more - room) * sizeof(group)), p->file = g, room = more;
        }
        group *g = rc ? NULL : &p->file[p->n_file++];
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(rec, "completions");
        if (!rc) rc = read_ints(cJSON_GetObjectItemCaseSensitive(rec, "prompt_ids"), where, "prompt_ids", &g->prompt,
                                &g->P);
        if (!rc && (!cJSON_IsArray(list) || cJSON_GetArraySize(list) != p->G))
            rc = zen_fail(ZEN_ERR_INPUT, "%s: 'completions' must be a list of %d (grpo.num_generations; set it to the "
                          "file's)", where, p->G);
        if (!rc && !(g->c = zen_calloc((size_t)p->G, sizeof(completion)))) rc = ZEN_ERR_INTERNAL;
        int k = 0;
        for (const cJSON *c = list ? list->child : NULL; c && !rc; c = c->next, k++)
            if (!(rc = read_completion(p, c, where, &g->c[k])) && g->P + g->c[k].n > o->T)
                rc = zen_fail(ZEN_ERR_INPUT, "%s: a prompt of %zu and a completion of %zu tokens exceed seq_len %zu",
                              where, g->P, g->c[k].n, o->T);
            else if (!rc && g->c[k].n > (size_t)o->opts.grpo_max_completion_length)
                rc = zen_fail(ZEN_ERR_INPUT, "%s: a completion of %zu tokens is longer than grpo.max_completion_length "
                              "%ld (what generation would have cut it to)", where, g->c[k].n,
                              (long)o->opts.grpo_max_completion_length);
        for (int j = 0; !rc && j < p->G; j++)
            for (size_t i = 0; i < g->c[j].n; i++)
                if (g->c[j].ids[i] >= vocab)
                    rc = zen_fail(ZEN_ERR_INPUT, "%s: token id %d is outside the model's vocabulary of %d", where,
                                  g->c[j].ids[i], vocab);
        for (size_t i = 0; !rc && i < g->P; i++)
            if (g->prompt[i] >= vocab)
                rc = zen_fail(ZEN_ERR_INPUT, "%s: token id %d is outside the model's vocabulary of %d", where,
                              g->prompt[i], vocab);
        cJSON_Delete(rec);
    }
    if (!rc && !p->n_file) rc = zen_fail(ZEN_ERR_INPUT, "%s: no groups", path);
    free(line);
    fclose(f);
    return rc;
}

/* ---------------- the objective ---------------- */

static int check(const zen_objective_opts *o, const char **key) {
    if (strcmp(o->grpo_scale_rewards, "group") && strcmp(o->grpo_scale_rewards, "batch") &&
        strcmp(o->grpo_scale_rewards, "none"))
        return *key = "grpo.scale_rewards", zen_fail(ZEN_ERR_INPUT, "'%s' is not group, batch or none",
                                                     o->grpo_scale_rewards);
    if (strcmp(o->grpo_importance_sampling_level, "token") && strcmp(o->grpo_importance_sampling_level, "sequence"))
        return *key = "grpo.importance_sampling_level",
               zen_fail(ZEN_ERR_INPUT, "'%s' is not token or sequence", o->grpo_importance_sampling_level);
    if (strcmp(o->grpo_loss_type, "dapo") && strcmp(o->grpo_loss_type, "grpo") && strcmp(o->grpo_loss_type, "bnpo") &&
        strcmp(o->grpo_loss_type, "dr_grpo"))
        return *key = "grpo.loss_type", zen_fail(ZEN_ERR_INPUT, "'%s' is not dapo, grpo, bnpo or dr_grpo",
                                                 o->grpo_loss_type);
    if (strcmp(o->pair_layout, "shared") && strcmp(o->pair_layout, "apart"))
        return *key = "pair_layout", zen_fail(ZEN_ERR_INPUT, "'%s' is not shared or apart", o->pair_layout);
    return 0;
}

static int uses_reference(const zen_objective_opts *o) { return o->grpo_beta > 0; }

/* a group in sequences of seq_len T: apart, G sequences; shared, its prompt's rows once (at most T - C tokens,
 * C = max_completion_length, below T) and G completions of at most C: T + (G - 1) C rows; its attention
 * reads the prompt for each completion: G sequences */
static int rows_per_item_of(const zen_objective_opts *o, size_t T, int *att) {
    size_t G = (size_t)o->grpo_num_generations, C = (size_t)o->grpo_max_completion_length;
    *att = (int)G;
    if (strcmp(o->pair_layout, "shared")) return (int)G;
    if (C > T - 1) C = T - 1;
    return (int)((T + (G - 1) * C + T - 1) / T);
}

static int steps_per_batch(const zen_objective_opts *o) { return (int)o->grpo_num_iterations; }

/* the metric names: the fixed ones, then each reward function's mean and std */
static const char *const fixed_metrics[] = {
    "loss", "reward", "reward_std", "frac_reward_zero_std", "kl", "entropy", "clip_ratio/low_mean",
    "clip_ratio/high_mean", "clip_ratio/region_mean", "completions/mean_length", "completions/min_length",
    "completions/max_length", "completions/clipped_ratio", "timing/generation_s", "timing/rewards_s",
    "timing/old_logps_s", "timing/reference_s", "timing/train_s"};
#define N_FIXED ((int)(sizeof fixed_metrics / sizeof fixed_metrics[0]))

static int make_metric_names(zen_objective *o) {
    grpo *p = o->state;
    for (int i = 0; p->metric_names && i < p->n_metrics; i++) free(p->metric_names[i]);
    free(p->metric_names);
    p->n_metrics = N_FIXED + 2 * p->n_named;
    if (!(p->metric_names = zen_calloc((size_t)p->n_metrics, sizeof(char *)))) return ZEN_ERR_INTERNAL;
    for (int i = 0; i < N_FIXED; i++) p->metric_names[i] = strdup(fixed_metrics[i]);
    for (int k = 0; k < p->n_named; k++) {
        char buf[160];
        snprintf(buf, sizeof buf, "rewards/%s/mean", p->names[k]);
        p->metric_names[N_FIXED + 2 * k] = strdup(buf);
        snprintf(buf, sizeof buf, "rewards/%s/std", p->names[k]);
        p->metric_names[N_FIXED + 2 * k + 1] = strdup(buf);
    }
    for (int i = 0; i < p->n_metrics; i++)
        if (!p->metric_names[i]) return ZEN_ERR_INTERNAL;
    o->n_metrics = o->n_train = p->n_metrics;
    o->metrics = (const char *const *)p->metric_names;
    return 0;
}

/* a prompts file (zen data --format prompts): every prompt leaves room for max_completion_length tokens */
static int open_prompts(zen_objective *o, zen_dataset *d, const char *path, int vocab, int64_t *items) {
    grpo *p = o->state;
    int rc = zen_dataset_open(d, path, vocab);
    if (!rc) rc = zen_records_check(d, ZEN_RECORDS_PROMPTS);
    if (rc) return rc;
    size_t longest = 0, L = (size_t)o->opts.grpo_max_completion_length;
    for (int64_t r = 0; r < d->n_records; r++) {
        size_t n = zen_record_doc_len(d, r, 0);
        longest = n > longest ? n : longest;
    }
    if (longest + L > o->T)
        return zen_fail(ZEN_ERR_INPUT, "%s: prompts up to %zu tokens and grpo.max_completion_length %zu exceed seq_len "
                        "%zu; raise seq_len to %zu", path, longest, L, o->T, longest + L);
    if (!o->opts.rewards[0])
        return zen_fail(ZEN_ERR_INPUT, "objective grpo rewards its completions: config key 'rewards' is not set "
                        "(README, GRPO: answer, regex, think_format, overlong, command)");
    if (!p->rewards && (rc = zen_rewards_create(&p->rewards, o->opts.rewards, o->opts.reward_weights,
                                                 o->opts.grpo_max_completion_length, "config key 'rewards'")))
        return rc;
    if (zen_rewards_count(p->rewards) > MAX_NAMED)
        return zen_fail(ZEN_ERR_INPUT, "config key 'rewards': %d rewards, at most %d", zen_rewards_count(p->rewards),
                        MAX_NAMED);
    for (int k = 0; !p->n_named && k < zen_rewards_count(p->rewards); k++)
        if (!(p->names[k] = strdup(zen_rewards_name(p->rewards, k)))) return ZEN_ERR_INTERNAL;
    p->n_named = zen_rewards_count(p->rewards);
    *items = d->n_records;
    return make_metric_names(o);
}

static int open_groups(zen_objective *o, zen_dataset *d, const char *path, int vocab, int64_t *items) {
    grpo *p = o->state;
    size_t len = strlen(path);
    if (len < 6 || strcmp(path + len - 6, ".jsonl")) return open_prompts(o, d, path, vocab, items);
    int rc = read_file(o, path, vocab);
    if (!rc) rc = make_metric_names(o);
    *items = (int64_t)p->n_file;
    return rc;
}

static int alloc(zen_objective *o) {
    grpo *p = zen_calloc(1, sizeof *p);
    if (!p) return ZEN_ERR_INTERNAL;
    o->state = p;
    p->G = (int)o->opts.grpo_num_generations;
    p->eval_slot = o->eval_slot;
    size_t rows = zen_objective_rows(o);
    p->micro = zen_calloc((size_t)o->n_micro, sizeof(zen_pair_batch));
    p->micro_groups = zen_calloc((size_t)o->n_micro * o->B + 1, sizeof(group *));
    p->micro_n = zen_calloc((size_t)o->n_micro, sizeof(size_t));
    p->ref = zen_calloc((size_t)o->n_micro, sizeof(float *));
    p->row_loss = zen_malloc(rows * sizeof(float));
    p->row_w = zen_malloc(rows * sizeof(float));
    p->entropy = zen_malloc(rows * sizeof(float));
    p->row_t = zen_malloc(rows * sizeof(int32_t));
    p->micro_ids = zen_calloc((size_t)o->n_micro * o->B + 1, sizeof(int64_t));
    p->drawn = zen_calloc((size_t)o->n_micro * o->B + 1, sizeof(group));
    p->drawn_ok = zen_calloc((size_t)o->n_micro + 1, sizeof(int));
    p->drawn_batch = zen_calloc((size_t)o->n_micro + 1, sizeof(long));
    p->old = zen_calloc((size_t)o->n_micro + 1, sizeof(float *));
    p->seconds = zen_calloc((size_t)o->n_micro + 1, sizeof *p->seconds);
    if (!p->micro || !p->micro_groups || !p->micro_n || !p->ref || !p->row_loss || !p->row_w || !p->entropy ||
        !p->row_t || !p->micro_ids || !p->drawn || !p->drawn_ok || !p->drawn_batch || !p->old || !p->seconds)
        return ZEN_ERR_INTERNAL;
    for (int j = 0; j < o->n_micro; j++) {
        if (zen_pair_batch_alloc(&p->micro[j], rows, zen_objective_att_rows(o), !strcmp(o->opts.pair_layout, "shared")))
            return ZEN_ERR_INTERNAL;
        if (o->opts.grpo_beta > 0 && !(p->ref[j] = zen_malloc(rows * sizeof(float)))) return ZEN_ERR_INTERNAL;
        if (o->opts.grpo_num_iterations > 1 && !(p->old[j] = zen_malloc(rows * sizeof(float)))) return ZEN_ERR_INTERNAL;
    }
    return make_metric_names(o);
}

static void release(zen_objective *o) {
    grpo *p = o->state;
    for (int j = 0; p->micro && j < o->n_micro; j++) {
        zen_pair_batch_free(&p->micro[j]);
        if (p->ref) free(p->ref[j]);
        if (p->old) free(p->old[j]);
    }
    free(p->micro);
    free(p->ref);
    free(p->micro_groups);
    free(p->micro_n);
    free(p->row_loss);
    free(p->row_w);
    free(p->entropy);
    free(p->row_t);
    free_groups(p->file, p->n_file, p->G);
    for (size_t i = 0; p->drawn && i < (size_t)o->n_micro * o->B; i++) {
        free(p->drawn[i].prompt);
        for (int k = 0; p->drawn[i].c && k < p->G; k++) free(p->drawn[i].c[k].ids);
        free(p->drawn[i].c);
    }
    free(p->drawn);
    free(p->drawn_ok);
    free(p->drawn_batch);
    free(p->seconds);
    free(p->old);
    free(p->micro_ids);
    zen_rewards_free(p->rewards);
    for (int k = 0; k < p->n_named; k++) free(p->names[k]);
    for (int i = 0; p->metric_names && i < p->n_metrics; i++) free(p->metric_names[i]);
    free(p->metric_names);
    free(p);
}

static int load(zen_objective *o, int j, const zen_dataset *d, const int64_t *ids, size_t n) {
    grpo *p = o->state;
    if (!p->file) { /* drawing: the prompts now, the completions in pre (they need the model) */
        int64_t *held = p->micro_ids + (size_t)j * o->B;
        /* the same prompts again (the steps of one generation batch) keep their completions */
        if (j == o->eval_slot || d != p->prompts || n != p->micro_n[j] || memcmp(held, ids, n * sizeof(int64_t)))
            p->drawn_ok[j] = 0;
        p->prompts = d;
        memcpy(held, ids, n * sizeof(int64_t));
        p->micro_n[j] = n;
        return 0;
    }
    zen_pair_batch *b = &p->micro[j];
    zen_pair_batch_clear(b);
    const group **gs = p->micro_groups + (size_t)j * o->B;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const group *g = &p->file[ids[i]];
        const int32_t *cont[1024];
        size_t len[1024];
        for (int k = 0; k < p->G; k++) cont[k] = g->c[k].ids, len[k] = g->c[k].n;
        gs[i] = g;
        if (!(rc = zen_pair_batch_add(b, g->prompt, g->P, cont, len, p->G, 0))) b->group_id[b->groups - 1] = ids[i];
    }
    p->micro_n[j] = n;
    return rc;
}

/* the run's seed and the step mixed: the streams a step's samples draw from (zen_sample_stream then keys
 * them by the prompt's record and the sample), so they never depend on ranks, rows or order */
static uint64_t step_seed(uint64_t seed, long step) {
    zen_rng r;
    zen_rng_seed(&r, seed ^ 0x4752504f00000000ull);
    uint64_t a = zen_rng_next(&r);
    zen_rng_seed(&r, a ^ (uint64_t)step);
    return zen_rng_next(&r);
}

typedef struct {
    group *gs;
    size_t G;
} draw_sink;

/* zen_generate_batch hands back request r's samples: their ids, a length-cut one marked truncated */
static int took(void *ctx, size_t r, const zen_gen_sample *s, int m) {
    draw_sink *out = ctx;
    for (int k = 0; k < m; k++) {
        completion *c = &out->gs[r].c[k];
        if (!(c->ids = zen_malloc(s[k].n * sizeof(int32_t)))) return ZEN_ERR_INTERNAL;
        memcpy(c->ids, s[k].ids, s[k].n * sizeof(int32_t));
        c->n = s[k].n;
        c->truncated = s[k].finish == ZEN_FINISH_LENGTH;
    }
    return 0;
}

/* micro-batch j's completions, drawn from the policy (the adapter as it is), and rewarded */
static int draw(zen_objective *o, int j, const zen_objective_env *e) {
    grpo *p = o->state;
    const zen_objective_opts *op = &o->opts;
    const zen_dataset *d = p->prompts;
    const zen_tokenizer *tok = e->tokenizer;
    size_t n = p->micro_n[j], G = (size_t)p->G;
    group *gs = p->drawn + (size_t)j * o->B;
    const int64_t *ids = p->micro_ids + (size_t)j * o->B;
    if (!tok) return zen_fail(ZEN_ERR_INPUT, "objective grpo decodes its completions for the rewards: the model has no "
                              "tokenizer (tokenizer.json or a GGUF's own)");
    zen_gen_request *req = zen_calloc(n + 1, sizeof(zen_gen_request));
    if (!req) return ZEN_ERR_INTERNAL;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        free(gs[i].prompt);
        for (size_t k = 0; gs[i].c && k < G; k++) free(gs[i].c[k].ids);
        free(gs[i].c);
        memset(&gs[i], 0, sizeof gs[i]);
        gs[i].P = zen_record_doc_len(d, ids[i], 0);
        if (!(gs[i].prompt = zen_malloc(gs[i].P * sizeof(int32_t))) || !(gs[i].c = zen_calloc(G, sizeof(completion))))
            rc = ZEN_ERR_INTERNAL;
        if (!rc) rc = zen_record_doc_read(d, ids[i], 0, gs[i].prompt);
        req[i] = (zen_gen_request){gs[i].prompt, gs[i].P, (int)G, (uint64_t)ids[i]};
    }
    int32_t stop[2] = {zen_tokenizer_eos(tok), zen_tokenizer_token_id(tok, "<|im_end|>")};
    size_t rows = n * G < ZK_DECODE_ROWS ? n * G : ZK_DECODE_ROWS, longest = 0;
    for (size_t i = 0; i < n; i++) longest = gs[i].P > longest ? gs[i].P : longest;
    /* the cache: each prompt once, each sample's own pages (zen grad --plan counts the same) */
    size_t cache = zen_gen_batch_cache_bytes(&e->m->cfg, e->m->be->compute, rows, G, longest,
                                             (size_t)op->grpo_max_completion_length);
    zen_gen_batch_opts go = {{(float)op->grpo_temperature, (float)op->grpo_top_p, (float)op->grpo_min_p,
                              (int)op->grpo_top_k},
                             step_seed(e->seed, e->step), (size_t)op->grpo_max_completion_length, stop, 2, NULL, NULL,
                             rows, cache, 1024, 0};
    draw_sink out = {gs, G};
    zen_gen_batch_stats st;
    double t0 = now_seconds();
    if (!rc) rc = zen_generate_batch(e->m, e->lo, req, n, &go, took, &out, &st);
    p->seconds[j][TIME_GENERATION] += now_seconds() - t0;
    free(req);
    /* the rewards of every completion */
    zen_reward_item *items = rc ? NULL : zen_calloc(n * G + 1, sizeof(zen_reward_item));
    char **texts = rc ? NULL : zen_calloc(2 * n * G + n + 1, sizeof(char *));
    double *per = rc ? NULL : zen_calloc(n * G * MAX_NAMED + 1, sizeof(double));
    double *total = rc ? NULL : zen_calloc(n * G + 1, sizeof(double));
    if (!rc && (!items || !texts || !per || !total)) rc = ZEN_ERR_INTERNAL;
    for (size_t i = 0; i < n && !rc; i++) {
        char *prompt = texts[2 * n * G + i] = zen_tokenizer_utf8(tok, gs[i].prompt, gs[i].P, 0);
        const char *rec = NULL;
        size_t rec_len = 0;
        rc = zen_record_json(d, ids[i], &rec, &rec_len);
        for (size_t k = 0; k < G && !rc; k++) {
            completion *c = &gs[i].c[k];
            char *t = texts[i * G + k] = zen_tokenizer_utf8(tok, c->ids, c->n, 1);
            if (!prompt || !t) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory (completion text)");
            items[i * G + k] = (zen_reward_item){prompt, t, c->ids, c->n, rec, rec_len, (long)ids[i], (long)k};
        }
    }
    int external = 0;
    t0 = now_seconds();
    if (!rc) rc = zen_rewards_score(p->rewards, items, n * G, per, total, &external);
    p->seconds[j][TIME_REWARDS] += now_seconds() - t0;
    if (rc && external) o->stop_after_checkpoint = 1; /* the command failed, not the run: keep what it has */
    int C = p->rewards ? zen_rewards_count(p->rewards) : 0;
    for (size_t i = 0; i < n && !rc; i++)
        for (size_t k = 0; k < G; k++) {
            completion *c = &gs[i].c[k];
            c->reward = total[i * G + k];
            for (int r = 0; r < MAX_NAMED; r++) c->named[r] = r < C ? per[(i * G + k) * (size_t)C + (size_t)r] : NAN;
        }
    for (size_t i = 0; texts && i < 2 * n * G + n; i++) free(texts[i]);
    free(texts);
    free(items);
    free(per);
    free(total);
    if (rc) return rc;
    /* the layout: each prompt once, its G completions as segments */
    zen_pair_batch *b = &p->micro[j];
    zen_pair_batch_clear(b);
    b->source = d;
    const group **slots = p->micro_groups + (size_t)j * o->B;
    for (size_t i = 0; i < n && !rc; i++) {
        const int32_t *cont[1024];
        size_t len[1024];
        for (size_t k = 0; k < G; k++) cont[k] = gs[i].c[k].ids, len[k] = gs[i].c[k].n;
        slots[i] = &gs[i];
        if (!(rc = zen_pair_batch_add(b, gs[i].prompt, gs[i].P, cont, len, (int)G, 0)))
            b->group_id[b->groups - 1] = ids[i];
    }
    p->drawn_ok[j] = !rc;
    return rc;
}

/* a completion's tokens that count: all, or none when it is truncated and mask_truncated_completions */
static int counts(const zen_objective *o, const completion *c) {
    return !(o->opts.grpo_mask_truncated_completions && c->truncated);
}

/* the forward of the batch under lo (temperature-scaled log-probabilities), each row's token index kept */
static int forward(zen_objective *o, int j, const zen_objective_env *e, const zen_lora *lo, uint64_t dropout_seed,
                   float *row_loss, float *entropy) {
    grpo *p = o->state;
    const zen_pair_batch *b = &p->micro[j];
    e->a->head_temperature = (float)o->opts.grpo_temperature;
    e->a->entropy_host = entropy;
    int rc = zen_pair_batch_forward(b, e->m, lo, e->a, dropout_seed, row_loss);
    e->a->head_temperature = 0.0f;
    e->a->entropy_host = NULL;
    /* each continuation row's index in its completion (rows of a continuation are in order) */
    for (size_t n = 0; n < b->N; n++) {
        p->row_t[n] = -1;
        if (b->row_kind[n] < 0) continue;
        size_t k = n;
        int32_t t = 0;
        while (k > 0 && b->row_group[k - 1] == b->row_group[n] && b->row_kind[k - 1] == b->row_kind[n]) k--, t++;
        p->row_t[n] = t;
    }
    return rc;
}

static int draw(zen_objective *o, int j, const zen_objective_env *e);

static int pre(zen_objective *o, int j, const zen_objective_env *e, double *out) {
    grpo *p = o->state;
    memset(out, 0, PRE_COUNT * sizeof(double));
    memset(p->seconds[j], 0, sizeof p->seconds[j]);
    long batch = e->step / o->opts.grpo_num_iterations;
    if (!p->file && (!p->drawn_ok[j] || p->drawn_batch[j] != batch)) {
        int rc = draw(o, j, e);
        p->drawn_batch[j] = batch;
        /* num_iterations > 1: the log-probabilities of the policy that drew them, for every step of the batch */
        double t0 = now_seconds();
        if (!rc && p->old[j] && j != o->eval_slot) rc = forward(o, j, e, e->lo, 0, p->old[j], NULL);
        p->seconds[j][TIME_OLD_LOGPS] += now_seconds() - t0;
        if (rc) return rc;
    }
    const group *const *gs = p->micro_groups + (size_t)j * o->B;
    for (size_t i = 0; i < p->micro_n[j]; i++)
        for (int k = 0; k < p->G; k++) {
            const completion *c = &gs[i]->c[k];
            if (counts(o, c)) out[PRE_TOKENS] += (double)c->n;
            out[PRE_SEQS] += 1.0;
            if (!isnan(c->reward)) out[PRE_R_SUM] += c->reward, out[PRE_R_SQ] += c->reward * c->reward, out[PRE_R_N]++;
        }
    out[PRE_MICROS] = 1.0;
    if (o->opts.grpo_beta > 0) { /* the reference's log-probabilities: the frozen adapter, or the base */
        double t0 = now_seconds();
        int rc = forward(o, j, e, e->ref, 0, p->ref[j], NULL);
        p->seconds[j][TIME_REFERENCE] += now_seconds() - t0;
        if (rc) return rc;
    }
    return 0;
}

/* row n's old log-probability: the file's, the drawing policy's (num_iterations > 1), or l itself (rho = 1) */
static double old_logp(const grpo *p, int j, const completion *c, size_t n, double l) {
    if (c->old) return (double)c->old[p->row_t[n]];
    if (p->old[j] && j != p->eval_slot) return -(double)p->old[j][n];
    return l;
}

/* the group's mean and std (n - 1) of its non-NaN rewards; NaN where they cannot be had */
static void group_stats(const group *g, int G, double *mean, double *std) {
    double s = 0, n = 0;
    for (int k = 0; k < G; k++)
        if (!isnan(g->c[k].reward)) s += g->c[k].reward, n++;
    *mean = n ? s / n : NAN;
    double v = 0;
    for (int k = 0; k < G; k++)
        if (!isnan(g->c[k].reward)) v += (g->c[k].reward - *mean) * (g->c[k].reward - *mean);
    *std = n > 1 ? sqrt(v / (n - 1)) : NAN;
}

static int run(zen_objective *o, int j, const zen_objective_env *e, uint64_t dropout_seed, int backward,
               const double *totals, double *sums) {
    grpo *p = o->state;
    const zen_objective_opts *op = &o->opts;
    const zen_pair_batch *b = &p->micro[j];
    const group *const *gs = p->micro_groups + (size_t)j * o->B;
    size_t ng = p->micro_n[j];
    int G = p->G, seq_level = !strcmp(op->grpo_importance_sampling_level, "sequence");
    double eps_low = op->grpo_epsilon, eps_high = op->grpo_epsilon_high > 0 ? op->grpo_epsilon_high : op->grpo_epsilon;
    memset(sums, 0, SUM_COUNT * sizeof(double));
    sums[SUM_MAX_LEN] = sums[SUM_NEG_MIN_LEN] = -INFINITY;
    double t_run = now_seconds();
    for (int k = 0; k < N_TIMES; k++) sums[SUM_TIME + k] = p->seconds[j][k];
    e->a->head_grad_in_forward = backward; /* the head's backward fused into the forward */
    int rc = forward(o, j, e, e->lo, dropout_seed, p->row_loss, p->entropy);
    e->a->head_grad_in_forward = 0;
    if (rc) return rc;
    /* the batch's reward std (scale_rewards batch): over the step's rewards, n - 1 */
    double rn = totals[PRE_R_N], rmean = rn ? totals[PRE_R_SUM] / rn : 0.0;
    double batch_std = rn > 1 ? sqrt(fmax(0.0, (totals[PRE_R_SQ] - rn * rmean * rmean) / (rn - 1))) : NAN;
    double micro_tokens = 0;
    for (size_t i = 0; i < ng; i++)
        for (int k = 0; k < G; k++) micro_tokens += counts(o, &gs[i]->c[k]) ? (double)gs[i]->c[k].n : 0.0;
    /* per completion: its advantage, its tokens' normaliser, and (sequence level) its log-ratio */
    size_t nc = ng * (size_t)G;
    double *adv = zen_calloc(nc + 1, sizeof(double)), *norm = zen_calloc(nc + 1, sizeof(double));
    double *seq_log = zen_calloc(nc + 1, sizeof(double)), *seq_grad = zen_calloc(nc + 1, sizeof(double));
    if (!adv || !norm || !seq_log || !seq_grad) rc = ZEN_ERR_INTERNAL;
    for (size_t i = 0; i < ng && !rc; i++) {
        double mean, std;
        group_stats(gs[i], G, &mean, &std);
        sums[SUM_GROUPS] += 1.0;
        if (!isnan(std)) sums[SUM_RSTD] += std * G;
        sums[SUM_ZERO_STD] += !isnan(std) && fabs(std) <= 1e-8 ? G : 0; /* torch.isclose(std, 0) */
        for (int k = 0; k < G; k++) {
            const completion *c = &gs[i]->c[k];
            size_t ci = i * (size_t)G + (size_t)k;
            double a = isnan(c->reward) ? 0.0 : c->reward - mean;
            if (!strcmp(op->grpo_scale_rewards, "group")) a /= (isnan(std) ? 0.0 : std) + 1e-4;
            else if (!strcmp(op->grpo_scale_rewards, "batch")) a /= (isnan(batch_std) ? 0.0 : batch_std) + 1e-4;
            adv[ci] = isnan(c->reward) ? 0.0 : a;
            double m = counts(o, c) ? 1.0 : 0.0, tokens = m * (double)c->n;
            if (!strcmp(op->grpo_loss_type, "dapo")) norm[ci] = m / totals[PRE_TOKENS];
            else if (!strcmp(op->grpo_loss_type, "grpo")) norm[ci] = m / fmax(1.0, tokens) / totals[PRE_SEQS];
            else if (!strcmp(op->grpo_loss_type, "bnpo")) norm[ci] = m / fmax(1.0, micro_tokens) / totals[PRE_MICROS];
            else norm[ci] = m / (totals[PRE_SEQS] * (double)op->grpo_max_completion_length);
            if (!isnan(c->reward)) sums[SUM_R] += c->reward, sums[SUM_R_N] += 1.0;
            for (int r = 0; r < p->n_named; r++)
                if (!isnan(c->named[r])) {
                    sums[SUM_NAMED + 3 * r] += c->named[r];
                    sums[SUM_NAMED + 3 * r + 1] += c->named[r] * c->named[r];
                    sums[SUM_NAMED + 3 * r + 2] += 1.0;
                }
            sums[SUM_SEQS] += 1.0;
            sums[SUM_LEN] += (double)c->n;
            sums[SUM_TRUNC] += c->truncated;
            if ((double)c->n > sums[SUM_MAX_LEN]) sums[SUM_MAX_LEN] = (double)c->n;
            if (-(double)c->n > sums[SUM_NEG_MIN_LEN]) sums[SUM_NEG_MIN_LEN] = -(double)c->n;
        }
    }
    /* GSPO: each completion's mean log-ratio over its counted tokens */
    for (size_t n = 0; seq_level && n < b->N && !rc; n++) {
        if (b->row_kind[n] < 0) continue;
        size_t ci = (size_t)b->row_group[n] * (size_t)G + (size_t)b->row_kind[n];
        const completion *c = &gs[b->row_group[n]]->c[b->row_kind[n]];
        double l = -(double)p->row_loss[n], lo = old_logp(p, j, c, n, l);
        if (counts(o, c)) seq_log[ci] += (l - lo) / fmax(1.0, (double)c->n);
    }
    /* each token: its term of the loss and dLoss/dl */
    for (size_t n = 0; n < b->N && !rc; n++) {
        p->row_w[n] = 0.0f;
        if (b->row_kind[n] < 0) continue;
        size_t gi = (size_t)b->row_group[n], ci = gi * (size_t)G + (size_t)b->row_kind[n];
        const completion *c = &gs[gi]->c[b->row_kind[n]];
        double m = counts(o, c) ? 1.0 : 0.0;
        double l = -(double)p->row_loss[n], lo = old_logp(p, j, c, n, l);
        double rho = exp(seq_level ? seq_log[ci] : l - lo), dl_drho;
        int low, high;
        double term = zen_grpo_clip_term(rho, adv[ci], eps_low, eps_high, op->grpo_delta, &dl_drho, &low, &high);
        double dterm = 0.0; /* d(term)/dl of this token alone (token level) */
        if (seq_level) seq_grad[ci] += norm[ci] * dl_drho * rho; /* through the completion's mean log-ratio */
        else dterm = dl_drho * rho;
        if (op->grpo_beta > 0) {
            double d = (double)p->ref[j][n] * -1.0 - l; /* l_ref - l (ref[] holds the reference's row losses) */
            double k3 = exp(d) - d - 1.0;
            term += op->grpo_beta * k3;
            dterm += op->grpo_beta * (1.0 - exp(d));
            sums[SUM_KL] += m * k3;
        }
        sums[SUM_LOSS] += norm[ci] * term;
        sums[SUM_TOKENS] += m;
        sums[SUM_ENT] += m * (double)p->entropy[n];
        sums[SUM_LOW] += m * low, sums[SUM_HIGH] += m * high, sums[SUM_REGION] += m * (low || high);
        p->row_w[n] = (float)(norm[ci] * dterm);
    }
    for (size_t n = 0; seq_level && n < b->N; n++) { /* the completion's share, spread over its counted tokens */
        if (b->row_kind[n] < 0) continue;
        size_t ci = (size_t)b->row_group[n] * (size_t)G + (size_t)b->row_kind[n];
        const completion *c = &gs[b->row_group[n]]->c[b->row_kind[n]];
        if (counts(o, c)) p->row_w[n] += (float)(seq_grad[ci] / fmax(1.0, (double)c->n));
    }
    free(adv);
    free(norm);
    free(seq_log);
    free(seq_grad);
    if (!rc && backward) {
        /* the rows' losses are -l: dLoss/dloss[n] = -dLoss/dl */
        for (size_t n = 0; n < b->N; n++) p->row_w[n] = -p->row_w[n];
        rc = zen_pair_batch_backward(b, e->m, e->lo, e->a, p->row_w);
    }
    sums[SUM_TIME + TIME_TRAIN] += now_seconds() - t_run;
    return rc;
}

/* a logged step's groups: each prompt (its record's index in the file) with its completions and their
 * rewards, a JSON line per prompt */
static int write_samples(const zen_objective *o, const zen_objective_env *e, FILE *f, long step) {
    const grpo *p = o->state;
    if (!f || !e->tokenizer) return 0;
    for (int j = 0; j < o->n_micro; j++) {
        if (j == o->eval_slot) continue; /* the step's groups, not the last evaluation's */
        const group *const *gs = p->micro_groups + (size_t)j * o->B;
        for (size_t i = 0; i < p->micro_n[j]; i++) {
            cJSON *line = cJSON_CreateObject(), *list = cJSON_CreateArray();
            char *prompt = zen_tokenizer_utf8(e->tokenizer, gs[i]->prompt, gs[i]->P, 0);
            cJSON_AddItemToObject(line, "step", zen_json_exact_number((double)step));
            cJSON_AddItemToObject(line, "index", zen_json_exact_number((double)p->micro_ids[(size_t)j * o->B + i]));
            cJSON_AddStringToObject(line, "prompt", prompt ? prompt : "");
            free(prompt);
            for (int k = 0; k < p->G; k++) {
                const completion *c = &gs[i]->c[k];
                cJSON *one = cJSON_CreateObject(), *named = cJSON_CreateObject();
                char *text = zen_tokenizer_utf8(e->tokenizer, c->ids, c->n, 1);
                cJSON_AddStringToObject(one, "completion", text ? text : "");
                free(text);
                cJSON_AddItemToObject(one, "reward", isnan(c->reward) ? cJSON_CreateNull() : cJSON_CreateNumber(c->reward));
                for (int r = 0; r < p->n_named; r++)
                    cJSON_AddItemToObject(named, p->names[r],
                                          isnan(c->named[r]) ? cJSON_CreateNull() : cJSON_CreateNumber(c->named[r]));
                cJSON_AddItemToObject(one, "rewards", named);
                cJSON_AddBoolToObject(one, "truncated", c->truncated);
                cJSON_AddItemToArray(list, one);
            }
            cJSON_AddItemToObject(line, "completions", list);
            char *json = cJSON_PrintUnformatted(line);
            int bad = !json || fprintf(f, "%s\n", json) < 0;
            free(json);
            cJSON_Delete(line);
            if (bad) return zen_fail(ZEN_ERR_INTERNAL, "samples.jsonl: write failed (disk full?)");
        }
    }
    return fflush(f) ? zen_fail(ZEN_ERR_INTERNAL, "samples.jsonl: write failed (disk full?)") : 0;
}

static void values(const zen_objective *o, const double *s, double *v) {
    const grpo *p = o->state;
    double seqs = s[SUM_SEQS], tokens = s[SUM_TOKENS];
    v[0] = s[SUM_LOSS];
    v[1] = s[SUM_R_N] ? s[SUM_R] / s[SUM_R_N] : NAN;
    v[2] = seqs ? s[SUM_RSTD] / seqs : NAN;
    v[3] = seqs ? s[SUM_ZERO_STD] / seqs : NAN;
    v[4] = o->opts.grpo_beta > 0 && tokens ? s[SUM_KL] / tokens : NAN;
    v[5] = tokens ? s[SUM_ENT] / tokens : NAN;
    v[6] = tokens ? s[SUM_LOW] / tokens : NAN;
    v[7] = tokens ? s[SUM_HIGH] / tokens : NAN;
    v[8] = tokens ? s[SUM_REGION] / tokens : NAN;
    v[9] = seqs ? s[SUM_LEN] / seqs : NAN;
    v[10] = seqs ? -s[SUM_NEG_MIN_LEN] : NAN;
    v[11] = seqs ? s[SUM_MAX_LEN] : NAN;
    v[12] = seqs ? s[SUM_TRUNC] / seqs : NAN;
    double ranks = o->ranks && o->ranks->size > 0 ? (double)o->ranks->size : 1.0;
    for (int k = 0; k < N_TIMES; k++) v[13 + k] = s[SUM_TIME + k] / ranks; /* a rank's seconds, the ranks' mean */
    for (int k = 0; k < p->n_named; k++) {
        double sum = s[SUM_NAMED + 3 * k], sq = s[SUM_NAMED + 3 * k + 1], n = s[SUM_NAMED + 3 * k + 2];
        double mean = n ? sum / n : NAN;
        v[N_FIXED + 2 * k] = mean;
        v[N_FIXED + 2 * k + 1] = n > 1 ? sqrt(fmax(0.0, (sq - n * mean * mean) / (n - 1))) : NAN;
    }
}

static void describe(const zen_objective *o, const char *reference, char *buf, size_t cap) {
    const zen_objective_opts *op = &o->opts;
    snprintf(buf, cap, "objective grpo (%s, %ld completions per prompt of up to %ld tokens, temperature %g, "
             "scale_rewards %s, epsilon %g/%g%s, %s ratios, beta %g%s%s); each prompt %s", op->grpo_loss_type,
             op->grpo_num_generations, op->grpo_max_completion_length, op->grpo_temperature, op->grpo_scale_rewards,
             op->grpo_epsilon, op->grpo_epsilon_high > 0 ? op->grpo_epsilon_high : op->grpo_epsilon,
             op->grpo_delta > 0 ? ", delta" : "", op->grpo_importance_sampling_level, op->grpo_beta,
             op->grpo_beta > 0 ? "; reference: " : "", op->grpo_beta > 0 ? reference : "",
             strcmp(op->pair_layout, "shared") ? "run for each completion" : "run once for its completions");
}

static const char *const keys[] = {"grpo.num_generations", "grpo.max_completion_length", "grpo.temperature",
                                   "grpo.top_p", "grpo.top_k", "grpo.min_p", "grpo.scale_rewards", "grpo.epsilon",
                                   "grpo.epsilon_high", "grpo.delta", "grpo.importance_sampling_level",
                                   "grpo.num_iterations", "grpo.beta", "grpo.loss_type",
                                   "grpo.mask_truncated_completions", "pair_layout", "rewards", "reward.weights",
                                   NULL};
static const zen_shown_metric shown[] = {{"reward", "reward", "%.4f"}, {"reward_std", "reward std", "%.4f"}};

/* the sampling's memory for items prompts of a micro-batch (objective.h): the cache of zen_generate_batch
 * for up to ZK_DECODE_ROWS samples at once, prompts of T - C tokens (a completion leaves a prompt at least
 * one), and its logits */
static void generation_bytes(const zen_objective_opts *o, const zen_config *cfg, zen_dtype compute, size_t items,
                             size_t T, size_t *cache, size_t *logits) {
    size_t G = (size_t)o->grpo_num_generations, C = (size_t)o->grpo_max_completion_length;
    if (C > T - 1) C = T - 1;
    size_t rows = items * G < ZK_DECODE_ROWS ? items * G : ZK_DECODE_ROWS;
    *cache = zen_gen_batch_cache_bytes(cfg, compute, rows, G, T - C, C);
    *logits = rows * (size_t)cfg->vocab * sizeof(float);
}

const zen_objective_ops zen_objective_grpo = {
    .name = "grpo",
    .summary = "group relative policy optimisation: the policy's own completions, rewarded (TRL's GRPO)",
    .records = ZEN_RECORDS_PROMPTS,
    .item = "prompts",
    .keys = keys,
    .rows_per_item = 9,
    .rows_per_item_of = rows_per_item_of,
    .shared_layout = 1,
    .needs_tokenizer = 1,
    .generation_bytes = generation_bytes,
    .steps_per_batch = steps_per_batch,
    .n_pre = PRE_COUNT,
    .n_sums = SUM_COUNT,
    .n_sums_max = N_MAX_SUMS,
    .n_metrics = N_FIXED,
    .n_train = N_FIXED,
    .metrics = fixed_metrics,
    .shown = shown,
    .n_shown = 2,
    .check = check,
    .uses_reference = uses_reference,
    .open = open_groups,
    .alloc = alloc,
    .free = release,
    .load = load,
    .pre = pre,
    .run = run,
    .values = values,
    .write_samples = write_samples,
    .describe = describe,
};
