/* kernels/cuda/comm_cuda.cu: sums of fp32 gradients across data-parallel
 * ranks with NCCL, GPU to GPU: ncclSend / ncclRecv in the pairs of
 * kernels/tree_sum.h (recursive halving, then doubling), and an add kernel
 * for the halves received. Every element is added in the same pairs as the
 * host path (train/dist.c) adds it, so a run gives the same numbers over
 * NCCL as over MPI, and as one process (ncclAllReduce's ring or tree order
 * would not). Built only when the CUDA toolkit has NCCL (ZEN_HAVE_NCCL). */
#include <nccl.h>

#include "cuda_common.cuh"
extern "C" {
#include "../tree_sum.h" /* C linkage: zk_tree_sum_plan is the executable's (a C++ name would not resolve) */
}

static int nccl_ok(zk_backend *be, ncclResult_t r, const char *what) {
    if (r == ncclSuccess) return 1;
    zk_set_failed(be, ZEN_ERR_INTERNAL, "NCCL error: %s (%s)", ncclGetErrorString(r), what);
    return 0;
}

static int cu_comm_make_id(zk_backend *be, void *id) {
    static_assert(sizeof(ncclUniqueId) <= ZK_COMM_ID_BYTES, "ZK_COMM_ID_BYTES holds an ncclUniqueId");
    ncclUniqueId u;
    if (!nccl_ok(be, ncclGetUniqueId(&u), "ncclGetUniqueId")) return zk_status(be);
    memcpy(id, &u, sizeof u);
    return 0;
}

static int cu_comm_join(zk_backend *be, const void *id, int rank, int size, size_t max_n) {
    cuda_ctx *c = ctx_of(be);
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclComm_t comm;
    if (!nccl_ok(be, ncclCommInitRank(&comm, size, u, rank), "ncclCommInitRank")) return zk_status(be);
    c->comm = comm;
    c->comm_scratch = (float *)cuda_alloc_op(be, (max_n / 2 + 1) * sizeof(float));
    return zk_status(be);
}

__global__ static void accumulate_kernel(float *y, const float *x, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += x[i];
}

static int cu_comm_tree_sum(zk_backend *be, float *v, size_t n) {
    cuda_ctx *c = ctx_of(be);
    ncclComm_t comm = (ncclComm_t)c->comm;
    int rank, size;
    if (!nccl_ok(be, ncclCommUserRank(comm, &rank), "ncclCommUserRank") ||
        !nccl_ok(be, ncclCommCount(comm, &size), "ncclCommCount"))
        return zk_status(be);
    zk_tree_level levels[ZK_TREE_MAX_LEVELS];
    int count = zk_tree_sum_plan(rank, size, n, levels);
    for (int l = 0; l < count && !be->status; l++) { /* halving: sum the kept half */
        const zk_tree_level *t = &levels[l];
        size_t keep = t->keep_hi - t->keep_lo, send = t->send_hi - t->send_lo;
        nccl_ok(be, ncclGroupStart(), "ncclGroupStart");
        nccl_ok(be, ncclSend(v + t->send_lo, send, ncclFloat, t->partner, comm, 0), "ncclSend");
        nccl_ok(be, ncclRecv(c->comm_scratch, keep, ncclFloat, t->partner, comm, 0), "ncclRecv");
        nccl_ok(be, ncclGroupEnd(), "ncclGroupEnd");
        if (keep) accumulate_kernel<<<blocks_for(keep, 256), 256>>>(v + t->keep_lo, c->comm_scratch, keep);
        CUDA_CHECK(be, cudaGetLastError());
    }
    for (int l = count - 1; l >= 0 && !be->status; l--) { /* doubling: swap the finished halves */
        const zk_tree_level *t = &levels[l];
        nccl_ok(be, ncclGroupStart(), "ncclGroupStart");
        nccl_ok(be, ncclSend(v + t->keep_lo, t->keep_hi - t->keep_lo, ncclFloat, t->partner, comm, 0), "ncclSend");
        nccl_ok(be, ncclRecv(v + t->send_lo, t->send_hi - t->send_lo, ncclFloat, t->partner, comm, 0), "ncclRecv");
        nccl_ok(be, ncclGroupEnd(), "ncclGroupEnd");
    }
    CUDA_CHECK(be, cudaDeviceSynchronize());
    return zk_status(be);
}

void cu_comm_install(zk_backend *be) {
    be->comm_make_id = cu_comm_make_id;
    be->comm_join = cu_comm_join;
    be->comm_tree_sum = cu_comm_tree_sum;
}

void cu_comm_destroy(zk_backend *be) {
    cuda_ctx *c = ctx_of(be);
    if (c->comm) ncclCommDestroy((ncclComm_t)c->comm);
    c->comm = NULL;
    if (c->comm_scratch) cuda_free_tracked(be, c->comm_scratch);
    c->comm_scratch = NULL;
}
