/* train/trainer.c: the training loop.
 *
 * A step has M = grad_accum x ranks micro-batches (ranks: the data-parallel
 * processes, 1 without MPI); rank r runs micro-batches m = r, r + ranks, ...
 * Step s (0-based) uses, for micro-batch m and row b, position
 * (s % steps_per_epoch * M + m) * batch_size + b of epoch
 * s / steps_per_epoch's permutation of the training sequences (the last
 * partial batch of an epoch is dropped). The loss of a step is the sum over
 * all its micro-batches of the masked token losses divided by the count of
 * masked-in targets over all of them, so accumulation equals one big batch.
 * Each micro-batch's gradient is computed on its own and the M of them are
 * summed pairwise in the fixed order of dist.h, within a rank and then across
 * ranks, so N ranks give exactly the numbers of one process with N x the
 * accumulation. Everything random is a function of (seed, step, m), so a
 * resumed run repeats an uninterrupted one bit for bit (with the same thread
 * count per process). Rank 0 alone writes into out_dir. */
#include <math.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../data/dataset.h"
#include "../data/seq_order.h"
#include <cjson/cJSON.h>

#include "../model/decoder.h"
#include "../model/dora.h"
#include "../model/generate.h"
#include "../optim/adamw.h"
#include "../optim/schedule.h"
#include "../util/error.h"
#include "../util/file.h"
#include "../util/rng.h"
#include "checkpoint.h"
#include "dist.h"
#include "evaluate.h"
#include "report.h"
#include "session.h"
#include "run_lock.h"
#include "stop_signal.h"
#include "trainer.h"
#include "../data/pairs.h"
#include "pair_batch.h"
#include "pref_step.h"
#include "ref_logps.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* the LoRA dropout seed of (step, micro-batch); never 0 (0 means no dropout) */
static uint64_t dropout_seed(long seed, long step, long micro) {
    zen_rng rng;
    zen_rng_seed(&rng, (uint64_t)seed ^ ((uint64_t)step * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)micro << 48));
    return zen_rng_next(&rng) | 1u;
}

typedef struct {
    const zen_run_config *cfg;
    const char *dtype_asked; /* the dtype as given ("auto" included); cfg holds what it resolved to */
    zen_session s;               /* backend, model, adapter, training data, activations */
    zen_adamw opt;
    zen_dataset val_file;
    const zen_dataset *val_data; /* the file the validation sequences come from, or NULL */
    int64_t val_first, val_count;
    zen_seq_order order;
    const zen_dist *dist;        /* this rank among the data-parallel ranks */
    int writer;                  /* rank 0: the one that writes into out_dir */
    long micro_per_step;         /* M = grad_accum x ranks */
    zen_batch *micro;            /* [grad_accum] this rank's micro-batches */
    int tree_depth;              /* ceil(log2(grad_accum)) */
    float **grad_sums;           /* [tree_depth + 1] device [num_params]: the micro-batch tree's partial sums;
                                  * [0] is the adapter's own gradient buffer */
    float *host_grads;           /* [num_params + num_params / 2 + 1] the gradients on their way across ranks,
                                  * and the halves received (NULL alone) */
    int device_comm;             /* the backend sums across ranks itself (NCCL), device to device */
    zen_tokenizer *tok;          /* rank 0 with sample_every: the model's tokenizer */
    FILE *samples;               /* OUT/samples.jsonl, appended */
    long steps_per_epoch, total_steps;
    zen_schedule schedule;
    zen_report report;
    int lock_fd;                 /* OUT/zen.lock, held for the whole run */
    int created_out;             /* this run made out_dir */
    const char *resume_note;     /* a line for the summary, or NULL */
    /* objective dpo or orpo: the data are preference pairs; a micro-batch is batch_size pairs */
    int pairs;
    zen_pref_ctx pref;
    zen_pair_batch *pmicro;      /* [grad_accum] this rank's micro-batches of pairs */
    double *micro_sums;          /* [micro_per_step][ZEN_PM_COUNT + 2] each micro-batch's metric sums, pairs, NLL tokens */
    double *pair_ref;            /* [groups][2]: a micro-batch's precomputed reference log-probabilities */
    double *ref_table, *val_ref_table; /* dpo.precompute_ref: [pairs][2] of the training file and of val_data */
    double pref_values[ZEN_PM_COUNT], eval_pref_values[ZEN_PM_COUNT];
    const char *pref_names[ZEN_PM_COUNT];
    int n_pref;                  /* metrics the objective logs (0 for sft) */
} run;

static void run_free(run *r) {
    zen_report_close(&r->report);
    if (r->samples) fclose(r->samples);
    zen_tokenizer_free(r->tok);
    if (r->micro)
        for (long m = 0; m < r->cfg->grad_accum; m++) zen_batch_free(&r->micro[m]);
    free(r->micro);
    if (r->pmicro)
        for (long m = 0; m < r->cfg->grad_accum; m++) zen_pair_batch_free(&r->pmicro[m]);
    free(r->pmicro);
    free(r->micro_sums);
    free(r->pair_ref);
    free(r->ref_table);
    free(r->val_ref_table);
    if (r->grad_sums) {
        r->s.lora.grads = r->grad_sums[0];
        for (int i = 1; i <= r->tree_depth; i++)
            if (r->grad_sums[i]) r->s.be->free(r->s.be, r->grad_sums[i]);
    }
    free(r->grad_sums);
    free(r->host_grads);
    zen_seq_order_free(&r->order);
    zen_adamw_free(&r->opt);
    zen_dataset_close(&r->val_file);
    zen_session_close(&r->s);
    /* the lock file goes with the run; a run that stopped before writing
     * anything leaves no directory behind */
    if (r->lock_fd >= 0) {
        char *lock = zen_path_join(r->cfg->out_dir, "zen.lock");
        if (lock) remove(lock);
        free(lock);
        if (r->created_out) rmdir(r->cfg->out_dir); /* only when empty */
    }
    zen_run_unlock(r->lock_fd);
}

/* datasets, the train/validation split, and the number of steps */
/* val_fraction: the last items (sequences or pairs) of the training file
 * are held out for validation; returns how many */
static int64_t hold_out_tail(run *r, int64_t items) {
    if (!(r->cfg->val_fraction > 0)) return 0;
    int64_t n_val = (int64_t)ceil(r->cfg->val_fraction * (double)items);
    r->val_data = &r->s.data;
    r->val_first = items - n_val;
    r->val_count = n_val;
    return n_val;
}

/* steps per epoch (whole steps of batch_size x micro-batches), the run's
 * steps, and the shuffled order of the n_train training items */
static int plan_steps(run *r, int64_t n_train) {
    const zen_run_config *c = r->cfg;
    r->steps_per_epoch = (long)(n_train / (c->batch_size * r->micro_per_step));
    r->total_steps = c->max_steps > 0 ? c->max_steps : c->epochs * r->steps_per_epoch;
    return zen_seq_order_init(&r->order, 0, n_train, (uint64_t)c->seed, 1);
}

/* preference pairs: the training file, held-out pairs or val_data */
static int open_pair_data(run *r) {
    const zen_run_config *c = r->cfg;
    size_t T = (size_t)c->seq_len;
    int rc = zen_session_open_pairs(&r->s, c->data, T);
    if (rc) return rc;
    int64_t pairs = zen_pairs_count(&r->s.data), n_val = 0;
    if (c->val_data[0]) {
        if ((rc = zen_open_pairs(&r->val_file, c->val_data, r->s.model.cfg.vocab, T))) return rc;
        r->val_data = &r->val_file;
        r->val_first = 0;
        r->val_count = zen_pairs_count(&r->val_file);
    } else {
        n_val = hold_out_tail(r, pairs);
    }
    int64_t n_train = pairs - n_val, per_step = c->batch_size * r->micro_per_step;
    if (n_train < per_step)
        return zen_fail(ZEN_ERR_INPUT, "%s: %lld training pairs (after holding out %lld), fewer than one step's "
                        "batch_size x grad_accum%s = %lld", c->data, (long long)n_train, (long long)n_val,
                        r->dist->size > 1 ? " x ranks" : "", (long long)per_step);
    return plan_steps(r, n_train);
}

static int open_data(run *r) {
    const zen_run_config *c = r->cfg;
    size_t T = (size_t)c->seq_len;
    if (r->pairs) return open_pair_data(r);
    int rc = zen_session_open_data(&r->s, c->data, c->doc_mask, T);
    if (rc) return rc;
    if (r->s.data.records == ZEN_RECORDS_PREFERENCE)
        return zen_fail(ZEN_ERR_INPUT, "%s holds preference pairs: set objective to dpo or orpo", c->data);
    if (r->s.data.n_masked == 0)
        return zen_fail(ZEN_ERR_INPUT, "%s: no target token has loss_mask 1: there is nothing to train on", c->data);
    int64_t seqs = zen_dataset_num_sequences(&r->s.data, T);
    int64_t n_val = 0;
    if (c->val_data[0]) {
        if ((rc = zen_dataset_open(&r->val_file, c->val_data, r->s.model.cfg.vocab)) ||
            (rc = zen_dataset_check_seq_len(&r->val_file, T)))
            return rc;
        r->val_file.doc_mask = c->doc_mask;
        r->val_data = &r->val_file;
        r->val_first = 0;
        r->val_count = zen_dataset_num_sequences(&r->val_file, T);
        if (r->val_count < 1)
            return zen_fail(ZEN_ERR_INPUT, "%s: fewer tokens than one sequence of %zu", c->val_data, T);
    } else {
        n_val = hold_out_tail(r, seqs);
    }
    int64_t n_train = seqs - n_val, per_step = c->batch_size * r->micro_per_step;
    if (n_train < per_step)
        return zen_fail(ZEN_ERR_INPUT,
                        "%s: %lld tokens make %lld training sequences of %zu (after holding out %lld), fewer "
                        "than one step's batch_size x grad_accum%s = %lld",
                        c->data, (long long)r->s.data.n_tokens, (long long)n_train, T, (long long)n_val,
                        r->dist->size > 1 ? " x ranks" : "", (long long)per_step);
    return plan_steps(r, n_train);
}

/* the memory plan of this run's steps */
static zen_plan run_plan(const run *r) {
    const zen_run_config *c = r->cfg;
    zen_plan p = zen_plan_make_quant(&r->s.model.cfg, r->s.be->name, r->s.be->compute, r->s.model.weight_bytes,
                                     r->s.model.main_dtype, r->s.model.base_quant, r->s.model.largest_quant, r->s.lora.r, r->s.lora.targets,
                                     (size_t)(r->pairs ? 2 : 1) * (size_t)c->batch_size, (size_t)c->seq_len,
                                     zen_run_config_recompute(c), r->s.lora.dropout > 0.0f);
    if (r->s.lora.dora) { /* DoRA: magnitudes and their AdamW state, the kept o/down outputs, dz */
        size_t dora = zen_dora_plan_bytes(&r->s.model.cfg, r->s.lora.targets, r->s.lora.r,
                                          (size_t)(r->pairs ? 2 : 1) * (size_t)c->batch_size * (size_t)c->seq_len,
                                          zen_run_config_recompute(c),
                                          c->lora_dropout > 0 && !c->lora_dora_clean_base);
        p.scratch += dora;
        p.total += dora;
    }
    if (r->pairs) { /* the shared prompts' attention layout */
        size_t sh = zen_shared_scratch_bytes(&r->s.model.cfg, 2 * (size_t)c->batch_size * (size_t)c->seq_len);
        p.scratch += sh;
        p.total += sh;
    }
    /* the micro-batch tree's partial gradient sums beside the adapter's own */
    size_t tree = (size_t)r->tree_depth * r->s.lora.num_params * sizeof(float);
    p.lora_grads += tree;
    p.total += tree;
    /* the sum across ranks: NCCL's half-vector on the device; on the CPU the
     * host copy and half-vector are the device's memory too */
    size_t half = (r->s.lora.num_params / 2 + 1) * sizeof(float), comm = 0;
    if (r->device_comm) comm = half;
    else if (r->dist->size > 1 && !r->s.be->memory_info) comm = r->s.lora.num_params * sizeof(float) + half;
    p.backend += comm;
    p.total += comm;
    return p;
}

/* On a device that reports its memory: refuses, in one line, a step whose
 * activations and scratch cannot fit in what is left after the weights and
 * the LoRA state, before anything is run. */
static int check_device_memory(const run *r) {
    if (!r->s.be->memory_info) return 0;
    size_t free_bytes, in_use;
    r->s.be->memory_info(r->s.be, &free_bytes, &in_use);
    zen_plan plan = run_plan(r);
    size_t need = plan.total > in_use ? plan.total - in_use : 0;
    if (need <= free_bytes) return 0;
    char n[32], f[32], t[32];
    zen_format_bytes(n, sizeof n, need);
    zen_format_bytes(f, sizeof f, free_bytes);
    zen_format_bytes(t, sizeof t, plan.total);
    return zen_fail(ZEN_ERR_INPUT, "device %s: a step of batch_size %ld x seq_len %ld needs %s more (plan %s in all) but "
                    "%s are free; %s", r->s.be->name, r->cfg->batch_size, r->cfg->seq_len, n, t, f,
                    zen_run_config_recompute(r->cfg) ? "lower seq_len or batch_size (grad_accum keeps the tokens per step)"
                                                     : "set recompute=true, or lower seq_len or batch_size");
}

static void print_summary(run *r, long start_step) {
    const zen_run_config *c = r->cfg;
    const zen_config *m = &r->s.model.cfg;
    long long total = zen_config_param_count(m);
    zen_plan plan = run_plan(r);
    char w[32], l[32], a[32], sc[32], lg[32], t[32];
    zen_format_bytes(w, sizeof w, plan.weights);
    zen_format_bytes(l, sizeof l, plan.lora_params + plan.lora_grads + plan.optimizer);
    zen_format_bytes(a, sizeof a, plan.saved_acts);
    zen_format_bytes(sc, sizeof sc, plan.scratch);
    zen_format_bytes(lg, sizeof lg, plan.logits);
    zen_format_bytes(t, sizeof t, plan.total);
    zen_report_line(&r->report, "zen train: model %s: %d layers, hidden %d, heads %d/%d x %d, ffn %d, vocab %d, %s; "
                    "%lld parameters (%s)", c->model, m->layers, m->hidden, m->heads, m->kv_heads, m->head_dim,
                    m->intermediate, m->vocab, m->tied ? "tied head" : "untied head", total,
                    zen_dtype_name(r->s.model.main_dtype));
    zen_report_line(&r->report, "  %s r=%d alpha=%g (scale %g%s) dropout %g on %s: %zu trainable (%.3f%% of %lld)",
                    r->s.lora.dora ? "DoRA" : "LoRA", r->s.lora.r, r->s.lora.alpha, r->s.lora.scale,
                    r->s.lora.rslora ? ", rsLoRA" : "", r->s.lora.dropout,
                    c->lora_targets, r->s.lora.num_params, 100.0 * (double)r->s.lora.num_params / (double)total, total);
    if (r->pairs) {
        const zen_pref_opts *po = &r->pref.opts;
        zen_report_line(&r->report, "  data %s: %lld preference pairs (%lld tokens), sequences up to %ld; training on "
                        "%lld, validation %lld%s", c->data, (long long)zen_pairs_count(&r->s.data),
                        (long long)r->s.data.n_tokens, c->seq_len, (long long)r->order.count, (long long)r->val_count,
                        c->val_data[0] ? " (from val_data)" : (r->val_count ? " (held-out tail)" : ""));
        if (po->objective == ZEN_OBJECTIVE_DPO)
            zen_report_line(&r->report, "  objective dpo (%s, beta %g); reference: %s%s; the prompt %s", c->dpo_loss,
                            po->beta, r->pref.ref ? "the starting adapter, frozen" : "the base model (the adapter off)",
                            c->dpo_precompute_ref ? ", precomputed before step 1" : ", run in each step",
                            strcmp(c->pair_layout, "shared") ? "run for each completion" : "run once per pair");
        else
            zen_report_line(&r->report, "  objective orpo (beta %g; NLL over %s); the prompt %s", po->beta,
                            po->nll_prompt ? "prompt + chosen" : "the chosen completion",
                            strcmp(c->pair_layout, "shared") ? "run for each completion" : "run once per pair");
        if (c->adapter[0]) zen_report_line(&r->report, "  starting from the adapter %s", c->adapter);
    } else {
        zen_report_line(&r->report, "  data %s: %lld tokens, %lld sequences of %ld; training on %lld, validation %lld%s",
                        c->data, (long long)r->s.data.n_tokens,
                        (long long)zen_dataset_num_sequences(&r->s.data, (size_t)c->seq_len), c->seq_len,
                        (long long)r->order.count, (long long)r->val_count,
                        c->val_data[0] ? " (from val_data)" : (r->val_count ? " (held-out tail)" : ""));
    }
    char ranks[64] = "";
    if (r->dist->size > 1) snprintf(ranks, sizeof ranks, " x %d ranks", r->dist->size);
    zen_report_line(&r->report, "  %ld steps/epoch of %ld sequences (batch %ld x accum %ld%s = %ld tokens); %ld steps, "
                    "lr %g %s, warm-up %ld", r->steps_per_epoch, c->batch_size * r->micro_per_step, c->batch_size,
                    c->grad_accum, ranks, c->batch_size * r->micro_per_step * c->seq_len, r->total_steps, c->lr,
                    c->schedule, c->warmup_steps);
    if (r->dist->size > 1 || r->device_comm)
        zen_report_line(&r->report, "  data parallel: %d ranks over MPI, rank r runs micro-batches r, r + %d, ...; "
                        "gradients summed in a fixed order %s (equal to one process with grad_accum %ld); "
                        "rank 0 writes %s", r->dist->size, r->dist->size,
                        r->device_comm ? "over NCCL" : "over MPI through host memory", r->micro_per_step, c->out_dir);
    zen_report_line(&r->report, "  device %s: %s", r->s.be->name, r->s.be->info);
    zen_report_line(&r->report, "  memory plan (recompute %s): weights %s, LoRA+grads+AdamW %s, activations %s, "
                    "scratch %s, logits %s; total %s", zen_run_config_recompute(c) ? "on" : "off", w, l, a, sc, lg, t);
    if (start_step > 0) zen_report_line(&r->report, "  resuming at step %ld", start_step);
    if (r->resume_note) zen_report_line(&r->report, "  %s", r->resume_note);
}

/* Micro-batch j (step's micro-batch m) of pairs: forward, losses and (with
 * backward) its share of the step's gradient; its metric sums go to
 * micro_sums[m]. The step's pairs and NLL tokens are in micro_sums' last row. */
/* the batch's reference log-probabilities from a precomputed table (NULL: computed in the step) */
static const double *batch_ref(run *r, const zen_pair_batch *b, const double *table) {
    if (!table) return NULL;
    for (size_t g = 0; g < b->groups; g++)
        r->pair_ref[2 * g] = table[2 * b->group_id[g]], r->pair_ref[2 * g + 1] = table[2 * b->group_id[g] + 1];
    return r->pair_ref;
}

static int pair_micro(run *r, long j, long m, uint64_t seed, int backward, double *loss) {
    const zen_pair_batch *b = &r->pmicro[j];
    r->pref.ref_logps = batch_ref(r, b, r->ref_table);
    double *totals = r->micro_sums + (size_t)r->micro_per_step * (ZEN_PM_COUNT + 2);
    zen_pref_sums sums;
    memset(&sums, 0, sizeof sums);
    int rc = zen_pref_run(&r->pref, b, &r->s.model, &r->s.lora, &r->s.acts, seed, totals[0], totals[1], backward, &sums);
    double *out = r->micro_sums + (size_t)m * (ZEN_PM_COUNT + 2);
    memcpy(out, sums.sum, sizeof sums.sum);
    out[ZEN_PM_COUNT] = sums.pairs, out[ZEN_PM_COUNT + 1] = sums.nll_tokens;
    *loss = 0.0;
    return rc;
}

/* The step's metrics from every micro-batch's sums (micro-batch order, the
 * same on any number of ranks): the loss, and the objective's names and values */
static double pair_metrics(run *r, long n_micro, const char **names, double *values, int *n) {
    zen_dist_merge_f64(r->micro_sums, (size_t)n_micro * (ZEN_PM_COUNT + 2));
    zen_pref_sums s;
    memset(&s, 0, sizeof s);
    for (long m = 0; m < n_micro; m++) {
        const double *v = r->micro_sums + (size_t)m * (ZEN_PM_COUNT + 2);
        for (int i = 0; i < ZEN_PM_COUNT; i++) s.sum[i] += v[i];
        s.pairs += v[ZEN_PM_COUNT];
        s.nll_tokens += v[ZEN_PM_COUNT + 1];
    }
    *n = zen_pref_metrics(&r->pref.opts, &s, names, values);
    return values[0];
}

/* The gradient of this rank's micro-batches j0, j0 + stride, ... (n of them;
 * local index j is the step's micro-batch rank + ranks * j) into
 * grad_sums[level], and their loss sums into *loss, summed in dist.h's tree:
 * the first half by the lowest bit of j, then the second, then added. Each
 * micro-batch runs into a zeroed buffer (the adapter's gradient pointer is
 * pointed at it), so no sum depends on the order micro-batches ran in. */
static int micro_tree(run *r, long step, long j0, long stride, long n, int level, size_t count, double *loss) {
    const zen_run_config *c = r->cfg;
    if (n == 1) {
        long m = r->dist->rank + (long)r->dist->size * j0;
        uint64_t seed = c->lora_dropout > 0 ? dropout_seed(c->seed, step, m) : 0;
        r->s.lora.grads = r->grad_sums[level];
        zen_lora_zero_grads(&r->s.lora);
        if (r->pairs) return pair_micro(r, j0, m, seed, 1, loss);
        return zen_batch_run(&r->micro[j0], &r->s.model, &r->s.lora, &r->s.acts, 1.0f / (float)count, seed, loss);
    }
    double first = 0.0, second = 0.0;
    int rc = micro_tree(r, step, j0, 2 * stride, (n + 1) / 2, level, count, &first);
    if (!rc) rc = micro_tree(r, step, j0 + stride, 2 * stride, n / 2, level + 1, count, &second);
    if (!rc) r->s.be->add(r->s.be, r->grad_sums[level], r->grad_sums[level], r->grad_sums[level + 1], r->s.lora.num_params);
    *loss = first + second;
    return rc;
}

/* the step's gradient (and *sum) over the ranks, in the tree's order */
static int sum_across_ranks(run *r, double *sum, int64_t count) {
    if (count == 0) zen_lora_zero_grads(&r->s.lora);
    if (r->device_comm && count > 0) { /* the ranks' sums, in the tree's order, GPU to GPU */
        int rc = zen_dist_agree(r->s.be->comm_tree_sum(r->s.be, r->s.lora.grads, r->s.lora.num_params));
        if (rc) return rc;
        *sum = zen_dist_tree_sum_f64(*sum);
    } else if (r->dist->size > 1 && count > 0) { /* the same through host memory over MPI */
        zk_backend *be = r->s.be;
        size_t bytes = r->s.lora.num_params * sizeof(float);
        be->download(be, r->host_grads, r->s.lora.grads, bytes);
        zen_dist_tree_sum_f32(r->host_grads, r->s.lora.num_params, r->host_grads + r->s.lora.num_params);
        be->upload(be, r->s.lora.grads, r->host_grads, bytes);
        *sum = zen_dist_tree_sum_f64(*sum);
    }
    return 0;
}

/* pairs [(in_epoch * M + m) * batch_size, ...) of the epoch's order into micro-batch j of this rank */
static int read_pair_micro(run *r, zen_pair_batch *b, const zen_dataset *d, int64_t first, int64_t n, const int64_t *ids) {
    int prompt_loss = r->pref.opts.objective == ZEN_OBJECTIVE_ORPO && r->pref.opts.nll_prompt;
    zen_pair_batch_clear(b);
    int rc = 0;
    for (int64_t i = 0; i < n && !rc; i++) rc = zen_pair_batch_add_pair(b, d, ids ? ids[i] : first + i, prompt_loss);
    return rc;
}

/* a step of preference pairs: the micro-batches' pairs, the step's pair
 * and NLL-token counts (over every rank) before any forward pass, then the
 * micro-batch tree as for SFT */
static int pair_step(run *r, long step, double *loss, size_t *tokens) {
    const zen_run_config *c = r->cfg;
    long epoch = step / r->steps_per_epoch, in_epoch = step % r->steps_per_epoch;
    int64_t *ids = zen_malloc((size_t)c->batch_size * sizeof(int64_t));
    int rc = ids ? 0 : ZEN_ERR_INTERNAL;
    int64_t counts[2] = {0, 0}; /* completion rows, NLL rows */
    double nll = 0.0;
    for (long j = 0; j < c->grad_accum && !rc; j++) {
        long m = r->dist->rank + (long)r->dist->size * j;
        for (long b = 0; b < c->batch_size; b++)
            ids[b] = zen_seq_order_get(&r->order, epoch, (in_epoch * r->micro_per_step + m) * c->batch_size + b);
        rc = read_pair_micro(r, &r->pmicro[j], &r->s.data, 0, c->batch_size, ids);
        if (!rc) nll += zen_pref_nll_tokens(&r->pref.opts, &r->pmicro[j]);
        for (size_t i = 0; !rc && i < r->pmicro[j].N; i++) counts[0] += r->pmicro[j].row_kind[i] >= 0;
    }
    free(ids);
    if ((rc = zen_dist_agree(rc))) return rc;
    counts[1] = (int64_t)nll;
    zen_dist_sum_i64(counts, 2);
    memset(r->micro_sums, 0, (size_t)(r->micro_per_step + 1) * (ZEN_PM_COUNT + 2) * sizeof(double));
    double *totals = r->micro_sums + (size_t)r->micro_per_step * (ZEN_PM_COUNT + 2);
    totals[0] = (double)(c->batch_size * r->micro_per_step), totals[1] = (double)counts[1];
    double unused = 0.0;
    rc = micro_tree(r, step, 0, 1, c->grad_accum, 0, 1, &unused);
    r->s.lora.grads = r->grad_sums[0];
    if (!rc) rc = zk_status(r->s.be);
    if ((rc = zen_dist_agree(rc))) return rc;
    if ((rc = sum_across_ranks(r, &unused, 1))) return rc;
    *loss = pair_metrics(r, r->micro_per_step, r->pref_names, r->pref_values, &r->n_pref);
    *tokens = (size_t)counts[0];
    return 0;
}

/* runs one step's micro-batches (this rank's share): the loss and the
 * gradients of the whole step, on every rank */
static int train_step(run *r, long step, double *loss, size_t *tokens) {
    const zen_run_config *c = r->cfg;
    long epoch = step / r->steps_per_epoch, in_epoch = step % r->steps_per_epoch;
    int rc = 0;
    if (r->pairs) return pair_step(r, step, loss, tokens);
    for (long j = 0; j < c->grad_accum && !rc; j++) {
        long m = r->dist->rank + (long)r->dist->size * j;
        for (long b = 0; b < c->batch_size && !rc; b++) {
            int64_t pos = (in_epoch * r->micro_per_step + m) * c->batch_size + b;
            rc = zen_batch_read_row(&r->micro[j], &r->s.data, (size_t)b, zen_seq_order_get(&r->order, epoch, pos));
        }
    }
    if ((rc = zen_dist_agree(rc))) return rc;
    /* the step's target count over every rank, before any forward pass: 1/count scales the gradients */
    int64_t count = 0;
    for (long j = 0; j < c->grad_accum; j++) count += (int64_t)zen_batch_mask_count(&r->micro[j]);
    zen_dist_sum_i64(&count, 1);
    double sum = 0.0;
    if (count > 0) rc = micro_tree(r, step, 0, 1, c->grad_accum, 0, (size_t)count, &sum);
    r->s.lora.grads = r->grad_sums[0];
    if (!rc) rc = zk_status(r->s.be);
    if ((rc = zen_dist_agree(rc))) return rc;
    if ((rc = sum_across_ranks(r, &sum, count))) return rc;
    *loss = count ? sum / (double)count : NAN;
    *tokens = (size_t)count;
    return rc;
}

/* the validation pairs in batches of batch_size (rank r runs batches r, r + ranks, ...) */
static int evaluate_pairs(run *r, double *loss) {
    const zen_run_config *c = r->cfg;
    int64_t batches = (r->val_count + c->batch_size - 1) / c->batch_size;
    double *sums = zen_calloc((size_t)batches * (ZEN_PM_COUNT + 2) + 1, sizeof(double));
    double *saved = r->micro_sums;
    int rc = sums ? 0 : ZEN_ERR_INTERNAL;
    for (int64_t bi = r->dist->rank; bi < batches && !rc; bi += r->dist->size) {
        int64_t first = r->val_first + bi * c->batch_size, n = r->val_count - bi * c->batch_size;
        if (n > c->batch_size) n = c->batch_size;
        rc = read_pair_micro(r, &r->pmicro[0], r->val_data, first, n, NULL);
        zen_pref_sums s;
        memset(&s, 0, sizeof s);
        r->pref.ref_logps = batch_ref(r, &r->pmicro[0], r->val_data == &r->s.data ? r->ref_table : r->val_ref_table);
        if (!rc) rc = zen_pref_run(&r->pref, &r->pmicro[0], &r->s.model, &r->s.lora, &r->s.acts, 0, 1.0, 1.0, 0, &s);
        double *out = sums + (size_t)bi * (ZEN_PM_COUNT + 2);
        memcpy(out, s.sum, sizeof s.sum);
        out[ZEN_PM_COUNT] = s.pairs, out[ZEN_PM_COUNT + 1] = s.nll_tokens;
    }
    if ((rc = zen_dist_agree(rc))) {
        free(sums);
        return rc;
    }
    const char *names[ZEN_PM_COUNT];
    int n;
    r->micro_sums = sums;
    *loss = pair_metrics(r, (long)batches, names, r->eval_pref_values, &n);
    r->micro_sums = saved;
    free(sums);
    return 0;
}

static int evaluate_val(run *r, double *loss) {
    size_t n;
    if (r->pairs) return evaluate_pairs(r, loss);
    return zen_evaluate(&r->s.model, &r->s.lora, &r->s.acts, r->val_data, r->val_first, r->val_count, loss, &n);
}

/* What out_dir already holds decides what this run may do there:
 * - a checkpoint: only --resume continues it (a fresh run is refused);
 * - a finished run's adapter without a checkpoint: refused either way, so a
 *   finished adapter and its metrics are never overwritten;
 * - nothing: a fresh run; --resume starts one too, saying so. */
static int check_out_dir(run *r, int resume, long latest) {
    const zen_run_config *c = r->cfg;
    char *adapter = zen_path_join(c->out_dir, "adapter_model.safetensors");
    int finished = adapter && zen_file_exists(adapter);
    free(adapter);
    if (!resume && latest >= 0)
        return zen_fail(ZEN_ERR_INPUT, "%s already holds checkpoint-%ld: continue it with --resume, or choose another --out",
                        c->out_dir, latest);
    if (latest < 0 && finished)
        return zen_fail(ZEN_ERR_INPUT, "%s already holds a finished run (adapter_model.safetensors) and no checkpoint%s; "
                        "choose another --out or remove it", c->out_dir, resume ? " to resume from" : "");
    if (resume && latest < 0) r->resume_note = "no checkpoint to resume from: starting at step 0";
    return 0;
}

/* the checkpoint's recipe and data position against this run's */
static int check_resumed(run *r, zen_run_config *saved, const zen_train_state *st, long latest) {
    const zen_run_config *c = r->cfg;
    /* checkpoints from before dtype was resolved say "auto", which then meant
     * f32 on the CPU and bf16 on CUDA */
    if (!strcmp(saved->dtype, "auto")) strcpy(saved->dtype, strcmp(saved->device, "cuda") ? "f32" : "bf16");
    static const char *const may_change[] = {"max_steps", "epochs", NULL}; /* extending a run is allowed */
    char diffs[2048], origin[ZEN_PATH_MAX + 64];
    /* Another number of ranks continues the same run when it keeps the
     * step's micro-batches (ranks x grad_accum): the sums are the same. */
    long saved_ranks = st->ranks > 0 ? st->ranks : 1;
    if (saved_ranks != r->dist->size) {
        if (saved_ranks * saved->grad_accum != r->micro_per_step)
            return zen_fail(ZEN_ERR_INPUT, "--resume: %s/checkpoint-%ld was saved by %ld rank%s x grad_accum %ld = %ld "
                            "micro-batches per step, this run has %d x %ld = %ld; resume with ranks x grad_accum = %ld",
                            c->out_dir, latest, saved_ranks, saved_ranks == 1 ? "" : "s", saved->grad_accum,
                            saved_ranks * saved->grad_accum, r->dist->size, c->grad_accum, r->micro_per_step,
                            saved_ranks * saved->grad_accum);
        saved->grad_accum = c->grad_accum;
    }
    if (zen_run_config_trajectory_diffs(saved, c, may_change, diffs, sizeof diffs) > 0)
        return zen_fail(ZEN_ERR_INPUT, "--resume: config %s differ from %s/checkpoint-%ld; a resumed run must use the "
                        "recipe it started with", diffs, c->out_dir, latest);
    snprintf(origin, sizeof origin, "%s/checkpoint-%ld/trainer_state.json", c->out_dir, latest);
    if (st->data_tokens && st->data_tokens != (long)r->s.data.n_tokens)
        return zen_fail(ZEN_ERR_INPUT, "--resume: %s holds %lld tokens but the run was saved training on %ld; a "
                        "resumed run must read the data it started with", c->data, (long long)r->s.data.n_tokens,
                        st->data_tokens);
    return zen_checkpoint_check_position(st, origin, r->total_steps, r->steps_per_epoch);
}

/* Rank 0's adapter, AdamW moments and state to every rank, so all start the
 * step loop from the same numbers (a resumed checkpoint is read by rank 0 alone). */
static void share_start(run *r, zen_train_state *st) {
    if (r->dist->size == 1) return;
    zk_backend *be = r->s.be;
    size_t bytes = r->s.lora.num_params * sizeof(float);
    float *bufs[3] = {r->s.lora.params, r->opt.m, r->opt.v};
    for (int i = 0; i < 3; i++) {
        if (r->writer) be->download(be, r->host_grads, bufs[i], bytes);
        zen_dist_bcast(r->host_grads, bytes);
        if (!r->writer) be->upload(be, bufs[i], r->host_grads, bytes);
    }
    zen_dist_bcast(&r->opt.step, sizeof r->opt.step);
    zen_dist_bcast(st, sizeof *st);
}

/* out_dir, on rank 0: one run per directory from before anything is read or
 * written there, and what it already holds (the newest checkpoint, or -1) */
static int claim_out_dir(run *r, int resume, long *latest) {
    const zen_run_config *c = r->cfg;
    int rc;
    r->created_out = !zen_file_exists(c->out_dir);
    if ((rc = zen_mkdir_p(c->out_dir)) || (rc = zen_run_lock(c->out_dir, &r->lock_fd))) return rc;
    *latest = zen_checkpoint_latest(c->out_dir);
    return check_out_dir(r, resume, *latest);
}

/* what every rank opens and checks for itself: the model, the data, the adapter and AdamW */
static int open_everything(run *r) {
    const zen_run_config *c = r->cfg;
    int rc;
    if ((rc = zen_session_open(&r->s, c->device, r->dtype_asked, c->base_quant, c->model))) return rc;
    if ((rc = open_data(r))) return rc;
    unsigned targets;
    if ((rc = zen_lora_parse_targets(c->lora_targets, &targets))) return rc;
    if (c->adapter[0]) { /* continuing an adapter: its shape, this run's dropout */
        if ((rc = zen_session_load_adapter(&r->s, c->adapter))) return rc;
        r->s.lora.dropout = (float)c->lora_dropout;
    } else if ((rc = zen_session_fresh_adapter(&r->s, (int)c->lora_r, (float)c->lora_alpha, c->lora_rslora,
                                               (float)c->lora_dropout, targets, (uint64_t)c->seed, c->lora_dora))) {
        return rc;
    }
    if ((rc = zen_lora_alloc_grads(&r->s.lora))) return rc;
    r->s.lora.dora_clean_base = c->lora_dora_clean_base;
    /* DPO's reference: the adapter being continued, frozen (a second small LoRA set), else the base */
    if (r->pref.opts.objective == ZEN_OBJECTIVE_DPO && c->adapter[0]) {
        if ((rc = zen_session_load_reference(&r->s, c->adapter))) return rc;
        r->pref.ref = &r->s.ref;
    }
    if ((rc = zen_adamw_create(&r->opt, r->s.be, r->s.lora.num_params, (float)c->beta1, (float)c->beta2, (float)c->eps,
                               (float)c->weight_decay, (float)c->grad_clip)))
        return rc;
    /* the micro-batch tree's partial sums, and the host copy for the sum across ranks */
    while ((1L << r->tree_depth) < c->grad_accum) r->tree_depth++;
    if (!(r->grad_sums = zen_calloc((size_t)r->tree_depth + 1, sizeof(float *)))) return ZEN_ERR_INTERNAL;
    r->grad_sums[0] = r->s.lora.grads;
    size_t bytes = r->s.lora.num_params * sizeof(float);
    for (int i = 1; i <= r->tree_depth; i++)
        if (!(r->grad_sums[i] = r->s.be->alloc(r->s.be, bytes))) return ZEN_ERR_INTERNAL;
    if (r->dist->size > 1 && !(r->host_grads = zen_malloc(bytes + (r->s.lora.num_params / 2 + 1) * sizeof(float))))
        return ZEN_ERR_INTERNAL;
    return 0;
}

/* Ranks on a backend that sums across ranks itself (CUDA with NCCL) join
 * its communicator, rank 0's id handed out over MPI; ZEN_NCCL=0 keeps the
 * sums on the host path. */
static int join_device_comm(run *r) {
    zk_backend *be = r->s.be;
    const char *env = getenv("ZEN_NCCL");
    if (!r->dist->mpi || !be->comm_join || (env && !strcmp(env, "0"))) return 0;
    unsigned char id[ZK_COMM_ID_BYTES] = {0};
    int rc = r->writer ? be->comm_make_id(be, id) : 0;
    if ((rc = zen_dist_agree(rc))) return rc;
    zen_dist_bcast(id, sizeof id);
    if ((rc = zen_dist_agree(be->comm_join(be, id, r->dist->rank, r->dist->size, r->s.lora.num_params)))) return rc;
    r->device_comm = 1;
    return 0;
}

/* the schedule, the micro-batch buffers and the activations */
static int prepare_steps(run *r) {
    const zen_run_config *c = r->cfg;
    int rc;
    r->schedule.lr = c->lr;
    r->schedule.warmup_steps = c->warmup_steps;
    r->schedule.total_steps = r->total_steps;
    r->schedule.min_lr_ratio = c->min_lr_ratio;
    zen_schedule_parse(c->schedule, &r->schedule.kind);
    if (r->pairs) {
        size_t rows = 2 * (size_t)c->batch_size * (size_t)c->seq_len;
        r->pmicro = zen_calloc((size_t)c->grad_accum, sizeof(zen_pair_batch));
        r->pair_ref = zen_calloc(2 * (size_t)c->batch_size + 1, sizeof(double));
        if (!r->pair_ref) return ZEN_ERR_INTERNAL;
        r->micro_sums = zen_calloc((size_t)(r->micro_per_step + 1) * (ZEN_PM_COUNT + 2), sizeof(double));
        if (!r->pmicro || !r->micro_sums) return ZEN_ERR_INTERNAL;
        for (long m = 0; m < c->grad_accum; m++)
            if ((rc = zen_pair_batch_alloc(&r->pmicro[m], rows, !strcmp(c->pair_layout, "shared")))) return rc;
        if ((rc = check_device_memory(r))) return rc;
        return zen_session_make_pair_acts(&r->s, (size_t)c->batch_size, (size_t)c->seq_len, zen_run_config_recompute(c));
    }
    r->micro = zen_calloc((size_t)c->grad_accum, sizeof(zen_batch));
    if (!r->micro) return ZEN_ERR_INTERNAL;
    for (long m = 0; m < c->grad_accum; m++)
        if ((rc = zen_batch_alloc(&r->micro[m], (size_t)c->batch_size, (size_t)c->seq_len))) return rc;
    if ((rc = check_device_memory(r))) return rc;
    return zen_session_make_acts(&r->s, (size_t)c->batch_size, (size_t)c->seq_len, zen_run_config_recompute(c));
}

/* Continuations of sample_prompts by the model as trained so far, greedy
 * and sampled (Qwen3's recommended sampling, seeded by the step), to
 * OUT/samples.jsonl and the progress output: the adaptation as it happens. */
#define SAMPLE_TOKENS 48

static int collect(void *ctx, int32_t id) { return zen_ids_push(ctx, id); }

static int one_sample(run *r, const zen_ids *prompt, const zen_sampling *s, uint64_t seed, char **text) {
    zen_kv kv;
    zen_ids out = {0};
    float *logits = zen_malloc((size_t)r->s.model.cfg.vocab * sizeof(float));
    int32_t stop[2] = {zen_tokenizer_eos(r->tok), zen_tokenizer_token_id(r->tok, "<|im_end|>")}, last;
    size_t made, len = 0;
    int ended, rc = logits ? zen_kv_create(&kv, &r->s.model, &r->s.lora, prompt->len + SAMPLE_TOKENS, prompt->len)
                           : ZEN_ERR_INTERNAL;
    zen_rng rng;
    zen_rng_seed(&rng, seed);
    if (!rc) {
        if (!(rc = zen_kv_feed(&kv, prompt->ids, prompt->len, logits)))
            rc = zen_kv_generate(&kv, logits, s, &rng, SAMPLE_TOKENS, stop, 2, collect, &out, &made, &last, &ended);
        zen_kv_free(&kv);
    }
    /* the text, without a final stop token and without ids the tokenizer has no text for */
    size_t keep = 0;
    for (size_t i = 0; i < out.len; i++)
        if (zen_tokenizer_kind(r->tok, out.ids[i]) && out.ids[i] != stop[0] && out.ids[i] != stop[1])
            out.ids[keep++] = out.ids[i];
    if (!rc) rc = zen_tokenizer_decode(r->tok, out.ids, keep, text, &len);
    zen_ids_free(&out);
    free(logits);
    return rc;
}

static int write_samples(run *r, long step) {
    static const zen_sampling greedy = {0.0f, 1.0f, 0.0f, 0}, sampled = {0.6f, 0.95f, 0.0f, 20};
    int rc = 0, k = 0;
    for (const char *p = r->cfg->sample_prompts, *e; !rc && (e = strchr(p, ZEN_PROMPT_SEP)); p = e + 1, k++) {
        zen_ids prompt = {0};
        char *g = NULL, *s = NULL;
        rc = zen_tokenizer_encode(r->tok, p, (size_t)(e - p), 1, &prompt);
        if (!rc && !prompt.len) rc = zen_fail(ZEN_ERR_INPUT, "sample_prompts: prompt %d has no tokens", k + 1);
        if (!rc) rc = one_sample(r, &prompt, &greedy, 0, &g);
        if (!rc) rc = one_sample(r, &prompt, &sampled, (uint64_t)r->cfg->seed ^ ((uint64_t)step << 20) ^ (uint64_t)k, &s);
        if (!rc) {
            cJSON *o = cJSON_CreateObject();
            char *ptext = strndup(p, (size_t)(e - p));
            cJSON_AddNumberToObject(o, "step", (double)step);
            cJSON_AddStringToObject(o, "prompt", ptext ? ptext : "");
            cJSON_AddStringToObject(o, "greedy", g);
            cJSON_AddStringToObject(o, "sampled", s);
            char *line = cJSON_PrintUnformatted(o);
            if (!line || fprintf(r->samples, "%s\n", line) < 0 || fflush(r->samples))
                rc = zen_fail(ZEN_ERR_INTERNAL, "%s/samples.jsonl: write failed", r->cfg->out_dir);
            /* one line of the progress output: newlines shown as \n, cut at 100 bytes */
            char shown[128];
            size_t n = 0;
            for (const char *c = g; *c && n < 100; c++) {
                if (*c == '\n' && n + 2 < sizeof shown) shown[n++] = '\\', shown[n++] = 'n';
                else shown[n++] = *c;
            }
            shown[n] = '\0';
            zen_report_line(&r->report, "  sample %d (greedy): %s%s", k + 1, shown, strlen(g) > n ? "..." : "");
            free(line);
            free(ptext);
            cJSON_Delete(o);
        }
        free(g);
        free(s);
        zen_ids_free(&prompt);
    }
    return rc;
}

/* everything checked: only now does the run write into out_dir (rank 0) */
static int open_outputs(run *r, int resume, const zen_train_state *st) {
    const zen_run_config *c = r->cfg;
    char *text = zen_run_config_to_json(c);
    char *path = zen_path_join(c->out_dir, "train_config.json");
    int rc = text && path ? zen_write_text_file(path, text) : ZEN_ERR_INTERNAL;
    free(text);
    free(path);
    if (!rc && c->sample_every > 0 && !r->s.be->attention_cached_fwd)
        return zen_fail(ZEN_ERR_INPUT, "sample_every: generation runs on the CPU for now (device %s)", r->s.be->name);
    if (!rc && c->sample_every > 0) { /* the prompts' tokenizer, and where the samples go */
        if ((rc = zen_open_tokenizer(c->model, &r->tok)))
            return zen_fail(rc, "sample_every: the model's tokenizer: %s", zen_last_error());
        char *sp = zen_path_join(c->out_dir, "samples.jsonl");
        if (!sp || !(r->samples = fopen(sp, "a")))
            rc = zen_fail(ZEN_ERR_INPUT, "%s/samples.jsonl: cannot write", c->out_dir);
        free(sp);
    }
    if (rc) return rc;
    return zen_report_open(&r->report, c->out_dir, resume ? st->step : -1);
}

/* Each stage ends with every rank's status: a failure on any rank (a file
 * missing on one machine) ends them all, with its one line. */
static int setup(run *r, int resume, zen_train_state *st) {
    int rc = 0, n = r->dist->size;
    long latest = -1;
    memset(st, 0, sizeof *st);
    if (r->dist->size & (r->dist->size - 1))
        return zen_dist_agree(zen_fail(ZEN_ERR_INPUT, "zen train over %d ranks: the number of ranks must be a power of "
                                       "two (1, 2, 4, 8, ...), so that they sum gradients in the order one process "
                                       "does", n));
    if (r->writer) rc = claim_out_dir(r, resume, &latest);
    if ((rc = zen_dist_agree(rc))) return rc;
    zen_dist_bcast(&latest, sizeof latest);
    if ((rc = zen_dist_agree(open_everything(r))) || (rc = join_device_comm(r))) return rc;
    if (r->writer && resume && latest >= 0) {
        zen_run_config saved;
        if (!(rc = zen_checkpoint_load(r->cfg->out_dir, latest, st, &r->s.lora, &r->s.model.cfg, &r->opt, &saved)))
            rc = check_resumed(r, &saved, st, latest);
    }
    if ((rc = zen_dist_agree(rc))) return rc;
    share_start(r, st);
    if ((rc = zen_dist_agree(prepare_steps(r)))) return rc;
    /* DoRA: the base's row norms; a fresh adapter's magnitudes start as ||W + s B A|| */
    if ((rc = zen_dist_agree(zen_session_dora_setup(&r->s, !r->cfg->adapter[0] && !(resume && latest >= 0)))))
        return rc;
    if (r->pairs && r->cfg->dpo_precompute_ref) { /* one reference pass over the data before step 1, kept beside it */
        const zen_lora *ref = r->pref.ref;
        size_t B = (size_t)r->cfg->batch_size;
        rc = zen_ref_logps_get(&r->s.model, r->cfg->model, ref, &r->s.acts, &r->s.data, &r->pmicro[0], B, &r->ref_table,
                               r->writer ? stderr : NULL);
        if (!rc && r->val_data == &r->val_file)
            rc = zen_ref_logps_get(&r->s.model, r->cfg->model, ref, &r->s.acts, &r->val_file, &r->pmicro[0], B,
                                   &r->val_ref_table, r->writer ? stderr : NULL);
        if ((rc = zen_dist_agree(rc))) return rc;
    }
    if (r->writer) rc = open_outputs(r, resume, st);
    else zen_report_silent(&r->report);
    return zen_dist_agree(rc);
}

/* the last good checkpoint, for messages that end a run */
static void last_checkpoint(const run *r, long last_saved, char *buf, size_t cap) {
    if (last_saved > 0)
        snprintf(buf, cap, "the last good checkpoint is %s/checkpoint-%ld (continue with --resume)", r->cfg->out_dir,
                 last_saved);
    else
        snprintf(buf, cap, "no checkpoint was saved before it");
}

/* rank 0 writes; every rank learns how it went */
static int save_checkpoint(run *r, const zen_train_state *st, long *last_saved) {
    int rc = r->writer ? zen_checkpoint_save(r->cfg->out_dir, st, &r->s.lora, &r->s.model.cfg, &r->opt, r->cfg) : 0;
    if (rc) { /* the cause, and what survives it */
        char cause[2048], where[ZEN_PATH_MAX + 160];
        snprintf(cause, sizeof cause, "%s", zen_last_error());
        last_checkpoint(r, *last_saved, where, sizeof where);
        rc = zen_fail(rc, "step %ld: saving checkpoint-%ld failed: %s; %s", st->step, st->step, cause, where);
    }
    if ((rc = zen_dist_agree(rc))) return rc;
    if (r->writer) zen_checkpoint_prune(r->cfg->out_dir, r->cfg->keep_checkpoints);
    *last_saved = st->step;
    return 0;
}

int zen_train(const zen_run_config *given, int resume) {
    /* dtype "auto" resolved to what this machine computes in: the precision
     * is part of the trajectory (saved, and checked on --resume) */
    zen_run_config resolved = *given;
    const zen_run_config *c = &resolved;
    zen_dtype compute;
    int rc = zk_resolve_compute(given->device, given->dtype, &compute, NULL);
    if (rc) return rc;
    snprintf(resolved.dtype, sizeof resolved.dtype, "%s", compute == ZEN_BF16 ? "bf16" : "f32");
    run r;
    memset(&r, 0, sizeof r);
    r.cfg = c;
    r.dtype_asked = given->dtype;
    r.lock_fd = -1;
    r.dist = zen_dist_get();
    r.writer = r.dist->rank == 0;
    r.micro_per_step = c->grad_accum * r.dist->size;
    zen_objective_parse(c->objective, &r.pref.opts.objective);
    zen_dpo_loss_parse(c->dpo_loss, &r.pref.opts.loss);
    r.pref.opts.beta = c->beta;
    r.pref.opts.label_smoothing = c->label_smoothing;
    r.pref.opts.nll_prompt = c->orpo_nll_prompt;
    r.pairs = r.pref.opts.objective != ZEN_OBJECTIVE_SFT;
    zen_train_state st;
    rc = setup(&r, resume, &st);
    if (rc) {
        run_free(&r);
        return rc;
    }
    print_summary(&r, st.step);
    double tokens_per_step = (double)(c->batch_size * r.micro_per_step * c->seq_len);
    /* tokens/s counts the steps' own time; elapsed and ETA are wall-clock,
     * evaluation and checkpoints included (elapsed continues across resumes) */
    double session_start = now_s(), resumed_elapsed = st.elapsed_s;
    double interval_tokens = 0, interval_real = 0, interval_seconds = 0, eval_loss = NAN;
    long first_step = st.step, last_saved = st.step;
    char where[ZEN_PATH_MAX + 160];
    int stop_signal = 0;
    zen_stop_signal_install();
    for (long step = st.step; step < r.total_steps && !rc; step++) {
        double t0 = now_s(), loss;
        size_t tokens;
        float lr = (float)zen_schedule_lr(&r.schedule, step);
        rc = train_step(&r, step, &loss, &tokens);
        double gnorm = !rc && tokens ? zen_grad_norm(r.s.be, r.s.lora.grads, r.s.lora.num_params) : 0.0;
        if (!rc) rc = zk_status(r.s.be); /* an op that failed (out of memory, a device fault) */
        if (rc) {
            last_checkpoint(&r, last_saved, where, sizeof where);
            char cause[1024];
            snprintf(cause, sizeof cause, "%s", zen_last_error());
            rc = zen_fail(rc, "step %ld: %s; %s", step + 1, cause, where);
            break;
        }
        if (tokens && (!isfinite(loss) || !isfinite(gnorm))) {
            /* bad weights in the files are the user's input (exit 2, naming the
             * tensor); otherwise the run diverged (exit 1) */
            char cause[2048];
            rc = zen_session_nonfinite(&r.s, isfinite(loss) ? "the gradient norm" : "the loss",
                                       isfinite(loss) ? gnorm : loss);
            snprintf(cause, sizeof cause, "%s", zen_last_error());
            last_checkpoint(&r, last_saved, where, sizeof where);
            if (rc == ZEN_ERR_INPUT)
                rc = zen_fail(rc, "step %ld: %s; %s", step + 1, cause, where);
            else
                rc = zen_fail(rc, "step %ld: non-finite %s (loss %g, grad norm %g) with finite weights (an "
                              "overflow: the run diverged, or the weights are too large); stopped before the "
                              "update; %s", step + 1, isfinite(loss) ? "gradient" : "loss",
                              loss, gnorm, where);
            break;
        }
        if (tokens) zen_adamw_update(&r.opt, r.s.lora.params, r.s.lora.grads, gnorm, lr);
        if (tokens && (rc = zen_dora_refresh(&r.s.lora, &r.s.model))) break; /* DoRA: n from the new A and B */
        interval_seconds += now_s() - t0;
        interval_tokens += tokens_per_step;
        interval_real += (double)tokens;
        st.step = step + 1;
        st.epoch = st.step / r.steps_per_epoch;
        st.batch_in_epoch = st.step % r.steps_per_epoch;
        st.tokens_seen += tokens_per_step;
        st.data_tokens = (long)r.s.data.n_tokens;
        st.ranks = r.dist->size;
        int last = st.step == r.total_steps;
        int evaluate = r.val_data && ((c->eval_every > 0 && st.step % c->eval_every == 0) || last);
        eval_loss = NAN;
        if (evaluate && (rc = evaluate_val(&r, &eval_loss))) break;
        double session = now_s() - session_start;
        st.elapsed_s = resumed_elapsed + session;
        zen_step_record rec = {.step = st.step, .total_steps = r.total_steps, .epoch = step / r.steps_per_epoch,
                               .loss = loss, .lr = lr, .grad_norm = gnorm, .elapsed_s = st.elapsed_s,
                               .eta_s = session / (double)(st.step - first_step) * (double)(r.total_steps - st.step),
                               .tokens_per_s = interval_tokens / interval_seconds,
                               .real_tokens_per_s = interval_real / interval_seconds, .eval_loss = eval_loss,
                               .mem_peak = r.s.be->memory_peak ? (double)r.s.be->memory_peak(r.s.be) : NAN,
                               .n_extra = r.pairs ? r.n_pref : 0, .extra_names = r.pref_names, .extra = r.pref_values,
                               .eval_extra = r.eval_pref_values};
        if (!tokens) zen_report_line(&r.report, "step %ld: no target token with loss_mask 1; no update", st.step);
        int log_now = st.step % c->log_every == 0 || evaluate || last;
        if (log_now) {
            if ((rc = zen_dist_agree(zen_report_metrics(&r.report, &rec)))) break;
            interval_seconds = interval_tokens = interval_real = 0;
        }
        zen_report_progress(&r.report, &rec, log_now);
        if (evaluate && r.pairs)
            zen_report_line(&r.report, "  eval loss %.4f, rewards/accuracies %.3f, rewards/margins %.4f on %lld "
                            "validation pairs", eval_loss, r.eval_pref_values[3], r.eval_pref_values[4],
                            (long long)r.val_count);
        else if (evaluate)
            zen_report_line(&r.report, "  eval loss %.4f (ppl %.3f) on %lld validation sequences", eval_loss,
                            exp(eval_loss), (long long)r.val_count);
        if (c->sample_every > 0 && (st.step % c->sample_every == 0 || last) &&
            (rc = zen_dist_agree(r.writer ? write_samples(&r, st.step) : 0)))
            break;
        /* a checkpoint every save_every steps, and always after the last one */
        if (((c->save_every > 0 && st.step % c->save_every == 0) || last) && (rc = save_checkpoint(&r, &st, &last_saved)))
            break;
        if ((stop_signal = zen_dist_max(zen_stop_signal_pending()))) { /* a signal to any rank stops them all */
            if (last_saved != st.step && (rc = save_checkpoint(&r, &st, &last_saved))) break;
            rc = 128 + stop_signal;
            zen_fail(rc, "stopped by %s after step %ld of %ld; saved %s/checkpoint-%ld", stop_signal == SIGINT ? "SIGINT" : "SIGTERM", st.step,
                     r.total_steps, c->out_dir, st.step);
            break;
        }
    }
    zen_stop_signal_restore();
    if (!rc) rc = zen_dist_agree(r.writer ? zen_lora_save_peft(&r.s.lora, &r.s.model.cfg, c->out_dir, c->model, ZEN_F32) : 0);
    if (!rc)
        zen_report_line(&r.report, "done: %ld steps in %.1f s; adapter in %s (adapter_model.safetensors), metrics in "
                        "%s/metrics.jsonl", st.step, st.elapsed_s, c->out_dir, c->out_dir);
    if (!rc && r.s.be->memory_peak) {
        char peak[32], planned[32];
        zen_format_bytes(peak, sizeof peak, r.s.be->memory_peak(r.s.be));
        zen_format_bytes(planned, sizeof planned, run_plan(&r).total);
        zen_report_line(&r.report, "  peak %s memory %s (plan %s; the driver's context comes on top)", r.s.be->name, peak,
                        planned);
    }
    run_free(&r);
    return rc;
}
