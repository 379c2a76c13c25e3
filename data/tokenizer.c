/* data/tokenizer.c: byte-level BPE (see tokenizer.h). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "../util/error.h"
#include "../util/file.h"
#include "../util/json.h"
#include "tokenizer.h"

/* ---------------- hash maps ---------------- */

/* string -> id, open addressing */
typedef struct {
    char **keys;
    size_t *key_len;
    int32_t *vals;
    size_t cap; /* power of two */
} str_map;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int str_map_init(str_map *m, size_t n) {
    m->cap = 16;
    while (m->cap < 2 * n) m->cap *= 2;
    m->keys = calloc(m->cap, sizeof(char *));
    m->key_len = calloc(m->cap, sizeof(size_t));
    m->vals = calloc(m->cap, sizeof(int32_t));
    return m->keys && m->key_len && m->vals ? 0 : -1;
}

static void str_map_put(str_map *m, char *key, size_t n, int32_t val) {
    size_t i = hash_bytes(key, n) & (m->cap - 1);
    while (m->keys[i] && !(m->key_len[i] == n && !memcmp(m->keys[i], key, n))) i = (i + 1) & (m->cap - 1);
    m->keys[i] = key;
    m->key_len[i] = n;
    m->vals[i] = val;
}

static int32_t str_map_get(const str_map *m, const char *key, size_t n) {
    size_t i = hash_bytes(key, n) & (m->cap - 1);
    while (m->keys[i]) {
        if (m->key_len[i] == n && !memcmp(m->keys[i], key, n)) return m->vals[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

/* (left id, right id) -> (rank, merged id) */
typedef struct {
    uint64_t *keys; /* 0 = empty; stored as key + 1 */
    int32_t *rank, *merged;
    size_t cap;
} pair_map;

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int pair_map_init(pair_map *m, size_t n) {
    m->cap = 16;
    while (m->cap < 2 * n) m->cap *= 2;
    m->keys = calloc(m->cap, sizeof(uint64_t));
    m->rank = calloc(m->cap, sizeof(int32_t));
    m->merged = calloc(m->cap, sizeof(int32_t));
    return m->keys && m->rank && m->merged ? 0 : -1;
}

static uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1; }

static void pair_map_put(pair_map *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    uint64_t k = pair_key(a, b);
    size_t i = mix64(k) & (m->cap - 1);
    while (m->keys[i] && m->keys[i] != k) i = (i + 1) & (m->cap - 1);
    if (m->keys[i]) return; /* a repeated merge keeps its first (best) rank */
    m->keys[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
}

static int pair_map_get(const pair_map *m, int32_t a, int32_t b, int32_t *merged) {
    uint64_t k = pair_key(a, b);
    size_t i = mix64(k) & (m->cap - 1);
    while (m->keys[i]) {
        if (m->keys[i] == k) {
            *merged = m->merged[i];
            return m->rank[i];
        }
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

/* ---------------- the tokenizer ---------------- */

#define CACHE_SIZE 65536 /* words remembered with their ids */

typedef struct {
    char *word;
    size_t len;
    int32_t *ids;
    size_t n;
} cache_entry;

typedef struct {
    char *content;
    size_t len;
    int32_t id;
} added_token;

struct zen_tokenizer {
    str_map vocab;
    char **id_text;        /* [n_ids] token text (byte-level unicode, or an added token's content) */
    unsigned char *is_added; /* [n_ids] 0, or 1 for an added token, 2 for a special one */
    int32_t n_ids;
    pair_map merges;
    int32_t byte_id[256];  /* id of the one-character token of each byte */
    int unicode_to_byte[512]; /* byte of each byte-level code point (< 512), or -1 */
    added_token *added;
    int n_added;
    unsigned char added_first[256]; /* 1 for bytes that begin some added token */
    int nfc;
    pcre2_code *regex;
    pcre2_match_data *match;
    cache_entry *cache;    /* [CACHE_SIZE], allocated by the first encode */
    uint32_t *token_bytes; /* [n_ids] decoded length of each token */
    int32_t eos, pad; /* tokenizer_config.json's eos_token and pad_token, -1 if absent */
    int id_mismatches;     /* added tokens whose id differs from the one tokenizer.json lists */
};

/* GPT-2's map from bytes to printable code points */
static void byte_level_map(int cp_of_byte[256]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp_of_byte[b] = printable ? b : 256 + n++;
    }
}

static size_t utf8_encode(int cp, char *out);

void zen_byte_level_char(int b, char *out) {
    int cp_of_byte[256];
    byte_level_map(cp_of_byte);
    out[utf8_encode(cp_of_byte[b], out)] = '\0';
}

static size_t utf8_encode(int cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    out[0] = (char)(0xE0 | cp >> 12);
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* a token named by tokenizer_config.json: a string or {"content": ...}; -1 if absent */
static int32_t config_token(const zen_tokenizer *t, const cJSON *root, const char *key) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    const char *text = cJSON_IsString(item) ? item->valuestring : NULL;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(item, "content");
    if (!text && cJSON_IsString(c)) text = c->valuestring;
    return text ? zen_tokenizer_token_id(t, text) : -1;
}

static int load_config_tokens(zen_tokenizer *t, const char *dir) {
    char *path = zen_path_join(dir, "tokenizer_config.json");
    cJSON *root = NULL;
    t->eos = t->pad = -1;
    if (path && zen_file_exists(path) && !zen_read_json_object(path, &root)) {
        t->eos = config_token(t, root, "eos_token");
        t->pad = config_token(t, root, "pad_token");
    }
    cJSON_Delete(root);
    free(path);
    return 0;
}

/* GPT-2's split, which a ByteLevel pre-tokenizer with use_regex (its default) applies */
static const char GPT2_SPLIT[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int setup_regex(zen_tokenizer *t, const cJSON *pre, const char *path) {
    /* the Split pattern of the pre-tokenizer (alone or inside a Sequence); a
     * ByteLevel one alone splits as GPT-2 does, or not at all (use_regex false) */
    const cJSON *list = pre, *split = NULL, *byte_level = NULL, *item;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pre, "type");
    if (cJSON_IsString(type) && !strcmp(type->valuestring, "Sequence")) list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    if (cJSON_IsArray(list)) {
        cJSON_ArrayForEach(item, list) {
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(item, "type");
            if (cJSON_IsString(ty) && !strcmp(ty->valuestring, "Split")) split = item;
            if (cJSON_IsString(ty) && !strcmp(ty->valuestring, "ByteLevel")) byte_level = item;
        }
    } else if (cJSON_IsString(type) && !strcmp(type->valuestring, "Split")) {
        split = pre;
    } else if (cJSON_IsString(type) && !strcmp(type->valuestring, "ByteLevel")) {
        byte_level = pre;
    }
    const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(split, "pattern"), "Regex");
    const cJSON *behavior = cJSON_GetObjectItemCaseSensitive(split, "behavior");
    const char *regex = cJSON_IsString(pattern) ? pattern->valuestring : NULL;
    if (!split && byte_level) {
        const cJSON *use_regex = cJSON_GetObjectItemCaseSensitive(byte_level, "use_regex");
        if (cJSON_IsFalse(use_regex)) return 0; /* no split: every stretch between special tokens is one word */
        regex = GPT2_SPLIT;
    }
    if (!regex)
        return zen_fail(ZEN_ERR_INPUT, "%s: pre_tokenizer has no Split regex or ByteLevel (only byte-level BPE is "
                        "supported)", path);
    if (split && cJSON_IsString(behavior) && strcmp(behavior->valuestring, "Isolated"))
        return zen_fail(ZEN_ERR_INPUT, "%s: Split behavior '%s' is not supported (expected Isolated)", path,
                        behavior->valuestring);
    int err;
    PCRE2_SIZE offset;
    t->regex = pcre2_compile((PCRE2_SPTR)regex, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                             &offset, NULL);
    if (!t->regex) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return zen_fail(ZEN_ERR_INPUT, "%s: pre-tokenizer regex does not compile at %zu: %s", path, (size_t)offset, msg);
    }
    pcre2_jit_compile(t->regex, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is unavailable */
    t->match = pcre2_match_data_create_from_pattern(t->regex, NULL);
    return t->match ? 0 : zen_fail(ZEN_ERR_INTERNAL, "out of memory");
}

/* an id from tokenizer.json: an integer in [0, ZEN_TOKENIZER_MAX_ID) */
static int parse_id(const cJSON *item, int32_t *id) {
    if (!cJSON_IsNumber(item)) return -1;
    double v = item->valuedouble;
    if (!(v >= 0 && v < ZEN_TOKENIZER_MAX_ID) || v != (double)(int32_t)v) return -1;
    *id = (int32_t)v;
    return 0;
}

/* the id Hugging Face tokenizers gives an added token that is not yet known
 * (AddedVocabulary::add_tokens): the model's vocabulary size for the first,
 * then one past the largest added id once that reaches the vocabulary size */
static int32_t next_added_id(int32_t vocab_entries, int32_t max_added) {
    if (max_added < 0) return vocab_entries;
    return max_added >= vocab_entries || vocab_entries == 0 ? max_added + 1 : vocab_entries;
}

/* the ids of model.vocab and added_tokens, as HF assigns them:
 * - a vocabulary entry's id is its value (each id used once);
 * - an added token whose content is already known (in the vocabulary, or
 *   added before) takes that id and is marked as added, whatever id the file
 *   lists (HF warns and does the same), which is GPT-2's usual layout;
 * - a new added token takes next_added_id; tokenizer.json's id is advisory.
 * Every id must be in [0, ZEN_TOKENIZER_MAX_ID) and the ids dense enough
 * that the tables stay proportional to the file. */
static int assign_ids(zen_tokenizer *t, const cJSON *vocab, const cJSON *added, const char *path) {
    int32_t vocab_entries = 0, max_id = -1, id;
    const cJSON *item;
    cJSON_ArrayForEach(item, vocab) {
        if (parse_id(item, &id))
            return zen_fail(ZEN_ERR_INPUT, "%s: vocab entry '%.100s' has no valid id (an integer in [0, %d))", path,
                            item->string, ZEN_TOKENIZER_MAX_ID);
        vocab_entries++;
        if (id > max_id) max_id = id;
    }
    int n_added = cJSON_GetArraySize(added);
    if (added && !cJSON_IsArray(added)) return zen_fail(ZEN_ERR_INPUT, "%s: added_tokens must be a list", path);
    /* new added ids grow from the vocabulary size: bound them before allocating */
    int64_t bound = (int64_t)(max_id > vocab_entries ? max_id : vocab_entries) + n_added + 1;
    if (bound > ZEN_TOKENIZER_MAX_ID || bound > 16 * ((int64_t)vocab_entries + n_added) + 4096)
        return zen_fail(ZEN_ERR_INPUT, "%s: ids reach %lld for %d tokens (ids must be below %d and dense)", path,
                        (long long)bound, vocab_entries + n_added, ZEN_TOKENIZER_MAX_ID);
    t->n_ids = (int32_t)bound;
    t->id_text = zen_calloc((size_t)t->n_ids, sizeof(char *));
    t->is_added = zen_calloc((size_t)t->n_ids, 1);
    t->added = zen_calloc((size_t)n_added + 1, sizeof(added_token));
    if (!t->id_text || !t->is_added || !t->added || str_map_init(&t->vocab, (size_t)t->n_ids))
        return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    cJSON_ArrayForEach(item, vocab) {
        id = 0;
        parse_id(item, &id);
        if (t->id_text[id])
            return zen_fail(ZEN_ERR_INPUT, "%s: vocab entries '%.100s' and '%.100s' share id %d", path, t->id_text[id],
                            item->string, id);
        if (!(t->id_text[id] = strdup(item->string))) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        str_map_put(&t->vocab, t->id_text[id], strlen(t->id_text[id]), id);
    }
    int32_t max_added = -1;
    int k = 0;
    cJSON_ArrayForEach(item, added) {
        const cJSON *fid = cJSON_GetObjectItemCaseSensitive(item, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(item, "content");
        int32_t listed;
        if (!cJSON_IsObject(item) || !cJSON_IsString(content))
            return zen_fail(ZEN_ERR_INPUT, "%s: added token %d lacks a string 'content'", path, k);
        if (parse_id(fid, &listed))
            return zen_fail(ZEN_ERR_INPUT, "%s: added token %d ('%.100s') has no valid id (an integer in [0, %d))",
                            path, k, content->valuestring, ZEN_TOKENIZER_MAX_ID);
        k++;
        size_t len = strlen(content->valuestring);
        if (len == 0) continue; /* HF ignores empty added tokens */
        id = str_map_get(&t->vocab, content->valuestring, len);
        if (id < 0) { /* new: HF's next id */
            id = next_added_id(vocab_entries, max_added);
            if (id >= t->n_ids || t->id_text[id])
                return zen_fail(ZEN_ERR_INPUT, "%s: added token '%.100s' would take id %d, which the vocabulary "
                                "already uses", path, content->valuestring, id);
            if (!(t->id_text[id] = strdup(content->valuestring))) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
            str_map_put(&t->vocab, t->id_text[id], len, id);
        }
        if (id != listed) t->id_mismatches++;
        if (id > max_added) max_added = id;
        if (id > max_id) max_id = id;
        if (!t->is_added[id]) { /* matched in text before BPE, kept whole */
            t->is_added[id] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "special")) ? 2 : 1;
            t->added[t->n_added++] = (added_token){t->id_text[id], strlen(t->id_text[id]), id};
            t->added_first[(unsigned char)t->id_text[id][0]] = 1;
        }
    }
    t->n_ids = max_id + 1; /* the tables hold `bound` entries; ids stop here */
    return 0;
}

/* "left right" or [left, right] -> the two halves (malloc'd) */
static int merge_halves(const cJSON *item, char **left, char **right) {
    *left = *right = NULL;
    if (cJSON_IsString(item)) {
        const char *space = strchr(item->valuestring, ' ');
        if (!space) return -1;
        *left = strndup(item->valuestring, (size_t)(space - item->valuestring));
        *right = strdup(space + 1);
    } else if (cJSON_IsArray(item) && cJSON_GetArraySize(item) == 2 && cJSON_IsString(cJSON_GetArrayItem(item, 0)) &&
               cJSON_IsString(cJSON_GetArrayItem(item, 1))) {
        *left = strdup(cJSON_GetArrayItem(item, 0)->valuestring);
        *right = strdup(cJSON_GetArrayItem(item, 1)->valuestring);
    } else {
        return -1;
    }
    return *left && *right ? 0 : -2;
}

static int load_merges(zen_tokenizer *t, const cJSON *merges, const char *path) {
    if (pair_map_init(&t->merges, (size_t)cJSON_GetArraySize(merges))) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    int rank = 0, rc = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, merges) {
        char *left, *right;
        int bad = merge_halves(item, &left, &right);
        if (bad) rc = bad == -2 ? zen_fail(ZEN_ERR_INTERNAL, "out of memory")
                                : zen_fail(ZEN_ERR_INPUT, "%s: merge %d is neither \"a b\" nor [a, b]", path, rank);
        size_t nl = left ? strlen(left) : 0, nr = right ? strlen(right) : 0;
        char *joined = rc ? NULL : malloc(nl + nr + 1);
        if (!rc && !joined) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        if (!rc) {
            memcpy(joined, left, nl);
            memcpy(joined + nl, right, nr + 1);
            int32_t a = str_map_get(&t->vocab, left, nl), b = str_map_get(&t->vocab, right, nr);
            int32_t m = str_map_get(&t->vocab, joined, nl + nr);
            if (a < 0 || b < 0 || m < 0)
                rc = zen_fail(ZEN_ERR_INPUT, "%s: merge %d ('%.100s' '%.100s') uses a token not in the vocabulary", path,
                              rank, left, right);
            else
                pair_map_put(&t->merges, a, b, rank++, m);
        }
        free(left);
        free(right);
        free(joined);
        if (rc) return rc;
    }
    return 0;
}

static int load_root(zen_tokenizer *t, const cJSON *root, const char *path) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!(cJSON_IsString(type) && !strcmp(type->valuestring, "BPE") && cJSON_IsObject(vocab) && cJSON_IsArray(merges)))
        return zen_fail(ZEN_ERR_INPUT, "%s: expected a BPE model with 'vocab' and 'merges'", path);
    int rc = assign_ids(t, vocab, added, path);
    if (rc) return rc;
    /* bytes */
    int cp_of_byte[256];
    byte_level_map(cp_of_byte);
    for (int i = 0; i < 512; i++) t->unicode_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        char s[4];
        size_t n = utf8_encode(cp_of_byte[b], s);
        t->byte_id[b] = str_map_get(&t->vocab, s, n);
        t->unicode_to_byte[cp_of_byte[b]] = b;
        if (t->byte_id[b] < 0)
            return zen_fail(ZEN_ERR_INPUT, "%s: the vocabulary lacks the byte-level token of byte %d", path, b);
    }
    if ((rc = load_merges(t, merges, path))) return rc;
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *nt = cJSON_GetObjectItemCaseSensitive(norm, "type");
    if (norm && !cJSON_IsNull(norm)) {
        if (cJSON_IsString(nt) && !strcmp(nt->valuestring, "NFC")) t->nfc = 1;
        else return zen_fail(ZEN_ERR_INPUT, "%s: normalizer '%.100s' is not supported (NFC or none)", path,
                             cJSON_IsString(nt) ? nt->valuestring : "?");
    }
    if ((rc = setup_regex(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), path))) return rc;
    if (!(t->token_bytes = zen_calloc((size_t)t->n_ids, sizeof(uint32_t)))) return ZEN_ERR_INTERNAL;
    for (int32_t i = 0; i < t->n_ids; i++) {
        char *text = NULL;
        size_t len = 0;
        if (t->id_text[i] && !zen_tokenizer_decode(t, &i, 1, &text, &len)) free(text);
        t->token_bytes[i] = (uint32_t)len;
    }
    return 0;
}

int zen_tokenizer_load_json(zen_tokenizer **out, const char *json, size_t len, const char *origin) {
    *out = NULL;
    cJSON *root = NULL;
    zen_tokenizer *t = zen_calloc(1, sizeof *t);
    if (!t) return ZEN_ERR_INTERNAL;
    t->eos = t->pad = -1;
    int rc = zen_json_parse(json, len, origin, &root);
    if (!rc && !cJSON_IsObject(root)) rc = zen_fail(ZEN_ERR_INPUT, "%s: expected a JSON object", origin);
    if (!rc) rc = load_root(t, root, origin);
    cJSON_Delete(root);
    if (rc) {
        zen_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int zen_tokenizer_load(zen_tokenizer **out, const char *dir) {
    *out = NULL;
    char *path = zen_path_join(dir, "tokenizer.json"), *text = NULL;
    size_t len = 0;
    int rc = path ? zen_read_file_bytes(path, &text, &len) : ZEN_ERR_INTERNAL;
    if (!rc) rc = zen_tokenizer_load_json(out, text, len, path);
    if (!rc) rc = load_config_tokens(*out, dir);
    if (rc && *out) {
        zen_tokenizer_free(*out);
        *out = NULL;
    }
    free(text);
    free(path);
    return rc;
}

int zen_tokenizer_id_mismatches(const zen_tokenizer *t) { return t->id_mismatches; }

const char *zen_tokenizer_text(const zen_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids ? t->id_text[id] : NULL;
}

int zen_tokenizer_kind(const zen_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_ids || !t->id_text[id]) return 0;
    return 1 + t->is_added[id];
}

void zen_tokenizer_free(zen_tokenizer *t) {
    if (!t) return;
    for (int32_t i = 0; t->id_text && i < t->n_ids; i++) free(t->id_text[i]);
    free(t->id_text);
    free(t->is_added);
    free(t->added);
    free(t->vocab.keys);
    free(t->vocab.key_len);
    free(t->vocab.vals);
    free(t->merges.keys);
    free(t->merges.rank);
    free(t->merges.merged);
    for (size_t i = 0; t->cache && i < CACHE_SIZE; i++) {
        free(t->cache[i].word);
        free(t->cache[i].ids);
    }
    free(t->cache);
    free(t->token_bytes);
    if (t->match) pcre2_match_data_free(t->match);
    if (t->regex) pcre2_code_free(t->regex);
    free(t);
}

void zen_ids_free(zen_ids *v) {
    free(v->ids);
    v->ids = NULL;
    v->len = v->cap = 0;
}

static int ids_push(zen_ids *v, const int32_t *ids, size_t n) {
    if (v->len + n > v->cap) {
        size_t cap = v->cap ? v->cap : 1024;
        while (cap < v->len + n) cap *= 2;
        int32_t *grown = realloc(v->ids, cap * sizeof(int32_t));
        if (!grown) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        v->ids = grown;
        v->cap = cap;
    }
    memcpy(v->ids + v->len, ids, n * sizeof(int32_t));
    v->len += n;
    return 0;
}

int zen_ids_push(zen_ids *v, int32_t id) { return ids_push(v, &id, 1); }

/* ---------------- BPE of one pre-tokenized word ----------------
 * Bytes become byte tokens; then the adjacent pair of lowest merge rank is
 * merged (the leftmost among equals) until no pair has a merge. Short words
 * scan for the best pair directly; long ones (a long run of spaces, a huge
 * number) use a heap of candidate pairs with lazy invalidation, so a pathological
 * input costs O(n log n), not O(n^2). Both give the same merges. */

#define BPE_SCAN_MAX 128 /* words up to this many bytes use the direct scan */

static size_t bpe_scan(const zen_tokenizer *t, int32_t *sym, size_t count) {
    for (;;) {
        int best_rank = -1;
        size_t best = 0;
        int32_t best_merged = -1;
        for (size_t i = 0; i + 1 < count; i++) {
            int32_t merged;
            int r = pair_map_get(&t->merges, sym[i], sym[i + 1], &merged);
            if (r >= 0 && (best_rank < 0 || r < best_rank)) best_rank = r, best = i, best_merged = merged;
        }
        if (best_rank < 0) return count;
        sym[best] = best_merged;
        memmove(sym + best + 1, sym + best + 2, (count - best - 2) * sizeof(int32_t));
        count--;
    }
}

typedef struct {
    int32_t rank;
    uint32_t pos;             /* index of the left symbol */
    int32_t left, right;      /* the ids when the pair was pushed (stale if they changed) */
} bpe_cand;

static int cand_less(const bpe_cand *a, const bpe_cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(bpe_cand *h, size_t *n, bpe_cand c) {
    size_t i = (*n)++;
    h[i] = c;
    while (i > 0 && cand_less(&h[i], &h[(i - 1) / 2])) {
        bpe_cand tmp = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = tmp;
        i = (i - 1) / 2;
    }
}

static bpe_cand heap_pop(bpe_cand *h, size_t *n) {
    bpe_cand top = h[0];
    h[0] = h[--(*n)];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && cand_less(&h[l], &h[m])) m = l;
        if (r < *n && cand_less(&h[r], &h[m])) m = r;
        if (m == i) break;
        bpe_cand tmp = h[i];
        h[i] = h[m];
        h[m] = tmp;
        i = m;
    }
    return top;
}

/* merges sym[0..n) in place; returns the new count (-1 if out of memory) */
static long bpe_heap(const zen_tokenizer *t, int32_t *sym, size_t n) {
    int32_t *prev = malloc(n * sizeof(int32_t)), *next = malloc(n * sizeof(int32_t));
    bpe_cand *heap = malloc(2 * n * sizeof(bpe_cand)); /* each merge pushes at most 2 */
    if (!prev || !next || !heap) {
        free(prev), free(next), free(heap);
        return -1;
    }
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int32_t merged;
        int r = pair_map_get(&t->merges, sym[i], sym[i + 1], &merged);
        if (r >= 0) heap_push(heap, &hn, (bpe_cand){r, (uint32_t)i, sym[i], sym[i + 1]});
    }
    while (hn > 0) {
        bpe_cand c = heap_pop(heap, &hn);
        int32_t l = (int32_t)c.pos, rgt = next[l];
        /* stale: the left symbol was merged away or changed, or its right neighbour changed */
        if (sym[l] != c.left || rgt < 0 || sym[rgt] != c.right) continue;
        int32_t merged = -1;
        pair_map_get(&t->merges, c.left, c.right, &merged);
        sym[l] = merged;
        sym[rgt] = -1; /* dead */
        next[l] = next[rgt];
        if (next[l] >= 0) prev[next[l]] = l;
        int32_t r2;
        int rk;
        if (prev[l] >= 0 && (rk = pair_map_get(&t->merges, sym[prev[l]], sym[l], &r2)) >= 0)
            heap_push(heap, &hn, (bpe_cand){rk, (uint32_t)prev[l], sym[prev[l]], sym[l]});
        if (next[l] >= 0 && (rk = pair_map_get(&t->merges, sym[l], sym[next[l]], &r2)) >= 0)
            heap_push(heap, &hn, (bpe_cand){rk, (uint32_t)l, sym[l], sym[next[l]]});
    }
    size_t count = 0;
    for (int32_t i = 0; i >= 0; i = next[i]) sym[count++] = sym[i];
    free(prev), free(next), free(heap);
    return (long)count;
}

static int bpe_word(zen_tokenizer *t, const char *w, size_t n, zen_ids *out) {
    size_t slot = hash_bytes(w, n) & (CACHE_SIZE - 1);
    if (!t->cache && !(t->cache = zen_calloc(CACHE_SIZE, sizeof(cache_entry)))) return ZEN_ERR_INTERNAL; /* on first use */
    cache_entry *c = &t->cache[slot];
    if (c->word && c->len == n && !memcmp(c->word, w, n)) return ids_push(out, c->ids, c->n);
    int32_t stack[BPE_SCAN_MAX], *sym = n <= BPE_SCAN_MAX ? stack : malloc(n * sizeof(int32_t));
    if (!sym) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++) sym[i] = t->byte_id[(unsigned char)w[i]];
    long counted = n <= BPE_SCAN_MAX ? (long)bpe_scan(t, sym, n) : bpe_heap(t, sym, n);
    if (counted < 0) {
        if (sym != stack) free(sym);
        return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    }
    size_t count = (size_t)counted;
    int rc = ids_push(out, sym, count);
    if (!rc && n <= 256) { /* remember short words */
        free(c->word);
        free(c->ids);
        c->word = malloc(n);
        c->ids = malloc(count * sizeof(int32_t));
        if (c->word && c->ids) {
            memcpy(c->word, w, n);
            memcpy(c->ids, sym, count * sizeof(int32_t));
            c->len = n;
            c->n = count;
        } else {
            free(c->word);
            free(c->ids);
            c->word = NULL;
            c->ids = NULL;
        }
    }
    if (sym != stack) free(sym);
    return rc;
}

/* a stretch of ordinary text: normalise, split, BPE each piece */
static int encode_plain(zen_tokenizer *t, const char *text, size_t len, zen_ids *out) {
    if (len == 0) return 0;
    utf8proc_uint8_t *normalized = NULL;
    if (t->nfc) {
        int ascii = 1;
        for (size_t i = 0; i < len && ascii; i++) ascii = (unsigned char)text[i] < 0x80;
        if (!ascii) {
            utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &normalized,
                                              UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (n >= 0) {
                text = (const char *)normalized;
                len = (size_t)n;
            } else {
                normalized = NULL; /* invalid UTF-8: tokenised as bytes, unnormalised */
            }
        }
    }
    int rc = 0;
    size_t pos = 0;
    uint32_t check = 0; /* the first match validates the UTF-8 of the whole stretch; later ones skip it */
    if (!t->regex) { /* a pre-tokenizer without a split: the stretch is one word */
        rc = bpe_word(t, text, len, out);
        pos = len;
    }
    while (pos < len && !rc) {
        int m = pcre2_match(t->regex, (PCRE2_SPTR)text, len, pos, check, t->match, NULL);
        check = PCRE2_NO_UTF_CHECK;
        if (m == PCRE2_ERROR_MATCHLIMIT || m == PCRE2_ERROR_DEPTHLIMIT || m == PCRE2_ERROR_HEAPLIMIT ||
            m == PCRE2_ERROR_JIT_STACKLIMIT || m == PCRE2_ERROR_NOMEMORY) {
            rc = zen_fail(ZEN_ERR_INPUT, "the pre-tokenizer regex gave up (PCRE2 error %d) at byte %zu of a %zu-byte text",
                          m, pos, len);
            break;
        }
        if (m < 0) {
            /* no further match, or invalid UTF-8: the rest is one piece of bytes (Isolated keeps gaps) */
            rc = bpe_word(t, text + pos, len - pos, out);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->match);
        if (ov[0] > pos) rc = bpe_word(t, text + pos, ov[0] - pos, out);
        if (!rc && ov[1] > ov[0]) rc = bpe_word(t, text + ov[0], ov[1] - ov[0], out);
        if (ov[1] > ov[0]) {
            pos = ov[1];
        } else { /* an empty match (not produced by these patterns): step over one character */
            size_t step = 1;
            while (ov[0] + step < len && ((unsigned char)text[ov[0] + step] & 0xC0) == 0x80) step++;
            if (!rc) rc = bpe_word(t, text + ov[0], step, out);
            pos = ov[0] + step;
        }
    }
    free(normalized);
    return rc;
}

int zen_tokenizer_encode(zen_tokenizer *t, const char *text, size_t len, int parse_special, zen_ids *out) {
    size_t start = 0;
    int rc = 0;
    for (size_t i = 0; i < len && !rc && parse_special; i++) {
        if (!t->added_first[(unsigned char)text[i]]) continue;
        /* leftmost-longest, as HF's Aho-Corasick matcher */
        const added_token *best = NULL;
        for (int k = 0; k < t->n_added; k++) {
            const added_token *a = &t->added[k];
            if (a->content[0] == text[i] && a->len <= len - i && (!best || a->len > best->len) &&
                !memcmp(text + i, a->content, a->len))
                best = a;
        }
        if (best) {
            rc = encode_plain(t, text + start, i - start, out);
            if (!rc) rc = ids_push(out, &best->id, 1);
            i += best->len - 1;
            start = i + 1;
        }
    }
    if (!rc) rc = encode_plain(t, text + start, len - start, out);
    return rc;
}

/* the code point of the UTF-8 character at s (n bytes left), *adv its length;
 * a lead byte without its continuation bytes is one byte of its own (-1) */
static int decode_cp(const unsigned char *s, size_t n, size_t *adv) {
    size_t want = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    for (size_t k = 1; k < want && want <= n; k++)
        if ((s[k] & 0xC0) != 0x80) want = 0;
    if (want == 0 || want > n) {
        *adv = 1;
        return -1;
    }
    *adv = want;
    if (want == 1) return s[0];
    if (want == 2) return (s[0] & 0x1F) << 6 | (s[1] & 0x3F);
    if (want == 3) return (s[0] & 0x0F) << 12 | (s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    return -1; /* four bytes: above the byte-level map's range */
}

int zen_tokenizer_decode(const zen_tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *len_out) {
    size_t cap = 256, len = 0;
    char *buf = malloc(cap);
    if (!buf) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    for (size_t k = 0; k < n; k++) {
        if (ids[k] < 0 || ids[k] >= t->n_ids || !t->id_text[ids[k]]) {
            free(buf);
            return zen_fail(ZEN_ERR_INPUT, "token id %d at position %zu is not in the tokenizer", ids[k], k);
        }
        const char *s = t->id_text[ids[k]];
        size_t sl = strlen(s);
        if (len + sl + 1 > cap) {
            while (len + sl + 1 > cap) cap *= 2;
            char *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
            }
            buf = grown;
        }
        if (t->is_added[ids[k]]) {
            memcpy(buf + len, s, sl);
            len += sl;
            continue;
        }
        for (size_t i = 0; i < sl;) { /* byte-level characters back to bytes */
            size_t adv;
            int cp = decode_cp((const unsigned char *)s + i, sl - i, &adv);
            int b = cp >= 0 && cp < 512 ? t->unicode_to_byte[cp] : -1;
            if (b < 0) {
                memcpy(buf + len, s + i, adv);
                len += adv;
            } else {
                buf[len++] = (char)b;
            }
            i += adv;
        }
    }
    buf[len] = '\0';
    *out = buf;
    *len_out = len;
    return 0;
}

int32_t zen_tokenizer_token_id(const zen_tokenizer *t, const char *token) {
    return str_map_get(&t->vocab, token, strlen(token));
}

int32_t zen_tokenizer_vocab_size(const zen_tokenizer *t) { return t->n_ids; }

size_t zen_tokenizer_token_bytes(const zen_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids ? t->token_bytes[id] : 0;
}

int zen_tokenizer_normalize(const zen_tokenizer *t, const char *text, size_t len, char **out, size_t *out_len) {
    utf8proc_uint8_t *normalized = NULL;
    utf8proc_ssize_t n = -1;
    if (t->nfc && len) n = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &normalized,
                                        UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0) { /* no normaliser, or invalid UTF-8: unchanged */
        free(normalized);
        char *copy = malloc(len + 1);
        if (!copy) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        memcpy(copy, text, len);
        copy[len] = '\0';
        *out = copy;
        *out_len = len;
        return 0;
    }
    *out = (char *)normalized;
    *out_len = (size_t)n;
    return 0;
}
int32_t zen_tokenizer_eos(const zen_tokenizer *t) { return t->eos; }

void zen_tokenizer_set_special_ids(zen_tokenizer *t, int32_t eos, int32_t pad) {
    t->eos = eos >= 0 && eos < t->n_ids ? eos : -1;
    t->pad = pad >= 0 && pad < t->n_ids ? pad : -1;
}
int32_t zen_tokenizer_pad(const zen_tokenizer *t) { return t->pad; }

int zen_tokenizer_decode_known(const zen_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **out,
                               size_t *len_out) {
    int32_t *keep = malloc((n ? n : 1) * sizeof(int32_t));
    if (!keep) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int kind = zen_tokenizer_kind(t, ids[i]);
        if (kind && !(skip_special && kind == 3)) keep[k++] = ids[i];
    }
    int rc = zen_tokenizer_decode(t, keep, k, out, len_out);
    free(keep);
    return rc;
}

char *zen_utf8_valid(const char *text, size_t len) {
    char *out = malloc(3 * len + 1), *o = out;
    if (!out) return NULL;
    for (size_t at = 0; at < len;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t n = utf8proc_iterate((const utf8proc_uint8_t *)text + at, (utf8proc_ssize_t)(len - at), &c);
        if (n > 0) {
            memcpy(o, text + at, (size_t)n), o += n, at += (size_t)n;
        } else {
            memcpy(o, "\xEF\xBF\xBD", 3), o += 3, at++;
        }
    }
    *o = '\0';
    return out;
}

char *zen_tokenizer_utf8(const zen_tokenizer *t, const int32_t *ids, size_t n, int skip_special) {
    char *raw = NULL, *text;
    size_t len = 0;
    if (zen_tokenizer_decode_known(t, ids, n, skip_special, &raw, &len)) return NULL;
    text = zen_utf8_valid(raw, len);
    free(raw);
    if (!text) zen_fail(ZEN_ERR_INTERNAL, "out of memory (decoded text)");
    return text;
}
