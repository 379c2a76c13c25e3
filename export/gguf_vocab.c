/* export/gguf_vocab.c: llama.cpp's tokenizer metadata built from a Hugging Face
 * byte-level BPE tokenizer (tokenizer.json + tokenizer_config.json), as
 * llama.cpp's converter writes it for Qwen2/3:
 *   tokenizer.ggml.model "gpt2", tokenizer.ggml.pre "qwen2",
 *   tokens [n_vocab] (ids without a token become "[PADi]"), token_type
 *   (1 normal, 3 control = special added token, 4 user-defined = other added
 *   token, 5 unused = padding), merges "left right" by rank, bos/eos/pad ids,
 *   add_bos_token, chat_template. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "../data/tokenizer.h"
#include "../util/file.h"
#include "export.h"

enum { TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5 };

/* a special token named in tokenizer_config.json: a string or {"content": ...} */
static const char *token_text(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

static int find_id(char **tokens, int n, const char *text) {
    for (int i = 0; text && i < n; i++)
        if (tokens[i] && !strcmp(tokens[i], text)) return i;
    return -1;
}

static int config_id(const char *model_dir, const char *key) {
    char *path = zen_path_join(model_dir, "config.json");
    cJSON *root = NULL;
    int id = -1;
    if (path && !zen_read_json_object(path, &root)) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
        if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < ZEN_TOKENIZER_MAX_ID) id = (int)v->valuedouble;
    }
    cJSON_Delete(root);
    free(path);
    return id;
}

int zen_gguf_add_tokenizer(gguf_writer *w, const char *model_dir, int n_vocab) {
    char *tok_path = zen_path_join(model_dir, "tokenizer.json");
    char *cfg_path = zen_path_join(model_dir, "tokenizer_config.json");
    cJSON *tok = NULL, *cfg = NULL;
    zen_tokenizer *t = NULL;
    char **tokens = zen_calloc((size_t)n_vocab, sizeof(char *));
    int32_t *types = zen_calloc((size_t)n_vocab, sizeof(int32_t));
    char **merges = NULL;
    int n_merges = 0, rc = 0;
    if (!tok_path || !cfg_path || !tokens || !types) rc = ZEN_ERR_INTERNAL;
    else if (!zen_file_exists(tok_path))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: no tokenizer.json for the GGUF vocabulary (give --no-tokenizer to export "
                      "a model without one)", model_dir);
    /* the ids as zen data gives them (data/tokenizer.c: HF's assignment, every id checked) */
    else if (!(rc = zen_tokenizer_load(&t, model_dir)) && zen_tokenizer_vocab_size(t) > n_vocab)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: token ids reach %d, outside the model's %d embedding rows", tok_path,
                      zen_tokenizer_vocab_size(t) - 1, n_vocab);
    if (!rc && !(rc = zen_read_json_object(tok_path, &tok)) && zen_file_exists(cfg_path))
        rc = zen_read_json_object(cfg_path, &cfg);
    const cJSON *model = rc ? NULL : cJSON_GetObjectItemCaseSensitive(tok, "model");
    const cJSON *mlist = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *item;
    for (int32_t id = 0; !rc && id < zen_tokenizer_vocab_size(t); id++) {
        static const int32_t kind_type[] = {0, TOKEN_NORMAL, TOKEN_USER_DEFINED, TOKEN_CONTROL};
        int kind = zen_tokenizer_kind(t, id);
        if (!kind) continue;
        tokens[id] = (char *)zen_tokenizer_text(t, id);
        types[id] = kind_type[kind];
    }
    char **pads = zen_calloc((size_t)n_vocab, sizeof(char *));
    if (!rc && !pads) rc = ZEN_ERR_INTERNAL;
    for (int i = 0; !rc && i < n_vocab; i++)
        if (!tokens[i]) {
            char buf[32];
            snprintf(buf, sizeof buf, "[PAD%d]", i);
            tokens[i] = pads[i] = strdup(buf);
            types[i] = TOKEN_UNUSED;
        }
    if (!rc) {
        n_merges = cJSON_GetArraySize(mlist);
        merges = zen_calloc((size_t)(n_merges ? n_merges : 1), sizeof(char *));
        int k = 0;
        cJSON_ArrayForEach(item, mlist) {
            if (cJSON_IsString(item)) {
                merges[k++] = strdup(item->valuestring);
            } else if (cJSON_IsArray(item) && cJSON_GetArraySize(item) == 2 && cJSON_IsString(cJSON_GetArrayItem(item, 0)) &&
                       cJSON_IsString(cJSON_GetArrayItem(item, 1))) { /* newer format: [left, right] */
                const char *a = cJSON_GetArrayItem(item, 0)->valuestring, *b = cJSON_GetArrayItem(item, 1)->valuestring;
                size_t n = strlen(a) + strlen(b) + 2;
                merges[k] = malloc(n);
                if (merges[k]) snprintf(merges[k], n, "%s %s", a, b);
                k++;
            } else {
                rc = zen_fail(ZEN_ERR_INPUT, "%s: merge %d is neither \"a b\" nor [a, b]", tok_path, k);
                break;
            }
        }
        n_merges = k;
    }
    if (!rc) {
        gguf_add_string(w, "tokenizer.ggml.model", "gpt2");
        gguf_add_string(w, "tokenizer.ggml.pre", "qwen2");
        gguf_add_string_array(w, "tokenizer.ggml.tokens", (const char *const *)tokens, (size_t)n_vocab);
        gguf_add_i32_array(w, "tokenizer.ggml.token_type", types, (size_t)n_vocab);
        gguf_add_string_array(w, "tokenizer.ggml.merges", (const char *const *)merges, (size_t)n_merges);
        /* special ids: tokenizer_config.json names them; config.json has the fallbacks */
        int bos = find_id(tokens, n_vocab, token_text(cJSON_GetObjectItemCaseSensitive(cfg, "bos_token")));
        int eos = find_id(tokens, n_vocab, token_text(cJSON_GetObjectItemCaseSensitive(cfg, "eos_token")));
        int pad = find_id(tokens, n_vocab, token_text(cJSON_GetObjectItemCaseSensitive(cfg, "pad_token")));
        if (bos < 0) bos = config_id(model_dir, "bos_token_id");
        if (eos < 0) eos = config_id(model_dir, "eos_token_id");
        if (bos >= 0) gguf_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
        if (eos >= 0) gguf_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
        if (pad >= 0) gguf_add_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)pad);
        gguf_add_bool(w, "tokenizer.ggml.add_bos_token",
                      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token")));
        const cJSON *tmpl = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
        if (cJSON_IsString(tmpl)) gguf_add_string(w, "tokenizer.chat_template", tmpl->valuestring);
    }
    for (int i = 0; pads && i < n_vocab; i++) free(pads[i]);
    for (int i = 0; merges && i < n_merges; i++) free(merges[i]);
    free(pads);
    free(merges);
    free(tokens);
    free(types);
    zen_tokenizer_free(t);
    cJSON_Delete(tok);
    cJSON_Delete(cfg);
    free(tok_path);
    free(cfg_path);
    return rc;
}

/* A GGUF base's own tokenizer keys, copied as they are into a merged export of it. */
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
    char *model = gguf_get_string(src, "tokenizer.ggml.model"), *pre = gguf_get_string(src, "tokenizer.ggml.pre");
    char *tmpl = gguf_get_string(src, "tokenizer.chat_template");
    const gguf_kv *tokens = gguf_get_array(src, "tokenizer.ggml.tokens", GGUF_STRING);
    const gguf_kv *types = gguf_get_array(src, "tokenizer.ggml.token_type", GGUF_I32);
    const gguf_kv *merges = gguf_get_array(src, "tokenizer.ggml.merges", GGUF_STRING);
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
                for (uint64_t i = 0; i < types->count; i++) ty[i] = gguf_array_i32(types, i);
                gguf_add_i32_array(w, "tokenizer.ggml.token_type", ty, types->count);
            }
            if (mg) gguf_add_string_array(w, "tokenizer.ggml.merges", (const char *const *)mg, merges->count);
            static const char *const ids[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                              "tokenizer.ggml.padding_token_id"};
            for (int i = 0; i < 3; i++)
                if (gguf_get_id(src, ids[i]) >= 0) gguf_add_u32(w, ids[i], (uint32_t)gguf_get_id(src, ids[i]));
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
