/* export/export_adapter.c: the adapter alone, in three layouts:
 *   peft:      adapter_config.json + adapter_model.safetensors (as training writes it)
 *   gguf-lora: llama.cpp's LoRA GGUF: blk.N.<proj>.weight.lora_a ne {in, r} (A as
 *              stored) and .lora_b ne {r, out} (B as stored); adapter.lora.alpha is
 *              scale * r, so llama.cpp's alpha / r equals zen's scale (also for rsLoRA)
 *   mlx:       adapters.safetensors with lora_a = A^T [in, r], lora_b = B^T [r, out]
 *              under model.layers.N.<module>, and mlx-lm's adapter_config.json
 *              (scale used as is: y += scale * (x lora_a) lora_b); a DoRA
 *              adapter adds m [out] and fine_tune_type "dora"; gguf-lora
 *              refuses DoRA (llama.cpp has no DoRA adapters). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/json.h"
#include "../util/file.h"
#include "export.h"
#include "../formats/quant.h"

static int export_gguf_lora(const zen_export_opts *o, const zen_model *m, const zen_lora *lo, const float *host) {
    ggml_type_id type = GGML_F32;
    if (o->dtype && (ggml_type_parse(o->dtype, &type) || ggml_type_block(type) != 1))
        return zen_fail(ZEN_ERR_INPUT, "--dtype '%s': gguf-lora takes f32, f16 or bf16 (llama.cpp rejects "
                        "quantized adapters)", o->dtype);
    gguf_writer w;
    gguf_writer_init(&w);
    gguf_add_string(&w, "general.architecture", "qwen3");
    gguf_add_string(&w, "general.type", "adapter");
    gguf_add_string(&w, "adapter.type", "lora");
    gguf_add_f32(&w, "adapter.lora.alpha", lo->scale * (float)lo->r);
    char name[96];
    for (int l = 0; l < m->cfg.layers; l++)
        for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
            if (!zen_lora_has(lo, t)) continue;
            int in, out;
            zen_target_dims(&m->cfg, (zen_target)t, &in, &out);
            uint64_t ne_a[2] = {(uint64_t)in, (uint64_t)lo->r}, ne_b[2] = {(uint64_t)lo->r, (uint64_t)out};
            snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", l, zen_target_gguf((zen_target)t));
            gguf_add_tensor(&w, name, 2, ne_a, type);
            snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", l, zen_target_gguf((zen_target)t));
            gguf_add_tensor(&w, name, 2, ne_b, type);
        }
    int rc = gguf_begin(&w, o->out);
    unsigned char *buf = zen_malloc(lo->num_params * 4);
    if (!rc && !buf) rc = ZEN_ERR_INTERNAL;
    /* the flat buffer is A then B per (layer, target): the order of the tensors above */
    if (!rc) {
        ggml_quantize(buf, host, lo->num_params, type);
        rc = gguf_put(&w, buf, ggml_type_bytes(type, lo->num_params));
    }
    if (!rc) rc = gguf_finish(&w);
    free(buf);
    gguf_writer_free(&w);
    return rc;
}

static int export_mlx(const zen_export_opts *o, const zen_model *m, const zen_lora *lo, const float *host,
                      const char *dir) {
    zen_dtype dtype = ZEN_F32;
    if (o->dtype && zen_dtype_parse_float(o->dtype, &dtype))
        return zen_fail(ZEN_ERR_INPUT, "--dtype '%s': mlx takes f32, f16 or bf16", o->dtype);
    int count = 0;
    int halves = lo->dora ? 3 : 2; /* DoRA: mlx-lm's DoRALinear also holds m [out] */
    for (int t = 0; t < ZEN_NUM_TARGETS; t++) count += zen_lora_has(lo, t) ? halves * m->cfg.layers : 0;
    st_entry *e = zen_calloc((size_t)count, sizeof *e);
    char (*names)[128] = zen_calloc((size_t)count, sizeof *names);
    float *transposed = zen_malloc(lo->num_params * sizeof(float));
    void *narrow = zen_malloc(lo->num_params * sizeof(float));
    int rc = e && names && transposed && narrow ? 0 : ZEN_ERR_INTERNAL;
    size_t off = 0;
    int k = 0;
    for (int l = 0; l < m->cfg.layers && !rc; l++)
        for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
            if (!zen_lora_has(lo, t)) continue;
            int in, out, r = lo->r;
            zen_target_dims(&m->cfg, (zen_target)t, &in, &out);
            const float *A = zen_lora_A(lo, (float *)host, l, t), *B = zen_lora_B(lo, (float *)host, l, t);
            /* lora_a [in, r] = A^T, then lora_b [r, out] = B^T */
            for (int i = 0; i < in; i++)
                for (int j = 0; j < r; j++) transposed[off + (size_t)i * r + j] = A[(size_t)j * in + i];
            snprintf(names[k], sizeof names[k], "model.layers.%d.%s.lora_a", l, zen_target_module((zen_target)t));
            e[k] = (st_entry){names[k], dtype, 2, {in, r}};
            off += (size_t)in * r, k++;
            for (int j = 0; j < r; j++)
                for (int i = 0; i < out; i++) transposed[off + (size_t)j * out + i] = B[(size_t)i * r + j];
            snprintf(names[k], sizeof names[k], "model.layers.%d.%s.lora_b", l, zen_target_module((zen_target)t));
            e[k] = (st_entry){names[k], dtype, 2, {r, out}};
            off += (size_t)r * out, k++;
            if (lo->dora) { /* m [out] as is: mlx-lm's DoRA is y = (m / ||W + s b^T a^T||) (x W^T + s x a b) */
                memcpy(transposed + off, zen_lora_M(lo, (float *)host, l, t), (size_t)out * sizeof(float));
                snprintf(names[k], sizeof names[k], "model.layers.%d.%s.m", l, zen_target_module((zen_target)t));
                e[k] = (st_entry){names[k], dtype, 1, {out}};
                off += (size_t)out, k++;
            }
        }
    char *path = zen_path_join(dir, "adapters.safetensors");
    const char *meta[] = {"format", "mlx"};
    st_writer w;
    if (!rc && !path) rc = ZEN_ERR_INTERNAL;
    if (!rc && !(rc = st_writer_open(&w, path, e, count, meta, 1))) {
        zen_narrow(narrow, transposed, dtype, lo->num_params);
        rc = st_writer_put(&w, narrow, zen_dtype_bytes(dtype, lo->num_params));
        rc = rc ? (st_writer_abort(&w), rc) : st_writer_close(&w);
    }
    if (!rc) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "fine_tune_type", lo->dora ? "dora" : "lora");
        cJSON_AddNumberToObject(root, "num_layers", m->cfg.layers);
        cJSON *p = cJSON_AddObjectToObject(root, "lora_parameters");
        cJSON_AddNumberToObject(p, "rank", lo->r);
        cJSON_AddNumberToObject(p, "scale", zen_float_for_json(lo->scale)); /* mlx applies it as is: alpha/r, alpha/sqrt(r) with rsLoRA */
        cJSON_AddNumberToObject(p, "dropout", zen_float_for_json(lo->dropout));
        cJSON *keys = cJSON_AddArrayToObject(p, "keys");
        for (int t = 0; t < ZEN_NUM_TARGETS; t++)
            if (zen_lora_has(lo, t)) cJSON_AddItemToArray(keys, cJSON_CreateString(zen_target_module((zen_target)t)));
        rc = zen_write_json_file(dir, "adapter_config.json", root);
    }
    free(path);
    free(e);
    free(names);
    free(transposed);
    free(narrow);
    return rc;
}

int zen_export_adapter(const zen_export_opts *o, const zen_model *m, const zen_lora *lo, const float *host,
                       const char *out) {
    switch (o->format) {
    case ZEN_EXPORT_PEFT: {
        zen_dtype dtype = ZEN_F32;
        if (o->dtype && zen_dtype_parse_float(o->dtype, &dtype))
            return zen_fail(ZEN_ERR_INPUT, "--dtype '%s': peft takes f32, f16 or bf16", o->dtype);
        return zen_lora_save_peft(lo, &m->cfg, out, o->model_dir, dtype);
    }
    case ZEN_EXPORT_GGUF_LORA:
        if (lo->dora)
            return zen_fail(ZEN_ERR_INPUT, "--format gguf-lora: %s is a DoRA adapter and llama.cpp has no DoRA adapters; "
                            "export the merged model instead (--format gguf)", o->adapter_dir);
        return export_gguf_lora(o, m, lo, host);
    case ZEN_EXPORT_MLX: return export_mlx(o, m, lo, host, out);
    default: return zen_fail(ZEN_ERR_INTERNAL, "not an adapter format");
    }
}
