/* util/rng.h: a small, seedable, reproducible random generator (xoshiro256**,
 * seeded through splitmix64). Its whole state is four u64 words, so a run can
 * save it in a checkpoint and resume bit-exactly. */
#ifndef ZEN_RNG_H
#define ZEN_RNG_H
#include <stdint.h>

typedef struct { uint64_t s[4]; } zen_rng;

void zen_rng_seed(zen_rng *rng, uint64_t seed);
uint64_t zen_rng_next(zen_rng *rng);
/* uniform in [0, 1) with 24 random bits (exactly representable in float) */
float zen_rng_uniform(zen_rng *rng);
/* uniform in [-bound, bound) */
float zen_rng_symmetric(zen_rng *rng, float bound);
/* Fisher-Yates: a[0..n) in a random order drawn from rng (n - 1 draws) */
void zen_rng_shuffle(zen_rng *rng, int64_t *a, int64_t n);

#endif
