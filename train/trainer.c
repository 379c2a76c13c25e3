/* train/trainer.c: the training loop, through the objective interface
 * (objectives/objective.h): it never asks which objective runs.
 *
 * A step has M = grad_accum x ranks micro-batches (ranks: the data-parallel
 * processes, 1 without MPI); rank r runs micro-batches m = r, r + ranks, ...
 * Step s (0-based) uses, for micro-batch m and item b, position
 * (s % steps_per_epoch * M + m) * batch_size + b of epoch
 * s / steps_per_epoch's permutation of the training items (sequences or
 * pairs; the last partial batch of an epoch is dropped). Before any gradient,
 * every micro-batch's pre (target counts, ...) is gathered in micro-batch
 * order over the ranks and added into the step's totals, which normalise the
 * loss, so accumulation equals one big batch. Each micro-batch's gradient is
 * computed on its own and the M of them are summed pairwise in the fixed
 * order of dist.h, within a rank and then across ranks, so N ranks give
 * exactly the numbers of one process with N x the accumulation; the metric
 * sums too are added in micro-batch order. Everything random is a function of
 * (seed, step, m), so a resumed run repeats an uninterrupted one bit for bit
 * (with the same thread count per process). Rank 0 alone writes into out_dir. */
#include <math.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "../data/dataset.h"
#include "../data/seq_order.h"
#include "../model/decoder.h"
#include "../model/dora.h"
#include "../model/generate.h"
#include "../objectives/objective.h"
#include "../optim/adamw.h"
#include "../optim/schedule.h"
#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "../util/rng.h"
#include "checkpoint.h"
#include "dist.h"
#include "evaluate.h"
#include "report.h"
#include "run_lock.h"
#include "session.h"
#include "stop_signal.h"
#include "trainer.h"

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
    zen_objective obj;           /* what a step optimises, and its micro-batches */
    zen_objective_env env;       /* what they run on */
    zen_adamw opt;
    zen_dataset val_file;
    const zen_dataset *val_data; /* the file the validation items come from, or NULL */
    int64_t val_first, val_count;
    zen_seq_order order;
    const zen_dist *dist;        /* this rank among the data-parallel ranks */
    int writer;                  /* rank 0: the one that writes into out_dir */
    long micro_per_step;         /* M = grad_accum x ranks */
    int64_t *ids;                /* [batch_size] a micro-batch's items */
    double *pre, *totals;        /* [M][n_pre] each micro-batch's pre, and their sum over the step [n_pre] */
    double *micro_sums;          /* [M][n_sums] each micro-batch's metric sums */
    double *step_sums;           /* [n_sums] their sum, in micro-batch order */
    double *values, *eval_values; /* [n_metrics] the step's metrics (loss first), and the last evaluation's */
    int tree_depth;              /* ceil(log2(grad_accum)) */
    float **grad_sums;           /* [tree_depth + 1] device [num_params]: the micro-batch tree's partial sums;
                                  * [0] is the adapter's own gradient buffer */
    float *host_grads;           /* [num_params + num_params / 2 + 1] the gradients on their way across ranks,
                                  * and the halves received (NULL alone) */
    int device_comm;             /* the backend sums across ranks itself (NCCL), device to device */
    zen_tokenizer *tok;          /* rank 0 with sample_every: the model's tokenizer */
    FILE *samples;               /* OUT/samples.jsonl, appended */
    long steps_per_epoch, total_steps;
    long repeat;                 /* steps that take the same items (the objective's steps_per_batch) */
    zen_schedule schedule;
    zen_report report;
    int lock_fd;                 /* OUT/zen.lock, held for the whole run */
    int created_out;             /* this run made out_dir */
    const char *resume_note;     /* a line for the summary, or NULL */
} run;

static void run_free(run *r) {
    zen_report_close(&r->report);
    if (r->samples) fclose(r->samples);
    zen_tokenizer_free(r->tok);
    zen_objective_free(&r->obj);
    free(r->ids);
    free(r->pre);
    free(r->totals);
    free(r->micro_sums);
    free(r->step_sums);
    free(r->values);
    free(r->eval_values);
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

/* val_fraction: the last items of the training file are held out for validation; returns how many */
static int64_t hold_out_tail(run *r, int64_t items) {
    if (!(r->cfg->val_fraction > 0)) return 0;
    int64_t n_val = (int64_t)ceil(r->cfg->val_fraction * (double)items);
    r->val_data = &r->s.data;
    r->val_first = items - n_val;
    r->val_count = n_val;
    return n_val;
}

/* the training items (the objective opens and checks the file), the
 * validation items (val_data, or the held-out tail), steps per epoch (whole
 * steps of batch_size x micro-batches), the run's steps, and the shuffled
 * order of the training items */
static int open_data(run *r) {
    const zen_run_config *c = r->cfg;
    const zen_objective_ops *ops = r->obj.ops;
    int vocab = r->s.model.cfg.vocab;
    int64_t items, n_val = 0;
    int rc = ops->open(&r->obj, &r->s.data, c->data, vocab, &items);
    if (rc) return rc;
    if (r->s.data.n_masked == 0 && ops->records != ZEN_RECORDS_PROMPTS) /* prompts: the targets are drawn */
        return zen_fail(ZEN_ERR_INPUT, "%s: no target token has loss_mask 1: there is nothing to train on", c->data);
    if (c->val_data[0]) {
        if ((rc = ops->open(&r->obj, &r->val_file, c->val_data, vocab, &r->val_count))) return rc;
        r->val_data = &r->val_file;
        r->val_first = 0;
    } else {
        n_val = hold_out_tail(r, items);
    }
    int64_t n_train = items - n_val, per_step = c->batch_size * r->micro_per_step;
    if (n_train < per_step)
        return zen_fail(ZEN_ERR_INPUT, "%s: %lld training %s of up to %ld tokens (after holding out %lld), fewer than "
                        "one step's batch_size x grad_accum%s = %lld", c->data, (long long)n_train, ops->item, c->seq_len,
                        (long long)n_val, r->dist->size > 1 ? " x ranks" : "", (long long)per_step);
    r->repeat = ops->steps_per_batch ? ops->steps_per_batch(&c->obj) : 1;
    if (c->save_every % r->repeat)
        return zen_fail(ZEN_ERR_INPUT, "config key 'save_every' = %ld: objective %s runs each batch for %ld steps and "
                        "saves at a batch's start; use a multiple of %ld", c->save_every, ops->name, r->repeat,
                        r->repeat);
    r->steps_per_epoch = (long)(n_train / per_step) * r->repeat;
    r->total_steps = c->max_steps > 0 ? c->max_steps : c->epochs * r->steps_per_epoch;
    return zen_seq_order_init(&r->order, 0, n_train, (uint64_t)c->seed, 1);
}

/* the memory plan of this run's steps */
static zen_plan run_plan(const run *r) {
    const zen_run_config *c = r->cfg;
    size_t rows = zen_objective_rows(&r->obj), T = (size_t)c->seq_len;
    zen_plan p = zen_plan_make_quant(&r->s.model.cfg, r->s.be->name, r->s.be->compute, r->s.model.weight_bytes,
                                     r->s.model.main_dtype, r->s.model.base_quant, r->s.model.largest_quant, r->s.lora.r,
                                     r->s.lora.targets, rows / T, T, zen_run_config_recompute(c),
                                     r->s.lora.dropout > 0.0f);
    if (r->s.lora.dora) { /* DoRA: magnitudes and their AdamW state, the kept o/down outputs, dz */
        size_t dora = zen_dora_plan_bytes(&r->s.model.cfg, r->s.lora.targets, r->s.lora.r, rows,
                                          zen_run_config_recompute(c),
                                          c->lora_dropout > 0 && !c->lora_dora_clean_base);
        p.scratch += dora;
        p.total += dora;
    }
    size_t layout = zen_objective_scratch_bytes(&r->obj, &r->s.model.cfg); /* e.g. the shared prompts' layout */
    p.scratch += layout;
    p.total += layout;
    /* sampling before the step (GRPO): its cache and logits, as zen grad --plan counts them */
    size_t cache, gen_logits;
    zen_objective_generation_bytes(r->obj.ops, &r->obj.opts, &r->s.model.cfg, r->s.be->compute,
                                   (size_t)c->batch_size, T, &cache, &gen_logits);
    p.generation = cache + gen_logits;
    p.total += p.generation;
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
    const zen_objective_ops *ops = r->obj.ops;
    long long total = zen_config_param_count(m);
    zen_plan plan = run_plan(r);
    char w[32], l[32], a[32], sc[32], lg[32], t[32], line[ZEN_PATH_MAX + 512];
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
    zen_report_line(&r->report, "  data %s: %lld tokens, %lld %s of up to %ld tokens; training on %lld, validation "
                    "%lld%s", c->data, (long long)r->s.data.n_tokens, (long long)(r->order.count + (r->val_data ==
                    &r->s.data ? r->val_count : 0)), ops->item, c->seq_len, (long long)r->order.count,
                    (long long)r->val_count, c->val_data[0] ? " (from val_data)" : (r->val_count ? " (held-out tail)" : ""));
    char reference[ZEN_PATH_MAX + 64] = "the base model (the adapter off)";
    if (r->s.has_ref && !c->reference[0]) snprintf(reference, sizeof reference, "the starting adapter, frozen");
    else if (r->s.has_ref) snprintf(reference, sizeof reference, "the adapter %s, frozen", c->reference);
    ops->describe(&r->obj, reference, line, sizeof line);
    zen_report_line(&r->report, "  %s", line);
    if (c->adapter[0]) zen_report_line(&r->report, "  starting from the adapter %s", c->adapter);
    char ranks[64] = "";
    if (r->dist->size > 1) snprintf(ranks, sizeof ranks, " x %d ranks", r->dist->size);
    zen_report_line(&r->report, "  %ld steps/epoch of %ld %s (batch %ld x accum %ld%s = %ld tokens); %ld steps, "
                    "lr %g %s, warm-up %ld", r->steps_per_epoch, c->batch_size * r->micro_per_step, ops->item,
                    c->batch_size, c->grad_accum, ranks, c->batch_size * r->micro_per_step * c->seq_len,
                    r->total_steps, c->lr, c->schedule, c->warmup_steps);
    if (r->dist->size > 1 || r->device_comm)
        zen_report_line(&r->report, "  data parallel: %d ranks over MPI, rank r runs micro-batches r, r + %d, ...; "
                        "gradients summed in a fixed order %s (equal to one process with grad_accum %ld); "
                        "rank 0 writes %s", r->dist->size, r->dist->size,
                        r->device_comm ? "over NCCL" : "over MPI through host memory", r->micro_per_step, c->out_dir);
    zen_report_line(&r->report, "  device %s: %s", r->s.be->name, r->s.be->info);
    char gen[64] = "";
    if (plan.generation) {
        char g[32];
        zen_format_bytes(g, sizeof g, plan.generation);
        snprintf(gen, sizeof gen, ", generation %s", g);
    }
    zen_report_line(&r->report, "  memory plan (recompute %s): weights %s, LoRA+grads+AdamW %s, activations %s, "
                    "scratch %s, logits %s%s; total %s", zen_run_config_recompute(c) ? "on" : "off", w, l, a, sc, lg,
                    gen, t);
    if (start_step > 0) zen_report_line(&r->report, "  resuming at step %ld", start_step);
    if (r->resume_note) zen_report_line(&r->report, "  %s", r->resume_note);
}

/* The gradient of this rank's micro-batches j0, j0 + stride, ... (n of them;
 * local index j is the step's micro-batch rank + ranks * j) into
 * grad_sums[level], summed in dist.h's tree: the first half by the lowest bit
 * of j, then the second, then added. Each micro-batch runs into a zeroed
 * buffer (the adapter's gradient pointer is pointed at it), so no sum
 * depends on the order micro-batches ran in; its metric sums go to
 * micro_sums[m]. */
static int micro_tree(run *r, long step, long j0, long stride, long n, int level) {
    const zen_run_config *c = r->cfg;
    if (n == 1) {
        long m = r->dist->rank + (long)r->dist->size * j0;
        uint64_t seed = c->lora_dropout > 0 ? dropout_seed(c->seed, step, m) : 0;
        r->s.lora.grads = r->grad_sums[level];
        zen_lora_zero_grads(&r->s.lora);
        return r->obj.ops->run(&r->obj, (int)j0, &r->env, seed, 1, r->totals,
                               r->micro_sums + (size_t)m * (size_t)r->obj.ops->n_sums);
    }
    int rc = micro_tree(r, step, j0, 2 * stride, (n + 1) / 2, level);
    if (!rc) rc = micro_tree(r, step, j0 + stride, 2 * stride, n / 2, level + 1);
    if (!rc) r->s.be->add(r->s.be, r->grad_sums[level], r->grad_sums[level], r->grad_sums[level + 1], r->s.lora.num_params);
    return rc;
}

/* the step's gradient over the ranks, in the tree's order (a step without trained tokens: zero) */
static int sum_across_ranks(run *r, int any) {
    if (!any) zen_lora_zero_grads(&r->s.lora);
    if (r->device_comm && any) /* the ranks' sums, in the tree's order, GPU to GPU */
        return zen_dist_agree(r->s.be->comm_tree_sum(r->s.be, r->s.lora.grads, r->s.lora.num_params));
    if (r->dist->size > 1 && any) { /* the same through host memory over MPI */
        zk_backend *be = r->s.be;
        size_t bytes = r->s.lora.num_params * sizeof(float);
        be->download(be, r->host_grads, r->s.lora.grads, bytes);
        zen_dist_tree_sum_f32(r->host_grads, r->s.lora.num_params, r->host_grads + r->s.lora.num_params);
        be->upload(be, r->s.lora.grads, r->host_grads, bytes);
    }
    return 0;
}

/* per[M][n] gathered from every rank, added in micro-batch order into out[n] (sums: the objective's
 * combination, its maxima by max) */
static void add_in_order(const run *r, double *per, int n, double *out, int sums) {
    zen_dist_merge_f64(per, (size_t)r->micro_per_step * (size_t)n);
    if (sums) zen_objective_zero_sums(&r->obj, out);
    else memset(out, 0, (size_t)n * sizeof(double));
    for (long m = 0; m < r->micro_per_step; m++) {
        const double *one = per + (size_t)m * (size_t)n;
        if (sums) zen_objective_add_sums(&r->obj, out, one);
        else
            for (int k = 0; k < n; k++) out[k] += one[k];
    }
}

/* runs one step's micro-batches (this rank's share): the loss, the metrics
 * and the gradients of the whole step, on every rank; *tokens: the trained tokens */
static int train_step(run *r, long step, double *loss, double *tokens) {
    const zen_run_config *c = r->cfg;
    const zen_objective_ops *ops = r->obj.ops;
    long epoch = step / r->steps_per_epoch, in_epoch = step % r->steps_per_epoch / r->repeat; /* the batch */
    size_t np = (size_t)ops->n_pre, ns = (size_t)ops->n_sums;
    r->env.step = step; /* keys what an objective draws this step (GRPO's completions) */
    memset(r->pre, 0, (size_t)r->micro_per_step * np * sizeof(double));
    memset(r->micro_sums, 0, (size_t)r->micro_per_step * ns * sizeof(double));
    int rc = 0;
    for (long j = 0; j < c->grad_accum && !rc; j++) {
        long m = r->dist->rank + (long)r->dist->size * j;
        for (long b = 0; b < c->batch_size; b++)
            r->ids[b] = zen_seq_order_get(&r->order, epoch, (in_epoch * r->micro_per_step + m) * c->batch_size + b);
        rc = ops->load(&r->obj, (int)j, &r->s.data, r->ids, (size_t)c->batch_size);
        if (!rc) rc = ops->pre(&r->obj, (int)j, &r->env, r->pre + (size_t)m * np);
    }
    if ((rc = zen_dist_agree(rc))) return rc;
    /* the step's totals over every rank, before any gradient: they normalise the loss */
    add_in_order(r, r->pre, ops->n_pre, r->totals, 0);
    int any = r->totals[0] > 0;
    if (any) rc = micro_tree(r, step, 0, 1, c->grad_accum, 0);
    r->s.lora.grads = r->grad_sums[0];
    if (!rc) rc = zk_status(r->s.be);
    if ((rc = zen_dist_agree(rc))) return rc;
    if ((rc = sum_across_ranks(r, any))) return rc;
    add_in_order(r, r->micro_sums, ops->n_sums, r->step_sums, 1);
    ops->values(&r->obj, r->step_sums, r->values);
    *loss = any ? r->values[0] : NAN;
    *tokens = r->totals[0];
    return 0;
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
     * step's micro-batches (ranks x grad_accum): the sums are the same
     * (unless the objective's loss reads across the ranks, objective.h). */
    long saved_ranks = st->ranks > 0 ? st->ranks : 1;
    if (saved_ranks != r->dist->size) {
        if (r->obj.ops->ranks_in_loss)
            return zen_fail(ZEN_ERR_INPUT, "--resume: %s/checkpoint-%ld was saved by %ld rank%s and objective %s averages "
                            "across the ranks of a moment (its loss depends on their number); resume with %ld rank%s",
                            c->out_dir, latest, saved_ranks, saved_ranks == 1 ? "" : "s", r->obj.ops->name,
                            saved_ranks, saved_ranks == 1 ? "" : "s");
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

/* what every rank opens and checks for itself: the model, the objective and
 * its data, the adapter (and a reference), AdamW */
static int open_everything(run *r) {
    const zen_run_config *c = r->cfg;
    int rc;
    if ((rc = zen_session_open(&r->s, c->device, r->dtype_asked, c->base_quant, c->model))) return rc;
    const zen_objective_ops *ops = zen_objective_find(c->objective); /* checked by the run config */
    if ((rc = zen_objective_init(&r->obj, ops, &c->obj, zen_dist_ranks(), (size_t)c->batch_size, (size_t)c->seq_len,
                                 (int)c->grad_accum, c->doc_mask)))
        return rc;
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
    /* an objective's reference: config key reference (base, or an adapter), by default the adapter being
     * continued, frozen (a second small LoRA set), else the base */
    const char *reference = c->reference[0] ? c->reference : c->adapter[0] ? c->adapter : "base";
    if (ops->uses_reference && ops->uses_reference(&c->obj) && strcmp(reference, "base") &&
        (rc = zen_session_load_reference(&r->s, reference)))
        return rc;
    r->env = (zen_objective_env){&r->s.model, &r->s.lora, r->s.has_ref ? &r->s.ref : NULL, &r->s.acts,
                                 (uint64_t)c->seed, 0, NULL};
    if (ops->needs_tokenizer) { /* every rank: the objective decodes text (GRPO's rewards) */
        if ((rc = zen_open_tokenizer(c->model, &r->tok)))
            return zen_fail(rc, "objective %s: the model's tokenizer: %s", ops->name, zen_last_error());
        r->env.tokenizer = r->tok;
    }
    if ((rc = zen_adamw_create(&r->opt, r->s.be, r->s.lora.num_params, (float)c->beta1, (float)c->beta2, (float)c->eps,
                               (float)c->weight_decay, (float)c->grad_clip)))
        return rc;
    /* the step's buffers of pre, sums and metrics */
    size_t M = (size_t)r->micro_per_step;
    r->ids = zen_malloc((size_t)c->batch_size * sizeof(int64_t));
    r->pre = zen_calloc(M * (size_t)ops->n_pre, sizeof(double));
    r->totals = zen_calloc((size_t)ops->n_pre, sizeof(double));
    r->micro_sums = zen_calloc(M * (size_t)ops->n_sums, sizeof(double));
    r->step_sums = zen_calloc((size_t)ops->n_sums, sizeof(double));
    r->values = zen_calloc((size_t)r->obj.n_metrics, sizeof(double));
    r->eval_values = zen_calloc((size_t)r->obj.n_metrics, sizeof(double));
    if (!r->ids || !r->pre || !r->totals || !r->micro_sums || !r->step_sums || !r->values || !r->eval_values)
        return ZEN_ERR_INTERNAL;
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

/* the schedule and the activations */
static int prepare_steps(run *r) {
    const zen_run_config *c = r->cfg;
    int rc;
    r->schedule.lr = c->lr;
    r->schedule.warmup_steps = c->warmup_steps;
    r->schedule.total_steps = r->total_steps;
    r->schedule.min_lr_ratio = c->min_lr_ratio;
    zen_schedule_parse(c->schedule, &r->schedule.kind);
    if ((rc = check_device_memory(r))) return rc;
    return zen_objective_make_acts(&r->obj, &r->s.model, r->s.has_lora ? &r->s.lora : NULL,
                                   zen_run_config_recompute(c), &r->s.acts);
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

/* an objective's own samples of a logged step: each rank's micro-batches in turn, rank 0 first, appended to
 * the one file (every rank holds it open for appending; each flushes before the next one's turn), so N ranks
 * write the lines one process with N x the accumulation writes */
static int write_objective_samples(run *r, long step) {
    int rc = 0;
    for (int turn = 0; turn < r->dist->size && !rc; turn++)
        rc = zen_dist_agree(r->dist->rank == turn ? r->obj.ops->write_samples(&r->obj, &r->env, r->samples, step) : 0);
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
    if (!rc && c->sample_every > 0 && !r->s.be->attention_paged_fwd)
        return zen_fail(ZEN_ERR_INPUT, "sample_every: generation runs on the CPU for now (device %s)", r->s.be->name);
    if (!rc && c->sample_every > 0 && !r->tok && (rc = zen_open_tokenizer(c->model, &r->tok))) /* the prompts' */
        return zen_fail(rc, "sample_every: the model's tokenizer: %s", zen_last_error());
    if (!rc && (c->sample_every > 0 || r->obj.ops->write_samples)) { /* and where the samples go */
        char *sp = zen_path_join(c->out_dir, "samples.jsonl");
        if (!sp) rc = ZEN_ERR_INTERNAL;
        if (!rc && resume) rc = zen_truncate_jsonl_steps(sp, st->step); /* the steps a resumed run repeats */
        if (!rc && !(r->samples = fopen(sp, "a")))
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
    /* what the objective needs before step 1 (a reference pass over the data, kept beside it) */
    if (r->obj.ops->prepare &&
        (rc = zen_dist_agree(r->obj.ops->prepare(&r->obj, &r->env, r->cfg->model, &r->s.data,
                                                 r->val_data == &r->val_file ? &r->val_file : NULL,
                                                 r->writer ? stderr : NULL))))
        return rc;
    if (r->writer) rc = open_outputs(r, resume, st);
    else zen_report_silent(&r->report);
    if ((rc = zen_dist_agree(rc))) return rc;
    /* the other ranks append their own groups of an objective's samples (write_objective_samples) */
    if (!r->writer && r->obj.ops->write_samples) {
        char *sp = zen_path_join(r->cfg->out_dir, "samples.jsonl");
        if (!sp || !(r->samples = fopen(sp, "a")))
            rc = zen_fail(ZEN_ERR_INPUT, "%s/samples.jsonl: cannot write on rank %d", r->cfg->out_dir, r->dist->rank);
        free(sp);
    }
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
    zen_train_state st;
    rc = setup(&r, resume, &st);
    if (rc) {
        run_free(&r);
        return rc;
    }
    const zen_objective_ops *ops = r.obj.ops;
    print_summary(&r, st.step);
    double tokens_per_step = (double)(c->batch_size * r.micro_per_step * c->seq_len);
    /* tokens/s counts the steps' own time; elapsed and ETA are wall-clock,
     * evaluation and checkpoints included (elapsed continues across resumes) */
    double session_start = now_s(), resumed_elapsed = st.elapsed_s;
    double interval_tokens = 0, interval_real = 0, interval_seconds = 0;
    long first_step = st.step, last_saved = st.step;
    char where[ZEN_PATH_MAX + 160];
    int stop_signal = 0;
    zen_stop_signal_install();
    for (long step = st.step; step < r.total_steps && !rc; step++) {
        double t0 = now_s(), loss, tokens;
        float lr = (float)zen_schedule_lr(&r.schedule, step);
        rc = train_step(&r, step, &loss, &tokens);
        double gnorm = !rc && tokens > 0 ? zen_grad_norm(r.s.be, r.s.lora.grads, r.s.lora.num_params) : 0.0;
        if (!rc) rc = zk_status(r.s.be); /* an op that failed (out of memory, a device fault) */
        if (rc) {
            char cause[1024];
            snprintf(cause, sizeof cause, "%s", zen_last_error());
            /* a failure outside the run (a reward command): what the run has is kept first */
            if (zen_dist_max(r.obj.stop_after_checkpoint) && last_saved != st.step && st.step > 0) {
                int saved = save_checkpoint(&r, &st, &last_saved);
                if (saved) snprintf(cause + strlen(cause), sizeof cause - strlen(cause), " (and %s)", zen_last_error());
            }
            last_checkpoint(&r, last_saved, where, sizeof where);
            rc = zen_fail(rc, "step %ld: %s; %s", step + 1, cause, where);
            break;
        }
        if (tokens > 0 && (!isfinite(loss) || !isfinite(gnorm))) {
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
        if (tokens > 0) zen_adamw_update(&r.opt, r.s.lora.params, r.s.lora.grads, gnorm, lr);
        if (tokens > 0 && (rc = zen_dora_refresh(&r.s.lora, &r.s.model))) break; /* DoRA: n from the new A and B */
        interval_seconds += now_s() - t0;
        interval_tokens += tokens_per_step;
        interval_real += tokens;
        st.step = step + 1;
        st.epoch = st.step / r.steps_per_epoch;
        st.batch_in_epoch = st.step % r.steps_per_epoch;
        st.tokens_seen += tokens_per_step;
        st.data_tokens = (long)r.s.data.n_tokens;
        st.ranks = r.dist->size;
        int last = st.step == r.total_steps;
        int evaluate = r.val_data && ((c->eval_every > 0 && st.step % c->eval_every == 0) || last);
        double eval_tokens;
        if (evaluate && (rc = zen_evaluate(&r.obj, &r.env, r.val_data, r.val_first, r.val_count, r.eval_values,
                                           &eval_tokens)))
            break;
        double session = now_s() - session_start;
        st.elapsed_s = resumed_elapsed + session;
        zen_step_record rec = {.step = st.step, .total_steps = r.total_steps, .epoch = step / r.steps_per_epoch,
                               .loss = loss, .lr = lr, .grad_norm = gnorm, .elapsed_s = st.elapsed_s,
                               .eta_s = session / (double)(st.step - first_step) * (double)(r.total_steps - st.step),
                               .tokens_per_s = interval_tokens / interval_seconds,
                               .real_tokens_per_s = interval_real / interval_seconds,
                               .mem_peak = r.s.be->memory_peak ? (double)r.s.be->memory_peak(r.s.be) : NAN,
                               .n_metrics = r.obj.n_metrics, .n_train = r.obj.n_train, .names = r.obj.metrics,
                               .values = r.values, .eval_values = evaluate ? r.eval_values : NULL,
                               .shown = ops->shown, .n_shown = ops->n_shown};
        if (tokens == 0) zen_report_line(&r.report, "step %ld: no target token with loss_mask 1; no update", st.step);
        int log_now = st.step % c->log_every == 0 || evaluate || last;
        if (log_now) {
            if ((rc = zen_dist_agree(zen_report_metrics(&r.report, &rec)))) break;
            interval_seconds = interval_tokens = interval_real = 0;
        }
        zen_report_progress(&r.report, &rec, log_now);
        if (evaluate) zen_report_eval(&r.report, &rec, r.val_count, ops->item);
        if (c->sample_every > 0 && (st.step % c->sample_every == 0 || last) &&
            (rc = zen_dist_agree(r.writer ? write_samples(&r, st.step) : 0)))
            break;
        /* an objective's own samples of a logged step (GRPO's prompts, completions and rewards) */
        if (log_now && ops->write_samples && (rc = write_objective_samples(&r, st.step))) break;
        /* a checkpoint every save_every steps, and always after the last one */
        if (((c->save_every > 0 && st.step % c->save_every == 0) || last) && (rc = save_checkpoint(&r, &st, &last_saved)))
            break;
        /* a signal to any rank stops them all, at a batch's end (what a resumed run can continue exactly) */
        if (st.step % r.repeat == 0 && (stop_signal = zen_dist_max(zen_stop_signal_pending()))) {
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
