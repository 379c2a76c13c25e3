/* scripts/bf16_gemm_peak.c: oneDNN's bf16 x bf16 -> fp32 matmul throughput on
 * this machine (square n x n, C = A B^T as zen's bf16 linear layers call it),
 * the ceiling that scripts/bench_cpu compares zen's bf16 GFLOP/s with, and
 * the ISA oneDNN dispatches to.
 * usage: bf16_gemm_peak [n]   prints "bf16 gemm <n>: <GFLOP/s> GFLOP/s (<isa>)" */
#include <oneapi/dnnl/dnnl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHECK(x)                                                            \
    do {                                                                    \
        dnnl_status_t s_ = (x);                                             \
        if (s_ != dnnl_success) {                                           \
            fprintf(stderr, "bf16_gemm_peak: %s failed (%d)\n", #x, (int)s_); \
            return 1;                                                       \
        }                                                                   \
    } while (0)

static const char *isa_name(dnnl_cpu_isa_t isa) {
    switch (isa) {
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni (no native bf16)";
    case dnnl_cpu_isa_avx512_core: return "avx512_core (no native bf16)";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni (no native bf16)";
    case dnnl_cpu_isa_avx2: return "avx2 (no native bf16)";
    default: return "other (no native bf16)";
    }
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2048;
    if (n < 16 || n > 16384) {
        fprintf(stderr, "bf16_gemm_peak: n must be in [16, 16384]\n");
        return 2;
    }
    size_t nn = (size_t)n * (size_t)n;
    uint16_t *a = malloc(nn * 2), *b = malloc(nn * 2);
    float *c = malloc(nn * sizeof(float));
    if (!a || !b || !c) return 1;
    for (size_t i = 0; i < nn; i++) a[i] = b[i] = 0x3c00 + (uint16_t)(i % 97); /* bf16 values near 0.008 */

    dnnl_engine_t engine;
    dnnl_stream_t stream;
    CHECK(dnnl_engine_create(&engine, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));
    dnnl_dims_t a_dims = {n, n}, b_dims = {n, n}, c_dims = {n, n};
    dnnl_dims_t a_strides = {n, 1}, bt_strides = {1, n}, c_strides = {n, 1}; /* B^T: weights [out, in] */
    dnnl_memory_desc_t a_md, b_md, c_md;
    CHECK(dnnl_memory_desc_init_by_strides(&a_md, 2, a_dims, dnnl_bf16, a_strides));
    CHECK(dnnl_memory_desc_init_by_strides(&b_md, 2, b_dims, dnnl_bf16, bt_strides));
    CHECK(dnnl_memory_desc_init_by_strides(&c_md, 2, c_dims, dnnl_f32, c_strides));
    dnnl_matmul_desc_t desc;
    CHECK(dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md));
    dnnl_primitive_desc_t pd;
    CHECK(dnnl_primitive_desc_create(&pd, &desc, NULL, engine, NULL));
    dnnl_primitive_t mm;
    CHECK(dnnl_primitive_create(&mm, pd));
    dnnl_memory_t am, bm, cm;
    CHECK(dnnl_memory_create(&am, &a_md, engine, a));
    CHECK(dnnl_memory_create(&bm, &b_md, engine, b));
    CHECK(dnnl_memory_create(&cm, &c_md, engine, c));
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
    CHECK(dnnl_primitive_execute(mm, stream, 3, args)); /* warm-up */
    CHECK(dnnl_stream_wait(stream));
    int reps = 0;
    struct timespec t0, t1;
    double seconds = 0.0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (seconds < 2.0) {
        CHECK(dnnl_primitive_execute(mm, stream, 3, args));
        CHECK(dnnl_stream_wait(stream));
        reps++;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    }
    printf("bf16 gemm %d: %.1f GFLOP/s (%s)\n", n, 2.0 * n * (double)nn * reps / seconds / 1e9,
           isa_name(dnnl_get_effective_cpu_isa()));
    dnnl_memory_destroy(am), dnnl_memory_destroy(bm), dnnl_memory_destroy(cm);
    dnnl_primitive_destroy(mm);
    dnnl_primitive_desc_destroy(pd);
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(engine);
    free(a), free(b), free(c);
    return 0;
}
