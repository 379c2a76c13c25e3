/* model/model_init.h: writing a model with random weights in Hugging Face
 * layout (config.json + model.safetensors, sharded above shard_bytes). */
#ifndef ZEN_MODEL_INIT_H
#define ZEN_MODEL_INIT_H
#include <stdint.h>

#include "config.h"
#include "../kernels/dtype.h"

/* config_json: the config.json text to write (torch_dtype is set to dtype).
 * Matrices ~ U(-a, a) with a = std * sqrt(3), std = the config's
 * initializer_range (HF's key; default 0.02), norm weights 1. Deterministic
 * for a given seed. */
int zen_model_write_random(const char *dir, const char *config_json, const zen_config *cfg,
                           zen_dtype dtype, uint64_t seed, uint64_t shard_bytes);

#endif
