/* train/session.h: what zen grad, zen eval and zen train all set up, in the
 * order they need it: a backend, the base model, an adapter (loaded from a
 * PEFT directory or fresh) and a reference, the dataset (opened and checked
 * by the objective) and the activations of one batch shape. zen_session_close
 * frees whatever was opened. */
#ifndef ZEN_SESSION_H
#define ZEN_SESSION_H
#include "../data/dataset.h"
#include "../data/tokenizer.h"
#include "../model/decoder.h"

typedef struct {
    zk_backend *be;
    zen_model model;
    zen_lora lora;
    int has_lora;       /* lora holds an adapter */
    zen_dataset data;
    zen_acts acts;
    zen_lora ref;       /* an objective's reference when it is an adapter (frozen), else unused */
    int has_ref;
} zen_session;

/* The backend (device "cpu"/"cuda", compute dtype "auto"/"f32"/"bf16" or
 * NULL) and the model of model_dir, its projections quantised at load to
 * base_quant ("none", "nf4", "q4_0", "q8_0"; NULL = none), which a line on
 * stderr then reports. */
int zen_session_open(zen_session *s, const char *device, const char *dtype, const char *base_quant,
                     const char *model_dir);
int zen_session_load_adapter(zen_session *s, const char *adapter_dir);
int zen_session_fresh_adapter(zen_session *s, int r, float alpha, int rslora, float dropout, unsigned targets,
                              uint64_t seed, int dora);
/* DoRA adapters (the trained one and a DoRA reference): the base's row
 * norms and the scales m / n (model/dora.h); fresh: the trained adapter is
 * new, so its magnitudes start as n. After zen_session_make_acts. */
int zen_session_dora_setup(zen_session *s, int fresh);
/* Activations for batches of B multiple-choice records (zen eval --choices)
 * of sequences up to T tokens: 2B x T rows, with the scratch of the shared
 * layout (model/decoder.h). Objectives make their own (objectives/objective.h). */
int zen_session_make_pair_acts(zen_session *s, size_t B, size_t T, int recompute);
/* An objective's reference adapter (frozen, no gradients): it must have the
 * trained adapter's rank and targets. */
int zen_session_load_reference(zen_session *s, const char *adapter_dir);
/* The one line for a loss that came out non-finite: exit 2 naming the
 * tensor when the model's weights or the adapter hold NaN or Inf, else exit
 * 1 (an overflow inside the computation). what is "loss", "eval loss", ... */
int zen_session_nonfinite(const zen_session *s, const char *what, double value);
void zen_session_close(zen_session *s);
/* The tokenizer of a model directory (tokenizer.json) or of a llama.cpp GGUF
 * file (its tokenizer.ggml.* keys). */
int zen_open_tokenizer(const char *path, zen_tokenizer **t);
/* Refuses an output path that is one of the inputs (a model shard, the
 * adapter's files, the dataset): writing it would destroy what is read; and
 * one that cannot be written (util/file.h, zen_output_ready). Called before
 * any work. */
int zen_check_output(const char *out, const zen_model *m, const char *adapter_dir, const char *data_path);

#endif
