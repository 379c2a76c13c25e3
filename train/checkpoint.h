/* train/checkpoint.h: OUT/checkpoint-STEP/ = the PEFT adapter (fp32),
 * optimizer.safetensors (AdamW moments) and trainer_state.json (step, data
 * position, RNG scheme, elapsed time, resolved config). Written into a
 * temporary directory that is renamed into place last, so a crash never leaves
 * a half checkpoint under a checkpoint-STEP name. */
#ifndef ZEN_CHECKPOINT_H
#define ZEN_CHECKPOINT_H
#include "../model/lora.h"
#include "../optim/adamw.h"
#include "run_config.h"

typedef struct {
    long step;            /* updates done */
    long epoch, batch_in_epoch; /* data position of the next step */
    double elapsed_s;
    double tokens_seen;
    long data_tokens;     /* tokens in the training file when saved (0: not recorded) */
    long ranks;           /* data-parallel ranks that wrote it (0: not recorded, one) */
} zen_train_state;

int zen_checkpoint_save(const char *out_dir, const zen_train_state *st, const zen_lora *lo,
                        const zen_config *model_cfg, const zen_adamw *opt, const zen_run_config *cfg);
/* Newest complete checkpoint-STEP directory in out_dir: its step, or -1 if none. */
long zen_checkpoint_latest(const char *out_dir);
/* Loads checkpoint-STEP: adapter params into lo (same shape), moments into opt,
 * the state, and the run config it was written with. */
int zen_checkpoint_load(const char *out_dir, long step, zen_train_state *st, zen_lora *lo,
                        const zen_config *model_cfg, zen_adamw *opt, zen_run_config *saved_cfg);
/* Parses and checks trainer_state.json's text: format, step, epoch and
 * batch_in_epoch non-negative integers, elapsed_s and tokens_seen finite,
 * and the run config it holds (every key checked as a config file's). */
int zen_checkpoint_parse_state(const char *text, size_t len, const char *origin, zen_train_state *st,
                               zen_run_config *saved_cfg);
/* The state's data position against the run: step within total_steps, and
 * epoch / batch_in_epoch the ones step gives at steps_per_epoch. */
int zen_checkpoint_check_position(const zen_train_state *st, const char *origin, long total_steps,
                                  long steps_per_epoch);
/* Removes complete checkpoints beyond the newest `keep` (0 keeps all), and
 * leftovers of interrupted saves. */
void zen_checkpoint_prune(const char *out_dir, long keep);

#endif
