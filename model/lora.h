/* model/lora.h: LoRA adapters as PEFT defines them:
 *   y = x W^T + scale * (dropout(x) A^T) B^T,  A [r, in], B [out, r]
 *   scale = alpha / r, or alpha / sqrt(r) with rsLoRA;
 * and DoRA (use_dora, model/dora.h): each projection also has a magnitude
 * m [out], and y = (m / n) * (x W^T + scale * (x A^T) B^T), n = ||W + scale B A||
 * per output row.
 * All A and B matrices live in one fp32 device buffer (and their gradients in a
 * second buffer of the same layout), so the optimizer is one flat loop.
 * Read and written in PEFT's layout: adapter_config.json +
 * adapter_model.safetensors with keys
 *   base_model.model.model.layers.N.<module>.lora_A.weight / lora_B.weight
 * (and ....<module>.lora_magnitude_vector [out] with DoRA). */
#ifndef ZEN_LORA_H
#define ZEN_LORA_H
#include <stdint.h>

#include "weights.h"

#define ZEN_LORA_MAX_R 4096 /* the largest rank accepted anywhere */

typedef struct {
    int r;
    float alpha;
    int rslora;
    float dropout;
    unsigned targets;      /* bit t set: projection t has an adapter */
    float scale;           /* alpha / r or alpha / sqrt(r) */
    int layers;
    size_t num_params;     /* total floats of all A and B */
    size_t *offset_A;      /* [L * 7] float offset of A (SIZE_MAX when absent) */
    size_t *offset_B;      /* [L * 7] */
    int dora;              /* DoRA: a magnitude m [out] after each B, in the same buffers */
    int dora_clean_base;   /* with dropout: the (m/n - 1) term on x, not on dropout(x) as PEFT (model/dora.h) */
    size_t *offset_M;      /* [L * 7] float offset of m (SIZE_MAX when absent) */
    size_t *offset_G;      /* [L * 7] offset of the projection's rows in the vectors below */
    size_t mag_count;      /* sum of out over the adapted projections */
    float *dora_wsq;       /* [mag_count] device: sum_i W[o, i]^2 of the base (fixed) */
    float *dora_g;         /* [mag_count] device: m / n, refreshed after every update (model/dora.h) */
    float *dora_inv_m;     /* [mag_count] device: 1 / m (0 where m = 0), for dm in backward */
    float *dora_gm1;       /* [mag_count] device: g - 1 (DoRA with dropout) */
    float *dora_inv_n;     /* [mag_count] device: 1 / n (DoRA with dropout: dm = sum dy z / n) */
    float *dora_minus1;    /* [widest out] device: -1 */
    float *dora_tmp;       /* [r * widest out] device: A W^T while refreshing */
    float *params;         /* [num_params] device fp32 */
    float *grads;          /* [num_params] device fp32, NULL until zen_lora_alloc_grads */
    zk_backend *be;
} zen_lora;

/* "all", or a comma list of q,k,v,o,gate,up,down (with or without _proj). */
int zen_lora_parse_targets(const char *list, unsigned *mask);
/* Shape of a fresh adapter; A kaiming-uniform U(+-1/sqrt(in)) from seed, B zeros. */
int zen_lora_create(zen_lora *lo, const zen_config *cfg, zk_backend *be, int r, float alpha,
                    int rslora, float dropout, unsigned targets, uint64_t seed);
/* The same with DoRA's magnitudes (0 here; model/dora.h sets them from the base). */
int zen_lora_create_dora(zen_lora *lo, const zen_config *cfg, zk_backend *be, int r, float alpha, int rslora,
                         float dropout, unsigned targets, uint64_t seed, int dora);
int zen_lora_load_peft(zen_lora *lo, const zen_config *cfg, zk_backend *be, const char *dir);
/* The checks zen_lora_load_peft makes of adapter_config.json, on its text
 * (the fuzzer). */
int zen_lora_check_config_text(const char *text, size_t len, const char *origin);
/* Writes adapter_config.json and adapter_model.safetensors into dir (created). */
int zen_lora_save_peft(const zen_lora *lo, const zen_config *cfg, const char *dir,
                       const char *base_model, zen_dtype dtype);
/* Writes a [num_params] device buffer laid out like the adapter (params or grads)
 * to a SafeTensors file under PEFT key names; meta pairs as in st_writer_open. */
int zen_lora_write_tensors(const zen_lora *lo, const zen_config *cfg, const float *device_buf,
                           const char *path, zen_dtype dtype, const char *const *meta,
                           int meta_pairs);
int zen_lora_alloc_grads(zen_lora *lo);
void zen_lora_zero_grads(zen_lora *lo);
void zen_lora_free(zen_lora *lo);
/* 1 if an A or B value is NaN or infinite (where names the tensor and
 * element), 0 if all are finite, -1 out of memory. */
int zen_lora_find_nonfinite(const zen_lora *lo, const zen_config *cfg, char *where, size_t cap);

static inline int zen_lora_has(const zen_lora *lo, int t) { return lo && ((lo->targets >> t) & 1u); }
static inline float *zen_lora_A(const zen_lora *lo, float *buf, int layer, int t) {
    return buf + lo->offset_A[layer * ZEN_NUM_TARGETS + t];
}
static inline float *zen_lora_B(const zen_lora *lo, float *buf, int layer, int t) {
    return buf + lo->offset_B[layer * ZEN_NUM_TARGETS + t];
}
/* DoRA's magnitude m [out] of (layer, target) in a buffer laid out like params */
static inline float *zen_lora_M(const zen_lora *lo, float *buf, int layer, int t) {
    return buf + lo->offset_M[layer * ZEN_NUM_TARGETS + t];
}
/* (layer, target)'s rows in the mag_count vectors (dora_g, dora_inv_m, dora_wsq) */
static inline float *zen_lora_G(const zen_lora *lo, float *vec, int layer, int t) {
    return vec + lo->offset_G[layer * ZEN_NUM_TARGETS + t];
}

#endif
