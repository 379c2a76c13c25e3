/* objectives/pref_step.c: a micro-batch of preference pairs (see pref_step.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "pref_step.h"

double zen_pref_nll_tokens(const zen_pref_opts *o, const zen_pair_batch *b) {
    if (o->kind != ZEN_PREF_ORPO) return 0.0;
    double n = 0.0;
    for (size_t i = 0; i < b->N; i++)
        n += b->mask[i] && (b->row_kind[i] == 0 || (b->row_kind[i] == ZEN_ROW_PROMPT && o->nll_prompt));
    return n;
}

int zen_pref_run(const zen_pref_ctx *c, const zen_pair_batch *b, const zen_model *m, const zen_lora *lo, zen_acts *a,
                 uint64_t dropout_seed, double pairs_total, double nll_tokens_total, int backward, zen_pref_sums *acc) {
    const zen_pref_opts *o = &c->opts;
    size_t G = b->groups, N = b->N;
    int orpo = o->kind == ZEN_PREF_ORPO;
    double *ref = zen_calloc(2 * G + 1, sizeof(double)), *pol = zen_calloc(2 * G + 1, sizeof(double));
    double *cnt = zen_calloc(2 * G + 1, sizeof(double)), *d = zen_calloc(2 * G + 1, sizeof(double));
    float *row_loss = zen_malloc((N ? N : 1) * sizeof(float)), *w = zen_malloc((N ? N : 1) * sizeof(float));
    int rc = ref && pol && cnt && d && row_loss && w ? 0 : ZEN_ERR_INTERNAL;
    if (!rc && o->kind == ZEN_PREF_DPO) {
        if (c->ref_logps) memcpy(ref, c->ref_logps, 2 * G * sizeof(double));
        else rc = zen_pair_batch_logps(b, m, c->ref, a, 0, 2, ref, NULL); /* the reference: no dropout */
    }
    a->head_grad_in_forward = backward; /* the head's backward fused into the policy's forward */
    if (!rc) rc = zen_pair_batch_forward(b, m, lo, a, dropout_seed, row_loss);
    a->head_grad_in_forward = 0;
    if (!rc) {
        zen_pair_batch_sums(b, row_loss, 2, pol, cnt);
        for (size_t g = 0; g < G; g++) {
            zen_pair_logps lp = {pol[2 * g], pol[2 * g + 1], cnt[2 * g], cnt[2 * g + 1], ref[2 * g], ref[2 * g + 1]};
            zen_pref_pair(o, &lp, &d[2 * g], &d[2 * g + 1], acc);
        }
        /* ORPO's NLL: the chosen sequence's counted rows */
        for (size_t n = 0; n < N && orpo; n++)
            if (b->mask[n] && (b->row_kind[n] == 0 || (b->row_kind[n] == ZEN_ROW_PROMPT && o->nll_prompt))) {
                if (acc) acc->sum[ZEN_PM_NLL_LOSS] += row_loss[n];
                if (acc) acc->nll_tokens += 1.0;
            }
        /* dLoss/dloss[n]: log-probabilities are minus the summed token losses */
        for (size_t n = 0; n < N; n++) {
            int32_t k = b->row_kind[n];
            double wn = 0.0;
            if (k == 0 || k == 1) wn = -d[2 * (size_t)b->row_group[n] + (size_t)k] / pairs_total;
            if (orpo && (k == 0 || (k == ZEN_ROW_PROMPT && o->nll_prompt))) wn += 1.0 / nll_tokens_total;
            w[n] = (float)wn;
        }
    }
    if (!rc && backward) rc = zen_pair_batch_backward(b, m, lo, a, w);
    free(ref);
    free(pol);
    free(cnt);
    free(d);
    free(row_loss);
    free(w);
    return rc;
}
