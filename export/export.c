/* export/export.c: merged exports (SafeTensors directory, GGUF) and the
 * dispatch of every format. The merge runs a chunk of rows at a time:
 *   W[r0:r1, :] (fp32) = widen(base rows) + scale * B[r0:r1, :] A
 * then one conversion to the output type, so a 4B model never sits in memory. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "export.h"
#include "../model/model_load.h"
#include "../model/lora.h"
#include "../formats/quant.h"
#include "quant_mix.h"
#include "../formats/safetensors.h"
#include "../model/weights.h"

#define CHUNK_ELEMS ((size_t)1 << 22) /* fp32 elements per merged chunk (16 MiB) */

typedef struct {
    zen_tensor_desc d;    /* names and shape (1-D tensors: rows = n, cols = 1) */
    const zk_weight *w;   /* matrix source, or NULL */
    const float *vec;     /* vector source (norms, fp32), or NULL */
} xtensor;

typedef struct {
    const zen_model *m;
    const zen_lora *lo;   /* NULL: no adapter */
    float *lora_host;     /* [num_params] host copy of A and B */
    xtensor *t;
    int n;
    float *buf;           /* [CHUNK_ELEMS] merged fp32 rows */
    unsigned char *out;   /* [CHUNK_ELEMS * 4] converted rows */
    zen_dtype st_dtype;   /* safetensors output */
    ggml_type_id *gguf_types; /* [n] gguf output type per tensor */
    gguf_writer *gw;      /* the output being written */
    st_writer *sw;
    int progress;         /* 1: show the tensor being written (stderr is a terminal) */
} xctx;

/* every tensor of the model with its source */
static int list_tensors(const zen_model *m, xtensor **out) {
    zen_tensor_desc *d = NULL;
    int n = zen_model_tensors(&m->cfg, &d);
    xtensor *t = n < 0 ? NULL : zen_calloc((size_t)(n ? n : 1), sizeof(xtensor));
    for (int i = 0; t && i < n; i++) {
        t[i].d = d[i];
        t[i].w = d[i].ndim == 2 ? zen_model_matrix(m, &d[i]) : NULL;
        t[i].vec = d[i].ndim == 1 ? zen_model_vector(m, &d[i]) : NULL;
    }
    free(d);
    if (!t) return -1;
    *out = t;
    return n;
}

/* dst[nr, cols] = the merged fp32 rows [r0, r0 + nr) of tensor t */
static void merged_rows(const xctx *c, const xtensor *t, size_t r0, size_t nr, float *dst) {
    if (t->vec) {
        memcpy(dst, t->vec + r0, nr * sizeof(float));
        return;
    }
    zen_widen(dst, (const char *)t->w->data + zen_dtype_bytes(t->w->dtype, r0 * t->d.cols), t->w->dtype, nr * t->d.cols);
    if (t->d.target >= 0 && zen_lora_has(c->lo, t->d.target)) {
        const float *A = zen_lora_A(c->lo, c->lora_host, t->d.layer, t->d.target); /* [r, cols] */
        const float *B = zen_lora_B(c->lo, c->lora_host, t->d.layer, t->d.target); /* [rows, r] */
        int r = c->lo->r;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)t->d.cols, r, c->lo->scale, B + r0 * (size_t)r,
                    r, A, (int)t->d.cols, 1.0f, dst, (int)t->d.cols);
        if (c->lo->dora) { /* PEFT's DoRA merge: W' = (m / ||W + s B A||) (W + s B A), row by row in fp32 */
            const float *mag = zen_lora_M(c->lo, c->lora_host, t->d.layer, t->d.target) + r0;
            for (size_t i = 0; i < nr; i++) {
                float *row = dst + i * t->d.cols;
                double ss = 0.0;
                for (size_t j = 0; j < t->d.cols; j++) ss += (double)row[j] * row[j];
                float g = ss > 0 ? (float)(mag[i] / sqrt(ss)) : 0.0f;
                for (size_t j = 0; j < t->d.cols; j++) row[j] *= g;
            }
        }
    }
}

static size_t rows_per_chunk(const xtensor *t) {
    size_t rows = CHUNK_ELEMS / t->d.cols;
    return rows < 1 ? 1 : rows;
}

/* the source pages of a finished tensor leave the process's resident set */
static void release_source(const xtensor *t) {
    if (t->w) st_release(t->w->data, zen_dtype_bytes(t->w->dtype, t->d.rows * t->d.cols));
}

/* merges tensor i a chunk of rows at a time into c->buf and hands each chunk
 * (count fp32 values) to emit, which converts and writes it */
typedef int (*emit_fn)(xctx *c, int i, size_t count);

static int stream_tensor(xctx *c, int i, emit_fn emit) {
    const xtensor *t = &c->t[i];
    size_t step = rows_per_chunk(t);
    int rc = 0;
    for (size_t r0 = 0; r0 < t->d.rows && !rc; r0 += step) {
        size_t nr = t->d.rows - r0 < step ? t->d.rows - r0 : step;
        merged_rows(c, t, r0, nr, c->buf);
        rc = emit(c, i, nr * t->d.cols);
    }
    release_source(t);
    return rc;
}

static int emit_safetensors(xctx *c, int i, size_t count) {
    (void)i;
    zen_narrow(c->out, c->buf, c->st_dtype, count);
    return st_writer_put(c->sw, c->out, zen_dtype_bytes(c->st_dtype, count));
}

/* converts a chunk of whole rows, the rows shared among the threads (each
 * row's blocks depend only on that row, so the bytes do not depend on the
 * thread count) */
static int emit_gguf(xctx *c, int i, size_t count) {
    ggml_type_id type = c->gguf_types[i];
    size_t row = c->t[i].d.ndim == 1 ? count : c->t[i].d.cols; /* elements per row */
    size_t rows = count / row, row_bytes = ggml_type_bytes(type, row);
    const float *src = c->buf;          /* [rows, row] */
    unsigned char *dst = c->out;        /* [rows, row_bytes] */
#pragma omp parallel for schedule(dynamic, 16) if (rows > 1 && ggml_type_block(type) > 1)
    for (size_t r = 0; r < rows; r++) ggml_quantize(dst + r * row_bytes, src + r * row, row, type);
    return gguf_put(c->gw, c->out, rows * row_bytes);
}

static int produce_safetensors(void *ctx_, int i, st_writer *w) {
    xctx *c = ctx_;
    c->sw = w;
    return stream_tensor(c, i, emit_safetensors);
}

/* copies a file if it exists (tokenizer and generation files beside the weights) */
static int copy_if_present(const char *from_dir, const char *to_dir, const char *name) {
    char *src = zen_path_join(from_dir, name), *dst = zen_path_join(to_dir, name);
    int rc = src && dst ? 0 : ZEN_ERR_INTERNAL;
    FILE *in = rc ? NULL : fopen(src, "rb");
    if (in) {
        zen_atomic_file out;
        rc = zen_atomic_open(&out, dst);
        char buf[65536];
        size_t n;
        while (!rc && (n = fread(buf, 1, sizeof buf, in)) > 0) rc = zen_atomic_write(&out, buf, n);
        if (!rc && ferror(in)) rc = zen_fail(ZEN_ERR_INPUT, "%s: read failed", src);
        if (!rc) rc = zen_atomic_commit(&out);
        else if (out.path) zen_atomic_abort(&out);
        fclose(in);
    }
    free(src);
    free(dst);
    return rc;
}

/* the model directory's config.json with torch_dtype set (a GGUF base: one
 * made from its config) */
static int write_hf_config(const zen_model *m, const char *model_dir, const char *out_dir, zen_dtype dtype) {
    char *src = zen_path_join(model_dir, "config.json"), *dst = zen_path_join(out_dir, "config.json");
    cJSON *root = NULL;
    int rc = !src || !dst ? ZEN_ERR_INTERNAL : m->from_gguf ? ((root = zen_config_to_json(&m->cfg)) ? 0 : ZEN_ERR_INTERNAL)
                                                            : zen_read_json_object(src, &root);
    if (!rc) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, "torch_dtype");
        cJSON_AddStringToObject(root, "torch_dtype",
                                dtype == ZEN_BF16 ? "bfloat16" : dtype == ZEN_F16 ? "float16" : "float32");
        zen_config_json_no_sliding_window(root);
        char *text = cJSON_Print(root);
        rc = text ? zen_write_text_file(dst, text) : ZEN_ERR_INTERNAL;
        free(text);
    }
    cJSON_Delete(root);
    free(src);
    free(dst);
    return rc;
}

static int export_safetensors(xctx *c, const zen_export_opts *o, const char *dir) {
    st_entry *e = zen_calloc((size_t)c->n, sizeof *e);
    if (!e) return ZEN_ERR_INTERNAL;
    for (int i = 0; i < c->n; i++) {
        e[i].name = c->t[i].d.hf_name;
        e[i].dtype = c->st_dtype;
        e[i].ndim = c->t[i].d.ndim;
        e[i].shape[0] = (int64_t)c->t[i].d.rows;
        e[i].shape[1] = (int64_t)c->t[i].d.cols;
    }
    int rc = st_write_model_dir(dir, e, c->n, o->shard_bytes, produce_safetensors, c);
    free(e);
    if (!rc) rc = write_hf_config(c->m, o->model_dir, dir, c->st_dtype);
    if (c->m->from_gguf) { /* nothing beside a GGUF file to copy */
        if (!rc) fprintf(stderr, "zen export: note: a GGUF base has no tokenizer.json to copy; add the model's own "
                         "tokenizer files to %s\n", o->out);
        return rc;
    }
    const char *extra[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                           "merges.txt", "generation_config.json"};
    for (size_t k = 0; k < sizeof extra / sizeof extra[0] && !rc; k++) rc = copy_if_present(o->model_dir, dir, extra[k]);
    return rc;
}

static int export_gguf(xctx *c, const zen_export_opts *o, const zen_gguf_mix *mix) {
    const zen_config *cfg = &c->m->cfg;
    gguf_writer w;
    gguf_writer_init(&w);
    c->gw = &w;
    int rc = 0;
    int fallbacks = 0;
    for (int i = 0; i < c->n; i++) {
        const xtensor *t = &c->t[i];
        int fell_back;
        c->gguf_types[i] = zen_gguf_mix_type(mix, t->d.gguf_name, t->d.ndim, t->d.cols, cfg->layers,
                                             cfg->tied, &fell_back);
        fallbacks += fell_back;
    }
    if (fallbacks)
        fprintf(stderr, "zen export: %d tensors have rows that do not fill %s's blocks; stored in a smaller block "
                "type, as llama.cpp does\n", fallbacks, mix->name);
    const char *base = strrchr(o->model_dir, '/');
    gguf_add_string(&w, "general.architecture", "qwen3");
    gguf_add_string(&w, "general.type", "model");
    gguf_add_string(&w, "general.name", base && base[1] ? base + 1 : o->model_dir);
    gguf_add_u32(&w, "general.file_type", mix->file_type);
    gguf_add_u32(&w, "general.quantization_version", 2);
    gguf_add_u32(&w, "qwen3.block_count", (uint32_t)cfg->layers);
    gguf_add_u32(&w, "qwen3.context_length", (uint32_t)cfg->max_positions);
    gguf_add_u32(&w, "qwen3.embedding_length", (uint32_t)cfg->hidden);
    gguf_add_u32(&w, "qwen3.feed_forward_length", (uint32_t)cfg->intermediate);
    gguf_add_u32(&w, "qwen3.attention.head_count", (uint32_t)cfg->heads);
    gguf_add_u32(&w, "qwen3.attention.head_count_kv", (uint32_t)cfg->kv_heads);
    gguf_add_f32(&w, "qwen3.rope.freq_base", (float)cfg->rope_theta);
    gguf_add_f32(&w, "qwen3.attention.layer_norm_rms_epsilon", cfg->rms_eps);
    gguf_add_u32(&w, "qwen3.attention.key_length", (uint32_t)cfg->head_dim);
    gguf_add_u32(&w, "qwen3.attention.value_length", (uint32_t)cfg->head_dim);
    if (o->no_tokenizer) {
        gguf_add_string(&w, "tokenizer.ggml.model", "none");
        gguf_add_u32(&w, "qwen3.vocab_size", (uint32_t)cfg->vocab);
    } else if (c->m->from_gguf) { /* a GGUF base: its own tokenizer, as it is */
        rc = zen_gguf_copy_tokenizer(&w, &c->m->gguf);
    } else {
        rc = zen_gguf_add_tokenizer(&w, o->model_dir, cfg->vocab);
    }
    for (int i = 0; i < c->n && !rc; i++) {
        uint64_t ne[2] = {c->t[i].d.cols, c->t[i].d.rows};
        if (c->t[i].d.ndim == 1) ne[0] = c->t[i].d.rows;
        gguf_add_tensor(&w, c->t[i].d.gguf_name, c->t[i].d.ndim, ne, c->gguf_types[i]);
    }
    if (!rc) rc = gguf_begin(&w, o->out);
    for (int i = 0; i < c->n && !rc; i++) {
        if (c->progress)
            fprintf(stderr, "\rzen export: tensor %d/%d %-28s %-5s", i + 1, c->n, c->t[i].d.gguf_name,
                    ggml_type_name(c->gguf_types[i]));
        rc = stream_tensor(c, i, emit_gguf);
    }
    if (c->progress) fprintf(stderr, "\r%-72s\r", "");
    if (!rc) rc = gguf_finish(&w);
    gguf_writer_free(&w);
    return rc;
}

int zen_export_parse_format(const char *name, zen_export_format *out) {
    static const struct { const char *name; zen_export_format f; } table[] = {
        {"safetensors", ZEN_EXPORT_SAFETENSORS}, {"gguf", ZEN_EXPORT_GGUF}, {"peft", ZEN_EXPORT_PEFT},
        {"gguf-lora", ZEN_EXPORT_GGUF_LORA}, {"mlx", ZEN_EXPORT_MLX}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(name, table[i].name)) {
            *out = table[i].f;
            return 0;
        }
    return -1;
}

int zen_export(const zen_export_opts *o) {
    int merged = o->format == ZEN_EXPORT_SAFETENSORS || o->format == ZEN_EXPORT_GGUF;
    if (!merged && !o->adapter_dir)
        return zen_fail(ZEN_ERR_INPUT, "--format %s exports an adapter: give --adapter DIR",
                        o->format == ZEN_EXPORT_PEFT ? "peft" : o->format == ZEN_EXPORT_MLX ? "mlx" : "gguf-lora");
    zk_backend *be = zk_open("cpu", "f32"); /* merging is fp32 */
    if (!be) return ZEN_ERR_INTERNAL;
    zen_model m = {0};
    zen_lora lo = {0};
    xctx c = {0};
    char *partial = NULL;
    int rc = zen_model_load(&m, be, o->model_dir);
    if (!rc) rc = zen_model_check_output(&m, o->out, o->adapter_dir);
    if (!rc && o->adapter_dir) rc = zen_lora_load_peft(&lo, &m.cfg, be, o->adapter_dir);
    if (!rc && lo.num_params) {
        c.lora_host = zen_malloc(lo.num_params * sizeof(float));
        if (!c.lora_host) rc = ZEN_ERR_INTERNAL;
        else be->download(be, c.lora_host, lo.params, lo.num_params * sizeof(float));
    }
    if (rc) goto done;
    if (!merged) {
        if (o->format == ZEN_EXPORT_GGUF_LORA) /* a single file, written to a temporary name */
            rc = zen_export_adapter(o, &m, &lo, c.lora_host, o->out);
        else if (!(rc = zen_atomic_dir_begin(o->out, &partial)))
            rc = zen_atomic_dir_end(zen_export_adapter(o, &m, &lo, c.lora_host, partial), &partial, o->out);
        goto done;
    }
    if (m.largest_quant) /* a quantised base (a GGUF): merged onto what it holds */
        fprintf(stderr, "zen export: note: %s holds block-quantised weights; the merge dequantises them and adds the "
                "adapter in fp32, so the result carries their rounding (merge into the full-precision model "
                "instead where you have it)\n", m.from_gguf ? m.gguf.path : o->model_dir);
    c.m = &m;
    c.lo = o->adapter_dir ? &lo : NULL;
    c.n = list_tensors(&m, &c.t);
    c.buf = zen_malloc(CHUNK_ELEMS * sizeof(float));
    c.out = zen_malloc(CHUNK_ELEMS * sizeof(float));
    c.gguf_types = zen_calloc((size_t)(c.n > 0 ? c.n : 1), sizeof(ggml_type_id));
    if (c.n < 0 || !c.buf || !c.out || !c.gguf_types) {
        rc = ZEN_ERR_INTERNAL;
        goto done;
    }
    if (o->format == ZEN_EXPORT_SAFETENSORS) {
        c.st_dtype = zen_dtype_is_quant(m.main_dtype) ? ZEN_BF16 : m.main_dtype; /* a quantised GGUF: bf16 */
        if (o->dtype && zen_dtype_parse_float(o->dtype, &c.st_dtype)) {
            rc = zen_fail(ZEN_ERR_INPUT, "--dtype '%s': safetensors takes f32, f16 or bf16", o->dtype);
            goto done;
        }
        if (!(rc = zen_atomic_dir_begin(o->out, &partial)))
            rc = zen_atomic_dir_end(export_safetensors(&c, o, partial), &partial, o->out);
    } else {
        const zen_gguf_mix *mix =
            zen_gguf_mix_plain(m.main_dtype == ZEN_BF16 || zen_dtype_is_quant(m.main_dtype) ? GGML_BF16
                               : m.main_dtype == ZEN_F16 ? GGML_F16 : GGML_F32);
        if (o->dtype && !(mix = zen_gguf_mix_find(o->dtype))) {
            rc = zen_fail(ZEN_ERR_INPUT, "--dtype '%s': gguf takes %s", o->dtype, zen_gguf_mix_names());
            goto done;
        }
        /* progress on a terminal, for models whose export takes minutes */
        c.progress = isatty(STDERR_FILENO) && m.cfg.layers >= 8;
        rc = export_gguf(&c, o, mix);
    }
done:
    free(c.t);
    free(c.buf);
    free(c.out);
    free(c.gguf_types);
    free(c.lora_host);
    zen_lora_free(&lo);
    zen_model_free(&m);
    zk_close(be);
    return rc;
}
