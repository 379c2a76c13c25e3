/* model/config.h: the Zen (Qwen3-architecture) model configuration, read from a
 * Hugging Face config.json or from a built-in preset (configs/presets/). */
#ifndef ZEN_CONFIG_H
#define ZEN_CONFIG_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int hidden;          /* hidden_size, C */
    int intermediate;    /* intermediate_size, F */
    int layers;          /* num_hidden_layers, L */
    int heads;           /* num_attention_heads, nh */
    int kv_heads;        /* num_key_value_heads, nkv */
    int head_dim;        /* head_dim, hd (not necessarily hidden / heads) */
    float rms_eps;       /* rms_norm_eps */
    double rope_theta;   /* rope_theta */
    int vocab;           /* vocab_size, V */
    int tied;            /* tie_word_embeddings */
    int max_positions;   /* max_position_embeddings */
    double init_std;     /* initializer_range (optional, default 0.02): std of random init */
} zen_config;

/* Largest values config.json may give (far above Qwen3's largest models, small
 * enough that every count derived from them fits in 64 bits). */
#define ZEN_CONFIG_MAX_WIDTH (1 << 18)      /* hidden_size, heads x head_dim */
#define ZEN_CONFIG_MAX_FFN (1 << 20)        /* intermediate_size */
#define ZEN_CONFIG_MAX_LAYERS 1024
#define ZEN_CONFIG_MAX_HEADS 4096
#define ZEN_CONFIG_MAX_HEAD_DIM 4096
#define ZEN_CONFIG_MAX_VOCAB (1 << 24)
#define ZEN_CONFIG_MAX_POSITIONS (1 << 24)

/* Parses config.json text; `origin` names the file in error messages. */
int zen_config_parse(zen_config *cfg, const char *json_text, const char *origin);
int zen_config_load(zen_config *cfg, const char *path);
/* The built-in preset's config.json text ("tiny", "small", "zen-nano-4b"), or NULL. */
const char *zen_preset_json(const char *name);
/* comma-separated preset names, for messages */
const char *zen_preset_names(void);
/* the same as "a|b|c", for usage text */
extern const char zen_preset_choices[];

/* Total parameter count (embedding, layers, final norm, LM head if untied). */
int64_t zen_config_param_count(const zen_config *cfg);

/* Adds to a config.json object what Hugging Face's Qwen3 code needs to know
 * that there is no sliding window (use_sliding_window false, sliding_window
 * null, max_window_layers = num_hidden_layers), where a key is missing:
 * without them transformers 4.51 applies a 4096-token window. */
struct cJSON;
void zen_config_json_no_sliding_window(struct cJSON *root);
/* A Hugging Face Qwen3 config.json object for cfg (for a model that came
 * from a GGUF file, which has none); the caller deletes it. */
struct cJSON *zen_config_to_json(const zen_config *cfg);

#endif
