/* train/trainer.h: one LoRA fine-tuning run (`zen train`): data, model, AdamW,
 * the step loop with gradient accumulation, evaluation, metrics, progress and
 * checkpoints, and exact resume. */
#ifndef ZEN_TRAINER_H
#define ZEN_TRAINER_H
#include "run_config.h"

/* Runs the whole training; resume continues from the newest complete
 * checkpoint in out_dir. Returns an exit code (message via zen_last_error). */
int zen_train(const zen_run_config *cfg, int resume);

#endif
