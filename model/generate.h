/* model/generate.h: the forward of generation over a paged KV cache
 * (model/kv_pages.h). The adapter is applied unmerged (y = x W^T + s (x
 * A^T) B^T per projection, no dropout; DoRA's column scales too), so an
 * adapter is tried without an export.
 *
 * zen_gen runs, in one forward, chunks of new tokens of several sequences:
 * every projection over all their rows at once (a matrix product: the
 * weights are read once per step, however many sequences decode), attention
 * through each sequence's own page table. The logits after each chunk's
 * last token come back. A sequence's numbers do not depend on what shares
 * its forward beyond the fp32 rounding of the batched products.
 *
 * zen_kv is one sequence on it (zen generate's single continuation and
 * --chat, zen train's samples): zen_kv_feed runs a chunk of tokens (a
 * prompt, then one token per step). model/generate_batch.h schedules many
 * sequences. */
#ifndef ZEN_GENERATE_H
#define ZEN_GENERATE_H
#include <stdint.h>

#include "../util/rng.h"
#include "kv_pages.h"
#include "lora.h"
#include "weights.h"

typedef struct {
    const zen_model *m;
    const zen_lora *lo;      /* NULL: the base alone */
    zen_kv_pages cache;
    size_t max_rows;         /* tokens one forward takes, over all its chunks */
    size_t max_chunks;       /* chunks one forward takes (logits rows) */
    size_t max_pages;        /* page-table entries one forward takes, over all its chunks */
    /* device scratch for max_rows rows */
    float *x, *xn, *q, *kk, *vv, *att, *tmp, *gate, *up, *h, *rstd, *u; /* [rows, widths]; u [rows, r] */
    float *last, *logits;    /* [max_chunks, hidden], [max_chunks, vocab] */
    int32_t *tokens, *pos, *table_of, *tables, *last_rows; /* device [max_rows] (tables [max_pages]; last_rows [chunks]) */
    int32_t *host_ints;      /* host staging: pos, table_of [max_rows], tables [max_pages], last_rows [max_chunks] */
} zen_gen;

/* n new tokens of a sequence */
typedef struct {
    zen_kv_seq *seq;
    const int32_t *tokens;
    size_t n;
} zen_gen_chunk;

/* A forward for up to max_rows tokens in up to max_chunks chunks, over a
 * cache of `pages` pages of page_rows positions. */
int zen_gen_create(zen_gen *g, const zen_model *m, const zen_lora *lo, size_t pages, size_t page_rows,
                   size_t max_rows, size_t max_chunks, size_t max_pages);
/* Runs the chunks: each chunk's tokens at its sequence's positions seq->len
 * .. seq->len + n - 1 (pages taken as needed: zen_kv_seq_grow), the logits
 * after its last token into logits_host[chunk][vocab]; then each seq->len
 * += n. A sequence appears in at most one chunk. */
int zen_gen_forward(zen_gen *g, const zen_gen_chunk *chunks, size_t n_chunks, float *logits_host);
void zen_gen_free(zen_gen *g);

/* One sequence with a cache of max_tokens positions, fed up to max_chunk
 * tokens at a time. */
typedef struct {
    zen_gen g;
    zen_kv_seq seq;
    size_t max_tokens, max_chunk, len;
} zen_kv;

int zen_kv_create(zen_kv *c, const zen_model *m, const zen_lora *lo, size_t max_tokens, size_t max_chunk);
/* Runs tokens[n] (n <= max_chunk, len + n <= max_tokens) and writes the
 * logits after the last one into logits_host[vocab]. */
int zen_kv_feed(zen_kv *c, const int32_t *tokens, size_t n, float *logits_host);
void zen_kv_free(zen_kv *c);

/* How the next token is chosen from logits (as llama.cpp and transformers
 * do, in this order): temperature 0 is greedy (the lowest id among equal
 * maxima); else softmax(logits / temperature), keep the top_k most likely
 * (0: all), the smallest set whose probability reaches top_p (1: all), the
 * tokens at least min_p times the most likely (0: all), renormalise, draw
 * with the rng. */
typedef struct {
    float temperature, top_p, min_p;
    int top_k;
} zen_sampling;

int32_t zen_sample(const float *logits, int32_t vocab, const zen_sampling *s, zen_rng *rng);
/* log softmax(logits)[id]: the model's own log-probability of a token (temperature 1, nothing cut) */
double zen_token_logprob(const float *logits, int32_t vocab, int32_t id);
/* The random stream of sample `sample` of prompt `prompt` under seed: its
 * draws never depend on the other samples, their order or their number.
 * zen generate's single continuation is stream (seed, 0, 0). */
void zen_sample_stream(zen_rng *rng, uint64_t seed, uint64_t prompt, uint64_t sample);

/* Up to max_new tokens after the cache's last logits (logits[vocab], as the
 * last zen_kv_feed left them): each is sampled, handed to on_token (may be
 * NULL; a non-zero return stops), and fed, except the last one and a stop
 * token (stop[n_stop], e.g. eos and <|im_end|>), which end it unfed.
 * *made gets the count, *last the final token and *stopped whether a stop
 * token ended it. */
int zen_kv_generate(zen_kv *c, float *logits, const zen_sampling *s, zen_rng *rng, size_t max_new,
                    const int32_t *stop, int n_stop, int (*on_token)(void *ctx, int32_t id), void *ctx,
                    size_t *made, int32_t *last, int *stopped);

#endif
