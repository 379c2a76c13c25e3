/* tests/test_util.h: helpers shared by the cmocka tests: random fills and a
 * central finite-difference gradient check. */
#ifndef ZEN_TEST_UTIL_H
#define ZEN_TEST_UTIL_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/kernels.h"
#include "util/error.h"
#include "util/rng.h"

static inline void fill_uniform(float *x, size_t n, float bound, uint64_t seed) {
    zen_rng rng;
    zen_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) x[i] = zen_rng_symmetric(&rng, bound);
}

/* loss(ctx) must read the current x; returns max |fd - analytic| / max(max |analytic|, floor).
 * Every element of x is perturbed by +-h. */
typedef double (*fd_loss_fn)(void *ctx);
static inline double fd_relative_error(fd_loss_fn loss, void *ctx, float *x, size_t n,
                                       const float *analytic, float h) {
    double max_err = 0.0, max_ref = 1e-3;
    for (size_t i = 0; i < n; i++) {
        float saved = x[i];
        x[i] = saved + h;
        double lp = loss(ctx);
        x[i] = saved - h;
        double lm = loss(ctx);
        x[i] = saved;
        double fd = (lp - lm) / (2.0 * (double)h);
        double err = fabs(fd - analytic[i]);
        if (err > max_err) max_err = err;
        if (fabs(analytic[i]) > max_ref) max_ref = fabs(analytic[i]);
    }
    return max_err / max_ref;
}

/* the one rule for an fp32 result against an exact reference, the same as
 * tests/reference/harness.py's fp32_bound: a result built by fp32 sums of at
 * most `length` terms whose sizes add up to `terms` may lie
 * FP32_K u sqrt(length) terms from the exact value, per fp32 computation
 * compared (u = 2^-24). FP32_K keeps a 10x margin over the worst ratio
 * measured (README, How it is checked: Tolerances). */
#define TEST_FP32_K 64.0
static inline double fp32_bound(double terms, double length, int computations) {
    return TEST_FP32_K * 0x1p-24 * sqrt(length > 1 ? length : 1) * fabs(terms) * computations;
}

static inline double dot_weights(const float *y, const float *w, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)y[i] * w[i];
    return s;
}

/* ZEN_CPU_ISA caps the kernels of a test program as it caps zen's (and
 * OpenBLAS's, by starting the program again); 0, or 2 after one line */
static inline int test_cpu_isa_setup(char **argv) {
    if (zk_cpu_isa_setup(argv)) {
        fprintf(stderr, "%s: %s\n", argv[0], zen_last_error());
        return 2;
    }
    printf("kernel variant %s\n", zk_cpu_kernels_name());
    return 0;
}

#endif
