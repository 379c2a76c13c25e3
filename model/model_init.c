/* model/model_init.c: a random model in Hugging Face layout, streamed tensor by
 * tensor (a 4B model is never held in memory). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/atomic_file.h"
#include "../util/error.h"
#include "../util/file.h"
#include "../util/rng.h"
#include "model_init.h"
#include "../formats/safetensors.h"
#include "weights.h"

#define GEN_CHUNK ((size_t)1 << 16) /* elements per independently seeded piece */

static size_t numel_of(const zen_tensor_desc *t) { return t->rows * t->cols; }

/* generates elements [start, start+count) of tensor `index` into buf (fp32) */
static void generate(float *buf, const zen_tensor_desc *t, int index, size_t start, size_t count,
                     uint64_t seed, double std) {
    if (t->ndim == 1) { /* norm weights */
        for (size_t i = 0; i < count; i++) buf[i] = 1.0f;
        return;
    }
    const float bound = (float)std * sqrtf(3.0f); /* U(-b, b) has std b / sqrt(3) */
    /* each GEN_CHUNK-aligned piece has its own seed, so pieces run in parallel
     * and the result does not depend on the thread count */
#pragma omp parallel for schedule(static)
    for (size_t p = start / GEN_CHUNK; p <= (start + count - 1) / GEN_CHUNK; p++) {
        zen_rng rng;
        zen_rng_seed(&rng, seed * 0x100000001b3ull ^ ((uint64_t)index << 40) ^ p);
        size_t lo = p * GEN_CHUNK, hi = lo + GEN_CHUNK;
        for (size_t e = lo; e < hi; e++) {
            float v = zen_rng_symmetric(&rng, bound);
            if (e >= start && e < start + count) buf[e - start] = v;
        }
    }
}

typedef struct {
    const zen_tensor_desc *t;
    zen_dtype dtype;
    uint64_t seed;
    double std;
    float *buf;   /* [INIT_CHUNK] */
    void *narrow; /* [INIT_CHUNK] in dtype */
} init_ctx;

#define INIT_CHUNK ((size_t)1 << 24) /* elements generated per write */

/* streams tensor i: generated in chunks, narrowed to the dtype */
static int produce_random(void *ctx_, int i, st_writer *w) {
    init_ctx *c = ctx_;
    size_t total = numel_of(&c->t[i]);
    int rc = 0;
    for (size_t s = 0; s < total && !rc; s += INIT_CHUNK) {
        size_t cnt = total - s < INIT_CHUNK ? total - s : INIT_CHUNK;
        generate(c->buf, &c->t[i], i, s, cnt, c->seed, c->std);
        zen_narrow(c->narrow, c->buf, c->dtype, cnt);
        rc = st_writer_put(w, c->narrow, zen_dtype_bytes(c->dtype, cnt));
    }
    return rc;
}

static int write_config(const char *dir, const char *config_json, zen_dtype dtype) {
    cJSON *root = cJSON_Parse(config_json);
    if (!root) return zen_fail(ZEN_ERR_INPUT, "config is not valid JSON");
    const char *torch_dtype = dtype == ZEN_BF16 ? "bfloat16" : dtype == ZEN_F16 ? "float16" : "float32";
    cJSON_DeleteItemFromObjectCaseSensitive(root, "torch_dtype");
    cJSON_AddStringToObject(root, "torch_dtype", torch_dtype);
    zen_config_json_no_sliding_window(root);
    return zen_write_json_file(dir, "config.json", root);
}

int zen_model_write_random(const char *dir, const char *config_json, const zen_config *cfg,
                           zen_dtype dtype, uint64_t seed, uint64_t shard_bytes) {
    int rc = zen_mkdir_p(dir);
    if (rc) return rc;
    zen_tensor_desc *t = NULL;
    int n = zen_model_tensors(cfg, &t);
    if (n < 0) return ZEN_ERR_INTERNAL;
    st_entry *entries = zen_calloc((size_t)n, sizeof *entries);
    init_ctx ctx = {t, dtype, seed, cfg->init_std, zen_malloc(INIT_CHUNK * sizeof(float)),
                    zen_malloc(zen_dtype_bytes(dtype, INIT_CHUNK))};
    if (!entries || !ctx.buf || !ctx.narrow) rc = ZEN_ERR_INTERNAL;
    for (int i = 0; i < n && !rc; i++) {
        entries[i].name = t[i].hf_name;
        entries[i].dtype = dtype;
        entries[i].ndim = t[i].ndim;
        entries[i].shape[0] = (int64_t)t[i].rows;
        entries[i].shape[1] = (int64_t)t[i].cols;
    }
    if (!rc) rc = write_config(dir, config_json, dtype);
    if (!rc) rc = st_write_model_dir(dir, entries, n, shard_bytes, produce_random, &ctx);
    free(ctx.buf);
    free(ctx.narrow);
    free(entries);
    free(t);
    return rc;
}
