/* export/quant_mix.h: what `zen export --format gguf --dtype NAME` writes: one
 * table of the choices (plain types and llama.cpp's k-quant mixtures), each
 * with its default tensor type and the general.file_type llama.cpp records,
 * and the per-tensor type a choice gives (quant_mix.c). */
#ifndef ZEN_QUANT_MIX_H
#define ZEN_QUANT_MIX_H
#include <stddef.h>
#include <stdint.h>

#include "../formats/quant.h"

typedef struct {
    const char *name;      /* "q4_k_m" */
    ggml_type_id base;     /* the type of most matrices */
    uint32_t file_type;    /* llama_ftype: general.file_type */
    int k_rules;           /* 1: llama.cpp's per-tensor rules (llama_tensor_get_type) apply */
} zen_gguf_mix;

/* the choice named name (case-insensitive), or NULL */
const zen_gguf_mix *zen_gguf_mix_find(const char *name);
/* "f32, f16, ..." for messages */
const char *zen_gguf_mix_names(void);
/* the mixture that stores everything as t (f32, f16, bf16: a model's own dtype) */
const zen_gguf_mix *zen_gguf_mix_plain(ggml_type_id t);

/* The type of tensor gguf_name ("blk.3.attn_v.weight"; ndim 1 or 2, rows
 * of cols elements) in a model of n_layers whose head is tied (no
 * output.weight) when tied. Sets *fallback when the row length forced a
 * smaller block type than the rules chose. */
ggml_type_id zen_gguf_mix_type(const zen_gguf_mix *mix, const char *gguf_name, int ndim, size_t cols, int n_layers,
                               int tied, int *fallback);

#endif
