/* model/gguf_tokenizer.c: the tokenizer a llama.cpp GGUF base carries
 * (tokenizer.ggml.*, as llama.cpp's converter writes it for Qwen2/3: model
 * "gpt2", pre "qwen2", tokens, token_type, merges, special ids):
 * - as zen's tokenizer (zen data --tokenizer FILE.gguf): the keys are turned
 *   into the tokenizer.json they came from (byte-level BPE with Qwen2's split
 *   regex and NFC; control tokens as special added tokens, user-defined ones
 *   as plain added tokens, unused [PAD] slots left out) and loaded by the
 *   same code as a tokenizer.json;
 * - copied as they are into a merged GGUF export of that base. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/tokenizer.h"
#include "../util/error.h"
#include "export.h"

enum { TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5, TOKEN_BYTE = 6 };

/* a string key's value (malloc'd), NULL when absent or not a string */
static char *string_key(const gguf_file *f, const char *key) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    return kv && kv->type == GGUF_STRING ? gguf_string(kv, 0) : NULL;
}

/* an array key of elem type t, NULL when absent or of another type */
static const gguf_kv *array_key(const gguf_file *f, const char *key, gguf_value_type t) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    return kv && kv->type == GGUF_ARRAY && kv->elem_type == t ? kv : NULL;
}

/* a u32 / i32 special id, -1 when absent */
static int32_t id_key(const gguf_file *f, const char *key) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv || (kv->type != GGUF_U32 && kv->type != GGUF_I32)) return -1;
    int32_t v;
    memcpy(&v, kv->value, 4);
    return v;
}

/* the i-th int32 of an I32 array */
static int32_t i32_at(const gguf_kv *kv, uint64_t i) {
    int32_t v;
    memcpy(&v, kv->value + 4 * i, 4);
    return v;
}

int zen_tokenizer_from_gguf(zen_tokenizer **out, const char *path) {
    *out = NULL;
    gguf_file f;
    int rc = gguf_open(&f, path);
    if (rc) return rc;
    rc = zen_tokenizer_from_gguf_file(out, &f);
    gguf_close(&f);
    return rc;
}

int zen_tokenizer_from_gguf_file(zen_tokenizer **out, const gguf_file *g) {
    *out = NULL;
    const gguf_file f = *g; /* read only */
    const char *path = f.path;
    int rc = 0;
    char *model = string_key(&f, "tokenizer.ggml.model"), *pre = string_key(&f, "tokenizer.ggml.pre");
    const gguf_kv *tokens = array_key(&f, "tokenizer.ggml.tokens", GGUF_STRING);
    const gguf_kv *types = array_key(&f, "tokenizer.ggml.token_type", GGUF_I32);
    const gguf_kv *merges = array_key(&f, "tokenizer.ggml.merges", GGUF_STRING);
    cJSON *root = NULL;
    char *text = NULL;
    if (!model || strcmp(model, "gpt2") || !tokens || !merges)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: no byte-level BPE tokenizer (tokenizer.ggml.model 'gpt2' with tokens and "
                      "merges); found model '%s'", path, model ? model : "(none)");
    else if (!pre || strcmp(pre, "qwen2"))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: tokenizer.ggml.pre '%s': zen splits text as Qwen2/3 do ('qwen2')", path,
                      pre ? pre : "(none)");
    else if (types && types->count != tokens->count)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: tokenizer.ggml.token_type has %llu entries for %llu tokens", path,
                      (unsigned long long)types->count, (unsigned long long)tokens->count);
    if (!rc) { /* the tokenizer.json of these keys */
        root = cJSON_CreateObject();
        cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
        zen_qwen_tokenizer_json(root);
        cJSON *m = cJSON_AddObjectToObject(root, "model");
        cJSON_AddStringToObject(m, "type", "BPE");
        cJSON *vocab = cJSON_AddObjectToObject(m, "vocab"), *mlist = cJSON_AddArrayToObject(m, "merges");
        for (uint64_t i = 0; i < tokens->count && !rc; i++) {
            char *tok = gguf_string(tokens, i);
            int32_t type = types ? i32_at(types, i) : TOKEN_NORMAL;
            if (!tok) {
                rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
            } else if (type == TOKEN_CONTROL || type == TOKEN_USER_DEFINED) {
                cJSON *a = cJSON_CreateObject();
                cJSON_AddNumberToObject(a, "id", (double)i);
                cJSON_AddStringToObject(a, "content", tok);
                cJSON_AddBoolToObject(a, "special", type == TOKEN_CONTROL);
                cJSON_AddItemToArray(added, a);
            } else if (type != TOKEN_UNUSED) {
                cJSON_AddNumberToObject(vocab, tok, (double)i);
            }
            free(tok);
        }
        for (uint64_t i = 0; i < merges->count && !rc; i++) {
            char *mg = gguf_string(merges, i);
            if (!mg) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
            else cJSON_AddItemToArray(mlist, cJSON_CreateString(mg));
            free(mg);
        }
        if (!rc && !(text = cJSON_PrintUnformatted(root))) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    }
    if (!rc) {
        char origin[4200];
        snprintf(origin, sizeof origin, "%s (its tokenizer.ggml.* keys)", path);
        rc = zen_tokenizer_load_json(out, text, strlen(text), origin);
    }
    if (!rc) zen_tokenizer_set_special_ids(*out, id_key(&f, "tokenizer.ggml.eos_token_id"),
                                           id_key(&f, "tokenizer.ggml.padding_token_id"));
    free(text);
    cJSON_Delete(root);
    free(model);
    free(pre);
    return rc;
}

/* the strings of an array key, malloc'd (NULL on failure) */
static char **strings_of(const gguf_kv *kv) {
    char **s = zen_calloc(kv->count ? kv->count : 1, sizeof(char *));
    for (uint64_t i = 0; s && i < kv->count; i++)
        if (!(s[i] = gguf_string(kv, i))) {
            for (uint64_t j = 0; j < i; j++) free(s[j]);
            free(s);
            return NULL;
        }
    return s;
}

static void free_strings(char **s, uint64_t n) {
    for (uint64_t i = 0; s && i < n; i++) free(s[i]);
    free(s);
}

int zen_gguf_copy_tokenizer(gguf_writer *w, const gguf_file *src) {
    char *model = string_key(src, "tokenizer.ggml.model"), *pre = string_key(src, "tokenizer.ggml.pre");
    char *tmpl = string_key(src, "tokenizer.chat_template");
    const gguf_kv *tokens = array_key(src, "tokenizer.ggml.tokens", GGUF_STRING);
    const gguf_kv *types = array_key(src, "tokenizer.ggml.token_type", GGUF_I32);
    const gguf_kv *merges = array_key(src, "tokenizer.ggml.merges", GGUF_STRING);
    int rc = 0;
    if (!model || !tokens) {
        rc = zen_fail(ZEN_ERR_INPUT, "%s: no tokenizer.ggml.model and tokens to carry over (give --no-tokenizer to "
                      "export a model without one)", src->path);
    } else {
        char **tok = strings_of(tokens), **mg = merges ? strings_of(merges) : NULL;
        int32_t *ty = types ? zen_malloc(types->count * sizeof(int32_t)) : NULL;
        if (!tok || (merges && !mg) || (types && !ty)) {
            rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        } else {
            gguf_add_string(w, "tokenizer.ggml.model", model);
            if (pre) gguf_add_string(w, "tokenizer.ggml.pre", pre);
            gguf_add_string_array(w, "tokenizer.ggml.tokens", (const char *const *)tok, tokens->count);
            if (ty) {
                for (uint64_t i = 0; i < types->count; i++) ty[i] = i32_at(types, i);
                gguf_add_i32_array(w, "tokenizer.ggml.token_type", ty, types->count);
            }
            if (mg) gguf_add_string_array(w, "tokenizer.ggml.merges", (const char *const *)mg, merges->count);
            static const char *const ids[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                              "tokenizer.ggml.padding_token_id"};
            for (int i = 0; i < 3; i++)
                if (id_key(src, ids[i]) >= 0) gguf_add_u32(w, ids[i], (uint32_t)id_key(src, ids[i]));
            const gguf_kv *bos = gguf_find_kv(src, "tokenizer.ggml.add_bos_token");
            if (bos && bos->type == GGUF_BOOL) gguf_add_bool(w, "tokenizer.ggml.add_bos_token", bos->value[0] != 0);
            if (tmpl) gguf_add_string(w, "tokenizer.chat_template", tmpl);
        }
        free_strings(tok, tokens->count);
        free_strings(mg, merges ? merges->count : 0);
        free(ty);
    }
    free(model);
    free(pre);
    free(tmpl);
    return rc;
}
