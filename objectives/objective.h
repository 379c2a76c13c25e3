/* objectives/objective.h: what a training step optimises, behind one
 * interface: a table of objectives (objectives/objective.c), each a small
 * struct of functions, as kernels/kernels.h describes a backend. zen train,
 * zen grad and zen eval hold a zen_objective and call through it; none of
 * them asks which objective runs.
 *
 * A step of M micro-batches (grad_accum x ranks; this rank holds n_micro of
 * them, local index j) runs:
 *   1. load(j, d, ids, n): the micro-batch's n items of dataset d (sequences,
 *      pairs), laid out as the objective runs them;
 *   2. pre(j) -> pre[n_pre]: what the loss needs from the whole step before
 *      any gradient (target counts; a quantity that forward passes give);
 *      the caller adds every micro-batch's pre in micro-batch order over all
 *      ranks into totals, so N ranks give one process's numbers bit for bit;
 *   3. run(j, totals, backward) -> sums[n_sums]: forward, loss and (with
 *      backward) the gradient of this micro-batch's share of the step's loss,
 *      added into lo->grads; the sums its metrics are made of;
 *   4. metrics(sums of every micro-batch, added in micro-batch order) -> the
 *      loss and TRL's named metrics.
 * In training every rank runs its j-th micro-batch at the same moment (run
 * with backward is called for the same j, in the same order, on every
 * rank), so run may call o->ranks' collectives there; an objective that
 * does (ranks_in_loss) is TRL on N GPUs rather than one process with N x
 * the accumulation. Evaluation (run without backward) spreads batches over
 * the ranks unevenly: no collective.
 * totals[0] is the step's trained tokens (targets that carry loss: what
 * tokens/s counts); a step with none makes no update. Evaluation is 1-4 on
 * held-out items without backward, each batch's pre its own totals.
 *
 * Adding an objective: a file here with its zen_objective_ops, one row in
 * objective.c's table, the options it reads (zen_objective_opts, the run
 * config table and zen grad's flags), its data format (data/records.h) and its
 * tests; README, "Adding an objective", walks through DPO's row. */
#ifndef ZEN_OBJECTIVE_H
#define ZEN_OBJECTIVE_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../data/dataset.h"
#include "../model/decoder.h"

/* The options objectives read; each is a run config key (README, Run
 * config), and zen grad's flags set the same. A key an objective does not
 * read must stay at its default (zen_objective_check says which). */
typedef struct {
    double beta;            /* "beta": DPO's beta (IPO's tau), ORPO's lambda; 0.1 */
    char dpo_loss[16];      /* "dpo.loss": sigmoid, ipo, robust, hinge */
    double label_smoothing; /* "label_smoothing": robust's epsilon, in [0, 0.5) */
    int orpo_nll_prompt;    /* "orpo.nll_prompt": ORPO's NLL covers the prompt too (TRL); 0: the completion only */
    int precompute_ref;     /* "dpo.precompute_ref": the reference's log-probabilities computed before step 1 */
    char pair_layout[8];    /* "pair_layout": shared (a prompt run once per group) or apart */
    double kto_desirable_weight, kto_undesirable_weight; /* "kto.desirable_weight", "kto.undesirable_weight": 1.0 */
    char kto_loss_type[24]; /* "kto.loss_type": kto or apo_zero_unpaired */
    int kto_precompute_ref; /* "kto.precompute_ref": the reference's log-probabilities computed before step 1 */
    /* GRPO (TRL's GRPOConfig names after "grpo."; objectives/grpo.c) */
    long grpo_num_generations;       /* G completions per prompt: 8 */
    long grpo_max_completion_length; /* 512 */
    double grpo_temperature, grpo_top_p, grpo_min_p; /* 1.0, 1.0, 0.0 */
    long grpo_top_k;                 /* 0: all */
    char grpo_scale_rewards[8];      /* group, batch or none */
    double grpo_epsilon, grpo_epsilon_high, grpo_delta; /* 0.2; epsilon_high 0: = epsilon; delta 0: none */
    char grpo_importance_sampling_level[12]; /* token or sequence (GSPO) */
    long grpo_num_iterations;        /* mu: steps a generation batch serves: 1 */
    double grpo_beta;                /* the KL's weight: 0.0 (no reference pass) */
    char grpo_loss_type[12];         /* dapo, grpo, bnpo or dr_grpo */
    int grpo_mask_truncated_completions;
    char rewards[4096];              /* "rewards": GRPO's reward functions, a JSON list (objectives/rewards.h) */
    char reward_weights[512];        /* "reward.weights": a JSON list, one weight per reward ("": all 1) */
} zen_objective_opts;

void zen_objective_opts_defaults(zen_objective_opts *o);
/* 1 if key is one of the options' run config keys; all of them, "beta, dpo.loss, ..." */
int zen_objective_is_option(const char *key);
const char *zen_objective_option_keys(void);

/* Collectives over the data-parallel ranks (train/dist.c provides them), for
 * an objective that splits work across ranks itself (a reference pass). */
typedef struct {
    int rank, size;
    int (*agree)(int rc);                   /* every rank's outcome: the first failure of any rank, on all */
    void (*merge_f64)(double *v, size_t n); /* element-wise sum over ranks, each element set by one rank */
    void (*bcast)(void *buf, size_t bytes); /* rank 0's bytes to every rank */
} zen_ranks;

/* What a micro-batch runs on. */
typedef struct {
    const zen_model *m;
    const zen_lora *lo;  /* the adapter being trained (NULL: the base alone) */
    const zen_lora *ref; /* a frozen reference adapter, or NULL: the reference is the base (the adapter off) */
    zen_acts *a;
    uint64_t seed;       /* the run's seed */
    long step;           /* the step being run (0 outside training): keys what an objective draws */
    void *tokenizer;     /* the model's zen_tokenizer, or NULL (an objective that decodes text needs it) */
} zen_objective_env;

typedef struct zen_objective zen_objective;

/* A metric the progress line shows, with its short label. */
typedef struct {
    const char *metric, *label, *format;
} zen_shown_metric;

typedef struct {
    const char *name;          /* the run config's objective: "sft", "dpo", "orpo" */
    const char *summary;       /* one line */
    zen_records records;       /* the record layout its data files hold (data/records.h) */
    const char *item;          /* what batch_size counts: "sequences", "pairs" */
    const char *const *keys;   /* the options it reads (run config keys), NULL-terminated */
    int rows_per_item;         /* sequences of up to seq_len tokens an item lays out (activation rows) */
    /* or NULL: rows_per_item of both; where the options and seq_len T decide: the activation sequences an
     * item takes, and (*att) those of its shared layout's attention (GRPO: a prompt once and G completions,
     * each completion reading the prompt: G sequences) */
    int (*rows_per_item_of)(const zen_objective_opts *o, size_t T, int *att);
    int shared_layout;         /* its batches use the shared-prefix layout (decoder.h): acts with its scratch */
    int per_sequence_logits;   /* its rows are the file's sequences in order (zen eval --save-logits) */
    int needs_tokenizer;       /* the env's tokenizer must be set (the model's): GRPO decodes completions */
    /* or NULL (none): what a step holds on the device beside its own buffers, from the options, the items
     * of a micro-batch and seq_len T: GRPO samples its completions first, into a KV cache (each prompt
     * once) with logits [rows, V]; zen grad --plan and zen train's plan both count it */
    void (*generation_bytes)(const zen_objective_opts *o, const zen_config *cfg, zen_dtype compute, size_t items,
                             size_t T, size_t *cache, size_t *logits);
    /* or NULL (1): consecutive steps that take the same items (GRPO's num_iterations: one generation batch
     * serves them); the trainer repeats each batch of the data order that often, and saves checkpoints only
     * at the first step of a batch (a signal lets the batch's steps finish first) */
    int (*steps_per_batch)(const zen_objective_opts *o);
    int ranks_in_loss;         /* a micro-batch's loss reads the other ranks' of its moment (KTO's z): a run
                                  resumes with the ranks it started with */
    int n_pre, n_sums;         /* doubles per micro-batch: pre (pre[0]: trained tokens) and sums */
    int n_sums_max;            /* the last n_sums_max of sums are maxima: combined by max, not added */
    int n_metrics, n_train;    /* metrics (loss first); the first n_train are a training step's, all an eval's */
    const char *const *metrics;
    const zen_shown_metric *shown; /* what the progress and eval lines show beside the loss, n_shown of them */
    int n_shown;

    /* values of the options it reads: 0, or one line, *key the key at fault */
    int (*check)(const zen_objective_opts *o, const char **key);
    /* 1 if it compares against a reference model (a frozen adapter when the run continues one, else the base) */
    int (*uses_reference)(const zen_objective_opts *o);
    /* opens and checks a data file for items of up to T tokens: *items is how many it holds */
    int (*open)(zen_objective *o, zen_dataset *d, const char *path, int vocab, int64_t *items);
    int (*alloc)(zen_objective *o);   /* o->n_micro micro-batches of o->B items */
    void (*free)(zen_objective *o);
    /* before step 1 (NULL: nothing): a pass over the training and validation data (val may be NULL) */
    int (*prepare)(zen_objective *o, const zen_objective_env *e, const char *model_path, const zen_dataset *train,
                   const zen_dataset *val, FILE *say);
    int (*load)(zen_objective *o, int j, const zen_dataset *d, const int64_t *ids, size_t n);
    int (*pre)(zen_objective *o, int j, const zen_objective_env *e, double *pre);
    int (*run)(zen_objective *o, int j, const zen_objective_env *e, uint64_t dropout_seed, int backward,
               const double *totals, double *sums);
    /* the n_metrics values of the sums of a step (or an evaluation) */
    void (*values)(const zen_objective *o, const double *sums, double *values);
    /* optional: after a logged training step, this rank's items of it as JSON lines into f (samples.jsonl) */
    int (*write_samples)(const zen_objective *o, const zen_objective_env *e, FILE *f, long step);
    /* a line for zen train's summary: the objective and its options (reference: what the reference model is) */
    void (*describe)(const zen_objective *o, const char *reference, char *buf, size_t cap);
} zen_objective_ops;

struct zen_objective {
    const zen_objective_ops *ops;
    zen_objective_opts opts;
    const zen_ranks *ranks;
    size_t B, T;     /* items per micro-batch, tokens per sequence (seq_len) */
    int n_micro;     /* micro-batch slots held: the step's, and one more (eval_slot) for evaluation, so an
                      * evaluation never disturbs what the step's slots hold (GRPO's generation batch) */
    int eval_slot;
    int doc_mask;    /* token files: documents kept apart */
    void *state;     /* the objective's own (its micro-batches, ...) */
    /* its metrics: the ops' (set by zen_objective_init), or names its alloc made from its options (GRPO's
     * rewards/NAME/...) */
    int n_metrics, n_train;
    const char *const *metrics;
    /* set by an objective whose step failed outside the run (a reward command): the trainer saves a
     * checkpoint of what it has before it stops, so --resume continues once the cause is fixed */
    int stop_after_checkpoint;
};

/* The objective called name, or NULL (the names are listed by zen_objective_names). */
const zen_objective_ops *zen_objective_find(const char *name);
const char *zen_objective_names(void);   /* "sft, dpo or orpo" */
const char *zen_objective_choices(void); /* "sft|dpo|orpo" */
/* The objective reading a file of records, for a one-line hint ("set objective to dpo or orpo"). */
const char *zen_objective_names_for(zen_records records);

/* The options and the objective: its check, and every key it does not read
 * at its default. *key names the key at fault (for the caller's message:
 * "config key 'x'" or its command-line flag). */
int zen_objective_check(const zen_objective_ops *ops, const zen_objective_opts *o, const char **key);
/* 1 if the objective reads the option key; the objectives that read it: "dpo", "dpo or orpo" */
int zen_objective_reads(const zen_objective_ops *ops, const char *key);
const char *zen_objective_readers(const char *key);

/* Sets up o for micro-batches of B items of up to T tokens; n_micro of them. */
int zen_objective_init(zen_objective *o, const zen_objective_ops *ops, const zen_objective_opts *opts,
                       const zen_ranks *ranks, size_t B, size_t T, int n_micro, int doc_mask);
void zen_objective_free(zen_objective *o);
/* the activations of one micro-batch, and what they add to a memory plan */
int zen_objective_make_acts(const zen_objective *o, const zen_model *m, const zen_lora *lo, int recompute,
                            zen_acts *a);
size_t zen_objective_rows(const zen_objective *o);
/* the attention rows of a micro-batch in the shared layout (at least zen_objective_rows) */
size_t zen_objective_att_rows(const zen_objective *o);
/* the same from the options alone (zen grad --plan): activation and attention sequences of seq_len T per item */
int zen_objective_seqs_per_item(const zen_objective_ops *ops, const zen_objective_opts *opts, size_t T, int *att);
size_t zen_objective_scratch_bytes(const zen_objective *o, const zen_config *cfg);
/* the ops' generation_bytes, or 0 and 0 */
void zen_objective_generation_bytes(const zen_objective_ops *ops, const zen_objective_opts *opts,
                                    const zen_config *cfg, zen_dtype compute, size_t items, size_t T, size_t *cache,
                                    size_t *logits);
/* total += one micro-batch's sums: added, the last n_sums_max by max; zero_sums is the empty total */
void zen_objective_add_sums(const zen_objective *o, double *total, const double *sums);
void zen_objective_zero_sums(const zen_objective *o, double *total);
/* the metric index of name, or -1 */
int zen_objective_metric(const zen_objective *o, const char *name);

#endif
