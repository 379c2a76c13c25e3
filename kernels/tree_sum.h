/* kernels/tree_sum.h: the exchange schedule of a sum across ranks that adds
 * every element in the same pairs on every rank (recursive halving, then
 * recursive doubling; size a power of two).
 *
 * Level l (l = 0 .. log2(size) - 1) pairs rank r with r ^ (size >> (l + 1)).
 * Both hold the same segment of the vector; r keeps one half, sends the other
 * and adds the partner's copy of the kept half: after level l the kept
 * segment holds the sum over the ranks equal to r modulo size >> (l + 1).
 * That is a pairwise sum over ranks split by the lowest bit of the rank, the
 * same tree at every element. Then the levels in reverse gather the finished
 * segments: at level l, r sends its kept segment and receives the partner's
 * (its own sent segment) in place. Each rank sends and receives
 * 2 (size - 1) / size of the vector. */
#ifndef ZK_TREE_SUM_H
#define ZK_TREE_SUM_H
#include <stddef.h>

#define ZK_TREE_MAX_LEVELS 31

typedef struct {
    int partner;
    size_t keep_lo, keep_hi; /* [keep_lo, keep_hi): summed here at this level */
    size_t send_lo, send_hi; /* [send_lo, send_hi): sent to the partner, which sums it */
} zk_tree_level;

/* The levels of rank of size (a power of two <= 2^31) over n elements into
 * levels[ZK_TREE_MAX_LEVELS]; returns their number, log2(size). */
int zk_tree_sum_plan(int rank, int size, size_t n, zk_tree_level *levels);

#endif
