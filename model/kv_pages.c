/* model/kv_pages.c: the paged KV cache of generation (see kv_pages.h). */
#include <stdlib.h>
#include <string.h>

#include "../util/error.h"
#include "kv_pages.h"

size_t zen_kv_page_bytes_for(const zen_config *cfg, size_t page_rows, zen_dtype compute) {
    return 2 * (size_t)cfg->layers * page_rows * (size_t)cfg->kv_heads * (size_t)cfg->head_dim *
           zen_dtype_bytes(compute, 1);
}

size_t zen_kv_page_bytes(const zk_backend *be, const zen_config *cfg, size_t page_rows) {
    return zen_kv_page_bytes_for(cfg, page_rows, be->compute); /* zk_cache_bytes */
}

int zen_kv_pages_create(zen_kv_pages *p, zk_backend *be, const zen_config *cfg, size_t pages, size_t page_rows) {
    memset(p, 0, sizeof *p);
    if (pages < 1 || page_rows < 1 || pages > INT32_MAX)
        return zen_fail(ZEN_ERR_INPUT, "a KV cache of %zu pages of %zu positions", pages, page_rows);
    p->be = be, p->layers = cfg->layers, p->page_rows = page_rows, p->pages = pages;
    p->row_bytes = (size_t)cfg->kv_heads * (size_t)cfg->head_dim * zk_cache_bytes(be);
    p->layer_bytes = pages * page_rows * p->row_bytes;
    p->free_list = zen_malloc(pages * sizeof(int32_t));
    p->refs = zen_calloc(pages, sizeof(int32_t));
    if (!p->free_list || !p->refs || !(p->k = be->alloc(be, (size_t)p->layers * p->layer_bytes)) ||
        !(p->v = be->alloc(be, (size_t)p->layers * p->layer_bytes))) {
        zen_kv_pages_free(p);
        return ZEN_ERR_INTERNAL;
    }
    for (size_t i = 0; i < pages; i++) p->free_list[i] = (int32_t)(pages - 1 - i); /* page 0 taken first */
    p->n_free = pages;
    return 0;
}

void zen_kv_pages_free(zen_kv_pages *p) {
    if (p->be) {
        if (p->k) p->be->free(p->be, p->k);
        if (p->v) p->be->free(p->be, p->v);
    }
    free(p->free_list);
    free(p->refs);
    memset(p, 0, sizeof *p);
}

static int take_page(zen_kv_pages *p, int32_t *page) {
    if (!p->n_free)
        return zen_fail(ZEN_ERR_INPUT, "the KV cache's %zu pages of %zu positions are all in use", p->pages,
                        p->page_rows);
    *page = p->free_list[--p->n_free];
    p->refs[*page] = 1;
    if (p->pages - p->n_free > p->peak_used) p->peak_used = p->pages - p->n_free;
    return 0;
}

static void drop_page(zen_kv_pages *p, int32_t page) {
    if (--p->refs[page] == 0) p->free_list[p->n_free++] = page;
}

static int table_room(zen_kv_seq *seq, size_t n) {
    if (n <= seq->cap) return 0;
    size_t cap = seq->cap ? seq->cap : 4;
    while (cap < n) cap *= 2;
    int32_t *more = realloc(seq->pages, cap * sizeof(int32_t));
    if (!more) return zen_fail(ZEN_ERR_INTERNAL, "out of memory (a page table)");
    seq->pages = more, seq->cap = cap;
    return 0;
}

/* page `to` gets the first `rows` positions of page `from`, keys and values of every layer */
static void copy_rows(zen_kv_pages *p, int32_t to, int32_t from, size_t rows) {
    size_t page_bytes = p->page_rows * p->row_bytes;
    for (int l = 0; l < p->layers; l++) {
        size_t base = (size_t)l * p->layer_bytes;
        p->be->copy(p->be, (char *)p->k + base + (size_t)to * page_bytes, (char *)p->k + base + (size_t)from * page_bytes,
                    rows * p->row_bytes);
        p->be->copy(p->be, (char *)p->v + base + (size_t)to * page_bytes, (char *)p->v + base + (size_t)from * page_bytes,
                    rows * p->row_bytes);
    }
}

int zen_kv_seq_grow(zen_kv_pages *p, zen_kv_seq *seq, size_t len) {
    if (len <= seq->len) return 0;
    size_t need = zen_kv_pages_for(len, p->page_rows), R = p->page_rows;
    int rc = table_room(seq, need);
    /* the page that holds position len, partly filled and shared: this sequence's own copy */
    if (!rc && seq->len % R && seq->n_pages > seq->len / R && p->refs[seq->pages[seq->len / R]] > 1) {
        int32_t own = -1, shared = seq->pages[seq->len / R];
        if (!(rc = take_page(p, &own))) {
            copy_rows(p, own, shared, seq->len % R);
            drop_page(p, shared);
            seq->pages[seq->len / R] = own;
        }
    }
    while (!rc && seq->n_pages < need) {
        int32_t page = -1;
        if (!(rc = take_page(p, &page))) seq->pages[seq->n_pages++] = page;
    }
    return rc;
}

int zen_kv_seq_fork(zen_kv_pages *p, zen_kv_seq *child, const zen_kv_seq *parent) {
    int rc = table_room(child, parent->n_pages);
    if (rc) return rc;
    for (size_t i = 0; i < parent->n_pages; i++) {
        child->pages[i] = parent->pages[i];
        p->refs[parent->pages[i]]++;
    }
    child->n_pages = parent->n_pages, child->len = parent->len;
    return 0;
}

void zen_kv_seq_release(zen_kv_pages *p, zen_kv_seq *seq) {
    for (size_t i = 0; i < seq->n_pages; i++) drop_page(p, seq->pages[i]);
    seq->n_pages = 0, seq->len = 0;
}

void zen_kv_seq_free(zen_kv_seq *seq) {
    free(seq->pages);
    memset(seq, 0, sizeof *seq);
}
