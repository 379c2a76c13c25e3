/* objectives/kto.c: KTO as TRL v1.9 defines it (trl/trainer/kto_trainer.py),
 * a row of the objective table: learning from single completions labelled
 * desirable or undesirable (a thumbs up or down).
 *
 * Items are a file's records (zen data --format kto: a prompt, a completion
 * and its label), or a preference file's pairs unpaired as TRL's
 * unpair_preference_dataset does (a pair's chosen completion desirable, its
 * rejected one undesirable; TRL's order, for the KL partners, is per block of
 * 1000 pairs their chosen completions then their rejected ones). With r the summed
 * log-probability of the completion under the policy minus the reference's
 * (the base with the adapter off, or the adapter a run continues, frozen):
 *   kto:                desirable w_d (1 - s(beta (r - z))), undesirable w_u (1 - s(beta (z - r)))
 *   apo_zero_unpaired:  desirable w_d (1 - s(beta r)),        undesirable w_u s(beta r)
 * and a step's loss is their mean over its items (TRL's nanmean: the
 * weights scale the terms, the items divide). z, the KL reference point, is
 * built as TRL builds it: the items are cut, in TRL's order, into blocks of
 * batch_size (TRL's per-device batch) and each item is paired with the
 * completion of the item before it in its block (the first with the last);
 * z = max(0, the mean over the micro-batch of the summed log-ratio of those
 * mismatched pairs), detached. In training over N ranks z is, as TRL
 * gathers it, the mean of the N micro-batches' means that the ranks run at
 * one moment, then clamped; so unlike SFT and DPO, N ranks are not one
 * process with N x the accumulation (they are TRL's N GPUs), and a run
 * resumes with the ranks it started with. Evaluation keeps each batch's own
 * z, so its numbers do not depend on the ranks. A batch_size of one pairs
 * each item with itself (no mismatched pair): refused, unless
 * apo_zero_unpaired, which has no z.
 *
 * Each item is a group of the shared-prompt layout (pair_batch.h): its
 * prompt once, its completion and its KL completion as two continuations
 * (the KL one cut to seq_len - prompt, as TRL's max_length cuts it); the KL
 * rows run forward only in effect (their row weight is 0). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/pairs.h"
#include "../util/error.h"
#include "kto.h"
#include "objective.h"
#include "pair_batch.h"
#include "ref_logps.h"

enum { PRE_TOKENS, PRE_ITEMS, PRE_COUNT };
enum {
    SUM_LOSS, SUM_KL, SUM_MICRO, SUM_REWARDS_C, SUM_REWARDS_R, SUM_LOGPS_C, SUM_LOGPS_R, SUM_N_C, SUM_N_R, SUM_ITEMS,
    SUM_COUNT
};
#define UNPAIR_BLOCK 1000 /* pairs per batch of TRL's unpair_preference_dataset (datasets' map default) */

typedef struct {
    int apo;                      /* loss_type apo_zero_unpaired: no KL point */
    zen_pair_batch *micro;        /* [n_micro] */
    int32_t *labels;              /* [n_micro * B] each loaded item's label (1 desirable) */
    const zen_dataset *table_of[2];
    double *table[2];             /* kto.precompute_ref: [items][k] of the training and validation data */
    double *ref, *pol, *d;        /* [k * B] scratch: reference and policy log-probabilities, dL/dr */
    double *z_of_rank;            /* [ranks] each rank's micro-batch mean log-ratio of one moment */
    float *row_loss, *row_w;      /* [rows] */
} kto;

static int k_of(const kto *p) { return p->apo ? 1 : 2; }

int zen_kto_ratio_advice(int64_t n_desirable, int64_t n_undesirable, double w_d, double w_u, char *buf, size_t cap) {
    double nd = (double)(n_desirable > 1 ? n_desirable : 1);
    double nu = (double)(n_desirable + n_undesirable - (int64_t)nd > 1 ? n_desirable + n_undesirable - (int64_t)nd : 1);
    if (nd == nu || !n_desirable || !n_undesirable) return 0;
    double d_lo = nearbyint(100 * nu * w_u / nd) / 100, d_hi = nearbyint(100 * nu * w_u / nd * 1.33) / 100;
    double u_lo = nearbyint(100 * nd * w_d / nu / 1.33) / 100, u_hi = nearbyint(100 * nd * w_d / nu) / 100;
    if ((w_d >= d_lo && w_d <= d_hi) || (w_u >= u_lo && w_u <= u_hi)) return 0;
    snprintf(buf, cap, "%lld desirable and %lld undesirable records with weights %g and %g fall outside TRL's "
             "recommended (desirable_weight x desirable) : (undesirable_weight x undesirable) of 1:1 to 4:3; set "
             "kto.desirable_weight in [%.2f, %.2f] or kto.undesirable_weight in [%.2f, %.2f] (not both)",
             (long long)n_desirable, (long long)n_undesirable, w_d, w_u, d_lo, d_hi, u_lo, u_hi);
    return 1;
}

/* ---------------- items ---------------- */

/* item i of d: its record, the documents of its prompt and completion, and its label */
typedef struct {
    int64_t record;
    int prompt_doc, completion_doc, label;
} item_ref;

/* A preference file's items go by pair: item 2q is pair q's chosen
 * completion (desirable), 2q + 1 its rejected one, so a held-out tail holds
 * whole pairs. TRL's unpaired order, which the KL partners follow: per block
 * of UNPAIR_BLOCK pairs, their chosen completions, then their rejected ones.
 * A KTO file's items are its records, in TRL's order as they are. */
static item_ref item_of(const zen_dataset *d, int64_t i) {
    if (d->records == ZEN_RECORDS_KTO) return (item_ref){i, 0, 1, d->labels[i]};
    return (item_ref){i / 2, 0, 1 + (int)(i % 2), i % 2 == 0};
}

static int64_t items_in(const zen_dataset *d) {
    return d->records == ZEN_RECORDS_KTO ? d->n_records : 2 * d->n_records;
}

/* item i's position in TRL's order, and back */
static int64_t trl_position(const zen_dataset *d, int64_t i) {
    if (d->records == ZEN_RECORDS_KTO) return i;
    int64_t q = i / 2, first = q / UNPAIR_BLOCK * UNPAIR_BLOCK, size = d->n_records - first;
    if (size > UNPAIR_BLOCK) size = UNPAIR_BLOCK;
    return 2 * first + (i % 2 ? size : 0) + (q - first);
}

static int64_t item_at(const zen_dataset *d, int64_t u) {
    if (d->records == ZEN_RECORDS_KTO) return u;
    int64_t first = u / (2 * UNPAIR_BLOCK) * UNPAIR_BLOCK, size = d->n_records - first, at = u - 2 * first;
    if (size > UNPAIR_BLOCK) size = UNPAIR_BLOCK;
    return at < size ? 2 * (first + at) : 2 * (first + at - size) + 1;
}

/* TRL's KL partner of item i: in TRL's order, the item before it in its block of B (the first takes the last) */
static int64_t kl_partner(const zen_dataset *d, int64_t i, int64_t B) {
    int64_t u = trl_position(d, i), items = items_in(d), start = u / B * B, size = items - start < B ? items - start : B;
    return item_at(d, start + (u - start - 1 + size) % size);
}

/* the tokens of document doc of record r, into a growing buffer */
static int read_doc(const zen_dataset *d, int64_t r, int doc, int32_t **buf, size_t *cap, size_t *len) {
    *len = zen_record_doc_len(d, r, doc);
    if (*len > *cap) {
        int32_t *more = realloc(*buf, *len * sizeof(int32_t));
        if (!more) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        *buf = more, *cap = *len;
    }
    return zen_record_doc_read(d, r, doc, *buf);
}

/* item i as a group: its prompt, its completion and (kto) its KL completion cut to T - prompt */
static int add_item(zen_pair_batch *b, const zen_dataset *d, int64_t i, int64_t B, size_t T, int k) {
    item_ref it = item_of(d, i), kl = item_of(d, kl_partner(d, i, B));
    int32_t *p = NULL, *c = NULL, *q = NULL;
    size_t pc = 0, cc = 0, qc = 0, P, C, Q = 0;
    int rc = read_doc(d, it.record, it.prompt_doc, &p, &pc, &P);
    if (!rc) rc = read_doc(d, it.record, it.completion_doc, &c, &cc, &C);
    if (!rc && k == 2) rc = read_doc(d, kl.record, kl.completion_doc, &q, &qc, &Q);
    if (!rc) {
        if (Q > T - P) Q = T - P; /* P + C <= T was checked at open, so P < T */
        const int32_t *cont[2] = {c, q};
        size_t len[2] = {C, Q};
        rc = zen_pair_batch_add(b, p, P, cont, len, k, 0);
    }
    if (!rc) b->group_id[b->groups - 1] = i;
    free(p);
    free(c);
    free(q);
    return rc;
}

/* ---------------- the objective ---------------- */

static int check(const zen_objective_opts *o, const char **key) {
    if (strcmp(o->kto_loss_type, "kto") && strcmp(o->kto_loss_type, "apo_zero_unpaired"))
        return *key = "kto.loss_type", zen_fail(ZEN_ERR_INPUT, "'%s' is not kto or apo_zero_unpaired", o->kto_loss_type);
    if (strcmp(o->pair_layout, "shared") && strcmp(o->pair_layout, "apart"))
        return *key = "pair_layout", zen_fail(ZEN_ERR_INPUT, "'%s' is not shared or apart", o->pair_layout);
    return 0;
}

static int uses_reference(const zen_objective_opts *o) {
    (void)o;
    return 1;
}

static int open_records(zen_objective *o, zen_dataset *d, const char *path, int vocab, int64_t *items) {
    int rc = zen_dataset_open(d, path, vocab);
    if (!rc && d->records != ZEN_RECORDS_KTO && d->records != ZEN_RECORDS_PREFERENCE)
        rc = zen_records_check(d, ZEN_RECORDS_KTO); /* the one-line error naming what the file is not */
    if (!rc) rc = zen_records_check(d, d->records);
    if (rc) return rc;
    *items = items_in(d);
    size_t longest = 0;
    for (int64_t i = 0; i < *items; i++) {
        item_ref it = item_of(d, i);
        size_t n = zen_record_doc_len(d, it.record, it.prompt_doc) + zen_record_doc_len(d, it.record, it.completion_doc);
        if (n > longest) longest = n;
    }
    if (longest > o->T)
        return zen_fail(ZEN_ERR_INPUT, "%s: records up to %zu tokens (prompt + completion) do not fit seq_len %zu; raise "
                        "seq_len or prepare the data with zen data --max-length %zu", path, longest, o->T, o->T);
    if (o->B < 2 && strcmp(o->opts.kto_loss_type, "apo_zero_unpaired"))
        return zen_fail(ZEN_ERR_INPUT, "kto: batch_size (--batch) 1 leaves no mismatched pair for the KL reference point z (TRL "
                        "pairs each item with the completion of the item before it in its block of batch_size); set "
                        "batch_size to 2 or more, or kto.loss_type to apo_zero_unpaired (no z)");
    return 0;
}

static int alloc(zen_objective *o) {
    kto *p = zen_calloc(1, sizeof *p);
    if (!p) return ZEN_ERR_INTERNAL;
    o->state = p;
    p->apo = !strcmp(o->opts.kto_loss_type, "apo_zero_unpaired");
    size_t rows = zen_objective_rows(o), k = (size_t)k_of(p);
    p->micro = zen_calloc((size_t)o->n_micro, sizeof(zen_pair_batch));
    p->labels = zen_calloc((size_t)o->n_micro * o->B + 1, sizeof(int32_t));
    p->ref = zen_calloc(k * o->B + 1, sizeof(double));
    p->pol = zen_calloc(k * o->B + 1, sizeof(double));
    p->d = zen_calloc(o->B + 1, sizeof(double));
    p->z_of_rank = zen_calloc(o->ranks && o->ranks->size > 1 ? (size_t)o->ranks->size : 1, sizeof(double));
    p->row_loss = zen_malloc((rows ? rows : 1) * sizeof(float));
    p->row_w = zen_malloc((rows ? rows : 1) * sizeof(float));
    if (!p->micro || !p->labels || !p->ref || !p->pol || !p->d || !p->z_of_rank || !p->row_loss || !p->row_w)
        return ZEN_ERR_INTERNAL;
    /* the shared layout runs a prompt once for two continuations; apo_zero_unpaired has one */
    int shared = !strcmp(o->opts.pair_layout, "shared") && k == 2;
    for (int j = 0; j < o->n_micro; j++)
        if (zen_pair_batch_alloc(&p->micro[j], rows, zen_objective_att_rows(o), shared)) return ZEN_ERR_INTERNAL;
    return 0;
}

static void release(zen_objective *o) {
    kto *p = o->state;
    for (int j = 0; p->micro && j < o->n_micro; j++) zen_pair_batch_free(&p->micro[j]);
    free(p->micro);
    free(p->labels);
    free(p->table[0]);
    free(p->table[1]);
    free(p->ref);
    free(p->pol);
    free(p->d);
    free(p->z_of_rank);
    free(p->row_loss);
    free(p->row_w);
    free(p);
}

typedef struct {
    const zen_objective *o;
    const zen_dataset *d;
} add_ctx;

static int add_for_table(void *ctx, zen_pair_batch *b, int64_t item) {
    const add_ctx *c = ctx;
    return add_item(b, c->d, item, (int64_t)c->o->B, c->o->T, k_of(c->o->state));
}

/* kto.precompute_ref: the reference's log-probabilities of every item's completion and KL completion */
static int prepare(zen_objective *o, const zen_objective_env *e, const char *model_path, const zen_dataset *train,
                   const zen_dataset *val, FILE *say) {
    kto *p = o->state;
    char advice[512];
    int64_t nd = 0, n = items_in(train);
    for (int64_t i = 0; i < n; i++) nd += item_of(train, i).label;
    if (say && zen_kto_ratio_advice(nd, n - nd, o->opts.kto_desirable_weight, o->opts.kto_undesirable_weight, advice,
                                    sizeof advice))
        fprintf(say, "  warning: %s\n", advice);
    if (!o->opts.kto_precompute_ref) return 0;
    const zen_dataset *sets[2] = {train, val && val != train ? val : NULL};
    int rc = 0;
    for (int i = 0; i < 2 && !rc; i++) {
        if (!sets[i]) continue;
        add_ctx ctx = {o, sets[i]};
        /* the KL pairing depends on the blocks of batch_size: it keys the file with the layout */
        zen_ref_spec spec = {items_in(sets[i]), k_of(p), 0x4b544f00ull ^ (uint64_t)o->B, "records", add_for_table, &ctx};
        p->table_of[i] = sets[i];
        rc = zen_ref_logps_get(e->m, model_path, e->ref, e->a, sets[i], &p->micro[0], o->B, o->ranks, &spec,
                               &p->table[i], say);
    }
    return rc;
}

static int load(zen_objective *o, int j, const zen_dataset *d, const int64_t *ids, size_t n) {
    kto *p = o->state;
    zen_pair_batch *b = &p->micro[j];
    zen_pair_batch_clear(b);
    b->source = d;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        rc = add_item(b, d, ids[i], (int64_t)o->B, o->T, k_of(p));
        p->labels[(size_t)j * o->B + i] = item_of(d, ids[i]).label;
    }
    return rc;
}

static int pre(zen_objective *o, int j, const zen_objective_env *e, double *out) {
    (void)e;
    const zen_pair_batch *b = &((kto *)o->state)->micro[j];
    out[PRE_TOKENS] = 0.0;
    for (size_t n = 0; n < b->N; n++) out[PRE_TOKENS] += b->row_kind[n] == 0;
    out[PRE_ITEMS] = (double)b->groups;
    return 0;
}

static double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }

static int run(zen_objective *o, int j, const zen_objective_env *e, uint64_t dropout_seed, int backward,
               const double *totals, double *sums) {
    kto *p = o->state;
    const zen_pair_batch *b = &p->micro[j];
    const int32_t *label = p->labels + (size_t)j * o->B;
    size_t G = b->groups, k = (size_t)k_of(p);
    double beta = o->opts.beta, w_d = o->opts.kto_desirable_weight, w_u = o->opts.kto_undesirable_weight;
    memset(sums, 0, SUM_COUNT * sizeof(double));
    /* the reference: a precomputed table, or a forward with the adapter off (or the frozen one), no dropout */
    const double *table = b->source == p->table_of[0] ? p->table[0] : b->source == p->table_of[1] ? p->table[1] : NULL;
    int rc = 0;
    if (table) {
        for (size_t g = 0; g < G; g++)
            for (size_t c = 0; c < k; c++) p->ref[g * k + c] = table[(size_t)b->group_id[g] * k + c];
    } else {
        rc = zen_pair_batch_logps(b, e->m, e->ref, e->a, 0, (int)k, p->ref, NULL);
    }
    e->a->head_grad_in_forward = backward; /* the head's backward fused into the policy's forward */
    if (!rc) rc = zen_pair_batch_forward(b, e->m, e->lo, e->a, dropout_seed, p->row_loss);
    e->a->head_grad_in_forward = 0;
    if (rc) return rc;
    zen_pair_batch_sums(b, p->row_loss, (int)k, p->pol, NULL);
    /* z: the mean log-ratio of the mismatched pairs, detached, averaged over
     * the ranks' micro-batches of this moment (training: every rank runs its
     * j-th micro-batch now), at least 0 */
    double z = 0.0;
    if (!p->apo) {
        for (size_t g = 0; g < G; g++) z += p->pol[g * k + 1] - p->ref[g * k + 1];
        z = G ? z / (double)G : 0.0;
        if (backward && o->ranks && o->ranks->size > 1) {
            int n_ranks = o->ranks->size;
            memset(p->z_of_rank, 0, (size_t)n_ranks * sizeof(double));
            p->z_of_rank[o->ranks->rank] = z;
            o->ranks->merge_f64(p->z_of_rank, (size_t)n_ranks);
            z = 0.0;
            for (int r = 0; r < n_ranks; r++) z += p->z_of_rank[r];
            z /= n_ranks;
        }
        if (!(z > 0)) z = 0.0;
        sums[SUM_KL] = z;
    }
    sums[SUM_MICRO] = 1.0;
    for (size_t g = 0; g < G; g++) {
        double r = p->pol[g * k] - p->ref[g * k], loss, dr; /* dr: dLoss/dr of the item's term */
        int desirable = label[g];
        if (p->apo) {
            double s = sigmoid(beta * r);
            loss = desirable ? 1.0 - s : s;
            dr = (desirable ? -1.0 : 1.0) * beta * s * (1.0 - s);
        } else if (desirable) {
            double s = sigmoid(beta * (r - z));
            loss = 1.0 - s;
            dr = -beta * s * (1.0 - s);
        } else {
            double s = sigmoid(beta * (z - r));
            loss = 1.0 - s;
            dr = beta * s * (1.0 - s);
        }
        double w = desirable ? w_d : w_u;
        p->d[g] = w * dr;
        sums[SUM_LOSS] += w * loss;
        sums[desirable ? SUM_REWARDS_C : SUM_REWARDS_R] += beta * r;
        sums[desirable ? SUM_LOGPS_C : SUM_LOGPS_R] += p->pol[g * k];
        sums[desirable ? SUM_N_C : SUM_N_R] += 1.0;
    }
    sums[SUM_ITEMS] = (double)G;
    if (!backward) return 0;
    /* dLoss/dloss[n]: the completion's log-probability is minus its rows' token losses; the KL rows add none */
    for (size_t n = 0; n < b->N; n++)
        p->row_w[n] = b->row_kind[n] == 0 ? (float)(-p->d[b->row_group[n]] / totals[PRE_ITEMS]) : 0.0f;
    return zen_pair_batch_backward(b, e->m, e->lo, e->a, p->row_w);
}

static void values(const zen_objective *o, const double *s, double *v) {
    (void)o;
    double nc = s[SUM_N_C] > 0 ? s[SUM_N_C] : NAN, nr = s[SUM_N_R] > 0 ? s[SUM_N_R] : NAN;
    v[0] = s[SUM_ITEMS] > 0 ? s[SUM_LOSS] / s[SUM_ITEMS] : NAN;
    v[1] = s[SUM_MICRO] > 0 ? s[SUM_KL] / s[SUM_MICRO] : NAN;
    v[2] = s[SUM_REWARDS_C] / nc;
    v[3] = s[SUM_REWARDS_R] / nr;
    v[4] = v[2] - v[3];
    v[5] = s[SUM_LOGPS_C] / nc;
    v[6] = s[SUM_LOGPS_R] / nr;
}

static void describe(const zen_objective *o, const char *reference, char *buf, size_t cap) {
    snprintf(buf, cap, "objective kto (%s, beta %g, weights %g desirable, %g undesirable); reference: %s%s; each "
             "item's prompt %s", o->opts.kto_loss_type, o->opts.beta, o->opts.kto_desirable_weight,
             o->opts.kto_undesirable_weight, reference,
             o->opts.kto_precompute_ref ? ", precomputed before step 1" : ", run in each step",
             strcmp(o->opts.pair_layout, "shared") || k_of(o->state) == 1 ? "run for its completion"
                                                                          : "run once for its completion and KL completion");
}

static const char *const keys[] = {"beta", "kto.desirable_weight", "kto.undesirable_weight", "kto.loss_type",
                                   "kto.precompute_ref", "pair_layout", NULL};
static const char *const metric_names[] = {"loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins",
                                           "logps/chosen", "logps/rejected"};
static const zen_shown_metric shown[] = {{"kl", "kl", "%.4f"}, {"rewards/margins", "margin", "%.4f"}};

const zen_objective_ops zen_objective_kto = {
    .name = "kto",
    .summary = "Kahneman-Tversky optimisation on completions labelled desirable or undesirable (TRL's KTO)",
    .records = ZEN_RECORDS_KTO,
    .item = "records",
    .keys = keys,
    .rows_per_item = 2,
    .shared_layout = 1,
    .ranks_in_loss = 1,
    .n_pre = PRE_COUNT,
    .n_sums = SUM_COUNT,
    .n_metrics = 7,
    .n_train = 7,
    .metrics = metric_names,
    .shown = shown,
    .n_shown = 2,
    .check = check,
    .uses_reference = uses_reference,
    .open = open_records,
    .alloc = alloc,
    .free = release,
    .prepare = prepare,
    .load = load,
    .pre = pre,
    .run = run,
    .values = values,
    .describe = describe,
};
