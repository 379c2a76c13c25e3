/* train/dist.h: data-parallel ranks over MPI (mpirun, srun).
 *
 * One process per rank. zen train splits each step's micro-batches over the
 * ranks and sums their gradients so that N ranks compute exactly what one
 * process does with N x the accumulation. The order of that sum is fixed:
 *
 *   T(items i0, i0+s, i0+2s, ... : n of them) =
 *       T(i0, stride 2s, ceil(n/2) items) + T(i0+s, stride 2s, floor(n/2) items)
 *
 * a pairwise sum split by the lowest bit of the index. With N a power of two
 * and rank r holding items r, r+N, r+2N, ..., the top log2(N) levels of the
 * tree are exactly the sums across ranks; each rank sums its own items with
 * the same rule, and zen_dist_tree_sum_f32 combines the ranks' partial sums
 * in the tree's order (kernels/tree_sum.h: recursive halving, then recursive
 * doubling; every element is added in the same pairs on every rank, whatever
 * its position).
 *
 * Without MPI (a build without it, or a process not started by a launcher)
 * there is one rank and every call here is a no-op. */
#ifndef ZEN_DIST_H
#define ZEN_DIST_H
#include <stddef.h>
#include <stdint.h>

#include "../objectives/objective.h"

typedef struct {
    int rank, size;  /* this process's rank among size (0 of 1 alone) */
    int local_rank;  /* rank among the ranks on this machine: the GPU it uses */
    int mpi;         /* 1 when MPI was initialised (started by mpirun / srun) */
} zen_dist;

/* Starts MPI when the process was started by an MPI launcher (mpirun,
 * srun); one rank otherwise. An error when a launcher started several ranks
 * but this build has no MPI. */
int zen_dist_init(int *argc, char ***argv);
const zen_dist *zen_dist_get(void);
/* the collectives an objective may call (objectives/objective.h), on these ranks */
const zen_ranks *zen_dist_ranks(void);
/* Ends MPI: after an error that every rank agreed on (or none), a normal
 * finalize; after an error on this rank alone, MPI_Abort, so that the
 * other ranks end too instead of waiting for it. Returns rc. */
int zen_dist_finish(int rc);
/* 1 if the current error was agreed by every rank (zen_dist_agree): rank 0
 * reports it and the others stay silent. */
int zen_dist_error_is_shared(void);

/* Collective. Every rank passes its status; all return 0 if all are 0, else
 * the code of the lowest failing rank, with its message (prefixed by the
 * rank when there are several) as zen_last_error on every rank. */
int zen_dist_agree(int rc);
/* Collective, at the end of a command: zen_dist_agree(rc), except on a rank
 * whose error the others already agreed on (they are not waiting for it).
 * Every rank reaches it once, so no rank waits for another that has ended:
 * each block of collectives starts with zen_dist_agree, where a rank that
 * failed alone meets the others. */
int zen_dist_settle(int rc);
/* Collective: the largest of the ranks' values (a pending signal). */
int zen_dist_max(int value);
/* Collective: element-wise sums of integers (exact). */
void zen_dist_sum_i64(int64_t *v, int n);
/* Collective: element-wise sums of doubles where at most one rank holds a
 * non-zero in each element (exact: x + 0 = x), so every rank gets the values
 * the ranks computed apart. */
void zen_dist_merge_f64(double *v, size_t n);
/* Collective: v[n] becomes the sum over ranks in the tree order above (size a
 * power of two); scratch holds n / 2 + 1 floats. */
void zen_dist_tree_sum_f32(float *v, size_t n, float *scratch);
/* Collective: the sum over ranks of one double each, in the tree order. */
double zen_dist_tree_sum_f64(double local);
/* Collective: rank 0's bytes to every rank. */
void zen_dist_bcast(void *buf, size_t bytes);

/* The tree sum of v[first], v[first+stride], ... (n values) in the order above. */
double zen_tree_sum_f64(const double *v, size_t first, size_t stride, size_t n);

#endif
