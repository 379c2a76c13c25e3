/* data/prepare_pairs.c: `zen data --format preference`: JSONL records
 * {prompt, chosen, rejected} to a preference file (data/pairs.h), as TRL's
 * DPOTrainer tokenizes them:
 * - strings: the prompt's tokens, and each completion's with eos appended
 *   when it does not end with it;
 * - chat messages: the prompt rendered with Qwen3's ChatML (as --format
 *   messages renders it) plus the generation prompt "<|im_start|>assistant\n";
 *   a completion is what the whole conversation (prompt + its messages)
 *   renders to after the prompt. A string completion of a chat prompt is one
 *   assistant message.
 * A pair longer than max_length keeps its start (TRL's keep_start): each
 * completion is cut to max_length - prompt tokens; a pair whose prompt alone
 * reaches max_length is dropped and counted. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../util/error.h"
#include "../util/json.h"
#include "prepare.h"
#include "token_writer.h"

static const char GENERATION_PROMPT[] = "<|im_start|>assistant\n";

/* {"messages": list} rendered into r->text */
static int render_messages(const zen_data_opts *o, const zen_tokenizer *t, const cJSON *list, zen_render *r,
                           const char *where) {
    cJSON *rec = cJSON_CreateObject(), *copy = cJSON_Duplicate(list, 1);
    if (!rec || !copy || !cJSON_AddItemToObject(rec, "messages", copy)) {
        cJSON_Delete(rec);
        cJSON_Delete(copy);
        return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    }
    zen_data_opts chat = *o;
    chat.format = ZEN_DATA_MESSAGES;
    r->len = 0;
    int rc = zen_render_chat(&chat, t, rec, r, where);
    cJSON_Delete(rec);
    return rc;
}

/* one field's value checked: a non-empty string, or a non-empty list of messages */
static int field_of(const cJSON *rec, const char *name, const char *where, const cJSON **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, name);
    if (!v) return zen_fail(ZEN_ERR_INPUT, "%s: missing field '%s'", where, name);
    if (cJSON_IsString(v) && v->valuestring[0]) {
        *out = v;
        return 0;
    }
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0) {
        *out = v;
        return 0;
    }
    return zen_fail(ZEN_ERR_INPUT, "%s: field '%s' must be a non-empty string or a non-empty list of messages", where,
                    name);
}

typedef struct {
    zen_ids prompt, chosen, rejected;
    zen_render r, full;
    char *prompt_text; /* a chat prompt's text with the generation prompt */
    size_t prompt_len;
    int no_eos;        /* its string completions got no eos: the tokenizer has none */
} pair_work;

/* a completion's tokens after the prompt (w->prompt_text when a chat) */
static int completion_tokens(const zen_data_opts *o, zen_tokenizer *t, const cJSON *prompt, const cJSON *c,
                             pair_work *w, zen_ids *out, const char *where, const char *name) {
    out->len = 0;
    if (cJSON_IsString(prompt)) {
        if (!cJSON_IsString(c))
            return zen_fail(ZEN_ERR_INPUT, "%s: '%s' is a list of messages but 'prompt' is a string", where, name);
        int rc = zen_tokenizer_encode(t, c->valuestring, strlen(c->valuestring), 1, out);
        int32_t eos = zen_tokenizer_eos(t);
        if (!rc && eos >= 0 && (!out->len || out->ids[out->len - 1] != eos)) rc = zen_ids_push(out, eos);
        w->no_eos = eos < 0;
        return rc;
    }
    /* chat: the conversation prompt + completion, after the prompt's text */
    cJSON *all = cJSON_Duplicate(prompt, 1);
    if (!all) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    if (cJSON_IsString(c)) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", c->valuestring);
        cJSON_AddItemToArray(all, m);
    } else {
        const cJSON *m;
        cJSON_ArrayForEach(m, c) cJSON_AddItemToArray(all, cJSON_Duplicate(m, 1));
    }
    int rc = render_messages(o, t, all, &w->full, where);
    cJSON_Delete(all);
    if (rc) return rc;
    size_t plen = w->prompt_len;
    if (w->full.len <= plen || memcmp(w->full.text, w->prompt_text, plen))
        return zen_fail(ZEN_ERR_INPUT, "%s: the conversation with '%s' does not start with the rendered prompt (a "
                        "completion must continue the prompt's messages)", where, name);
    return zen_tokenizer_encode(t, w->full.text + plen, w->full.len - plen, 1, out);
}

static int pair_tokens(const zen_data_opts *o, zen_tokenizer *t, const cJSON *rec, pair_work *w, const char *where) {
    const cJSON *p, *c, *r;
    int rc;
    if ((rc = field_of(rec, "prompt", where, &p)) || (rc = field_of(rec, "chosen", where, &c)) ||
        (rc = field_of(rec, "rejected", where, &r)))
        return rc;
    w->prompt.len = 0;
    w->no_eos = 0;
    if (cJSON_IsString(p)) {
        rc = zen_tokenizer_encode(t, p->valuestring, strlen(p->valuestring), 1, &w->prompt);
    } else {
        rc = render_messages(o, t, p, &w->r, where);
        /* the generation prompt, as apply_chat_template(add_generation_prompt=True) */
        size_t g = strlen(GENERATION_PROMPT);
        char *text = rc ? NULL : realloc(w->prompt_text, w->r.len + g + 1);
        if (!rc && !text) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        if (!rc) {
            w->prompt_text = text;
            memcpy(text, w->r.text, w->r.len);
            memcpy(text + w->r.len, GENERATION_PROMPT, g + 1);
            w->prompt_len = w->r.len + g;
            rc = zen_tokenizer_encode(t, text, w->prompt_len, 1, &w->prompt);
        }
    }
    if (!rc) rc = completion_tokens(o, t, p, c, w, &w->chosen, where, "chosen");
    if (!rc) rc = completion_tokens(o, t, p, r, w, &w->rejected, where, "rejected");
    if (!rc && (!w->prompt.len || !w->chosen.len || !w->rejected.len))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: '%s' has no tokens", where,
                      !w->prompt.len ? "prompt" : !w->chosen.len ? "chosen" : "rejected");
    return rc;
}

static int write_pair(zen_token_writer *wr, const pair_work *w, size_t nc, size_t nr, uint8_t *ones, uint8_t *zeros) {
    int rc = zen_token_writer_add(wr, w->prompt.ids, zeros, w->prompt.len);
    if (!rc) rc = zen_token_writer_add(wr, w->chosen.ids, ones, nc);
    if (!rc) rc = zen_token_writer_add(wr, w->rejected.ids, ones, nr);
    return rc;
}

int zen_data_prepare_pairs(const zen_data_opts *o, zen_pair_stats *st) {
    memset(st, 0, sizeof *st);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    zen_tokenizer *t = o->tokenizer;
    int rc = t ? 0 : zen_tokenizer_load(&t, o->tokenizer_dir);
    if (rc) return rc;
    size_t L = (size_t)o->max_length;
    FILE *in = fopen(o->in, "rb");
    if (!in) rc = zen_fail(ZEN_ERR_INPUT, "%s: cannot open", o->in);
    zen_token_writer wr;
    memset(&wr, 0, sizeof wr);
    uint8_t *ones = malloc(L ? L : 1), *zeros = NULL;
    if (!rc && !ones) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    if (!rc) memset(ones, 1, L);
    if (!rc) rc = zen_token_writer_open(&wr, o->out, zen_tokenizer_vocab_size(t));
    int opened = !rc;
    pair_work w;
    memset(&w, 0, sizeof w);
    size_t zeros_cap = 0;
    char *line = NULL, where[4200];
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    while (!rc && (n = getline(&line, &cap, in)) >= 0) {
        lineno++;
        st->bytes += (double)n;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (n == 0) continue;
        snprintf(where, sizeof where, "%s:%ld", o->in, lineno);
        cJSON *rec = NULL;
        int lr = zen_json_parse(line, (size_t)n, where, &rec);
        if (!lr && !cJSON_IsObject(rec)) lr = zen_fail(ZEN_ERR_INPUT, "%s: not a JSON object", where);
        if (!lr) lr = pair_tokens(o, t, rec, &w, where);
        cJSON_Delete(rec);
        if (lr) {
            if (o->skip_bad && lr == ZEN_ERR_INPUT) st->bad_lines++;
            else rc = lr;
            continue;
        }
        if (w.prompt.len >= L) { /* TRL drops these before training */
            st->dropped_long_prompt++;
            continue;
        }
        st->no_eos += w.no_eos;
        size_t room = L - w.prompt.len;
        size_t nc = w.chosen.len < room ? w.chosen.len : room, nr = w.rejected.len < room ? w.rejected.len : room;
        st->truncated += nc < w.chosen.len || nr < w.rejected.len;
        st->identical += nc == nr && !memcmp(w.chosen.ids, w.rejected.ids, nc * sizeof(int32_t));
        if (w.prompt.len > zeros_cap) {
            free(zeros);
            zeros_cap = w.prompt.len;
            if (!(zeros = calloc(zeros_cap, 1))) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        }
        if (!rc) rc = write_pair(&wr, &w, nc, nr, ones, zeros);
        st->pairs++;
        st->tokens += (int64_t)(w.prompt.len + nc + nr);
        st->prompt_tokens += (int64_t)w.prompt.len;
    }
    if (!rc && in && ferror(in)) rc = zen_fail(ZEN_ERR_INPUT, "%s: read failed", o->in);
    if (!rc && st->pairs == 0)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: no pairs to write (%lld records dropped: the prompt reaches --max-length %zu; "
                      "%lld bad lines)", o->in, (long long)st->dropped_long_prompt, L, (long long)st->bad_lines);
    if (opened) {
        wr.records = ZEN_RECORDS_PREFERENCE;
        wr.n_records = st->pairs;
        rc = rc ? (zen_token_writer_abort(&wr), rc) : zen_token_writer_close(&wr);
    }
    if (in) fclose(in);
    free(line);
    free(ones);
    free(zeros);
    zen_ids_free(&w.prompt);
    zen_ids_free(&w.chosen);
    zen_ids_free(&w.rejected);
    zen_render_free(&w.r);
    zen_render_free(&w.full);
    free(w.prompt_text);
    if (!o->tokenizer) zen_tokenizer_free(t);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    st->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return rc;
}
