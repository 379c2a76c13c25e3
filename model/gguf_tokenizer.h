/* model/gguf_tokenizer.h: the tokenizer a llama.cpp GGUF base carries
 * (tokenizer.ggml.*) as zen's tokenizer (zen data --tokenizer FILE.gguf, and
 * a GGUF base's own in zen generate and zen train's samples). */
#ifndef ZEN_GGUF_TOKENIZER_H
#define ZEN_GGUF_TOKENIZER_H
#include "../formats/gguf.h"

typedef struct zen_tokenizer zen_tokenizer;
int zen_tokenizer_from_gguf(zen_tokenizer **out, const char *path);
int zen_tokenizer_from_gguf_file(zen_tokenizer **out, const gguf_file *f); /* an opened file (the fuzzer) */

#endif
