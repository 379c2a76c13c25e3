/* model/generate.c: the forward of generation over the paged KV cache, one
 * sequence on it, and sampling (see generate.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "generate.h"

#define PAGE_ROWS 16 /* positions per page of the KV cache */

int zen_gen_create(zen_gen *g, const zen_model *m, const zen_lora *lo, size_t pages, size_t page_rows,
                   size_t max_rows, size_t max_chunks, size_t max_pages) {
    memset(g, 0, sizeof *g);
    zk_backend *be = m->be;
    const zen_config *cfg = &m->cfg;
    if (!be->attention_paged_fwd)
        return zen_fail(ZEN_ERR_INPUT, "device '%s': generation runs on the CPU for now (--device cpu)", be->name);
    if (max_rows < 1 || max_chunks < 1 || max_chunks > max_rows || max_pages < 1)
        return zen_fail(ZEN_ERR_INTERNAL, "generation: %zu rows in %zu chunks over %zu pages", max_rows, max_chunks,
                        max_pages);
    g->m = m, g->lo = lo, g->max_rows = max_rows, g->max_chunks = max_chunks, g->max_pages = max_pages;
    int rc = zen_kv_pages_create(&g->cache, be, cfg, pages, page_rows);
    if (rc) return rc;
    size_t n = max_rows, C = (size_t)cfg->hidden, F = (size_t)cfg->intermediate;
    size_t qd = (size_t)cfg->heads * (size_t)cfg->head_dim, kvd = (size_t)cfg->kv_heads * (size_t)cfg->head_dim;
    size_t wide = C > qd ? C : qd, r = lo ? (size_t)lo->r : 1;
    struct { float **p; size_t elems; } bufs[] = {
        {&g->x, n * C}, {&g->xn, n * wide},
        {&g->q, n * qd}, {&g->kk, n * kvd}, {&g->vv, n * kvd}, {&g->att, n * qd}, {&g->tmp, n * wide},
        {&g->gate, n * F}, {&g->up, n * F}, {&g->h, n * F}, {&g->rstd, n * (size_t)cfg->heads},
        {&g->u, n * r}, {&g->last, max_chunks * C}, {&g->logits, max_chunks * (size_t)cfg->vocab}};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (!(*bufs[i].p = be->alloc(be, bufs[i].elems * sizeof(float)))) {
            zen_gen_free(g);
            return ZEN_ERR_INTERNAL;
        }
    struct { int32_t **p; size_t elems; } ints[] = {
        {&g->tokens, n}, {&g->pos, n}, {&g->table_of, n}, {&g->tables, max_pages}, {&g->last_rows, max_chunks}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (!(*ints[i].p = be->alloc(be, ints[i].elems * sizeof(int32_t)))) {
            zen_gen_free(g);
            return ZEN_ERR_INTERNAL;
        }
    if (!(g->host_ints = zen_malloc((2 * n + max_pages + max_chunks) * sizeof(int32_t)))) {
        zen_gen_free(g);
        return ZEN_ERR_INTERNAL;
    }
    return 0;
}

/* y[n,out] = x W^T + scale (x A^T) B^T: the adapter unmerged, no dropout */
static void project(zen_gen *g, int l, zen_target t, float *y, const float *x, size_t n) {
    const zen_model *m = g->m;
    zk_backend *be = m->be;
    int in, out;
    zen_target_dims(&m->cfg, t, &in, &out);
    be->linear_fwd(be, y, x, &m->layers[l].proj[t], n, (size_t)in, (size_t)out);
    if (zen_lora_has(g->lo, t)) {
        zk_dropout none = {0.0f, 0};
        be->lora_fwd(be, y, g->u, x, zen_lora_A(g->lo, g->lo->params, l, t), zen_lora_B(g->lo, g->lo->params, l, t),
                     n, (size_t)in, (size_t)out, (size_t)g->lo->r, g->lo->scale, &none);
        /* DoRA, unmerged: y = g (x W^T + s x A^T B^T) (model/dora.h; zen_dora_setup made g) */
        if (g->lo->dora) be->scale_cols(be, y, y, zen_lora_G(g->lo, g->lo->dora_g, l, t), n, (size_t)out, 0);
    }
}

/* the rows of the chunks: tokens, positions, page tables; pages taken */
static int lay_out(zen_gen *g, const zen_gen_chunk *chunks, size_t n_chunks, size_t *rows, size_t *keys_max) {
    const zen_config *cfg = &g->m->cfg;
    size_t n = 0, pages = 0;
    for (size_t c = 0; c < n_chunks; c++) {
        const zen_gen_chunk *ch = &chunks[c];
        size_t end = ch->seq->len + ch->n;
        if (ch->n == 0 || end > (size_t)cfg->max_positions)
            return zen_fail(ZEN_ERR_INPUT, "generation: %zu more tokens after %zu exceed the model's "
                            "max_position_embeddings %d", ch->n, ch->seq->len, cfg->max_positions);
        for (size_t i = 0; i < ch->n; i++)
            if (ch->tokens[i] < 0 || ch->tokens[i] >= cfg->vocab)
                return zen_fail(ZEN_ERR_INPUT, "token id %d is outside the model's vocabulary of %d", ch->tokens[i],
                                cfg->vocab);
        n += ch->n;
        pages += zen_kv_pages_for(end, g->cache.page_rows);
    }
    if (n_chunks == 0 || n_chunks > g->max_chunks || n > g->max_rows || pages > g->max_pages)
        return zen_fail(ZEN_ERR_INTERNAL, "generation: %zu rows in %zu chunks over %zu pages exceed the forward's "
                        "%zu, %zu and %zu", n, n_chunks, pages, g->max_rows, g->max_chunks, g->max_pages);
    int32_t *pos = g->host_ints, *table_of = pos + g->max_rows, *tables = table_of + g->max_rows;
    int32_t *last_rows = tables + g->max_pages;
    zk_backend *be = g->m->be;
    size_t row = 0, at = 0;
    *keys_max = 0;
    for (size_t c = 0; c < n_chunks; c++) {
        zen_kv_seq *seq = chunks[c].seq;
        int rc = zen_kv_seq_grow(&g->cache, seq, seq->len + chunks[c].n);
        if (rc) return rc;
        be->upload(be, g->tokens + row, chunks[c].tokens, chunks[c].n * sizeof(int32_t));
        for (size_t i = 0; i < chunks[c].n; i++, row++) pos[row] = (int32_t)(seq->len + i), table_of[row] = (int32_t)at;
        memcpy(tables + at, seq->pages, seq->n_pages * sizeof(int32_t));
        at += seq->n_pages;
        last_rows[c] = (int32_t)(row - 1);
        if (seq->len + chunks[c].n > *keys_max) *keys_max = seq->len + chunks[c].n;
    }
    be->upload(be, g->pos, pos, n * sizeof(int32_t));
    be->upload(be, g->table_of, table_of, n * sizeof(int32_t));
    be->upload(be, g->tables, tables, at * sizeof(int32_t));
    be->upload(be, g->last_rows, last_rows, n_chunks * sizeof(int32_t));
    *rows = n;
    return 0;
}

int zen_gen_forward(zen_gen *g, const zen_gen_chunk *chunks, size_t n_chunks, float *logits_host) {
    const zen_model *m = g->m;
    const zen_config *cfg = &m->cfg;
    zk_backend *be = m->be;
    size_t n = 0, keys_max = 0;
    int rc = lay_out(g, chunks, n_chunks, &n, &keys_max);
    if (rc) return rc;
    size_t C = (size_t)cfg->hidden, F = (size_t)cfg->intermediate, nh = (size_t)cfg->heads;
    size_t nkv = (size_t)cfg->kv_heads, hd = (size_t)cfg->head_dim, T = (size_t)cfg->max_positions;
    be->embedding_fwd(be, g->x, g->tokens, &m->embed, n, C);
    for (int l = 0; l < cfg->layers; l++) {
        const zen_layer_weights *w = &m->layers[l];
        void *kc = (char *)g->cache.k + (size_t)l * g->cache.layer_bytes; /* this layer's pages */
        void *vc = (char *)g->cache.v + (size_t)l * g->cache.layer_bytes;
        be->rmsnorm_fwd(be, g->xn, g->rstd, g->x, w->attn_norm, n, C, cfg->rms_eps);
        project(g, l, ZT_Q, g->tmp, g->xn, n);
        project(g, l, ZT_K, g->att, g->xn, n); /* att: k before its norm, free until attention */
        project(g, l, ZT_V, g->vv, g->xn, n);
        be->rmsnorm_fwd(be, g->q, g->rstd, g->tmp, w->q_norm, n * nh, hd, cfg->rms_eps);
        be->rmsnorm_fwd(be, g->kk, g->rstd, g->att, w->k_norm, n * nkv, hd, cfg->rms_eps);
        be->rope_fwd(be, g->q, g->pos, n, T, nh, hd, cfg->rope_theta);
        be->rope_fwd(be, g->kk, g->pos, n, T, nkv, hd, cfg->rope_theta);
        /* k, v into each row's slot of its pages, and attention over its sequence */
        be->attention_paged_fwd(be, g->att, g->q, g->kk, g->vv, kc, vc, g->pos, g->table_of, g->tables, n, keys_max,
                                g->cache.page_rows, nh, nkv, hd);
        project(g, l, ZT_O, g->tmp, g->att, n);
        be->add(be, g->x, g->x, g->tmp, n * C);
        be->rmsnorm_fwd(be, g->xn, g->rstd, g->x, w->ffn_norm, n, C, cfg->rms_eps);
        project(g, l, ZT_GATE, g->gate, g->xn, n);
        project(g, l, ZT_UP, g->up, g->xn, n);
        be->swiglu_fwd(be, g->h, g->gate, g->up, n * F);
        project(g, l, ZT_DOWN, g->tmp, g->h, n);
        be->add(be, g->x, g->x, g->tmp, n * C);
    }
    /* each chunk's last row through the final norm and the head */
    be->gather_rows(be, g->last, g->x, g->last_rows, n_chunks, C);
    be->rmsnorm_fwd(be, g->xn, g->rstd, g->last, m->final_norm, n_chunks, C, cfg->rms_eps);
    be->linear_fwd(be, g->logits, g->xn, &m->lm_head, n_chunks, C, (size_t)cfg->vocab);
    if ((rc = zk_status(be))) return rc;
    be->download(be, logits_host, g->logits, n_chunks * (size_t)cfg->vocab * sizeof(float));
    for (size_t c = 0; c < n_chunks; c++) chunks[c].seq->len += chunks[c].n;
    return 0;
}

void zen_gen_free(zen_gen *g) {
    zk_backend *be = g->m ? g->m->be : NULL;
    if (!be) return;
    void *bufs[] = {g->x, g->xn, g->q, g->kk, g->vv, g->att, g->tmp, g->gate, g->up, g->h, g->rstd, g->u, g->last,
                    g->logits, g->tokens, g->pos, g->table_of, g->tables, g->last_rows};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->free(be, bufs[i]);
    free(g->host_ints);
    zen_kv_pages_free(&g->cache);
    memset(g, 0, sizeof *g);
}

int zen_kv_create(zen_kv *c, const zen_model *m, const zen_lora *lo, size_t max_tokens, size_t max_chunk) {
    memset(c, 0, sizeof *c);
    if (max_tokens > (size_t)m->cfg.max_positions)
        return zen_fail(ZEN_ERR_INPUT, "%zu tokens exceed the model's max_position_embeddings %d", max_tokens,
                        m->cfg.max_positions);
    size_t pages = zen_kv_pages_for(max_tokens ? max_tokens : 1, PAGE_ROWS);
    c->max_tokens = max_tokens, c->max_chunk = max_chunk;
    return zen_gen_create(&c->g, m, lo, pages, PAGE_ROWS, max_chunk, 1, pages);
}

int zen_kv_feed(zen_kv *c, const int32_t *tokens, size_t n, float *logits_host) {
    if (n == 0 || n > c->max_chunk || c->len + n > c->max_tokens)
        return zen_fail(ZEN_ERR_INPUT, "generation: %zu more tokens after %zu do not fit the cache of %zu", n, c->len,
                        c->max_tokens);
    zen_gen_chunk chunk = {&c->seq, tokens, n};
    int rc = zen_gen_forward(&c->g, &chunk, 1, logits_host);
    if (!rc) c->len = c->seq.len;
    return rc;
}

void zen_kv_free(zen_kv *c) {
    zen_kv_seq_release(&c->g.cache, &c->seq);
    zen_kv_seq_free(&c->seq);
    zen_gen_free(&c->g);
    memset(c, 0, sizeof *c);
}

static int by_prob_desc(const void *a, const void *b) {
    const float *x = a, *y = b; /* pairs (prob, id) */
    if (x[0] != y[0]) return x[0] < y[0] ? 1 : -1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

/* moves the k best pairs (by_prob_desc's order, a total order) to the front, sorted: a heap of the k best seen
 * (its root the worst of them), then a sort of those k; the same k pairs in the same order as sorting all */
static void top_pairs(float *pairs, int32_t n, int32_t k) {
    float *heap = pairs; /* the first k slots hold the heap */
    for (int32_t i = 0; i < n; i++) {
        float cand[2] = {pairs[2 * i], pairs[2 * i + 1]};
        int32_t at;
        if (i < k) { /* grow: sift the new one up */
            at = i;
            while (at > 0 && by_prob_desc(cand, heap + 2 * ((at - 1) / 2)) > 0) {
                heap[2 * at] = heap[2 * ((at - 1) / 2)], heap[2 * at + 1] = heap[2 * ((at - 1) / 2) + 1];
                at = (at - 1) / 2;
            }
        } else { /* better than the worst kept: it takes the root's place and sifts down */
            if (by_prob_desc(cand, heap) >= 0) continue;
            at = 0;
            for (;;) {
                int32_t c = 2 * at + 1;
                if (c >= k) break;
                if (c + 1 < k && by_prob_desc(heap + 2 * (c + 1), heap + 2 * c) > 0) c++; /* the worse child */
                if (by_prob_desc(heap + 2 * c, cand) <= 0) break;
                heap[2 * at] = heap[2 * c], heap[2 * at + 1] = heap[2 * c + 1];
                at = c;
            }
        }
        heap[2 * at] = cand[0], heap[2 * at + 1] = cand[1];
    }
    qsort(heap, (size_t)k, 2 * sizeof(float), by_prob_desc);
}

int32_t zen_sample(const float *logits, int32_t vocab, const zen_sampling *s, zen_rng *rng) {
    int32_t best = 0;
    for (int32_t i = 1; i < vocab; i++)
        if (logits[i] > logits[best]) best = i;
    if (!(s->temperature > 0.0f)) return best;
    float *pairs = malloc((size_t)vocab * 2 * sizeof(float)); /* [vocab] (probability, id), sorted */
    if (!pairs) return best;
    double sum = 0.0;
    for (int32_t i = 0; i < vocab; i++) {
        double e = exp(((double)logits[i] - logits[best]) / s->temperature);
        pairs[2 * i] = (float)e, pairs[2 * i + 1] = (float)i;
        sum += e;
    }
    for (int32_t i = 0; i < vocab; i++) pairs[2 * i] = (float)(pairs[2 * i] / sum);
    int32_t keep = s->top_k > 0 && s->top_k < vocab ? s->top_k : vocab;
    if (keep == vocab && !(s->top_p < 1.0f) && !(s->min_p > 0.0f)) {
        /* nothing cut: the walk in id order draws from the same distribution without sorting the vocabulary
         * (GRPO's default sampling; a sort of 151,936 per row was most of a decode step) */
        double total = 0.0, acc = 0.0;
        for (int32_t i = 0; i < vocab; i++) total += pairs[2 * i];
        double u = (double)zen_rng_uniform(rng) * total;
        int32_t pick = vocab - 1;
        for (int32_t i = 0; i < vocab; i++)
            if ((acc += pairs[2 * i]) > u) {
                pick = i;
                break;
            }
        free(pairs);
        return pick;
    }
    if (keep < vocab) top_pairs(pairs, vocab, keep); /* the keep best, sorted, as the whole sort's first keep */
    else qsort(pairs, (size_t)vocab, 2 * sizeof(float), by_prob_desc);
    if (s->top_p < 1.0f) {
        double cum = 0.0;
        for (int32_t i = 0; i < keep; i++)
            if ((cum += pairs[2 * i]) >= s->top_p) {
                keep = i + 1;
                break;
            }
    }
    if (s->min_p > 0.0f)
        for (int32_t i = 1; i < keep; i++)
            if (pairs[2 * i] < s->min_p * pairs[0]) {
                keep = i;
                break;
            }
    double total = 0.0;
    for (int32_t i = 0; i < keep; i++) total += pairs[2 * i];
    double u = (double)zen_rng_uniform(rng) * total, acc = 0.0;
    int32_t pick = (int32_t)pairs[2 * (keep - 1) + 1];
    for (int32_t i = 0; i < keep; i++)
        if ((acc += pairs[2 * i]) > u) {
            pick = (int32_t)pairs[2 * i + 1];
            break;
        }
    free(pairs);
    return pick;
}

double zen_token_logprob(const float *logits, int32_t vocab, int32_t id) {
    float top = logits[0];
    for (int32_t i = 1; i < vocab; i++) top = logits[i] > top ? logits[i] : top;
    double sum = 0.0;
    for (int32_t i = 0; i < vocab; i++) sum += exp((double)logits[i] - top);
    return (double)logits[id] - top - log(sum);
}

void zen_sample_stream(zen_rng *rng, uint64_t seed, uint64_t prompt, uint64_t sample) {
    zen_rng mix;
    zen_rng_seed(&mix, seed);
    uint64_t a = zen_rng_next(&mix);
    zen_rng_seed(&mix, a ^ prompt);
    uint64_t b = zen_rng_next(&mix);
    zen_rng_seed(&mix, b ^ sample);
    zen_rng_seed(rng, zen_rng_next(&mix));
}

int zen_kv_generate(zen_kv *c, float *logits, const zen_sampling *s, zen_rng *rng, size_t max_new,
                    const int32_t *stop, int n_stop, int (*on_token)(void *ctx, int32_t id), void *ctx,
                    size_t *made, int32_t *last, int *stopped) {
    int rc = 0;
    *made = 0, *last = -1, *stopped = 0;
    while (!rc && *made < max_new) {
        int32_t next = zen_sample(logits, c->g.m->cfg.vocab, s, rng);
        (*made)++;
        *last = next;
        for (int i = 0; i < n_stop; i++) *stopped |= next == stop[i];
        if (on_token && (rc = on_token(ctx, next))) break;
        if (*stopped || *made == max_new) break;
        rc = zen_kv_feed(c, &next, 1, logits);
    }
    return rc;
}
