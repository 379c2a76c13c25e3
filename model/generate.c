/* model/generate.c: the KV-cache forward of one sequence, and sampling (see generate.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "generate.h"

int zen_kv_create(zen_kv *c, const zen_model *m, const zen_lora *lo, size_t max_tokens, size_t max_chunk) {
    memset(c, 0, sizeof *c);
    zk_backend *be = m->be;
    const zen_config *cfg = &m->cfg;
    if (!be->attention_cached_fwd)
        return zen_fail(ZEN_ERR_INPUT, "device '%s': generation runs on the CPU for now (--device cpu)", be->name);
    if (max_tokens > (size_t)cfg->max_positions)
        return zen_fail(ZEN_ERR_INPUT, "%zu tokens exceed the model's max_position_embeddings %d", max_tokens,
                        cfg->max_positions);
    c->m = m, c->lo = lo, c->max_tokens = max_tokens, c->max_chunk = max_chunk;
    size_t L = (size_t)cfg->layers, n = max_chunk, C = (size_t)cfg->hidden, F = (size_t)cfg->intermediate;
    size_t qd = (size_t)cfg->heads * (size_t)cfg->head_dim, kvd = (size_t)cfg->kv_heads * (size_t)cfg->head_dim;
    size_t wide = C > qd ? C : qd, r = lo ? (size_t)lo->r : 1;
    size_t cache_bytes = L * max_tokens * kvd * zk_cache_bytes(be); /* in the compute precision */
    if (!(c->k = be->alloc(be, cache_bytes)) || !(c->v = be->alloc(be, cache_bytes))) {
        zen_kv_free(c);
        return ZEN_ERR_INTERNAL;
    }
    struct { float **p; size_t elems; } bufs[] = {
        {&c->x, n * C}, {&c->xn, n * wide},
        {&c->q, n * qd}, {&c->kk, n * kvd}, {&c->vv, n * kvd}, {&c->att, n * qd}, {&c->tmp, n * wide},
        {&c->gate, n * F}, {&c->up, n * F}, {&c->h, n * F}, {&c->rstd, n * (size_t)cfg->heads},
        {&c->u, n * r}, {&c->logits, (size_t)cfg->vocab}};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (!(*bufs[i].p = be->alloc(be, bufs[i].elems * sizeof(float)))) {
            zen_kv_free(c);
            return ZEN_ERR_INTERNAL;
        }
    if (!(c->tokens = be->alloc(be, n * sizeof(int32_t))) || !(c->pos = be->alloc(be, n * sizeof(int32_t)))) {
        zen_kv_free(c);
        return ZEN_ERR_INTERNAL;
    }
    return 0;
}

/* y[n,out] = x W^T + scale (x A^T) B^T: the adapter unmerged, no dropout */
static void project(zen_kv *c, int l, zen_target t, float *y, const float *x, size_t n) {
    const zen_model *m = c->m;
    zk_backend *be = m->be;
    int in, out;
    zen_target_dims(&m->cfg, t, &in, &out);
    be->linear_fwd(be, y, x, &m->layers[l].proj[t], n, (size_t)in, (size_t)out);
    if (zen_lora_has(c->lo, t)) {
        zk_dropout none = {0.0f, 0};
        be->lora_fwd(be, y, c->u, x, zen_lora_A(c->lo, c->lo->params, l, t), zen_lora_B(c->lo, c->lo->params, l, t),
                     n, (size_t)in, (size_t)out, (size_t)c->lo->r, c->lo->scale, &none);
        /* DoRA, unmerged: y = g (x W^T + s x A^T B^T) (model/dora.h; zen_dora_setup made g) */
        if (c->lo->dora) be->scale_cols(be, y, y, zen_lora_G(c->lo, c->lo->dora_g, l, t), n, (size_t)out, 0);
    }
}

int zen_kv_feed(zen_kv *c, const int32_t *tokens, size_t n, float *logits_host) {
    const zen_model *m = c->m;
    const zen_config *cfg = &m->cfg;
    zk_backend *be = m->be;
    if (n == 0 || n > c->max_chunk || c->len + n > c->max_tokens)
        return zen_fail(ZEN_ERR_INPUT, "generation: %zu more tokens after %zu do not fit the cache of %zu", n, c->len,
                        c->max_tokens);
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= cfg->vocab)
            return zen_fail(ZEN_ERR_INPUT, "token id %d is outside the model's vocabulary of %d", tokens[i], cfg->vocab);
    size_t C = (size_t)cfg->hidden, F = (size_t)cfg->intermediate, nh = (size_t)cfg->heads;
    size_t nkv = (size_t)cfg->kv_heads, hd = (size_t)cfg->head_dim, kvd = nkv * hd, T = c->max_tokens;
    int32_t *host = zen_malloc(n * sizeof(int32_t)); /* positions len .. len + n - 1 */
    if (!host) return ZEN_ERR_INTERNAL;
    for (size_t i = 0; i < n; i++) host[i] = (int32_t)(c->len + i);
    be->upload(be, c->tokens, tokens, n * sizeof(int32_t));
    be->upload(be, c->pos, host, n * sizeof(int32_t));
    free(host);
    be->embedding_fwd(be, c->x, c->tokens, &m->embed, n, C);
    for (int l = 0; l < cfg->layers; l++) {
        const zen_layer_weights *w = &m->layers[l];
        size_t at = (size_t)l * T * kvd * zk_cache_bytes(be); /* this layer's caches [T, kvd] */
        void *kc = (char *)c->k + at, *vc = (char *)c->v + at;
        be->rmsnorm_fwd(be, c->xn, c->rstd, c->x, w->attn_norm, n, C, cfg->rms_eps);
        project(c, l, ZT_Q, c->tmp, c->xn, n);
        project(c, l, ZT_K, c->att, c->xn, n); /* att: k before its norm, free until attention */
        project(c, l, ZT_V, c->vv, c->xn, n);
        be->rmsnorm_fwd(be, c->q, c->rstd, c->tmp, w->q_norm, n * nh, hd, cfg->rms_eps);
        be->rmsnorm_fwd(be, c->kk, c->rstd, c->att, w->k_norm, n * nkv, hd, cfg->rms_eps);
        be->rope_fwd(be, c->q, c->pos, n, T, nh, hd, cfg->rope_theta);
        be->rope_fwd(be, c->kk, c->pos, n, T, nkv, hd, cfg->rope_theta);
        /* k, v into the caches at rows len .. len + n - 1, and attention over them */
        be->attention_cached_fwd(be, c->att, c->q, c->kk, c->vv, kc, vc, n, c->len, nh, nkv, hd);
        project(c, l, ZT_O, c->tmp, c->att, n);
        be->add(be, c->x, c->x, c->tmp, n * C);
        be->rmsnorm_fwd(be, c->xn, c->rstd, c->x, w->ffn_norm, n, C, cfg->rms_eps);
        project(c, l, ZT_GATE, c->gate, c->xn, n);
        project(c, l, ZT_UP, c->up, c->xn, n);
        be->swiglu_fwd(be, c->h, c->gate, c->up, n * F);
        project(c, l, ZT_DOWN, c->tmp, c->h, n);
        be->add(be, c->x, c->x, c->tmp, n * C);
    }
    /* the last row through the final norm and the head */
    const float *last = c->x + (n - 1) * C;
    be->rmsnorm_fwd(be, c->xn, c->rstd, last, m->final_norm, 1, C, cfg->rms_eps);
    be->linear_fwd(be, c->logits, c->xn, &m->lm_head, 1, C, (size_t)cfg->vocab);
    int rc = zk_status(be);
    if (rc) return rc;
    be->download(be, logits_host, c->logits, (size_t)cfg->vocab * sizeof(float));
    c->len += n;
    return 0;
}

void zen_kv_free(zen_kv *c) {
    zk_backend *be = c->m ? c->m->be : NULL;
    if (!be) return;
    void *bufs[] = {c->k, c->v, c->x, c->xn, c->q, c->kk, c->vv, c->att, c->tmp, c->gate, c->up, c->h, c->rstd,
                     c->u, c->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->free(be, bufs[i]);
    if (c->tokens) be->free(be, c->tokens);
    if (c->pos) be->free(be, c->pos);
    memset(c, 0, sizeof *c);
}

static int by_prob_desc(const void *a, const void *b) {
    const float *x = a, *y = b; /* pairs (prob, id) */
    if (x[0] != y[0]) return x[0] < y[0] ? 1 : -1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
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
    qsort(pairs, (size_t)vocab, 2 * sizeof(float), by_prob_desc);
    int32_t keep = s->top_k > 0 && s->top_k < vocab ? s->top_k : vocab;
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

int zen_kv_generate(zen_kv *c, float *logits, const zen_sampling *s, zen_rng *rng, size_t max_new,
                    const int32_t *stop, int n_stop, int (*on_token)(void *ctx, int32_t id), void *ctx,
                    size_t *made, int32_t *last, int *stopped) {
    int rc = 0;
    *made = 0, *last = -1, *stopped = 0;
    while (!rc && *made < max_new) {
        int32_t next = zen_sample(logits, c->m->cfg.vocab, s, rng);
        (*made)++;
        *last = next;
        for (int i = 0; i < n_stop; i++) *stopped |= next == stop[i];
        if (on_token && (rc = on_token(ctx, next))) break;
        if (*stopped || *made == max_new) break;
        rc = zen_kv_feed(c, &next, 1, logits);
    }
    return rc;
}
