/* scripts/read_bandwidth.c: how fast this machine's cores stream memory in,
 * the ceiling of decoding (a decode step reads every weight once), which
 * scripts/bench_generate compares zen's achieved GB/s with. Every thread
 * XORs its share of a buffer far larger than the caches (vectorised 64-bit
 * loads, nothing written); the best of 5 passes counts.
 * usage: read_bandwidth [MiB]   prints "read <MiB> MiB: <GB/s> GB/s" */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 2048;
    if (mib < 64 || mib > 65536) {
        fprintf(stderr, "read_bandwidth: MiB must be in [64, 65536]\n");
        return 2;
    }
    size_t n = (size_t)mib << 17; /* 64-bit words */
    uint64_t *a = malloc(n * sizeof(uint64_t));
    if (!a) return 1;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = i; /* each thread touches its own pages first */
    double best = 0;
    uint64_t sink = 0;
    for (int pass = 0; pass < 5; pass++) {
        double t = omp_get_wtime();
        uint64_t x = 0;
#pragma omp parallel for schedule(static) reduction(^ : x)
        for (size_t i = 0; i < n; i++) x ^= a[i];
        t = omp_get_wtime() - t;
        sink ^= x;
        double gbs = (double)n * sizeof(uint64_t) / t / 1e9;
        best = gbs > best ? gbs : best;
    }
    printf("read %ld MiB: %.1f GB/s (%d threads; %llu)\n", mib, best, omp_get_max_threads(),
           (unsigned long long)(sink & 1));
    free(a);
    return 0;
}
