/* kernels/cpu/backend_cpu.c: the CPU backend: host memory, weights aliased in
 * place (no copy of a memory-mapped model; in bf16 compute an f32/f16 weight
 * is rounded once into a bf16 copy), scratch reserved up front, the table of
 * CPU operations, and the CPU's descriptor functions. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../../util/error.h"
#include "cpu_isa.h"
#include "cpu_ops.h"

static void *cpu_alloc(zk_backend *be, size_t bytes) {
    (void)be;
    /* 64-byte alignment for vector loads; round size up as aligned_alloc requires */
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) zen_fail(ZEN_ERR_INTERNAL, "out of memory allocating %zu bytes on cpu", bytes);
    return p;
}

/* a weight's own copy: a large one on 2 MiB pages where the kernel gives
 * them (transparent huge pages on request), so that filling it faults once
 * per 2 MiB, not once per 4 KiB (a 4B model: 4,000 faults, not 2 million),
 * and reading it misses the TLB less */
static void *cpu_alloc_weight(zk_backend *be, size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    if (bytes < huge) return cpu_alloc(be, bytes);
    size_t rounded = (bytes + huge - 1) & ~(huge - 1);
    void *p = aligned_alloc(huge, rounded);
    if (!p) {
        zen_fail(ZEN_ERR_INTERNAL, "out of memory allocating %zu bytes on cpu", bytes);
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    madvise(p, rounded, MADV_HUGEPAGE); /* advice: where it is refused, 4 KiB pages serve */
#endif
    return p;
}

static void cpu_free(zk_backend *be, void *ptr) {
    (void)be;
    free(ptr);
}

static void cpu_copy(zk_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memcpy(dst, src, bytes);
}

static void cpu_zero(zk_backend *be, void *dst, size_t bytes) {
    (void)be;
    if (bytes) memset(dst, 0, bytes);
}

static int cpu_weight_create(zk_backend *be, zk_weight *out, const void *host, zen_dtype dtype,
                             size_t numel) {
    cpu_ctx *ctx = be->ctx;
    out->data = host;
    out->dtype = dtype;
    /* quantised weights stay quantised: dequantised a chunk of rows at a time */
    if (zen_dtype_is_quant(dtype)) return 0;
    /* Every other matrix gets its own copy, on huge pages (cpu_alloc_weight):
     * bf16 compute reads every matrix as bf16, rounded once, here; any other
     * is copied as stored. A file's memory-mapped pages are 4 KiB pages of
     * the page cache; decoding reads every weight at every step, and there
     * the TLB misses of 4 KiB pages cost as much as the reading (a 4B model
     * in bf16 on 2 cores of a virtual machine: 3.8 -> 6.5 tokens/s alone,
     * 12.2 -> 24.3 at 8 samples). The caller lets the file's pages go. */
    int convert = be->compute == ZEN_BF16 && dtype != ZEN_BF16;
    if (ctx->n_owned == ctx->cap_owned) {
        size_t cap = ctx->cap_owned ? 2 * ctx->cap_owned : 64;
        void **owned = realloc(ctx->owned, cap * sizeof *owned);
        if (!owned) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        ctx->owned = owned, ctx->cap_owned = cap;
    }
    if (!convert) {
        size_t bytes = zen_dtype_bytes(dtype, numel), piece = (size_t)1 << 20;
        char *copy = cpu_alloc_weight(be, bytes);
        if (!copy) return ZEN_ERR_INTERNAL;
#pragma omp parallel for schedule(static) if (bytes > 4 * piece)
        for (size_t at = 0; at < bytes; at += piece)
            memcpy(copy + at, (const char *)host + at, bytes - at < piece ? bytes - at : piece);
        ctx->owned[ctx->n_owned++] = copy;
        out->data = copy;
        return 0;
    }
    uint16_t *copy = cpu_alloc_weight(be, numel * sizeof(uint16_t));
    if (!copy) return ZEN_ERR_INTERNAL;
    if (dtype == ZEN_F32) {
        cpu_round_bf16(copy, host, numel);
    } else { /* f16: widened and rounded a row-sized piece at a time */
        enum { PIECE = 1 << 16 };
        float wide[PIECE];
        for (size_t i = 0; i < numel; i += PIECE) {
            size_t n = numel - i < PIECE ? numel - i : PIECE;
            zen_widen(wide, (const uint16_t *)host + i, dtype, n);
            for (size_t j = 0; j < n; j++) copy[i + j] = zen_f32_to_bf16(wide[j]);
        }
    }
    ctx->owned[ctx->n_owned++] = copy;
    out->data = copy;
    out->dtype = ZEN_BF16;
    return 0;
}

static void cpu_weight_destroy(zk_backend *be, zk_weight *w) {
    cpu_ctx *ctx = be->ctx;
    for (size_t i = 0; i < ctx->n_owned; i++)
        if (ctx->owned[i] == w->data) {
            free(ctx->owned[i]);
            ctx->owned[i] = ctx->owned[--ctx->n_owned];
            break;
        }
    w->data = NULL;
}

static void cpu_copy_act(zk_backend *be, void *dst, const float *src, size_t count) {
    cpu_copy(be, dst, src, count * sizeof(float));
}

static void cpu_copy_act_back(zk_backend *be, float *dst, const void *src, size_t count) {
    cpu_copy(be, dst, src, count * sizeof(float));
}

float *cpu_scratch(zk_backend *be, int slot, size_t elems) {
    static const char *const names[CPU_SCRATCH_SLOTS] = {"widened weight", "LoRA dropout input",
                                                         "LoRA dropout gradient", "attention tiles",
                                                         "bf16 matmul input", "bf16 attention",
                                                         "bf16 dequantised weight", "LoRA gradient sums"};
    cpu_ctx *ctx = be->ctx;
    if (be->status) return NULL; /* a failed step does no more work */
    int injected = zk_fault_hit("ZEN_FAULT_SCRATCH");
    if (elems > ctx->scratch_capacity[slot] || injected) {
        free(ctx->scratch[slot]);
        ctx->scratch[slot] = injected ? NULL : aligned_alloc(64, (elems * sizeof(float) + 63) & ~(size_t)63);
        ctx->scratch_capacity[slot] = ctx->scratch[slot] ? elems : 0;
        if (!ctx->scratch[slot]) {
            zk_set_failed(be, ZEN_ERR_INTERNAL, "out of memory allocating %zu bytes of %s scratch on cpu%s",
                          elems * sizeof(float), names[slot], injected ? " (injected by ZEN_FAULT_SCRATCH)" : "");
            return NULL;
        }
    }
    return ctx->scratch[slot];
}

void cpu_scratch_sizes(const zk_reserve_plan *p, zen_dtype compute, size_t elems[CPU_SCRATCH_SLOTS],
                       size_t *rope_elems) {
    size_t widen = p->widest_in > CPU_WIDEN_CHUNK_ELEMS ? p->widest_in : CPU_WIDEN_CHUNK_ELEMS;
    /* f32 compute widens 16-bit and quantised weights a chunk at a time; bf16
     * compute reads bf16 weights in place, dequantises quantised ones a chunk
     * at a time into fp32 and then bf16, and rounds each matmul input into a
     * bf16 copy */
    size_t chunk = p->widen_elems < widen ? p->widen_elems : widen;
    elems[CPU_SCRATCH_WIDEN] = compute == ZEN_BF16 && !p->quant_elems ? 0 : chunk;
    elems[CPU_SCRATCH_BF16_W] = compute == ZEN_BF16 && p->quant_elems ? (chunk + 1) / 2 : 0;
    /* LoRA: the fused kernels make the dropout mask in registers; the sgemm
     * path (r not a multiple of CPU_LORA_GROUP, or a variant without them) copies x and dx */
    int fused = cpu_lora_fused_available() && p->lora_r % CPU_LORA_GROUP == 0;
    elems[CPU_SCRATCH_DROP_X] = elems[CPU_SCRATCH_DROP_DX] =
        p->lora_r && p->lora_dropout && !fused ? p->N * p->widest_in : 0;
    elems[CPU_SCRATCH_LORA] = p->lora_r && fused ? cpu_lora_scratch_elems(p->lora_r, p->widest_in, p->widest_in) : 0;
    elems[CPU_SCRATCH_ATTN] = (size_t)omp_get_max_threads() * 2 * CPU_ATTN_TILE * p->T;
    elems[CPU_SCRATCH_BF16_IN] = compute == ZEN_BF16 ? (p->matmul_elems + 1) / 2 : 0;
    elems[CPU_SCRATCH_ATTN_BF16] =
        compute == ZEN_BF16 ? cpu_attention_bf16_elems(p->N, p->T, p->heads * p->head_dim, p->kv_heads * p->head_dim) : 0;
    *rope_elems = 2 * p->T * (p->head_dim / 2);
}

size_t zk_cpu_plan_scratch(zen_dtype compute, const zk_reserve_plan *p) {
    size_t elems[CPU_SCRATCH_SLOTS], total = 0, rope;
    cpu_scratch_sizes(p, compute, elems, &rope);
    for (int slot = 0; slot < CPU_SCRATCH_SLOTS; slot++) total += elems[slot];
    return (total + rope) * sizeof(float);
}

int cpu_reserve(zk_backend *be, const zk_reserve_plan *p) {
    size_t elems[CPU_SCRATCH_SLOTS], rope;
    cpu_scratch_sizes(p, be->compute, elems, &rope);
    for (int slot = 0; slot < CPU_SCRATCH_SLOTS; slot++)
        if (elems[slot]) cpu_scratch(be, slot, elems[slot]);
    const float *c, *s;
    if (p->T && p->head_dim) cpu_rope_tables(be, p->T, p->head_dim, p->rope_theta, &c, &s);
    return zk_status(be);
}

static void cpu_destroy(zk_backend *be) {
    cpu_ctx *ctx = be->ctx;
    for (int i = 0; i < CPU_SCRATCH_SLOTS; i++) free(ctx->scratch[i]);
    for (size_t i = 0; i < ctx->n_owned; i++) free(ctx->owned[i]);
    free(ctx->owned);
    cpu_dnnl_close(ctx);
    free(ctx->rope_cos);
    free(ctx->rope_sin);
    free(ctx);
    free(be);
}

int zk_cpu_supports(zen_dtype dt) {
    int native;
    const char *isa = cpu_dnnl_isa(&native);
    if (dt == ZEN_BF16 && !native)
        return zen_fail(ZEN_ERR_INPUT, "dtype bf16 on cpu needs native bf16 matrix arithmetic (AMX-BF16 or "
                                       "AVX512-BF16); oneDNN runs %s here, so use --dtype f32", isa);
    return 0;
}

zen_dtype zk_cpu_auto_compute(const char **why) {
    int native;
    cpu_dnnl_isa(&native);
    *why = native ? "auto: this CPU has native bf16 matrix arithmetic"
                  : "auto: this CPU has no native bf16 matrix arithmetic (AMX-BF16 or AVX512-BF16)";
    return native ? ZEN_BF16 : ZEN_F32;
}

int zk_cpu_device_count(void) { return 1; }

zk_backend *zk_cpu_create(zen_dtype compute, int device_index) {
    (void)device_index; /* one CPU: its ranks share the machine's cores */
    zk_backend *be = zen_calloc(1, sizeof *be);
    cpu_ctx *ctx = zen_calloc(1, sizeof *ctx);
    if (!be || !ctx) {
        free(be);
        free(ctx);
        return NULL;
    }
    be->name = "cpu";
    be->act_bytes = sizeof(float);
    be->compute = compute;
    be->ctx = ctx;
    ctx->kernels = cpu_kernels();
    ctx->lora_fused = cpu_lora_fused_available();
    if (compute == ZEN_BF16 && cpu_dnnl_open(ctx)) {
        cpu_dnnl_close(ctx);
        free(ctx);
        free(be);
        return NULL;
    }
    /* OpenBLAS's pthread build keeps its own threads, which spin against
     * zen's OpenMP ones on every core (a step about 5x slower); run it on
     * the calling thread instead and say so */
    if (openblas_get_parallel() == 1 && omp_get_max_threads() > 1) {
        openblas_set_num_threads(1);
        snprintf(be->note, sizeof be->note, "OpenBLAS is its pthread build, whose threads fight zen's OpenMP threads; "
                 "its f32 matmuls now run on one thread (apt-get install libopenblas-openmp-dev and rebuild zen for "
                 "all cores)");
    }
    if (compute == ZEN_BF16)
        snprintf(be->info, sizeof be->info, "bf16 on oneDNN (%s), kernels %s, %d threads", cpu_dnnl_isa(NULL),
                 zk_cpu_kernels_name(), omp_get_max_threads());
    else
        snprintf(be->info, sizeof be->info, "f32 on OpenBLAS sgemm (%s), kernels %s (oneDNN %s), %d threads",
                 openblas_get_corename(), zk_cpu_kernels_name(), cpu_dnnl_isa(NULL), omp_get_max_threads());
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->upload = cpu_copy;
    be->download = cpu_copy;
    be->copy = cpu_copy;
    be->zero = cpu_zero;
    be->weight_create = cpu_weight_create;
    be->weight_destroy = cpu_weight_destroy;
    be->upload_act = cpu_copy_act;
    be->download_act = cpu_copy_act_back;
    be->destroy = cpu_destroy;
    be->reserve = cpu_reserve;
    be->linear_fwd = cpu_linear_fwd;
    be->linear_bwd = cpu_linear_bwd;
    be->lora_fwd = cpu_lora_fwd;
    be->lora_bwd = cpu_lora_bwd;
    be->add = cpu_add;
    be->scale_rows = cpu_scale_rows;
    be->row_sq_norms = cpu_row_sq_norms;
    be->scale_cols = cpu_scale_cols;
    be->dropout = cpu_dropout;
    be->col_dot = cpu_col_dot;
    be->rmsnorm_fwd = cpu_rmsnorm_fwd;
    be->rmsnorm_bwd = cpu_rmsnorm_bwd;
    be->rope_fwd = cpu_rope_fwd;
    be->rope_bwd = cpu_rope_bwd;
    be->attention_fwd = cpu_attention_fwd;
    be->attention_paged_fwd = cpu_attention_paged_fwd;
    be->attention_bwd = cpu_attention_bwd;
    be->swiglu_fwd = cpu_swiglu_fwd;
    be->swiglu_bwd = cpu_swiglu_bwd;
    be->gather_rows = cpu_gather_rows;
    be->scatter_rows = cpu_scatter_rows;
    be->embedding_fwd = cpu_embedding_fwd;
    be->embedding_bwd = cpu_embedding_bwd;
    be->xent = cpu_xent;
    be->sum_squares = cpu_sum_squares;
    be->adamw = cpu_adamw;
    return be;
}

void zk_cpu_versions(FILE *out) {
    fprintf(out, "oneDNN %s (ISA %s)\n%s (core %s)\nkernel levels:", cpu_dnnl_version(), cpu_dnnl_isa(NULL),
            openblas_get_config(), openblas_get_corename());
    for (int v = 0; v < CPU_ISA_COUNT; v++)
        if (cpu_isa_on_this_arch((cpu_isa)v) && cpu_isa_supported((cpu_isa)v)) fprintf(out, " %s", cpu_isa_name((cpu_isa)v));
    fprintf(out, " (this CPU); in use: %s%s\n", zk_cpu_kernels_name(),
            getenv("ZEN_CPU_ISA") && *getenv("ZEN_CPU_ISA") ? " (capped by ZEN_CPU_ISA)" : "");
}

void zk_cpu_describe(FILE *out) {
    const char *cap = getenv("ZEN_CPU_ISA");
    for (int v = 0; v < CPU_ISA_COUNT; v++)
        if (cpu_isa_on_this_arch((cpu_isa)v))
            fprintf(out, "kernel level %-10s %s\n", cpu_isa_name((cpu_isa)v),
                    cpu_isa_supported((cpu_isa)v) ? "supported" : "not supported by this CPU");
    fprintf(out, "kernels in use: %s (%s)\n", zk_cpu_kernels_name(),
            cap && *cap ? "capped by ZEN_CPU_ISA" : "the best this CPU supports");
    int native;
    const char *isa = cpu_dnnl_isa(&native);
    const char *why;
    zen_dtype dt = zk_cpu_auto_compute(&why);
    fprintf(out, "OpenBLAS core: %s\noneDNN ISA: %s\n--dtype auto: %s (%s)\nthreads: %d\n", openblas_get_corename(),
            isa, dt == ZEN_BF16 ? "bf16" : "f32", why, omp_get_max_threads());
}
