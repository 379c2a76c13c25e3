/* data/prepare_records.c: `zen data --format preference|kto`: JSONL records
 * of a prompt and its completions to a file of records (data/records.h,
 * data/pairs.h): preference {prompt, chosen, rejected}, kto {prompt,
 * completion, label} (label a JSON boolean: true desirable), tokenized as
 * TRL's DPOTrainer tokenizes a pair (KTO's fields the same way):
 * - strings: the prompt's tokens, and each completion's with eos appended
 *   when it does not end with it;
 * - chat messages: the prompt rendered with Qwen3's ChatML (as --format
 *   messages renders it) plus the generation prompt "<|im_start|>assistant\n";
 *   a completion is what the whole conversation (prompt + its messages)
 *   renders to after the prompt. A string completion of a chat prompt is one
 *   assistant message.
 * A record longer than max_length keeps its start (TRL's keep_start): each
 * completion is cut to max_length - prompt tokens; a record whose prompt
 * alone reaches max_length is dropped and counted. */
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
/* --no-think: the empty think block after it, as Qwen3's template with enable_thinking=False */
static const char GENERATION_PROMPT_NO_THINK[] = "<|im_start|>assistant\n<think>\n\n</think>\n\n";

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

int zen_prompt_tokens(const zen_data_opts *o, zen_tokenizer *t, const cJSON *prompt, const char *generation_prompt,
                      zen_render *r, char **text, size_t *text_len, zen_ids *ids, const char *where) {
    if (cJSON_IsString(prompt)) return zen_tokenizer_encode(t, prompt->valuestring, strlen(prompt->valuestring), 1, ids);
    int rc = render_messages(o, t, prompt, r, where);
    /* the generation prompt, as apply_chat_template(add_generation_prompt=True) */
    size_t g = strlen(generation_prompt);
    char *chat = rc ? NULL : realloc(*text, r->len + g + 1);
    if (rc) return rc;
    if (!chat) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    *text = chat;
    memcpy(chat, r->text, r->len);
    memcpy(chat + r->len, generation_prompt, g + 1);
    *text_len = r->len + g;
    return zen_tokenizer_encode(t, chat, *text_len, 1, ids);
}

/* one field's value checked: a non-empty string, or a non-empty list of messages */
int zen_prompt_field(const cJSON *rec, const char *name, const char *where, const cJSON **out) {
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

/* each format: its completion fields, in the order they are written, and a label field */
typedef struct {
    zen_records records;
    const char *completions[2];
    int n_completions;
    const char *label; /* a JSON boolean stored as the record's label, or NULL */
    int keep_json;     /* the whole record kept as JSON (GRPO's prompts: the fields the rewards read) */
} record_format;

static const record_format formats[] = {
    {ZEN_RECORDS_PREFERENCE, {"chosen", "rejected"}, 2, NULL, 0},
    {ZEN_RECORDS_KTO, {"completion", NULL}, 1, "label", 0},
    {ZEN_RECORDS_PROMPTS, {NULL, NULL}, 0, NULL, 1},
};

typedef struct {
    zen_ids prompt, comp[2];
    int label;
    zen_render r, full;
    char *prompt_text; /* a chat prompt's text with the generation prompt */
    char *json;        /* keep_json: the record as JSON */
    size_t prompt_len;
    int no_eos;        /* its string completions got no eos: the tokenizer has none */
} record_work;

/* a completion's tokens after the prompt (w->prompt_text when a chat) */
static int completion_tokens(const zen_data_opts *o, zen_tokenizer *t, const cJSON *prompt, const cJSON *c,
                             record_work *w, zen_ids *out, const char *where, const char *name) {
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

static int record_tokens(const zen_data_opts *o, const record_format *f, zen_tokenizer *t, const cJSON *rec,
                         record_work *w, const char *where) {
    const cJSON *p, *c[2] = {NULL, NULL};
    int rc = zen_prompt_field(rec, "prompt", where, &p);
    for (int k = 0; k < f->n_completions && !rc; k++) rc = zen_prompt_field(rec, f->completions[k], where, &c[k]);
    if (rc) return rc;
    if (f->label) {
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(rec, f->label);
        if (!l) return zen_fail(ZEN_ERR_INPUT, "%s: missing field '%s'", where, f->label);
        if (!cJSON_IsBool(l)) return zen_fail(ZEN_ERR_INPUT, "%s: field '%s' must be true or false", where, f->label);
        w->label = cJSON_IsTrue(l);
    }
    w->prompt.len = 0;
    w->no_eos = 0;
    rc = zen_prompt_tokens(o, t, p, o->no_think ? GENERATION_PROMPT_NO_THINK : GENERATION_PROMPT, &w->r,
                           &w->prompt_text, &w->prompt_len, &w->prompt, where);
    free(w->json);
    w->json = NULL;
    if (!rc && f->keep_json && !(w->json = cJSON_PrintUnformatted(rec)))
        rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    for (int k = 0; k < f->n_completions && !rc; k++)
        rc = completion_tokens(o, t, p, c[k], w, &w->comp[k], where, f->completions[k]);
    if (!rc && !w->prompt.len) rc = zen_fail(ZEN_ERR_INPUT, "%s: 'prompt' has no tokens", where);
    for (int k = 0; k < f->n_completions && !rc; k++)
        if (!w->comp[k].len) rc = zen_fail(ZEN_ERR_INPUT, "%s: '%s' has no tokens", where, f->completions[k]);
    return rc;
}

/* the record: the prompt (loss_mask 0), each completion cut to n[k] tokens (loss_mask 1), and its label */
static int write_record(zen_token_writer *wr, const record_format *f, const record_work *w, const size_t *n,
                        uint8_t *ones, uint8_t *zeros) {
    int rc = zen_token_writer_add(wr, w->prompt.ids, zeros, w->prompt.len);
    for (int k = 0; k < f->n_completions && !rc; k++) rc = zen_token_writer_add(wr, w->comp[k].ids, ones, n[k]);
    if (!rc && f->label) rc = zen_token_writer_label(wr, w->label);
    if (!rc && f->keep_json) rc = zen_token_writer_json(wr, w->json, strlen(w->json));
    return rc;
}

int zen_data_prepare_records(const zen_data_opts *o, zen_records records, zen_record_stats *st) {
    memset(st, 0, sizeof *st);
    const record_format *f = NULL;
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (formats[i].records == records) f = &formats[i];
    if (!f) return zen_fail(ZEN_ERR_INTERNAL, "zen data: no record format for %s", zen_record_layout_of(records)->noun);
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
    record_work w;
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
        if (!lr) lr = record_tokens(o, f, t, rec, &w, where);
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
        size_t room = L - w.prompt.len, keep[2] = {0, 0};
        int cut = 0;
        for (int k = 0; k < f->n_completions; k++) {
            keep[k] = w.comp[k].len < room ? w.comp[k].len : room;
            cut |= keep[k] < w.comp[k].len;
        }
        st->truncated += cut;
        st->identical += f->n_completions == 2 && keep[0] == keep[1] &&
                         !memcmp(w.comp[0].ids, w.comp[1].ids, keep[0] * sizeof(int32_t));
        if (f->label) st->desirable += w.label, st->undesirable += !w.label;
        if (w.prompt.len > zeros_cap) {
            free(zeros);
            zeros_cap = w.prompt.len;
            if (!(zeros = calloc(zeros_cap, 1))) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        }
        if (!rc) rc = write_record(&wr, f, &w, keep, ones, zeros);
        st->records++;
        st->tokens += (int64_t)(w.prompt.len + keep[0] + keep[1]);
        st->prompt_tokens += (int64_t)w.prompt.len;
    }
    if (!rc && in && ferror(in)) rc = zen_fail(ZEN_ERR_INPUT, "%s: read failed", o->in);
    if (!rc && st->records == 0)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: no records to write (%lld dropped: the prompt reaches --max-length %zu; "
                      "%lld bad lines)", o->in, (long long)st->dropped_long_prompt, L, (long long)st->bad_lines);
    if (opened) {
        wr.records = records;
        wr.n_records = st->records;
        rc = rc ? (zen_token_writer_abort(&wr), rc) : zen_token_writer_close(&wr);
    }
    if (in) fclose(in);
    free(line);
    free(ones);
    free(zeros);
    zen_ids_free(&w.prompt);
    zen_ids_free(&w.comp[0]);
    zen_ids_free(&w.comp[1]);
    zen_render_free(&w.r);
    zen_render_free(&w.full);
    free(w.prompt_text);
    free(w.json);
    if (!o->tokenizer) zen_tokenizer_free(t);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    st->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return rc;
}
