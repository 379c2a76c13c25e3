/* tests/packing_property.h: the property that makes packing documents safe,
 * checked on any backend: the per-token losses of one sequence holding
 * documents d1..dk (positions restarting, attention kept inside each) equal
 * those of each document run alone at the start of its own sequence, to
 * floating-point rounding. Shared by test_model.c (CPU) and test_cuda.c (CUDA,
 * real or emulated). */
#ifndef ZEN_TEST_PACKING_PROPERTY_H
#define ZEN_TEST_PACKING_PROPERTY_H
#include <math.h>
#include <stdlib.h>

#include "model/decoder.h"

typedef struct {
    double packed_vs_alone;  /* max |loss_packed - loss_alone| / max(1, |loss_alone|) over every document row */
    double causal_vs_alone;  /* the same with the documents ignored (one causal segment): must be large */
} packing_result;

/* per-token losses [B*T] of one forward pass (no backward, no dropout) */
static int packing_losses(const zen_model *m, const zen_lora *lo, size_t B, size_t T, const int32_t *in,
                          const int32_t *tg, const int32_t *pos, const int32_t *seg, float *losses) {
    zen_acts a;
    uint8_t *mask = malloc(B * T);
    for (size_t i = 0; i < B * T; i++) mask[i] = 1;
    double sum;
    int rc = zen_acts_create(&a, m, lo, B, T, 0), created = !rc;
    if (!rc) rc = zen_decoder_run(m, lo, &a, in, tg, mask, pos, seg, 0.0f, 0, &sum);
    if (!rc) a.be->download(a.be, losses, a.losses, B * T * sizeof(float));
    if (created) zen_acts_free(&a);
    free(mask);
    return rc;
}

/* Documents of lens[0..k) tokens fill one sequence of T = sum(lens) rows;
 * token ids are drawn from a fixed pattern below the model's vocab. */
static int packing_check(const zen_model *m, const zen_lora *lo, const size_t *lens, size_t k, packing_result *r) {
    size_t T = 0;
    for (size_t d = 0; d < k; d++) T += lens[d];
    uint32_t V = (uint32_t)m->cfg.vocab;
    int32_t *in = malloc(T * sizeof(int32_t)), *tg = malloc(T * sizeof(int32_t));
    int32_t *pos = malloc(T * sizeof(int32_t)), *seg = malloc(T * sizeof(int32_t));
    int32_t *ain = malloc(k * T * sizeof(int32_t)), *atg = malloc(k * T * sizeof(int32_t));
    float *packed = malloc(T * sizeof(float)), *causal = malloc(T * sizeof(float)), *alone = malloc(k * T * sizeof(float));
    for (size_t t = 0, d = 0, start = 0; t < T; t++) {
        if (t == start + lens[d]) start = t, d++;
        in[t] = (int32_t)((t * 2654435761u >> 7) % V);
        tg[t] = (int32_t)((t * 40503u + 11) % V);
        seg[t] = (int32_t)start;
        pos[t] = (int32_t)(t - start);
    }
    /* sequence d of the alone batch: document d from row 0, then other tokens
     * (after it, so causality keeps them out of its rows) */
    for (size_t d = 0, start = 0; d < k; start += lens[d], d++)
        for (size_t t = 0; t < T; t++) {
            int inside = t < lens[d];
            ain[d * T + t] = inside ? in[start + t] : (int32_t)((t * 7 + d) % V);
            atg[d * T + t] = inside ? tg[start + t] : (int32_t)((t * 13 + d) % V);
        }
    int rc = packing_losses(m, lo, 1, T, in, tg, pos, seg, packed);
    if (!rc) rc = packing_losses(m, lo, 1, T, in, tg, NULL, NULL, causal);
    if (!rc) rc = packing_losses(m, lo, k, T, ain, atg, NULL, NULL, alone);
    r->packed_vs_alone = r->causal_vs_alone = 0;
    for (size_t d = 0, start = 0; !rc && d < k; start += lens[d], d++)
        for (size_t t = 0; t < lens[d]; t++) {
            double ref = alone[d * T + t], scale = fabs(ref) > 1 ? fabs(ref) : 1;
            double e1 = fabs(packed[start + t] - ref) / scale, e2 = fabs(causal[start + t] - ref) / scale;
            if (e1 > r->packed_vs_alone || isnan(e1)) r->packed_vs_alone = isnan(e1) ? INFINITY : e1;
            if (e2 > r->causal_vs_alone) r->causal_vs_alone = e2;
        }
    free(in), free(tg), free(pos), free(seg), free(ain), free(atg);
    free(packed), free(causal), free(alone);
    return rc;
}

#endif
