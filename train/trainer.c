/* train/trainer.c: the training loop.
 *
 * Step s (0-based) uses, for micro-batch m and row b, position
 * (s % steps_per_epoch * grad_accum + m) * batch_size + b of epoch
 * s / steps_per_epoch's permutation of the training sequences (the last
 * partial batch of an epoch is dropped). The loss of a step is the sum over
 * all its micro-batches of the masked token losses divided by the count of
 * masked-in targets over all of them, so accumulation equals one big batch.
 * Everything random is a function of (seed, step), so a resumed run repeats
 * an uninterrupted one bit for bit (with the same thread count). */
#include <math.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../data/dataset.h"
#include "../data/seq_order.h"
#include "../model/decoder.h"
#include "../optim/adamw.h"
#include "../optim/schedule.h"
#include "../util/error.h"
#include "../util/file.h"
#include "../util/rng.h"
#include "checkpoint.h"
#include "evaluate.h"
#include "report.h"
#include "session.h"
#include "run_lock.h"
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
    zen_adamw opt;
    zen_dataset val_file;
    const zen_dataset *val_data; /* the file the validation sequences come from, or NULL */
    int64_t val_first, val_count;
    zen_seq_order order;
    zen_batch *micro;            /* [grad_accum] */
    long steps_per_epoch, total_steps;
    zen_schedule schedule;
    zen_report report;
    int lock_fd;                 /* OUT/zen.lock, held for the whole run */
    int created_out;             /* this run made out_dir */
    const char *resume_note;     /* a line for the summary, or NULL */
} run;

static void run_free(run *r) {
    zen_report_close(&r->report);
    if (r->micro)
        for (long m = 0; m < r->cfg->grad_accum; m++) zen_batch_free(&r->micro[m]);
    free(r->micro);
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
static int open_data(run *r) {
    const zen_run_config *c = r->cfg;
    size_t T = (size_t)c->seq_len;
    int rc = zen_session_open_data(&r->s, c->data, c->doc_mask, T);
    if (rc) return rc;
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
    } else if (c->val_fraction > 0) {
        n_val = (int64_t)ceil(c->val_fraction * (double)seqs);
        r->val_data = &r->s.data;
        r->val_first = seqs - n_val; /* the last sequences of the file are held out */
        r->val_count = n_val;
    }
    int64_t n_train = seqs - n_val, per_step = c->batch_size * c->grad_accum;
    if (n_train < per_step)
        return zen_fail(ZEN_ERR_INPUT,
                        "%s: %lld tokens make %lld training sequences of %zu (after holding out %lld), fewer "
                        "than one step's batch_size x grad_accum = %lld",
                        c->data, (long long)r->s.data.n_tokens, (long long)n_train, T, (long long)n_val,
                        (long long)per_step);
    r->steps_per_epoch = (long)(n_train / per_step);
    r->total_steps = c->max_steps > 0 ? c->max_steps : c->epochs * r->steps_per_epoch;
    return zen_seq_order_init(&r->order, 0, n_train, (uint64_t)c->seed, 1);
}

/* the memory plan of this run's steps */
static zen_plan run_plan(const run *r) {
    const zen_run_config *c = r->cfg;
    return zen_plan_make(&r->s.model.cfg, r->s.be->name, r->s.be->compute, r->s.model.weight_bytes, r->s.model.main_dtype,
                         r->s.lora.r, r->s.lora.targets, (size_t)c->batch_size, (size_t)c->seq_len,
                         zen_run_config_recompute(c), r->s.lora.dropout > 0.0f);
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
    zen_report_line(&r->report, "  LoRA r=%d alpha=%g (scale %g%s) dropout %g on %s: %zu trainable (%.3f%% of %lld)",
                    r->s.lora.r, r->s.lora.alpha, r->s.lora.scale, r->s.lora.rslora ? ", rsLoRA" : "", r->s.lora.dropout,
                    c->lora_targets, r->s.lora.num_params, 100.0 * (double)r->s.lora.num_params / (double)total, total);
    zen_report_line(&r->report, "  data %s: %lld tokens, %lld sequences of %ld; training on %lld, validation %lld%s",
                    c->data, (long long)r->s.data.n_tokens,
                    (long long)zen_dataset_num_sequences(&r->s.data, (size_t)c->seq_len), c->seq_len,
                    (long long)r->order.count, (long long)r->val_count,
                    c->val_data[0] ? " (from val_data)" : (r->val_count ? " (held-out tail)" : ""));
    zen_report_line(&r->report, "  %ld steps/epoch of %ld sequences (batch %ld x accum %ld = %ld tokens); %ld steps, "
                    "lr %g %s, warm-up %ld", r->steps_per_epoch, c->batch_size * c->grad_accum, c->batch_size,
                    c->grad_accum, c->batch_size * c->grad_accum * c->seq_len, r->total_steps, c->lr, c->schedule,
                    c->warmup_steps);
    zen_report_line(&r->report, "  device %s: %s", r->s.be->name, r->s.be->info);
    zen_report_line(&r->report, "  memory plan (recompute %s): weights %s, LoRA+grads+AdamW %s, activations %s, "
                    "scratch %s, logits %s; total %s", zen_run_config_recompute(c) ? "on" : "off", w, l, a, sc, lg, t);
    if (start_step > 0) zen_report_line(&r->report, "  resuming at step %ld", start_step);
    if (r->resume_note) zen_report_line(&r->report, "  %s", r->resume_note);
}

/* runs one step's micro-batches: loss and accumulated gradients */
static int train_step(run *r, long step, double *loss, size_t *tokens) {
    const zen_run_config *c = r->cfg;
    long epoch = step / r->steps_per_epoch, in_epoch = step % r->steps_per_epoch;
    int rc = 0;
    size_t count = 0;
    for (long m = 0; m < c->grad_accum && !rc; m++)
        for (long b = 0; b < c->batch_size && !rc; b++) {
            int64_t pos = (in_epoch * c->grad_accum + m) * c->batch_size + b;
            rc = zen_batch_read_row(&r->micro[m], &r->s.data, (size_t)b, zen_seq_order_get(&r->order, epoch, pos));
        }
    for (long m = 0; m < c->grad_accum && !rc; m++) count += zen_batch_mask_count(&r->micro[m]);
    zen_lora_zero_grads(&r->s.lora);
    double sum = 0.0;
    for (long m = 0; m < c->grad_accum && !rc && count > 0; m++) {
        double part;
        uint64_t seed = c->lora_dropout > 0 ? dropout_seed(c->seed, step, m) : 0;
        rc = zen_batch_run(&r->micro[m], &r->s.model, &r->s.lora, &r->s.acts, 1.0f / (float)count, seed, &part);
        sum += part;
    }
    *loss = count ? sum / (double)count : NAN;
    *tokens = count;
    return rc;
}

static int evaluate_val(run *r, double *loss) {
    size_t n;
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

static int setup(run *r, int resume, zen_train_state *st) {
    const zen_run_config *c = r->cfg;
    int rc;
    memset(st, 0, sizeof *st);
    /* one run per directory, from before anything is read or written there */
    r->created_out = !zen_file_exists(c->out_dir);
    if ((rc = zen_mkdir_p(c->out_dir)) || (rc = zen_run_lock(c->out_dir, &r->lock_fd))) return rc;
    long latest = zen_checkpoint_latest(c->out_dir);
    if ((rc = check_out_dir(r, resume, latest))) return rc;
    if ((rc = zen_session_open(&r->s, c->device, r->dtype_asked, c->model))) return rc;
    if ((rc = open_data(r))) return rc;
    unsigned targets;
    if ((rc = zen_lora_parse_targets(c->lora_targets, &targets))) return rc;
    if ((rc = zen_session_fresh_adapter(&r->s, (int)c->lora_r, (float)c->lora_alpha, c->lora_rslora,
                                        (float)c->lora_dropout, targets, (uint64_t)c->seed)) ||
        (rc = zen_lora_alloc_grads(&r->s.lora)))
        return rc;
    if ((rc = zen_adamw_create(&r->opt, r->s.be, r->s.lora.num_params, (float)c->beta1, (float)c->beta2, (float)c->eps,
                               (float)c->weight_decay, (float)c->grad_clip)))
        return rc;
    if (resume && latest >= 0) {
        zen_run_config saved;
        if ((rc = zen_checkpoint_load(c->out_dir, latest, st, &r->s.lora, &r->s.model.cfg, &r->opt, &saved)) ||
            (rc = check_resumed(r, &saved, st, latest)))
            return rc;
    }
    r->schedule.lr = c->lr;
    r->schedule.warmup_steps = c->warmup_steps;
    r->schedule.total_steps = r->total_steps;
    r->schedule.min_lr_ratio = c->min_lr_ratio;
    zen_schedule_parse(c->schedule, &r->schedule.kind);
    r->micro = zen_calloc((size_t)c->grad_accum, sizeof(zen_batch));
    if (!r->micro) return ZEN_ERR_INTERNAL;
    for (long m = 0; m < c->grad_accum; m++)
        if ((rc = zen_batch_alloc(&r->micro[m], (size_t)c->batch_size, (size_t)c->seq_len))) return rc;
    if ((rc = check_device_memory(r))) return rc;
    if ((rc = zen_session_make_acts(&r->s, (size_t)c->batch_size, (size_t)c->seq_len, zen_run_config_recompute(c))))
        return rc;
    /* everything checked: only now does the run write into out_dir */
    char *text = zen_run_config_to_json(c);
    char *path = zen_path_join(c->out_dir, "train_config.json");
    rc = text && path ? zen_write_text_file(path, text) : ZEN_ERR_INTERNAL;
    free(text);
    free(path);
    if (rc) return rc;
    return zen_report_open(&r->report, c->out_dir, resume ? st->step : -1);
}

/* the last good checkpoint, for messages that end a run */
static void last_checkpoint(const run *r, long last_saved, char *buf, size_t cap) {
    if (last_saved > 0)
        snprintf(buf, cap, "the last good checkpoint is %s/checkpoint-%ld (continue with --resume)", r->cfg->out_dir,
                 last_saved);
    else
        snprintf(buf, cap, "no checkpoint was saved before it");
}

static int save_checkpoint(run *r, const zen_train_state *st, long *last_saved) {
    int rc = zen_checkpoint_save(r->cfg->out_dir, st, &r->s.lora, &r->s.model.cfg, &r->opt, r->cfg);
    if (rc) { /* the cause, and what survives it */
        char cause[2048], where[ZEN_PATH_MAX + 160];
        snprintf(cause, sizeof cause, "%s", zen_last_error());
        last_checkpoint(r, *last_saved, where, sizeof where);
        return zen_fail(rc, "step %ld: saving checkpoint-%ld failed: %s; %s", st->step, st->step, cause, where);
    }
    zen_checkpoint_prune(r->cfg->out_dir, r->cfg->keep_checkpoints);
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
    zen_train_state st;
    rc = setup(&r, resume, &st);
    if (rc) {
        run_free(&r);
        return rc;
    }
    print_summary(&r, st.step);
    double tokens_per_step = (double)(c->batch_size * c->grad_accum * c->seq_len);
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
        interval_seconds += now_s() - t0;
        interval_tokens += tokens_per_step;
        interval_real += (double)tokens;
        st.step = step + 1;
        st.epoch = st.step / r.steps_per_epoch;
        st.batch_in_epoch = st.step % r.steps_per_epoch;
        st.tokens_seen += tokens_per_step;
        st.data_tokens = (long)r.s.data.n_tokens;
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
                               .mem_peak = r.s.be->memory_peak ? (double)r.s.be->memory_peak(r.s.be) : NAN};
        if (!tokens) zen_report_line(&r.report, "step %ld: no target token with loss_mask 1; no update", st.step);
        int log_now = st.step % c->log_every == 0 || evaluate || last;
        if (log_now) {
            if ((rc = zen_report_metrics(&r.report, &rec))) break;
            interval_seconds = interval_tokens = interval_real = 0;
        }
        zen_report_progress(&r.report, &rec, log_now);
        if (evaluate) zen_report_line(&r.report, "  eval loss %.4f (ppl %.3f) on %lld validation sequences", eval_loss,
                                      exp(eval_loss), (long long)r.val_count);
        /* a checkpoint every save_every steps, and always after the last one */
        if (((c->save_every > 0 && st.step % c->save_every == 0) || last) && (rc = save_checkpoint(&r, &st, &last_saved)))
            break;
        if ((stop_signal = zen_stop_signal_pending())) {
            if (last_saved != st.step && (rc = save_checkpoint(&r, &st, &last_saved))) break;
            rc = 128 + stop_signal;
            zen_fail(rc, "stopped by %s after step %ld of %ld; saved %s/checkpoint-%ld", stop_signal == SIGINT ? "SIGINT" : "SIGTERM", st.step,
                     r.total_steps, c->out_dir, st.step);
            break;
        }
    }
    zen_stop_signal_restore();
    if (!rc) rc = zen_lora_save_peft(&r.s.lora, &r.s.model.cfg, c->out_dir, c->model, ZEN_F32);
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
