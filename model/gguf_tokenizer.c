/* model/gguf_tokenizer.c: the tokenizer a llama.cpp GGUF base carries
 * (tokenizer.ggml.*, as llama.cpp's converter writes it for Qwen2/3: model
 * "gpt2", pre "qwen2", tokens, token_type, merges, special ids):
 * as zen's tokenizer (zen data --tokenizer FILE.gguf): the keys are turned
 * into the tokenizer.json they came from (byte-level BPE with Qwen2's split
 * regex and NFC; control tokens as special added tokens, user-defined ones as
 * plain added tokens, unused [PAD] slots left out) and loaded by the same
 * code as a tokenizer.json. (A merged export copies them as they are:
 * export/gguf_vocab.c.) */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/tokenizer.h"
#include "../util/error.h"
#include "gguf_tokenizer.h"

enum { TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5, TOKEN_BYTE = 6 };

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
    char *model = gguf_get_string(&f, "tokenizer.ggml.model"), *pre = gguf_get_string(&f, "tokenizer.ggml.pre");
    const gguf_kv *tokens = gguf_get_array(&f, "tokenizer.ggml.tokens", GGUF_STRING);
    const gguf_kv *types = gguf_get_array(&f, "tokenizer.ggml.token_type", GGUF_I32);
    const gguf_kv *merges = gguf_get_array(&f, "tokenizer.ggml.merges", GGUF_STRING);
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
            int32_t type = types ? gguf_array_i32(types, i) : TOKEN_NORMAL;
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
    if (!rc) zen_tokenizer_set_special_ids(*out, gguf_get_id(&f, "tokenizer.ggml.eos_token_id"),
                                           gguf_get_id(&f, "tokenizer.ggml.padding_token_id"));
    free(text);
    cJSON_Delete(root);
    free(model);
    free(pre);
    return rc;
}
