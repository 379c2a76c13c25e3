/* export/quant_mix.c: the GGUF export choices and llama.cpp's rules for the
 * type of each tensor in a k-quant mixture, as src/llama-quant.cpp applies
 * them to a qwen3 model without an importance matrix (llama_tensor_get_type
 * and tensor_type_fallback; layers count in numeric order, as llama.cpp's
 * loader sorts them):
 *   - 1-D tensors and norms stay F32;
 *   - the output tensor, or token_embd when the head is tied: Q6_K (Q8_0
 *     when its rows are not a multiple of the default type's block);
 *   - attn_v: Q4_K_M, Q5_K_M: Q6_K on the layers use_more_bits picks;
 *     Q4_K_S: Q5_K on layers 0-3;
 *   - ffn_down: Q4_K_M, Q5_K_M: Q6_K on use_more_bits layers; Q4_K_S: Q5_K
 *     on the first n_layers/8;
 *   - everything else the default type;
 *   - then a row length that is not a multiple of the type's block falls
 *     back: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and to F16 when not a
 *     multiple of 32 either. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "quant_mix.h"

/* llama_ftype values (llama.h) */
static const zen_gguf_mix MIXES[] = {
    {"f32", GGML_F32, 0, 0},       {"f16", GGML_F16, 1, 0},       {"bf16", GGML_BF16, 32, 0},
    {"q8_0", GGML_Q8_0, 7, 0},     {"q4_0", GGML_Q4_0, 2, 0},     {"q4_k_s", GGML_Q4_K, 14, 1},
    {"q4_k_m", GGML_Q4_K, 15, 1},  {"q5_k_s", GGML_Q5_K, 16, 1},  {"q5_k_m", GGML_Q5_K, 17, 1},
    {"q6_k", GGML_Q6_K, 18, 1},
};
#define NMIXES (sizeof MIXES / sizeof MIXES[0])

const zen_gguf_mix *zen_gguf_mix_find(const char *name) {
    for (size_t i = 0; i < NMIXES; i++)
        if (!strcasecmp(name, MIXES[i].name)) return &MIXES[i];
    return NULL;
}

const zen_gguf_mix *zen_gguf_mix_plain(ggml_type_id t) {
    for (size_t i = 0; i < NMIXES; i++)
        if (MIXES[i].base == t && !MIXES[i].k_rules) return &MIXES[i];
    return &MIXES[0];
}

const char *zen_gguf_mix_names(void) {
    static char names[160];
    if (!names[0]) {
        size_t at = 0;
        for (size_t i = 0; i < NMIXES; i++)
            at += (size_t)snprintf(names + at, sizeof names - at, "%s%s", i ? ", " : "", MIXES[i].name);
    }
    return names;
}

/* llama.cpp's choice of layers that get more bits: the first and last
 * eighth, and every third layer between */
static int use_more_bits(int layer, int n_layers) {
    return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* the type of a matrix under the k rules, before the row-length fallback */
static ggml_type_id k_rule_type(const zen_gguf_mix *mix, const char *name, size_t cols, int n_layers, int tied) {
    int layer = -1;
    sscanf(name, "blk.%d.", &layer);
    const uint32_t Q4_K_S = 14, Q4_K_M = 15, Q5_K_M = 17;
    if (!strcmp(name, "output.weight") || (tied && !strcmp(name, "token_embd.weight")))
        return cols % ggml_type_block(mix->base) ? GGML_Q8_0 : GGML_Q6_K;
    if (ends_with(name, "attn_v.weight")) {
        if ((mix->file_type == Q4_K_M || mix->file_type == Q5_K_M) && use_more_bits(layer, n_layers)) return GGML_Q6_K;
        if (mix->file_type == Q4_K_S && layer < 4) return GGML_Q5_K;
    } else if (ends_with(name, "ffn_down.weight")) {
        if ((mix->file_type == Q4_K_M || mix->file_type == Q5_K_M) && use_more_bits(layer, n_layers)) return GGML_Q6_K;
        if (mix->file_type == Q4_K_S && layer < n_layers / 8) return GGML_Q5_K;
    }
    return mix->base;
}

ggml_type_id zen_gguf_mix_type(const zen_gguf_mix *mix, const char *gguf_name, int ndim, size_t cols, int n_layers,
                               int tied, int *fallback) {
    *fallback = 0;
    if (ndim == 1 || strstr(gguf_name, "_norm.weight")) return GGML_F32;
    ggml_type_id t = mix->k_rules ? k_rule_type(mix, gguf_name, cols, n_layers, tied) : mix->base;
    if (cols % ggml_type_block(t) == 0) return t;
    *fallback = 1;
    switch (t) {
    case GGML_Q4_K: t = GGML_Q5_0; break;
    case GGML_Q5_K: t = GGML_Q5_1; break;
    case GGML_Q6_K: t = GGML_Q8_0; break;
    default: break;
    }
    return cols % ggml_type_block(t) ? GGML_F16 : t;
}
