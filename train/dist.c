/* train/dist.c: ranks over MPI and the fixed-order sums across them (see dist.h). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef ZEN_HAVE_MPI
#include <mpi.h>
#endif

#include "../kernels/tree_sum.h"
#include "../util/error.h"
#include "dist.h"

static zen_dist world = {0, 1, 0, 0};
static char agreed[1600]; /* the last error every rank agreed on */

const zen_dist *zen_dist_get(void) { return &world; }

const zen_ranks *zen_dist_ranks(void) {
    static zen_ranks r;
    r.rank = world.rank;
    r.size = world.size;
    r.agree = zen_dist_agree;
    r.merge_f64 = zen_dist_merge_f64;
    r.bcast = zen_dist_bcast;
    return &r;
}

int zen_dist_error_is_shared(void) { return agreed[0] && !strcmp(agreed, zen_last_error()); }

double zen_tree_sum_f64(const double *v, size_t first, size_t stride, size_t n) {
    if (n == 0) return 0.0;
    if (n == 1) return v[first];
    return zen_tree_sum_f64(v, first, 2 * stride, (n + 1) / 2) + zen_tree_sum_f64(v, first + stride, 2 * stride, n / 2);
}

/* the number of ranks a launcher says it started, 0 when none did */
static long launcher_size(const char **which) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS", NULL};
    for (int i = 0; vars[i]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) {
            *which = vars[i];
            return atol(v);
        }
    }
    /* Open MPI 5 / PRRTE and srun --mpi=pmix set only the rank */
    if (getenv("PMIX_RANK")) {
        *which = "PMIX_RANK";
        return 2;
    }
    return 0;
}

#ifdef ZEN_HAVE_MPI

int zen_dist_init(int *argc, char ***argv) {
    const char *which = NULL;
    long n = launcher_size(&which);
    /* srun of a single task (or plain zen) stays a single process without MPI */
    if (n <= 1 && (!which || strcmp(which, "OMPI_COMM_WORLD_SIZE"))) return 0;
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return zen_fail(ZEN_ERR_INTERNAL, "MPI_Init failed (started by a launcher: %s)", which);
    /* errors come back as codes, and the caller aborts the job */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &world.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world.size);
    MPI_Comm local;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world.rank, MPI_INFO_NULL, &local) == MPI_SUCCESS) {
        MPI_Comm_rank(local, &world.local_rank);
        MPI_Comm_free(&local);
    }
    world.mpi = 1;
    return 0;
}

int zen_dist_finish(int rc) {
    if (!world.mpi) return rc;
    /* (128 + signal: every rank stopped after the same step, agreed) */
    if (rc && rc < 128 && !zen_dist_error_is_shared() && world.size > 1) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, rc); /* the others may be waiting for this rank */
    }
    MPI_Finalize();
    world.mpi = 0;
    return rc;
}

/* a collective that failed (a rank died): nothing can be agreed any more */
static void check(int mpi_rc, const char *what) {
    if (mpi_rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(mpi_rc, msg, &len);
    fprintf(stderr, "zen: rank %d: %s failed: %.*s; ending every rank\n", world.rank, what, len, msg);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, ZEN_ERR_INTERNAL);
}

int zen_dist_agree(int rc) {
    if (world.size == 1) return rc;
    /* the lowest failing rank (size when none failed), and whether all failed */
    int mine[2] = {rc ? world.rank : world.size, rc ? 1 : 0}, got[2];
    check(MPI_Allreduce(mine, got, 2, MPI_INT, MPI_MIN, MPI_COMM_WORLD), "MPI_Allreduce (status)");
    int first = got[0], all_failed = got[1];
    if (first == world.size) return 0;
    struct { int code; char msg[sizeof agreed]; } failure;
    memset(&failure, 0, sizeof failure);
    if (world.rank == first) { /* named by its rank when the others did not fail */
        failure.code = rc;
        if (zen_dist_error_is_shared() || all_failed) snprintf(failure.msg, sizeof failure.msg, "%s", zen_last_error());
        else snprintf(failure.msg, sizeof failure.msg, "rank %d: %s", first, zen_last_error());
    }
    check(MPI_Bcast(&failure, (int)sizeof failure, MPI_BYTE, first, MPI_COMM_WORLD), "MPI_Bcast (status)");
    zen_fail(failure.code, "%s", failure.msg);
    snprintf(agreed, sizeof agreed, "%s", zen_last_error());
    return failure.code;
}

int zen_dist_settle(int rc) {
    if (world.size == 1 || (rc && zen_dist_error_is_shared())) return rc;
    return zen_dist_agree(rc);
}

int zen_dist_max(int value) {
    if (world.size == 1) return value;
    int max;
    check(MPI_Allreduce(&value, &max, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce (max)");
    return max;
}

void zen_dist_sum_i64(int64_t *v, int n) {
    if (world.size == 1) return;
    check(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce (counts)");
}

/* MPI counts are ints: large buffers go in pieces */
#define CHUNK ((size_t)1 << 28)

void zen_dist_merge_f64(double *v, size_t n) {
    if (world.size == 1) return;
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t m = n - i < CHUNK ? n - i : CHUNK;
        check(MPI_Allreduce(MPI_IN_PLACE, v + i, (int)m, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce (sums)");
    }
}

void zen_dist_bcast(void *buf, size_t bytes) {
    if (world.size == 1) return;
    for (size_t i = 0; i < bytes; i += CHUNK) {
        size_t m = bytes - i < CHUNK ? bytes - i : CHUNK;
        check(MPI_Bcast((char *)buf + i, (int)m, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast");
    }
}

static void exchange_f32(const float *send, size_t send_n, float *recv, size_t recv_n, int partner) {
    for (size_t i = 0; i < send_n || i < recv_n; i += CHUNK) {
        int s = (int)(i < send_n ? (send_n - i < CHUNK ? send_n - i : CHUNK) : 0);
        int r = (int)(i < recv_n ? (recv_n - i < CHUNK ? recv_n - i : CHUNK) : 0);
        check(MPI_Sendrecv(send + (i < send_n ? i : 0), s, MPI_FLOAT, partner, 17, recv + (i < recv_n ? i : 0), r,
                           MPI_FLOAT, partner, 17, MPI_COMM_WORLD, MPI_STATUS_IGNORE),
              "MPI_Sendrecv (gradients)");
    }
}

void zen_dist_tree_sum_f32(float *v, size_t n, float *recv) {
    if (world.size == 1) return;
    zk_tree_level levels[ZK_TREE_MAX_LEVELS];
    int count = zk_tree_sum_plan(world.rank, world.size, n, levels);
    for (int l = 0; l < count; l++) { /* halving: sum the kept half */
        const zk_tree_level *t = &levels[l];
        exchange_f32(v + t->send_lo, t->send_hi - t->send_lo, recv, t->keep_hi - t->keep_lo, t->partner);
        for (size_t i = 0; i < t->keep_hi - t->keep_lo; i++) v[t->keep_lo + i] += recv[i];
    }
    for (int l = count - 1; l >= 0; l--) { /* doubling: swap the finished halves */
        const zk_tree_level *t = &levels[l];
        exchange_f32(v + t->keep_lo, t->keep_hi - t->keep_lo, v + t->send_lo, t->send_hi - t->send_lo, t->partner);
    }
}

double zen_dist_tree_sum_f64(double local) {
    if (world.size == 1) return local;
    double *all = malloc((size_t)world.size * sizeof(double));
    if (!all) {
        fprintf(stderr, "zen: rank %d: out of memory\n", world.rank);
        MPI_Abort(MPI_COMM_WORLD, ZEN_ERR_INTERNAL);
    }
    check(MPI_Allgather(&local, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, MPI_COMM_WORLD), "MPI_Allgather (loss)");
    double sum = zen_tree_sum_f64(all, 0, 1, (size_t)world.size);
    free(all);
    return sum;
}

#else /* no MPI in this build: one rank */

int zen_dist_init(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *which = NULL;
    long n = launcher_size(&which);
    if (n > 1)
        return zen_fail(ZEN_ERR_INPUT, "started as one of %ld ranks (%s) but this zen was built without MPI: install "
                        "libopenmpi-dev and rebuild (scripts/setup), or run one process", n, which);
    return 0;
}

int zen_dist_finish(int rc) { return rc; }
int zen_dist_agree(int rc) { return rc; }
int zen_dist_settle(int rc) { return rc; }
int zen_dist_max(int value) { return value; }
void zen_dist_sum_i64(int64_t *v, int n) { (void)v, (void)n; }
void zen_dist_merge_f64(double *v, size_t n) { (void)v, (void)n; }
void zen_dist_tree_sum_f32(float *v, size_t n, float *scratch) { (void)v, (void)n, (void)scratch; }
double zen_dist_tree_sum_f64(double local) { return local; }
void zen_dist_bcast(void *buf, size_t bytes) { (void)buf, (void)bytes; }

#endif
