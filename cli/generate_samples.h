/* cli/generate_samples.h: zen generate --n G and --prompts FILE.jsonl: many
 * samples of one or many prompts through model/generate_batch.h, written
 * as JSON lines a prompt at a time (--out, --resume) or printed. */
#ifndef ZEN_GENERATE_SAMPLES_H
#define ZEN_GENERATE_SAMPLES_H
#include <stddef.h>
#include <stdint.h>

#include "../data/tokenizer.h"
#include "../model/generate.h"
#include "../train/session.h"

typedef struct {
    zen_session *s;
    zen_tokenizer *tok;           /* NULL: ids only (--prompt-ids with --ids) */
    const char *model, *adapter;  /* as given, for the run's settings */
    const zen_ids *prompt;        /* one prompt's tokens, or NULL with prompts_path */
    const char *prompt_text;      /* how it was given (its text, its ids or its file), for the output */
    const char *prompts_path;     /* --prompts FILE.jsonl, or NULL */
    const char *out_path;         /* --out FILE.jsonl, or NULL: print the samples */
    const char *logits_path;      /* --save-logits, or NULL */
    int resume, show_ids, no_think, samples;
    zen_sampling sampling;
    uint64_t seed;
    size_t max_new, max_rows, max_cache_bytes, prefill_chunk;
    const int32_t *stop_ids;
    int n_stop_ids;
    const char *const *stops;     /* --stop strings, n_stops of them */
    int n_stops;
} zen_samples_args;

int zen_generate_samples(const zen_samples_args *a);

#endif
