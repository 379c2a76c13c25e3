/* objectives/pair_batch.c: preference pairs and multiple-choice records as
 * decoder rows (see pair_batch.h). */
#include <stdlib.h>
#include <string.h>

#include "../data/pairs.h"
#include "../util/error.h"
#include "pair_batch.h"

int zen_pair_batch_alloc(zen_pair_batch *b, size_t cap_rows, size_t cap_att, int shared) {
    memset(b, 0, sizeof *b);
    b->cap_rows = cap_rows;
    b->cap_att = cap_att > cap_rows ? cap_att : cap_rows;
    b->shared = shared;
    size_t n = cap_rows ? cap_rows : 1, x = b->cap_att ? b->cap_att : 1;
    int32_t **arrays[] = {&b->inputs, &b->targets, &b->pos, &b->seg, &b->row_group, &b->row_kind,
                          &b->att_seg, &b->att_from, &b->att_out, &b->att_again};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++)
        if (!(*arrays[i] = zen_malloc((i < 6 ? n : x) * sizeof(int32_t)))) {
            zen_pair_batch_free(b);
            return ZEN_ERR_INTERNAL;
        }
    if (!(b->mask = zen_malloc(n)) || !(b->group_id = zen_malloc(n * sizeof(int64_t)))) {
        zen_pair_batch_free(b);
        return ZEN_ERR_INTERNAL;
    }
    return 0;
}

void zen_pair_batch_free(zen_pair_batch *b) {
    free(b->inputs);
    free(b->targets);
    free(b->pos);
    free(b->seg);
    free(b->row_group);
    free(b->row_kind);
    free(b->att_seg);
    free(b->att_from);
    free(b->att_out);
    free(b->att_again);
    free(b->mask);
    free(b->group_id);
    memset(b, 0, sizeof *b);
}

void zen_pair_batch_clear(zen_pair_batch *b) {
    b->N = 0;
    b->groups = 0;
    b->source = NULL;
    memset(&b->layout, 0, sizeof b->layout);
}

size_t zen_pair_batch_rows(int shared, size_t P, const size_t *cont_len, int k) {
    size_t n = shared ? P - 1 : 0;
    for (int i = 0; i < k; i++) n += (shared ? 0 : P - 1) + cont_len[i];
    return n;
}

/* row n: reads `in`, predicts `target` at position pos */
static void put_row(zen_pair_batch *b, size_t n, int32_t in, int32_t target, int32_t pos, int32_t group, int32_t kind,
                    int loss) {
    b->inputs[n] = in, b->targets[n] = target, b->pos[n] = pos;
    b->row_group[n] = group, b->row_kind[n] = kind, b->mask[n] = (uint8_t)loss;
}

/* the shared layout: prompt rows stay first, so a new group's prompt rows
 * go in after the earlier prompts and every continuation row moves down */
static void add_shared(zen_pair_batch *b, const int32_t *prompt, size_t P, const int32_t *const *cont,
                       const size_t *cont_len, int k, int prompt_loss) {
    size_t S0 = b->layout.twice, grow = P - 1, g = b->groups;
    size_t tail = b->N - S0; /* continuation rows so far */
    /* move the continuation rows down by grow (their attention indices are rebuilt below) */
    memmove(b->inputs + S0 + grow, b->inputs + S0, tail * sizeof(int32_t));
    memmove(b->targets + S0 + grow, b->targets + S0, tail * sizeof(int32_t));
    memmove(b->pos + S0 + grow, b->pos + S0, tail * sizeof(int32_t));
    memmove(b->row_group + S0 + grow, b->row_group + S0, tail * sizeof(int32_t));
    memmove(b->row_kind + S0 + grow, b->row_kind + S0, tail * sizeof(int32_t));
    memmove(b->mask + S0 + grow, b->mask + S0, tail);
    for (size_t j = 0; j + 1 < P; j++)
        put_row(b, S0 + j, prompt[j], prompt[j + 1], (int32_t)j, (int32_t)g, ZEN_ROW_PROMPT, prompt_loss);
    size_t n = b->N + grow;
    for (int i = 0; i < k; i++)
        for (size_t j = 0; j < cont_len[i]; j++)
            put_row(b, n++, j ? cont[i][j - 1] : prompt[P - 1], cont[i][j], (int32_t)(P - 1 + j), (int32_t)g, i, 1);
    b->N = n;
    b->layout.twice = S0 + grow;
}

/* the attention layout of the shared rows: per group, per continuation, a
 * segment [its prompt rows, its own rows]; a prompt row's first read gives
 * its output, the c-th further one (continuation c) is att_again[c - 1].
 * Every group with the same number K of continuations: again_reads K - 1
 * (exact backward); else the second reads alone (forward only). */
static void build_shared_layout(zen_pair_batch *b) {
    size_t S = b->layout.twice, x = 0, K = 0;
    int even = 1;
    for (size_t n = S; n < b->N; n++) {
        size_t k = (size_t)b->row_kind[n] + 1;
        int last_of_group = n + 1 == b->N || b->row_group[n + 1] != b->row_group[n];
        if (last_of_group) {
            if (K && k != K) even = 0;
            K = K > k ? K : k;
        }
    }
    size_t again = even && K > 1 ? K - 1 : 1;
    size_t p0 = 0, n = S; /* the current group's first prompt row and first continuation row */
    while (n < b->N || p0 < S) {
        int32_t g = n < b->N ? b->row_group[n] : b->row_group[p0];
        size_t p1 = p0;
        while (p1 < S && b->row_group[p1] == g) p1++;
        int first = 1;
        while (n < b->N && b->row_group[n] == g) {
            int32_t kind = b->row_kind[n];
            size_t start = x;
            for (size_t p = p0; p < p1; p++, x++) {
                b->att_seg[x] = (int32_t)start, b->att_from[x] = (int32_t)p;
                if (first) b->att_out[p] = (int32_t)x;
                else if ((size_t)kind <= again) b->att_again[((size_t)kind - 1) * S + p] = (int32_t)x;
            }
            for (; n < b->N && b->row_group[n] == g && b->row_kind[n] == kind; n++, x++)
                b->att_seg[x] = (int32_t)start, b->att_from[x] = (int32_t)n, b->att_out[n] = (int32_t)x;
            first = 0;
        }
        p0 = p1;
    }
    b->layout.again_reads = again;
    b->layout.att_rows = x;
    b->layout.att_seg = b->att_seg;
    b->layout.att_from = b->att_from;
    b->layout.att_out = b->att_out;
    b->layout.att_again = b->att_again;
}

int zen_pair_batch_add(zen_pair_batch *b, const int32_t *prompt, size_t P, const int32_t *const *cont,
                       const size_t *cont_len, int k, int prompt_loss) {
    size_t rows = zen_pair_batch_rows(b->shared, P, cont_len, k), att = 0;
    for (int i = 0; i < k; i++) att += P - 1 + cont_len[i];
    if (P < 1 || b->N + rows > b->cap_rows || (b->shared && b->layout.att_rows + att > b->cap_att))
        return zen_fail(ZEN_ERR_INTERNAL, "pair batch: %zu more rows (%zu attention rows) do not fit %zu (%zu)", rows,
                        att, b->cap_rows, b->cap_att);
    int32_t g = (int32_t)b->groups;
    if (b->shared) {
        add_shared(b, prompt, P, cont, cont_len, k, prompt_loss);
        b->layout.att_rows += att; /* kept for the capacity check; rebuilt next */
        build_shared_layout(b);
    } else {
        for (int i = 0; i < k; i++) {
            size_t start = b->N;
            for (size_t j = 0; j + 1 < P; j++) {
                put_row(b, b->N, prompt[j], prompt[j + 1], (int32_t)j, g, ZEN_ROW_PROMPT, prompt_loss && i == 0);
                b->seg[b->N++] = (int32_t)start;
            }
            for (size_t j = 0; j < cont_len[i]; j++) {
                put_row(b, b->N, j ? cont[i][j - 1] : prompt[P - 1], cont[i][j], (int32_t)(P - 1 + j), g, i, 1);
                b->seg[b->N++] = (int32_t)start;
            }
        }
    }
    b->group_id[b->groups] = (int64_t)b->groups;
    b->groups++;
    return 0;
}

int zen_pair_batch_add_pair(zen_pair_batch *b, const zen_dataset *d, int64_t pair, int prompt_loss) {
    zen_pair_lengths l = zen_pair_lengths_of(d, pair);
    int32_t *tok = zen_malloc((l.prompt + l.chosen + l.rejected) * sizeof(int32_t));
    if (!tok) return ZEN_ERR_INTERNAL;
    int rc = zen_pair_read(d, pair, tok);
    if (!rc) {
        const int32_t *cont[2] = {tok + l.prompt, tok + l.prompt + l.chosen};
        size_t len[2] = {l.chosen, l.rejected};
        rc = zen_pair_batch_add(b, tok, l.prompt, cont, len, 2, prompt_loss);
    }
    if (!rc) b->group_id[b->groups - 1] = pair;
    free(tok);
    return rc;
}

void zen_pair_batch_sums(const zen_pair_batch *b, const float *row_loss, int k, double *logps, double *counts) {
    memset(logps, 0, b->groups * (size_t)k * sizeof(double));
    if (counts) memset(counts, 0, b->groups * (size_t)k * sizeof(double));
    for (size_t n = 0; n < b->N; n++) {
        int32_t kind = b->row_kind[n];
        if (kind < 0 || kind >= k) continue;
        size_t at = (size_t)b->row_group[n] * (size_t)k + (size_t)kind;
        logps[at] -= (double)row_loss[n];
        if (counts) counts[at] += 1.0;
    }
}

int zen_pair_batch_forward(const zen_pair_batch *b, const zen_model *m, const zen_lora *lo, zen_acts *a,
                           uint64_t dropout_seed, float *row_loss) {
    size_t B = a->B, T = a->T;
    a->B = 1, a->T = b->N; /* one sequence of rows laid end to end (kernels.h) */
    a->sh.layout = b->shared ? &b->layout : NULL;
    int rc = zen_decoder_forward(m, lo, a, b->inputs, b->targets, b->mask, b->pos, b->shared ? NULL : b->seg,
                                 dropout_seed, row_loss);
    a->B = B, a->T = T;
    a->sh.layout = NULL;
    return rc;
}

int zen_pair_batch_logps(const zen_pair_batch *b, const zen_model *m, const zen_lora *lo, zen_acts *a,
                         uint64_t dropout_seed, int k, double *logps, double *counts) {
    float *row_loss = zen_malloc((b->N ? b->N : 1) * sizeof(float));
    if (!row_loss) return ZEN_ERR_INTERNAL;
    int rc = zen_pair_batch_forward(b, m, lo, a, dropout_seed, row_loss);
    if (!rc) zen_pair_batch_sums(b, row_loss, k, logps, counts);
    free(row_loss);
    return rc;
}

int zen_pair_batch_backward(const zen_pair_batch *b, const zen_model *m, const zen_lora *lo, zen_acts *a,
                            const float *row_weight) {
    size_t B = a->B, T = a->T;
    a->B = 1, a->T = b->N;
    a->sh.layout = b->shared ? &b->layout : NULL;
    int rc = zen_decoder_backward(m, lo, a, b->mask, row_weight);
    a->B = B, a->T = T;
    a->sh.layout = NULL;
    return rc;
}
