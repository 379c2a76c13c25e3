/* kernels/cpu/dnnl_cpu.c: the CPU's bf16 matrix products on oneDNN (Debian's
 * libdnnl): bf16 x bf16 -> fp32 matmul primitives, each created once per
 * shape and kept in a small table, and which ISA oneDNN dispatches to.
 *
 * Two kinds of primitive:
 * - fixed shapes (the projections and the LM head, called from one thread):
 *   oneDNN then picks its brgemm kernels (AMX tiles or AVX512-BF16 dot
 *   products) and runs them on all OpenMP threads;
 * - runtime shapes (attention tiles, whose key counts vary with every tile
 *   and document): one primitive per transpose/accumulate combination,
 *   executed from inside zen's own parallel loop, each thread on its own
 *   stream (oneDNN's nested OpenMP region then runs on that one thread).
 * Primitives use user-managed scratchpads (none of these needs one today;
 * one that does gets a per-thread buffer), so concurrent executions share
 * nothing. oneDNN runs on libgomp, the thread pool of OpenBLAS's OpenMP
 * build and of zen's loops. */
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../util/error.h"
#include "cpu_ops.h"

const char *cpu_dnnl_version(void) {
    static char text[64];
    const dnnl_version_t *v = dnnl_version();
    snprintf(text, sizeof text, "%d.%d.%d", v->major, v->minor, v->patch);
    return text;
}

const char *cpu_dnnl_isa(int *native_bf16) {
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    /* the ISAs with native bf16 matrix arithmetic: AMX-BF16 tiles, AVX512-BF16 dot products */
    int native = isa == dnnl_cpu_isa_avx512_core_amx || isa == dnnl_cpu_isa_avx512_core_bf16;
    if (native_bf16) *native_bf16 = native;
    switch (isa) {
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx_bf16";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_sse41: return "sse41";
#if defined(__aarch64__)
    default: return "aarch64, no bf16 matmuls";
#else
    default: return "an ISA without bf16";
#endif
    }
}

/* one cached primitive: the shape it was made for, or runtime (shape -1) */
typedef struct {
    int64_t M, N, K, lda, ldb, ldc;
    int ta, tb, accumulate;
    dnnl_primitive_t prim;
    size_t scratch_bytes;
    uint64_t used; /* clock of the last use, for replacing the least recent */
} gemm_entry;

struct cpu_dnnl {
    dnnl_engine_t engine;
    dnnl_stream_t *streams; /* [threads] */
    int threads;
    gemm_entry entries[CPU_DNNL_CACHE];
    int n_entries;
    uint64_t clock;
    void **scratch;         /* [threads] scratchpads, grown to scratch_cap bytes */
    size_t scratch_cap;
};

int cpu_dnnl_open(cpu_ctx *ctx) {
    cpu_dnnl *d = zen_calloc(1, sizeof *d);
    if (!d) return ZEN_ERR_INTERNAL;
    d->threads = omp_get_max_threads();
    d->streams = zen_calloc((size_t)d->threads, sizeof *d->streams);
    d->scratch = zen_calloc((size_t)d->threads, sizeof *d->scratch);
    int ok = d->streams && d->scratch && dnnl_engine_create(&d->engine, dnnl_cpu, 0) == dnnl_success;
    for (int t = 0; ok && t < d->threads; t++)
        ok = dnnl_stream_create(&d->streams[t], d->engine, dnnl_stream_default_flags) == dnnl_success;
    ctx->dnnl = d;
    if (!ok) return zen_fail(ZEN_ERR_INTERNAL, "cpu: cannot create oneDNN's engine and streams");
    return 0;
}

void cpu_dnnl_close(cpu_ctx *ctx) {
    cpu_dnnl *d = ctx->dnnl;
    if (!d) return;
    for (int i = 0; i < d->n_entries; i++) dnnl_primitive_destroy(d->entries[i].prim);
    for (int t = 0; t < d->threads; t++) {
        if (d->streams && d->streams[t]) dnnl_stream_destroy(d->streams[t]);
        if (d->scratch) free(d->scratch[t]);
    }
    if (d->engine) dnnl_engine_destroy(d->engine);
    free(d->streams);
    free(d->scratch);
    free(d);
    ctx->dnnl = NULL;
}

/* the memory descriptor of a [rows, cols] matrix with leading dimension ld,
 * transposed (column-major view) if t; runtime dims where rt */
static void matrix_md(dnnl_memory_desc_t *md, int rt, int64_t rows, int64_t cols, int64_t ld, int t,
                      dnnl_data_type_t type) {
    dnnl_dim_t R = DNNL_RUNTIME_DIM_VAL;
    dnnl_dims_t dims = {rt ? R : rows, rt ? R : cols};
    dnnl_dims_t strides = {t ? 1 : (rt ? R : ld), t ? (rt ? R : ld) : 1};
    dnnl_memory_desc_init_by_strides(md, 2, dims, type, strides);
}

static gemm_entry *find_or_make(zk_backend *be, cpu_dnnl *d, const gemm_entry *key) {
    for (int i = 0; i < d->n_entries; i++) {
        gemm_entry *e = &d->entries[i];
        if (e->M == key->M && e->N == key->N && e->K == key->K && e->lda == key->lda && e->ldb == key->ldb &&
            e->ldc == key->ldc && e->ta == key->ta && e->tb == key->tb && e->accumulate == key->accumulate) {
            e->used = ++d->clock;
            return e;
        }
    }
    int rt = key->M < 0;
    dnnl_memory_desc_t a, b, c;
    matrix_md(&a, rt, key->M, key->K, key->lda, key->ta, dnnl_bf16);
    matrix_md(&b, rt, key->K, key->N, key->ldb, key->tb, dnnl_bf16);
    matrix_md(&c, rt, key->M, key->N, key->ldc, 0, dnnl_f32);
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    int ok = dnnl_matmul_desc_init(&desc, &a, &b, NULL, &c) == dnnl_success &&
             dnnl_primitive_attr_create(&attr) == dnnl_success &&
             dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success;
    if (ok && key->accumulate) /* C += A B: the sum post-op */
        ok = dnnl_post_ops_create(&post) == dnnl_success && dnnl_post_ops_append_sum(post, 1.0f) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, post) == dnnl_success;
    if (ok) ok = dnnl_primitive_desc_create(&pd, &desc, attr, d->engine, NULL) == dnnl_success;
    size_t scratch = 0;
    if (ok) {
        const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        scratch = sp ? dnnl_memory_desc_get_size(sp) : 0;
        ok = dnnl_primitive_create(&prim, pd) == dnnl_success;
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (post) dnnl_post_ops_destroy(post);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) {
        zk_set_failed(be, ZEN_ERR_INTERNAL, "cpu: oneDNN cannot make a bf16 matmul of %lld x %lld x %lld",
                      (long long)key->M, (long long)key->N, (long long)key->K);
        return NULL;
    }
    int slot = d->n_entries;
    if (slot == CPU_DNNL_CACHE) { /* full: replace the least recently used */
        slot = 0;
        for (int i = 1; i < d->n_entries; i++)
            if (d->entries[i].used < d->entries[slot].used) slot = i;
        dnnl_primitive_destroy(d->entries[slot].prim);
    } else {
        d->n_entries++;
    }
    gemm_entry *e = &d->entries[slot];
    *e = *key;
    e->prim = prim;
    e->scratch_bytes = scratch;
    e->used = ++d->clock;
    return e;
}

/* runs e on this thread's stream with (A, B, C) of the given shape */
static void execute(zk_backend *be, cpu_dnnl *d, const gemm_entry *e, int64_t M, int64_t N, int64_t K,
                    const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb, float *C, int64_t ldc) {
    int t = omp_in_parallel() ? omp_get_thread_num() : 0;
    if (t >= d->threads) t = 0;
    dnnl_memory_desc_t a, b, c, s;
    matrix_md(&a, 0, M, K, lda, e->ta, dnnl_bf16);
    matrix_md(&b, 0, K, N, ldb, e->tb, dnnl_bf16);
    matrix_md(&c, 0, M, N, ldc, 0, dnnl_f32);
    dnnl_memory_t am = NULL, bm = NULL, cm = NULL, sm = NULL;
    int ok = dnnl_memory_create(&am, &a, d->engine, (void *)A) == dnnl_success &&
             dnnl_memory_create(&bm, &b, d->engine, (void *)B) == dnnl_success &&
             dnnl_memory_create(&cm, &c, d->engine, C) == dnnl_success;
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}, {DNNL_ARG_SCRATCHPAD, NULL}};
    int nargs = 3;
    if (ok && e->scratch_bytes) {
        if (e->scratch_bytes > d->scratch_cap) ok = 0; /* reserved by cpu_bf16_gemm_prepare */
        dnnl_dims_t dims = {(dnnl_dim_t)e->scratch_bytes};
        ok = ok && dnnl_memory_desc_init_by_tag(&s, 1, dims, dnnl_u8, dnnl_x) == dnnl_success &&
             dnnl_memory_create(&sm, &s, d->engine, d->scratch[t]) == dnnl_success;
        args[3].memory = sm;
        nargs = 4;
    }
    if (ok) ok = dnnl_primitive_execute(e->prim, d->streams[t], nargs, args) == dnnl_success &&
                 dnnl_stream_wait(d->streams[t]) == dnnl_success;
    if (am) dnnl_memory_destroy(am);
    if (bm) dnnl_memory_destroy(bm);
    if (cm) dnnl_memory_destroy(cm);
    if (sm) dnnl_memory_destroy(sm);
    if (!ok) zk_set_failed(be, ZEN_ERR_INTERNAL, "cpu: a oneDNN bf16 matmul of %lld x %lld x %lld failed", (long long)M,
                           (long long)N, (long long)K);
}

/* grows every thread's scratchpad to e's need (outside parallel regions) */
static int reserve_scratch(zk_backend *be, cpu_dnnl *d, const gemm_entry *e) {
    if (e->scratch_bytes <= d->scratch_cap) return 0;
    for (int t = 0; t < d->threads; t++) {
        free(d->scratch[t]);
        if (!(d->scratch[t] = aligned_alloc(64, (e->scratch_bytes + 63) & ~(size_t)63))) {
            d->scratch_cap = 0;
            zk_set_failed(be, ZEN_ERR_INTERNAL, "out of memory allocating %zu bytes of oneDNN scratchpad on cpu",
                          e->scratch_bytes);
            return -1;
        }
    }
    d->scratch_cap = e->scratch_bytes;
    return 0;
}

void cpu_bf16_gemm(zk_backend *be, int ta, int tb, size_t M, size_t N, size_t K, const uint16_t *A, size_t lda,
                   const uint16_t *B, size_t ldb, float *C, size_t ldc, int accumulate) {
    cpu_dnnl *d = ((cpu_ctx *)be->ctx)->dnnl;
    if (be->status || M == 0 || N == 0) return;
    gemm_entry key = {(int64_t)M, (int64_t)N, (int64_t)K, (int64_t)lda, (int64_t)ldb, (int64_t)ldc, ta, tb,
                      accumulate, NULL, 0, 0};
    const gemm_entry *e = find_or_make(be, d, &key);
    if (e && !reserve_scratch(be, d, e))
        execute(be, d, e, (int64_t)M, (int64_t)N, (int64_t)K, A, (int64_t)lda, B, (int64_t)ldb, C, (int64_t)ldc);
}

const void *cpu_bf16_tile_gemm_prepare(zk_backend *be, int ta, int tb, int accumulate) {
    cpu_dnnl *d = ((cpu_ctx *)be->ctx)->dnnl;
    gemm_entry key = {-1, -1, -1, -1, -1, -1, ta, tb, accumulate, NULL, 0, 0};
    const gemm_entry *e = be->status ? NULL : find_or_make(be, d, &key);
    return e && !reserve_scratch(be, d, e) ? e : NULL;
}

void cpu_bf16_tile_gemm(zk_backend *be, const void *prepared, size_t M, size_t N, size_t K, const uint16_t *A,
                        size_t lda, const uint16_t *B, size_t ldb, float *C, size_t ldc) {
    if (!prepared || M == 0 || N == 0) return;
    execute(be, ((cpu_ctx *)be->ctx)->dnnl, prepared, (int64_t)M, (int64_t)N, (int64_t)K, A, (int64_t)lda, B,
            (int64_t)ldb, C, (int64_t)ldc);
}
