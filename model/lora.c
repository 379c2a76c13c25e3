/* model/lora.c: creating, reading and writing LoRA adapters (PEFT layout). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "../util/json.h"
#include "../util/rng.h"
#include "lora.h"

int zen_lora_parse_targets(const char *list, unsigned *mask) {
    *mask = 0;
    if (!strcmp(list, "all") || !strcmp(list, "all-linear")) {
        *mask = (1u << ZEN_NUM_TARGETS) - 1;
        return 0;
    }
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
            const char *name = zen_target_name((zen_target)t);
            size_t short_len = strlen(name) - 5; /* without "_proj" */
            if (!strcmp(tok, name) || (strlen(tok) == short_len && !strncmp(tok, name, short_len)))
                found = t;
        }
        if (found < 0)
            return zen_fail(ZEN_ERR_INPUT,
                            "LoRA target '%s' is unknown (expected q,k,v,o,gate,up,down or all)", tok);
        *mask |= 1u << found;
    }
    if (!*mask) return zen_fail(ZEN_ERR_INPUT, "LoRA target list '%s' is empty", list);
    return 0;
}

/* lays out the offsets and allocates params (zeroed) */
static int lora_layout(zen_lora *lo, const zen_config *cfg, zk_backend *be, int r, float alpha,
                       int rslora, float dropout, unsigned targets, int dora) {
    memset(lo, 0, sizeof *lo);
    if (r < 1 || r > ZEN_LORA_MAX_R) return zen_fail(ZEN_ERR_INPUT, "LoRA rank %d must be in [1, %d]", r, ZEN_LORA_MAX_R);
    if (!(alpha > 0)) return zen_fail(ZEN_ERR_INPUT, "LoRA alpha %g must be positive", alpha);
    if (!(dropout >= 0 && dropout < 1))
        return zen_fail(ZEN_ERR_INPUT, "LoRA dropout %g must be in [0, 1)", dropout);
    lo->be = be;
    lo->r = r;
    lo->alpha = alpha;
    lo->rslora = rslora;
    lo->dropout = dropout;
    lo->targets = targets;
    lo->scale = rslora ? alpha / sqrtf((float)r) : alpha / (float)r;
    lo->layers = cfg->layers;
    size_t slots = (size_t)cfg->layers * ZEN_NUM_TARGETS;
    lo->dora = dora;
    lo->offset_A = zen_malloc(slots * sizeof(size_t));
    lo->offset_B = zen_malloc(slots * sizeof(size_t));
    lo->offset_M = zen_malloc(slots * sizeof(size_t));
    lo->offset_G = zen_malloc(slots * sizeof(size_t));
    if (!lo->offset_A || !lo->offset_B || !lo->offset_M || !lo->offset_G) return ZEN_ERR_INTERNAL;
    size_t off = 0;
    for (int l = 0; l < cfg->layers; l++)
        for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
            size_t s = (size_t)l * ZEN_NUM_TARGETS + (size_t)t;
            lo->offset_A[s] = lo->offset_B[s] = lo->offset_M[s] = lo->offset_G[s] = SIZE_MAX;
            if (!zen_lora_has(lo, t)) continue;
            int in, out;
            zen_target_dims(cfg, (zen_target)t, &in, &out);
            lo->offset_A[s] = off;
            off += (size_t)r * (size_t)in;
            lo->offset_B[s] = off;
            off += (size_t)out * (size_t)r;
            if (dora) {
                lo->offset_M[s] = off;
                off += (size_t)out;
                lo->offset_G[s] = lo->mag_count;
                lo->mag_count += (size_t)out;
            }
        }
    lo->num_params = off;
    lo->params = be->alloc(be, off * sizeof(float));
    if (!lo->params) return ZEN_ERR_INTERNAL;
    be->zero(be, lo->params, off * sizeof(float));
    return 0;
}

int zen_lora_create(zen_lora *lo, const zen_config *cfg, zk_backend *be, int r, float alpha,
                    int rslora, float dropout, unsigned targets, uint64_t seed) {
    return zen_lora_create_dora(lo, cfg, be, r, alpha, rslora, dropout, targets, seed, 0);
}

int zen_lora_create_dora(zen_lora *lo, const zen_config *cfg, zk_backend *be, int r, float alpha, int rslora,
                         float dropout, unsigned targets, uint64_t seed, int dora) {
    int rc = lora_layout(lo, cfg, be, r, alpha, rslora, dropout, targets, dora);
    if (rc) {
        zen_lora_free(lo);
        return rc;
    }
    float *host = zen_calloc(lo->num_params, sizeof(float));
    if (!host) {
        zen_lora_free(lo);
        return ZEN_ERR_INTERNAL;
    }
    zen_rng rng;
    zen_rng_seed(&rng, seed);
    /* PEFT: kaiming_uniform_(a=sqrt(5)) on A [r, in] gives U(-1/sqrt(in), 1/sqrt(in)); B = 0 */
    for (int l = 0; l < cfg->layers; l++)
        for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
            if (!zen_lora_has(lo, t)) continue;
            int in, out;
            zen_target_dims(cfg, (zen_target)t, &in, &out);
            float bound = 1.0f / sqrtf((float)in);
            float *A = zen_lora_A(lo, host, l, t);
            for (size_t i = 0; i < (size_t)r * (size_t)in; i++) A[i] = zen_rng_symmetric(&rng, bound);
        }
    be->upload(be, lo->params, host, lo->num_params * sizeof(float));
    free(host);
    return 0;
}

/* ---- PEFT adapter_config.json ---- */

static int config_number(const cJSON *root, const char *key, double *out, const char *path,
                         int required) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!item || cJSON_IsNull(item)) {
        if (required) return zen_fail(ZEN_ERR_INPUT, "%s: missing key '%s'", path, key);
        return 0;
    }
    if (!cJSON_IsNumber(item)) return zen_fail(ZEN_ERR_INPUT, "%s: key '%s' must be a number", path, key);
    *out = item->valuedouble;
    return 0;
}

/* the LoRA settings of a parsed adapter_config.json (path names it in errors) */
static int parse_adapter_root(const cJSON *root, const char *path, int *r, float *alpha, int *rslora, float *dropout,
                              unsigned *targets, int *use_dora) {
    int rc = 0;
    double rv = 0, av = 0, dv = 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "peft_type");
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(root, "target_modules");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "use_rslora");
    const cJSON *dora = cJSON_GetObjectItemCaseSensitive(root, "use_dora");
    const cJSON *fifo = cJSON_GetObjectItemCaseSensitive(root, "fan_in_fan_out");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers_to_transform");
    const cJSON *rank_pattern = cJSON_GetObjectItemCaseSensitive(root, "rank_pattern");
    const cJSON *alpha_pattern = cJSON_GetObjectItemCaseSensitive(root, "alpha_pattern");
    const cJSON *bias = cJSON_GetObjectItemCaseSensitive(root, "bias");
    if (type && !(cJSON_IsString(type) && !strcmp(type->valuestring, "LORA")))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: peft_type must be \"LORA\"", path);
    else if ((rc = config_number(root, "r", &rv, path, 1)) ||
             (rc = config_number(root, "lora_alpha", &av, path, 1)) ||
             (rc = config_number(root, "lora_dropout", &dv, path, 0)))
        ;
    else if (!(rv >= 1 && rv <= ZEN_LORA_MAX_R) || rv != (double)(int)rv)
        rc = zen_fail(ZEN_ERR_INPUT, "%s: key 'r' must be an integer in [1, %d]", path, ZEN_LORA_MAX_R);
    else if (!(av > 0 && av <= 1e6))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: key 'lora_alpha' must be a number in (0, 1e6]", path);
    else if (!(dv >= 0 && dv < 1))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: key 'lora_dropout' must be in [0, 1)", path);
    else if (dora && !cJSON_IsBool(dora) && !cJSON_IsNull(dora))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: use_dora must be true or false", path);
    else if (cJSON_IsTrue(fifo))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: fan_in_fan_out true is not supported", path);
    else if (layers && !cJSON_IsNull(layers))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: layers_to_transform is not supported (must be null)", path);
    else if ((cJSON_IsObject(rank_pattern) && cJSON_GetArraySize(rank_pattern) > 0) ||
             (cJSON_IsObject(alpha_pattern) && cJSON_GetArraySize(alpha_pattern) > 0))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: rank_pattern/alpha_pattern are not supported (must be empty)", path);
    else if (bias && !(cJSON_IsString(bias) && !strcmp(bias->valuestring, "none")))
        rc = zen_fail(ZEN_ERR_INPUT, "%s: bias must be \"none\"", path);
    else if (cJSON_IsString(tm))
        rc = zen_lora_parse_targets(tm->valuestring, targets);
    else if (cJSON_IsArray(tm)) {
        *targets = 0;
        const cJSON *item;
        cJSON_ArrayForEach(item, tm) {
            unsigned one;
            if (!cJSON_IsString(item)) {
                rc = zen_fail(ZEN_ERR_INPUT, "%s: target_modules must hold strings", path);
                break;
            }
            if ((rc = zen_lora_parse_targets(item->valuestring, &one))) {
                rc = zen_fail_context(ZEN_ERR_INPUT, path);
                break;
            }
            *targets |= one;
        }
        if (!rc && !*targets) rc = zen_fail(ZEN_ERR_INPUT, "%s: target_modules is empty", path);
    } else
        rc = zen_fail(ZEN_ERR_INPUT, "%s: missing key 'target_modules'", path);
    *r = rc ? 0 : (int)rv;
    *alpha = (float)av;
    *dropout = (float)dv;
    *rslora = cJSON_IsTrue(rs);
    *use_dora = cJSON_IsTrue(dora);
    return rc;
}

static int parse_adapter_config(const char *path, int *r, float *alpha, int *rslora, float *dropout,
                                unsigned *targets, int *dora) {
    cJSON *root;
    int rc = zen_read_json_object(path, &root);
    if (rc) return rc;
    rc = parse_adapter_root(root, path, r, alpha, rslora, dropout, targets, dora);
    cJSON_Delete(root);
    return rc;
}

int zen_lora_check_config_text(const char *text, size_t len, const char *origin) {
    cJSON *root = NULL;
    int r, rslora, dora, rc = zen_json_parse(text, len, origin, &root);
    float alpha, dropout;
    unsigned targets;
    if (!rc && !cJSON_IsObject(root)) rc = zen_fail(ZEN_ERR_INPUT, "%s: expected a JSON object", origin);
    if (!rc) rc = parse_adapter_root(root, origin, &r, &alpha, &rslora, &dropout, &targets, &dora);
    cJSON_Delete(root);
    return rc;
}

/* which: 'A', 'B', or 'M' (DoRA's lora_magnitude_vector, no .weight suffix) */
static void peft_key(char *buf, size_t cap, int layer, int t, char which) {
    if (which == 'M')
        snprintf(buf, cap, "base_model.model.model.layers.%d.%s.lora_magnitude_vector", layer,
                 zen_target_module((zen_target)t));
    else
        snprintf(buf, cap, "base_model.model.model.layers.%d.%s.lora_%c.weight", layer,
                 zen_target_module((zen_target)t), which);
}

static const char HALF_NAME[3] = {'A', 'B', 'M'};

/* the tensor of (layer, target, half: 0 A, 1 B, 2 DoRA's m) in f, checked for dtype and shape */
static int find_adapter_tensor(const st_file *f, const zen_config *cfg, int r, int l, int t, int half,
                               const st_tensor **out, zen_dtype *dt) {
    char key[256];
    int in, o;
    zen_target_dims(cfg, (zen_target)t, &in, &o);
    peft_key(key, sizeof key, l, t, HALF_NAME[half]);
    const st_tensor *ten = st_find(f, key);
    if (!ten) return zen_fail(ZEN_ERR_INPUT, "%s: missing tensor '%s'", f->path, key);
    int64_t shape[2] = {half == 2 ? o : half ? o : r, half ? r : in};
    int rc = st_float_dtype(f, ten, dt);
    if (!rc) rc = st_check_shape(f, ten, half == 2 ? 1 : 2, shape);
    *out = ten;
    return rc;
}

int zen_lora_load_peft(zen_lora *lo, const zen_config *cfg, zk_backend *be, const char *dir) {
    char *cfg_path = zen_path_join(dir, "adapter_config.json");
    char *st_path = zen_path_join(dir, "adapter_model.safetensors");
    int r = 0, rslora = 0, dora = 0, rc;
    float alpha = 0, dropout = 0;
    unsigned targets = 0;
    float *host = NULL;
    st_file f = {0};
    memset(lo, 0, sizeof *lo);
    if (!cfg_path || !st_path) {
        rc = ZEN_ERR_INTERNAL;
        goto done;
    }
    if ((rc = parse_adapter_config(cfg_path, &r, &alpha, &rslora, &dropout, &targets, &dora))) goto done;
    int halves = dora ? 3 : 2;
    if ((rc = st_open(&f, st_path))) goto done;
    /* every tensor's shape is checked before anything is allocated for them */
    int expected = 0;
    for (int l = 0; l < cfg->layers && !rc; l++)
        for (int t = 0; t < ZEN_NUM_TARGETS && !rc; t++)
            for (int half = 0; half < halves && !rc && ((targets >> t) & 1u); half++) {
                const st_tensor *ten;
                zen_dtype dt;
                rc = find_adapter_tensor(&f, cfg, r, l, t, half, &ten, &dt);
                expected++;
            }
    if (!rc && f.count != expected) {
        /* name the first tensor that is not part of this adapter */
        char key[256];
        for (int i = 0; i < f.count && !rc; i++) {
            int known = 0;
            for (int l = 0; l < cfg->layers && !known; l++)
                for (int t = 0; t < ZEN_NUM_TARGETS && !known; t++)
                    for (int half = 0; half < halves && !known && ((targets >> t) & 1u); half++) {
                        peft_key(key, sizeof key, l, t, HALF_NAME[half]);
                        known = !strcmp(key, f.tensors[i].name);
                    }
            if (!known)
                rc = zen_fail(ZEN_ERR_INPUT, "%s: unexpected tensor '%s' (not a LoRA A/B%s of the configured "
                              "targets and %d layers%s)", st_path, f.tensors[i].name, dora ? "/magnitude" : "",
                              cfg->layers, dora || !strstr(f.tensors[i].name, "lora_magnitude_vector")
                                               ? "" : "; a DoRA magnitude needs use_dora true");
        }
    }
    if (rc) goto done;
    if ((rc = lora_layout(lo, cfg, be, r, alpha, rslora, dropout, targets, dora))) {
        rc = zen_fail_context(rc, cfg_path);
        goto done;
    }
    host = zen_calloc(lo->num_params, sizeof(float));
    if (!host) {
        rc = ZEN_ERR_INTERNAL;
        goto done;
    }
    for (int l = 0; l < cfg->layers && !rc; l++)
        for (int t = 0; t < ZEN_NUM_TARGETS && !rc; t++)
            for (int half = 0; half < halves && !rc && zen_lora_has(lo, t); half++) {
                const st_tensor *ten;
                zen_dtype dt;
                if ((rc = find_adapter_tensor(&f, cfg, r, l, t, half, &ten, &dt))) break;
                float *dst = half == 2 ? zen_lora_M(lo, host, l, t) : half ? zen_lora_B(lo, host, l, t)
                                                                             : zen_lora_A(lo, host, l, t);
                zen_widen(dst, ten->data, dt, (size_t)ten->numel);
            }
    if (!rc) be->upload(be, lo->params, host, lo->num_params * sizeof(float));
done:
    if (rc) zen_lora_free(lo);
    st_close(&f);
    free(host);
    free(cfg_path);
    free(st_path);
    return rc;
}

int zen_lora_write_tensors(const zen_lora *lo, const zen_config *cfg, const float *device_buf,
                           const char *path, zen_dtype dtype, const char *const *meta,
                           int meta_pairs) {
    int count = 0;
    int halves = lo->dora ? 3 : 2;
    for (int t = 0; t < ZEN_NUM_TARGETS; t++) count += zen_lora_has(lo, t) ? halves * cfg->layers : 0;
    st_entry *entries = zen_calloc((size_t)count, sizeof(st_entry));
    char (*names)[160] = zen_calloc((size_t)count, sizeof *names);
    float *host = zen_malloc(lo->num_params * sizeof(float));
    void *narrow = zen_malloc(zen_dtype_bytes(dtype, lo->num_params));
    int rc = 0;
    if (!entries || !names || !host || !narrow) {
        rc = ZEN_ERR_INTERNAL;
        goto done;
    }
    lo->be->download(lo->be, host, device_buf, lo->num_params * sizeof(float));
    /* the buffer is laid out layer by layer, target by target, A then B (then
     * DoRA's m): the same order as the entries, so one narrowed copy is
     * written in sequence */
    int e = 0;
    for (int l = 0; l < cfg->layers; l++)
        for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
            if (!zen_lora_has(lo, t)) continue;
            int in, out;
            zen_target_dims(cfg, (zen_target)t, &in, &out);
            for (int half = 0; half < halves; half++, e++) {
                peft_key(names[e], sizeof names[e], l, t, HALF_NAME[half]);
                entries[e].name = names[e];
                entries[e].dtype = dtype;
                entries[e].ndim = half == 2 ? 1 : 2;
                entries[e].shape[0] = half ? out : lo->r;
                entries[e].shape[1] = half ? lo->r : in;
            }
        }
    zen_narrow(narrow, host, dtype, lo->num_params);
    st_writer w;
    if (!(rc = st_writer_open(&w, path, entries, count, meta, meta_pairs))) {
        rc = st_writer_put(&w, narrow, zen_dtype_bytes(dtype, lo->num_params));
        rc = rc ? (st_writer_abort(&w), rc) : st_writer_close(&w);
    }
done:
    free(entries);
    free(names);
    free(host);
    free(narrow);
    return rc;
}

int zen_lora_save_peft(const zen_lora *lo, const zen_config *cfg, const char *dir,
                       const char *base_model, zen_dtype dtype) {
    int rc = zen_mkdir_p(dir);
    if (rc) return rc;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "peft_type", "LORA");
    cJSON_AddStringToObject(root, "task_type", "CAUSAL_LM");
    /* a local directory or file (a GGUF base) as an absolute path, so that
     * PEFT's AutoPeftModel never reads it as a hub id and finds a directory
     * base from anywhere; anything else (a hub name) as given */
    char *absolute = base_model && *base_model ? realpath(base_model, NULL) : NULL;
    cJSON_AddStringToObject(root, "base_model_name_or_path", absolute ? absolute : base_model ? base_model : "");
    free(absolute);
    cJSON_AddNumberToObject(root, "r", lo->r);
    cJSON_AddNumberToObject(root, "lora_alpha", zen_float_for_json(lo->alpha));
    cJSON_AddNumberToObject(root, "lora_dropout", zen_float_for_json(lo->dropout));
    cJSON *tm = cJSON_AddArrayToObject(root, "target_modules");
    for (int t = 0; t < ZEN_NUM_TARGETS; t++)
        if (zen_lora_has(lo, t)) cJSON_AddItemToArray(tm, cJSON_CreateString(zen_target_name((zen_target)t)));
    cJSON_AddBoolToObject(root, "use_rslora", lo->rslora);
    cJSON_AddBoolToObject(root, "use_dora", lo->dora);
    cJSON_AddStringToObject(root, "bias", "none");
    cJSON_AddBoolToObject(root, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(root, "inference_mode", 1);
    cJSON_AddBoolToObject(root, "init_lora_weights", 1);
    cJSON_AddNullToObject(root, "layers_to_transform");
    cJSON_AddNullToObject(root, "modules_to_save");
    cJSON_AddObjectToObject(root, "rank_pattern");
    cJSON_AddObjectToObject(root, "alpha_pattern");
    if ((rc = zen_write_json_file(dir, "adapter_config.json", root))) return rc;
    char *st_path = zen_path_join(dir, "adapter_model.safetensors");
    if (!st_path) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    const char *meta[] = {"format", "pt"};
    rc = zen_lora_write_tensors(lo, cfg, lo->params, st_path, dtype, meta, 1);
    free(st_path);
    return rc;
}

int zen_lora_alloc_grads(zen_lora *lo) {
    if (!lo->grads) lo->grads = lo->be->alloc(lo->be, lo->num_params * sizeof(float));
    if (!lo->grads) return ZEN_ERR_INTERNAL;
    zen_lora_zero_grads(lo);
    return 0;
}

void zen_lora_zero_grads(zen_lora *lo) {
    lo->be->zero(lo->be, lo->grads, lo->num_params * sizeof(float));
}

void zen_lora_free(zen_lora *lo) {
    if (lo->be) {
        lo->be->free(lo->be, lo->params);
        lo->be->free(lo->be, lo->grads);
    }
    if (lo->be) {
        lo->be->free(lo->be, lo->dora_wsq);
        lo->be->free(lo->be, lo->dora_g);
        lo->be->free(lo->be, lo->dora_inv_m);
        lo->be->free(lo->be, lo->dora_gm1);
        lo->be->free(lo->be, lo->dora_inv_n);
        lo->be->free(lo->be, lo->dora_minus1);
        lo->be->free(lo->be, lo->dora_tmp);
    }
    free(lo->offset_A);
    free(lo->offset_B);
    free(lo->offset_M);
    free(lo->offset_G);
    memset(lo, 0, sizeof *lo);
}

int zen_lora_find_nonfinite(const zen_lora *lo, const zen_config *cfg, char *where, size_t cap) {
    float *host = zen_malloc(lo->num_params * sizeof(float));
    if (!host) return -1;
    lo->be->download(lo->be, host, lo->params, lo->num_params * sizeof(float));
    int found = 0;
    char key[256];
    for (int l = 0; l < cfg->layers && !found; l++)
        for (int t = 0; t < ZEN_NUM_TARGETS && !found; t++)
            for (int half = 0; half < (lo->dora ? 3 : 2) && !found && zen_lora_has(lo, t); half++) {
                int in, out;
                zen_target_dims(cfg, (zen_target)t, &in, &out);
                const float *x = half == 2 ? zen_lora_M(lo, host, l, t) : half ? zen_lora_B(lo, host, l, t)
                                                                              : zen_lora_A(lo, host, l, t);
                size_t rows = half ? (size_t)out : (size_t)lo->r, cols = half == 2 ? 1 : half ? (size_t)lo->r : (size_t)in;
                for (size_t i = 0; i < rows * cols && !found; i++)
                    if (!isfinite(x[i])) {
                        peft_key(key, sizeof key, l, t, HALF_NAME[half]);
                        snprintf(where, cap, "adapter tensor '%s' holds %g at [%zu, %zu]", key, x[i], i / cols, i % cols);
                        found = 1;
                    }
            }
    free(host);
    return found;
}
