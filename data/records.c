/* data/records.c: the table of record layouts (see records.h). */
#include <stddef.h>

#include "records.h"

static const zen_record_layout layouts[ZEN_RECORDS_COUNT] = {
    [ZEN_RECORDS_TOKENS] = {NULL, "token sequences", 1, "documents", "text|jsonl|alpaca|messages", 0, 0},
    [ZEN_RECORDS_PREFERENCE] = {"preference_pairs", "preference pairs", 3,
                                "prompt (loss_mask 0), chosen, rejected (loss_mask 1)", "preference", 0, 0},
    [ZEN_RECORDS_KTO] = {"kto_records", "labelled completions", 2,
                         "prompt (loss_mask 0), completion (loss_mask 1); /labels: 1 desirable, 0 undesirable", "kto", 1, 0},
    [ZEN_RECORDS_PROMPTS] = {"prompt_records", "prompts", 1,
                             "prompt (loss_mask 0); /record_json: each record's fields, for the rewards", "prompts", 0,
                             1},
};

const zen_record_layout *zen_record_layout_of(zen_records kind) {
    return kind >= 0 && kind < ZEN_RECORDS_COUNT ? &layouts[kind] : &layouts[ZEN_RECORDS_TOKENS];
}
