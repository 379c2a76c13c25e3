/* data/prepare.h: `zen data`: raw text and instruction data to a training-ready
 * "zen-tokens-v1" file, tokenised with the model's own tokenizer.
 *   text:     a file as one document (or documents split on blank lines), EOS after each;
 *             --in may be a directory: each of its files (in name order) is read
 *   jsonl:    one JSON object per line, its `text` field (or --field) a document, EOS after each
 *   alpaca:   instruction / input / output, rendered as a ChatML user and assistant turn
 *   messages: {"messages": [{role, content}]} or ShareGPT {"conversations": [{from, value}]},
 *             rendered with Qwen3's ChatML template
 * Chat formats mask in (loss_mask 1) only the assistant's content and its
 * closing <|im_end|>, unless train_on_prompt. With pack_seq_len the
 * documents are packed into windows of that many tokens (data/pack.h). */
#ifndef ZEN_PREPARE_H
#define ZEN_PREPARE_H
#include <stdint.h>

#include "records.h"
#include "tokenizer.h"

typedef enum { ZEN_DATA_TEXT, ZEN_DATA_JSONL, ZEN_DATA_ALPACA, ZEN_DATA_MESSAGES } zen_data_format;

typedef struct {
    const char *tokenizer_dir, *in, *out;
    zen_tokenizer *tokenizer; /* already loaded (e.g. from a GGUF), or NULL: loaded from tokenizer_dir */
    zen_data_format format;
    const char *field;     /* jsonl: the text field ("text") */
    int split_paragraphs;  /* text: a document per blank-line-separated paragraph */
    int skip_bad;          /* skip bad lines (and count them) instead of stopping */
    int train_on_prompt;   /* chat formats: mask in every token */
    int drop_empty_think;  /* messages: no "<think>\n\n</think>\n\n" before the final answer */
    int64_t pack_seq_len;  /* --pack T: documents in windows of T tokens (data/pack.h); 0: as they come */
    uint64_t pack_seed;    /* --seed: the order of the packed windows */
    int64_t max_length;    /* preference, kto: the longest sequence, prompt + completion (data/prepare_records.c);
                            * prompts: the longest prompt */
    int no_think;          /* prompts: a chat prompt's generation prompt with the empty think block */
} zen_data_opts;

typedef struct {
    int64_t docs, tokens, masked, bad_lines;
    int64_t forced_cuts; /* text pieces cut where no exact cut was found (a 64 MB stretch without one) */
    int64_t id_mismatches; /* added tokens whose id differs from tokenizer.json's (as HF assigns them) */
    double bytes, seconds;
    int64_t windows, pad_tokens, split_docs; /* --pack: windows of T, padding, documents longer than T */
    int32_t pad_id;                          /* --pack: the pad token */
} zen_data_stats;

/* what zen_data_prepare_records wrote and left out */
typedef struct {
    int64_t records, tokens, prompt_tokens, bad_lines;
    int64_t dropped_long_prompt; /* the prompt alone reaches max_length */
    int64_t truncated;           /* a completion cut to fit max_length */
    int64_t identical;           /* chosen equal to rejected (kept, as TRL keeps them) */
    int64_t no_eos;              /* records of string completions left without an end-of-sequence token: the
                                  * tokenizer has none (TRL appends its eos_token) */
    int64_t desirable, undesirable; /* kto: the records labelled true and false */
    double bytes, seconds;
} zen_record_stats;

int zen_data_parse_format(const char *name, zen_data_format *out);
/* `zen data --format preference|kto` (data/prepare_records.c): records of a
 * prompt and its completions (preference pairs, KTO's labelled completions)
 * from o->in into o->out, with o->max_length, o->skip_bad, o->drop_empty_think
 * and the tokenizer */
int zen_data_prepare_records(const zen_data_opts *o, zen_records records, zen_record_stats *st);
int zen_data_prepare(const zen_data_opts *o, zen_data_stats *stats);
/* One record line of a jsonl, alpaca or messages file (o->format) rendered
 * and tokenized as zen_data_prepare does it: *ids and *mask (malloc'd, the
 * caller frees them with zen_ids_free and free, also on error) get its
 * tokens and loss mask; where names the line in errors. For the fuzzer. */
int zen_data_tokenize_line(const zen_data_opts *o, zen_tokenizer *t, const char *line, size_t len, const char *where,
                           zen_ids *ids, uint8_t **mask);

/* Renders one chat record (a parsed JSON object) to text with a per-byte mask
 * (exposed for tests). line names the record in errors. */
typedef struct {
    char *text;
    uint8_t *mask;
    size_t len, cap;
} zen_render;
struct cJSON;
int zen_render_chat(const zen_data_opts *o, const zen_tokenizer *t, const struct cJSON *record, zen_render *r,
                    const char *where);
void zen_render_free(zen_render *r);
/* A record's field that holds a prompt or a completion: a non-empty string
 * or a non-empty list of chat messages (one line naming where and name if
 * not). */
int zen_prompt_field(const struct cJSON *rec, const char *name, const char *where, const struct cJSON **out);
/* A prompt as zen data renders it: a string's tokens (special tokens
 * parsed), or a list of chat messages in Qwen3's ChatML (as --format
 * messages renders them) followed by generation_prompt
 * ("<|im_start|>assistant\n"); *text, *text_len (realloc'd; r is scratch)
 * get a chat's rendered text. Appends to *ids. */
int zen_prompt_tokens(const zen_data_opts *o, zen_tokenizer *t, const struct cJSON *prompt,
                      const char *generation_prompt, zen_render *r, char **text, size_t *text_len, zen_ids *ids,
                      const char *where);

#endif
