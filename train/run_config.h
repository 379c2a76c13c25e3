/* train/run_config.h: the run configuration of `zen train`: a JSON file with
 * `--set key=value` overrides (nested keys as lora.r). Every key is checked:
 * an unknown key, a wrong type or an out-of-range value is one line naming it. */
#ifndef ZEN_RUN_CONFIG_H
#define ZEN_RUN_CONFIG_H

#include "../objectives/objective.h"

#define ZEN_PATH_MAX 1024
#define ZEN_RUN_CONFIG_MAX_KEYS 256 /* the table's keys (run_config.c checks it holds no more) */

typedef struct {
    char model[ZEN_PATH_MAX];
    char data[ZEN_PATH_MAX];
    char val_data[ZEN_PATH_MAX];
    double val_fraction;
    char out_dir[ZEN_PATH_MAX];
    char device[16];
    char dtype[16];     /* compute precision: auto (f32 on cpu, bf16 on cuda), f32, bf16 */
    char base_quant[16]; /* none, nf4, q4_0, q8_0: the base projections quantised at load (QLoRA) */
    long seed;
    long seq_len, batch_size, grad_accum;
    long max_steps, epochs;
    double lr;
    char schedule[16];
    long warmup_steps;
    double min_lr_ratio, weight_decay, beta1, beta2, eps, grad_clip;
    int recompute;      /* 1, 0, or -1 = auto: on for cuda (memory), off for cpu (speed) */
    int doc_mask;       /* documents kept apart (attention, positions, targets); default 1 */
    long log_every, eval_every, save_every, keep_checkpoints;
    long lora_r;
    double lora_alpha, lora_dropout;
    char lora_targets[128]; /* comma list, e.g. "q_proj,k_proj" */
    long sample_every;      /* every N steps (0: never), continuations of sample_prompts in samples.jsonl */
    char sample_prompts[4096]; /* the prompts, each ended by ZEN_PROMPT_SEP */
    int lora_rslora;
    int lora_dora;          /* DoRA (model/dora.h) */
    int lora_dora_clean_base; /* DoRA with dropout: the (m/n - 1) term on x (mlx-lm), not dropout(x) (PEFT) */
    char adapter[ZEN_PATH_MAX]; /* "" or a PEFT adapter the run starts from (continues) */
    char reference[ZEN_PATH_MAX]; /* an objective's reference: "" (the continued adapter frozen, else the base),
                                     "base" (the adapter off) or a PEFT adapter, frozen */
    char objective[8];      /* sft (default), dpo, orpo, kto, grpo: a row of objectives/objective.c's table */
    zen_objective_opts obj; /* the options objectives read: beta, dpo.loss, ... (objectives/objective.h) */
    unsigned char cli_keys[ZEN_RUN_CONFIG_MAX_KEYS]; /* [i] 1: key i of the table was given by --set (not a config key) */
} zen_run_config;

void zen_run_config_defaults(zen_run_config *c);
/* Applies the keys of a JSON config text (origin names it in errors). */
int zen_run_config_apply_json(zen_run_config *c, const char *json_text, const char *origin);
/* Applies one "key=value" override (from --set). */
int zen_run_config_set(zen_run_config *c, const char *assignment);
/* Checks ranges and the keys that must be given (model, data, out_dir). */
int zen_run_config_validate(const zen_run_config *c);
/* The resolved config as pretty JSON (malloc'd), nested like the input. */
char *zen_run_config_to_json(const zen_run_config *c);
/* The command line wins over the recipe: where a key given by --set excludes
 * one the file set (val_data and val_fraction), the file's is reset to its
 * default; note gets one line saying so ("" when nothing changed). */
int zen_run_config_resolve(zen_run_config *c, char *note, size_t cap);
/* Every key that changes a run's trajectory and differs between a (the
 * checkpoint's) and b (now), except those in the NULL-terminated list
 * allowed, as "'lr' (0.0002, now 0.001), ..." in out; returns their count. */
int zen_run_config_trajectory_diffs(const zen_run_config *a, const zen_run_config *b, const char *const *allowed,
                                    char *out, size_t cap);

/* recompute as resolved for the config's device */
int zen_run_config_recompute(const zen_run_config *c);

#define ZEN_PROMPT_SEP '\x1e' /* ends each of sample_prompts (ASCII record separator) */

#endif
