/* kernels/cpu/backend_cpu.c: the CPU backend: host memory, weights aliased in
 * place (no copy of a memory-mapped model), scratch reserved up front, and the
 * table of CPU operations. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../../util/error.h"
#include "cpu_ops.h"

static void *cpu_alloc(zk_backend *be, size_t bytes) {
    (void)be;
    /* 64-byte alignment for vector loads; round size up as aligned_alloc requires */
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) zen_fail(ZEN_ERR_INTERNAL, "out of memory allocating %zu bytes on cpu", bytes);
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
    (void)be;
    (void)numel;
    out->data = host;
    out->dtype = dtype;
    return 0;
}

static void cpu_weight_destroy(zk_backend *be, zk_weight *w) {
    (void)be;
    w->data = NULL;
}

static void cpu_copy_act(zk_backend *be, void *dst, const float *src, size_t count) {
    cpu_copy(be, dst, src, count * sizeof(float));
}

static void cpu_copy_act_back(zk_backend *be, float *dst, const void *src, size_t count) {
    cpu_copy(be, dst, src, count * sizeof(float));
}

float *cpu_scratch(zk_backend *be, int slot, size_t elems) {
    static const char *const names[] = {"widened weight", "LoRA dropout input", "LoRA dropout gradient",
                                        "attention tiles"};
    cpu_ctx *ctx = be->ctx;
    if (be->status) return NULL; /* a failed step does no more work */
    int injected = zk_fault_hit("ZEN_FAULT_SCRATCH");
    if (elems > ctx->scratch_capacity[slot] || injected) {
        free(ctx->scratch[slot]);
        ctx->scratch[slot] = injected ? NULL : malloc(elems * sizeof(float));
        ctx->scratch_capacity[slot] = ctx->scratch[slot] ? elems : 0;
        if (!ctx->scratch[slot]) {
            zk_set_failed(be, ZEN_ERR_INTERNAL, "out of memory allocating %zu bytes of %s scratch on cpu%s",
                          elems * sizeof(float), names[slot], injected ? " (injected by ZEN_FAULT_SCRATCH)" : "");
            return NULL;
        }
    }
    return ctx->scratch[slot];
}

void cpu_scratch_sizes(const zk_reserve_plan *p, size_t elems[4], size_t *rope_elems) {
    size_t widen = p->widest_in > CPU_WIDEN_CHUNK_ELEMS ? p->widest_in : CPU_WIDEN_CHUNK_ELEMS;
    elems[CPU_SCRATCH_WIDEN] = p->widen_elems < widen ? p->widen_elems : widen;
    elems[CPU_SCRATCH_DROP_X] = elems[CPU_SCRATCH_DROP_DX] = p->lora_r && p->lora_dropout ? p->N * p->widest_in : 0;
    elems[CPU_SCRATCH_ATTN] = (size_t)omp_get_max_threads() * 2 * CPU_ATTN_TILE * p->T;
    *rope_elems = 2 * p->T * (p->head_dim / 2);
}

int cpu_reserve(zk_backend *be, const zk_reserve_plan *p) {
    size_t elems[4], rope;
    cpu_scratch_sizes(p, elems, &rope);
    for (int slot = 0; slot < 4; slot++)
        if (elems[slot]) cpu_scratch(be, slot, elems[slot]);
    const float *c, *s;
    if (p->T && p->head_dim) cpu_rope_tables(be, p->T, p->head_dim, p->rope_theta, &c, &s);
    return zk_status(be);
}

static void cpu_destroy(zk_backend *be) {
    cpu_ctx *ctx = be->ctx;
    for (int i = 0; i < 4; i++) free(ctx->scratch[i]);
    free(ctx->rope_cos);
    free(ctx->rope_sin);
    free(ctx);
    free(be);
}

zk_backend *zk_cpu_create(void) {
    zk_backend *be = zen_calloc(1, sizeof *be);
    cpu_ctx *ctx = zen_calloc(1, sizeof *ctx);
    if (!be || !ctx) {
        free(be);
        free(ctx);
        return NULL;
    }
    be->name = "cpu";
    be->act_bytes = sizeof(float);
    be->compute = ZEN_F32;
    be->ctx = ctx;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->upload = cpu_copy;
    be->download = cpu_copy;
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
    be->rmsnorm_fwd = cpu_rmsnorm_fwd;
    be->rmsnorm_bwd = cpu_rmsnorm_bwd;
    be->rope_fwd = cpu_rope_fwd;
    be->rope_bwd = cpu_rope_bwd;
    be->attention_fwd = cpu_attention_fwd;
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
