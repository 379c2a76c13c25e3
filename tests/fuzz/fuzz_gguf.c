/* tests/fuzz/fuzz_gguf.c: the GGUF reader, and what a GGUF base makes of
 * it. A file that opens has every tensor's data inside it at an aligned,
 * non-overlapping offset, and every key's value readable; its qwen3 config
 * (zen_gguf_config) and its tokenizer (zen_tokenizer_from_gguf_file) are
 * each made or refused with a message, and a config that is made passes the
 * config checks' bounds. */
#include "data/tokenizer.h"
#include "fuzz_common.h"
#include "export/export.h"
#include "formats/gguf.h"
#include "model/gguf_model.h"
#include "model/gguf_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file f;
    if (gguf_open_memory(&f, data, size, "fuzz.gguf")) {
        fuzz_check_message();
        return 0;
    }
    unsigned sum = 0;
    for (uint64_t i = 0; i < f.n_kv; i++) {
        const gguf_kv *kv = &f.kvs[i];
        FUZZ_ASSERT(gguf_find_kv(&f, kv->key) == kv);
        if (kv->type == GGUF_STRING || (kv->type == GGUF_ARRAY && kv->elem_type == GGUF_STRING)) {
            for (uint64_t k = 0; k < kv->count && k < 64; k++) {
                char *s = gguf_string(kv, k);
                FUZZ_ASSERT(s != NULL);
                sum += (unsigned char)s[0];
                free(s);
            }
        } else if (kv->count) {
            uint64_t bytes = kv->count * gguf_scalar_size(kv->type == GGUF_ARRAY ? kv->elem_type : kv->type);
            FUZZ_ASSERT(kv->value >= data && kv->value + bytes <= data + size);
            sum += kv->value[0] + kv->value[bytes - 1];
        }
    }
    uint64_t end = 0;
    for (uint64_t i = 0; i < f.n_tensors; i++) {
        const gguf_tensor_info *t = &f.tensors[i];
        FUZZ_ASSERT(ggml_type_known(t->type) && t->n_dims >= 1 && t->n_dims <= 4);
        FUZZ_ASSERT(t->data >= data && t->nbytes <= size && t->data + t->nbytes <= data + size);
        FUZZ_ASSERT(t->offset % f.alignment == 0 && t->offset >= end);
        end = t->offset + t->nbytes;
        if (t->nbytes) sum += t->data[0] + t->data[t->nbytes - 1];
        FUZZ_ASSERT(gguf_find_tensor(&f, t->name) == t);
    }
    (void)sum;
    zen_config cfg;
    if (zen_gguf_config(&f, &cfg)) {
        fuzz_check_message();
    } else {
        FUZZ_ASSERT(cfg.layers >= 1 && cfg.hidden >= 1 && cfg.heads >= 1 && cfg.kv_heads >= 1 &&
                    cfg.heads % cfg.kv_heads == 0 && cfg.vocab >= 1);
    }
    zen_tokenizer *tok = NULL;
    if (zen_tokenizer_from_gguf_file(&tok, &f)) fuzz_check_message();
    else FUZZ_ASSERT(zen_tokenizer_vocab_size(tok) >= 256); /* every byte has its token */
    zen_tokenizer_free(tok);
    gguf_close(&f);
    return 0;
}
