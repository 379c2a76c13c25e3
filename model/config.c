/* model/config.c: reading and checking a Qwen3 config.json. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "../util/error.h"
#include "../util/file.h"
#include "../util/json.h"
#include "config.h"

/* an integer in [1, max] */
static int get_int(const cJSON *root, const char *key, int max, int *out, const char *origin) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!item) return zen_fail(ZEN_ERR_INPUT, "%s: missing key '%s'", origin, key);
    double v = cJSON_IsNumber(item) ? item->valuedouble : 0;
    if (!(v >= 1 && v <= max) || v != (double)(int)v)
        return zen_fail(ZEN_ERR_INPUT, "%s: key '%s' must be an integer in [1, %d]", origin, key, max);
    *out = (int)v;
    return 0;
}

/* a finite number in (0, max] */
static int get_double(const cJSON *root, const char *key, double max, double *out, const char *origin) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!item) return zen_fail(ZEN_ERR_INPUT, "%s: missing key '%s'", origin, key);
    if (!cJSON_IsNumber(item) || !(item->valuedouble > 0 && item->valuedouble <= max))
        return zen_fail(ZEN_ERR_INPUT, "%s: key '%s' must be a number in (0, %g]", origin, key, max);
    *out = item->valuedouble;
    return 0;
}

static int check_config(const cJSON *root, zen_config *cfg, const char *origin) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(type))
        return zen_fail(ZEN_ERR_INPUT, "%s: missing key 'model_type' (expected \"qwen3\")", origin);
    if (strcmp(type->valuestring, "qwen3") != 0)
        return zen_fail(ZEN_ERR_INPUT, "%s: model_type \"%s\" is not supported (expected \"qwen3\")",
                        origin, type->valuestring);
    int rc;
    double eps = 0;
    /* bounds far above any real model, low enough that no size derived from
     * them overflows (ZEN_CONFIG_MAX_* in config.h) */
    if ((rc = get_int(root, "hidden_size", ZEN_CONFIG_MAX_WIDTH, &cfg->hidden, origin)) ||
        (rc = get_int(root, "intermediate_size", ZEN_CONFIG_MAX_FFN, &cfg->intermediate, origin)) ||
        (rc = get_int(root, "num_hidden_layers", ZEN_CONFIG_MAX_LAYERS, &cfg->layers, origin)) ||
        (rc = get_int(root, "num_attention_heads", ZEN_CONFIG_MAX_HEADS, &cfg->heads, origin)) ||
        (rc = get_int(root, "num_key_value_heads", ZEN_CONFIG_MAX_HEADS, &cfg->kv_heads, origin)) ||
        (rc = get_int(root, "head_dim", ZEN_CONFIG_MAX_HEAD_DIM, &cfg->head_dim, origin)) ||
        (rc = get_double(root, "rms_norm_eps", 1.0, &eps, origin)) ||
        (rc = get_double(root, "rope_theta", 1e12, &cfg->rope_theta, origin)) ||
        (rc = get_int(root, "vocab_size", ZEN_CONFIG_MAX_VOCAB, &cfg->vocab, origin)) ||
        (rc = get_int(root, "max_position_embeddings", ZEN_CONFIG_MAX_POSITIONS, &cfg->max_positions, origin)))
        return rc;
    if ((int64_t)cfg->heads * cfg->head_dim > ZEN_CONFIG_MAX_WIDTH)
        return zen_fail(ZEN_ERR_INPUT, "%s: num_attention_heads %d x head_dim %d exceeds %d", origin, cfg->heads,
                        cfg->head_dim, ZEN_CONFIG_MAX_WIDTH);
    cfg->rms_eps = (float)eps;
    const cJSON *tied = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    if (!tied) return zen_fail(ZEN_ERR_INPUT, "%s: missing key 'tie_word_embeddings'", origin);
    if (!cJSON_IsBool(tied))
        return zen_fail(ZEN_ERR_INPUT, "%s: key 'tie_word_embeddings' must be true or false", origin);
    cfg->tied = cJSON_IsTrue(tied);
    if (cfg->heads % cfg->kv_heads != 0)
        return zen_fail(ZEN_ERR_INPUT,
                        "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                        origin, cfg->heads, cfg->kv_heads);
    if (cfg->head_dim % 2 != 0)
        return zen_fail(ZEN_ERR_INPUT, "%s: head_dim %d must be even for RoPE", origin,
                        cfg->head_dim);
    cfg->init_std = 0.02;
    const cJSON *init = cJSON_GetObjectItemCaseSensitive(root, "initializer_range");
    if (init && !(cJSON_IsNumber(init) && init->valuedouble > 0 && init->valuedouble < 10))
        return zen_fail(ZEN_ERR_INPUT, "%s: initializer_range must be a number in (0, 10)", origin);
    if (init) cfg->init_std = init->valuedouble;
    const cJSON *scaling = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (scaling && !cJSON_IsNull(scaling))
        return zen_fail(ZEN_ERR_INPUT, "%s: rope_scaling is not supported (must be null)", origin);
    const cJSON *bias = cJSON_GetObjectItemCaseSensitive(root, "attention_bias");
    if (cJSON_IsTrue(bias))
        return zen_fail(ZEN_ERR_INPUT, "%s: attention_bias true is not supported", origin);
    const cJSON *sliding = cJSON_GetObjectItemCaseSensitive(root, "use_sliding_window");
    if (cJSON_IsTrue(sliding))
        return zen_fail(ZEN_ERR_INPUT, "%s: use_sliding_window true is not supported (zen attends over the whole "
                        "sequence, as Qwen3 does by default)", origin);
    return 0;
}

int zen_config_parse(zen_config *cfg, const char *json_text, const char *origin) {
    cJSON *root = NULL;
    int rc = zen_json_parse(json_text, strlen(json_text), origin, &root);
    if (rc) return rc;
    rc = cJSON_IsObject(root) ? check_config(root, cfg, origin)
                                  : zen_fail(ZEN_ERR_INPUT, "%s: expected a JSON object", origin);
    cJSON_Delete(root);
    return rc;
}

int zen_config_load(zen_config *cfg, const char *path) {
    char *text = NULL;
    int rc = zen_read_text_file(path, &text);
    if (rc) return rc;
    rc = zen_config_parse(cfg, text, path);
    free(text);
    return rc;
}

int64_t zen_config_param_count(const zen_config *c) {
    int64_t C = c->hidden, F = c->intermediate, hd = c->head_dim;
    int64_t qd = (int64_t)c->heads * hd, kvd = (int64_t)c->kv_heads * hd;
    int64_t per_layer = 2 * C                      /* input + post-attention norms */
                        + qd * C + 2 * kvd * C     /* q, k, v */
                        + C * qd                   /* o */
                        + 2 * hd                   /* q_norm, k_norm */
                        + 3 * C * F;               /* gate, up, down */
    int64_t total = (int64_t)c->vocab * C + c->layers * per_layer + C;
    if (!c->tied) total += (int64_t)c->vocab * C;
    return total;
}

void zen_config_json_no_sliding_window(cJSON *root) {
    if (!cJSON_GetObjectItemCaseSensitive(root, "use_sliding_window"))
        cJSON_AddBoolToObject(root, "use_sliding_window", 0);
    /* zen attends over everything (config.c refuses use_sliding_window
     * true), so the window is null as in real Qwen3 configs: transformers
     * before 4.53 applies a number even when use_sliding_window is false */
    if (cJSON_GetObjectItemCaseSensitive(root, "sliding_window"))
        cJSON_ReplaceItemInObjectCaseSensitive(root, "sliding_window", cJSON_CreateNull());
    else
        cJSON_AddNullToObject(root, "sliding_window");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "num_hidden_layers");
    if (!cJSON_GetObjectItemCaseSensitive(root, "max_window_layers") && cJSON_IsNumber(layers))
        cJSON_AddNumberToObject(root, "max_window_layers", layers->valuedouble);
}

cJSON *zen_config_to_json(const zen_config *c) {
    cJSON *root = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("Qwen3ForCausalLM"));
    cJSON_AddStringToObject(root, "model_type", "qwen3");
    cJSON_AddNumberToObject(root, "hidden_size", c->hidden);
    cJSON_AddNumberToObject(root, "intermediate_size", c->intermediate);
    cJSON_AddNumberToObject(root, "num_hidden_layers", c->layers);
    cJSON_AddNumberToObject(root, "num_attention_heads", c->heads);
    cJSON_AddNumberToObject(root, "num_key_value_heads", c->kv_heads);
    cJSON_AddNumberToObject(root, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(root, "rms_norm_eps", zen_float_for_json(c->rms_eps)); /* 1e-06, not 9.99999997e-07 */
    cJSON_AddNumberToObject(root, "rope_theta", c->rope_theta);
    cJSON_AddNumberToObject(root, "vocab_size", c->vocab);
    cJSON_AddNumberToObject(root, "max_position_embeddings", c->max_positions);
    cJSON_AddBoolToObject(root, "tie_word_embeddings", c->tied);
    cJSON_AddStringToObject(root, "hidden_act", "silu");
    cJSON_AddBoolToObject(root, "attention_bias", 0);
    cJSON_AddNullToObject(root, "rope_scaling");
    zen_config_json_no_sliding_window(root);
    return root;
}
