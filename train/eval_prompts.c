/* train/eval_prompts.c: generation-based evaluation (see eval_prompts.h):
 * the prompts through model/generate_batch.h, every completion through the
 * reward functions of objectives/rewards.h, as GRPO rewards them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../data/pairs.h"
#include "../model/generate_batch.h"
#include "../objectives/rewards.h"
#include "../util/error.h"
#include "eval_prompts.h"

typedef struct {
    const zen_dataset *d;
    const zen_tokenizer *t;
    zen_rewards *r;
    zen_prompts_result *out;
    double *sum, *count, total, total_n;
} eval_ctx;


/* a prompt's samples, rewarded */
static int scored(void *ctx, size_t request, const zen_gen_sample *s, int n) {
    eval_ctx *c = ctx;
    int C = zen_rewards_count(c->r), rc = 0;
    const char *rec = NULL;
    size_t rec_len = 0;
    size_t plen = zen_record_doc_len(c->d, (int64_t)request, 0);
    int32_t *prompt = zen_malloc((plen ? plen : 1) * sizeof(int32_t));
    zen_reward_item *items = zen_calloc((size_t)n, sizeof(zen_reward_item));
    char **texts = zen_calloc((size_t)n + 1, sizeof(char *));
    double *per = zen_calloc((size_t)n * (size_t)C + 1, sizeof(double)), *total = zen_calloc((size_t)n, sizeof(double));
    if (!prompt || !items || !texts || !per || !total) rc = ZEN_ERR_INTERNAL;
    if (!rc) rc = zen_record_doc_read(c->d, (int64_t)request, 0, prompt);
    if (!rc) rc = zen_record_json(c->d, (int64_t)request, &rec, &rec_len);
    if (!rc && !(texts[n] = zen_tokenizer_utf8(c->t, prompt, plen, 0))) rc = ZEN_ERR_INTERNAL;
    for (int k = 0; k < n && !rc; k++) {
        if (!(texts[k] = zen_tokenizer_utf8(c->t, s[k].ids, s[k].n, 1))) rc = ZEN_ERR_INTERNAL;
        items[k] = (zen_reward_item){texts[n], texts[k], s[k].ids, s[k].n, rec, rec_len, (long)request, k};
        c->out->tokens += s[k].n;
    }
    if (!rc) rc = zen_rewards_score(c->r, items, (size_t)n, per, total, NULL);
    for (int k = 0; k < n && !rc; k++) {
        for (int j = 0; j < C; j++)
            if (!isnan(per[k * C + j])) c->sum[j] += per[k * C + j], c->count[j]++;
        if (!isnan(total[k])) c->total += total[k], c->total_n++;
    }
    for (int k = 0; texts && k <= n; k++) free(texts[k]);
    free(texts);
    free(items);
    free(per);
    free(total);
    free(prompt);
    return rc;
}

int zen_eval_prompts(const zen_model *m, const zen_lora *lo, const zen_tokenizer *t, const char *path,
                     const char *rewards, const char *weights, int n, size_t max_new, const zen_sampling *s,
                     unsigned long long seed, zen_prompts_result *out) {
    memset(out, 0, sizeof *out);
    zen_dataset d;
    memset(&d, 0, sizeof d);
    zen_rewards *r = NULL;
    int rc = zen_dataset_open(&d, path, m->cfg.vocab);
    if (!rc) rc = zen_records_check(&d, ZEN_RECORDS_PROMPTS);
    if (!rc) rc = zen_rewards_create(&r, rewards, weights, (long)max_new, "--reward");
    if (!rc && zen_rewards_count(r) > ZEN_EVAL_MAX_REWARDS)
        rc = zen_fail(ZEN_ERR_INPUT, "--reward: at most %d rewards", ZEN_EVAL_MAX_REWARDS);
    zen_gen_request *req = rc ? NULL : zen_calloc((size_t)d.n_records, sizeof(zen_gen_request));
    int32_t **prompts = rc ? NULL : zen_calloc((size_t)d.n_records, sizeof(int32_t *));
    if (!rc && (!req || !prompts)) rc = ZEN_ERR_INTERNAL;
    for (int64_t i = 0; i < d.n_records && !rc; i++) {
        size_t P = zen_record_doc_len(&d, i, 0);
        if (!(prompts[i] = zen_malloc(P * sizeof(int32_t)))) rc = ZEN_ERR_INTERNAL;
        if (!rc) rc = zen_record_doc_read(&d, i, 0, prompts[i]);
        req[i] = (zen_gen_request){prompts[i], P, n, (uint64_t)i};
    }
    double sum[ZEN_EVAL_MAX_REWARDS] = {0}, count[ZEN_EVAL_MAX_REWARDS] = {0};
    eval_ctx c = {&d, t, r, out, sum, count, 0, 0};
    int32_t stop[2] = {zen_tokenizer_eos(t), zen_tokenizer_token_id(t, "<|im_end|>")};
    zen_gen_batch_opts o = {*s, seed, max_new, stop, 2, NULL, NULL, ZK_DECODE_ROWS, 0, 1024, 0};
    zen_gen_batch_stats st;
    if (!rc) rc = zen_generate_batch(m, lo, req, (size_t)d.n_records, &o, scored, &c, &st);
    if (!rc) {
        out->prompts = st.prompts, out->samples = st.samples, out->seconds = st.seconds;
        out->n_rewards = zen_rewards_count(r);
        for (int j = 0; j < out->n_rewards; j++) {
            snprintf(out->names[j], sizeof out->names[j], "%s", zen_rewards_name(r, j));
            out->mean[j] = count[j] ? sum[j] / count[j] : NAN;
        }
        out->reward = c.total_n ? c.total / c.total_n : NAN;
    }
    for (int64_t i = 0; prompts && i < d.n_records; i++) free(prompts[i]);
    free(prompts);
    free(req);
    zen_rewards_free(r);
    zen_dataset_close(&d);
    return rc;
}
