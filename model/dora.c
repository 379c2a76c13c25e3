/* model/dora.c: DoRA's per-row norms and scales (see dora.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "dora.h"

/* n [out] of (layer, target) in double, from the host copy of params (p),
 * the base's squared row norms (wsq) and G = A W^T [r, out] */
static void row_norms(const zen_lora *lo, const float *p, int l, int t, const float *wsq, const float *G, size_t in,
                      size_t out, double *n) {
    size_t r = (size_t)lo->r;
    const float *A = zen_lora_A(lo, (float *)p, l, t), *B = zen_lora_B(lo, (float *)p, l, t);
    double s = lo->scale, *C = malloc(r * r * sizeof(double)); /* A A^T [r, r] */
    if (!C) {
        for (size_t o = 0; o < out; o++) n[o] = NAN;
        return;
    }
    for (size_t k = 0; k < r; k++)
        for (size_t j = 0; j <= k; j++) {
            double acc = 0.0;
            for (size_t i = 0; i < in; i++) acc += (double)A[k * in + i] * A[j * in + i];
            C[k * r + j] = C[j * r + k] = acc;
        }
    for (size_t o = 0; o < out; o++) {
        const float *b = B + o * r;
        double cross = 0.0, quad = 0.0;
        for (size_t k = 0; k < r; k++) {
            cross += (double)b[k] * G[k * out + o];
            double cb = 0.0;
            for (size_t j = 0; j < r; j++) cb += C[k * r + j] * b[j];
            quad += (double)b[k] * cb;
        }
        double sq = (double)wsq[o] + 2.0 * s * cross + s * s * quad;
        n[o] = sqrt(sq > 0 ? sq : 0.0);
    }
    free(C);
}

/* every adapted projection's n, then (init) m = n, g = m / n, 1 / m */
static int refresh(zen_lora *lo, const zen_model *m, int init) {
    zk_backend *be = lo->be;
    const zen_config *cfg = &m->cfg;
    size_t r = (size_t)lo->r;
    float *p = zen_malloc(lo->num_params * sizeof(float)), *wsq = zen_malloc(lo->mag_count * sizeof(float));
    float *g = zen_malloc(lo->mag_count * sizeof(float)), *inv = zen_malloc(lo->mag_count * sizeof(float));
    float *gm1 = zen_malloc(lo->mag_count * sizeof(float)), *inv_n = zen_malloc(lo->mag_count * sizeof(float));
    size_t widest = 0;
    for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
        int in, out;
        zen_target_dims(cfg, (zen_target)t, &in, &out);
        if ((size_t)out > widest) widest = (size_t)out;
    }
    float *G = zen_malloc(r * widest * sizeof(float));
    double *n = zen_malloc(widest * sizeof(double));
    int rc = p && wsq && g && inv && gm1 && inv_n && G && n ? 0 : ZEN_ERR_INTERNAL;
    if (!rc) {
        be->download(be, p, lo->params, lo->num_params * sizeof(float));
        be->download(be, wsq, lo->dora_wsq, lo->mag_count * sizeof(float));
    }
    for (int l = 0; l < cfg->layers && !rc; l++)
        for (int t = 0; t < ZEN_NUM_TARGETS && !rc; t++) {
            if (!zen_lora_has(lo, t)) continue;
            int in, out;
            zen_target_dims(cfg, (zen_target)t, &in, &out);
            /* G = A W^T: r rows through the base projection */
            be->linear_fwd(be, lo->dora_tmp, zen_lora_A(lo, lo->params, l, t), &m->layers[l].proj[t], r, (size_t)in,
                           (size_t)out);
            if ((rc = zk_status(be))) break;
            be->download(be, G, lo->dora_tmp, r * (size_t)out * sizeof(float));
            row_norms(lo, p, l, t, zen_lora_G(lo, wsq, l, t), G, (size_t)in, (size_t)out, n);
            float *mag = zen_lora_M(lo, p, l, t), *gl = zen_lora_G(lo, g, l, t), *il = zen_lora_G(lo, inv, l, t);
            float *g1 = zen_lora_G(lo, gm1, l, t), *in_ = zen_lora_G(lo, inv_n, l, t);
            for (int o = 0; o < out; o++) {
                if (init) mag[o] = (float)n[o];
                gl[o] = n[o] > 0 ? (float)(mag[o] / n[o]) : 0.0f;
                il[o] = mag[o] != 0.0f ? 1.0f / mag[o] : 0.0f;
                g1[o] = gl[o] - 1.0f;
                in_[o] = n[o] > 0 ? (float)(1.0 / n[o]) : 0.0f;
            }
        }
    if (!rc) {
        if (init) be->upload(be, lo->params, p, lo->num_params * sizeof(float));
        be->upload(be, lo->dora_g, g, lo->mag_count * sizeof(float));
        be->upload(be, lo->dora_inv_m, inv, lo->mag_count * sizeof(float));
        be->upload(be, lo->dora_gm1, gm1, lo->mag_count * sizeof(float));
        be->upload(be, lo->dora_inv_n, inv_n, lo->mag_count * sizeof(float));
        rc = zk_status(be);
    }
    free(p);
    free(wsq);
    free(g);
    free(inv);
    free(gm1);
    free(inv_n);
    free(G);
    free(n);
    return rc;
}

int zen_dora_setup(zen_lora *lo, const zen_model *m, int init_magnitude) {
    zk_backend *be = lo->be;
    if (!lo->dora) return 0;
    size_t widest = 0;
    for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
        int in, out;
        zen_target_dims(&m->cfg, (zen_target)t, &in, &out);
        if ((size_t)out > widest) widest = (size_t)out;
    }
    if (!lo->dora_wsq) {
        lo->dora_wsq = be->alloc(be, lo->mag_count * sizeof(float));
        lo->dora_g = be->alloc(be, lo->mag_count * sizeof(float));
        lo->dora_inv_m = be->alloc(be, lo->mag_count * sizeof(float));
        lo->dora_tmp = be->alloc(be, (size_t)lo->r * widest * sizeof(float));
        lo->dora_gm1 = be->alloc(be, lo->mag_count * sizeof(float));
        lo->dora_inv_n = be->alloc(be, lo->mag_count * sizeof(float));
        lo->dora_minus1 = be->alloc(be, widest * sizeof(float));
        if (!lo->dora_wsq || !lo->dora_g || !lo->dora_inv_m || !lo->dora_tmp || !lo->dora_gm1 || !lo->dora_inv_n ||
            !lo->dora_minus1)
            return ZEN_ERR_INTERNAL;
        float *ones = zen_malloc(widest * sizeof(float));
        if (!ones) return ZEN_ERR_INTERNAL;
        for (size_t i = 0; i < widest; i++) ones[i] = -1.0f;
        be->upload(be, lo->dora_minus1, ones, widest * sizeof(float));
        free(ones);
        /* the base's squared row norms, once */
        for (int l = 0; l < m->cfg.layers; l++)
            for (int t = 0; t < ZEN_NUM_TARGETS; t++) {
                if (!zen_lora_has(lo, t)) continue;
                int in, out;
                zen_target_dims(&m->cfg, (zen_target)t, &in, &out);
                be->row_sq_norms(be, zen_lora_G(lo, lo->dora_wsq, l, t), &m->layers[l].proj[t], (size_t)out,
                                 (size_t)in);
            }
        int rc = zk_status(be);
        if (rc) return rc;
    }
    return refresh(lo, m, init_magnitude);
}

int zen_dora_refresh(zen_lora *lo, const zen_model *m) { return lo->dora ? refresh(lo, m, 0) : 0; }

size_t zen_dora_plan_bytes(const zen_config *cfg, unsigned targets, int r, size_t rows, int recompute, int peft_dropout) {
    size_t C = (size_t)cfg->hidden, F = (size_t)cfg->intermediate, qd = (size_t)cfg->heads * (size_t)cfg->head_dim;
    size_t widest = C > qd ? C : qd, mags = 0, kept = 0;
    widest = widest > F ? widest : F;
    for (int t = 0; t < ZEN_NUM_TARGETS; t++)
        if ((targets >> t) & 1u) {
            int in, out;
            zen_target_dims(cfg, (zen_target)t, &in, &out);
            mags += (size_t)out;
        }
    kept += ((targets >> ZT_O) & 1u) + ((targets >> ZT_DOWN) & 1u);
    size_t layers = recompute ? 1 : (size_t)cfg->layers;
    size_t z = peft_dropout ? layers * rows * mags + 2 * rows * widest : 0; /* z per projection; xd, dxd */
    /* per magnitude: m, its gradient, AdamW's two moments, and the five device vectors */
    return (kept * layers * rows * C + rows * widest + z + 9 * mags * (size_t)cfg->layers + (size_t)r * widest +
            widest) * sizeof(float);
}
