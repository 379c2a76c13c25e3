/* model/model_load.c: the base model loaded from a Hugging Face directory
 * (config.json and SafeTensors, one file or shards, each tensor found by its
 * name and checked against the config) or from a llama.cpp GGUF file
 * (model/gguf_model.c), every matrix through zen_model_put_matrix
 * (--base-quant quantises there). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../util/error.h"
#include "../util/file.h"
#include "gguf_model.h"
#include "model_load.h"

int zen_base_quant_parse(const char *name, int *out) {
    static const struct { const char *name; int dtype; } kinds[] = {
        {"none", -1}, {"nf4", ZEN_NF4}, {"q4_0", ZEN_Q4_0}, {"q8_0", ZEN_Q8_0}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(name, kinds[i].name)) {
            *out = kinds[i].dtype;
            return 0;
        }
    return zen_fail(ZEN_ERR_INPUT, "base_quant '%s' is unknown (expected none, nf4, q4_0 or q8_0)", name);
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

static int load_matrix(zen_model *m, const zen_tensor_desc *d) {
    const st_tensor *t = NULL;
    zen_dtype dtype = ZEN_F32;
    int rc = find_tensor(m, d->hf_name, 2, (int64_t)d->rows, (int64_t)d->cols, &t, &dtype);
    return rc ? rc : zen_model_put_matrix(m, d, t->data, dtype, t->nbytes);
}

int zen_model_load(zen_model *m, zk_backend *be, const char *dir) { return zen_model_load_quant(m, be, dir, -1); }

/* a llama.cpp GGUF file (a regular file), not a Hugging Face directory */
static int is_gguf_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int load_gguf(zen_model *m, const char *path) {
    int rc = gguf_open(&m->gguf, path);
    m->from_gguf = 1;
    if (!rc) rc = zen_gguf_config(&m->gguf, &m->cfg);
    if (rc) return rc;
    zen_tensor_desc *t = NULL;
    int n = zen_model_tensors(&m->cfg, &t);
    m->layers = zen_calloc((size_t)m->cfg.layers, sizeof(zen_layer_weights));
    if (n < 0 || !m->layers) rc = ZEN_ERR_INTERNAL;
    if (!rc) rc = zen_model_load_gguf_tensors(m, t, n);
    free(t);
    return rc;
}

int zen_model_load_quant(zen_model *m, zk_backend *be, const char *dir, int base_quant) {
    memset(m, 0, sizeof *m);
    m->be = be;
    m->base_quant = base_quant;
    struct stat st;
    if (stat(dir, &st) != 0)
        return zen_fail(ZEN_ERR_INPUT, "%s: cannot open: %s (the model is a Hugging Face directory or a GGUF file)",
                        dir, strerror(errno));
    if (is_gguf_file(dir)) {
        int rc = load_gguf(m, dir);
        if (!rc) {
            m->main_dtype = m->embed.dtype;
            if (m->cfg.tied) m->lm_head = m->embed;
        }
        if (rc) zen_model_free(m);
        return rc;
    }
    char *cfg_path = zen_path_join(dir, "config.json");
    if (!cfg_path) return ZEN_ERR_INTERNAL;
    int rc = zen_config_load(&m->cfg, cfg_path);
    free(cfg_path);
    if (rc) return rc;
    if ((rc = st_set_open_dir(&m->files, dir))) return rc;
    const zen_config *c = &m->cfg;
    zen_tensor_desc *t = NULL;
    int n = zen_model_tensors(c, &t);
    m->layers = zen_calloc((size_t)c->layers, sizeof(zen_layer_weights));
    if (n < 0 || !m->layers) rc = ZEN_ERR_INTERNAL;
    /* an lm_head.weight stored beside a tied model is not in the list: ignored */
    for (int i = 0; i < n && !rc; i++) {
        if (t[i].ndim == 2) rc = load_matrix(m, &t[i]);
        else rc = load_vector(m, zen_model_vector_slot(m, &t[i]), t[i].hf_name, (int64_t)t[i].rows);
    }
    free(t);
    if (!rc) {
        m->main_dtype = m->embed.dtype;
        if (c->tied) m->lm_head = m->embed;
    }
    if (rc) zen_model_free(m);
    return rc;
}
