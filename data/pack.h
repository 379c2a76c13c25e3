/* data/pack.h: `zen data --pack T`: documents laid out in windows of exactly
 * T tokens, so that training sequences hold whole documents.
 *
 * Best-fit decreasing: documents, longest first, each go into the open window
 * with the least room that still holds it (or a new one). So a document of at
 * most T tokens never straddles two windows. A longer document fills
 * consecutive windows from a window's start; its tail opens a window that
 * shorter documents then share. What is left of a window is padding: the pad
 * token with loss mask 0, one document of its own. One more pad token closes
 * the file, so W windows are exactly W sequences (inputs tokens[iT, iT+T),
 * targets one further). The order of the windows is shuffled with the seed;
 * ties between documents of one length are broken by it as well, so the file
 * is a function of (documents, T, seed).
 *
 * The documents are spilled to two unlinked temporary files beside the
 * output while the input is tokenized (memory stays bounded by the document
 * lengths: 8 bytes per document), then written in window order. */
#ifndef ZEN_PACK_H
#define ZEN_PACK_H
#include <stdint.h>
#include <stdio.h>

#include "token_writer.h"

/* Where each document goes: documents in output order, with the padding that
 * follows each (non-zero only at the end of a window). Empty documents are
 * left out (they hold no token). */
typedef struct {
    int64_t n_placed;     /* non-empty documents */
    int64_t *order;       /* [n_placed] document indices in output order */
    int64_t *pad_after;   /* [n_placed] pad tokens after order[i] */
    int64_t windows;      /* W: the file holds W * T + 1 tokens */
    int64_t pad_tokens;   /* sum of pad_after (the final pad token not included) */
    int64_t split_docs;   /* documents longer than T */
} zen_pack_layout;

/* The layout of documents of lengths[0..n) in windows of T (T >= 1). */
int zen_pack_plan(const int64_t *lengths, int64_t n, int64_t T, uint64_t seed, zen_pack_layout *out);
void zen_pack_layout_free(zen_pack_layout *l);

/* Collects documents as zen data tokenizes them, then writes them packed. */
typedef struct {
    int64_t T;
    uint64_t seed;
    FILE *tokens, *mask;      /* the spilled documents: int32 ids, uint8 mask */
    int64_t *lengths;         /* [n_docs] */
    int64_t n_docs, cap, current; /* documents ended, capacity, tokens of the one being added */
    int64_t n_tokens;
    char *where;              /* the spill files' directory, for errors */
} zen_packer;

typedef struct {
    int64_t windows, pad_tokens, split_docs, docs;
} zen_pack_stats;

/* Spill files are made (and unlinked at once) in the directory of out_path. */
int zen_packer_open(zen_packer *p, const char *out_path, int64_t T, uint64_t seed);
int zen_packer_append(zen_packer *p, const int32_t *ids, const uint8_t *mask, size_t n);
int zen_packer_end_doc(zen_packer *p);
/* Plans and writes every document into w (documents, padding of pad_id, the
 * closing pad token) and sets its packed_seq_len; w is closed by the caller. */
int zen_packer_finish(zen_packer *p, zen_token_writer *w, int32_t pad_id, zen_pack_stats *st);
void zen_packer_close(zen_packer *p); /* frees everything (the spill files vanish) */

#endif
