/* objectives/ref_logps.h: an objective's precomputed reference
 * (dpo.precompute_ref, kto.precompute_ref): the reference's summed
 * log-probabilities of every item's continuations (DPO: a pair's chosen and
 * rejected completion; KTO: the completion and its KL completion), computed
 * in one pass before step 1 and kept beside the data in
 *   DATA.ref-<key>.logps     "ZENREF01", key (u64), items (i64), then items x k float64
 * The key hashes what the values depend on: the data file (path, size,
 * modification time, pairs), the base model (path, its files' names, sizes
 * and modification times, config, storage and quantisation), the reference
 * adapter's values (or none: the base) and the compute precision. So a file
 * is never computed twice for the same data and base, and a changed input
 * gets its own. The pass appends to DATA.ref-<key>.logps.partial a batch at
 * a time: a run stopped during it continues where it stopped. */
#ifndef ZEN_REF_LOGPS_H
#define ZEN_REF_LOGPS_H
#include <stdio.h>

#include "objective.h"
#include "pair_batch.h"

/* what the pass computes: items groups of k continuations, each laid into a
 * batch by add; salt (with k) keys another layout than DPO's pairs of d */
typedef struct {
    int64_t items;
    int k;
    uint64_t salt;
    const char *noun; /* "pairs", "records" */
    int (*add)(void *ctx, zen_pair_batch *b, int64_t item);
    void *ctx;
} zen_ref_spec;

/* *out [items][k] (malloc'd): read from the file, or computed (ranks split
 * each chunk of batches; rank 0 writes) and then read. say: where a line on
 * what happened goes (rank 0), or NULL. */
int zen_ref_logps_get(const zen_model *m, const char *model_path, const zen_lora *ref, zen_acts *a,
                      const zen_dataset *d, zen_pair_batch *b, size_t batch, const zen_ranks *ranks,
                      const zen_ref_spec *spec, double **out, FILE *say);

#endif
