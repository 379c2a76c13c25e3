/* util/rng.c: xoshiro256** (Blackman & Vigna), seeded with splitmix64. */
#include "rng.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void zen_rng_seed(zen_rng *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t zen_rng_next(zen_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float zen_rng_uniform(zen_rng *rng) {
    return (float)(zen_rng_next(rng) >> 40) * (1.0f / 16777216.0f);
}

float zen_rng_symmetric(zen_rng *rng, float bound) {
    return (2.0f * zen_rng_uniform(rng) - 1.0f) * bound;
}

void zen_rng_shuffle(zen_rng *rng, int64_t *a, int64_t n) {
    for (int64_t k = n - 1; k > 0; k--) {
        int64_t j = (int64_t)(zen_rng_next(rng) % (uint64_t)(k + 1));
        int64_t t = a[k];
        a[k] = a[j];
        a[j] = t;
    }
}
