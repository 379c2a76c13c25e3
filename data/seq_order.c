/* data/seq_order.c: per-epoch seeded permutations of a range of sequences
 * (Fisher-Yates with the run's xoshiro generator seeded from (seed, epoch)). */
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "../util/rng.h"
#include "seq_order.h"

int zen_seq_order_init(zen_seq_order *o, int64_t first, int64_t count, uint64_t seed, int shuffle) {
    memset(o, 0, sizeof *o);
    o->first = first;
    o->count = count;
    o->seed = seed;
    o->shuffle = shuffle;
    o->epoch = -1;
    if (shuffle) {
        o->perm = zen_malloc((size_t)(count > 0 ? count : 1) * sizeof(int64_t));
        if (!o->perm) return ZEN_ERR_INTERNAL;
    }
    return 0;
}

void zen_seq_order_free(zen_seq_order *o) {
    free(o->perm);
    memset(o, 0, sizeof *o);
}

int64_t zen_seq_order_get(zen_seq_order *o, int64_t epoch, int64_t i) {
    if (!o->shuffle) return o->first + i;
    if (o->epoch != epoch) {
        zen_rng rng;
        zen_rng_seed(&rng, o->seed ^ (0x5eed0000ull + (uint64_t)epoch * 0x9e3779b97f4a7c15ull));
        for (int64_t k = 0; k < o->count; k++) o->perm[k] = k;
        zen_rng_shuffle(&rng, o->perm, o->count);
        o->epoch = epoch;
    }
    return o->first + o->perm[i];
}
