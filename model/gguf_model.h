/* model/gguf_model.h: a llama.cpp GGUF file of architecture qwen3 as the
 * base model: its config from the qwen3.* keys, and its tensors put into a
 * zen_model in place from the mapped file (model/gguf_model.c). */
#ifndef ZEN_GGUF_MODEL_H
#define ZEN_GGUF_MODEL_H
#include "weights.h"

int zen_gguf_config(const gguf_file *f, zen_config *cfg);
int zen_model_load_gguf_tensors(zen_model *m, const zen_tensor_desc *t, int n);

#endif
