/* model/model_load.h: the frozen base model (model/weights.h) read from a
 * Hugging Face directory or a llama.cpp GGUF file. */
#ifndef ZEN_MODEL_LOAD_H
#define ZEN_MODEL_LOAD_H
#include "weights.h"

/* The base model of a Hugging Face directory, or of a llama.cpp GGUF file of
 * architecture qwen3 (model/gguf_model.c: the config from its keys, the
 * tensors in place from the mapped file, in any type zen dequantises).
 * base_quant: -1 keeps every weight as stored; ZEN_Q8_0, ZEN_Q4_0 or ZEN_NF4
 * quantises the seven projections of every layer at load, tensor by tensor
 * from the mapped file (whose pages are released as it goes; the
 * full-precision model is never copied). The embedding, the LM head and the
 * norms stay as stored, and so does a projection whose rows are not a whole
 * number of blocks. */
int zen_model_load(zen_model *m, zk_backend *be, const char *dir);
int zen_model_load_quant(zen_model *m, zk_backend *be, const char *dir, int base_quant);
/* The types --base-quant takes ("nf4", "q4_0", "q8_0"; "none" = -1); an
 * error naming the value otherwise. */
int zen_base_quant_parse(const char *name, int *out);

#endif
