/* model/weights.h: the frozen base model: config plus every weight, loaded from a
 * Hugging Face directory (config.json + model.safetensors or shards). Matrices
 * stay in their stored dtype (f32, f16 or bf16) and, on CPU, in the memory map;
 * the small norm vectors are widened to fp32 once. */
#ifndef ZEN_WEIGHTS_H
#define ZEN_WEIGHTS_H
#include "../kernels/kernels.h"
#include "config.h"
#include "safetensors.h"

/* The seven projections LoRA can target, in PEFT's module names. */
typedef enum { ZT_Q, ZT_K, ZT_V, ZT_O, ZT_GATE, ZT_UP, ZT_DOWN, ZEN_NUM_TARGETS } zen_target;

const char *zen_target_name(zen_target t);   /* "q_proj", ..., "down_proj" */
const char *zen_target_module(zen_target t); /* "self_attn.q_proj", "mlp.gate_proj", ... */
/* the projection's input and output features for this config */
void zen_target_dims(const zen_config *cfg, zen_target t, int *in, int *out);

typedef struct {
    float *attn_norm;  /* [C]  input_layernorm, fp32 on the device */
    float *ffn_norm;   /* [C]  post_attention_layernorm */
    float *q_norm;     /* [hd] */
    float *k_norm;     /* [hd] */
    zk_weight proj[ZEN_NUM_TARGETS]; /* q [qd,C], k [kvd,C], v [kvd,C], o [C,qd],
                                        gate [F,C], up [F,C], down [C,F] */
} zen_layer_weights;

typedef struct {
    zen_config cfg;
    zk_backend *be;
    st_set files;
    zk_weight embed;       /* [V, C] */
    zk_weight lm_head;     /* [V, C]; the embedding itself when tied */
    float *final_norm;     /* [C] */
    zen_layer_weights *layers; /* [L] */
    size_t weight_bytes;   /* bytes of weights as stored */
    zen_dtype main_dtype;  /* dtype of the embedding (the model's storage type) */
} zen_model;

int zen_model_load(zen_model *m, zk_backend *be, const char *dir);
void zen_model_free(zen_model *m);

#endif
