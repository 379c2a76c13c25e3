/* kernels/tree_sum.c: the recursive halving / doubling schedule (see tree_sum.h). */
#include "tree_sum.h"

int zk_tree_sum_plan(int rank, int size, size_t n, zk_tree_level *levels) {
    size_t lo = 0, hi = n;
    int count = 0;
    for (int mask = size / 2; mask >= 1 && count < ZK_TREE_MAX_LEVELS; mask /= 2, count++) {
        size_t mid = lo + (hi - lo) / 2;
        int upper = (rank & mask) != 0; /* the partner holds the other half */
        zk_tree_level *l = &levels[count];
        l->partner = rank ^ mask;
        l->keep_lo = upper ? mid : lo;
        l->keep_hi = upper ? hi : mid;
        l->send_lo = upper ? lo : mid;
        l->send_hi = upper ? mid : hi;
        lo = l->keep_lo;
        hi = l->keep_hi;
    }
    return count;
}
