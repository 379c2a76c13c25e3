/* data/pairs.c: reading preference pairs (see pairs.h). */
#include <stdlib.h>

#include "../util/error.h"
#include "pairs.h"

int64_t zen_pairs_count(const zen_dataset *d) { return d->records == ZEN_RECORDS_PREFERENCE ? d->n_records : 0; }

zen_pair_lengths zen_pair_lengths_of(const zen_dataset *d, int64_t pair) {
    const int64_t *o = d->offsets + 3 * pair;
    zen_pair_lengths l = {(size_t)(o[1] - o[0]), (size_t)(o[2] - o[1]), (size_t)(o[3] - o[2])};
    return l;
}

int zen_pairs_check(const zen_dataset *d, size_t *longest) {
    if (d->records != ZEN_RECORDS_PREFERENCE)
        return zen_fail(ZEN_ERR_INPUT, "%s: not a preference file (no root attribute preference_pairs); prepare it with "
                        "zen data --format preference", d->path);
    if (!d->offsets || d->n_docs != 3 * d->n_records)
        return zen_fail(ZEN_ERR_INPUT, "%s: preference_pairs %lld needs %lld documents in /doc_offsets, it has %lld",
                        d->path, (long long)d->n_records, 3 * (long long)d->n_records,
                        (long long)(d->offsets ? d->n_docs : 0));
    *longest = 0;
    for (int64_t i = 0; i < d->n_records; i++) {
        zen_pair_lengths l = zen_pair_lengths_of(d, i);
        if (!l.prompt || !l.chosen || !l.rejected)
            return zen_fail(ZEN_ERR_INPUT, "%s: pair %lld has an empty %s", d->path, (long long)i,
                            !l.prompt ? "prompt" : !l.chosen ? "chosen completion" : "rejected completion");
        size_t n = l.prompt + (l.chosen > l.rejected ? l.chosen : l.rejected);
        if (n > *longest) *longest = n;
    }
    return 0;
}

int zen_pair_read(const zen_dataset *d, int64_t pair, int32_t *tokens) {
    zen_pair_lengths l = zen_pair_lengths_of(d, pair);
    size_t n = l.prompt + l.chosen + l.rejected;
    uint8_t *mask = malloc(n);
    if (!mask) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    int rc = zen_dataset_read_range(d, d->offsets[3 * pair], n, tokens, mask);
    free(mask);
    return rc;
}

int zen_records_check(const zen_dataset *d, zen_records kind) {
    const zen_record_layout *l = zen_record_layout_of(kind);
    if (d->records != kind)
        return zen_fail(ZEN_ERR_INPUT, "%s: not a file of %s (no root attribute %s); prepare it with zen data --format %s",
                        d->path, l->noun, l->attribute, l->format);
    int64_t docs = (int64_t)l->docs_per_record * d->n_records;
    if (!d->offsets || d->n_docs != docs)
        return zen_fail(ZEN_ERR_INPUT, "%s: %s %lld needs %lld documents in /doc_offsets, it has %lld", d->path,
                        l->attribute, (long long)d->n_records, (long long)docs, (long long)(d->offsets ? d->n_docs : 0));
    for (int64_t j = 0; j < docs; j++)
        if (d->offsets[j + 1] == d->offsets[j])
            return zen_fail(ZEN_ERR_INPUT, "%s: record %lld has an empty document %d", d->path,
                            (long long)(j / l->docs_per_record), (int)(j % l->docs_per_record));
    return 0;
}

size_t zen_record_doc_len(const zen_dataset *d, int64_t r, int k) {
    int64_t j = r * zen_record_layout_of(d->records)->docs_per_record + k;
    return (size_t)(d->offsets[j + 1] - d->offsets[j]);
}

int zen_record_doc_read(const zen_dataset *d, int64_t r, int k, int32_t *tokens) {
    int64_t j = r * zen_record_layout_of(d->records)->docs_per_record + k;
    size_t n = (size_t)(d->offsets[j + 1] - d->offsets[j]);
    uint8_t *mask = malloc(n ? n : 1);
    if (!mask) return zen_fail(ZEN_ERR_INTERNAL, "out of memory");
    int rc = zen_dataset_read_range(d, d->offsets[j], n, tokens, mask);
    free(mask);
    return rc;
}
