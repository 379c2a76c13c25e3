/* data/records.h: the record layouts a zen-tokens-v1 file holds beyond a
 * plain stream of tokens, in one table (data/records.c). A file of records
 * counts them in a root attribute and lays each record out as a fixed number
 * of consecutive documents of /doc_offsets; `zen data --format F` writes it,
 * `zen info` names it, and each objective says which layout it reads. */
#ifndef ZEN_RECORDS_H
#define ZEN_RECORDS_H
#include <stdint.h>

typedef enum {
    ZEN_RECORDS_TOKENS,     /* a plain token stream (no attribute) */
    ZEN_RECORDS_PREFERENCE, /* data/pairs.h */
    ZEN_RECORDS_KTO,        /* data/pairs.h: a prompt, a completion and its label */
    ZEN_RECORDS_PROMPTS,    /* a prompt and the record's fields as JSON (GRPO's prompts) */
    ZEN_RECORDS_COUNT
} zen_records;

typedef struct {
    const char *attribute; /* the root attribute holding the record count ("preference_pairs"; NULL for tokens) */
    const char *noun;      /* what a record is, plural ("preference pairs") */
    int docs_per_record;   /* documents of /doc_offsets per record */
    const char *documents; /* what they are, in order ("prompt (loss_mask 0), chosen, rejected (loss_mask 1)") */
    const char *format;    /* the zen data --format that writes it ("preference") */
    int labelled;          /* each record has a label: /labels, uint8 [records], 0 or 1 */
    int fields;            /* each record keeps its JSON: /record_json bytes, /record_json_offsets [records + 1] */
} zen_record_layout;

const zen_record_layout *zen_record_layout_of(zen_records kind);

#endif
