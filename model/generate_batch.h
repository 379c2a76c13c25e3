/* model/generate_batch.h: many samples of many prompts, decoded together
 * (continuous batching over model/generate.h's forward).
 *
 * Each request is a prompt (token ids) and the number of samples wanted of
 * it. Its prompt is prefilled once, in chunks as zen_kv_feed takes them, and
 * its samples fork that sequence: the prompt's keys and values are stored
 * once and read by all of them (model/kv_pages.h). Every step decodes one
 * token of each live sample in one forward; a sample that ends (a stop id,
 * a stop string, or max_new tokens) leaves, and the next waiting sample
 * takes its row, up to max_rows rows and the cache's memory (a sample is
 * admitted when the pages its longest continuation could need are free, so
 * a live sample never waits for memory).
 *
 * A sample's draws come from its own stream, zen_sample_stream(seed,
 * request key, sample index), and every op of a decode step computes each
 * row on its own (kernels.h: linear_fwd and lora_fwd up to ZK_DECODE_ROWS
 * rows; attention, norms and the rest by row): so a sample's tokens and
 * numbers, bit for bit, never depend on which samples share the batch, on
 * their order or their number, or on the threads. A batch of 1 is zen
 * generate alone. Requests are handed back in order, each when all its
 * samples ended. */
#ifndef ZEN_GENERATE_BATCH_H
#define ZEN_GENERATE_BATCH_H
#include <stddef.h>
#include <stdint.h>

#include "generate.h"

typedef struct {
    const int32_t *prompt; /* [prompt_len] token ids, at least one */
    size_t prompt_len;
    int samples;           /* how many continuations */
    uint64_t key;          /* keys its samples' random streams (a prompt's index in its file) */
} zen_gen_request;

typedef struct {
    zen_sampling sampling;
    uint64_t seed;
    size_t max_new;           /* tokens per sample, at least 1 */
    const int32_t *stop_ids;  /* tokens that end a sample (eos, <|im_end|>), kept as its last; n_stop_ids */
    int n_stop_ids;
    /* stop strings (may be NULL): after each token, 1 when the sample's
     * tokens ids[n] now hold a stop string, which ends it */
    int (*stop_at)(void *ctx, const int32_t *ids, size_t n);
    void *stop_ctx;
    size_t max_rows;          /* samples decoded at once, at most ZK_DECODE_ROWS (kernels.h) */
    size_t max_cache_bytes;   /* the KV cache's pages (0: enough for max_rows samples of the longest request) */
    size_t prefill_chunk;     /* prompt tokens per forward (zen_kv's chunk: the same numbers as alone) */
    int keep_logits;          /* each sample's logits of every token it drew, for checks */
} zen_gen_batch_opts;

typedef enum { ZEN_FINISH_EOS, ZEN_FINISH_STOP, ZEN_FINISH_LENGTH } zen_finish;

typedef struct {
    int32_t *ids;      /* [n] the tokens drawn (a stop id included) */
    float *logprobs;   /* [n] each one's log-probability under the model (zen_token_logprob) */
    float *logits;     /* [n, vocab] with keep_logits, else NULL */
    size_t n;
    zen_finish finish;
    double logprob;    /* the sum of logprobs */
} zen_gen_sample;

/* Called once per request, in request order, with its samples (valid
 * until it returns); non-zero stops the run with that code. */
typedef int (*zen_gen_done)(void *ctx, size_t request, const zen_gen_sample *samples, int n);

typedef struct {
    size_t prompts, samples, tokens, prefill_tokens, steps, peak_rows;
    size_t cache_bytes, peak_cache_bytes; /* the pool, and the most of it in use at once */
    size_t page_rows;
    double seconds, prefill_seconds;
} zen_gen_batch_stats;

int zen_generate_batch(const zen_model *m, const zen_lora *lo, const zen_gen_request *requests, size_t n_requests,
                       const zen_gen_batch_opts *o, zen_gen_done done, void *ctx, zen_gen_batch_stats *stats);

/* The KV cache bytes that let `rows` samples decode at once, whatever their order, for requests of up to
 * prompt_len tokens with `samples` samples each and up to max_new new tokens (on a backend computing in
 * `compute`): the prompts that can be live together (rows / samples + 1), each stored once, and each
 * sample's own pages. A pool that size never makes a sample wait for memory (max_cache_bytes). */
size_t zen_gen_batch_cache_bytes(const zen_config *cfg, zen_dtype compute, size_t rows, size_t samples,
                                 size_t prompt_len, size_t max_new);

#endif
