/* cli/generate_samples.c: zen generate --n G / --prompts FILE.jsonl (see
 * generate_samples.h). A prompts file holds one JSON object per line with
 * "prompt": a string (tokenized as it is, special tokens parsed) or a list
 * of chat messages (rendered as zen data renders them, with the generation
 * prompt). --out gets a line per prompt, in order, appended as soon as the
 * prompt's samples all ended and synced, beside FILE.jsonl.run.json with the
 * settings; --resume checks those settings, drops a partly written last
 * line and continues with the next prompt, whose samples are the ones an
 * uninterrupted run draws (each sample's stream is keyed by the seed, the
 * prompt's index and its own). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../data/prepare.h"
#include "../formats/safetensors.h"
#include "../model/generate_batch.h"
#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "../util/json.h"
#include "generate_samples.h"

typedef struct {
    zen_ids *ids;       /* [n] each prompt's tokens */
    cJSON **given;      /* [n] each prompt as given, for the output */
    size_t n, cap;
} prompt_list;

static void prompts_free(prompt_list *p) {
    for (size_t i = 0; i < p->n; i++) {
        zen_ids_free(&p->ids[i]);
        cJSON_Delete(p->given[i]);
    }
    free(p->ids);
    free(p->given);
    memset(p, 0, sizeof *p);
}

static int prompts_push(prompt_list *p, cJSON *given) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        zen_ids *ids = realloc(p->ids, cap * sizeof(zen_ids));
        if (ids) p->ids = ids;
        cJSON **g = realloc(p->given, cap * sizeof(cJSON *));
        if (g) p->given = g;
        if (!ids || !g) return zen_fail(ZEN_ERR_INTERNAL, "out of memory (prompts)");
        p->cap = cap;
    }
    memset(&p->ids[p->n], 0, sizeof(zen_ids));
    p->given[p->n++] = given;
    return 0;
}

/* Qwen3's generation prompt; --no-think adds the empty think block */
static const char *generation_prompt(int no_think) {
    return no_think ? "<|im_start|>assistant\n<think>\n\n</think>\n\n" : "<|im_start|>assistant\n";
}

/* --prompts FILE.jsonl: a prompt per line, each rendered and tokenized */
static int read_prompts(const zen_samples_args *a, prompt_list *out) {
    if (!a->tok) return zen_fail(ZEN_ERR_INPUT, "--prompts needs the model's tokenizer");
    FILE *f = fopen(a->prompts_path, "r");
    if (!f) return zen_fail(ZEN_ERR_INPUT, "%s: cannot open", a->prompts_path);
    char *line = NULL, *text = NULL, where[4200];
    size_t cap = 0, text_len = 0;
    ssize_t n;
    long lineno = 0;
    int rc = 0;
    zen_data_opts o = {0};
    zen_render r = {0};
    while (!rc && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (n == 0) continue;
        snprintf(where, sizeof where, "%s:%ld", a->prompts_path, lineno);
        cJSON *rec = NULL;
        const cJSON *prompt;
        rc = zen_json_parse(line, (size_t)n, where, &rec);
        if (!rc && !cJSON_IsObject(rec)) rc = zen_fail(ZEN_ERR_INPUT, "%s: not a JSON object", where);
        if (!rc) rc = zen_prompt_field(rec, "prompt", where, &prompt);
        cJSON *given = rc ? NULL : cJSON_Duplicate(prompt, 1);
        cJSON_Delete(rec);
        if (!rc && !given) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        if (!rc) rc = prompts_push(out, given);
        else cJSON_Delete(given);
        if (!rc) rc = zen_prompt_tokens(&o, a->tok, given, generation_prompt(a->no_think), &r, &text, &text_len,
                                        &out->ids[out->n - 1], where);
        if (!rc && out->ids[out->n - 1].len == 0) rc = zen_fail(ZEN_ERR_INPUT, "%s: 'prompt' has no tokens", where);
    }
    if (!rc && ferror(f)) rc = zen_fail(ZEN_ERR_INTERNAL, "%s: read error", a->prompts_path);
    if (!rc && out->n == 0) rc = zen_fail(ZEN_ERR_INPUT, "%s: no prompts", a->prompts_path);
    zen_render_free(&r);
    free(text);
    free(line);
    fclose(f);
    return rc;
}

/* ---------------- the run's settings, beside --out ---------------- */

static cJSON *settings_of(const zen_samples_args *a) {
    cJSON *s = cJSON_CreateObject(), *stops = cJSON_CreateArray();
    cJSON_AddStringToObject(s, "model", a->model);
    cJSON_AddStringToObject(s, "adapter", a->adapter ? a->adapter : "");
    cJSON_AddStringToObject(s, "prompts", a->prompts_path ? a->prompts_path : a->prompt_text);
    cJSON_AddItemToObject(s, "n", zen_json_exact_number(a->samples));
    cJSON_AddItemToObject(s, "seed", zen_json_exact_number((double)a->seed));
    cJSON_AddItemToObject(s, "max_new_tokens", zen_json_exact_number((double)a->max_new));
    cJSON_AddItemToObject(s, "temperature", zen_json_exact_number(a->sampling.temperature));
    cJSON_AddItemToObject(s, "top_k", zen_json_exact_number(a->sampling.top_k));
    cJSON_AddItemToObject(s, "top_p", zen_json_exact_number(a->sampling.top_p));
    cJSON_AddItemToObject(s, "min_p", zen_json_exact_number(a->sampling.min_p));
    cJSON_AddBoolToObject(s, "stop_at_eos", a->n_stop_ids > 0);
    cJSON_AddBoolToObject(s, "no_think", a->no_think);
    for (int i = 0; i < a->n_stops; i++) cJSON_AddItemToArray(stops, cJSON_CreateString(a->stops[i]));
    cJSON_AddItemToObject(s, "stop", stops);
    return s;
}

static int write_settings(const char *path, const cJSON *settings) {
    char *text = cJSON_Print(settings);
    zen_atomic_file f;
    int rc = text ? zen_atomic_open(&f, path) : zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    if (!rc) {
        rc = zen_atomic_write(&f, text, strlen(text));
        if (!rc) rc = zen_atomic_write(&f, "\n", 1);
        rc = rc ? (zen_atomic_abort(&f), rc) : zen_atomic_commit(&f);
    }
    free(text);
    return rc;
}

/* --resume: the settings must be the run's; *done gets the prompts already
 * written (complete lines), a partly written last line cut off */
static int resume_point(const zen_samples_args *a, const char *settings_path, const cJSON *settings, size_t *done) {
    cJSON *saved = NULL;
    int rc = zen_read_json_object(settings_path, &saved);
    if (rc) return rc;
    for (const cJSON *k = settings->child; k && !rc; k = k->next) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(saved, k->string);
        if (!v || !cJSON_Compare(v, k, 1)) {
            char *mine = cJSON_PrintUnformatted(k), *theirs = v ? cJSON_PrintUnformatted(v) : NULL;
            rc = zen_fail(ZEN_ERR_INPUT, "--resume: %s was written with %s %s, this run has %s; a resumed run must use "
                          "its settings", a->out_path, k->string, theirs ? theirs : "(none)", mine ? mine : "?");
            free(mine);
            free(theirs);
        }
    }
    cJSON_Delete(saved);
    if (rc) return rc;
    char *text = NULL;
    size_t len = 0, good = 0;
    if ((rc = zen_read_file_bytes(a->out_path, &text, &len))) return rc;
    *done = 0;
    for (size_t at = 0; at < len && !rc;) {
        char *nl = memchr(text + at, '\n', len - at);
        if (!nl) break; /* a line the stopped run did not finish: cut below */
        cJSON *line = NULL;
        char where[1100];
        snprintf(where, sizeof where, "%s:%zu", a->out_path, *done + 1);
        rc = zen_json_parse(text + at, (size_t)(nl - (text + at)), where, &line);
        const cJSON *index = rc ? NULL : cJSON_GetObjectItemCaseSensitive(line, "index");
        if (!rc && (!cJSON_IsNumber(index) || index->valuedouble != (double)*done))
            rc = zen_fail(ZEN_ERR_INPUT, "%s: expected the line of prompt %zu", where, *done);
        cJSON_Delete(line);
        if (!rc) (*done)++, at = good = (size_t)(nl - text) + 1;
    }
    free(text);
    if (!rc && good < len && truncate(a->out_path, (off_t)good))
        rc = zen_fail(ZEN_ERR_INTERNAL, "%s: cannot cut the partly written last line", a->out_path);
    return rc;
}

/* ---------------- the samples ---------------- */

typedef struct {
    const zen_samples_args *a;
    const prompt_list *prompts;
    size_t first;        /* the index of the first prompt this run draws */
    FILE *out;
    st_entry *logits;    /* --save-logits: [n_logits] tensors, and their data */
    float **logit_data;
    size_t n_logits, cap_logits;
} run_ctx;

/* the index just past the first stop string in text (or len: none) and where that string starts */
static size_t stop_cut(const zen_samples_args *a, const char *text, size_t len) {
    size_t cut = len;
    for (int i = 0; i < a->n_stops; i++) {
        size_t m = strlen(a->stops[i]);
        for (size_t at = 0; m && at + m <= len && at < cut; at++)
            if (!memcmp(text + at, a->stops[i], m)) {
                cut = at;
                break;
            }
    }
    return cut;
}

/* a sample's text: its tokens decoded (a final stop id left out), cut before a stop string */
static int sample_text(const zen_samples_args *a, const zen_gen_sample *s, char **text, size_t *len) {
    size_t n = s->n && s->finish == ZEN_FINISH_EOS ? s->n - 1 : s->n;
    int rc = zen_tokenizer_decode_known(a->tok, s->ids, n, 0, text, len);
    if (!rc && s->finish == ZEN_FINISH_STOP) *len = stop_cut(a, *text, *len), (*text)[*len] = '\0';
    return rc;
}

static int stop_at(void *ctx, const int32_t *ids, size_t n) {
    const zen_samples_args *a = ctx;
    char *text = NULL;
    size_t len = 0;
    int hit = !zen_tokenizer_decode_known(a->tok, ids, n, 0, &text, &len) && stop_cut(a, text, len) < len;
    free(text);
    return hit;
}

static const char *finish_name(zen_finish f) {
    return f == ZEN_FINISH_EOS ? "eos" : f == ZEN_FINISH_STOP ? "stop" : "length";
}

static int keep_logits(run_ctx *c, size_t prompt, int sample, const zen_gen_sample *s, int32_t vocab) {
    if (c->n_logits == c->cap_logits) {
        size_t cap = c->cap_logits ? 2 * c->cap_logits : 16;
        st_entry *e = realloc(c->logits, cap * sizeof(st_entry));
        if (e) c->logits = e;
        float **d = realloc(c->logit_data, cap * sizeof(float *));
        if (d) c->logit_data = d;
        if (!e || !d) return zen_fail(ZEN_ERR_INTERNAL, "out of memory (--save-logits)");
        c->cap_logits = cap;
    }
    float *copy = zen_malloc(s->n * (size_t)vocab * sizeof(float) + 1);
    char *name = zen_malloc(48);
    if (!copy || !name) {
        free(copy);
        free(name);
        return ZEN_ERR_INTERNAL;
    }
    memcpy(copy, s->logits, s->n * (size_t)vocab * sizeof(float));
    snprintf(name, 48, "logits.%zu.%d", prompt, sample);
    c->logits[c->n_logits] = (st_entry){name, ZEN_F32, 2, {(int64_t)s->n, vocab}};
    c->logit_data[c->n_logits++] = copy;
    return 0;
}

/* a prompt's samples: a JSON line appended to --out (synced), or printed */
static int on_prompt(void *ctx, size_t request, const zen_gen_sample *samples, int n) {
    run_ctx *c = ctx;
    const zen_samples_args *a = c->a;
    size_t index = c->first + request;
    int rc = 0;
    cJSON *line = c->out ? cJSON_CreateObject() : NULL, *list = c->out ? cJSON_CreateArray() : NULL;
    if (line) {
        cJSON_AddItemToObject(line, "index", zen_json_exact_number((double)index));
        cJSON_AddItemToObject(line, "prompt", c->prompts ? cJSON_Duplicate(c->prompts->given[index], 1)
                                                         : cJSON_CreateString(a->prompt_text));
        cJSON_AddItemToObject(line, "samples", list);
    }
    for (int k = 0; k < n && !rc; k++) {
        const zen_gen_sample *s = &samples[k];
        char *text = NULL;
        size_t len = 0;
        if (a->tok) rc = sample_text(a, s, &text, &len);
        if (!rc && a->logits_path) rc = keep_logits(c, index, k, s, c->a->s->model.cfg.vocab);
        if (!rc && line) {
            cJSON *o = cJSON_CreateObject(), *ids = cJSON_CreateArray();
            char *utf8 = text ? zen_utf8_valid(text, len) : NULL;
            if (utf8) cJSON_AddStringToObject(o, "text", utf8);
            free(utf8);
            for (size_t i = 0; i < s->n; i++) cJSON_AddItemToArray(ids, zen_json_exact_number(s->ids[i]));
            cJSON_AddItemToObject(o, "ids", ids);
            cJSON_AddStringToObject(o, "finish", finish_name(s->finish));
            cJSON_AddItemToObject(o, "tokens", zen_json_exact_number((double)s->n));
            cJSON_AddNumberToObject(o, "logprob", s->logprob);
            cJSON_AddItemToArray(list, o);
        } else if (!rc) {
            printf("--- sample %d of %d: %s, %zu tokens, log-probability %.4f ---\n", k + 1, n, finish_name(s->finish),
                   s->n, s->logprob);
            if (a->show_ids || !text)
                for (size_t i = 0; i < s->n; i++) printf("%s%d", i ? "," : "", s->ids[i]);
            else
                fwrite(text, 1, len, stdout);
            putchar('\n');
        }
        free(text);
    }
    if (!rc && line) {
        char *json = cJSON_PrintUnformatted(line);
        if (!json) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        else if (fprintf(c->out, "%s\n", json) < 0 || fflush(c->out) || fsync(fileno(c->out)))
            rc = zen_fail(ZEN_ERR_INTERNAL, "%s: write failed (disk full?)", a->out_path);
        free(json);
    }
    cJSON_Delete(line);
    fflush(stdout);
    return rc;
}

static int save_logits(run_ctx *c) {
    st_writer w;
    int rc = st_writer_open(&w, c->a->logits_path, c->logits, (int)c->n_logits, NULL, 0);
    for (size_t i = 0; i < c->n_logits && !rc; i++)
        rc = st_writer_put(&w, c->logit_data[i], (size_t)c->logits[i].shape[0] * (size_t)c->logits[i].shape[1] *
                                                     sizeof(float));
    return rc ? (st_writer_abort(&w), rc) : st_writer_close(&w);
}

int zen_generate_samples(const zen_samples_args *a) {
    prompt_list prompts = {0};
    run_ctx c = {a, NULL, 0, NULL, NULL, NULL, 0, 0};
    zen_gen_request *req = NULL;
    char *settings_path = NULL;
    /* the settings as the file holds them (printed and read back), so --resume compares like with like */
    cJSON *made = settings_of(a), *settings = NULL;
    char *made_text = made ? cJSON_PrintUnformatted(made) : NULL;
    int rc = made_text ? zen_json_parse(made_text, strlen(made_text), "settings", &settings) : ZEN_ERR_INTERNAL;
    cJSON_Delete(made);
    free(made_text);
    if (!rc && a->prompts_path && !(rc = read_prompts(a, &prompts))) c.prompts = &prompts;
    size_t total = a->prompts_path ? prompts.n : 1;
    if (!rc && a->out_path) {
        settings_path = zen_malloc(strlen(a->out_path) + 10);
        if (!settings_path) rc = ZEN_ERR_INTERNAL;
        else sprintf(settings_path, "%s.run.json", a->out_path);
        struct stat st;
        int exists = !rc && stat(a->out_path, &st) == 0 && st.st_size > 0;
        if (!rc && exists && !a->resume)
            rc = zen_fail(ZEN_ERR_INPUT, "%s already holds samples: continue it with --resume, or choose another --out",
                          a->out_path);
        else if (!rc && exists) rc = resume_point(a, settings_path, settings, &c.first);
        else if (!rc && !(rc = zen_output_ready(a->out_path))) rc = write_settings(settings_path, settings);
        if (!rc && !(c.out = fopen(a->out_path, "a"))) rc = zen_fail(ZEN_ERR_INTERNAL, "%s: cannot open for writing", a->out_path);
        if (!rc && c.first)
            fprintf(stderr, "zen generate: %s holds %zu of %zu prompts; continuing with prompt %zu\n", a->out_path,
                    c.first, total, c.first);
    }
    size_t n_req = total > c.first ? total - c.first : 0;
    if (!rc && !(req = zen_calloc(n_req + 1, sizeof(zen_gen_request)))) rc = ZEN_ERR_INTERNAL;
    for (size_t i = 0; i < n_req && !rc; i++) {
        const zen_ids *ids = a->prompts_path ? &prompts.ids[c.first + i] : a->prompt;
        req[i] = (zen_gen_request){ids->ids, ids->len, a->samples, (uint64_t)(c.first + i)};
    }
    zen_gen_batch_opts o = {a->sampling, a->seed, a->max_new, a->stop_ids, a->n_stop_ids,
                            a->n_stops && a->tok ? stop_at : NULL, (void *)a, a->max_rows, a->max_cache_bytes,
                            a->prefill_chunk, a->logits_path != NULL};
    zen_gen_batch_stats st;
    memset(&st, 0, sizeof st);
    if (!rc) rc = zen_generate_batch(&a->s->model, a->s->has_lora ? &a->s->lora : NULL, req, n_req, &o, on_prompt, &c,
                                     &st);
    if (!rc && a->logits_path) rc = save_logits(&c);
    if (!rc) {
        char peak[32], pool[32];
        zen_format_bytes(peak, sizeof peak, st.peak_cache_bytes);
        zen_format_bytes(pool, sizeof pool, st.cache_bytes);
        /* a sample's first token comes from its prompt's prefill, the others from decode steps */
        size_t decoded = st.tokens - st.samples;
        double decode_s = st.seconds - st.prefill_seconds;
        fprintf(stderr, "zen generate: %zu prompts, %zu samples, %zu tokens in %.3f s (%.1f tokens/s; prompts %zu "
                "tokens in %.3f s, each once for its samples; decode %zu tokens in %zu steps, %.1f tokens/s); up to "
                "%zu samples at once; KV cache peak %s of %s (pages of %zu positions); device %s: %s\n", st.prompts,
                st.samples, st.tokens, st.seconds, (double)st.tokens / (st.seconds + 1e-12), st.prefill_tokens,
                st.prefill_seconds, decoded, st.steps, (double)decoded / (decode_s + 1e-12), st.peak_rows, peak, pool,
                st.page_rows, a->s->be->name, a->s->be->info);
    }
    if (c.out && fclose(c.out) && !rc) rc = zen_fail(ZEN_ERR_INTERNAL, "%s: write failed", a->out_path);
    for (size_t i = 0; i < c.n_logits; i++) {
        free((char *)c.logits[i].name);
        free(c.logit_data[i]);
    }
    free(c.logits);
    free(c.logit_data);
    free(req);
    free(settings_path);
    cJSON_Delete(settings);
    prompts_free(&prompts);
    return rc;
}
