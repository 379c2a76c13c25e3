/* tests/fuzz/fuzz_data_lines.c: zen data's record parsers. The first byte
 * picks the format (jsonl, alpaca, messages/ShareGPT) and the options; the
 * rest is one line. A line that parses gives a mask value (0/1) per token. */
#include "data/prepare.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zen_tokenizer *tok = fuzz_tokenizer();
    if (size < 1) return 0;
    static const zen_data_format formats[] = {ZEN_DATA_JSONL, ZEN_DATA_ALPACA, ZEN_DATA_MESSAGES};
    zen_data_opts o = {0};
    o.format = formats[data[0] % 3];
    o.field = "text";
    o.train_on_prompt = (data[0] >> 2) & 1;
    o.drop_empty_think = (data[0] >> 3) & 1;
    zen_ids ids = {0};
    uint8_t *mask = NULL;
    if (zen_data_tokenize_line(&o, tok, (const char *)data + 1, size - 1, "fuzz.jsonl:1", &ids, &mask)) {
        fuzz_check_message();
    } else {
        for (size_t i = 0; i < ids.len; i++) FUZZ_ASSERT(mask[i] <= 1 && ids.ids[i] >= 0);
    }
    zen_ids_free(&ids);
    free(mask);
    return 0;
}
