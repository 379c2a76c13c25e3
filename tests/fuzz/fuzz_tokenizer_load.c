/* tests/fuzz/fuzz_tokenizer_load.c: tokenizer.json. A tokenizer that loads
 * encodes a fixed text and decodes every id it produces. */
#include "data/tokenizer.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zen_tokenizer *t;
    if (zen_tokenizer_load_json(&t, (const char *)data, size, "tokenizer.json")) {
        fuzz_check_message();
        return 0;
    }
    static const char text[] = "Hello, world! 123 caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 <|im_start|>x\n\n  end";
    zen_ids ids = {0};
    if (!zen_tokenizer_encode(t, text, sizeof text - 1, 1, &ids)) {
        for (size_t i = 0; i < ids.len; i++) FUZZ_ASSERT(ids.ids[i] >= 0 && ids.ids[i] < zen_tokenizer_vocab_size(t));
        char *out;
        size_t len;
        FUZZ_ASSERT(zen_tokenizer_decode(t, ids.ids, ids.len, &out, &len) == 0);
        free(out);
    }
    zen_ids_free(&ids);
    zen_tokenizer_free(t);
    return 0;
}
