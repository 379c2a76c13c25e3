/* train/eval_choices.c: `zen eval --choices FILE.jsonl`: multiple-choice
 * scoring as lm-evaluation-harness does it for HellaSwag- and MMLU-style
 * tasks. A record {context, choices: [...], label} scores each choice by
 * the summed log-probability of its tokens after the context; acc is
 * whether the best is the label, acc_norm the same with each
 * log-probability divided by the choice's length in bytes. Tokens as
 * lm-evaluation-harness's _encode_pair: trailing whitespace of the context
 * moves to the continuation, the whole text is tokenized and the
 * continuation is what follows the context's own tokens (an empty context
 * is the document separator). The context is run once per record (the
 * shared layout of objectives/pair_batch.h) when every choice's text starts with
 * the same context tokens, else each choice runs with its own. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "../util/json.h"
#include "eval_choices.h"
#include "../objectives/pair_batch.h"

#define MAX_CHOICES 64

typedef struct {
    int k, label;
    zen_ids ctx, whole[MAX_CHOICES];
    size_t ctx_len[MAX_CHOICES]; /* tokens of whole[i] that are the context's */
    double bytes[MAX_CHOICES];
} record;

static void record_free(record *r) {
    zen_ids_free(&r->ctx);
    for (int i = 0; i < MAX_CHOICES; i++) zen_ids_free(&r->whole[i]);
}

static int parse_record(zen_tokenizer *t, const char *line, size_t n, const char *where, record *r) {
    cJSON *rec = NULL;
    int rc = zen_json_parse(line, n, where, &rec);
    const cJSON *ctx = rc ? NULL : cJSON_GetObjectItemCaseSensitive(rec, "context");
    const cJSON *ch = rc ? NULL : cJSON_GetObjectItemCaseSensitive(rec, "choices");
    const cJSON *label = rc ? NULL : cJSON_GetObjectItemCaseSensitive(rec, "label");
    if (!rc && (!cJSON_IsString(ctx) || !cJSON_IsArray(ch) || !cJSON_IsNumber(label)))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: expected {\"context\": string, \"choices\": [strings], \"label\": integer}", where);
    int k = rc ? 0 : cJSON_GetArraySize(ch);
    if (!rc && (k < 2 || k > MAX_CHOICES))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: %d choices (expected 2 to %d)", where, k, MAX_CHOICES);
    if (!rc && (label->valuedouble != floor(label->valuedouble) || label->valuedouble < 0 || label->valuedouble >= k))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: label %g is not the index of one of its %d choices", where, label->valuedouble, k);
    r->k = k;
    r->label = rc ? 0 : (int)label->valuedouble;
    /* the context without its trailing whitespace, which goes to each continuation */
    const char *c = rc ? "" : ctx->valuestring;
    size_t clen = strlen(c), keep = clen;
    while (keep && (c[keep - 1] == ' ' || c[keep - 1] == '\t' || c[keep - 1] == '\n' || c[keep - 1] == '\r')) keep--;
    r->ctx.len = 0;
    if (!rc && keep) rc = zen_tokenizer_encode(t, c, keep, 1, &r->ctx);
    if (!rc && !keep) { /* an empty context: the document separator, as lm-evaluation-harness's eot */
        int32_t sep = zen_tokenizer_token_id(t, "<|endoftext|>");
        if (sep < 0) sep = zen_tokenizer_eos(t);
        if (sep < 0) rc = zen_fail(ZEN_ERR_INPUT, "%s: an empty context needs an end-of-text token", where);
        else rc = zen_ids_push(&r->ctx, sep);
    }
    for (int i = 0; i < k && !rc; i++) {
        const cJSON *e = cJSON_GetArrayItem(ch, i);
        if (!cJSON_IsString(e) || !e->valuestring[0]) {
            rc = zen_fail(ZEN_ERR_INPUT, "%s: choice %d must be a non-empty string", where, i);
            break;
        }
        size_t elen = strlen(e->valuestring);
        char *text = malloc(clen + elen + 1);
        if (!text) {
            rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
            break;
        }
        memcpy(text, c, clen);
        memcpy(text + clen, e->valuestring, elen + 1);
        r->whole[i].len = 0;
        if (keep) {
            rc = zen_tokenizer_encode(t, text, clen + elen, 1, &r->whole[i]);
            r->ctx_len[i] = r->ctx.len;
        } else { /* eot, then the continuation's own tokens */
            rc = zen_ids_push(&r->whole[i], r->ctx.ids[0]);
            if (!rc) rc = zen_tokenizer_encode(t, text, clen + elen, 1, &r->whole[i]);
            r->ctx_len[i] = 1;
        }
        free(text);
        r->bytes[i] = (double)elen;
        if (!rc && r->whole[i].len <= r->ctx_len[i])
            rc = zen_fail(ZEN_ERR_INPUT, "%s: choice %d has no tokens after the context", where, i);
    }
    cJSON_Delete(rec);
    return rc;
}

/* 1 if every choice's text starts with the same context tokens */
static int context_shared(const record *r) {
    for (int i = 0; i < r->k; i++)
        if (r->ctx_len[i] != r->ctx_len[0] || memcmp(r->whole[i].ids, r->whole[0].ids, r->ctx_len[0] * sizeof(int32_t)))
            return 0;
    return 1;
}

/* the record's groups: one with every choice, or one per choice */
static int add_record(zen_pair_batch *b, const record *r, int shared) {
    const int32_t *cont[MAX_CHOICES];
    size_t len[MAX_CHOICES];
    if (shared) {
        for (int i = 0; i < r->k; i++) cont[i] = r->whole[i].ids + r->ctx_len[0], len[i] = r->whole[i].len - r->ctx_len[0];
        return zen_pair_batch_add(b, r->whole[0].ids, r->ctx_len[0], cont, len, r->k, 0);
    }
    for (int i = 0; i < r->k; i++) {
        cont[0] = r->whole[i].ids + r->ctx_len[i], len[0] = r->whole[i].len - r->ctx_len[i];
        int rc = zen_pair_batch_add(b, r->whole[i].ids, r->ctx_len[i], cont, len, 1, 0);
        if (rc) return rc;
    }
    return 0;
}

/* rows and attention rows a record takes */
static size_t record_rows(const record *r, int shared, size_t *att) {
    size_t rows = 0;
    *att = 0;
    for (int i = 0; i < r->k; i++) {
        size_t c = r->whole[i].len - r->ctx_len[i];
        rows += c + (shared ? 0 : r->ctx_len[i] - 1);
        *att += c + r->ctx_len[i] - 1;
    }
    return rows + (shared ? r->ctx_len[0] - 1 : 0);
}

typedef struct {
    record *recs;   /* [cap] the batch's records */
    int *shared;
    size_t n, cap;
    double correct, correct_norm, total;
} scorer;

/* runs the batch and scores its records */
static int flush(scorer *sc, zen_pair_batch *b, const zen_model *m, const zen_lora *lo, zen_acts *a) {
    if (!sc->n) return 0;
    float *row_loss = zen_malloc((b->N ? b->N : 1) * sizeof(float));
    double *ll = zen_calloc(b->groups * MAX_CHOICES + 1, sizeof(double)); /* [groups][MAX_CHOICES] */
    int rc = row_loss && ll ? zen_pair_batch_forward(b, m, lo, a, 0, row_loss) : ZEN_ERR_INTERNAL;
    if (!rc) zen_pair_batch_sums(b, row_loss, MAX_CHOICES, ll, NULL);
    size_t g = 0;
    for (size_t i = 0; !rc && i < sc->n; i++) {
        const record *r = &sc->recs[i];
        double best = -INFINITY, best_norm = -INFINITY;
        int arg = 0, arg_norm = 0;
        for (int c = 0; c < r->k; c++) {
            double v = sc->shared[i] ? ll[g * MAX_CHOICES + (size_t)c] : ll[(g + (size_t)c) * MAX_CHOICES];
            if (v > best) best = v, arg = c;
            if (v / r->bytes[c] > best_norm) best_norm = v / r->bytes[c], arg_norm = c;
        }
        g += sc->shared[i] ? 1 : (size_t)r->k;
        sc->correct += arg == r->label;
        sc->correct_norm += arg_norm == r->label;
        sc->total += 1;
    }
    for (size_t i = 0; i < sc->n; i++) record_free(&sc->recs[i]);
    sc->n = 0;
    zen_pair_batch_clear(b);
    free(row_loss);
    free(ll);
    return rc;
}

int zen_eval_choices(const zen_model *m, const zen_lora *lo, zen_acts *a, zen_tokenizer *t, const char *path,
                     size_t B, size_t T, zen_choices_result *out) {
    FILE *in = fopen(path, "rb");
    if (!in) return zen_fail(ZEN_ERR_INPUT, "%s: cannot open", path);
    scorer sc;
    memset(&sc, 0, sizeof sc);
    sc.cap = B;
    sc.recs = zen_calloc(B, sizeof(record));
    sc.shared = zen_calloc(B, sizeof(int));
    zen_pair_batch b;
    int rc = sc.recs && sc.shared ? zen_pair_batch_alloc(&b, 2 * B * T, 0, 1) : ZEN_ERR_INTERNAL;
    char *line = NULL, where[4200];
    size_t cap = 0, cap_rows = 2 * B * T;
    ssize_t n;
    long lineno = 0;
    while (!rc && (n = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (n == 0) continue;
        snprintf(where, sizeof where, "%s:%ld", path, lineno);
        record r;
        memset(&r, 0, sizeof r);
        if ((rc = parse_record(t, line, (size_t)n, where, &r))) {
            record_free(&r);
            break;
        }
        int shared = context_shared(&r);
        size_t att, rows = record_rows(&r, shared, &att), longest = 0;
        for (int i = 0; i < r.k; i++) longest = r.whole[i].len - 1 > longest ? r.whole[i].len - 1 : longest;
        if (longest >= T || rows > cap_rows || att > cap_rows) {
            rc = zen_fail(ZEN_ERR_INPUT, "%s: the context and its choices (%zu tokens, %zu rows in all) do not fit "
                          "--seq-len %zu x --batch %zu", where, longest + 1, att, T, B);
            record_free(&r);
            break;
        }
        if (sc.n == sc.cap || b.N + rows > cap_rows || b.layout.att_rows + att > cap_rows) rc = flush(&sc, &b, m, lo, a);
        if (!rc) rc = add_record(&b, &r, shared);
        if (rc) {
            record_free(&r);
            break;
        }
        sc.recs[sc.n] = r;
        sc.shared[sc.n++] = shared;
        out->shared += shared;
    }
    if (!rc && ferror(in)) rc = zen_fail(ZEN_ERR_INPUT, "%s: read failed", path);
    if (!rc) rc = flush(&sc, &b, m, lo, a);
    if (!rc && sc.total == 0) rc = zen_fail(ZEN_ERR_INPUT, "%s: no records", path);
    out->records = sc.total;
    out->acc = sc.total ? sc.correct / sc.total : NAN;
    out->acc_norm = sc.total ? sc.correct_norm / sc.total : NAN;
    for (size_t i = 0; i < sc.n; i++) record_free(&sc.recs[i]);
    free(sc.recs);
    free(sc.shared);
    if (b.inputs) zen_pair_batch_free(&b);
    free(line);
    fclose(in);
    return rc;
}
