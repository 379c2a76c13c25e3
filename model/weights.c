/* model/weights.c: loading the base model's weights by their Hugging Face names,
 * checking every shape against config.json. */
#include <stdio.h>
#include <string.h>

#include "../util/error.h"
#include "../util/file.h"
#include "weights.h"

static const char *const target_names[ZEN_NUM_TARGETS] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
static const char *const target_modules[ZEN_NUM_TARGETS] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

const char *zen_target_name(zen_target t) { return target_names[t]; }
const char *zen_target_module(zen_target t) { return target_modules[t]; }

void zen_target_dims(const zen_config *c, zen_target t, int *in, int *out) {
    int qd = c->heads * c->head_dim, kvd = c->kv_heads * c->head_dim;
    switch (t) {
    case ZT_Q: *in = c->hidden; *out = qd; break;
    case ZT_K:
    case ZT_V: *in = c->hidden; *out = kvd; break;
    case ZT_O: *in = qd; *out = c->hidden; break;
    case ZT_GATE:
    case ZT_UP: *in = c->hidden; *out = c->intermediate; break;
    default: *in = c->intermediate; *out = c->hidden; break;
    }
}

/* finds `name` with the given 2-D or 1-D shape and float dtype */
static int find_tensor(zen_model *m, const char *name, int ndim, int64_t d0, int64_t d1,
                       const st_tensor **t_out, zen_dtype *dtype) {
    const st_file *file = NULL;
    const st_tensor *t = st_set_find(&m->files, name, &file);
    if (!t)
        return zen_fail(ZEN_ERR_INPUT, "%s: missing tensor '%s'", m->files.files[0].path, name);
    int64_t shape[2] = {d0, d1};
    int rc = st_float_dtype(file, t, dtype);
    if (!rc) rc = st_check_shape(file, t, ndim, shape);
    if (rc) return rc;
    *t_out = t;
    m->weight_bytes += t->nbytes;
    return 0;
}

static int load_matrix(zen_model *m, zk_weight *w, const char *name, int64_t rows, int64_t cols) {
    const st_tensor *t = NULL;
    zen_dtype dtype = ZEN_F32;
    int rc = find_tensor(m, name, 2, rows, cols, &t, &dtype);
    if (rc) return rc;
    return m->be->weight_create(m->be, w, t->data, dtype, (size_t)t->numel);
}

static int load_vector(zen_model *m, float **out, const char *name, int64_t n) {
    const st_tensor *t = NULL;
    zen_dtype dtype = ZEN_F32;
    int rc = find_tensor(m, name, 1, n, 0, &t, &dtype);
    if (rc) return rc;
    float *host = zen_malloc((size_t)n * sizeof(float));
    if (!host) return ZEN_ERR_INTERNAL;
    zen_widen(host, t->data, dtype, (size_t)n);
    *out = m->be->alloc(m->be, (size_t)n * sizeof(float));
    if (*out) m->be->upload(m->be, *out, host, (size_t)n * sizeof(float));
    free(host);
    return *out ? 0 : ZEN_ERR_INTERNAL;
}

int zen_model_load(zen_model *m, zk_backend *be, const char *dir) {
    memset(m, 0, sizeof *m);
    m->be = be;
    char *cfg_path = zen_path_join(dir, "config.json");
    if (!cfg_path) return ZEN_ERR_INTERNAL;
    int rc = zen_config_load(&m->cfg, cfg_path);
    free(cfg_path);
    if (rc) return rc;
    if ((rc = st_set_open_dir(&m->files, dir))) return rc;
    const zen_config *c = &m->cfg;
    m->layers = zen_calloc((size_t)c->layers, sizeof(zen_layer_weights));
    if (!m->layers) {
        zen_model_free(m);
        return ZEN_ERR_INTERNAL;
    }
    rc = load_matrix(m, &m->embed, "model.embed_tokens.weight", c->vocab, c->hidden);
    m->main_dtype = m->embed.dtype;
    if (!rc && c->tied) m->lm_head = m->embed; /* an lm_head.weight in the files is ignored */
    if (!rc && !c->tied) rc = load_matrix(m, &m->lm_head, "lm_head.weight", c->vocab, c->hidden);
    if (!rc) rc = load_vector(m, &m->final_norm, "model.norm.weight", c->hidden);
    char name[256];
    for (int l = 0; l < c->layers && !rc; l++) {
        zen_layer_weights *lw = &m->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        rc = load_vector(m, &lw->attn_norm, name, c->hidden);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        if (!rc) rc = load_vector(m, &lw->ffn_norm, name, c->hidden);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", l);
        if (!rc) rc = load_vector(m, &lw->q_norm, name, c->head_dim);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", l);
        if (!rc) rc = load_vector(m, &lw->k_norm, name, c->head_dim);
        for (int t = 0; t < ZEN_NUM_TARGETS && !rc; t++) {
            int in, out;
            zen_target_dims(c, (zen_target)t, &in, &out);
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, target_modules[t]);
            rc = load_matrix(m, &lw->proj[t], name, out, in);
        }
    }
    if (rc) zen_model_free(m);
    return rc;
}

void zen_model_free(zen_model *m) {
    zk_backend *be = m->be;
    if (!be) return;
    if (m->layers) {
        for (int l = 0; l < m->cfg.layers; l++) {
            zen_layer_weights *lw = &m->layers[l];
            be->free(be, lw->attn_norm);
            be->free(be, lw->ffn_norm);
            be->free(be, lw->q_norm);
            be->free(be, lw->k_norm);
            for (int t = 0; t < ZEN_NUM_TARGETS; t++)
                if (lw->proj[t].data) be->weight_destroy(be, &lw->proj[t]);
        }
        free(m->layers);
    }
    if (m->embed.data) be->weight_destroy(be, &m->embed);
    if (!m->cfg.tied && m->lm_head.data) be->weight_destroy(be, &m->lm_head);
    be->free(be, m->final_norm);
    st_set_close(&m->files);
    memset(m, 0, sizeof *m);
}
