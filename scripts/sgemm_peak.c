/* scripts/sgemm_peak.c: OpenBLAS sgemm's throughput on this machine (square
 * n x n, C = A B^T as zen's linear layers call it), the ceiling that
 * scripts/bench_cpu compares zen's achieved GFLOP/s with.
 * usage: sgemm_peak [n]   prints "sgemm <n>: <GFLOP/s> GFLOP/s" */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2048;
    if (n < 16 || n > 16384) {
        fprintf(stderr, "sgemm_peak: n must be in [16, 16384]\n");
        return 2;
    }
    size_t nn = (size_t)n * (size_t)n;
    float *a = malloc(nn * sizeof(float)), *b = malloc(nn * sizeof(float)), *c = malloc(nn * sizeof(float));
    if (!a || !b || !c) return 1;
    for (size_t i = 0; i < nn; i++) a[i] = b[i] = 1e-3f * (float)(i % 97);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n); /* warm-up */
    int reps = 0;
    struct timespec t0, t1;
    double seconds = 0.0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (seconds < 2.0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        reps++;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    }
    printf("sgemm %d: %.1f GFLOP/s\n", n, 2.0 * n * (double)nn * reps / seconds / 1e9);
    free(a);
    free(b);
    free(c);
    return 0;
}
