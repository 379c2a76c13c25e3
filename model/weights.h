/* model/weights.h: the frozen base model in memory: config plus every weight
 * (loaded by model/model_load.h from a Hugging Face directory or a GGUF
 * file), the one list of its tensors, and the seven LoRA targets. Matrices
 * stay in their stored dtype (f32, f16, bf16 or a block-quantised one) and,
 * on CPU, in the memory map; the small norm vectors are widened to fp32 once. */
#ifndef ZEN_WEIGHTS_H
#define ZEN_WEIGHTS_H
#include "../kernels/kernels.h"
#include "config.h"
#include "../formats/gguf.h"
#include "../formats/safetensors.h"

/* The seven projections LoRA can target, in PEFT's module names. */
typedef enum { ZT_Q, ZT_K, ZT_V, ZT_O, ZT_GATE, ZT_UP, ZT_DOWN, ZEN_NUM_TARGETS } zen_target;

const char *zen_target_name(zen_target t);   /* "q_proj", ..., "down_proj" */
const char *zen_target_module(zen_target t); /* "self_attn.q_proj", "mlp.gate_proj", ... */
const char *zen_target_gguf(zen_target t);   /* llama.cpp's name: "attn_q", ..., "ffn_down" */
/* the projection's input and output features for this config */
void zen_target_dims(const zen_config *cfg, zen_target t, int *in, int *out);

/* One tensor of a Qwen3 checkpoint: its Hugging Face and GGUF names, its
 * shape (PyTorch [rows, cols]; cols = 1 for a vector) and what it is. */
typedef enum { ZW_EMBED, ZW_LM_HEAD, ZW_FINAL_NORM, ZW_ATTN_NORM, ZW_FFN_NORM, ZW_Q_NORM, ZW_K_NORM, ZW_PROJ } zen_tensor_kind;

typedef struct {
    char hf_name[128];
    char gguf_name[64];
    zen_tensor_kind kind;
    int layer, target;    /* layer (-1 outside layers); target for ZW_PROJ (-1 otherwise) */
    int ndim;             /* 2 for matrices, 1 for norm vectors */
    size_t rows, cols;
} zen_tensor_desc;

/* Every tensor of a model with this config, in Hugging Face order (lm_head
 * only when untied): the one list that loading, zen init and export share.
 * Returns the count, or -1 out of memory; *out is malloc'd. */
int zen_model_tensors(const zen_config *cfg, zen_tensor_desc **out);

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
    int base_quant;        /* the zen_dtype the projections were quantised to at load, or -1 */
    int quant_kept;        /* projections left as stored: rows not a whole number of blocks */
    size_t quant_bytes;    /* bytes of the quantised projections */
    void **owned;          /* [n_owned] host buffers of quantised projections the backend reads in place */
    int n_owned;
    size_t largest_quant;  /* elements of the largest block-quantised matrix (scratch to dequantise it) */
    int from_gguf;         /* loaded from a llama.cpp GGUF file (gguf), not a directory (files) */
    gguf_file gguf;
} zen_model;

/* for the loaders (model_load.c, gguf_model.c): a matrix of d from data as
 * stored (quantised first under --base-quant; nbytes of the source, whose
 * pages are then released), and the slot of a norm vector */
int zen_model_put_matrix(zen_model *m, const zen_tensor_desc *d, const void *data, zen_dtype dtype, size_t nbytes);
float **zen_model_vector_slot(zen_model *m, const zen_tensor_desc *d);
/* The loaded matrix (zk_weight) or fp32 vector (float *) a descriptor names. */
const zk_weight *zen_model_matrix(const zen_model *m, const zen_tensor_desc *d);
const float *zen_model_vector(const zen_model *m, const zen_tensor_desc *d);
void zen_model_free(zen_model *m);
/* After a non-finite loss: 1 if a weight in the model's files is NaN or
 * infinite (where gets "tensor 'x' of FILE holds nan at [r, c]"), 0 if all
 * are finite, -1 out of memory. */
int zen_model_find_nonfinite(const zen_model *m, char *where, size_t cap);
/* Refuses (exit 2) an output path that is one of the model's weight files or
 * the adapter's files (adapter_dir may be NULL). */
int zen_model_check_output(const zen_model *m, const char *out, const char *adapter_dir);

#endif
