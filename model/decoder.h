/* model/decoder.h: the Zen (Qwen3) decoder's forward and backward with LoRA,
 * written out op by op on the kernel interface (no autograd).
 *
 * One batch's activations live in one planned arena (zen_acts). With recompute
 * off, every layer's activations are kept; with recompute on, only each layer's
 * input is kept and the layer is run again inside backward (same ops, same
 * order, so the gradients are bit-identical). */
#ifndef ZEN_DECODER_H
#define ZEN_DECODER_H
#include "lora.h"
#include "weights.h"

/* activations of one layer; N = B*T rows */
typedef struct {
    void *xn1;        /* [N, C]   input_layernorm(x) */
    float *rstd1;     /* [N] */
    void *q_pre;      /* [N, nh*hd]  q_proj output before q_norm */
    void *k_pre;      /* [N, nkv*hd] */
    float *rstd_q;    /* [N*nh] */
    float *rstd_k;    /* [N*nkv] */
    void *q;          /* [N, nh*hd]  after q_norm and RoPE */
    void *k;          /* [N, nkv*hd] after k_norm and RoPE */
    void *v;          /* [N, nkv*hd] */
    void *att;        /* [N, nh*hd]  attention output (input of o_proj) */
    float *lse;       /* [B, nh, T]  attention log-sum-exp */
    void *x_mid;      /* [N, C]   residual after attention */
    void *xn2;        /* [N, C]   post_attention_layernorm(x_mid) */
    float *rstd2;     /* [N] */
    void *gate;       /* [N, F] */
    void *up;         /* [N, F] */
    void *h;          /* [N, F]   silu(gate) * up (input of down_proj) */
    float *lora_u[ZEN_NUM_TARGETS]; /* [N, r] x A^T of each adapted projection */
    void *o_out, *down_out; /* [N, C] DoRA: o_proj's and down_proj's outputs (NULL otherwise) */
    void *dora_z[ZEN_NUM_TARGETS]; /* [N, out] DoRA with dropout: xd W^T + s xd A^T B^T of each projection */
} zen_layer_acts;

typedef struct {
    size_t B, T;       /* the shape of the batch being run: the planned one, or fewer rows (zen_batch_run
                        * may run a batch's live rows as B = 1, T = their count, laid end to end) */
    size_t max_T;      /* the planned T: every position is below it, and no segment is longer */
    size_t max_rows;   /* the planned B * T: the arena's rows */
    size_t max_att_rows; /* the shared layout's attention rows (at least max_rows): its scratch's rows */
    int recompute;
    zk_backend *be;
    void *arena;
    size_t arena_bytes;
    /* inputs on the device */
    int32_t *tokens;   /* [N] */
    int32_t *targets;  /* [N] */
    int32_t *pos;      /* [N] RoPE position of each row: its offset in its document's segment */
    int32_t *seg;      /* [N] each row's segment start within its sequence (attention sees keys from there) */
    float *weights;    /* [N] loss mask as 0/1 */
    /* forward */
    void **resid;      /* [L+1] each [N, C]: input of layer l; resid[L] = last output */
    zen_layer_acts *layer; /* [L], or [1] reused per layer with recompute */
    void *tmp_c;       /* [N, C] projection output before the residual add */
    void *xf;          /* [N, C] final norm output */
    float *rstd_f;     /* [N] */
    void *logits;      /* [zen_head_rows(N), V] one chunk's logits, then their gradient */
    float *losses;     /* [N] per-token loss (unweighted) of the rows with mask 1, 0 in the others
                        * (every row's with logits_host) */
    int32_t *head_rows;    /* [N] the rows whose loss counts, for the LM head (M of them) */
    int32_t *head_targets; /* [N] their targets */
    float *head_weights;   /* [N] ones */
    float *head_losses;    /* [N] their losses */
    float *entropy;        /* [N] with entropy_host: each row's entropy of softmax(logits / head_temperature) */
    float *head_entropy;   /* [N] the head rows' */
    float head_temperature; /* set by the caller: the head's logits divided by it (0 or 1: as they are; GRPO:
                             * the sampling temperature), its losses and gradient too */
    float *entropy_host;   /* set by the caller: optional host [N], each counted row's entropy (0 elsewhere) */
    /* backward scratch, reused by every layer */
    void *dres;        /* [N, C] gradient of the residual stream */
    void *dxn;         /* [N, C] */
    void *datt;        /* [N, nh*hd] */
    void *dq, *dq_pre; /* [N, nh*hd] */
    void *dk, *dk_pre, *dv; /* [N, nkv*hd] */
    void *dh, *dg, *du;     /* [N, F] */
    float *dlora_u;    /* [N, r] */
    void *dora_dz;     /* [N, widest out] DoRA: g dy of the projection being run backward */
    void *dora_xd, *dora_dxd; /* [N, widest in] DoRA with dropout: dropout(x) and its gradient */
    uint64_t dropout_seed; /* of the current run; 0 = no LoRA dropout */
    float *logits_host;    /* optional host [T, V]: receives sequence 0's logits (zen eval --save-logits) */
    /* shared prefixes (zen_acts_create_shared; see zen_shared_layout): the
     * attention runs on a layout of att_rows rows gathered from the N */
    struct {
        int enabled;                    /* the scratch below exists */
        int exact_backward;             /* the current layout's reads are what the backward sums (checked) */
        const struct zen_shared_layout *layout; /* of the current call, or NULL: ordinary rows */
        int32_t *seg, *from, *out, *again;  /* device [max_rows] each: the layout's index arrays */
        void *q, *k, *v, *att;          /* [att_rows, nh*hd | nkv*hd]: gathered q, k, v; attention output */
        void *dq, *dk, *dv, *datt;      /* their gradients */
        void *again_rows;               /* [twice, nkv*hd] a further read's key or value gradient */
    } sh;
    /* what the head of the last zen_decoder_forward saw, for zen_decoder_backward */
    size_t head_count;     /* M: rows whose loss counts */
    int head_compact;      /* they were gathered (M < N) */
    int head_grad_in_forward; /* set by the caller: zen_decoder_forward also leaves in dxn the head's input
                               * gradient of each row's unweighted loss, so zen_decoder_backward only scales
                               * its rows (no second head pass) */
    int head_grad_kept;    /* the last forward did so */
} zen_acts;

/* Rows that share a prefix (a preference pair's prompt, a multiple-choice
 * context): the decoder's row-wise work (projections, norms, MLP, head) runs
 * on N rows, each once, and only the attention sees a layout of att_rows
 * rows in which a prefix row appears once per continuation: segment [P C1],
 * segment [P C2], ..., so C2 attends to P and itself, never to C1, at the
 * positions continuing from P's end. The row positions (pos, [N]) must be
 * each row's offset in its attention segment. Exact: equal to running the
 * sequences apart, but the prefix's rows are computed once and their
 * gradient gathers every continuation's contribution. */
typedef struct zen_shared_layout {
    size_t att_rows;          /* Nx: rows of the attention layout (<= the planned rows) */
    const int32_t *att_seg;   /* [Nx] each attention row's segment start (as seg in kernels.h) */
    const int32_t *att_from;  /* [Nx] the row (of the N) each attention row reads */
    const int32_t *att_out;   /* [N] the attention row whose output each row takes (att_from of it is the row) */
    size_t twice;             /* rows 0 .. twice-1 (the prefixes) are read again_reads more times (backward adds
                               * those reads' k, v gradients, in order) */
    size_t again_reads;       /* 0 means 1 (a pair's second read); G - 1 for G continuations of every prefix */
    const int32_t *att_again; /* [again_reads][twice] the attention row of each further read; a layout whose
                               * prefixes are read other numbers of times supports only the forward */
} zen_shared_layout;

/* a layout's further reads per prefix row (again_reads, 0 meaning 1) */
static inline size_t zen_shared_again(const zen_shared_layout *sl) { return sl->again_reads ? sl->again_reads : 1; }

/* Token rows of one chunk of the fused LM head + loss (N = B*T rows in all). */
#define ZEN_HEAD_ROWS 256
static inline size_t zen_head_rows(size_t N) { return N < ZEN_HEAD_ROWS ? N : ZEN_HEAD_ROWS; }

/* Bytes of each part of a training step's memory, for the printed plan. */
typedef struct {
    size_t weights;          /* base weights on the device */
    size_t lora_params;      /* fp32 A and B */
    size_t lora_grads;       /* fp32 */
    size_t optimizer;        /* AdamW m and v, fp32 (training only) */
    size_t saved_acts;       /* forward activations kept for backward */
    size_t scratch;          /* backward scratch, one layer, recompute layer */
    size_t logits;           /* one chunk's [zen_head_rows(N), V] logits block */
    size_t backend;          /* the backend's own scratch (zk_plan_scratch) */
    size_t generation;       /* sampling before the step (GRPO): its KV cache and logits; the caller's */
    size_t total;
} zen_plan;

/* Memory plan of a step of B x T on `device` computing in `compute`, with
 * LoRA rank r on `targets` (dropout: whether LoRA dropout is on), for weights
 * stored in stored_bytes of (main) dtype stored_dtype. Activations are fp32
 * on every backend. */
zen_plan zen_plan_make(const zen_config *cfg, const char *device, zen_dtype compute, size_t stored_bytes,
                       zen_dtype stored_dtype, int r, unsigned targets, size_t B, size_t T, int recompute,
                       int dropout);
/* The same with the projections quantised to base_quant at load (a
 * zen_dtype, or -1 for none): those whose rows fill whole blocks count in the
 * quantised type, and the plan adds the scratch of their dequantised chunks.
 * largest_quant: the elements of the largest block-quantised matrix a loaded
 * model holds (a GGUF's quantised head counts), or 0 to take it from
 * base_quant and the config. */
zen_plan zen_plan_make_quant(const zen_config *cfg, const char *device, zen_dtype compute, size_t stored_bytes,
                             zen_dtype stored_dtype, int base_quant, size_t largest_quant, int r, unsigned targets,
                             size_t B, size_t T, int recompute, int dropout);

/* The dtype weights stored as stored_dtype take on the device when computing
 * in `compute`: bf16 compute keeps every float matrix as bf16, f32 keeps them
 * as stored; block-quantised ones stay quantised in both. */
static inline zen_dtype zen_device_weight_dtype(zen_dtype stored_dtype, zen_dtype compute) {
    return compute == ZEN_BF16 && !zen_dtype_is_quant(stored_dtype) ? ZEN_BF16 : stored_dtype;
}

int zen_acts_create(zen_acts *a, const zen_model *m, const zen_lora *lo, size_t B, size_t T,
                    int recompute);
/* The same with the scratch of shared-prefix layouts (zen_shared_layout) of
 * up to att_rows attention rows (0: B*T; a prefix read by k segments counts
 * k times there, once in the B*T rows). */
int zen_acts_create_shared(zen_acts *a, const zen_model *m, const zen_lora *lo, size_t B, size_t T, size_t att_rows,
                           int recompute);
/* bytes that scratch adds to a plan of `rows` rows (fp32 activations) with att_rows attention rows */
size_t zen_shared_scratch_bytes(const zen_config *cfg, size_t rows, size_t att_rows);
void zen_acts_free(zen_acts *a);

/* Runs the decoder on one batch: inputs, targets [B*T] token ids, mask [B*T]
 * (0/1), and the batch's documents: pos [B*T] the RoPE position of each row
 * and seg [B*T] its segment's first row within the sequence (a query sees
 * only keys of its own segment; pos = t - seg), or both NULL for one segment
 * per sequence (positions 0..T-1, plain causal attention). Returns in
 * *loss_sum the sum of mask * token loss (double). If
 * grad_scale != 0, also runs backward and accumulates (+=) the gradients of
 * grad_scale * loss_sum into lo->grads (allocated beforehand).
 * dropout_seed != 0 applies the adapter's LoRA dropout (training), with masks
 * drawn from that seed; 0 runs without dropout (evaluation, zen grad).
 * Token ids outside [0, vocab) are refused with an error naming the position. */
int zen_decoder_run(const zen_model *m, const zen_lora *lo, zen_acts *a, const int32_t *inputs,
                    const int32_t *targets, const uint8_t *mask, const int32_t *pos, const int32_t *seg,
                    float grad_scale, uint64_t dropout_seed, double *loss_sum);

/* Objectives whose per-token weights depend on the whole forward (DPO,
 * ORPO): zen_decoder_forward runs the rows as zen_decoder_run does without
 * backward and writes each row's token loss to row_loss (host [N]; 0 where
 * mask is 0). With a->sh.layout set, the rows are a shared-prefix layout
 * (pos [N] as described there, seg NULL). zen_decoder_backward then
 * accumulates the gradient of sum over masked-in rows of row_weight[n] *
 * loss[n] (row_weight host [N], any sign) into lo->grads. It runs the LM
 * head's rows again (their logits were not kept), unless the forward ran
 * with a->head_grad_in_forward (then it scales the kept rows); it needs the
 * activations of that forward, with the same lo, untouched. */
int zen_decoder_forward(const zen_model *m, const zen_lora *lo, zen_acts *a, const int32_t *inputs,
                        const int32_t *targets, const uint8_t *mask, const int32_t *pos, const int32_t *seg,
                        uint64_t dropout_seed, float *row_loss);
int zen_decoder_backward(const zen_model *m, const zen_lora *lo, zen_acts *a, const uint8_t *mask,
                         const float *row_weight);

#endif
