/* model/gguf_model.c: a llama.cpp GGUF of architecture qwen3 as the base
 * model. The config comes from the qwen3.* keys (checked as a config.json
 * is: the same JSON checks run on what the keys say); each tensor is found
 * by llama.cpp's name with ne = {cols, rows} (the Hugging Face [rows, cols]
 * row-major bytes) and used in place from the mapped file, in any type the
 * table of type traits can dequantise (f32, f16, bf16, q8_0, q4_0, q5_0,
 * q5_1, q4_K, q5_K, q6_K). Qwen3's GGUF conversion keeps Q and K unpermuted
 * (NEOX RoPE is Hugging Face's rotate_half), so the bytes are HF's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "gguf_model.h"

/* a required integer key */
static int need_uint(const gguf_file *f, const char *key, uint64_t *out) {
    int rc = gguf_get_uint(f, key, out);
    return rc == -1 ? zen_fail(ZEN_ERR_INPUT, "%s: missing key '%s'", f->path, key) : rc;
}

int zen_gguf_config(const gguf_file *f, zen_config *cfg) {
    const gguf_kv *arch = gguf_find_kv(f, "general.architecture");
    char *name = arch && arch->type == GGUF_STRING ? gguf_string(arch, 0) : NULL;
    int qwen3 = name && !strcmp(name, "qwen3");
    char shown[64];
    snprintf(shown, sizeof shown, "%s", name ? name : "");
    free(name);
    if (!qwen3)
        return zen_fail(ZEN_ERR_INPUT, "%s: general.architecture is '%s'; zen trains qwen3 models", f->path,
                        arch ? shown : "(missing)");
    uint64_t layers, hidden, ffn, heads, kv_heads, ctx, head_dim, rot, vlen;
    double eps, theta = 10000.0; /* llama.cpp's defaults where a key is optional */
    int rc;
    if ((rc = need_uint(f, "qwen3.block_count", &layers)) || (rc = need_uint(f, "qwen3.embedding_length", &hidden)) ||
        (rc = need_uint(f, "qwen3.feed_forward_length", &ffn)) ||
        (rc = need_uint(f, "qwen3.attention.head_count", &heads)) ||
        (rc = need_uint(f, "qwen3.context_length", &ctx)))
        return rc;
    if ((rc = gguf_get_float(f, "qwen3.attention.layer_norm_rms_epsilon", &eps)) == -1)
        return zen_fail(ZEN_ERR_INPUT, "%s: missing key 'qwen3.attention.layer_norm_rms_epsilon'", f->path);
    if (rc || ((rc = gguf_get_float(f, "qwen3.rope.freq_base", &theta)) > 0)) return rc;
    if ((rc = gguf_get_uint(f, "qwen3.attention.head_count_kv", &kv_heads)) > 0) return rc;
    if (rc) kv_heads = heads;
    if ((rc = gguf_get_uint(f, "qwen3.attention.key_length", &head_dim)) > 0) return rc;
    if (rc) head_dim = heads ? hidden / heads : 0;
    if ((rc = gguf_get_uint(f, "qwen3.attention.value_length", &vlen)) > 0) return rc;
    if (!rc && vlen != head_dim)
        return zen_fail(ZEN_ERR_INPUT, "%s: qwen3.attention.value_length %llu differs from key_length %llu", f->path,
                        (unsigned long long)vlen, (unsigned long long)head_dim);
    if ((rc = gguf_get_uint(f, "qwen3.rope.dimension_count", &rot)) > 0) return rc;
    if (!rc && rot != head_dim)
        return zen_fail(ZEN_ERR_INPUT, "%s: qwen3.rope.dimension_count %llu: zen rotates whole heads of %llu",
                        f->path, (unsigned long long)rot, (unsigned long long)head_dim);
    const gguf_kv *scaling = gguf_find_kv(f, "qwen3.rope.scaling.type");
    char *scale = scaling && scaling->type == GGUF_STRING ? gguf_string(scaling, 0) : NULL;
    int scaled = scaling && (!scale || strcmp(scale, "none"));
    free(scale);
    if (scaled) return zen_fail(ZEN_ERR_INPUT, "%s: qwen3.rope.scaling.type: zen has no RoPE scaling", f->path);
    const gguf_tensor_info *embd = gguf_find_tensor(f, "token_embd.weight");
    if (!embd || embd->n_dims != 2)
        return zen_fail(ZEN_ERR_INPUT, "%s: missing tensor 'token_embd.weight' (2-D)", f->path);
    /* the same checks as a config.json, on what the keys say */
    char json[1024];
    snprintf(json, sizeof json,
             "{\"model_type\": \"qwen3\", \"hidden_size\": %llu, \"intermediate_size\": %llu, \"num_hidden_layers\": %llu, "
             "\"num_attention_heads\": %llu, \"num_key_value_heads\": %llu, \"head_dim\": %llu, "
             "\"rms_norm_eps\": %.17g, \"rope_theta\": %.17g, \"vocab_size\": %llu, \"max_position_embeddings\": %llu, "
             "\"tie_word_embeddings\": %s}",
             (unsigned long long)hidden, (unsigned long long)ffn, (unsigned long long)layers,
             (unsigned long long)heads, (unsigned long long)kv_heads, (unsigned long long)head_dim, eps, theta,
             (unsigned long long)embd->ne[1], (unsigned long long)ctx,
             gguf_find_tensor(f, "output.weight") ? "false" : "true");
    char origin[4200];
    snprintf(origin, sizeof origin, "%s (its qwen3.* keys)", f->path);
    return zen_config_parse(cfg, json, origin);
}

/* the tensor of d, with d's shape and a type zen computes with */
static int find(const zen_model *m, const zen_tensor_desc *d, const gguf_tensor_info **out, zen_dtype *dtype) {
    const gguf_file *f = &m->gguf;
    const gguf_tensor_info *t = gguf_find_tensor(f, d->gguf_name);
    if (!t) return zen_fail(ZEN_ERR_INPUT, "%s: missing tensor '%s'", f->path, d->gguf_name);
    uint64_t want0 = d->ndim == 2 ? d->cols : d->rows, want1 = d->ndim == 2 ? d->rows : 1;
    if (t->n_dims != (uint32_t)d->ndim || t->ne[0] != want0 || t->ne[1] != want1)
        return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' has ne [%llu, %llu], expected [%llu, %llu] for this config",
                        f->path, d->gguf_name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                        (unsigned long long)want0, (unsigned long long)want1);
    const zen_type_traits *tr = zen_type_by_ggml(t->type);
    if (!tr || tr->dtype < 0 || !tr->to_f32 || (d->ndim == 1 && tr->block != 1))
        return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s' is %s; zen reads %s", f->path, d->gguf_name,
                        tr ? tr->name : "an unknown type",
                        d->ndim == 1 ? "norm vectors as F32, F16 or BF16"
                                     : "F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K");
    if (want0 % tr->block)
        return zen_fail(ZEN_ERR_INPUT, "%s: tensor '%s': rows of %llu are not whole %s blocks", f->path, d->gguf_name,
                        (unsigned long long)want0, tr->name);
    *out = t;
    *dtype = (zen_dtype)tr->dtype;
    return 0;
}

int zen_model_load_gguf_tensors(zen_model *m, const zen_tensor_desc *t, int n) {
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const gguf_tensor_info *g = NULL;
        zen_dtype dtype = ZEN_F32;
        if ((rc = find(m, &t[i], &g, &dtype))) break;
        m->weight_bytes += g->nbytes;
        if (t[i].ndim == 1) {
            float *host = zen_malloc(t[i].rows * sizeof(float)), **slot = zen_model_vector_slot(m, &t[i]);
            if (!host) return ZEN_ERR_INTERNAL;
            zen_widen(host, g->data, dtype, t[i].rows);
            *slot = m->be->alloc(m->be, t[i].rows * sizeof(float));
            if (*slot) m->be->upload(m->be, *slot, host, t[i].rows * sizeof(float));
            free(host);
            rc = *slot ? 0 : ZEN_ERR_INTERNAL;
        } else {
            rc = zen_model_put_matrix(m, &t[i], g->data, dtype, g->nbytes);
        }
    }
    return rc;
}
