/* data/prepare.c: `zen data` (see prepare.h). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dirent.h>
#include <sys/stat.h>

#include "../util/error.h"
#include "../util/atomic_file.h"
#include "../util/file.h"
#include "../util/json.h"
#include "pack.h"
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
    zen_packer pk;   /* --pack: documents are collected here, and written packed at the end */
    zen_ids ids;
    uint8_t *mask;
    size_t mask_cap;
    int32_t eos;
    zen_data_stats *st;
    const char *path; /* the input file being read */
} prep;

/* documents go to the file, or to the packer with --pack */
static int doc_append(prep *p, const int32_t *ids, const uint8_t *mask, size_t n) {
    return p->o->pack_seq_len ? zen_packer_append(&p->pk, ids, mask, n) : zen_token_writer_append(&p->w, ids, mask, n);
}

static int doc_end(prep *p) { return p->o->pack_seq_len ? zen_packer_end_doc(&p->pk) : zen_token_writer_end_doc(&p->w); }

static int doc_add(prep *p, const int32_t *ids, const uint8_t *mask, size_t n) {
    int rc = doc_append(p, ids, mask, n);
    return rc ? rc : doc_end(p);
}

static int ensure_mask(prep *p, size_t n) {
    if (n <= p->mask_cap && p->mask) return 0;
    size_t cap = p->mask_cap ? p->mask_cap : 4096;
    if (cap < n) cap = n;
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
    if (!rc && p->ids.len) {
        memset(p->mask, 1, p->ids.len);
        rc = doc_append(p, p->ids.ids, p->mask, p->ids.len);
    }
    if (!rc && last) rc = doc_end(p);
    return rc;
}

static int add_text_doc(prep *p, const char *text, size_t len) { return add_text(p, text, len, 1); }

/* a rendered chat into p->ids with p->mask: each token takes the mask of its first byte */
static int chat_tokens(prep *p, const zen_render *r) {
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
    return rc;
}

static int bad_line(prep *p, int rc) {
    if (!p->o->skip_bad || rc != ZEN_ERR_INPUT) return rc;
    p->st->bad_lines++;
    return 0;
}

/* one record line (jsonl, alpaca, messages) into p->ids and p->mask; the
 * line must be exactly one JSON object (strict: nothing after it, no key
 * twice) */
static int line_tokens(prep *p, const char *line, size_t n, const char *where, zen_render *r) {
    cJSON *rec = NULL;
    int rc = zen_json_parse(line, n, where, &rec);
    if (!rc && !cJSON_IsObject(rec)) rc = zen_fail(ZEN_ERR_INPUT, "%s: not a JSON object", where);
    if (!rc && p->o->format == ZEN_DATA_JSONL) {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(rec, p->o->field);
        if (!cJSON_IsString(text)) rc = zen_fail(ZEN_ERR_INPUT, "%s: missing string field '%s'", where, p->o->field);
        p->ids.len = 0;
        if (!rc) rc = zen_tokenizer_encode(p->tok, text->valuestring, strlen(text->valuestring), 1, &p->ids);
        if (!rc && p->eos >= 0) rc = zen_ids_push(&p->ids, p->eos);
        if (!rc) rc = ensure_mask(p, p->ids.len);
        if (!rc && p->ids.len) memset(p->mask, 1, p->ids.len);
    } else if (!rc) {
        r->len = 0;
        rc = zen_render_chat(p->o, p->tok, rec, r, where);
        if (!rc) rc = chat_tokens(p, r);
    }
    cJSON_Delete(rec);
    return rc;
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
        int lr = line_tokens(p, line, (size_t)n, where, &r);
        if (lr) rc = bad_line(p, lr);
        else rc = doc_add(p, p->ids.ids, p->mask, p->ids.len);
    }
    if (!rc && ferror(in)) rc = zen_fail(ZEN_ERR_INPUT, "%s: read failed", p->path);
    zen_render_free(&r);
    free(line);
    return rc;
}

#define TEXT_PIECE ((size_t)4 << 20)       /* bytes of one document tokenized at a time */
#define TEXT_LONG_LINE ((size_t)8 << 20)   /* a line this long is cut inside itself */
#define TEXT_HARD_CAP ((size_t)64 << 20)   /* beyond this a piece is cut wherever it is */
#define CUT_WINDOW 1024                    /* bytes of context either side of a checked cut */
#define READ_SEGMENT ((size_t)1 << 20)     /* bytes read at a time */

/* the byte index of the start of the UTF-8 character at or after i */
static size_t char_start(const char *t, size_t len, size_t i) {
    while (i < len && ((unsigned char)t[i] & 0xC0) == 0x80) i++;
    return i;
}

/* 1 if tokenizing text[a, b) whole gives the tokens of [a, i) followed by
 * those of [i, b): the cut at i changes nothing in a window of CUT_WINDOW
 * bytes either side (pre-tokenizer pieces, NFC, special tokens, BPE) */
static int cut_is_exact(prep *p, const char *text, size_t len, size_t i) {
    size_t a = i > CUT_WINDOW ? char_start(text, len, i - CUT_WINDOW) : 0;
    size_t b = char_start(text, len, i + CUT_WINDOW < len ? i + CUT_WINDOW : len);
    zen_ids whole = {0}, split = {0};
    int ok = !zen_tokenizer_encode(p->tok, text + a, b - a, 1, &whole) &&
             !zen_tokenizer_encode(p->tok, text + a, i - a, 1, &split) &&
             !zen_tokenizer_encode(p->tok, text + i, b - i, 1, &split) && whole.len == split.len &&
             (!whole.len || !memcmp(whole.ids, split.ids, whole.len * sizeof(int32_t)));
    zen_ids_free(&whole);
    zen_ids_free(&split);
    return ok;
}

/* where to cut doc[0, len) inside a long line: the first character start at
 * or after TEXT_PIECE whose cut checks exact (with a full window of context
 * after it); 0 if none yet */
static size_t find_inline_cut(prep *p, const char *doc, size_t len) {
    for (size_t i = char_start(doc, len, TEXT_PIECE); i + CUT_WINDOW <= len; i = char_start(doc, len, i + 1)) {
        /* candidates where pieces usually end: before a space, a punctuation
         * mark or any non-ASCII character, after a non-space */
        unsigned char c = (unsigned char)doc[i], prev = (unsigned char)doc[i - 1];
        int likely = (c == ' ' || c >= 0x80 || (c < 0x80 && !((c | 32) >= 'a' && (c | 32) <= 'z') &&
                                                 !(c >= '0' && c <= '9'))) && prev != ' ';
        if (likely && cut_is_exact(p, doc, len, i)) return i;
    }
    return 0;
}

/* text: the whole file as one document, or paragraphs split on blank lines.
 * Read a segment (a line, or a megabyte of a longer one) at a time. A long
 * document is tokenized in pieces of about TEXT_PIECE bytes, cut before a
 * line that starts with an ASCII non-space character (no pre-tokenizer piece,
 * NFC composition or special token spans such a line start). A single line
 * longer than TEXT_LONG_LINE is cut inside itself where a check of the cut
 * in context shows the tokens unchanged; only a stretch of TEXT_HARD_CAP
 * bytes with no such place is cut anyway (counted in stats->forced_cuts).
 * So the ids are those of the whole document and memory stays bounded, even
 * for a file of one 2 GB line. */
static int prepare_text(prep *p, FILE *in) {
    char *seg = malloc(READ_SEGMENT), *doc = NULL;
    size_t seg_len = 0, doc_len = 0, doc_cap = 0;
    int rc = seg ? 0 : zen_fail(ZEN_ERR_INTERNAL, "out of memory"), at_line_start = 1;
    for (;;) {
        /* the next segment: up to and including '\n', or READ_SEGMENT bytes */
        int ch = 0;
        seg_len = 0;
        while (!rc && seg_len < READ_SEGMENT && (ch = getc_unlocked(in)) != EOF) {
            seg[seg_len++] = (char)ch;
            if (ch == '\n') break;
        }
        if (rc || seg_len == 0) break;
        int line_end = seg[seg_len - 1] == '\n';
        p->st->bytes += (double)seg_len;
        if (at_line_start) {
            int blank = line_end;
            for (size_t i = 0; i < seg_len && blank; i++)
                blank = seg[i] == '\n' || seg[i] == '\r' || seg[i] == ' ' || seg[i] == '\t';
            unsigned char first = (unsigned char)seg[0];
            int safe_cut = first < 0x80 && first != ' ' && first != '\t' && first != '\n' && first != '\r';
            if (doc_len >= TEXT_PIECE && safe_cut) { /* a piece of the document, not its end */
                rc = add_text(p, doc, doc_len, 0);
                doc_len = 0;
                if (rc) break;
            }
            if (p->o->split_paragraphs && blank) {
                while (doc_len && (doc[doc_len - 1] == '\n' || doc[doc_len - 1] == '\r')) doc_len--;
                if (doc_len) rc = add_text_doc(p, doc, doc_len);
                doc_len = 0;
                if (rc) break;
                continue;
            }
        }
        at_line_start = line_end;
        if (doc_len + seg_len + 1 > doc_cap) {
            size_t c = doc_cap ? doc_cap : 1 << 16;
            while (c < doc_len + seg_len + 1) c *= 2;
            char *d = realloc(doc, c);
            if (!d) {
                rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
                break;
            }
            doc = d;
            doc_cap = c;
        }
        memcpy(doc + doc_len, seg, seg_len);
        doc_len += seg_len;
        if (!line_end && doc_len >= TEXT_LONG_LINE) { /* inside a long line */
            size_t cut = find_inline_cut(p, doc, doc_len);
            if (!cut && doc_len >= TEXT_HARD_CAP) {
                cut = char_start(doc, doc_len, TEXT_PIECE);
                p->st->forced_cuts++;
            }
            if (cut) {
                rc = add_text(p, doc, cut, 0);
                memmove(doc, doc + cut, doc_len - cut);
                doc_len -= cut;
                if (rc) break;
            }
        }
    }
    if (!rc && ferror(in)) rc = zen_fail(ZEN_ERR_INPUT, "%s: read failed", p->path);
    if (!rc && p->o->split_paragraphs) { /* a paragraph ends without its trailing newline */
        while (doc_len && (doc[doc_len - 1] == '\n' || doc[doc_len - 1] == '\r')) doc_len--;
    }
    if (!rc && doc_len) rc = add_text_doc(p, doc, doc_len);
    free(seg);
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

/* documents end with the document separator (Qwen: <|endoftext|>), else the eos token */
static int32_t doc_separator(const zen_tokenizer *t) {
    int32_t id = zen_tokenizer_token_id(t, "<|endoftext|>");
    return id >= 0 ? id : zen_tokenizer_eos(t);
}

int zen_data_tokenize_line(const zen_data_opts *o, zen_tokenizer *t, const char *line, size_t len, const char *where,
                           zen_ids *ids, uint8_t **mask) {
    zen_data_stats st;
    memset(&st, 0, sizeof st);
    prep p = {0};
    p.o = o;
    p.st = &st;
    p.tok = t;
    p.eos = doc_separator(t);
    zen_render r = {0};
    int rc = line_tokens(&p, line, len, where, &r);
    zen_render_free(&r);
    *ids = p.ids;
    *mask = p.mask;
    return rc;
}

int zen_data_prepare(const zen_data_opts *o, zen_data_stats *st) {
    memset(st, 0, sizeof *st);
    prep p = {0};
    p.o = o;
    p.st = st;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = o->tokenizer ? (p.tok = o->tokenizer, 0) : zen_tokenizer_load(&p.tok, o->tokenizer_dir);
    if (rc) return rc;
    p.eos = doc_separator(p.tok);
    /* --in is a file, or a directory whose regular files are read in name order */
    char **files = NULL;
    int n_files = 0;
    rc = list_inputs(o->in, &files, &n_files);
    for (int f = 0; !rc && f < n_files; f++)
        if (zen_same_file(files[f], o->out))
            rc = zen_fail(ZEN_ERR_INPUT, "--out %s is one of the inputs; write the dataset elsewhere", o->out);
    if (!rc && o->pack_seq_len) rc = zen_packer_open(&p.pk, o->out, o->pack_seq_len, o->pack_seed);
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
        st->docs = o->pack_seq_len ? p.pk.n_docs : p.w.n_docs;
        if (!rc && st->docs == 0) rc = zen_fail(ZEN_ERR_INPUT, "%s: no documents found", o->in);
        if (!rc && o->pack_seq_len) {
            /* the tokenizer's pad token, else the document separator; masked out either way */
            st->pad_id = zen_tokenizer_pad(p.tok) >= 0 ? zen_tokenizer_pad(p.tok) : p.eos >= 0 ? p.eos : 0;
            zen_pack_stats ps;
            rc = zen_packer_finish(&p.pk, &p.w, st->pad_id, &ps);
            st->windows = ps.windows, st->pad_tokens = ps.pad_tokens, st->split_docs = ps.split_docs;
        }
        st->id_mismatches = zen_tokenizer_id_mismatches(p.tok);
        st->tokens = p.w.n_tokens;
        st->masked = p.w.n_masked;
        rc = rc ? (zen_token_writer_abort(&p.w), rc) : zen_token_writer_close(&p.w);
    }
    zen_packer_close(&p.pk);
    for (int f = 0; f < n_files; f++) free(files[f]);
    free(files);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    st->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    zen_ids_free(&p.ids);
    free(p.mask);
    if (!o->tokenizer) zen_tokenizer_free(p.tok);
    return rc;
}
