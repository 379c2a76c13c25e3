/* scripts/stream_overlap.c: how much arithmetic this machine's cores hide
 * under a stream of memory reads, the question batched decoding rests on
 * (scripts/bench_generate: S sequences read the weights once and do S
 * times the arithmetic). Every thread streams its share of a buffer far
 * larger than the caches, 64 bytes at a time, and for each 64-byte line
 * runs what dot4_bf16_bf16w does per weight line at 8 rows: 8 vdpbf16ps,
 * 4 of them on an operand loaded from an L1-resident buffer (the x rows).
 * Three timings, best of 3 passes each: the stream alone (the line loads
 * summed), the arithmetic alone (the same loop over a 16 KiB buffer per
 * thread, as many lines), and both. Where the arithmetic were fully
 * hidden, both = max(stream, arithmetic); where not at all, their sum.
 * Needs AVX512-BF16 (checked at run time); elsewhere it says skipped.
 * usage: stream_overlap [MiB]   prints one line:
 *   "stream <ms> ms, arithmetic <ms> ms, both <ms> ms: <pct>% of the arithmetic hidden (<threads> threads, <MiB> MiB)" */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_X86 1
#define TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

#define LINE 64
#define X_LINES 256   /* the L1-resident operand buffer: 16 KiB */
#define HOT_LINES 256 /* the arithmetic alone: lines from a 16 KiB buffer */
#define HOT_BYTES ((size_t)(HOT_LINES + X_LINES) * LINE) /* a thread's: its hot lines, then its x */

/* lines [0, n) of p: with arithmetic, 8 vdpbf16ps per line into 16
 * accumulators (4 with an operand from x [X_LINES lines]); without, the
 * lines summed. Returns a value that depends on everything read. */
TARGET_BF16 __attribute__((noinline)) static float run_lines(const char *p, size_t n, const char *x, int arithmetic) {
    __m512 acc[16];
    for (int a = 0; a < 16; a++) acc[a] = _mm512_setzero_ps();
    __m512i sum = _mm512_setzero_si512();
    __m512bh fixed = (__m512bh)_mm512_set1_epi16(0x3c00); /* bf16 1/128 */
    for (size_t l = 0; l < n; l += 2) {
        for (int h = 0; h < 2; h++) {
            __m512i line = _mm512_load_si512(p + LINE * (l + h));
            if (!arithmetic) {
                sum = _mm512_add_epi32(sum, line);
                continue;
            }
            __m512bh w = (__m512bh)line;
            for (int k = 0; k < 8; k++) {
                __m512bh xv = k < 4 ? (__m512bh)_mm512_load_si512(x + LINE * ((l * 4 + k) % X_LINES)) : fixed;
                acc[h * 8 + k] = _mm512_dpbf16_ps(acc[h * 8 + k], xv, w);
            }
        }
    }
    float r = (float)_mm512_reduce_add_epi32(sum);
    for (int a = 0; a < 16; a++) r += _mm512_reduce_add_ps(acc[a]);
    return r;
}
#endif

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 1024;
    if (mib < 64 || mib > 65536) {
        fprintf(stderr, "stream_overlap: MiB must be in [64, 65536]\n");
        return 2;
    }
#ifdef HAVE_X86
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bf16")) {
        printf("stream_overlap: skipped: this CPU has no AVX512-BF16\n");
        return 0;
    }
    size_t chunk = (size_t)2 << 20, chunks = ((size_t)mib << 20) / chunk, lines = chunk / LINE;
    int threads = omp_get_max_threads();
    char *buf = aligned_alloc(LINE, chunks * chunk);
    char *hot = aligned_alloc(LINE, (size_t)threads * HOT_BYTES);
    if (!buf || !hot) return 1;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks; c++) memset(buf + c * chunk, (int)(c & 0x3f), chunk); /* first touch per thread */
    memset(hot, 0x3c, (size_t)threads * HOT_BYTES);
    double best[3] = {1e30, 1e30, 1e30}; /* stream, arithmetic, both */
    volatile float sink = 0; /* keeps every pass's sums live */
    for (int pass = 0; pass < 3; pass++)
        for (int mode = 0; mode < 3; mode++) {
            double t = omp_get_wtime();
            float s = 0;
#pragma omp parallel for schedule(static) reduction(+ : s)
            for (size_t c = 0; c < chunks; c++) {
                char *own = hot + (size_t)omp_get_thread_num() * HOT_BYTES;
                const char *x = own + HOT_LINES * LINE;
                if (mode == 1) /* as many lines from the thread's hot ones */
                    for (size_t r = 0; r < lines / HOT_LINES; r++) {
                        s += run_lines(own, HOT_LINES, x, 1);
                        __asm__ volatile("" ::: "memory"); /* each call runs: own may have changed */
                    }
                else
                    s += run_lines(buf + c * chunk, lines, x, mode == 2);
            }
            t = omp_get_wtime() - t;
            sink += s;
            best[mode] = t < best[mode] ? t : best[mode];
        }
    double hidden = best[1] > 0 ? (best[0] + best[1] - best[2]) / best[1] : 0;
    printf("stream %.1f ms, arithmetic %.1f ms, both %.1f ms: %.0f%% of the arithmetic hidden (%d threads, %ld MiB)\n",
           1e3 * best[0], 1e3 * best[1], 1e3 * best[2], 100 * hidden, threads, mib);
    free(buf);
    free(hot);
    (void)sink;
    return 0;
#else
    printf("stream_overlap: skipped: not an x86-64 build\n");
    return 0;
#endif
}
