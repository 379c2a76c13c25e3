/* train/eval_prompts.h: `zen eval --prompts FILE.h5 --reward JSON`: a
 * task's accuracy by what the model generates: each prompt's completion
 * (greedy, or --n samples) rewarded by GRPO's reward functions, and each
 * reward's mean (see eval_prompts.c). */
#ifndef ZEN_EVAL_PROMPTS_H
#define ZEN_EVAL_PROMPTS_H
#include <stddef.h>

#include "../data/tokenizer.h"
#include "../model/generate.h"

#define ZEN_EVAL_MAX_REWARDS 16

typedef struct {
    size_t prompts, samples, tokens;
    int n_rewards;
    char names[ZEN_EVAL_MAX_REWARDS][96];
    double mean[ZEN_EVAL_MAX_REWARDS]; /* each reward's mean over the samples it scored (nan: none) */
    double reward;                     /* the weighted sum's mean */
    double seconds;
} zen_prompts_result;

/* The prompts of a prompts file (zen data --format prompts), n samples each of up to max_new tokens drawn
 * with s (temperature 0: greedy) and seed, scored by rewards (a JSON list, as the run config's) with
 * weights ("" all 1). */
int zen_eval_prompts(const zen_model *m, const zen_lora *lo, const zen_tokenizer *t, const char *path,
                     const char *rewards, const char *weights, int n, size_t max_new, const zen_sampling *s,
                     unsigned long long seed, zen_prompts_result *out);

#endif
