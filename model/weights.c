/* model/weights.c: the base model in memory (see weights.h): the targets'
 * names and shapes, the tensor list, matrices put in place (quantised under
 * --base-quant), lookup, freeing, and the checks for non-finite weights and
 * outputs over the model's own files. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "weights.h"

static const char *const target_names[ZEN_NUM_TARGETS] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
static const char *const target_modules[ZEN_NUM_TARGETS] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

static const char *const gguf_proj[ZEN_NUM_TARGETS] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                       "ffn_gate", "ffn_up", "ffn_down"};

const char *zen_target_name(zen_target t) { return target_names[t]; }
const char *zen_target_gguf(zen_target t) { return gguf_proj[t]; }
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

/* rows x cols of src (stored as dtype) into a new host buffer of type q, on
 * every thread; the source pages are released afterwards */
static void *quantize_matrix(const void *src, zen_dtype dtype, size_t rows, size_t cols, zen_dtype q) {
    size_t src_row = zen_dtype_bytes(dtype, cols), dst_row = zen_dtype_bytes(q, cols);
    uint8_t *dst = zen_malloc(rows * dst_row);
    int failed = 0;
    if (!dst) return NULL;
#pragma omp parallel
    {
        float *wide = malloc(cols * sizeof(float)); /* [cols] one row in fp32 */
        if (!wide) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (size_t r = 0; r < rows; r++) {
            if (!wide) continue;
            zen_widen(wide, (const char *)src + r * src_row, dtype, cols);
            zen_narrow(dst + r * dst_row, wide, q, cols);
        }
        free(wide);
    }
    if (failed) {
        free(dst);
        zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    return dst;
}

static zk_weight *matrix_slot(zen_model *m, const zen_tensor_desc *d);

int zen_model_put_matrix(zen_model *m, const zen_tensor_desc *d, const void *data, zen_dtype dtype, size_t nbytes) {
    zk_weight *w = matrix_slot(m, d);
    size_t numel = d->rows * d->cols;
    int rc;
    /* --base-quant: projections stored in a float type (a quantised file's stay as they are) */
    int quantize = d->kind == ZW_PROJ && m->base_quant >= 0 && !zen_dtype_is_quant(dtype);
    if (quantize && d->cols % zen_dtype_block((zen_dtype)m->base_quant)) { /* rows of partial blocks: as stored */
        m->quant_kept++;
        quantize = 0;
    }
    if (!quantize) {
        if (zen_dtype_is_quant(dtype) && numel > m->largest_quant) m->largest_quant = numel;
        if ((rc = m->be->weight_create(m->be, w, data, dtype, numel))) return rc;
        if (w->data != data) st_release(data, nbytes); /* the backend made its copy: the file's pages go */
        return 0;
    }
    zen_dtype q = (zen_dtype)m->base_quant;
    void *host = quantize_matrix(data, dtype, d->rows, d->cols, q);
    if (!host) return ZEN_ERR_INTERNAL;
    st_release(data, nbytes);
    if (numel > m->largest_quant) m->largest_quant = numel;
    m->quant_bytes += zen_dtype_bytes(q, d->rows * d->cols);
    if ((rc = m->be->weight_create(m->be, w, host, q, numel))) {
        free(host);
        return rc;
    }
    if (w->data != host) { /* the backend made its own copy (a GPU) */
        free(host);
        return 0;
    }
    void **owned = realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *owned);
    if (!owned) {
        m->be->weight_destroy(m->be, w);
        free(host);
        return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    }
    m->owned = owned;
    m->owned[m->n_owned++] = host;
    return 0;
}

static void describe(zen_tensor_desc *d, zen_tensor_kind kind, int layer, int target, size_t rows, size_t cols) {
    d->kind = kind, d->layer = layer, d->target = target, d->rows = rows, d->cols = cols;
    d->ndim = kind == ZW_PROJ || kind == ZW_EMBED || kind == ZW_LM_HEAD ? 2 : 1;
    static const char *const hf_norm[] = {"input_layernorm", "post_attention_layernorm", "self_attn.q_norm",
                                          "self_attn.k_norm"};
    static const char *const gg_norm[] = {"attn_norm", "ffn_norm", "attn_q_norm", "attn_k_norm"};
    switch (kind) {
    case ZW_EMBED:
        snprintf(d->hf_name, sizeof d->hf_name, "model.embed_tokens.weight");
        snprintf(d->gguf_name, sizeof d->gguf_name, "token_embd.weight");
        break;
    case ZW_LM_HEAD:
        snprintf(d->hf_name, sizeof d->hf_name, "lm_head.weight");
        snprintf(d->gguf_name, sizeof d->gguf_name, "output.weight");
        break;
    case ZW_FINAL_NORM:
        snprintf(d->hf_name, sizeof d->hf_name, "model.norm.weight");
        snprintf(d->gguf_name, sizeof d->gguf_name, "output_norm.weight");
        break;
    case ZW_PROJ:
        snprintf(d->hf_name, sizeof d->hf_name, "model.layers.%d.%s.weight", layer, target_modules[target]);
        snprintf(d->gguf_name, sizeof d->gguf_name, "blk.%d.%s.weight", layer, gguf_proj[target]);
        break;
    default: {
        int k = kind - ZW_ATTN_NORM;
        snprintf(d->hf_name, sizeof d->hf_name, "model.layers.%d.%s.weight", layer, hf_norm[k]);
        snprintf(d->gguf_name, sizeof d->gguf_name, "blk.%d.%s.weight", layer, gg_norm[k]);
    }
    }
}

int zen_model_tensors(const zen_config *c, zen_tensor_desc **out) {
    zen_tensor_desc *t = zen_calloc((size_t)(3 + 11 * c->layers), sizeof *t);
    if (!t) return -1;
    int n = 0;
    size_t C = (size_t)c->hidden, hd = (size_t)c->head_dim;
    describe(&t[n++], ZW_EMBED, -1, -1, (size_t)c->vocab, C);
    for (int l = 0; l < c->layers; l++) {
        describe(&t[n++], ZW_ATTN_NORM, l, -1, C, 1);
        for (int p = 0; p < ZEN_NUM_TARGETS; p++) {
            int in, o;
            zen_target_dims(c, (zen_target)p, &in, &o);
            describe(&t[n++], ZW_PROJ, l, p, (size_t)o, (size_t)in);
            if (p == ZT_O) { /* HF's order: the attention norms after o_proj, then the FFN norm */
                describe(&t[n++], ZW_Q_NORM, l, -1, hd, 1);
                describe(&t[n++], ZW_K_NORM, l, -1, hd, 1);
                describe(&t[n++], ZW_FFN_NORM, l, -1, C, 1);
            }
        }
    }
    describe(&t[n++], ZW_FINAL_NORM, -1, -1, C, 1);
    if (!c->tied) describe(&t[n++], ZW_LM_HEAD, -1, -1, (size_t)c->vocab, C);
    *out = t;
    return n;
}

static zk_weight *matrix_slot(zen_model *m, const zen_tensor_desc *d) {
    if (d->kind == ZW_EMBED) return &m->embed;
    if (d->kind == ZW_LM_HEAD) return &m->lm_head;
    return d->kind == ZW_PROJ ? &m->layers[d->layer].proj[d->target] : NULL;
}

float **zen_model_vector_slot(zen_model *m, const zen_tensor_desc *d) {
    switch (d->kind) {
    case ZW_FINAL_NORM: return &m->final_norm;
    case ZW_ATTN_NORM: return &m->layers[d->layer].attn_norm;
    case ZW_FFN_NORM: return &m->layers[d->layer].ffn_norm;
    case ZW_Q_NORM: return &m->layers[d->layer].q_norm;
    case ZW_K_NORM: return &m->layers[d->layer].k_norm;
    default: return NULL;
    }
}

const zk_weight *zen_model_matrix(const zen_model *m, const zen_tensor_desc *d) {
    return matrix_slot((zen_model *)m, d);
}

const float *zen_model_vector(const zen_model *m, const zen_tensor_desc *d) {
    float **v = zen_model_vector_slot((zen_model *)m, d);
    return v ? *v : NULL;
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
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    st_set_close(&m->files);
    if (m->from_gguf) gguf_close(&m->gguf);
    memset(m, 0, sizeof *m);
}

int zen_model_find_nonfinite(const zen_model *m, char *where, size_t cap) {
    zen_tensor_desc *t = NULL;
    int n = zen_model_tensors(&m->cfg, &t);
    if (n < 0) return -1;
    float buf[4096]; /* a multiple of every block */
    int found = 0;
    for (int i = 0; i < n && !found; i++) {
        const void *data = NULL;
        size_t numel = 0, nbytes = 0;
        const char *name = t[i].hf_name, *path = "";
        zen_dtype dt;
        if (m->from_gguf) { /* the file's own names and types */
            const gguf_tensor_info *g = gguf_find_tensor(&m->gguf, t[i].gguf_name);
            const zen_type_traits *tr = g ? zen_type_by_ggml(g->type) : NULL;
            if (!tr || tr->dtype < 0) continue;
            data = g->data, numel = t[i].rows * t[i].cols, nbytes = g->nbytes, dt = (zen_dtype)tr->dtype;
            name = t[i].gguf_name, path = m->gguf.path;
        } else {
            const st_file *file = NULL;
            const st_tensor *ten = st_set_find(&m->files, t[i].hf_name, &file);
            if (!ten || zen_dtype_parse_float(ten->dtype, &dt)) continue;
            data = ten->data, numel = (size_t)ten->numel, nbytes = ten->nbytes, path = file->path;
        }
        for (size_t off = 0; off < numel && !found; off += 4096) {
            size_t k = numel - off < 4096 ? numel - off : 4096;
            zen_widen(buf, (const char *)data + zen_dtype_bytes(dt, off), dt, k);
            for (size_t j = 0; j < k; j++)
                if (!isfinite(buf[j])) {
                    size_t at = off + j, cols = t[i].ndim == 2 ? t[i].cols : 1;
                    snprintf(where, cap, "tensor '%s' of %s holds %g at [%zu, %zu]", name, path, buf[j], at / cols,
                             at % cols);
                    found = 1;
                    break;
                }
        }
        st_release(data, nbytes);
    }
    free(t);
    return found;
}

int zen_model_check_output(const zen_model *m, const char *out, const char *adapter_dir) {
    if (m->from_gguf && zen_same_file(out, m->gguf.path))
        return zen_fail(ZEN_ERR_INPUT, "--out %s is the model's own %s; write elsewhere", out, m->gguf.path);
    for (int i = 0; i < m->files.count; i++)
        if (zen_same_file(out, m->files.files[i].path))
            return zen_fail(ZEN_ERR_INPUT, "--out %s is the model's own %s; write elsewhere", out, m->files.files[i].path);
    static const char *const adapter_files[] = {"adapter_model.safetensors", "adapter_config.json"};
    for (size_t i = 0; adapter_dir && i < 2; i++) {
        char *path = zen_path_join(adapter_dir, adapter_files[i]);
        int same = path && zen_same_file(out, path);
        free(path);
        if (same) return zen_fail(ZEN_ERR_INPUT, "--out %s is the adapter's own %s; write elsewhere", out, adapter_files[i]);
    }
    return 0;
}
