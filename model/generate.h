/* model/generate.h: generation with a KV cache. The adapter is applied
 * unmerged (y = x W^T + s (x A^T) B^T per projection, no dropout), so an
 * adapter is tried without an export. One sequence: zen_kv_feed runs a chunk
 * of tokens (the whole prompt at once, then one token per step) through
 * every layer, appending their keys and values to the cache, and gives the
 * logits after the last of them. The cache is GQA-sized, [layers][max][nkv*hd]
 * for keys and for values, in the compute precision (fp32, or bf16: half the
 * memory, and the rounding the bf16 forward applies to k and v anyway). */
#ifndef ZEN_GENERATE_H
#define ZEN_GENERATE_H
#include <stdint.h>

#include "lora.h"
#include "weights.h"

typedef struct {
    const zen_model *m;
    const zen_lora *lo;      /* NULL: the base alone */
    size_t max_tokens;       /* cache capacity */
    size_t max_chunk;        /* the most tokens one feed takes */
    size_t len;              /* tokens in the cache */
    void *k, *v;             /* device [layers][max_tokens][nkv*hd], zk_cache_bytes(be) each */
    /* device scratch for a chunk of n rows */
    float *x, *xn, *q, *kk, *vv, *att, *tmp, *gate, *up, *h, *rstd, *u; /* [n, widths]; u [n, r] */
    float *logits;           /* [vocab] the last row's */
    int32_t *tokens, *pos;   /* device [max_chunk] */
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

#include "../util/rng.h"
int32_t zen_sample(const float *logits, int32_t vocab, const zen_sampling *s, zen_rng *rng);

/* Up to max_new tokens after the cache's last logits (logits[vocab], as the
 * last zen_kv_feed left them): each is sampled, handed to on_token (may be
 * NULL; a non-zero return stops), and fed, except the last one and a stop
 * token (stop[n_stop], e.g. eos and <|im_end|>), which end it unfed.
 * *made gets the count, *last the final token and *last_fed whether the
 * cache holds it. */
int zen_kv_generate(zen_kv *c, float *logits, const zen_sampling *s, zen_rng *rng, size_t max_new,
                    const int32_t *stop, int n_stop, int (*on_token)(void *ctx, int32_t id), void *ctx,
                    size_t *made, int32_t *last, int *stopped);

#endif
