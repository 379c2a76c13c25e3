/* model/kv_pages.h: the KV cache of generation as pages. A pool holds
 * pages of page_rows positions, keys and values of every layer; a sequence
 * is a list of pages (its page table), position j in row j % page_rows of
 * page pages[j / page_rows]. Sequences share pages: the samples of one
 * prompt fork its sequence and read the prompt's keys and values where one
 * prefill stored them. A page shared by several sequences is never written:
 * a sequence that grows into one (the prompt's last, partly filled page)
 * takes a copy first (copy on write), so each sample's own positions are its
 * own. Pages are taken as sequences grow and given back when the last
 * sequence holding them lets go. */
#ifndef ZEN_KV_PAGES_H
#define ZEN_KV_PAGES_H
#include <stddef.h>
#include <stdint.h>

#include "../kernels/kernels.h"
#include "config.h"

typedef struct {
    zk_backend *be;
    int layers;
    size_t page_rows;       /* positions per page */
    size_t pages;           /* pages in the pool */
    size_t row_bytes;       /* one position's keys (or values) of one layer: nkv * hd * zk_cache_bytes */
    size_t layer_bytes;     /* one layer's pages: pages * page_rows * row_bytes */
    void *k, *v;            /* device [layers][pages][page_rows][nkv * hd] each */
    int32_t *free_list;     /* [pages] host: the free pages, n_free of them */
    size_t n_free, peak_used;
    int32_t *refs;          /* [pages] host: sequences holding each page */
} zen_kv_pages;

typedef struct {
    int32_t *pages;         /* [cap] host: the page table, n_pages used */
    size_t n_pages, cap;
    size_t len;             /* positions stored */
} zen_kv_seq;

/* bytes of one page: keys and values of page_rows positions in every layer */
size_t zen_kv_page_bytes(const zk_backend *be, const zen_config *cfg, size_t page_rows);
/* the same for a backend computing in `compute` (a plan, before any backend opens) */
size_t zen_kv_page_bytes_for(const zen_config *cfg, size_t page_rows, zen_dtype compute);
/* pages that positions [0, len) fill */
static inline size_t zen_kv_pages_for(size_t len, size_t page_rows) { return (len + page_rows - 1) / page_rows; }

int zen_kv_pages_create(zen_kv_pages *p, zk_backend *be, const zen_config *cfg, size_t pages, size_t page_rows);
void zen_kv_pages_free(zen_kv_pages *p);

/* Makes room for positions seq->len .. len - 1: the pages they reach, each
 * taken from the pool, and a shared page holding position seq->len copied
 * first. Fails (the pool empty) with a message. seq->len is not moved: the
 * forward that stores the rows moves it. */
int zen_kv_seq_grow(zen_kv_pages *p, zen_kv_seq *seq, size_t len);
/* child = parent's positions, its pages shared (child must be empty) */
int zen_kv_seq_fork(zen_kv_pages *p, zen_kv_seq *child, const zen_kv_seq *parent);
/* lets go of every page (those no other sequence holds go back to the pool); seq is empty after */
void zen_kv_seq_release(zen_kv_pages *p, zen_kv_seq *seq);
void zen_kv_seq_free(zen_kv_seq *seq); /* its table's memory (after release) */

#endif
