/* train/eval_choices.h: `zen eval --choices FILE.jsonl`, multiple-choice
 * accuracy (acc, acc_norm) as lm-evaluation-harness defines it, each
 * record's context run once (see eval_choices.c). */
#ifndef ZEN_EVAL_CHOICES_H
#define ZEN_EVAL_CHOICES_H
#include "../data/tokenizer.h"
#include "../model/decoder.h"

typedef struct {
    double records, acc, acc_norm;
    double shared; /* records whose context ran once for all choices */
} zen_choices_result;

/* a: zen_acts_create_shared for 2B x T rows */
int zen_eval_choices(const zen_model *m, const zen_lora *lo, zen_acts *a, zen_tokenizer *t, const char *path,
                     size_t B, size_t T, zen_choices_result *out);

#endif
