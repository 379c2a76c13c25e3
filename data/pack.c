/* data/pack.c: best-fit-decreasing packing of documents into windows of T
 * tokens, and the spill files that hold the documents until they are placed
 * (see pack.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../util/error.h"
#include "../util/file.h"
#include "../util/rng.h"
#include "pack.h"

/* ---------------- the plan ---------------- */

typedef struct {
    int64_t len, rank, doc; /* rank: the document's place in a seeded shuffle, the tie-break */
} pack_item;

static int longest_first(const void *a, const void *b) {
    const pack_item *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* Open windows by the room they have left (1 .. T-1 tokens): a stack of
 * windows per room, and a segment tree of counts over rooms to find the
 * smallest room that holds a document in O(log T). */
typedef struct {
    int64_t size;   /* leaves: rooms 0 .. size-1, a power of two > T */
    int64_t *count; /* [2 * size] open windows with a room in each node's range */
    int64_t *head;  /* [size] the last window pushed with each room, -1 if none */
    int64_t *next;  /* [n bins] the window pushed before it with the same room */
} room_index;

static void room_add(room_index *ri, int64_t room, int64_t delta) {
    for (int64_t node = ri->size + room; node >= 1; node /= 2) ri->count[node] += delta;
}

static void room_push(room_index *ri, int64_t bin, int64_t room) {
    ri->next[bin] = ri->head[room];
    ri->head[room] = bin;
    room_add(ri, room, 1);
}

static int64_t room_pop(room_index *ri, int64_t room) {
    int64_t bin = ri->head[room];
    ri->head[room] = ri->next[bin];
    room_add(ri, room, -1);
    return bin;
}

/* the smallest room >= need with an open window in node's range [lo, hi), or -1 */
static int64_t room_find(const room_index *ri, int64_t node, int64_t lo, int64_t hi, int64_t need) {
    if (hi <= need || ri->count[node] == 0) return -1;
    if (hi - lo == 1) return lo;
    int64_t mid = (lo + hi) / 2, r = room_find(ri, 2 * node, lo, mid, need);
    return r >= 0 ? r : room_find(ri, 2 * node + 1, mid, hi, need);
}

void zen_pack_layout_free(zen_pack_layout *l) {
    free(l->order);
    free(l->pad_after);
    memset(l, 0, sizeof *l);
}

int zen_pack_plan(const int64_t *lengths, int64_t n, int64_t T, uint64_t seed, zen_pack_layout *out) {
    memset(out, 0, sizeof *out);
    if (T < 1 || n < 0) return zen_fail(ZEN_ERR_INPUT, "packing: seq_len %lld must be at least 1", (long long)T);
    int64_t m = 0; /* non-empty documents */
    for (int64_t i = 0; i < n; i++) m += lengths[i] > 0;
    size_t slots = (size_t)(m > 0 ? m : 1);
    room_index ri = {0};
    for (ri.size = 1; ri.size <= T; ri.size *= 2) {}
    pack_item *items = malloc(slots * sizeof *items);
    int64_t *shuffle = malloc(slots * sizeof(int64_t)), *item_next = malloc(slots * sizeof(int64_t));
    int64_t *bin_first = malloc(slots * sizeof(int64_t)), *bin_last = malloc(slots * sizeof(int64_t));
    int64_t *bin_room = malloc(slots * sizeof(int64_t)), *bin_windows = malloc(slots * sizeof(int64_t));
    ri.count = calloc(2 * (size_t)ri.size, sizeof(int64_t));
    ri.head = malloc((size_t)ri.size * sizeof(int64_t));
    ri.next = malloc(slots * sizeof(int64_t));
    out->order = malloc(slots * sizeof(int64_t));
    out->pad_after = malloc(slots * sizeof(int64_t));
    int rc = 0;
    if (!items || !shuffle || !item_next || !bin_first || !bin_last || !bin_room || !bin_windows || !ri.count ||
        !ri.head || !ri.next || !out->order || !out->pad_after) {
        rc = zen_fail(ZEN_ERR_INTERNAL, "packing %lld documents: out of memory", (long long)n);
        goto done;
    }
    for (int64_t r = 0; r < ri.size; r++) ri.head[r] = -1;

    /* longest first; documents of one length in a seeded order */
    zen_rng rng;
    zen_rng_seed(&rng, seed ^ 0x7061636b00000000ull); /* "pack" */
    for (int64_t i = 0; i < m; i++) shuffle[i] = i;
    zen_rng_shuffle(&rng, shuffle, m);
    for (int64_t i = 0, k = 0; i < n; i++)
        if (lengths[i] > 0) items[k] = (pack_item){lengths[i], shuffle[k], i}, k++;
    qsort(items, (size_t)m, sizeof *items, longest_first);

    /* best fit: each document into the open window with the least room that holds it */
    int64_t n_bins = 0;
    for (int64_t k = 0; k < m; k++) {
        int64_t len = items[k].len, bin = -1, room;
        item_next[k] = -1;
        if (len <= T && (room = room_find(&ri, 1, 0, ri.size, len)) >= 0) {
            bin = room_pop(&ri, room);
            item_next[bin_last[bin]] = k;
            bin_last[bin] = k;
            bin_room[bin] -= len;
        } else { /* a new window, or consecutive windows for a document longer than T */
            bin = n_bins++;
            bin_first[bin] = bin_last[bin] = k;
            bin_windows[bin] = (len + T - 1) / T;
            bin_room[bin] = bin_windows[bin] * T - len;
            out->split_docs += len > T;
        }
        if (bin_room[bin] > 0) room_push(&ri, bin, bin_room[bin]);
    }

    /* windows (a long document's run of them as one) in a seeded order */
    int64_t *bins = shuffle; /* reused: [n_bins] */
    for (int64_t b = 0; b < n_bins; b++) bins[b] = b;
    zen_rng_shuffle(&rng, bins, n_bins);
    int64_t at = 0;
    for (int64_t b = 0; b < n_bins; b++) {
        int64_t bin = bins[b];
        for (int64_t k = bin_first[bin]; k >= 0; k = item_next[k]) {
            out->order[at] = items[k].doc;
            out->pad_after[at++] = k == bin_last[bin] ? bin_room[bin] : 0;
        }
        out->windows += bin_windows[bin];
        out->pad_tokens += bin_room[bin];
    }
    out->n_placed = m;
done:
    free(items), free(shuffle), free(item_next), free(bin_first), free(bin_last), free(bin_room), free(bin_windows);
    free(ri.count), free(ri.head), free(ri.next);
    if (rc) zen_pack_layout_free(out);
    return rc;
}

/* ---------------- the spill and the packed file ---------------- */

/* a temporary file in dir, unlinked at once: it vanishes however the process ends */
static FILE *spill_file(const char *dir) {
    char *tmpl = zen_path_join(dir, ".zen-pack-XXXXXX");
    int fd = tmpl ? mkstemp(tmpl) : -1;
    FILE *f = NULL;
    if (fd >= 0) {
        unlink(tmpl);
        if (!(f = fdopen(fd, "w+b"))) close(fd);
    }
    free(tmpl);
    return f;
}

int zen_packer_open(zen_packer *p, const char *out_path, int64_t T, uint64_t seed) {
    memset(p, 0, sizeof *p);
    p->T = T;
    p->seed = seed;
    const char *slash = strrchr(out_path, '/');
    p->where = !slash ? strdup(".") : slash == out_path ? strdup("/") : strndup(out_path, (size_t)(slash - out_path));
    if (!p->where) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    p->tokens = spill_file(p->where);
    p->mask = p->tokens ? spill_file(p->where) : NULL;
    if (!p->mask) {
        int rc = zen_fail(ZEN_ERR_INPUT, "%s: cannot create the temporary files of --pack: %s", p->where, strerror(errno));
        zen_packer_close(p);
        return rc;
    }
    return 0;
}

static int spill_error(const zen_packer *p) {
    return zen_fail(ZEN_ERR_INTERNAL, "%s: writing the temporary files of --pack failed: %s", p->where,
                    errno ? strerror(errno) : "disk full?");
}

int zen_packer_append(zen_packer *p, const int32_t *ids, const uint8_t *mask, size_t n) {
    errno = 0;
    if (fwrite(ids, sizeof(int32_t), n, p->tokens) != n || fwrite(mask, 1, n, p->mask) != n) return spill_error(p);
    p->current += (int64_t)n;
    p->n_tokens += (int64_t)n;
    return 0;
}

int zen_packer_end_doc(zen_packer *p) {
    if (p->n_docs == p->cap) {
        int64_t cap = p->cap ? 2 * p->cap : 1024;
        int64_t *l = realloc(p->lengths, (size_t)cap * sizeof(int64_t));
        if (!l) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
        p->lengths = l;
        p->cap = cap;
    }
    p->lengths[p->n_docs++] = p->current;
    p->current = 0;
    return 0;
}

/* n pad tokens (mask 0) as one document */
static int write_padding(zen_token_writer *w, int32_t pad_id, int64_t n) {
    enum { PIECE = 4096 };
    int32_t ids[PIECE];
    uint8_t mask[PIECE] = {0};
    for (int i = 0; i < PIECE; i++) ids[i] = pad_id;
    int rc = 0;
    for (int64_t left = n; !rc && left > 0; left -= PIECE)
        rc = zen_token_writer_append(w, ids, mask, (size_t)(left < PIECE ? left : PIECE));
    return rc ? rc : zen_token_writer_end_doc(w);
}

int zen_packer_finish(zen_packer *p, zen_token_writer *w, int32_t pad_id, zen_pack_stats *st) {
    memset(st, 0, sizeof *st);
    errno = 0;
    if (fflush(p->tokens) || fflush(p->mask) || ferror(p->tokens) || ferror(p->mask)) return spill_error(p);
    zen_pack_layout l;
    int rc = zen_pack_plan(p->lengths, p->n_docs, p->T, p->seed, &l);
    if (rc) return rc;
    size_t n = (size_t)p->n_tokens;
    const int32_t *ids = NULL;
    const uint8_t *mask = NULL;
    int64_t *starts = malloc((size_t)(p->n_docs + 1) * sizeof(int64_t)); /* [n_docs + 1] each document's first token */
    if (!starts) rc = zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    if (!rc && n) {
        void *a = mmap(NULL, n * sizeof(int32_t), PROT_READ, MAP_PRIVATE, fileno(p->tokens), 0);
        void *b = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fileno(p->mask), 0);
        if (a == MAP_FAILED || b == MAP_FAILED) {
            rc = zen_fail(ZEN_ERR_INTERNAL, "%s: cannot map the temporary files of --pack: %s", p->where, strerror(errno));
            if (a != MAP_FAILED) munmap(a, n * sizeof(int32_t));
            if (b != MAP_FAILED) munmap(b, n);
        } else {
            ids = a, mask = b;
        }
    }
    if (!rc) {
        starts[0] = 0;
        for (int64_t d = 0; d < p->n_docs; d++) starts[d + 1] = starts[d] + p->lengths[d];
    }
    for (int64_t i = 0; !rc && i < l.n_placed; i++) {
        int64_t d = l.order[i];
        rc = zen_token_writer_add(w, ids + starts[d], mask + starts[d], (size_t)p->lengths[d]);
        if (!rc && l.pad_after[i]) rc = write_padding(w, pad_id, l.pad_after[i]);
    }
    if (!rc) rc = write_padding(w, pad_id, 1); /* the last window's last target */
    if (!rc) {
        w->packed_seq_len = p->T;
        *st = (zen_pack_stats){l.windows, l.pad_tokens, l.split_docs, l.n_placed};
    }
    if (ids) munmap((void *)ids, n * sizeof(int32_t));
    if (mask) munmap((void *)mask, n);
    free(starts);
    zen_pack_layout_free(&l);
    return rc;
}

void zen_packer_close(zen_packer *p) {
    if (p->tokens) fclose(p->tokens);
    if (p->mask) fclose(p->mask);
    free(p->lengths);
    free(p->where);
    memset(p, 0, sizeof *p);
}
