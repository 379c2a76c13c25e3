/* tests/fuzz/fuzz_tokenizer_encode.c: encoding arbitrary bytes with a BPE
 * tokenizer (tests/fuzz/tokenizer.json: byte-level, Qwen3's split regex,
 * NFC, 2000 merges, special tokens). Promise: decode(encode(x)) is the
 * tokenizer's normalisation of x, with and without special tokens. */
#include "data/tokenizer.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zen_tokenizer *tok = fuzz_tokenizer();
    const char *text = (const char *)data;
    char *norm;
    size_t norm_len;
    FUZZ_ASSERT(zen_tokenizer_normalize(tok, text, size, &norm, &norm_len) == 0);
    for (int special = 0; special < 2; special++) {
        zen_ids ids = {0};
        if (zen_tokenizer_encode(tok, text, size, special, &ids)) {
            fuzz_check_message();
            zen_ids_free(&ids);
            continue;
        }
        char *out;
        size_t len;
        FUZZ_ASSERT(zen_tokenizer_decode(tok, ids.ids, ids.len, &out, &len) == 0);
        /* without special tokens every piece normalises on its own; with
         * them, the text between special tokens does */
        if (!special) FUZZ_ASSERT(len == norm_len && !memcmp(out, norm, len));
        size_t bytes = 0;
        for (size_t i = 0; i < ids.len; i++) bytes += zen_tokenizer_token_bytes(tok, ids.ids[i]);
        FUZZ_ASSERT(bytes == len);
        free(out);
        zen_ids_free(&ids);
    }
    free(norm);
    return 0;
}
