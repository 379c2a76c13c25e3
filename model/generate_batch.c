/* model/generate_batch.c: continuous batching of many samples (see generate_batch.h). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../util/error.h"
#include "generate_batch.h"

#define PAGE_ROWS 16 /* positions per page, as zen_kv's */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* a request in flight */
typedef struct {
    zen_kv_seq prompt;   /* its prefilled sequence, held while any of its samples waits or runs */
    float *first;        /* [vocab] the logits after the prompt */
    int prefilled, admitted, ended;
    zen_gen_sample *out; /* [samples] */
} group;

/* a sample being decoded */
typedef struct {
    size_t request;
    int index;
    zen_kv_seq seq;
    zen_rng rng;
    size_t reserved;     /* pages it may still take */
    size_t cap;          /* room in its out's arrays */
    int32_t next;        /* its last token, fed in the next step */
} live;

typedef struct {
    const zen_model *m;
    const zen_gen_request *req;
    size_t n_req;
    const zen_gen_batch_opts *o;
    zen_gen g;
    group *groups;
    live *live;
    size_t n_live, reserved, emitted;
    float *logits;       /* [max_rows, vocab] */
    zen_gen_batch_stats *st;
} batch;

/* pages a sample of a prompt of P tokens may take beyond the prompt's
 * full pages: its own positions up to P + max_new - 1 (the last token is
 * never fed), the prompt's partly filled page copied */
static size_t own_pages(size_t P, size_t max_new) {
    return zen_kv_pages_for(P + max_new - 1, PAGE_ROWS) - P / PAGE_ROWS;
}

size_t zen_gen_batch_cache_bytes(const zen_config *cfg, zen_dtype compute, size_t rows, size_t samples,
                                 size_t prompt_len, size_t max_new) {
    size_t prompts = (rows + samples - 1) / (samples ? samples : 1) + 1;
    size_t pages = prompts * zen_kv_pages_for(prompt_len, PAGE_ROWS) + rows * own_pages(prompt_len, max_new);
    return pages * zen_kv_page_bytes_for(cfg, PAGE_ROWS, compute);
}

static int push_token(batch *b, zen_gen_sample *s, size_t *cap, int32_t id, const float *logits) {
    int32_t vocab = b->m->cfg.vocab;
    if (s->n == *cap) {
        size_t more = *cap ? 2 * *cap : 16;
        int32_t *ids = realloc(s->ids, more * sizeof(int32_t));
        if (ids) s->ids = ids;
        float *lp = realloc(s->logprobs, more * sizeof(float));
        if (lp) s->logprobs = lp;
        float *lg = b->o->keep_logits ? realloc(s->logits, more * (size_t)vocab * sizeof(float)) : NULL;
        if (lg) s->logits = lg;
        if (!ids || !lp || (b->o->keep_logits && !lg)) return zen_fail(ZEN_ERR_INTERNAL, "out of memory (samples)");
        *cap = more;
    }
    double lp = zen_token_logprob(logits, vocab, id);
    s->ids[s->n] = id, s->logprobs[s->n] = (float)lp;
    if (b->o->keep_logits) memcpy(s->logits + s->n * (size_t)vocab, logits, (size_t)vocab * sizeof(float));
    s->n++;
    s->logprob += lp;
    return 0;
}

/* draws the sample's next token from logits; *ended when it ends the sample */
static int draw(batch *b, zen_gen_sample *s, size_t *cap, zen_rng *rng, const float *logits, int32_t *next,
                int *ended) {
    const zen_gen_batch_opts *o = b->o;
    int32_t id = zen_sample(logits, b->m->cfg.vocab, &o->sampling, rng);
    int rc = push_token(b, s, cap, id, logits);
    if (rc) return rc;
    b->st->tokens++;
    *next = id, *ended = 1;
    for (int i = 0; i < o->n_stop_ids; i++)
        if (id == o->stop_ids[i]) return s->finish = ZEN_FINISH_EOS, 0;
    if (o->stop_at && o->stop_at(o->stop_ctx, s->ids, s->n)) return s->finish = ZEN_FINISH_STOP, 0;
    if (s->n >= o->max_new) return s->finish = ZEN_FINISH_LENGTH, 0;
    *ended = 0;
    return 0;
}

/* a sample ended: its pages let go; its request's pages too once all its samples ended */
static void end_sample(batch *b, size_t at) {
    live *lv = &b->live[at];
    group *gr = &b->groups[lv->request];
    zen_kv_seq_release(&b->g.cache, &lv->seq);
    zen_kv_seq_free(&lv->seq);
    b->reserved -= lv->reserved;
    if (++gr->ended == b->req[lv->request].samples) {
        zen_kv_seq_release(&b->g.cache, &gr->prompt);
        zen_kv_seq_free(&gr->prompt);
        free(gr->first);
        gr->first = NULL;
    }
    b->live[at] = b->live[--b->n_live];
}

/* the prompt of request i through the forward in chunks of prefill_chunk, its last logits kept */
static int prefill(batch *b, size_t i) {
    const zen_gen_request *r = &b->req[i];
    group *gr = &b->groups[i];
    int32_t vocab = b->m->cfg.vocab;
    double t0 = now_s();
    if (!(gr->first = zen_malloc((size_t)vocab * sizeof(float)))) return ZEN_ERR_INTERNAL;
    int rc = 0;
    for (size_t at = 0; at < r->prompt_len && !rc; at += b->o->prefill_chunk) {
        size_t n = r->prompt_len - at < b->o->prefill_chunk ? r->prompt_len - at : b->o->prefill_chunk;
        zen_gen_chunk chunk = {&gr->prompt, r->prompt + at, n};
        rc = zen_gen_forward(&b->g, &chunk, 1, gr->first);
    }
    gr->prefilled = 1;
    b->st->prefill_tokens += r->prompt_len;
    b->st->prefill_seconds += now_s() - t0;
    return rc;
}

/* the waiting samples that fit (rows, and pages for their longest continuation) join */
static int admit(batch *b, size_t *next_req) {
    const zen_gen_batch_opts *o = b->o;
    while (*next_req < b->n_req && b->n_live < o->max_rows) {
        const zen_gen_request *r = &b->req[*next_req];
        group *gr = &b->groups[*next_req];
        if (gr->admitted == r->samples) {
            (*next_req)++;
            continue;
        }
        size_t own = own_pages(r->prompt_len, o->max_new);
        size_t need = own + (gr->prefilled ? 0 : zen_kv_pages_for(r->prompt_len, PAGE_ROWS));
        if (b->g.cache.n_free < b->reserved + need) {
            if (b->n_live == 0)
                return zen_fail(ZEN_ERR_INPUT, "generation: a sample of a %zu-token prompt with up to %zu new tokens "
                                "needs %zu pages of the KV cache, which holds %zu (raise --max-cache-mib)",
                                r->prompt_len, o->max_new, need, b->g.cache.pages);
            break;
        }
        int rc = gr->prefilled ? 0 : prefill(b, *next_req);
        if (rc) return rc;
        int index = gr->admitted++;
        live *lv = &b->live[b->n_live];
        memset(lv, 0, sizeof *lv);
        lv->request = *next_req, lv->index = index;
        zen_sample_stream(&lv->rng, o->seed, r->key, (uint64_t)index);
        zen_gen_sample *s = &gr->out[index];
        int ended;
        if ((rc = draw(b, s, &lv->cap, &lv->rng, gr->first, &lv->next, &ended))) return rc;
        if ((rc = zen_kv_seq_fork(&b->g.cache, &lv->seq, &gr->prompt))) return rc;
        lv->reserved = own;
        b->reserved += own;
        b->n_live++;
        if (ended) end_sample(b, b->n_live - 1);
    }
    return 0;
}

/* one token of every live sample, in one forward */
static int step(batch *b) {
    size_t L = b->n_live;
    int32_t vocab = b->m->cfg.vocab;
    zen_gen_chunk *chunks = zen_malloc(L * sizeof(zen_gen_chunk));
    if (!chunks) return ZEN_ERR_INTERNAL;
    int rc = 0;
    for (size_t k = 0; k < L && !rc; k++) {
        live *lv = &b->live[k];
        size_t before = b->g.cache.n_free;
        rc = zen_kv_seq_grow(&b->g.cache, &lv->seq, lv->seq.len + 1);
        /* pages it took (a copied page whose last other holder let go comes back: n_free counts it) */
        size_t took = before > b->g.cache.n_free ? before - b->g.cache.n_free : 0;
        took = took < lv->reserved ? took : lv->reserved;
        lv->reserved -= took, b->reserved -= took;
        chunks[k] = (zen_gen_chunk){&lv->seq, &lv->next, 1};
    }
    if (!rc) rc = zen_gen_forward(&b->g, chunks, L, b->logits);
    free(chunks);
    if (rc) return rc;
    b->st->steps++;
    if (L > b->st->peak_rows) b->st->peak_rows = L;
    /* draw each sample's next token; those that end leave (from the back, so the rows' order holds) */
    int *ended = zen_calloc(L, sizeof(int));
    if (!ended) return ZEN_ERR_INTERNAL;
    for (size_t k = 0; k < L && !rc; k++) {
        live *lv = &b->live[k];
        rc = draw(b, &b->groups[lv->request].out[lv->index], &lv->cap, &lv->rng, b->logits + k * (size_t)vocab,
                  &lv->next, &ended[k]);
    }
    for (size_t k = L; k-- > 0 && !rc;)
        if (ended[k]) end_sample(b, k);
    free(ended);
    return rc;
}

int zen_generate_batch(const zen_model *m, const zen_lora *lo, const zen_gen_request *requests, size_t n_requests,
                       const zen_gen_batch_opts *o, zen_gen_done done, void *ctx, zen_gen_batch_stats *stats) {
    memset(stats, 0, sizeof *stats);
    if (o->max_new < 1 || o->max_rows < 1 || o->max_rows > ZK_DECODE_ROWS || o->prefill_chunk < 1)
        return zen_fail(ZEN_ERR_INPUT, "generation: max_new %zu and the prefill chunk %zu must be at least 1, max_rows "
                        "%zu from 1 to %d", o->max_new, o->prefill_chunk, o->max_rows, ZK_DECODE_ROWS);
    size_t longest = 1, total = 0;
    for (size_t i = 0; i < n_requests; i++) {
        if (requests[i].prompt_len < 1 || requests[i].samples < 1)
            return zen_fail(ZEN_ERR_INPUT, "generation: request %zu has %zu prompt tokens and %d samples", i,
                            requests[i].prompt_len, requests[i].samples);
        if (requests[i].prompt_len + o->max_new > (size_t)m->cfg.max_positions)
            return zen_fail(ZEN_ERR_INPUT, "generation: request %zu's %zu prompt tokens + %zu new exceed the model's "
                            "max_position_embeddings %d", i, requests[i].prompt_len, o->max_new,
                            m->cfg.max_positions);
        if (requests[i].prompt_len > longest) longest = requests[i].prompt_len;
        total += (size_t)requests[i].samples;
    }
    if (!n_requests) return 0;
    size_t rows = o->max_rows < total ? o->max_rows : total;
    size_t seq_pages = zen_kv_pages_for(longest + o->max_new, PAGE_ROWS);
    size_t page_bytes = zen_kv_page_bytes(m->be, &m->cfg, PAGE_ROWS);
    size_t pages = o->max_cache_bytes ? o->max_cache_bytes / page_bytes : rows * seq_pages + seq_pages;
    if (pages < 1) pages = 1;
    batch b;
    memset(&b, 0, sizeof b);
    b.m = m, b.req = requests, b.n_req = n_requests, b.o = o, b.st = stats;
    int rc = zen_gen_create(&b.g, m, lo, pages, PAGE_ROWS, rows > o->prefill_chunk ? rows : o->prefill_chunk, rows,
                            rows * seq_pages);
    b.groups = zen_calloc(n_requests, sizeof(group));
    b.live = zen_calloc(rows, sizeof(live));
    b.logits = zen_malloc(rows * (size_t)m->cfg.vocab * sizeof(float));
    if (!rc && (!b.groups || !b.live || !b.logits)) rc = ZEN_ERR_INTERNAL;
    for (size_t i = 0; i < n_requests && !rc; i++)
        if (!(b.groups[i].out = zen_calloc((size_t)requests[i].samples, sizeof(zen_gen_sample)))) rc = ZEN_ERR_INTERNAL;
    stats->cache_bytes = pages * page_bytes, stats->page_rows = PAGE_ROWS;
    double t0 = now_s();
    size_t next_req = 0;
    while (!rc && (next_req < n_requests || b.n_live)) {
        if ((rc = admit(&b, &next_req))) break;
        if (b.n_live && (rc = step(&b))) break;
        /* hand back, in order, the requests whose samples all ended */
        while (!rc && b.emitted < n_requests && b.groups[b.emitted].ended == requests[b.emitted].samples) {
            group *gr = &b.groups[b.emitted];
            stats->prompts++, stats->samples += (size_t)requests[b.emitted].samples;
            if (done) rc = done(ctx, b.emitted, gr->out, requests[b.emitted].samples);
            for (int s = 0; s < requests[b.emitted].samples; s++) {
                free(gr->out[s].ids);
                free(gr->out[s].logprobs);
                free(gr->out[s].logits);
            }
            free(gr->out);
            gr->out = NULL;
            b.emitted++;
        }
    }
    stats->seconds = now_s() - t0;
    stats->peak_cache_bytes = b.g.cache.peak_used * page_bytes;
    /* what is left after a failure */
    while (b.n_live) end_sample(&b, b.n_live - 1);
    for (size_t i = 0; b.groups && i < n_requests; i++) {
        group *gr = &b.groups[i];
        if (b.g.m) zen_kv_seq_release(&b.g.cache, &gr->prompt);
        zen_kv_seq_free(&gr->prompt);
        free(gr->first);
        for (int s = 0; gr->out && s < requests[i].samples; s++) {
            free(gr->out[s].ids);
            free(gr->out[s].logprobs);
            free(gr->out[s].logits);
        }
        free(gr->out);
    }
    free(b.groups);
    free(b.live);
    free(b.logits);
    zen_gen_free(&b.g);
    return rc;
}
