/* data/prepare.c: `zen data` (see prepare.h). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dirent.h>
#include <sys/stat.h>

#include "../util/error.h"
#include "../util/file.h"
#include "prepare.h"
#include "token_writer.h"

int zen_data_parse_format(const char *name, zen_data_format *out) {
    if (!strcmp(name, "text")) *out = ZEN_DATA_TEXT;
    else if (!strcmp(name, "jsonl")) *out = ZEN_DATA_JSONL;
    else if (!strcmp(name, "alpaca")) *out = ZEN_DATA_ALPACA;
    else if (!strcmp(name, "messages")) *out = ZEN_DATA_MESSAGES;
    else return -1;
    return 0;
}

/* ---------------- rendering with a per-byte mask ---------------- */

static int put(zen_render *r, const char *s, size_t n, uint8_t mask) {
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 1024;
        while (cap < r->len + n + 1) cap *= 2;
        char *t = realloc(r->text, cap);
        uint8_t *m = realloc(r->mask, cap);
        if (t) r->text = t;
        if (m) r->mask = m;
        if (!t || !m) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        r->cap = cap;
    }
    memcpy(r->text + r->len, s, n);
    memset(r->mask + r->len, mask, n);
    r->len += n;
    r->text[r->len] = '\0';
    return 0;
}

static int puts_(zen_render *r, const char *s, uint8_t mask) { return put(r, s, strlen(s), mask); }

void zen_render_free(zen_render *r) {
    free(r->text);
    free(r->mask);
    memset(r, 0, sizeof *r);
}

/* text normalised as the tokenizer will see it, so byte offsets stay exact */
static int put_normalized(zen_render *r, const zen_tokenizer *t, const char *s, uint8_t mask) {
    char *n;
    size_t len;
    int rc = zen_tokenizer_normalize(t, s, strlen(s), &n, &len);
    if (!rc) rc = put(r, n, len, mask);
    free(n);
    return rc;
}

typedef struct {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} turn;

static const char *strip_newlines_left(const char *s) {
    while (*s == '\n') s++;
    return s;
}

/* Qwen3's template for an assistant turn: the think block is split from the
 * content; turns after the last user message keep it (the final one always,
 * an empty "<think>\n\n</think>\n\n" unless dropped), earlier turns lose it. */
static int render_assistant(const zen_data_opts *o, const zen_tokenizer *t, zen_render *r, const char *content,
                            int after_last_query, int is_last, uint8_t answer_mask) {
    const char *end = strstr(content, "</think>");
    char *reasoning = NULL;
    const char *answer = content;
    if (end) {
        const char *start = strstr(content, "<think>");
        const char *from = start && start < end ? start + 7 : content;
        size_t n = (size_t)(end - from);
        reasoning = malloc(n + 1);
        if (!reasoning) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        memcpy(reasoning, from, n);
        reasoning[n] = '\0';
        answer = strip_newlines_left(end + 8);
    }
    int rc = 0;
    /* strip '\n' around the reasoning, as reasoning_content.strip('\n') */
    char *rs = reasoning ? reasoning + strspn(reasoning, "\n") : NULL;
    if (rs) {
        size_t n = strlen(rs);
        while (n && rs[n - 1] == '\n') rs[--n] = '\0';
    }
    int has_reasoning = rs && rs[0];
    if (after_last_query && (is_last || has_reasoning)) {
        if (has_reasoning) {
            rc = puts_(r, "<think>\n", answer_mask);
            if (!rc) rc = put_normalized(r, t, rs, answer_mask);
            if (!rc) rc = puts_(r, "\n</think>\n\n", answer_mask);
        } else if (!o->drop_empty_think) {
            /* the empty block Qwen3 puts in the prompt when not thinking: not trained on */
            rc = puts_(r, "<think>\n\n</think>\n\n", o->train_on_prompt ? 1 : 0);
        }
    }
    if (!rc) rc = put_normalized(r, t, answer, answer_mask);
    free(reasoning);
    return rc;
}

static int render_turns(const zen_data_opts *o, const zen_tokenizer *t, const turn *turns, int n, zen_render *r) {
    int last_query = -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(turns[i].role, "user")) last_query = i;
    uint8_t prompt = o->train_on_prompt ? 1 : 0;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        int assistant = !strcmp(turns[i].role, "assistant");
        rc = puts_(r, "<|im_start|>", prompt);
        if (!rc) rc = puts_(r, turns[i].role, prompt);
        if (!rc) rc = puts_(r, "\n", prompt);
        if (!rc && assistant) rc = render_assistant(o, t, r, turns[i].content, i > last_query, i == n - 1, 1);
        else if (!rc) rc = put_normalized(r, t, turns[i].content, prompt);
        if (!rc) rc = puts_(r, "<|im_end|>", assistant ? 1 : prompt);
        if (!rc) rc = puts_(r, "\n", prompt);
    }
    return rc;
}

static const char *role_of(const char *from) {
    if (!strcmp(from, "system")) return "system";
    if (!strcmp(from, "user") || !strcmp(from, "human")) return "user";
    if (!strcmp(from, "assistant") || !strcmp(from, "gpt")) return "assistant";
    return NULL;
}

int zen_render_chat(const zen_data_opts *o, const zen_tokenizer *t, const cJSON *rec, zen_render *r, const char *where) {
    turn turns[256];
    int n = 0;
    if (o->format == ZEN_DATA_ALPACA) {
        const cJSON *ins = cJSON_GetObjectItemCaseSensitive(rec, "instruction");
        const cJSON *inp = cJSON_GetObjectItemCaseSensitive(rec, "input");
        const cJSON *out = cJSON_GetObjectItemCaseSensitive(rec, "output");
        if (!cJSON_IsString(ins) || !cJSON_IsString(out) || (inp && !cJSON_IsNull(inp) && !cJSON_IsString(inp)))
            return zen_fail(ZEN_ERR_INPUT, "%s: an alpaca record needs string 'instruction' and 'output' (and an "
                            "optional string 'input')", where);
        /* the user turn: the instruction, and the input after a blank line when there is one */
        const char *extra = cJSON_IsString(inp) && inp->valuestring[0] ? inp->valuestring : NULL;
        size_t len = strlen(ins->valuestring) + (extra ? strlen(extra) + 2 : 0) + 1;
        char *user = malloc(len);
        if (!user) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        snprintf(user, len, extra ? "%s\n\n%s" : "%s", ins->valuestring, extra ? extra : "");
        turns[n++] = (turn){"user", user};
        turns[n++] = (turn){"assistant", out->valuestring};
        int rc = render_turns(o, t, turns, n, r);
        free(user);
        return rc;
    }
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(rec, "messages");
    int sharegpt = 0;
    if (!list) {
        list = cJSON_GetObjectItemCaseSensitive(rec, "conversations");
        sharegpt = 1;
    }
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0)
        return zen_fail(ZEN_ERR_INPUT, "%s: expected a non-empty 'messages' or 'conversations' list", where);
    const cJSON *m;
    cJSON_ArrayForEach(m, list) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, sharegpt ? "from" : "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, sharegpt ? "value" : "content");
        if (!cJSON_IsString(role) || !cJSON_IsString(content))
            return zen_fail(ZEN_ERR_INPUT, "%s: message %d needs string '%s' and '%s'", where, n,
                            sharegpt ? "from" : "role", sharegpt ? "value" : "content");
        const char *r_ = role_of(role->valuestring);
        if (!r_) return zen_fail(ZEN_ERR_INPUT, "%s: message %d has role '%s' (expected system, user or assistant)",
                                 where, n, role->valuestring);
        if (n == 256) return zen_fail(ZEN_ERR_INPUT, "%s: more than 256 messages", where);
        turns[n++] = (turn){r_, content->valuestring};
    }
    return render_turns(o, t, turns, n, r);
}

/* ---------------- documents -> tokens ---------------- */

typedef struct {
    const zen_data_opts *o;
    zen_tokenizer *tok;
    zen_token_writer w;
    zen_ids ids;
    uint8_t *mask;
    size_t mask_cap;
    int32_t eos;
    zen_data_stats *st;
    const char *path; /* the input file being read */
} prep;

static int ensure_mask(prep *p, size_t n) {
    if (n <= p->mask_cap) return 0;
    size_t cap = p->mask_cap ? p->mask_cap : 4096;
    while (cap < n) cap *= 2;
    uint8_t *m = realloc(p->mask, cap);
    if (!m) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    p->mask = m;
    p->mask_cap = cap;
    return 0;
}

/* a piece of a plain document (every token counts); the last piece also gets
 * the separator and ends the document */
static int add_text(prep *p, const char *text, size_t len, int last) {
    p->ids.len = 0;
    int rc = zen_tokenizer_encode(p->tok, text, len, 1, &p->ids);
    if (!rc && last && p->eos >= 0) rc = zen_ids_push(&p->ids, p->eos);
    if (!rc) rc = ensure_mask(p, p->ids.len);
    if (!rc) {
        memset(p->mask, 1, p->ids.len);
        rc = zen_token_writer_append(&p->w, p->ids.ids, p->mask, p->ids.len);
    }
    if (!rc && last) rc = zen_token_writer_end_doc(&p->w);
    return rc;
}

static int add_text_doc(prep *p, const char *text, size_t len) { return add_text(p, text, len, 1); }

/* a rendered chat: each token takes the mask of its first byte */
static int add_chat_doc(prep *p, const zen_render *r) {
    p->ids.len = 0;
    int rc = zen_tokenizer_encode(p->tok, r->text, r->len, 1, &p->ids);
    if (!rc) rc = ensure_mask(p, p->ids.len);
    size_t at = 0;
    for (size_t i = 0; !rc && i < p->ids.len; i++) {
        p->mask[i] = at < r->len ? r->mask[at] : 0;
        at += zen_tokenizer_token_bytes(p->tok, p->ids.ids[i]);
    }
    if (!rc && at != r->len)
        rc = zen_fail(ZEN_ERR_INTERNAL, "token offsets (%zu bytes) do not cover the rendered text (%zu bytes)", at, r->len);
    if (!rc) rc = zen_token_writer_add(&p->w, p->ids.ids, p->mask, p->ids.len);
    return rc;
}

static int bad_line(prep *p, int rc) {
    if (!p->o->skip_bad || rc != ZEN_ERR_INPUT) return rc;
    p->st->bad_lines++;
    return 0;
}

static int prepare_lines(prep *p, FILE *in) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = 0;
    char where[4200];
    zen_render r = {0};
    while (!rc && (n = getline(&line, &cap, in)) >= 0) {
        lineno++;
        p->st->bytes += (double)n;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (n == 0) continue; /* blank lines are not records */
        snprintf(where, sizeof where, "%s:%ld", p->path, lineno);
        cJSON *rec = cJSON_ParseWithLength(line, (size_t)n);
        if (!rec || !cJSON_IsObject(rec)) {
            rc = bad_line(p, zen_fail(ZEN_ERR_INPUT, "%s: not a JSON object", where));
        } else if (p->o->format == ZEN_DATA_JSONL) {
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(rec, p->o->field);
            if (!cJSON_IsString(text))
                rc = bad_line(p, zen_fail(ZEN_ERR_INPUT, "%s: missing string field '%s'", where, p->o->field));
            else
                rc = add_text_doc(p, text->valuestring, strlen(text->valuestring));
        } else {
            r.len = 0;
            int rr = zen_render_chat(p->o, p->tok, rec, &r, where);
            rc = rr ? bad_line(p, rr) : add_chat_doc(p, &r);
        }
        cJSON_Delete(rec);
    }
    zen_render_free(&r);
    free(line);
    return rc;
}

#define TEXT_PIECE ((size_t)4 << 20) /* bytes of one document tokenized at a time */

/* text: the whole file as one document, or paragraphs split on blank lines;
 * read a line at a time. A long document is tokenized in pieces of about
 * TEXT_PIECE bytes, cut before a line that starts with an ASCII non-space
 * character: no pre-tokenizer piece (nor NFC composition, nor special token)
 * spans a newline followed by such a character, so the ids are those of the
 * whole document and memory stays bounded for files larger than memory. */
static int prepare_text(prep *p, FILE *in) {
    char *line = NULL, *doc = NULL;
    size_t cap = 0, doc_len = 0, doc_cap = 0;
    ssize_t n;
    int rc = 0;
    while (!rc && (n = getline(&line, &cap, in)) >= 0) {
        p->st->bytes += (double)n;
        int blank = 1;
        for (ssize_t i = 0; i < n && blank; i++) blank = line[i] == '\n' || line[i] == '\r' || line[i] == ' ' || line[i] == '\t';
        unsigned char first = (unsigned char)line[0];
        int safe_cut = n > 0 && first < 0x80 && first != ' ' && first != '\t' && first != '\n' && first != '\r';
        if (doc_len >= TEXT_PIECE && safe_cut) { /* a piece of the document, not its end */
            rc = add_text(p, doc, doc_len, 0);
            doc_len = 0;
            if (rc) break;
        }
        if (p->o->split_paragraphs && blank) {
            while (doc_len && (doc[doc_len - 1] == '\n' || doc[doc_len - 1] == '\r')) doc_len--;
            if (doc_len) rc = add_text_doc(p, doc, doc_len);
            doc_len = 0;
            continue;
        }
        if (doc_len + (size_t)n + 1 > doc_cap) {
            size_t c = doc_cap ? doc_cap : 1 << 16;
            while (c < doc_len + (size_t)n + 1) c *= 2;
            char *d = realloc(doc, c);
            if (!d) {
                rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
                break;
            }
            doc = d;
            doc_cap = c;
        }
        memcpy(doc + doc_len, line, (size_t)n);
        doc_len += (size_t)n;
    }
    if (!rc && p->o->split_paragraphs) { /* a paragraph ends without its trailing newline */
        while (doc_len && (doc[doc_len - 1] == '\n' || doc[doc_len - 1] == '\r')) doc_len--;
    }
    if (!rc && doc_len) rc = add_text_doc(p, doc, doc_len);
    free(line);
    free(doc);
    return rc;
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int list_inputs(const char *in, char ***out, int *n) {
    struct stat st;
    if (stat(in, &st) != 0) return zen_fail(ZEN_ERR_INPUT, "%s: cannot open", in);
    if (!S_ISDIR(st.st_mode)) {
        *out = malloc(sizeof(char *));
        if (!*out || !((*out)[0] = strdup(in))) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        *n = 1;
        return 0;
    }
    DIR *d = opendir(in);
    if (!d) return zen_fail(ZEN_ERR_INPUT, "%s: cannot read the directory", in);
    struct dirent *e;
    int cap = 16;
    char **files = malloc((size_t)cap * sizeof(char *));
    *n = 0;
    while (files && (e = readdir(d))) {
        char *path = zen_path_join(in, e->d_name);
        struct stat fs;
        if (path && e->d_name[0] != '.' && stat(path, &fs) == 0 && S_ISREG(fs.st_mode)) {
            if (*n == cap) {
                char **grown = realloc(files, (size_t)(cap *= 2) * sizeof(char *));
                if (!grown) break;
                files = grown;
            }
            files[(*n)++] = path;
        } else {
            free(path);
        }
    }
    closedir(d);
    if (!files) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    qsort(files, (size_t)*n, sizeof(char *), name_cmp);
    *out = files;
    if (*n == 0) return zen_fail(ZEN_ERR_INPUT, "%s: the directory holds no files", in);
    return 0;
}

int zen_data_prepare(const zen_data_opts *o, zen_data_stats *st) {
    memset(st, 0, sizeof *st);
    prep p = {0};
    p.o = o;
    p.st = st;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = zen_tokenizer_load(&p.tok, o->tokenizer_dir);
    if (rc) return rc;
    /* documents end with the document separator (Qwen: <|endoftext|>), else the eos token */
    p.eos = zen_tokenizer_token_id(p.tok, "<|endoftext|>");
    if (p.eos < 0) p.eos = zen_tokenizer_eos(p.tok);
    /* --in is a file, or a directory whose regular files are read in name order */
    char **files = NULL;
    int n_files = 0;
    rc = list_inputs(o->in, &files, &n_files);
    if (!rc) rc = zen_token_writer_open(&p.w, o->out, zen_tokenizer_vocab_size(p.tok));
    if (!rc) {
        for (int f = 0; f < n_files && !rc; f++) {
            FILE *in = fopen(files[f], "rb");
            if (!in) {
                rc = zen_fail(ZEN_ERR_INPUT, "%s: cannot open", files[f]);
                break;
            }
            p.path = files[f];
            rc = o->format == ZEN_DATA_TEXT ? prepare_text(&p, in) : prepare_lines(&p, in);
            fclose(in);
        }
        if (!rc && p.w.n_docs == 0) rc = zen_fail(ZEN_ERR_INPUT, "%s: no documents found", o->in);
        st->docs = p.w.n_docs;
        st->tokens = p.w.n_tokens;
        st->masked = p.w.n_masked;
        rc = rc ? (zen_token_writer_abort(&p.w), rc) : zen_token_writer_close(&p.w);
    }
    for (int f = 0; f < n_files; f++) free(files[f]);
    free(files);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    st->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    zen_ids_free(&p.ids);
    free(p.mask);
    zen_tokenizer_free(p.tok);
    return rc;
}
